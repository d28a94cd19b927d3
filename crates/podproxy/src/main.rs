//! podproxy's entry point: parse, validate, start logging, bind, run.

use std::process::ExitCode;

use podkit_runtime::cli::{self, EXIT_FAILURE, EXIT_USAGE};
use podproxy::{Cli, Config, RunError};

fn main() -> ExitCode {
    match start() {
        Ok(code) | Err(code) => code,
    }
}

fn start() -> Result<ExitCode, ExitCode> {
    let cli: Cli = cli::parse("podproxy")?;
    let config = cli::validated("podproxy", Config::from_cli(cli))?;
    cli::start_logging("podproxy", &config.log)?;
    // One worker per CPU this process may run on (its affinity mask, as cgroups and taskset
    // set it).
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let runtime = cli::runtime("podproxy", Some(workers))?;
    let code = runtime.block_on(async move {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push(cli::bind("listen", *addr).await?);
        }
        let admin = cli::bind_optional("admin", config.admin).await?;
        let shutdown = cli::signals()?;
        match podproxy::run(config, listeners, admin, shutdown).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                tracing::error!("{e}");
                Ok(ExitCode::from(match e {
                    RunError::Setup(_) => EXIT_USAGE,
                    RunError::DrainTimeout(_) => EXIT_FAILURE,
                }))
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
