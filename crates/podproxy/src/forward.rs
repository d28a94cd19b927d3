//! Headers on the way through. Hop-by-hop headers are removed in both directions (RFC 9110
//! section 7.6.1: Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade, and
//! every header the Connection header names), except that an Upgrade the proxy passes on keeps
//! `Upgrade` and `Connection: upgrade`. Repeated headers (Set-Cookie) are left as they are.
//! `X-Forwarded-For` keeps what came in only from a trusted proxy, `X-Forwarded-Proto` and
//! `-Host` are set, and `X-Request-Id` is kept when sane or generated.

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, COOKIE, HOST, TE, TRANSFER_ENCODING, UPGRADE,
};
use ipnet::IpNet;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The other headers by which proxies tell an app about the client, which podproxy does not
/// set: from a peer that is not one of `--trusted-proxies` they are a client's claim (an app
/// that trusts `Forwarded` over `X-Forwarded-For` would take it for the truth), and are removed.
const OTHER_FORWARDING: [HeaderName; 3] = [http::header::FORWARDED, X_REAL_IP, X_FORWARDED_PORT];

/// The longest `X-Request-Id` passed on as it came.
pub const MAX_REQUEST_ID: usize = 128;

/// The hop-by-hop headers of RFC 9110 section 7.6.1 (besides those Connection names); Upgrade
/// is last.
const HOP: [HeaderName; 6] = [
    CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// [`HOP`] as text, for comparing the tokens of a Connection value.
const HOP_NAMES: [&[u8]; 6] = [
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"te",
    b"transfer-encoding",
    b"upgrade",
];

/// Which of [`HOP`] a message carries, and whether its Connection header names anything else.
#[derive(Debug, Default, Clone, Copy)]
pub struct HopByHop {
    present: [bool; 6],
    /// A Connection value names a header beyond [`HOP`] (its usual values, `keep-alive` and
    /// `close`, name none), so there is more to remove than [`HOP`].
    names_others: bool,
}

impl HopByHop {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if let Some(i) = HOP.iter().position(|h| h == name) {
            self.present[i] = true;
            if i == 0 {
                self.names_others |= names_others(value);
            }
        }
    }

    pub fn transfer_encoding(&self) -> bool {
        self.present[4]
    }

    /// One pass over the headers, no hashing.
    pub fn find(headers: &HeaderMap) -> HopByHop {
        let mut found = HopByHop::default();
        for (name, value) in headers.iter() {
            found.note(name, value);
        }
        found
    }

    /// Removes them (found by [`HopByHop::find`] or [`scan`] on these `headers`). With
    /// `upgrade`, the `Upgrade` header and a `Connection: upgrade` are kept (the proxy passes the
    /// upgrade on); everything else Connection names still goes. Returns whether Connection
    /// named other headers, which were removed too.
    pub fn remove(self, headers: &mut HeaderMap, upgrade: bool) -> bool {
        let present = self.present;
        // Only then is Connection read again (a lookup); the usual `Connection: keep-alive` of
        // an upstream's answer is removed below with the rest of HOP.
        let named_others = self.names_others && remove_named(headers);
        // Upgrade (the last) is handled below.
        for (name, here) in HOP.iter().zip(present).take(5) {
            if here {
                headers.remove(name);
            }
        }
        if upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        } else if present[5] {
            headers.remove(UPGRADE);
        }
        named_others
    }
}

/// Whether a Connection value names a header beyond [`HOP`] (the usual `keep-alive` and
/// `close` name none). Out of line, as are the other rare paths of the per-request code, so that
/// what every request runs stays together: a request runs through more code (hyper's server
/// and client, tokio, podproxy) than a 32 KiB instruction cache holds (cachegrind: about 1,400
/// simulated misses per request, the bare hyper proxy with the same headers about 560).
#[inline(never)]
fn names_others(value: &HeaderValue) -> bool {
    connection_names(value).any(|t| {
        // The usual values first: keep-alive (also in HOP) and close.
        !(t.eq_ignore_ascii_case(b"keep-alive")
            || t.eq_ignore_ascii_case(b"close")
            || HOP_NAMES.iter().any(|h| t.eq_ignore_ascii_case(h)))
    })
}

/// Removes the headers that Connection values name beyond [`HOP`]; whether there were any.
#[cold]
#[inline(never)]
fn remove_named(headers: &mut HeaderMap) -> bool {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(connection_names)
        .filter(|t| !t.eq_ignore_ascii_case(b"close"))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    let mut removed = false;
    for name in named {
        if !HOP.contains(&name) {
            removed = true;
            headers.remove(&name);
        }
    }
    removed
}

/// The names and options in a Connection value (RFC 9110 section 7.6.1: a comma-separated
/// list of tokens), as bytes: empty elements are skipped.
fn connection_names(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers; see [`HopByHop::remove`].
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    HopByHop::find(headers).remove(headers, upgrade);
}

/// What one pass over a request's headers finds, so that no fact costs a lookup of its own
/// (each lookup hashes the name; most requests carry a handful of headers, compared here by
/// their well-known names).
#[derive(Debug, Default)]
pub struct Scanned {
    pub hop: HopByHop,
    /// The first Host header.
    pub host: Option<HeaderValue>,
    /// Host came more than once (RFC 9112 section 3.2: a server must answer 400).
    pub hosts_repeated: bool,
    /// One of [`OTHER_FORWARDING`] came.
    pub other_forwarding: bool,
    pub content_length: Option<HeaderValue>,
    /// Content-Length came more than once with different values.
    pub content_lengths_differ: bool,
    /// The client asks for an upgrade: an Upgrade header, and a Connection header naming it.
    pub upgrade: bool,
    /// `TE: trailers`: the client takes trailers.
    pub te_trailers: bool,
    pub request_id: Option<HeaderValue>,
    pub request_ids: usize,
}

pub fn scan(headers: &HeaderMap) -> Scanned {
    let mut found = Scanned::default();
    let mut connection_upgrade = false;
    for (name, value) in headers.iter() {
        if *name == HOST {
            match found.host {
                None => found.host = Some(value.clone()),
                Some(_) => found.hosts_repeated = true,
            }
        } else if *name == http::header::CONTENT_LENGTH {
            match &found.content_length {
                None => found.content_length = Some(value.clone()),
                Some(first) => found.content_lengths_differ |= first != value,
            }
        } else if *name == X_REQUEST_ID {
            found.request_ids += 1;
            if found.request_id.is_none() {
                found.request_id = Some(value.clone());
            }
        } else {
            found.hop.note(name, value);
            found.other_forwarding |= OTHER_FORWARDING.contains(name);
            if *name == CONNECTION {
                connection_upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case("upgrade"));
            } else if *name == TE {
                found.te_trailers |= tokens(value).any(|t| t.eq_ignore_ascii_case("trailers"));
            }
        }
    }
    found.upgrade = found.hop.present[5] && connection_upgrade;
    found
}

/// The comma-separated tokens of a header value.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value.to_str().unwrap_or_default().split(',').map(str::trim)
}

/// Proxies whose `X-Forwarded-For` we extend rather than replace.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) or single addresses, separated by commas.
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "--trusted-proxies {item:?} is not a CIDR or an address, e.g. 10.0.0.0/8"
                    )
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&peer))
    }
}

/// Sets the X-Forwarded-* headers for a request from `peer` that arrived over `proto`;
/// `peer_value` is `peer` as a header value (made once per connection).
/// `host` is the request's host: its target's authority, else its Host header, if any.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: &HeaderValue,
    proto: &str,
    host: Option<&HeaderValue>,
    trusted: &TrustedProxies,
) {
    let from_trusted = trusted.trusts(peer);
    match from_trusted
        .then(|| extended_chain(headers, peer))
        .flatten()
    {
        Some(chain) => {
            if let Ok(v) = HeaderValue::from_str(&chain) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, peer_value.clone());
        }
    }
    let keep_proto = from_trusted && headers.contains_key(&X_FORWARDED_PROTO);
    if !keep_proto {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
        );
    }
    let keep_host = from_trusted && headers.contains_key(&X_FORWARDED_HOST);
    if !keep_host {
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

/// RFC 9113 section 8.2.3: an HTTP/2 client may send its cookies as several `cookie` fields
/// (browsers do, for header compression), which must be joined with "; " into one before the
/// request goes on over HTTP/1.1, where many servers read only the first Cookie line.
#[inline(never)]
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let values: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(joined) = HeaderValue::from_bytes(&values.join(&b"; "[..])) {
        headers.insert(COOKIE, joined);
    }
}

/// Removes [`OTHER_FORWARDING`] (see there), for a request from a peer not trusted.
#[cold]
#[inline(never)]
pub fn remove_other_forwarding(headers: &mut HeaderMap) {
    for name in &OTHER_FORWARDING {
        headers.remove(name);
    }
}

/// The `X-Forwarded-For` chain a trusted proxy sent, with `peer` added; None if it sent none.
#[inline(never)]
fn extended_chain(headers: &HeaderMap, peer: IpAddr) -> Option<String> {
    let prior: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if prior.is_empty() {
        return None;
    }
    let mut chain = prior.join(", ");
    chain.push_str(", ");
    chain.push_str(&peer.to_string());
    Some(chain)
}

/// The request id to use: the incoming one (`incoming`, the first of `count`) when it is
/// short printable ASCII, else a new one (128 random bits in hex). Returns it, and leaves it in
/// `headers` as the one value.
pub fn request_id(
    headers: &mut HeaderMap,
    incoming: Option<&HeaderValue>,
    count: usize,
) -> HeaderValue {
    let sane = incoming.filter(|v| {
        let v = v.as_bytes();
        !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.iter().all(u8::is_ascii_graphic)
    });
    if let Some(v) = sane {
        if count > 1 {
            // A repeated header reaches the upstream as this one value.
            headers.insert(X_REQUEST_ID, v.clone());
        }
        return v.clone();
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

thread_local! {
    /// Request ids must not repeat, but need not be secret: rand's `SmallRng` (xoshiro256++,
    /// seeded from the OS once per thread) gives 128 bits in a few instructions, where
    /// `ThreadRng` (ChaCha12, reseeded) cost about 2% of podproxy's instructions per request.
    static REQUEST_IDS: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(
        SmallRng::try_from_os_rng().unwrap_or_else(|_| SmallRng::seed_from_u64(clock_seed())),
    );
}

/// A seed for a thread whose OS random source failed: the clock and the thread.
fn clock_seed() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::time::SystemTime::now().hash(&mut h);
    std::thread::current().id().hash(&mut h);
    h.finish()
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (hi, lo) = REQUEST_IDS.with(|r| {
        let mut r = r.borrow_mut();
        (r.next_u64(), r.next_u64())
    });
    let random = (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes();
    let mut text = [0u8; 32];
    for (pair, b) in text.chunks_exact_mut(2).zip(random) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // Hex digits are always a valid header value. The array is the buffer's owner: one
    // allocation, with its count, that every clone (the upstream's header, the answer's, the
    // access log's) shares; a copied slice needs a second one for its count at its first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "s"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-app", "kept"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["set-cookie", "x-app"]);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn connection_options_and_hop_names_need_no_second_look_but_other_names_do() {
        /// Headers, whether Connection names something beyond HOP, and the names left.
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a [&'a str]);
        let cases: [Case; 3] = [
            // The usual answer from an app.
            (
                &[
                    ("connection", "Keep-Alive"),
                    ("keep-alive", "timeout=5"),
                    ("x-app", "1"),
                ],
                false,
                &["x-app"],
            ),
            // close is an option, TE a hop-by-hop header; a header called close stays.
            (
                &[
                    ("connection", " close ,, TE"),
                    ("te", "trailers"),
                    ("close", "a"),
                ],
                false,
                &["close"],
            ),
            (
                &[
                    ("connection", "close"),
                    ("connection", "X-Secret ,keep-alive"),
                    ("x-secret", "s"),
                    ("x-app", "1"),
                ],
                true,
                &["x-app"],
            ),
        ];
        for (pairs, others, left) in cases {
            let mut h = map(pairs);
            let found = HopByHop::find(&h);
            assert_eq!(found.names_others, others, "{pairs:?}");
            assert_eq!(found.remove(&mut h, false), others, "{pairs:?}");
            let kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(kept, left, "{pairs:?}");
        }
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade, X-Other"),
            ("upgrade", "websocket"),
            ("x-other", "1"),
        ]);
        remove_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(h.get("x-other").is_none());
    }

    fn forwarded(h: &mut HeaderMap, peer: &str, trusted: &TrustedProxies) {
        let value = HeaderValue::from_str(peer).expect("value");
        let host = h.get(HOST).cloned();
        set_forwarded(
            h,
            peer.parse().expect("ip"),
            &value,
            "http",
            host.as_ref(),
            trusted,
        );
    }

    #[test]
    fn forwarded_for_is_extended_only_for_trusted_peers() {
        let trusted =
            TrustedProxies::parse(&["10.0.0.0/8, 192.168.1.1".to_string()]).expect("valid");
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("host", "shop.example"),
        ]);
        forwarded(&mut h, "10.1.2.3", &trusted);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");

        let mut spoofed = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("host", "a"),
        ]);
        forwarded(&mut spoofed, "198.51.100.7", &trusted);
        assert_eq!(spoofed["x-forwarded-for"], "198.51.100.7");
        assert_eq!(spoofed["x-forwarded-proto"], "http");
        assert!(TrustedProxies::parse(&["not-a-net".to_string()]).is_err());
        let claims = [
            ("forwarded", "for=1.2.3.4;proto=https"),
            ("x-real-ip", "1.2.3.4"),
            ("X-Forwarded-Port", "443"),
        ];
        assert!(scan(&map(&claims)).other_forwarding);
        assert!(!scan(&map(&[("host", "a"), ("x-forwarded-for", "1.2.3.4")])).other_forwarding);
        let mut h = map(&claims);
        remove_other_forwarding(&mut h);
        assert!(h.is_empty(), "{h:?}");
        assert!(trusted.trusts("::ffff:10.0.0.1".parse().expect("mapped v4")));
    }

    fn id_of(h: &mut HeaderMap) -> HeaderValue {
        let found = scan(h);
        request_id(h, found.request_id.as_ref(), found.request_ids)
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_generated_otherwise() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(id_of(&mut h), "abc-123");
        assert_eq!(h["x-request-id"], "abc-123");
        let mut none = HeaderMap::new();
        let id = id_of(&mut none);
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        assert_eq!(none["x-request-id"], id);
        assert_ne!(id_of(&mut HeaderMap::new()), id);
        // Unique within a thread and across threads, each seeded on its own.
        let ids = |n| (0..n).map(|_| new_request_id()).collect::<Vec<_>>();
        let mut all = ids(5000);
        for other in [
            std::thread::spawn(move || ids(5000)),
            std::thread::spawn(move || ids(5000)),
        ] {
            all.extend(other.join().expect("thread"));
        }
        let distinct: std::collections::HashSet<_> =
            all.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), 15000);
        let mut twice = map(&[("x-request-id", "a"), ("x-request-id", "b")]);
        assert_eq!(id_of(&mut twice), "a");
        assert_eq!(twice.get_all("x-request-id").iter().count(), 1);
        let mut long = map(&[("x-request-id", &"x".repeat(200))]);
        let new = id_of(&mut long);
        assert_ne!(new.len(), 200);
        assert_eq!(
            long.get_all("x-request-id").iter().collect::<Vec<_>>(),
            [new]
        );
    }

    #[test]
    fn one_scan_finds_what_the_proxy_asks_of_a_request() {
        let h = map(&[
            ("host", "shop.example"),
            ("host", "second"),
            ("content-length", "5"),
            ("content-length", "6"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("te", "gzip, trailers"),
            ("x-request-id", "r1"),
        ]);
        let found = scan(&h);
        assert_eq!(
            found.host.as_ref().map(|v| v.as_bytes()),
            Some(&b"shop.example"[..])
        );
        assert_eq!(
            found.content_length.as_ref().map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert!(found.content_lengths_differ);
        assert!(found.upgrade && found.te_trailers);
        assert_eq!(found.request_ids, 1);
        let plain = scan(&map(&[
            ("upgrade", "websocket"),
            ("content-length", "5"),
            ("content-length", "5"),
        ]));
        assert!(
            !plain.upgrade,
            "Upgrade without Connection: upgrade is no upgrade"
        );
        assert!(!plain.content_lengths_differ && !plain.te_trailers);
        // Connection naming an end-to-end header: it goes, and the caller is told.
        let mut named = map(&[("connection", "x-request-id"), ("x-request-id", "r")]);
        let found = scan(&named);
        assert!(found.hop.remove(&mut named, false));
        assert!(named.is_empty());
    }
}
