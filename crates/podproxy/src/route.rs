//! Routes from `--route PREFIX=UPSTREAM[,OPTION...]` and the choice of route for a request.
//!
//! A route may name a host (`api.example.com/=http://127.0.0.1:5000`). For a request, the routes
//! for its host are tried first, then the host-less ones; among those, the longest prefix that
//! matches on a segment boundary wins: `/api` matches `/api` and `/api/x`, never `/apiary`.
//! Options: `strip` removes the prefix before forwarding; `h2c` speaks HTTP/2 cleartext to the
//! upstream (gRPC). Upstreams: `http://host:port` (a name is resolved again as it changes) and
//! `unix:/path/to.sock`.

use std::fmt;
use std::path::PathBuf;

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Http { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Http { host, port } if host.contains(':') => {
                write!(f, "http://[{host}]:{port}")
            }
            Upstream::Http { host, port } => write!(f, "http://{host}:{port}"),
            Upstream::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower-case host without port, for host routes.
    pub host: Option<String>,
    /// Starts with `/`; no trailing `/` except for the root route.
    pub prefix: String,
    pub upstream: Upstream,
    pub strip: bool,
    pub h2c: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--route {input:?}: {reason}")]
pub struct RouteError {
    pub input: String,
    pub reason: String,
}

impl Route {
    /// Parses `PREFIX=UPSTREAM[,OPTION...]`, e.g. `/api=http://127.0.0.1:5000,strip`.
    pub fn parse(input: &str) -> Result<Route, RouteError> {
        let err = |reason: &str| RouteError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (left, right) = input
            .split_once('=')
            .ok_or_else(|| err("expected PREFIX=UPSTREAM, e.g. /api=http://127.0.0.1:5000"))?;
        let (host, prefix) = match left.find('/') {
            Some(0) => (None, left),
            Some(i) => (Some(left[..i].to_ascii_lowercase()), &left[i..]),
            None => return Err(err("the prefix must start with '/' (or be HOST/PREFIX)")),
        };
        if let Some(h) = &host {
            if h.contains(':')
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return Err(err(
                    "the host of a host route is a name without port, e.g. api.example.com/",
                ));
            }
        }
        let prefix = match prefix.trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        let mut parts = right.split(',');
        let upstream = parse_upstream(parts.next().unwrap_or_default()).map_err(|r| err(&r))?;
        let (mut strip, mut h2c) = (false, false);
        for option in parts {
            match option.trim() {
                "strip" => strip = true,
                "h2c" => h2c = true,
                other => {
                    return Err(err(&format!(
                        "unknown option {other:?}; options are strip and h2c"
                    )))
                }
            }
        }
        Ok(Route {
            host,
            prefix,
            upstream,
            strip,
            h2c,
        })
    }

    /// Whether `path` is under this route's prefix, on a segment boundary.
    pub fn matches(&self, path: &str) -> bool {
        if self.prefix == "/" {
            return true;
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Whether the upstream sees another path than the client asked for (`strip` of a prefix
    /// other than `/`).
    pub fn rewrites_path(&self) -> bool {
        self.strip && self.prefix != "/"
    }

    /// The path the upstream sees.
    pub fn upstream_path(&self, path: &str) -> String {
        if !self.rewrites_path() {
            return path.to_string();
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some("") | None => "/".to_string(),
            // Path parameters of the prefix's last segment go with it (`/api;v=1/items`).
            Some(rest) if rest.starts_with(';') => {
                rest.find('/').map_or("/", |i| &rest[i..]).to_string()
            }
            Some(rest) => rest.to_string(),
        }
    }
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        let path = path.trim_start_matches("//");
        if !path.starts_with('/') {
            return Err("a unix upstream needs an absolute path, e.g. unix:/run/app.sock".into());
        }
        return Ok(Upstream::Unix(PathBuf::from(path)));
    }
    let Some(authority) = s.strip_prefix("http://") else {
        return Err(format!(
            "upstream {s:?}: use http://host:port or unix:/path/to.sock"
        ));
    };
    let authority = authority.trim_end_matches('/');
    if authority.contains('/') {
        return Err("an upstream has no path; use the strip option to remove the prefix".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or("write IPv6 upstreams as http://[::1]:5000")?;
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or("the upstream needs a port, e.g. http://127.0.0.1:5000")?
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{port:?} is not a port number")),
    };
    if host.is_empty() {
        return Err("the upstream host is empty".into());
    }
    Ok(Upstream::Http {
        host: host.to_string(),
        port,
    })
}

/// Every route, and the choice among them.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
    /// Some route names a host; without one, the request's host plays no part in the choice
    /// and is not looked at (its port is not stripped, no host pass is made).
    any_host: bool,
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Routes {
        let any_host = routes.iter().any(|r| r.host.is_some());
        Routes { routes, any_host }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The route at `index` (from [`Routes::find_index`]).
    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// The route for a request to `host` (as in the Host header, port allowed) and the
    /// normalized `path`; None is a 404.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.find_index(host, path).map(|i| &self.routes[i])
    }

    /// As [`Routes::find`], the route's position in the list.
    pub fn find_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.filter(|_| self.any_host).map(strip_port);
        let best = |for_host: bool| {
            self.routes
                .iter()
                .enumerate()
                .filter(|(_, r)| match (&r.host, host) {
                    (Some(rh), Some(h)) if for_host => rh.eq_ignore_ascii_case(h),
                    (None, _) if !for_host => true,
                    _ => false,
                })
                .filter(|(_, r)| r.matches(path))
                .max_by_key(|(_, r)| r.prefix.len())
                .map(|(i, _)| i)
        };
        host.and_then(|_| best(true)).or_else(|| best(false))
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(specs: &[&str]) -> Routes {
        Routes::new(
            specs
                .iter()
                .map(|s| Route::parse(s).expect("valid route"))
                .collect(),
        )
    }

    fn pick<'a>(r: &'a Routes, host: Option<&str>, path: &str) -> Option<&'a str> {
        r.find(host, path).map(|r| r.prefix.as_str())
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let r = routes(&[
            "/=http://127.0.0.1:3000",
            "/api=http://127.0.0.1:5000",
            "/api/v2=http://127.0.0.1:5002",
        ]);
        assert_eq!(pick(&r, None, "/api"), Some("/api"));
        assert_eq!(pick(&r, None, "/api/x"), Some("/api"));
        assert_eq!(pick(&r, None, "/api/v2/x"), Some("/api/v2"));
        assert_eq!(pick(&r, None, "/apiary"), Some("/"));
        assert_eq!(pick(&r, None, "/"), Some("/"));
        let no_root = routes(&["/api=http://127.0.0.1:5000"]);
        assert_eq!(pick(&no_root, None, "/apiary"), None);
    }

    #[test]
    fn host_routes_come_before_host_less_ones() {
        let r = routes(&[
            "/=http://127.0.0.1:3000",
            "api.example.com/=http://127.0.0.1:5000",
        ]);
        let upstream = |host| r.find(host, "/x").map(|r| r.upstream.to_string());
        assert_eq!(
            upstream(Some("API.example.com:8080")),
            Some("http://127.0.0.1:5000".into())
        );
        assert_eq!(
            upstream(Some("www.example.com")),
            Some("http://127.0.0.1:3000".into())
        );
        assert_eq!(upstream(None), Some("http://127.0.0.1:3000".into()));
    }

    #[test]
    fn strip_removes_the_prefix() {
        let r = Route::parse("/api/=http://127.0.0.1:5000,strip").expect("valid");
        assert_eq!(r.prefix, "/api");
        assert_eq!(r.upstream_path("/api"), "/");
        assert_eq!(r.upstream_path("/api/items?x=1"), "/items?x=1");
        assert_eq!(r.upstream_path("/api;v=1/items"), "/items");
        assert_eq!(r.upstream_path("/api;v=1"), "/");
        let keep = Route::parse("/api=http://127.0.0.1:5000").expect("valid");
        assert_eq!(keep.upstream_path("/api/items"), "/api/items");
    }

    #[test]
    fn upstreams_and_options_parse() {
        let r = Route::parse("/grpc=http://backend-service:50051,h2c").expect("valid");
        assert!(r.h2c && !r.strip);
        assert_eq!(
            r.upstream,
            Upstream::Http {
                host: "backend-service".into(),
                port: 50051
            }
        );
        let u = Route::parse("/=unix:/run/app.sock").expect("valid");
        assert_eq!(u.upstream, Upstream::Unix("/run/app.sock".into()));
        let v6 = Route::parse("/=http://[::1]:5000").expect("valid");
        assert_eq!(v6.upstream.to_string(), "http://[::1]:5000");
    }

    #[test]
    fn bad_routes_say_what_is_wrong() {
        for (spec, needle) in [
            ("/api", "PREFIX=UPSTREAM"),
            ("api=http://x:1", "must start with '/'"),
            ("/api=https://x:1", "use http://host:port"),
            ("/api=http://x", "needs a port"),
            ("/api=http://x:0", "not a port"),
            ("/api=http://x:1/base", "has no path"),
            ("/api=http://x:1,gzip", "unknown option"),
            ("/api=unix:relative.sock", "absolute path"),
            ("host:80/=http://x:1", "without port"),
        ] {
            let e = Route::parse(spec).expect_err(spec).to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
