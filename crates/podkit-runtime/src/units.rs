//! Duration and size values as people write them in flags and Pod specs: `500ms`, `2m`, `1m30s`,
//! `64KiB`, `10MB`. Every value carries its unit (except `0`), so a bare `5` is an error rather
//! than a guess between seconds and milliseconds.

use std::time::Duration;

/// Why a duration or size string was refused; the message says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty value: give a duration such as 500ms, 10s, 2m or 1h")]
    EmptyDuration,
    #[error(
        "{0:?} is not a duration: use a number with a unit (ms, s, m, h), e.g. 500ms, 10s, 1m30s"
    )]
    BadDuration(String),
    #[error("{0:?} is not a size: use a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB), e.g. 64KiB")]
    BadSize(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses `500ms`, `10s`, `2m`, `1h`, `1m30s`, `1.5s` or `0`.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || UnitError::BadDuration(input.to_string());
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(number * unit_secs)
            .map_err(|_| UnitError::Overflow(input.to_string()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| UnitError::Overflow(input.to_string()))?;
    }
    Ok(total)
}

/// Parses `512`, `512B`, `64KiB`, `64K`, `10MB`, `1GiB` into bytes. Decimal units (KB, MB, GB)
/// are powers of 1000, binary units (KiB, MiB, GiB, and the single letters K, M, G) of 1024.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let s = input.trim();
    let bad = || UnitError::BadSize(input.to_string());
    let num_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if num_len == 0 {
        return Err(bad());
    }
    let number: u64 = s[..num_len].parse().map_err(|_| bad())?;
    let factor: u64 = match s[num_len..].trim() {
        "" | "B" | "b" => 1,
        "KB" | "kB" | "kb" => 1000,
        "MB" | "mb" => 1000 * 1000,
        "GB" | "gb" => 1000 * 1000 * 1000,
        "K" | "k" | "KiB" | "Ki" => 1024,
        "M" | "m" | "MiB" | "Mi" => 1024 * 1024,
        "G" | "g" | "GiB" | "Gi" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| UnitError::Overflow(input.to_string()))
}

/// Formats a duration the way our logs print it: `850ms`, `2.31s`, `3m05s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        let secs = d.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_combinations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_unit_or_with_unknown_unit_are_refused() {
        assert!(matches!(
            parse_duration("5"),
            Err(UnitError::BadDuration(_))
        ));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(UnitError::BadDuration(_))
        ));
        assert!(matches!(
            parse_duration("ms"),
            Err(UnitError::BadDuration(_))
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(UnitError::BadDuration(_))
        ));
        assert_eq!(parse_duration(""), Err(UnitError::EmptyDuration));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn sizes_accept_decimal_and_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("64k"), Ok(64 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(matches!(parse_size("1.5MiB"), Err(UnitError::BadSize(_))));
        assert!(matches!(parse_size("lots"), Err(UnitError::BadSize(_))));
        assert!(matches!(
            parse_size("99999999999999999999GiB"),
            Err(UnitError::BadSize(_))
        ));
    }

    #[test]
    fn durations_format_for_people() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(2310)), "2.31s");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
    }
}

/// A listening address for a flag: `HOST:PORT`, `[V6]:PORT`, or `:PORT` for every interface
/// (`0.0.0.0:PORT`), as Go's and nginx's `listen :8080` mean.
pub fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535, e.g. :8080"))?;
        return Ok(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse().map_err(|_| {
        format!("{s:?} is not an address to listen on; use HOST:PORT (127.0.0.1:8080, [::]:8080) or :PORT for every interface")
    })
}

#[cfg(test)]
mod listen_tests {
    use super::parse_listen_addr;

    #[test]
    fn a_bare_port_listens_on_every_interface() {
        assert_eq!(
            parse_listen_addr(":8080").expect("ok").to_string(),
            "0.0.0.0:8080"
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:9").expect("ok").to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(
            parse_listen_addr("[::]:80").expect("ok").to_string(),
            "[::]:80"
        );
        assert!(parse_listen_addr(":http")
            .expect_err("bad")
            .contains(":8080"));
        assert!(parse_listen_addr("8080")
            .expect_err("bad")
            .contains(":PORT"));
    }
}
