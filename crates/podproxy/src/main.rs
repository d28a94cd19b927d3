//! podproxy's entry point: parse, validate, start logging, bind, run.

use std::process::ExitCode;

use podkit_runtime::cli::{self, EXIT_FAILURE, EXIT_USAGE};
use podproxy::{Cli, Config, RunError};

/// mimalloc: a request allocates and frees dozens of small buffers (headers, futures, body
/// frames); glibc's malloc spent about 8% of podproxy's CPU on them under load.
#[global_allocator]
static ALLOCATOR: podkit_alloc::MiMalloc = podkit_alloc::MiMalloc;

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
    // On one CPU (a sidecar's usual limit) the current-thread scheduler: no work-stealing
    // machinery between tasks that can only take turns anyway.
    let runtime = cli::runtime("podproxy", (workers > 1).then_some(workers))?;
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
                    RunError::DrainTimeout(_) | RunError::Internal(_) => EXIT_FAILURE,
                }))
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
