//! Running external commands (cargo, podman, docker): each is echoed before it runs,
//! and a failure becomes an [`Error`] that names the exact command line, its exit
//! status and, for captured commands, the tail of its stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The workspace root: xtask lives at `<root>/crates/xtask`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// `cargo`, the one that runs us when we were started by `cargo xtask`. It runs in the
/// workspace root, so a relative `CARGO_TARGET_DIR` (which cargo reads against its working
/// directory, where `cargo xtask` was typed) is passed on made absolute: the builds land where
/// xtask then looks for them.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    if let Some(dir) = target_dir_from_env() {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    cmd
}

/// `$CARGO_TARGET_DIR` made absolute against the current directory, if it is set.
pub fn target_dir_from_env() -> Option<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_default();
    absolute_target_dir(std::env::var_os("CARGO_TARGET_DIR"), &cwd)
}

fn absolute_target_dir(value: Option<std::ffi::OsString>, cwd: &Path) -> Option<PathBuf> {
    let dir = PathBuf::from(value.filter(|v| !v.is_empty())?);
    Some(if dir.is_absolute() {
        dir
    } else {
        cwd.join(dir)
    })
}

/// The command line as a person would type it (environment overrides first).
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            v.map(|v| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())))
        })
        .collect();
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
    {
        s.to_string()
    } else if s.chars().any(char::is_control) {
        // Bash's $'...', so that a control character (CARGO_ENCODED_RUSTFLAGS separates its
        // flags with 0x1f) shows, and the line still pastes.
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\\' | '\'' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn spawn_error(cmd: &Command, err: std::io::Error) -> Error {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let e = Error::new(format!("could not start `{}`: {err}", display(cmd)));
    if err.kind() == std::io::ErrorKind::NotFound {
        e.fix(format!("`{program}` is not on PATH; install it"))
    } else {
        e
    }
}

fn status_error(cmd: &Command, status: ExitStatus, fix: &str) -> Error {
    Error::new(format!("`{}` failed ({status})", display(cmd))).fix(fix)
}

/// Runs `cmd` with inherited stdio; a nonzero exit is an error carrying `fix`.
pub fn run(cmd: &mut Command, fix: &str) -> Result<()> {
    println!("$ {}", display(cmd));
    let status = cmd.status().map_err(|e| spawn_error(cmd, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(status_error(cmd, status, fix))
    }
}

/// What a captured command printed, and how it ended.
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` capturing stdout and stderr, killing it after `timeout`.
/// Not echoed: for queries whose output the caller interprets.
pub fn capture(cmd: &mut Command, timeout: Duration) -> Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, e))?;
    // Drain both pipes on their own threads so a chatty child can't block on a full pipe.
    let stdout = child.stdout.take().map(read_to_string);
    let stderr = child.stderr.take().map(read_to_string);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(format!(
                    "`{}` did not finish within {}s and was killed",
                    display(cmd),
                    timeout.as_secs()
                )));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(Error::new(format!(
                    "waiting for `{}` failed: {e}",
                    display(cmd)
                )))
            }
        }
    };
    Ok(Captured {
        status,
        stdout: stdout
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: stderr
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
    })
}

fn read_to_string(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Like [`capture`], but a nonzero exit is an error that quotes stderr and carries `fix`.
pub fn output(cmd: &mut Command, timeout: Duration, fix: &str) -> Result<String> {
    let captured = capture(cmd, timeout)?;
    if captured.status.success() {
        Ok(captured.stdout)
    } else {
        let mut e = status_error(cmd, captured.status, fix);
        let stderr = captured.stderr.trim();
        if !stderr.is_empty() {
            e.message = format!("{}\n  stderr: {}", e.message, tail(stderr, 20));
        }
        Err(e)
    }
}

/// The last `lines` lines of `text`, indented for nesting under an error line.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n          ")
}

/// Whether `program --version` runs: the cheap "is it installed" check.
pub fn available(program: impl AsRef<std::ffi::OsStr>) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Bytes as a person reads them: `2.1 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_target_dir_is_made_absolute_against_the_working_directory() {
        let cwd = Path::new("/work/repo/crates/podproxy");
        assert_eq!(
            absolute_target_dir(Some("build".into()), cwd),
            Some(PathBuf::from("/work/repo/crates/podproxy/build"))
        );
        assert_eq!(
            absolute_target_dir(Some("/tmp/t".into()), cwd),
            Some(PathBuf::from("/tmp/t"))
        );
        assert_eq!(absolute_target_dir(Some("".into()), cwd), None);
        assert_eq!(absolute_target_dir(None, cwd), None);
    }

    #[test]
    fn control_characters_are_shown_as_bash_escapes() {
        assert_eq!(quote("-Ca\u{1f}-Cb"), "$'-Ca\\x1f-Cb'");
        assert_eq!(quote("it's\u{1f}"), "$'it\\'s\\x1f'");
        assert_eq!(quote("plain-flag"), "plain-flag");
        assert_eq!(quote("two words"), "'two words'");
    }
}
