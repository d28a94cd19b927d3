//! Replacing waitfor with COMMAND once every target is ready. exec keeps the PID, so COMMAND
//! receives the container's signals and its exit code is the container's. Signal handlers we
//! installed are reset to their defaults by execve(2); Rust's std restores SIGPIPE's default and
//! clears the signal mask before it execs.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// Why COMMAND could not be executed, with the exit code that reports it (as shells do: 127 not
/// found, 126 found but not executable).
#[derive(Debug)]
pub struct ExecFailure {
    pub code: u8,
    pub message: String,
}

/// Execs `command`; returns only if that failed.
pub fn exec(command: &[OsString]) -> ExecFailure {
    let Some((program, args)) = command.split_first() else {
        return ExecFailure {
            code: 2,
            message: "no command given after --".into(),
        };
    };
    let err = std::process::Command::new(program).args(args).exec();
    let name = program.to_string_lossy();
    match err.kind() {
        std::io::ErrorKind::NotFound => ExecFailure {
            code: 127,
            message: format!("command not found: {name} (check the path, or that the image contains it and PATH includes its directory)"),
        },
        std::io::ErrorKind::PermissionDenied => ExecFailure {
            code: 126,
            message: format!("command cannot be executed: {name}: permission denied (is it executable by this user, and is its filesystem mounted without noexec?)"),
        },
        _ => ExecFailure {
            code: 126,
            message: format!("command cannot be executed: {name}: {err}"),
        },
    }
}
