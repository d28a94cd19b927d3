//! The CRI container log format that kubelet's runtimes write under /var/log/pods:
//! `<RFC 3339 nano time> <stdout|stderr> <P|F> <message>` (kubernetes/cri-api, "CRI logging
//! format"). A `P` (partial) line continues in the next line of the same stream until an `F`
//! (full) line ends it; the parts are joined without separator. The joined message is bounded
//! by `--max-event-bytes` (the rest is cut and counted). Fields kept: `time`, `stream`.

use serde_json::{Map, Value};

#[derive(Debug)]
pub struct Joiner {
    max: usize,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    time: String,
    stream: String,
    end: u64,
}

type Next<'a> = dyn FnMut(&[u8], u64, Option<Box<Map<String, Value>>>) + 'a;

/// A parsed CRI line.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub message: &'a [u8],
}

pub fn parse(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let message = parts.next().unwrap_or_default();
    if !time.as_bytes().first()?.is_ascii_digit() || !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    // The tag may carry more flags after a colon in future versions: "F:x".
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Line {
        time,
        stream,
        partial,
        message,
    })
}

fn fields(time: &str, stream: &str) -> Option<Box<Map<String, Value>>> {
    let mut m = Map::new();
    m.insert("time".into(), Value::String(time.to_string()));
    m.insert("stream".into(), Value::String(stream.to_string()));
    Some(Box::new(m))
}

impl Joiner {
    pub fn new(max: usize) -> Joiner {
        Joiner { max, pending: None }
    }

    pub fn push(&mut self, line: &[u8], end: u64, next: &mut Next<'_>, invalid: &mut u64) {
        let Some(parsed) = parse(line) else {
            *invalid += 1;
            self.flush(next);
            next(line, end, None);
            return;
        };
        match (&mut self.pending, parsed.partial) {
            (Some(p), _) if p.stream == parsed.stream => {
                let room = self.max.saturating_sub(p.buf.len());
                p.buf
                    .extend_from_slice(&parsed.message[..parsed.message.len().min(room)]);
                p.end = end;
                if !parsed.partial {
                    if let Some(p) = self.pending.take() {
                        next(&p.buf, p.end, fields(&p.time, &p.stream));
                    }
                }
            }
            (_, true) => {
                // A partial of the other stream, or the first partial: start a new event.
                self.flush(next);
                self.pending = Some(Pending {
                    buf: parsed.message[..parsed.message.len().min(self.max)].to_vec(),
                    time: parsed.time.to_string(),
                    stream: parsed.stream.to_string(),
                    end,
                });
            }
            (_, false) => {
                self.flush(next);
                next(parsed.message, end, fields(parsed.time, parsed.stream));
            }
        }
    }

    pub fn flush(&mut self, next: &mut Next<'_>) {
        if let Some(p) = self.pending.take() {
            next(&p.buf, p.end, fields(&p.time, &p.stream));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_are_joined_and_fields_kept() {
        let mut j = Joiner::new(1024);
        let mut out: Vec<(String, u64, String)> = Vec::new();
        let mut invalid = 0;
        let mut next = |m: &[u8], e: u64, f: Option<Box<Map<String, Value>>>| {
            let f = f.expect("fields");
            out.push((
                String::from_utf8_lossy(m).into(),
                e,
                f["stream"].as_str().unwrap_or_default().into(),
            ));
        };
        j.push(
            b"2024-01-01T00:00:00.1Z stdout P hello ",
            10,
            &mut next,
            &mut invalid,
        );
        j.push(
            b"2024-01-01T00:00:00.2Z stdout F world",
            20,
            &mut next,
            &mut invalid,
        );
        j.push(
            b"2024-01-01T00:00:00.3Z stderr F oops",
            30,
            &mut next,
            &mut invalid,
        );
        assert_eq!(invalid, 0);
        assert_eq!(
            out,
            vec![
                ("hello world".into(), 20, "stdout".into()),
                ("oops".into(), 30, "stderr".into()),
            ]
        );
    }

    #[test]
    fn lines_that_are_not_cri_are_invalid() {
        assert!(parse(b"plain text").is_none());
        assert!(parse(b"2024-01-01T00:00:00Z stdin F x").is_none());
        assert!(parse(b"2024-01-01T00:00:00Z stdout X x").is_none());
        assert_eq!(
            parse(b"2024-01-01T00:00:00Z stdout F").map(|l| l.message),
            Some(&b""[..])
        );
    }
}
