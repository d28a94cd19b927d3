//! logship's entry point: parse, validate, start logging, bind the admin port, run.

use std::process::ExitCode;

use clap::Parser;
use logship::{Cli, Config, EXIT_FAILURE, EXIT_USAGE};
use podkit_runtime::{logging, Shutdown};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind::*;
            if matches!(err.kind(), DisplayHelp | DisplayVersion) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", podkit_runtime::usage_error_line("logship", &err));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match Config::from_cli(cli, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logship: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = logging::init(&config.log) {
        eprintln!("logship: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logship: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async move {
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
            Ok((s, _trigger)) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match logship::run(config, admin, shutdown).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(e.exit_code())
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
