//! Targets as users write them (`db:5432`, `tcp://[::1]:5432`, `https://api/healthz`,
//! `unix:///run/app.sock`, `file:///shared/ready`, `dns://backend-service`,
//! `postgres://db:5432`, `redis://cache`, `mysql://db`), parsed once into [`Target`]. A target
//! that cannot be parsed is a usage error that names it and says what a valid one looks like;
//! nothing falls back to a default silently.

use std::fmt;
use std::path::PathBuf;

/// Where a network target lives. The host is kept as written (a name, an IPv4 literal or an IPv6
/// literal without brackets) and resolved again on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One dependency to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP port accepts a connection.
    Tcp(HostPort),
    /// An HTTP(S) endpoint answers with an accepted status (and body/header, if asked).
    Http {
        url: http::Uri,
        addr: HostPort,
        tls: bool,
    },
    /// A unix socket accepts a connection.
    Unix(PathBuf),
    /// A file exists (and is non-empty with `--file-nonempty`).
    File(PathBuf),
    /// A name resolves to at least one address.
    Dns(String),
    /// A PostgreSQL server accepts connections, as `pg_isready` reports it.
    Postgres { addr: HostPort, user: String },
    /// A Redis server answers PING.
    Redis(HostPort),
    /// A MySQL or MariaDB server sends its greeting.
    Mysql(HostPort),
}

/// What is wrong with a target as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {input:?}: {reason}")]
pub struct TargetError {
    pub input: String,
    pub reason: String,
}

const SCHEMES: &str =
    "host:port, tcp://, http://, https://, unix://, file://, dns://, postgres://, redis://, mysql://";

impl Target {
    /// Parses one target as written on the command line or in `WAITFOR_TARGETS`.
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        let err = |reason: String| TargetError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty target".into()));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return parse_host_port(s, None).map(Target::Tcp).map_err(err);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => parse_host_port(rest, None).map(Target::Tcp).map_err(err),
            "http" | "https" => {
                let url: http::Uri = s
                    .parse()
                    .map_err(|e| err(format!("not a valid URL ({e})")))?;
                let tls = scheme.eq_ignore_ascii_case("https");
                let authority = url
                    .authority()
                    .ok_or_else(|| err("the URL has no host".into()))?;
                if authority.as_str().contains('@') {
                    return Err(err(
                        "credentials in the URL are not supported; send them with --http-request-header 'Authorization: ...'".into(),
                    ));
                }
                let addr = parse_host_port(authority.as_str(), Some(if tls { 443 } else { 80 }))
                    .map_err(err)?;
                Ok(Target::Http { url, addr, tls })
            }
            "unix" => absolute_path(rest).map(Target::Unix).map_err(err),
            "file" => absolute_path(rest).map(Target::File).map_err(err),
            "dns" => {
                let name = rest.trim_end_matches('/');
                if name.is_empty()
                    || name.contains('/')
                    || name.contains(':') && !name.starts_with('[')
                {
                    return Err(err(
                        "expected dns://NAME, e.g. dns://backend-service.default.svc".into(),
                    ));
                }
                Ok(Target::Dns(name.to_string()))
            }
            "postgres" | "postgresql" => {
                let (user, hostport) = split_userinfo(rest);
                let addr = parse_host_port(strip_path(hostport), Some(5432)).map_err(err)?;
                Ok(Target::Postgres {
                    addr,
                    user: user.unwrap_or("postgres").to_string(),
                })
            }
            "redis" => {
                let (_, hostport) = split_userinfo(rest);
                parse_host_port(strip_path(hostport), Some(6379))
                    .map(Target::Redis)
                    .map_err(err)
            }
            "mysql" | "mariadb" => {
                let (_, hostport) = split_userinfo(rest);
                parse_host_port(strip_path(hostport), Some(3306))
                    .map(Target::Mysql)
                    .map_err(err)
            }
            other => Err(err(format!(
                "unknown scheme {other:?}; use one of {SCHEMES}"
            ))),
        }
    }

    /// The network address this target connects to, if it is a network target.
    pub fn host_port(&self) -> Option<&HostPort> {
        match self {
            Target::Tcp(a) | Target::Redis(a) | Target::Mysql(a) => Some(a),
            Target::Http { addr, .. } | Target::Postgres { addr, .. } => Some(addr),
            Target::Unix(_) | Target::File(_) | Target::Dns(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "tcp://{a}"),
            Target::Http { url, .. } => write!(f, "{url}"),
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
            Target::File(p) => write!(f, "file://{}", p.display()),
            Target::Dns(n) => write!(f, "dns://{n}"),
            Target::Postgres { addr, .. } => write!(f, "postgres://{addr}"),
            Target::Redis(a) => write!(f, "redis://{a}"),
            Target::Mysql(a) => write!(f, "mysql://{a}"),
        }
    }
}

fn split_userinfo(s: &str) -> (Option<&str>, &str) {
    match s.rsplit_once('@') {
        Some((userinfo, rest)) => {
            let user = userinfo.split(':').next().filter(|u| !u.is_empty());
            (user, rest)
        }
        None => (None, s),
    }
}

fn strip_path(s: &str) -> &str {
    let end = s.find(['/', '?']).unwrap_or(s.len());
    &s[..end]
}

fn absolute_path(rest: &str) -> Result<PathBuf, String> {
    if !rest.starts_with('/') {
        return Err(format!(
            "expected an absolute path after the scheme (three slashes), e.g. file:///shared/ready, not {rest:?}"
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Parses `host:port`, `[v6]:port`, or (with a default port) `host` and `[v6]`.
fn parse_host_port(s: &str, default_port: Option<u16>) -> Result<HostPort, String> {
    let s = s.trim_end_matches('/');
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing bracket, e.g. [::1]:5432")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("expected :PORT after the IPv6 address".into()),
        }
    } else if s.matches(':').count() > 1 {
        return Err("an IPv6 address must be written in brackets, e.g. [::1]:5432".into());
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%')))
    {
        return Err(format!(
            "{host:?} is not a valid host name (character {bad:?})"
        ));
    }
    let port = match (port, default_port) {
        (Some(p), _) => parse_port(p)?,
        (None, Some(d)) => d,
        (None, None) => return Err("a port is required, e.g. db:5432".into()),
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port number (1-65535)")),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn tcp_targets_in_every_spelling() {
        assert_eq!(Target::parse("db:5432"), Ok(Target::Tcp(hp("db", 5432))));
        assert_eq!(
            Target::parse("tcp://db:5432"),
            Ok(Target::Tcp(hp("db", 5432)))
        );
        assert_eq!(
            Target::parse("[::1]:5432"),
            Ok(Target::Tcp(hp("::1", 5432)))
        );
        assert_eq!(
            Target::parse("tcp://[::1]:80").map(|t| t.to_string()),
            Ok("tcp://[::1]:80".into())
        );
    }

    #[test]
    fn bad_tcp_targets_say_what_is_wrong() {
        for (input, needle) in [
            ("db", "port is required"),
            ("db:0", "not a port number"),
            ("db:99999", "not a port number"),
            ("::1:80", "brackets"),
            ("[::1:80", "closing bracket"),
            ("[zz]:80", "not an IPv6"),
            (":80", "host is empty"),
            ("d b:80", "not a valid host"),
            ("ftp://x", "unknown scheme"),
        ] {
            let e = Target::parse(input).expect_err(input);
            assert!(e.to_string().contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn protocol_targets_have_default_ports() {
        assert_eq!(
            Target::parse("postgres://db"),
            Ok(Target::Postgres {
                addr: hp("db", 5432),
                user: "postgres".into()
            })
        );
        assert_eq!(
            Target::parse("postgresql://app:secret@db:6432/appdb"),
            Ok(Target::Postgres {
                addr: hp("db", 6432),
                user: "app".into()
            })
        );
        assert_eq!(
            Target::parse("redis://cache"),
            Ok(Target::Redis(hp("cache", 6379)))
        );
        assert_eq!(
            Target::parse("mysql://db:3307"),
            Ok(Target::Mysql(hp("db", 3307)))
        );
    }

    #[test]
    fn http_targets_keep_the_url() {
        let Ok(Target::Http { url, addr, tls }) =
            Target::parse("https://api.example.com/healthz?x=1")
        else {
            panic!("not http");
        };
        assert!(tls);
        assert_eq!(addr, hp("api.example.com", 443));
        assert_eq!(
            url.path_and_query().map(|p| p.as_str()),
            Some("/healthz?x=1")
        );
        let Ok(Target::Http { addr, .. }) = Target::parse("http://[::1]:8080/") else {
            panic!("not http");
        };
        assert_eq!(addr, hp("::1", 8080));
        assert!(Target::parse("http://user:pw@x/").is_err());
    }

    #[test]
    fn path_targets_must_be_absolute() {
        assert_eq!(
            Target::parse("file:///shared/ready"),
            Ok(Target::File("/shared/ready".into()))
        );
        assert_eq!(
            Target::parse("unix:///run/a.sock"),
            Ok(Target::Unix("/run/a.sock".into()))
        );
        assert!(Target::parse("file://shared/ready").is_err());
        assert_eq!(
            Target::parse("dns://backend"),
            Ok(Target::Dns("backend".into()))
        );
        assert!(Target::parse("dns://").is_err());
    }
}
