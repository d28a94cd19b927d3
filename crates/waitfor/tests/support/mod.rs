//! Helpers the waitfor integration tests share: spawning the real binary, a child guard that
//! kills on drop, bounded waits (a hang is a test failure, never a stuck CI run), free loopback
//! ports, small servers, and locating system packages the tests need.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The longest any single waitfor run may take in a test before the test fails.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// A `waitfor` command, set up by [`test_env`].
pub fn waitfor() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waitfor"));
    test_env(&mut cmd);
    cmd
}

/// Clears any `WAITFOR_*` and `RUST_LOG` the test runner has, asks for text logs (the tests match
/// messages), and pipes the output.
pub fn test_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("WAITFOR_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("WAITFOR_LOG_FORMAT", "text");
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
}

/// A running process, killed when dropped.
pub struct Guard(pub Child);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        Guard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}")),
        )
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Waits for exit (failing the test after `limit`) and collects the output.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.0.kill();
                let out = self.collect(None);
                panic!(
                    "process did not exit within {limit:?}; stderr so far:\n{}",
                    out.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.collect(Some(status))
    }

    fn collect(&mut self, status: Option<ExitStatus>) -> Finished {
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = self.0.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        Finished {
            code: status.and_then(|s| s.code()),
            stdout,
            stderr,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished waitfor printed and how it exited.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "exit code; stderr:\n{}", self.stderr);
        self
    }

    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs waitfor with `args` to completion.
pub fn run(args: &[&str]) -> Finished {
    Guard::spawn(waitfor().args(args)).finish(HANG_GUARD)
}

/// A loopback port free a moment ago, for a listener bound at once (a port that must stay
/// free for a while is a `podkit_tests::ReservedPort`).
pub fn free_port() -> u16 {
    podkit_tests::free_loopback_port()
}

/// Asserts the process is still waiting after `for_at_least`.
pub fn assert_still_waiting(guard: &mut Guard, for_at_least: Duration) {
    std::thread::sleep(for_at_least);
    assert!(
        guard.running(),
        "waitfor exited before its dependency was up"
    );
}

/// Finds a program a test needs, or fails saying which Debian package provides it.
pub fn require_program(candidates: &[&str], package: &str) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() && p.exists() {
            return p.to_path_buf();
        }
        if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(c))
                .find(|p| p.exists())
        }) {
            return found;
        }
    }
    panic!(
        "this test needs {candidates:?} from the Debian package {package}: apt-get install {package} (.ci/run installs it)"
    );
}

/// Sends a signal with kill(1) (std has no kill(2) for arbitrary signals without unsafe code).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
