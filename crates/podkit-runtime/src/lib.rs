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

/// What every binary's `--version` prints after its name: the workspace version, the git commit
/// it was built from (`-modified` when the tree had changes), the target, and whether the build
/// was profile-guided.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PODKIT_COMMIT"),
    ", ",
    env!("PODKIT_TARGET"),
    ", ",
    env!("PODKIT_BUILD"),
    ")"
);
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
        // clap's "to pass '--x' as a value, use '-- --x'": after `--`, waitfor runs the
        // command it is given, and the other binaries take no values there at all.
        .filter(|l| !l.starts_with("tip: to pass '"))
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

    #[test]
    fn an_unknown_flag_is_never_told_to_go_after_a_double_dash() {
        let err = Cli::try_parse_from(["prog", "--path", "x", "--bogus"]).expect_err("unknown");
        let line = super::usage_error_line("prog", &err);
        assert!(line.contains("unexpected argument '--bogus'"), "{line}");
        assert!(!line.contains("'-- "), "{line}");
        // clap's other tips, such as a similar flag's name, stay.
        let err = Cli::try_parse_from(["prog", "--pat", "x"]).expect_err("typo");
        let line = super::usage_error_line("prog", &err);
        assert!(line.contains("--path"), "{line}");
    }
}
