//! The rotation torture: a writer appends sequence-numbered lines fast to four files while
//! rotating each its own way (rename with the rotated name inside the glob, rename out of the
//! glob, copytruncate with the copy inside the glob, delete and recreate), and logship is
//! SIGKILLed and restarted several times meanwhile. At the end every number of every stream is
//! shipped, in order, and duplicates (replays of what was not yet acknowledged and checkpointed
//! at a kill) are counted and bounded.
//!
//! One honest constraint: a file moved out of the glob or deleted while logship is down, before
//! it was read to its end, cannot be found again by any tailer. So those two rotations take a
//! lock that the killer also takes, and wait until the moved file's last line is shipped; the
//! kills still land at random moments around them. Renames inside the glob and copytruncate
//! happen at any time, kills included.

mod support;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::receiver::{accepted, ndjson_messages, Receiver, Reply, RequestLog};
use support::*;

const STREAMS: [&str; 4] = ["inglob", "outglob", "copytrunc", "recreate"];
const LINES_PER_STREAM: u64 = 8000;
const ROTATE_EVERY: u64 = 700;
const KILLS: usize = 5;
const BATCH_LINES: usize = 100;

struct Writer {
    logs: std::path::PathBuf,
    archive: std::path::PathBuf,
    out: std::path::PathBuf,
    /// Also a network receiver that must have taken a line before it counts as shipped.
    receiver: Option<RequestLog>,
    lock: Arc<Mutex<()>>,
    files: HashMap<&'static str, File>,
    generation: u64,
}

impl Writer {
    fn path(&self, stream: &str) -> std::path::PathBuf {
        self.logs.join(format!("{stream}.log"))
    }

    fn open(&mut self, stream: &'static str) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(stream))
            .expect("open stream");
        self.files.insert(stream, f);
    }

    /// Padded so that every file passes the 256-byte fingerprint within a few lines.
    fn line(stream: &str, seq: u64) -> String {
        format!("{stream} {seq:08} ........................................")
    }

    fn write(&mut self, stream: &'static str, seq: u64) {
        let f = self.files.get_mut(stream).expect("stream open");
        writeln!(f, "{}", Writer::line(stream, seq)).expect("write");
    }

    fn rotate(&mut self, stream: &'static str, last_seq: u64) {
        self.generation += 1;
        let g = self.generation;
        let path = self.path(stream);
        match stream {
            "inglob" => {
                std::fs::rename(&path, self.logs.join(format!("inglob.log.{g}"))).expect("rename");
                self.open(stream);
            }
            "copytrunc" => {
                std::fs::copy(&path, self.logs.join(format!("copytrunc.log.{g}"))).expect("copy");
                self.files
                    .get_mut(stream)
                    .expect("open")
                    .set_len(0)
                    .expect("truncate");
            }
            "outglob" | "recreate" => {
                let lock = Arc::clone(&self.lock);
                let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
                if stream == "outglob" {
                    std::fs::rename(&path, self.archive.join(format!("outglob.log.{g}")))
                        .expect("rename out");
                } else {
                    std::fs::remove_file(&path).expect("delete");
                }
                self.open(stream);
                let want = format!("{stream} {last_seq:08} ");
                let start = Instant::now();
                while !(std::fs::read_to_string(&self.out)
                    .unwrap_or_default()
                    .contains(&want)
                    && self.receiver.as_ref().is_none_or(|r| {
                        // Every line of the moved file: a later batch may be taken while an
                        // earlier one is still being retried.
                        (last_seq + 1 - ROTATE_EVERY..=last_seq)
                            .all(|seq| r.has_message(&Writer::line(stream, seq)))
                    }))
                {
                    assert!(
                        start.elapsed() < LIMIT,
                        "logship never shipped {want:?} from a rotated-away file"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn every_line_survives_rotation_truncation_deletion_and_sigkill() {
    torture(None, 20);
}

/// The same torture with an HTTP sink beside the file sink whose receiver answers 503 to every
/// fourth request and goes away now and then: a position is checkpointed only once both sinks
/// have taken the lines before it, so every line still reaches both.
#[test]
fn every_line_survives_the_torture_with_a_flapping_http_sink() {
    let flaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut rx = Receiver::start(move |_| {
        if flaps.fetch_add(1, Ordering::SeqCst) % 4 == 3 {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    });
    // Replays per kill are larger here: a kill also loses the acknowledgements the HTTP sink
    // had not given yet (batches in retry while the receiver was away).
    torture(Some(&mut rx), 40);
    let log = rx.log();
    for stream in STREAMS {
        let mut seen = vec![false; LINES_PER_STREAM as usize + 1];
        for m in accepted(&rx.requests(), ndjson_messages)
            .iter()
            .filter(|m| m.starts_with(&format!("{stream} ")))
        {
            let seq: usize = m[stream.len() + 1..stream.len() + 9].parse().expect("seq");
            seen[seq] = true;
        }
        let missing: Vec<usize> = (1..=LINES_PER_STREAM as usize)
            .filter(|&i| !seen[i])
            .collect();
        assert!(
            missing.is_empty(),
            "{stream}: {} lines never reached the HTTP receiver, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    assert!(rx.requests().iter().any(|r| r.status == 503));
    drop(log);
}

fn torture(mut http: Option<&mut Receiver>, replay_batches_per_kill: usize) {
    let s = Scene::new();
    let archive = s.dir.path().join("archive");
    std::fs::create_dir(&archive).expect("archive dir");
    let glob = s.glob("*.log*");
    let url = http.as_ref().map(|r| r.url("http", "/"));
    let mut args = vec![
        "--path",
        glob.as_str(),
        "--batch-max-lines",
        "100",
        "--checkpoint-interval",
        "50ms",
    ];
    if let Some(url) = &url {
        args.extend([
            "--sink",
            url.as_str(),
            "--retry-backoff",
            "20ms",
            "--retry-max-backoff",
            "200ms",
            "--batch-timeout",
            "100ms",
        ]);
    }
    let lock = Arc::new(Mutex::new(()));
    let writing = Arc::new(AtomicBool::new(true));

    let writer = {
        let mut w = Writer {
            logs: s.logs(),
            archive: archive.clone(),
            out: s.out(),
            receiver: http.as_ref().map(|r| r.log()),
            lock: Arc::clone(&lock),
            files: HashMap::new(),
            generation: 0,
        };
        let writing = Arc::clone(&writing);
        std::thread::spawn(move || {
            for stream in STREAMS {
                w.open(stream);
            }
            for seq in 1..=LINES_PER_STREAM {
                for stream in STREAMS {
                    w.write(stream, seq);
                    if seq % ROTATE_EVERY == 0 {
                        w.rotate(stream, seq);
                    }
                }
                if seq % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
            writing.store(false, Ordering::SeqCst);
        })
    };

    let mut kills = 0;
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut current = Guard::spawn(&mut s.logship(&args));
    while writing.load(Ordering::SeqCst) && kills < KILLS {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_millis(150 + rng_state % 450));
        // While logship is down, nothing may move out of its sight: the lock is held from the
        // kill until the next run has had time for its first scan.
        let held = lock.lock().unwrap_or_else(|e| e.into_inner());
        drop(current); // SIGKILL
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng_state % 200));
        current = Guard::spawn(&mut s.logship(&args));
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        // The receiver goes away for a moment after every other restart (not under the lock: a
        // rotation may be waiting for it to take a line).
        if let Some(rx) = http.as_mut() {
            if kills % 2 == 1 {
                rx.stop();
                std::thread::sleep(Duration::from_millis(300 + rng_state % 300));
                rx.resume();
            }
        }
    }
    // The last run must catch up on everything, then drain on SIGTERM.
    let g = current;
    writer.join().expect("writer thread");
    s.wait_for("every stream's last line", |lines| {
        STREAMS.iter().all(|st| {
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{st} {LINES_PER_STREAM:08} ")))
        })
    });
    std::thread::sleep(Duration::from_millis(700));
    g.signal("TERM");
    let (code, _, _) = g.finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());

    let shipped = s.shipped();
    let mut duplicates = 0usize;
    for stream in STREAMS {
        let mut seen = vec![false; LINES_PER_STREAM as usize + 1];
        let mut last_new = 0u64;
        for line in shipped
            .iter()
            .filter(|l| l.starts_with(&format!("{stream} ")))
        {
            let seq: u64 = line[stream.len() + 1..stream.len() + 9]
                .parse()
                .unwrap_or_else(|_| panic!("mangled line {line:?}"));
            if seen[seq as usize] {
                duplicates += 1;
                continue;
            }
            assert!(
                seq > last_new,
                "{stream}: {seq} shipped after {last_new} (out of order)"
            );
            seen[seq as usize] = true;
            last_new = seq;
        }
        let missing: Vec<usize> = (1..=LINES_PER_STREAM as usize)
            .filter(|&i| !seen[i])
            .collect();
        if !missing.is_empty() {
            // What logship said about this stream's files, across its runs (its stderr is
            // appended at each restart), so that a loss seen only in CI can be traced.
            let stderr = s.stderr();
            let about: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains(&format!("/{stream}.log")) && !l.contains("trying again"))
                .collect();
            panic!(
                "{stream}: {} lines missing, first {:?}\nlogship on {stream}'s files, its last 80 lines:\n{}",
                missing.len(),
                &missing[..missing.len().min(10)],
                about[about.len().saturating_sub(80)..].join("\n")
            );
        }
    }
    // What a kill can replay: what was read but not yet acknowledged and checkpointed. That is
    // the sink queue (QUEUE_BATCHES + the batch being written), the batches written but not
    // yet fsynced (file sink: up to 200ms) and what was acknowledged within the last checkpoint
    // interval (50ms here): a few hundred lines at this writer's pace, more on a loaded machine.
    // The bound (20 batches a kill) is far below what a re-read file (700+ lines a rotation,
    // 8000 a stream) would cost, so it still catches a position lost at restart.
    let bound = kills * replay_batches_per_kill * BATCH_LINES;
    println!(
        "kills: {kills}, lines: {}, duplicates: {duplicates} (bound {bound})",
        shipped.len()
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates after {kills} kills; bound {bound}"
    );
    assert!(
        s.logs().join(".logship/checkpoints.json").is_file(),
        "no checkpoint file was left"
    );
}
