//! Path normalization before routing, so that every spelling of a path reaches the route that
//! path names and no other: `/api/../admin` is `/admin`, `/%61pi/x` is `/api/x`.
//!
//! What is done (RFC 3986): percent-encoded unreserved characters are decoded (section 6.2.2.2),
//! other percent-encodings get upper-case hex (6.2.2.1), and dot segments are removed with the
//! algorithm of section 5.2.4. Empty segments are merged (`//admin` is `/admin`), as nginx does
//! for its matching and as many app servers (Tomcat, Spring) do: a route in front of `/admin`
//! (an auth proxy, say) must not be skipped by `//admin` reaching the app by another route.
//! What is refused: a path that does not start with `/`, a broken percent-encoding, control
//! characters, and a dot segment with path parameters (`..;x`, which Tomcat reads as `..`).
//! Encoded slashes (`%2F`) stay encoded: they are data, not separators. The query is kept as
//! it came. Path parameters (`;jsessionid=...`) are passed on as they came; routes are matched
//! without them (see [`without_params`]).

use std::borrow::Cow;

/// Why a request target was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("broken percent-encoding in the path")]
    BadPercent,
    #[error("control character in the path")]
    Control,
    #[error("a dot segment with path parameters")]
    DotParams,
}

/// The normalized path (without the query).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, NormalizeError> {
    if !path.starts_with('/') {
        return Err(NormalizeError::NotAbsolute);
    }
    // Most paths are already normal: no percent sign, no control character, no dot segment,
    // no empty segment.
    let plain = !path.bytes().any(|b| b == b'%' || b.is_ascii_control())
        && !path.contains("//")
        && !path[1..].split('/').any(is_dot_segment);
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    if decoded[1..]
        .split('/')
        .any(|s| s.starts_with(".;") || s.starts_with("..;"))
    {
        return Err(NormalizeError::DotParams);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// `.` or `..`, also with path parameters (refused then).
fn is_dot_segment(s: &str) -> bool {
    let bare = s.split(';').next().unwrap_or(s);
    bare == "." || bare == ".."
}

/// The path as routes are matched against it: path parameters (`;...` up to the next `/`) left
/// out, as app servers that use them do (`/admin;jsessionid=1` is `/admin` to Tomcat, so it is
/// to the routes too). Borrowed when there are none, which is nearly always.
pub fn without_params(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(s))
        .collect();
    Cow::Owned(segments.join("/"))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_unreserved(path: &str) -> Result<String, NormalizeError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_control() {
            return Err(NormalizeError::Control);
        }
        if b == b'%' {
            let (hi, lo) = match (
                bytes.get(i + 1).and_then(|h| hex(*h)),
                bytes.get(i + 2).and_then(|l| hex(*l)),
            ) {
                (Some(hi), Some(lo)) => (hi, lo),
                _ => return Err(NormalizeError::BadPercent),
            };
            let value = hi * 16 + lo;
            if is_unreserved(value) {
                out.push(value as char);
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
            }
            i += 3;
        } else {
            // Multi-byte UTF-8 is copied through whole; only ASCII is inspected.
            let ch_len = path[i..].chars().next().map(char::len_utf8).unwrap_or(1);
            out.push_str(&path[i..i + ch_len]);
            i += ch_len;
        }
    }
    Ok(out)
}

/// RFC 3986 section 5.2.4, on a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            // Merged with the next one; the last (a trailing slash) is kept below.
            "" if i != last => {}
            "." => trailing_slash = i == last,
            ".." => {
                output.pop();
                trailing_slash = i == last;
            }
            s => {
                output.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &output {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_cannot_escape_a_route() {
        assert_eq!(normalize_path("/api/../admin"), Ok("/admin".into()));
        assert_eq!(normalize_path("/api/./x/../y"), Ok("/api/y".into()));
        assert_eq!(
            normalize_path("/../../etc/passwd"),
            Ok("/etc/passwd".into())
        );
        assert_eq!(normalize_path("/api/.."), Ok("/".into()));
        assert_eq!(normalize_path("/api/x/."), Ok("/api/x/".into()));
        assert_eq!(normalize_path("/"), Ok("/".into()));
        // Empty segments are merged: `//admin` is `/admin`, whichever way it is spelled.
        assert_eq!(normalize_path("/a//b"), Ok("/a/b".into()));
        assert_eq!(normalize_path("//admin/x"), Ok("/admin/x".into()));
        assert_eq!(normalize_path("/a///"), Ok("/a/".into()));
        assert_eq!(normalize_path("//"), Ok("/".into()));
        assert_eq!(normalize_path("/%2f/admin"), Ok("/%2F/admin".into()));
        // Dots inside a segment are no dot segments.
        assert_eq!(
            normalize_path("/.well-known/x"),
            Ok("/.well-known/x".into())
        );
        assert_eq!(normalize_path("/a/..b/c."), Ok("/a/..b/c.".into()));
        assert_eq!(normalize_path("/api/x/"), Ok("/api/x/".into()));
    }

    #[test]
    fn encoded_unreserved_characters_and_dots_are_decoded_first() {
        assert_eq!(normalize_path("/%61pi/x"), Ok("/api/x".into()));
        assert_eq!(normalize_path("/api/%2e%2e/admin"), Ok("/admin".into()));
        assert_eq!(normalize_path("/api/%2E%2E/admin"), Ok("/admin".into()));
        // Reserved characters stay encoded, with upper-case hex.
        assert_eq!(normalize_path("/a%2fb"), Ok("/a%2Fb".into()));
        assert_eq!(normalize_path("/caf%c3%a9"), Ok("/caf%C3%A9".into()));
        assert_eq!(normalize_path("/café"), Ok("/café".into()));
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(normalize_path("api"), Err(NormalizeError::NotAbsolute));
        assert_eq!(normalize_path("/a%zz"), Err(NormalizeError::BadPercent));
        assert_eq!(normalize_path("/a%2"), Err(NormalizeError::BadPercent));
        assert_eq!(normalize_path("/a\u{7f}b"), Err(NormalizeError::Control));
        // Tomcat reads `..;x` as `..`: refused, not routed as a plain segment.
        assert_eq!(
            normalize_path("/x/..;/admin"),
            Err(NormalizeError::DotParams)
        );
        assert_eq!(
            normalize_path("/x/.;a/admin"),
            Err(NormalizeError::DotParams)
        );
        assert_eq!(
            normalize_path("/x/%2e%2e;/admin"),
            Err(NormalizeError::DotParams)
        );
    }

    #[test]
    fn routes_are_matched_without_path_parameters() {
        assert_eq!(without_params("/admin/x"), "/admin/x");
        assert!(matches!(without_params("/admin/x"), Cow::Borrowed(_)));
        assert_eq!(without_params("/admin;jsessionid=1/x"), "/admin/x");
        assert_eq!(without_params("/admin;a;b"), "/admin");
        assert_eq!(without_params("/a;p/b;q/"), "/a/b/");
    }
}
