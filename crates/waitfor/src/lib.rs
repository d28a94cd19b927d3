//! waitfor: the init-container tool. Targets are parsed from the command line or env
//! ([`config`], [`target`]), probed concurrently with backoff ([`wait`], [`probe`],
//! [`backoff`]), and when all are ready the process exits 0 or execs the app ([`exec`]).

pub mod backoff;
pub mod config;
pub mod exec;
pub mod probe;
pub mod target;
pub mod wait;

pub use config::{Cli, Config, ConfigError};
pub use wait::{run, Outcome};

/// Exit code when the wait timed out (as timeout(1), wait-for-it and wait4x use).
pub const EXIT_TIMEOUT: u8 = 124;
pub use podkit_runtime::cli::EXIT_USAGE;
