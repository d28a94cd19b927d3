//! The only crate the podkit binaries share. It holds what every binary needs and nothing else:
//! logging setup ([`logging`]), the SIGTERM/SIGINT shutdown signal ([`shutdown`]), duration and
//! size parsing for flags ([`units`]), and the admin HTTP server (`admin`, behind the `admin`
//! feature).

#[cfg(feature = "admin")]
pub mod admin;
pub mod cli;
pub mod logging;
pub mod shutdown;
#[cfg(feature = "tls-client")]
pub mod tls_client;
pub mod units;

pub use shutdown::{Shutdown, ShutdownTrigger, Signal};
pub use units::{parse_duration, parse_listen_addr, parse_size};

/// clap's error as one line for `kubectl logs`: the message and any continuation lines (such as
/// the names of missing arguments), without the usage block, and a pointer to `--help`.
pub fn usage_error_line(program: &str, err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let text = parts.join(" ");
    let text = text.trim_start_matches("error: ");
    format!("{program}: {text} (see {program} --help)")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, required = true)]
        path: String,
    }

    #[test]
    fn usage_errors_fit_on_one_line_and_name_what_is_missing() {
        let err = Cli::try_parse_from(["prog"]).expect_err("missing --path");
        let line = super::usage_error_line("prog", &err);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("prog: the following required arguments were not provided: --path"),
            "{line}"
        );
        assert!(line.ends_with("(see prog --help)"), "{line}");
    }
}
