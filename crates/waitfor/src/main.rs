//! waitfor's entry point: parse, validate, start logging, wait, then exit or exec.

use std::process::ExitCode;

use clap::Parser;
use podkit_runtime::{logging, Shutdown};
use waitfor::{exec, Cli, Config, Outcome, EXIT_TIMEOUT, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind::*;
            if matches!(err.kind(), DisplayHelp | DisplayVersion) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", podkit_runtime::usage_error_line("waitfor", &err));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match Config::from_cli(cli, std::env::var("WAITFOR_TARGETS").ok()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("waitfor: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(err) = logging::init(&config.log) {
        eprintln!("waitfor: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("waitfor: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let command = config.command.clone();
    let outcome = runtime.block_on(async move {
        let (shutdown, _trigger) = Shutdown::from_signals()?;
        Ok::<_, std::io::Error>(waitfor::run(config, shutdown).await)
    });
    // Do not wait for a resolver thread that may be stuck in getaddrinfo.
    runtime.shutdown_background();
    match outcome {
        Err(err) => {
            eprintln!("waitfor: cannot install signal handlers: {err}");
            ExitCode::from(1)
        }
        Ok(Outcome::Ready) if command.is_empty() => ExitCode::SUCCESS,
        Ok(Outcome::Ready) => {
            tracing::info!(
                "exec {}",
                command
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let failure = exec::exec(&command);
            tracing::error!(exit_code = failure.code, "{}", failure.message);
            ExitCode::from(failure.code)
        }
        Ok(Outcome::TimedOut(_)) => ExitCode::from(EXIT_TIMEOUT),
        Ok(Outcome::Interrupted(signal)) => ExitCode::from(signal.exit_code() as u8),
    }
}
