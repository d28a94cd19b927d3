//! podproxy's entry point: parse, validate, start logging, bind, run.

use std::process::ExitCode;

use clap::Parser;
use podkit_runtime::{logging, Shutdown};
use podproxy::{Cli, Config, EXIT_FAILURE, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind::*;
            if matches!(err.kind(), DisplayHelp | DisplayVersion) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", podkit_runtime::usage_error_line("podproxy", &err));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("podproxy: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = logging::init(&config.log) {
        eprintln!("podproxy: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podproxy: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async move {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    tracing::error!("--listen {addr}: cannot listen ({e}); pick a free port");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        let admin = match config.admin {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!("--admin {addr}: cannot listen ({e}); pick a free port");
                    return ExitCode::from(EXIT_USAGE);
                }
            },
            None => None,
        };
        let shutdown = match Shutdown::from_signals() {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match podproxy::run(config, listeners, admin, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(match e {
                    podproxy::RunError::Setup(_) => EXIT_USAGE,
                    podproxy::RunError::DrainTimeout(_) => EXIT_FAILURE,
                })
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
