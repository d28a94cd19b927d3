//! The rotation row of `cargo xtask bench logship`: lines lost and repeated through rotations
//! and SIGKILLs, logship at its defaults beside rsyslog's imfile on the same workload.
//!
//! Three writers append 92-byte sequence-numbered lines at about 3,000 a second each and rotate
//! at about 1 MiB: `a` by rename (`a.log.N` renamed up), `b` by copytruncate (copies renamed
//! up), `c` by delete and recreate. Each tool runs twice: undisturbed, and SIGKILLed three times
//! (restarted 100 ms later). While a tool is down, `c` is not deleted (no tailer can find a
//! file deleted while it is down); everything else happens at any moment. Every shipped line is
//! then counted: missing numbers are lost lines, extra copies duplicates.
//!
//! logship reads `*.log*` (the copies and rotated files included, as it recommends); rsyslog
//! reads `*.log` with `reopenOnTruncate="on"` (its documented setting for copytruncate; a glob
//! over the copies would read each copy again as a new file).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const STREAMS: [&str; 3] = ["a", "b", "c"];
const LINES_PER_STREAM: u64 = 60_000;
const ROTATE_AT: u64 = 1 << 20;
const KILLS: usize = 3;
/// Floor: duplicates per stream per kill (the in-flight window; a generation is ~11,400 lines).
pub const FLOOR_DUPLICATES_PER_KILL: u64 = 1_000;

/// What one run shipped, judged against what was written.
pub struct Outcome {
    pub tool: &'static str,
    pub kills: usize,
    pub lost: u64,
    pub duplicates: u64,
    /// Duplicates of the stream with the most, per kill (0 without kills).
    pub worst_per_kill: u64,
    pub per_stream: Vec<(u64, u64)>,
}

fn line(stream: &str, seq: u64) -> String {
    format!("{stream} {seq:08} {}", "-".repeat(80))
}

/// A tool under test: how to start it on `logs`, writing to `out`.
trait Tool {
    fn name(&self) -> &'static str;
    fn start(&self, logs: &Path, out: &Path, state: &Path) -> Result<Child>;
    /// Ends an undisturbed run once everything was read.
    fn stop(&self, child: Child);
}

struct Logship(PathBuf);

impl Tool for Logship {
    fn name(&self) -> &'static str {
        "logship"
    }

    fn start(&self, logs: &Path, out: &Path, state: &Path) -> Result<Child> {
        Command::new(&self.0)
            .arg("--path")
            .arg(format!("{}/*.log*", logs.display()))
            .arg("--checkpoint-dir")
            .arg(state)
            .arg("--sink")
            .arg(format!("file://{}", out.display()))
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::new(format!("bench: cannot start logship: {e}")))
    }

    fn stop(&self, child: Child) {
        // SIGTERM drains; the run waits for it.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let mut child = child;
        let _ = child.wait();
    }
}

struct Rsyslog(PathBuf);

impl Tool for Rsyslog {
    fn name(&self) -> &'static str {
        "rsyslog imfile"
    }

    fn start(&self, logs: &Path, out: &Path, state: &Path) -> Result<Child> {
        std::fs::create_dir_all(state).map_err(|e| Error::new(format!("bench: {e}")))?;
        let config = format!(
            r#"global(workDirectory="{d}" maxMessageSize="8k")
module(load="imfile")
template(name="raw" type="string" string="%msg%\n")
input(type="imfile" file="{logs}/*.log" tag="bench" freshStartTail="off" reopenOnTruncate="on")
action(type="omfile" file="{out}" template="raw")
"#,
            d = state.display(),
            logs = logs.display(),
            out = out.display()
        );
        crate::bench::start_rsyslogd(&self.0, state, &config)
    }

    fn stop(&self, mut child: Child) {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

/// Writes one stream, rotating it; `c` waits for `up` before a deletion.
fn write_stream(logs: &Path, stream: &'static str, up: &Mutex<()>) -> Result<()> {
    let io = |e: std::io::Error| Error::new(format!("bench writer {stream}: {e}"));
    let path = logs.join(format!("{stream}.log"));
    let open = || OpenOptions::new().create(true).append(true).open(&path);
    let mut f = open().map_err(io)?;
    let (mut size, mut rotations) = (0u64, 0u32);
    let start = Instant::now();
    for seq in 1..=LINES_PER_STREAM {
        let text = line(stream, seq) + "\n";
        f.write_all(text.as_bytes()).map_err(io)?;
        size += text.len() as u64;
        if size >= ROTATE_AT {
            size = 0;
            rotations += 1;
            let rotated = |n: u32| logs.join(format!("{stream}.log.{n}"));
            if stream != "c" {
                for n in (1..rotations).rev() {
                    std::fs::rename(rotated(n), rotated(n + 1)).map_err(io)?;
                }
            }
            match stream {
                "a" => {
                    std::fs::rename(&path, rotated(1)).map_err(io)?;
                    f = open().map_err(io)?;
                }
                "b" => {
                    std::fs::copy(&path, rotated(1)).map_err(io)?;
                    f.set_len(0).map_err(io)?;
                }
                _ => {
                    let _up = up.lock().unwrap_or_else(|e| e.into_inner());
                    std::fs::remove_file(&path).map_err(io)?;
                    f = open().map_err(io)?;
                }
            }
        }
        // 30 lines every 10 ms: about 3,000 a second.
        if seq % 30 == 0 {
            let due = start + Duration::from_millis(seq / 3);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    Ok(())
}

/// The last line of every stream is in `out`.
fn complete(out: &Path) -> bool {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    STREAMS
        .iter()
        .all(|s| text.contains(&line(s, LINES_PER_STREAM)))
}

fn run(tool: &dyn Tool, work: &Path, kills: usize) -> Result<Outcome> {
    let dir = work.join(format!(
        "rotation-{}-{kills}",
        tool.name().replace(' ', "-")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (logs, state) = (dir.join("logs"), dir.join("state"));
    std::fs::create_dir_all(&logs).map_err(|e| Error::new(format!("bench: {e}")))?;
    let out = dir.join("out.log");
    let up = Arc::new(Mutex::new(()));
    let failed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = STREAMS
        .into_iter()
        .map(|stream| {
            let (logs, up, failed) = (logs.clone(), Arc::clone(&up), Arc::clone(&failed));
            std::thread::spawn(move || {
                if let Err(e) = write_stream(&logs, stream, &up) {
                    eprintln!("{e}");
                    failed.store(true, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut child = tool.start(&logs, &out, &state)?;
    // The kills are spread over the middle of the 20 s of writing.
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(if k == 0 { 6000 } else { 2500 }));
        let held = up.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        child = tool.start(&logs, &out, &state)?;
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    }
    for w in writers {
        let _ = w.join();
    }
    if failed.load(Ordering::SeqCst) {
        tool.stop(child);
        return Err(Error::new("bench: a writer failed (see above)"));
    }
    // Everything read, or nothing more for 10 s (a tool that lost the last lines).
    let mut last = (0u64, Instant::now());
    while !complete(&out) {
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    tool.stop(child);
    let outcome = judge(tool.name(), kills, &out)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcome)
}

fn judge(tool: &'static str, kills: usize, out: &Path) -> Result<Outcome> {
    let text = std::fs::read_to_string(out).map_err(|e| Error::new(format!("bench: {e}")))?;
    let mut counts: HashMap<(&str, u64), u64> = HashMap::new();
    for l in text.lines() {
        let l = l.trim_start();
        let Some((stream, rest)) = l.split_once(' ') else {
            continue;
        };
        if let Some(seq) = rest.get(..8).and_then(|n| n.parse::<u64>().ok()) {
            *counts.entry((stream, seq)).or_default() += 1;
        }
    }
    let mut per_stream = Vec::new();
    for s in STREAMS {
        let (mut lost, mut dups) = (0, 0);
        for seq in 1..=LINES_PER_STREAM {
            match counts.get(&(s, seq)) {
                None => lost += 1,
                Some(&n) => dups += n - 1,
            }
        }
        per_stream.push((lost, dups));
    }
    let worst = per_stream.iter().map(|p| p.1).max().unwrap_or(0);
    Ok(Outcome {
        tool,
        kills,
        lost: per_stream.iter().map(|p| p.0).sum(),
        duplicates: per_stream.iter().map(|p| p.1).sum(),
        worst_per_kill: if kills == 0 { 0 } else { worst / kills as u64 },
        per_stream,
    })
}

/// Runs the workload for logship and, if installed, rsyslog; prints the table and the floors.
pub fn bench_rotation(logship: &Path, work: &Path) -> Result<()> {
    println!(
        "\n== bench logship: rotation, {} streams x {LINES_PER_STREAM} lines at ~3,000/s, rotated at 1 MiB (rename, copytruncate, delete), {KILLS} SIGKILLs ==",
        STREAMS.len()
    );
    let mut tools: Vec<Box<dyn Tool>> = vec![Box::new(Logship(logship.to_path_buf()))];
    match Path::new("/usr/sbin/rsyslogd").exists() {
        true => tools.push(Box::new(Rsyslog(PathBuf::from("/usr/sbin/rsyslogd")))),
        false => {
            println!("rsyslog not measured: /usr/sbin/rsyslogd missing (apt-get install rsyslog)")
        }
    }
    let mut outcomes = Vec::new();
    for tool in &tools {
        for kills in [0, KILLS] {
            outcomes.push(run(tool.as_ref(), work, kills)?);
        }
    }
    println!(
        "\n{:<16} {:>6} {:>8} {:>11} {:>22}   per stream (a rename, b copytruncate, c delete): lost/duplicates",
        "tool", "kills", "lost", "duplicates", "worst stream per kill"
    );
    for o in &outcomes {
        let streams: Vec<String> = o
            .per_stream
            .iter()
            .zip(STREAMS)
            .map(|((l, d), s)| format!("{s} {l}/{d}"))
            .collect();
        println!(
            "{:<16} {:>6} {:>8} {:>11} {:>22}   {}",
            o.tool,
            o.kills,
            o.lost,
            o.duplicates,
            o.worst_per_kill,
            streams.join(", ")
        );
    }
    let ours: Vec<&Outcome> = outcomes.iter().filter(|o| o.tool == "logship").collect();
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "\nrotation floors: 0 lost {}; 0 duplicates without restarts {}; at most {FLOOR_DUPLICATES_PER_KILL} duplicates per stream per kill {}",
        met(ours.iter().all(|o| o.lost == 0)),
        met(ours.iter().filter(|o| o.kills == 0).all(|o| o.duplicates == 0)),
        met(ours
            .iter()
            .all(|o| o.worst_per_kill <= FLOOR_DUPLICATES_PER_KILL))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_repeated_lines_are_counted_per_stream() {
        let dir =
            std::env::temp_dir().join(format!("podkit-rotation-judge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let out = dir.join("out.log");
        let mut text = String::new();
        for s in STREAMS {
            for seq in 1..=LINES_PER_STREAM {
                // a loses 1 and 2; b repeats 5 three times; rsyslog's leading space is read.
                if s == "a" && seq <= 2 {
                    continue;
                }
                let copies = if s == "b" && seq == 5 { 3 } else { 1 };
                for _ in 0..copies {
                    text.push(' ');
                    text.push_str(&line(s, seq));
                    text.push('\n');
                }
            }
        }
        std::fs::write(&out, text).expect("write");
        let o = judge("x", 2, &out).expect("judge");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(o.per_stream, vec![(2, 0), (0, 2), (0, 0)]);
        assert_eq!((o.lost, o.duplicates, o.worst_per_kill), (2, 2, 1));
    }
}
