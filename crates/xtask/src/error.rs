//! The one error type of xtask: what failed, and what the person at the terminal
//! can do about it. `main` prints both and exits nonzero.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    /// What failed, naming the command, file or image.
    pub message: String,
    /// How to fix it, when we know.
    pub fix: Option<String>,
    /// The exit status: 1, or 2 for what the person must do first (a missing package).
    pub code: u8,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            fix: None,
            code: 1,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn exit_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}
