//! `cargo xtask bench waitfor`: end-to-end benchmark of waitfor against real peers,
//! printing a table. Placeholder until it is written.

use crate::error::{Error, Result};

pub fn bench_waitfor() -> Result<()> {
    Err(Error::new("`cargo xtask bench waitfor` is not yet written"))
}
