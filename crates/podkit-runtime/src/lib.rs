//! The only crate the podkit binaries share. It holds what every binary needs and nothing else:
//! logging setup ([`logging`]), the SIGTERM/SIGINT shutdown signal ([`shutdown`]), duration and
//! size parsing for flags ([`units`]), and the admin HTTP server ([`admin`]).

pub mod admin;
pub mod logging;
pub mod shutdown;
pub mod units;

pub use shutdown::{Shutdown, ShutdownTrigger, Signal};
pub use units::{parse_duration, parse_size};
