//! logship's entry point: parse, validate, start logging, bind the admin port, run.

use std::process::ExitCode;

use logship::{Cli, Config};
use podkit_runtime::cli;

fn main() -> ExitCode {
    match start() {
        Ok(code) | Err(code) => code,
    }
}

fn start() -> Result<ExitCode, ExitCode> {
    let cli: Cli = cli::parse("logship")?;
    let config = cli::validated("logship", Config::from_cli(cli, |k| std::env::var(k).ok()))?;
    cli::start_logging("logship", &config.log)?;
    let runtime = cli::runtime("logship", Some(2))?;
    let code = runtime.block_on(async move {
        let admin = cli::bind_optional("admin", config.admin).await?;
        let shutdown = cli::signals()?;
        match logship::run(config, admin, shutdown).await {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                tracing::error!("{e}");
                Ok(ExitCode::from(e.exit_code()))
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
