//! waitfor's entry point: parse, validate, start logging, wait, then exit or exec.

use std::process::ExitCode;

use podkit_runtime::cli::{self, EXIT_FAILURE};
use podkit_runtime::Shutdown;
use waitfor::{exec, Cli, Config, Outcome, EXIT_TIMEOUT};

fn main() -> ExitCode {
    match start() {
        Ok(code) | Err(code) => code,
    }
}

fn start() -> Result<ExitCode, ExitCode> {
    let cli: Cli = cli::parse("waitfor")?;
    let config = cli::validated(
        "waitfor",
        Config::from_cli(cli, std::env::var("WAITFOR_TARGETS").ok()),
    )?;
    cli::start_logging("waitfor", &config.log)?;
    let runtime = cli::runtime("waitfor", None)?;
    let command = config.command.clone();
    let outcome = runtime.block_on(async move {
        let (shutdown, _trigger) = Shutdown::from_signals()?;
        Ok::<_, std::io::Error>(waitfor::run(config, shutdown).await)
    });
    // Do not wait for a resolver thread that may be stuck in getaddrinfo.
    runtime.shutdown_background();
    Ok(match outcome {
        Err(err) => {
            eprintln!("waitfor: cannot install signal handlers: {err}");
            ExitCode::from(EXIT_FAILURE)
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
    })
}
