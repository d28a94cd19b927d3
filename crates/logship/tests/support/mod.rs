//! Helpers for the logship integration tests: the real binary in a temp directory with a
//! file sink, bounded waits (a hang fails the test), and reading what was shipped.
#![allow(dead_code)]

pub mod receiver;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(60);

/// A directory with `logs/` to tail and `out.log` as the file sink.
pub struct Scene {
    pub dir: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("logs")).expect("logs dir");
        Scene { dir }
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(name)
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out.log")
    }

    pub fn glob(&self, pattern: &str) -> String {
        format!("{}/{pattern}", self.logs().display())
    }

    /// logship with `args`, shipping to this scene's file sink, fast polling, text logs.
    pub fn logship(&self, args: &[&str]) -> Command {
        self.logship_polling(
            &[
                "--poll-interval",
                "50ms",
                "--scan-interval",
                "200ms",
                "--rotate-wait",
                "300ms",
            ],
            args,
        )
    }

    /// logship with `args` and these polling settings (none: its defaults).
    pub fn logship_polling(&self, polling: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logship"));
        for (key, _) in std::env::vars() {
            if key.starts_with("LOGSHIP_")
                || key == "RUST_LOG"
                || key.starts_with("POD_")
                || key == "CONTAINER_NAME"
                || key == "NODE_NAME"
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("LOGSHIP_LOG_FORMAT", "text")
            .arg("--sink")
            .arg(format!("file://{}", self.out().display()))
            .args(polling)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.stderr_file());
        cmd
    }

    /// logship's stderr goes to a file (appended across restarts), so a chatty run can never
    /// block on a full pipe.
    fn stderr_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("stderr file")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("logship.stderr")
    }

    /// The port logship's admin server bound for `--admin 127.0.0.1:0` (a port the kernel
    /// picks, so never one another listener could take first), read from its log.
    pub fn admin_port(&self) -> u16 {
        let mark = "admin endpoints on http://127.0.0.1:";
        eventually_or(
            "logship's admin address in its log",
            Duration::from_secs(60),
            || podkit_tests::port_in_log(&self.stderr(), mark),
            || self.stderr(),
        )
    }

    /// Everything logship wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// What the file sink holds, line by line.
    pub fn shipped(&self) -> Vec<String> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until `done(shipped lines)` holds, failing after `LIMIT`.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let start = Instant::now();
        loop {
            let lines = self.shipped();
            if done(&lines) {
                return;
            }
            if start.elapsed() > LIMIT {
                panic!(
                    "timed out waiting for {what}; shipped so far ({} lines): {:?}",
                    lines.len(),
                    lines.iter().rev().take(5).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Appends `text` to `path`.
pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
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

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits for exit (failing after `limit`); returns the exit code, stdout and stderr (stderr
    /// only where it was piped).
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = self.0.kill();
                let _ = self.0.wait();
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("logship did not exit within {limit:?}; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), out, err)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET on 127.0.0.1:`port`, the whole answer (status line and headers included) as text.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A loopback port free a moment ago, for logship to bind at once.
pub fn free_port() -> u16 {
    podkit_tests::free_loopback_port()
}

/// Polls `probe` every 20ms until it gives a value; fails the test after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    eventually_or(what, limit, probe, String::new)
}

/// [`eventually`], and on failure also prints what `context` tells (logship's stderr, say),
/// so that a failure seen only in CI can be read from its log.
pub fn eventually_or<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() >= limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The value of an unlabelled or labelled sample in a Prometheus text exposition, summed over
/// every series whose line starts with `prefix`.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
