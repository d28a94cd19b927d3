//! The steps every binary's `main` takes before its own work, each ending the process with the
//! right code and one line on stderr when it fails: parse the command line (help and version
//! exit 0, usage errors exit 2), validate, start logging, build the runtime, bind listeners.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::logging::{self, LogSettings};

/// Exit code for usage and configuration errors, shared by every binary.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for failures at run time.
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line; `Err` carries the exit code after help, version or a usage error
/// has been printed.
pub fn parse<T: clap::Parser>(program: &str) -> Result<T, ExitCode> {
    T::try_parse().map_err(|err| {
        use clap::error::ErrorKind::*;
        if matches!(err.kind(), DisplayHelp | DisplayVersion) {
            let _ = err.print();
            ExitCode::SUCCESS
        } else {
            eprintln!("{}", crate::usage_error_line(program, &err));
            ExitCode::from(EXIT_USAGE)
        }
    })
}

/// Turns a validation result into the config, or prints the error and gives exit code 2.
pub fn validated<C, E: Display>(program: &str, result: Result<C, E>) -> Result<C, ExitCode> {
    result.map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Starts logging, or prints why it cannot and gives exit code 2.
pub fn start_logging(program: &str, settings: &LogSettings) -> Result<(), ExitCode> {
    logging::init(settings).map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// A tokio runtime (multi-threaded with `workers`, or current-thread for `None`).
pub fn runtime(program: &str, workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = match workers {
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("{program}: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}

/// Binds `addr` for the flag named `flag`, or logs why not and gives exit code 2.
pub async fn bind(flag: &str, addr: SocketAddr) -> Result<tokio::net::TcpListener, ExitCode> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        tracing::error!("--{flag} {addr}: cannot listen ({e}); pick a free port");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Binds `addr` when the flag was given.
pub async fn bind_optional(
    flag: &str,
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, ExitCode> {
    match addr {
        Some(addr) => bind(flag, addr).await.map(Some),
        None => Ok(None),
    }
}

/// The shutdown fired by SIGTERM and SIGINT (inside the runtime), or exit code 1.
pub fn signals() -> Result<crate::Shutdown, ExitCode> {
    crate::Shutdown::from_signals()
        .map(|(shutdown, _trigger)| shutdown)
        .map_err(|e| {
            tracing::error!("cannot install signal handlers: {e}");
            ExitCode::from(EXIT_FAILURE)
        })
}

/// The part of a multi-line error (such as regex's, which draws the pattern with a caret
/// first) that says what is wrong: its last line.
pub fn last_line(err: &dyn std::fmt::Display) -> String {
    err.to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}
