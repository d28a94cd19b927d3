//! Logging setup shared by every binary: human-readable text when stderr is a terminal (in
//! colour unless `NO_COLOR` is set), JSON lines otherwise (what `kubectl logs` and log pipelines want), or as `--log-format` says. The level
//! comes from `--log-level`, and `RUST_LOG` (a tracing `EnvFilter` directive) overrides it.
//!
//! The h2 crate's own events are kept to errors unless a `--log-level` directive names `h2` (or
//! RUST_LOG is set): h2 logs a peer's protocol slips at WARN, one line per frame, so a client
//! sending stray PING acks could make podproxy write some nine times its input to the log.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// The output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging flags every binary flattens into its clap struct. `env_prefix` differs per binary, so
/// the env twins (`WAITFOR_LOG_LEVEL`, ...) are declared by each binary; these are the shared
/// value types and the init function.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter directive such as `info` or `waitfor=debug`.
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("--log-level {level:?} is not a valid level or filter ({reason}); use error, warn, info, debug or trace")]
    BadLevel { level: String, reason: String },
    #[error(
        "RUST_LOG={value:?} is not a valid filter ({reason}); unset it or use e.g. RUST_LOG=debug"
    )]
    BadRustLog { value: String, reason: String },
}

/// The filter for `--log-level`: the level or directives given, with the h2 crate kept to
/// errors unless a directive names it.
fn level_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    let bad = |e: &dyn std::fmt::Display| LoggingError::BadLevel {
        level: level.to_string(),
        reason: e.to_string(),
    };
    let filter = EnvFilter::try_new(level).map_err(|e| bad(&e))?;
    let names_h2 = level
        .split(',')
        .any(|d| d.trim() == "h2" || d.trim().starts_with("h2=") || d.trim().starts_with("h2::"));
    if names_h2 {
        return Ok(filter);
    }
    let quiet_h2 = "h2=error".parse().map_err(|e| bad(&e))?;
    Ok(filter.add_directive(quiet_h2))
}

/// Installs the global subscriber. Call once, from `main`, before anything logs.
pub fn init(settings: &LogSettings) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::BadRustLog {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => level_filter(&settings.level)?,
    };
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder
            .with_ansi(use_color(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .try_init()
    };
    Ok(())
}

/// One JSON object per event: `timestamp`, `level`, `message`, then the event's fields as JSON
/// values: numbers and booleans as such, a field logged with `?` whose Debug text is itself
/// JSON (a `Vec<String>`, `[1, 2]`) as that value (an array), any other as a string. The
/// message is always a string. (tracing-subscriber's own JSON format writes every Debug value
/// as a string, so a list of paths arrived as `"[\"/logs/*.log\"]"`.)
struct JsonLines;

impl<S, N> fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &fmt::FmtContext<'_, S, N>,
        mut writer: fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use fmt::time::FormatTime;
        let mut stamp = String::new();
        fmt::time::SystemTime.format_time(&mut fmt::format::Writer::new(&mut stamp))?;
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":");
        line.push_str(&serde_json::Value::from(stamp).to_string());
        line.push_str(",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        event.record(&mut JsonFields(&mut line));
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Appends `,"name":value` for each field (see [`JsonLines`]).
struct JsonFields<'a>(&'a mut String);

impl JsonFields<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        self.0.push(',');
        self.0
            .push_str(&serde_json::Value::from(field.name()).to_string());
        self.0.push(':');
        self.0.push_str(&value.to_string());
    }
}

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let value = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)))
                if field.name() != "message" =>
            {
                v
            }
            _ => serde_json::Value::from(text),
        };
        self.put(field, value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything but the empty
/// string (https://no-color.org).
fn use_color(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_lists_as_arrays_and_numbers_as_numbers() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buf").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = fmt()
            .with_writer(move || out.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let paths = vec!["/logs/*.log".to_string(), "/x/\"q\".log".to_string()];
            #[derive(Debug)]
            struct NotJson {
                #[allow(dead_code)]
                a: u8,
            }
            tracing::warn!(paths = ?paths, offset = 42u64, ok = true, name = %"a b",
                thing = ?NotJson { a: 1 }, "[1, 2] is a message");
        });
        let text = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "[1, 2] is a message");
        assert_eq!(
            v["paths"],
            serde_json::json!(["/logs/*.log", "/x/\"q\".log"])
        );
        assert_eq!(v["offset"], 42);
        assert_eq!(v["ok"], true);
        assert_eq!(v["name"], "a b");
        assert_eq!(v["thing"], "NotJson { a: 1 }");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
    }

    #[test]
    fn no_color_turns_colours_off_on_a_terminal() {
        assert!(use_color(true, None));
        assert!(!use_color(true, Some("1".into())));
        assert!(
            use_color(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_color(false, None));
    }

    #[test]
    fn h2_is_kept_to_errors_unless_a_directive_names_it() {
        let shown = |level: &str| level_filter(level).map(|f| f.to_string());
        assert!(shown("info").expect("valid").contains("h2=error"));
        assert!(shown("podproxy=debug,warn")
            .expect("valid")
            .contains("h2=error"));
        // Asked for: left as asked.
        let asked = shown("info,h2=debug").expect("valid");
        assert!(
            asked.contains("h2=debug") && !asked.contains("h2=error"),
            "{asked}"
        );
        assert!(!shown("h2::proto=trace")
            .expect("valid")
            .contains("h2=error"));
        // A directive that only starts with the letters is another crate.
        assert!(shown("h2load=debug,info")
            .expect("valid")
            .contains("h2=error"));
    }
}
