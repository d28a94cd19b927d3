//! One test per cause of a lost or repeated line that the tailer's model found (issue 21), each
//! against the real binary: a file opened while empty and rewritten in place, the same after a
//! restart, a copy noticed while it was still empty, a copy found after a restart and renamed up
//! a rotation chain.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use support::*;

fn lines(tag: &str, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{tag} {i:04} ..................................................\n"))
        .collect()
}

fn shipped_once_in_order(s: &Scene, want: &[String]) {
    let shipped = s.shipped();
    assert_eq!(
        shipped,
        want,
        "shipped {} lines, expected {} once each, in order\n{}",
        shipped.len(),
        want.len(),
        s.stderr()
    );
}

fn text_lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// Lets logship settle, drains it (SIGTERM, exit 0), and checks `want` was shipped once.
fn drain_and_check(s: &Scene, g: Guard, want: &str) {
    std::thread::sleep(Duration::from_millis(1500));
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
    shipped_once_in_order(s, &text_lines(want));
}

fn truncate(path: &std::path::Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(0)
        .expect("truncate");
}

/// The reproduction: the file was empty when logship opened it, so its head was empty
/// (a prefix of anything) and a rewrite in place past the old length was read from the old
/// offset: the first 10 of the 20 new lines were lost.
#[test]
fn a_file_opened_empty_then_rewritten_in_place_loses_nothing() {
    let s = Scene::new();
    let path = s.log("a.log");
    append(&path, "");
    // No look at the files between the appends: only what is read can tell the rewrite.
    let g = Guard::spawn(
        &mut s.logship_polling(&["--poll-interval", "10s"], &["--path", &s.glob("*.log")]),
    );
    eventually("logship watching the empty file", LIMIT, || {
        s.stderr().contains("watching").then_some(())
    });
    let old = lines("old", 0, 10);
    append(&path, &old);
    s.wait_for("the first 10 lines", |l| l.len() >= 10);
    g.signal("STOP");
    let new = lines("new", 0, 20);
    std::fs::write(&path, &new).expect("rewrite in place");
    g.signal("CONT");
    s.wait_for("the 20 new lines", |l| l.len() >= 30);
    drain_and_check(&s, g, &(old + &new));
}

/// The restart variant: the checkpoint of a file read while it was short is pointed at another
/// file's inode; that file must be read from its start, not from the saved offset.
#[test]
fn a_short_files_checkpoint_never_claims_another_files_bytes() {
    let s = Scene::new();
    let glob = s.glob("*.log");
    append(&s.log("a.log"), "a 1\na 2\n");
    let (code, _, _) = Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"])).finish(LIMIT);
    assert_eq!(code, Some(0));
    std::fs::remove_file(s.log("a.log")).expect("rm");
    append(&s.log("b.log"), "b 1 is another file\nb 2\n");
    let cp = s.logs().join(".logship/checkpoints.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).expect("checkpoint")).expect("json");
    let meta = std::fs::metadata(s.log("b.log")).expect("stat");
    for f in v["files"].as_array_mut().expect("files") {
        f["dev"] = meta.dev().into();
        f["ino"] = meta.ino().into();
    }
    std::fs::write(&cp, v.to_string()).expect("write checkpoint");
    let (code, _, _) = Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"])).finish(LIMIT);
    assert_eq!(code, Some(0));
    shipped_once_in_order(&s, &text_lines("a 1\na 2\nb 1 is another file\nb 2\n"));
}

/// copytruncate as `cp` does it: the copy is created empty, logship notices it (the create
/// event), and only then are the bytes written and the original truncated. It was read from 0
/// as a new file: a whole generation twice.
#[test]
fn a_copy_noticed_while_empty_is_not_shipped_again() {
    let s = Scene::new();
    let path = s.log("b.log");
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log*")]));
    let first = lines("b", 0, 200);
    append(&path, &first);
    s.wait_for("the first generation", |l| l.len() >= 200);
    let copy = s.log("b.log.1");
    append(&copy, "");
    // Long enough for the create event's scan and a poll to look at the empty copy.
    std::thread::sleep(Duration::from_millis(400));
    std::fs::write(&copy, std::fs::read(&path).expect("read")).expect("copy");
    truncate(&path);
    let second = lines("b", 200, 100);
    append(&path, &second);
    s.wait_for("the second generation", |l| l.len() >= 300);
    drain_and_check(&s, g, &(first + &second));
}

/// A copy that appears while logship is down, and is then renamed up the chain while the next
/// copy takes its name: each resumes where its content was acknowledged, none is read again.
#[test]
fn copies_found_after_a_restart_and_renamed_up_the_chain_resume() {
    let s = Scene::new();
    let path = s.log("c.log");
    let glob = s.glob("*.log*");
    let mut want = String::new();
    let mut seq = 0;
    for round in 0..3 {
        let g = Guard::spawn(&mut s.logship(&["--path", &glob]));
        let gen = lines("c", seq, 150);
        seq += 150;
        append(&path, &gen);
        want.push_str(&gen);
        let n = want.lines().count();
        s.wait_for("this generation", |l| l.len() >= n);
        // Past the checkpoint interval: the positions are saved.
        std::thread::sleep(Duration::from_millis(500));
        drop(g); // SIGKILL
                 // While logship is down: the older copies move up, the file is copied and truncated.
        for n in (1..=round).rev() {
            std::fs::rename(
                s.log(&format!("c.log.{n}")),
                s.log(&format!("c.log.{}", n + 1)),
            )
            .expect("rename up");
        }
        std::fs::copy(&path, s.log("c.log.1")).expect("copy");
        truncate(&path);
    }
    let g = Guard::spawn(&mut s.logship(&["--path", &glob]));
    let last = lines("c", seq, 50);
    append(&path, &last);
    want.push_str(&last);
    let n = want.lines().count();
    s.wait_for("the last lines", |l| l.len() >= n);
    drain_and_check(&s, g, &want);
}

/// A new file that starts like a file being read (a copy, perhaps, or a log whose first line is
/// the same banner) and then stops growing is not a copy after all: it is read once its wait
/// (at most 5 s) is over, never held back for good.
#[test]
fn a_file_that_only_looks_like_a_copy_is_read_after_its_wait() {
    let s = Scene::new();
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log")]));
    let a = lines("same banner", 0, 10);
    append(&s.log("a.log"), &a);
    s.wait_for("a.log", |l| l.len() >= 10);
    let banner = lines("same banner", 0, 1);
    append(&s.log("b.log"), &banner);
    s.wait_for("b.log's banner line", |l| l.len() >= 11);
    drain_and_check(&s, g, &(a + &banner));
}
