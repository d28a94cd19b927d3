//! logship's behaviours, one test each, against the real binary and real files.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use support::*;

fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn oneshot_ships_every_file_to_its_end_and_a_restart_ships_nothing_again() {
    let s = Scene::new();
    append(&s.log("a.log"), "a1\na2\n");
    append(&s.log("b.log"), "b1\nb2 without newline");
    let (code, _, _) =
        Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log"), "--oneshot"])).finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());
    assert_eq!(s.shipped(), vec!["a1", "a2", "b1", "b2 without newline"]);

    append(&s.log("a.log"), "a3\n");
    let (code, _, _) =
        Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log"), "--oneshot"])).finish(LIMIT);
    assert_eq!(code, Some(0));
    assert_eq!(
        s.shipped(),
        vec!["a1", "a2", "b1", "b2 without newline", "a3"]
    );
}

/// A recursive glob over the shared volume also matches what logship writes there itself: its
/// checkpoints (by default in .logship/ beside the logs), a file sink, the dead-letter file.
/// Those are never read, or each run would ship them back.
#[test]
fn a_recursive_glob_never_reads_logships_own_files() {
    let s = Scene::new();
    append(&s.log("a.log"), "a1\na2\n");
    let copy = s.log("copy.out");
    let dead = s.log("dead.letters");
    let copy_sink = format!("file://{}", copy.display());
    let args = [
        "--path",
        &s.glob("**/*"),
        "--sink",
        &copy_sink,
        "--dead-letter-file",
        dead.to_str().expect("UTF-8 path"),
        "--oneshot",
    ];
    for _ in 0..2 {
        let (code, _, _) = Guard::spawn(&mut s.logship(&args)).finish(LIMIT);
        assert_eq!(code, Some(0), "{}", s.stderr());
    }
    assert!(s.log(".logship/checkpoints.json").exists());
    assert_eq!(s.shipped(), vec!["a1", "a2"]);
    assert_eq!(
        std::fs::read_to_string(&copy).expect("file sink"),
        "a1\na2\n"
    );
}

#[test]
fn read_from_end_skips_what_existed_at_the_very_first_start_only() {
    let s = Scene::new();
    append(&s.log("old.log"), "before\n");
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log"), "--read-from", "end"]));
    std::thread::sleep(Duration::from_millis(1000));
    append(&s.log("old.log"), "after\n");
    append(&s.log("new.log"), "new file from its start\n");
    s.wait_for("the new lines", |l| l.len() >= 2);
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0));
    let mut got = s.shipped();
    got.sort();
    assert_eq!(got, vec!["after", "new file from its start"]);
}

#[test]
fn json_output_carries_labels_file_timestamp_and_parsed_fields() {
    let s = Scene::new();
    append(
        &s.log("app.log"),
        "{\"level\":\"warn\",\"msg\":\"disk\"}\nnot json at all\n",
    );
    let mut cmd = s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--oneshot",
        "--format",
        "json",
        "--output",
        "json",
        "--label",
        "team=core",
        "--admin",
        "127.0.0.1:0",
    ]);
    cmd.env("POD_NAME", "web-7")
        .env("POD_NAMESPACE", "shop")
        .env("CONTAINER_NAME", "app");
    let (code, _, _) = Guard::spawn(&mut cmd).finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());
    let recs = json_lines(&s.shipped());
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["fields"]["level"], "warn");
    assert_eq!(recs[0]["labels"]["team"], "core");
    assert_eq!(recs[0]["labels"]["pod"], "web-7");
    assert_eq!(recs[0]["labels"]["namespace"], "shop");
    assert_eq!(recs[0]["labels"]["container"], "app");
    assert_eq!(recs[0]["file"], s.log("app.log").display().to_string());
    assert!(recs[0]["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // The invalid line is shipped as it was, without fields.
    assert_eq!(recs[1]["message"], "not json at all");
    assert!(recs[1].get("fields").is_none());
}

#[test]
fn cri_partials_are_joined_and_stream_kept() {
    let s = Scene::new();
    append(
        &s.log("c.log"),
        "2024-05-01T10:00:00.000000001Z stdout P first half \n\
         2024-05-01T10:00:00.000000002Z stdout F and second half\n\
         2024-05-01T10:00:00.000000003Z stderr F an error\n",
    );
    let (code, _, _) = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--oneshot",
        "--format",
        "cri",
        "--output",
        "json",
    ]))
    .finish(LIMIT);
    assert_eq!(code, Some(0));
    let recs = json_lines(&s.shipped());
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["message"], "first half and second half");
    assert_eq!(recs[0]["fields"]["stream"], "stdout");
    assert_eq!(recs[0]["fields"]["time"], "2024-05-01T10:00:00.000000001Z");
    assert_eq!(recs[1]["fields"]["stream"], "stderr");
}

#[test]
fn java_stack_traces_become_one_event_and_the_last_one_flushes_on_timeout() {
    let s = Scene::new();
    let g = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--output",
        "json",
        "--multiline-start",
        r"^\d{4}-\d{2}-\d{2} ",
        "--multiline-timeout",
        "300ms",
    ]));
    append(
        &s.log("java.log"),
        "2024-05-01 12:00:00 ERROR request failed\n\
         java.lang.IllegalStateException: boom\n\
         \tat com.example.Service.handle(Service.java:42)\n\
         \tat com.example.Server.run(Server.java:7)\n\
         2024-05-01 12:00:01 INFO next request\n\
         2024-05-01 12:00:02 ERROR again\n\
         \tat com.example.Service.handle(Service.java:43)\n",
    );
    // The last event has no successor: only the timeout can ship it.
    s.wait_for("three events", |l| l.len() >= 3);
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0));
    let recs = json_lines(&s.shipped());
    assert_eq!(recs.len(), 3, "{recs:?}");
    let first = recs[0]["message"].as_str().unwrap_or_default();
    assert_eq!(first.lines().count(), 4, "{first}");
    assert!(first.ends_with("Server.java:7)"));
    assert_eq!(recs[1]["message"], "2024-05-01 12:00:01 INFO next request");
    assert_eq!(
        recs[2]["message"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .count(),
        2
    );
}

#[test]
fn files_created_later_are_discovered_and_excludes_hold() {
    let s = Scene::new();
    let g = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--exclude",
        &s.glob("skip*.log"),
    ]));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(s.logs().join("sub")).expect("subdir");
    append(&s.log("later.log"), "found later\n");
    append(&s.log("skip-me.log"), "excluded\n");
    append(&s.logs().join("sub/deeper.log"), "not matched\n");
    s.wait_for("the later file", |l| l.contains(&"found later".to_string()));
    std::thread::sleep(Duration::from_millis(500));
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0));
    assert_eq!(s.shipped(), vec!["found later"]);
}

/// Points the (single) checkpoint entry at `path`'s device and inode: what a filesystem does
/// when it hands a deleted file's inode to a new file. Doing it by hand makes the test
/// independent of when (and whether) the filesystem reuses inodes under parallel tests.
fn give_checkpoint_inode_of(s: &Scene, path: &std::path::Path) {
    let cp = s.logs().join(".logship/checkpoints.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).expect("checkpoint")).expect("json");
    let meta = std::fs::metadata(path).expect("stat");
    let files = v["files"].as_array_mut().expect("files");
    assert_eq!(files.len(), 1, "{files:?}");
    files[0]["dev"] = meta.dev().into();
    files[0]["ino"] = meta.ino().into();
    std::fs::write(&cp, v.to_string()).expect("write checkpoint");
}

#[test]
fn a_reused_inode_is_a_new_file() {
    let s = Scene::new();
    let glob = s.glob("*.log");
    append(&s.log("first.log"), "old content\n");
    assert_eq!(
        Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"]))
            .finish(LIMIT)
            .0,
        Some(0)
    );
    std::fs::remove_file(s.log("first.log")).expect("rm");
    // Same device and inode as the checkpointed file, other content: read from its start.
    append(
        &s.log("second.log"),
        "new content, longer than the old one\n",
    );
    give_checkpoint_inode_of(&s, &s.log("second.log"));
    assert_eq!(
        Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"]))
            .finish(LIMIT)
            .0,
        Some(0)
    );
    assert_eq!(
        s.shipped(),
        vec!["old content", "new content, longer than the old one"]
    );
}

#[test]
fn a_short_file_with_the_same_inode_and_first_bytes_resumes() {
    let s = Scene::new();
    let glob = s.glob("*.log");
    append(&s.log("a.log"), "line 1\n");
    assert_eq!(
        Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"]))
            .finish(LIMIT)
            .0,
        Some(0)
    );
    // The counterpart of the test above: the same inode that still starts with what was read
    // is the same file, grown (or renamed): only the new part is shipped.
    std::fs::rename(s.log("a.log"), s.log("b.log")).expect("rename");
    append(&s.log("b.log"), "line 2\n");
    give_checkpoint_inode_of(&s, &s.log("b.log"));
    assert_eq!(
        Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"]))
            .finish(LIMIT)
            .0,
        Some(0)
    );
    assert_eq!(s.shipped(), vec!["line 1", "line 2"]);
}

/// A file truncated and written again past its old length between two of logship's looks is
/// never shorter than the offset reached: only its first bytes tell. logship is stopped
/// (SIGSTOP) across the rewrite so that it cannot see the file empty in between.
#[test]
fn a_file_rewritten_past_its_old_length_between_two_looks_is_read_from_its_start() {
    let s = Scene::new();
    let path = s.log("app.log");
    let lines = |tag: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{tag} line {i:03} .............................."))
            .collect()
    };
    let (old, new) = (lines("old", 20), lines("new", 40));
    append(&path, &(old.join("\n") + "\n"));
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log")]));
    s.wait_for("the first lines", |l| l.len() >= old.len());
    g.signal("STOP");
    std::fs::write(&path, new.join("\n") + "\n").expect("rewrite in place");
    g.signal("CONT");
    s.wait_for("the new lines", |l| l.len() >= old.len() + new.len());
    std::thread::sleep(Duration::from_millis(300));
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
    let want: Vec<String> = old.into_iter().chain(new).collect();
    assert_eq!(s.shipped(), want);
}

#[test]
fn lines_longer_than_the_limit_are_split_not_lost() {
    let s = Scene::new();
    let long = "x".repeat(2500);
    append(&s.log("big.log"), &format!("short\n{long}\nafter\n"));
    let (code, _, _) = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--oneshot",
        "--max-line-bytes",
        "1KiB",
        "--admin",
        "127.0.0.1:0",
    ]))
    .finish(LIMIT);
    assert_eq!(code, Some(0));
    let got = s.shipped();
    assert_eq!(
        got.len(),
        5,
        "{:?}",
        got.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(got[0], "short");
    assert_eq!(
        (got[1].len(), got[2].len(), got[3].len()),
        (1024, 1024, 452)
    );
    assert_eq!(got[1..4].concat(), long);
    assert_eq!(got[4], "after");
}

#[test]
fn invalid_utf8_is_shipped_lossily() {
    let s = Scene::new();
    std::fs::write(s.log("bin.log"), b"caf\xe9 au lait\nok\n").expect("write");
    let (code, _, _) = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--oneshot",
        "--output",
        "json",
    ]))
    .finish(LIMIT);
    assert_eq!(code, Some(0));
    let recs = json_lines(&s.shipped());
    assert_eq!(recs[0]["message"], "caf\u{fffd} au lait");
    assert_eq!(recs[1]["message"], "ok");
}

#[test]
fn an_unwritable_checkpoint_dir_is_a_clear_usage_error() {
    let s = Scene::new();
    append(&s.log("a.log"), "x\n");
    // A path under a regular file can never be created, even by root.
    let blocker = s.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").expect("write");
    let dir = blocker.join("checkpoints");
    let (code, _, _) = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--oneshot",
        "--checkpoint-dir",
        dir.to_str().expect("utf-8"),
    ]))
    .finish(LIMIT);
    assert_eq!(code, Some(2));
    let err = s.stderr();
    assert!(
        err.contains("is not writable") && err.contains("set --checkpoint-dir"),
        "{err}"
    );
}

#[test]
fn usage_errors_are_one_line_with_exit_2() {
    for (args, needle) in [
        (vec![], "--path"),
        (vec!["--path", "relative/*.log"], "must be absolute"),
        (
            vec!["--path", "/x/*.log", "--sink", "s3://bucket"],
            "unknown sink",
        ),
        (
            vec!["--path", "/x/*.log", "--multiline-start", "(("],
            "--multiline-start",
        ),
        (
            vec!["--path", "/x/*.log", "--read-from", "middle"],
            "middle",
        ),
        (
            vec!["--path", "/x/*.log", "--sink", "elasticsearch://es:9200"],
            "name the index",
        ),
        (
            vec!["--path", "/x/*.log", "--sink", "http://user:pw@host/"],
            "--basic-auth-file",
        ),
        (
            vec!["--path", "/x/*.log", "--sink", "syslog+tcp://rsyslog"],
            "give the port",
        ),
        (
            vec!["--path", "/x/*.log", "--header", "no colon"],
            "'Name: value'",
        ),
        (
            vec!["--path", "/x/*.log", "--max-in-flight", "0"],
            "--max-in-flight",
        ),
        (
            vec![
                "--path",
                "/x/*.log",
                "--bearer-token-file",
                "/nonexistent/token",
            ],
            "--bearer-token-file /nonexistent/token",
        ),
        (
            vec!["--path", "/x/*.log", "--client-cert", "/c.pem"],
            "--client-key",
        ),
        (
            vec!["--path", "/x/*.log", "--ca-file", "/nonexistent/ca.pem"],
            "--ca-file",
        ),
        (
            vec!["--path", "/x/*.log", "--syslog-facility", "kernel-ish"],
            "--syslog-facility",
        ),
        (
            vec![
                "--path",
                "/x/*.log",
                "--dead-letter-file",
                "/nonexistent/dir/dead",
            ],
            "--dead-letter-file",
        ),
        (
            vec![
                "--path",
                "/x/*.log",
                "--retry-backoff",
                "10s",
                "--retry-max-backoff",
                "1s",
            ],
            "--retry-max-backoff",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_logship"))
            .args(&args)
            .env_remove("LOGSHIP_PATH")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn sigterm_drains_everything_written_including_an_unfinished_last_line() {
    let s = Scene::new();
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log")]));
    std::thread::sleep(Duration::from_millis(300));
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("line {i}\n"));
    }
    text.push_str("last words without newline");
    append(&s.log("app.log"), &text);
    g.signal("TERM");
    // The app, stopped at the same moment, finishes its line while shutting down.
    std::thread::sleep(Duration::from_millis(150));
    let late = "\nwritten after SIGTERM\n";
    append(&s.log("app.log"), late);
    let (code, _, _) = g.finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());
    let got = s.shipped();
    assert_eq!(got.len(), 5002);
    assert_eq!(got[5000], "last words without newline");
    assert_eq!(got[5001], "written after SIGTERM");
    let cp =
        std::fs::read_to_string(s.logs().join(".logship/checkpoints.json")).expect("checkpoint");
    let end = text.len() + late.len();
    assert!(cp.contains(&format!("\"offset\":{end}")), "{cp}");
}

/// A file renamed away keeps its path as its label while it is read to its end, beside the
/// new file at that path: letting the old one go must not drop the path's series that the new
/// one goes on counting.
#[test]
fn per_file_metrics_survive_a_rename_rotation() {
    let s = Scene::new();
    let log = s.log("app.log");
    append(&log, "one\ntwo\n");
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log"), "--admin", "127.0.0.1:0"]));
    let admin = s.admin_port();
    s.wait_for("the first lines", |l| l.len() >= 2);
    std::fs::rename(&log, s.log("app.log.1")).expect("rotate");
    append(&log, "three\n");
    s.wait_for("the new file's line", |l| l.len() >= 3);
    // --rotate-wait is 300ms: the rotated file is let go after it.
    let series = format!("logship_read_lines_total{{file=\"{}\"}}", log.display());
    let mut seen = Vec::new();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(100));
        let m = http_get(admin, "/metrics").unwrap_or_default();
        seen.push(m.lines().any(|l| l.starts_with(&series)));
    }
    assert!(
        s.stderr().contains("done with"),
        "the rotated file was not let go: {}",
        s.stderr()
    );
    assert!(seen.iter().all(|s| *s), "{series} went missing: {seen:?}");
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn the_admin_address_is_logged_so_a_port_the_kernel_picks_can_be_found() {
    let s = Scene::new();
    append(&s.log("app.log"), "one\n");
    let g = Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log"), "--admin", "127.0.0.1:0"]));
    // Read from the log: "admin endpoints on http://127.0.0.1:PORT: ...".
    let port = s.admin_port();
    assert_ne!(port, 0);
    s.wait_for("the line", |l| !l.is_empty());
    let live = http_get(port, "/live").unwrap_or_default();
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let metrics = eventually("the line counted in /metrics", LIMIT, || {
        let m = http_get(port, "/metrics")?;
        m.contains("logship_read_lines_total").then_some(m)
    });
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn exit_on_file_reads_everything_then_exits_0() {
    let s = Scene::new();
    let done = s.dir.path().join("job-done");
    let g = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--exit-on-file",
        done.to_str().expect("utf-8"),
    ]));
    std::thread::sleep(Duration::from_millis(300));
    append(&s.log("job.log"), "step 1\nstep 2\nfinished\n");
    std::fs::write(&done, "").expect("touch");
    let (code, _, _) = g.finish(LIMIT);
    assert_eq!(code, Some(0));
    assert_eq!(s.shipped(), vec!["step 1", "step 2", "finished"]);
}

#[test]
fn stdout_sink_and_admin_metrics() {
    let s = Scene::new();
    append(&s.log("a.log"), "one\ntwo\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_logship"));
    cmd.args([
        "--path",
        &s.glob("*.log"),
        "--admin",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "text",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    let g = Guard::spawn(&mut cmd);
    let metrics = (0..400)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(25));
            let body = http_get(port, "/metrics")?;
            body.contains("logship_shipped_lines_total 2")
                .then_some(body)
        })
        .expect("metrics show two shipped lines");
    assert!(metrics.contains("logship_files_watched 1"), "{metrics}");
    assert!(
        metrics.contains("logship_read_bytes_total{file="),
        "{metrics}"
    );
    assert!(http_get(port, "/readyz").is_some_and(|b| b.contains("ready")));
    g.signal("TERM");
    let (code, out, _) = g.finish(LIMIT);
    assert_eq!(code, Some(0));
    assert_eq!(out, "one\ntwo\n");
}

#[test]
fn a_corrupt_checkpoint_is_set_aside_and_reading_starts_over() {
    let s = Scene::new();
    append(&s.log("a.log"), "one\ntwo\n");
    let cp_dir = s.logs().join(".logship");
    std::fs::create_dir_all(&cp_dir).expect("checkpoint dir");
    std::fs::write(
        cp_dir.join("checkpoints.json"),
        "{\"version\":1,\"files\":[{trunc",
    )
    .expect("corrupt");
    for _ in 0..2 {
        // The second run proves there is no crash loop: the bad file is gone, a good one is back.
        let (code, _, _) =
            Guard::spawn(&mut s.logship(&["--path", &s.glob("*.log"), "--oneshot"])).finish(LIMIT);
        assert_eq!(code, Some(0), "{}", s.stderr());
    }
    assert_eq!(s.shipped(), vec!["one", "two"]);
    assert!(
        s.stderr().contains("the checkpoint file is corrupt"),
        "{}",
        s.stderr()
    );
    let aside = std::fs::read_dir(&cp_dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoints.json.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    let good = std::fs::read_to_string(cp_dir.join("checkpoints.json")).expect("new checkpoint");
    assert!(good.contains("\"offset\":8"), "{good}");
}

/// SIGHUP's default action would kill logship with no drain (exit 129): it is logged and
/// ignored; a second SIGTERM during the drain ends it at once (exit 143).
#[test]
fn sighup_is_ignored_and_a_second_sigterm_ends_the_drain_at_once() {
    let s = Scene::new();
    let g = Guard::spawn(&mut s.logship(&[
        "--path",
        &s.glob("*.log"),
        "--drain-quiet",
        "300s",
        "--drain-timeout",
        "600s",
    ]));
    append(&s.log("a.log"), "one\n");
    s.wait_for("the first line", |l| l.len() == 1);
    g.signal("HUP");
    append(&s.log("a.log"), "two\n");
    s.wait_for("a line after SIGHUP", |l| l.len() == 2);
    // The drain would wait for 300 s of quiet; the second signal cuts it short.
    g.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    g.signal("TERM");
    let (code, _, _) = g.finish(LIMIT);
    assert_eq!(code, Some(143), "{}", s.stderr());
    assert!(s.stderr().contains("SIGHUP ignored"), "{}", s.stderr());
    assert!(s.stderr().contains("second stop signal"), "{}", s.stderr());
}

/// A glob whose directory does not exist (a volume not mounted, a typo) is a warning, nothing
/// is created there, and `--oneshot` says it shipped nothing rather than exiting in silence.
#[test]
fn a_glob_in_a_missing_directory_warns_creates_nothing_and_says_nothing_was_shipped() {
    let s = Scene::new();
    let missing = s.logs().join("not/there");
    let glob = format!("{}/*.log", missing.display());
    let (code, _, _) = Guard::spawn(&mut s.logship(&["--path", &glob, "--oneshot"])).finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());
    let stderr = s.stderr();
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("nothing was shipped"), "{stderr}");
    assert!(
        !s.logs().join("not").exists(),
        "logship created the missing directory"
    );
}

#[test]
fn the_sink_help_names_every_sink() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logship"))
        .arg("--help")
        .output()
        .expect("logship --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for scheme in [
        "file://",
        "http(s)://",
        "loki://",
        "elasticsearch://",
        "otlp://",
        "syslog+tcp://",
        "syslog+tls://",
        "syslog+udp://",
        "+https://",
    ] {
        assert!(
            help.contains(scheme),
            "--help does not name {scheme}:\n{help}"
        );
    }
}

/// JSON log lines carry JSON values: lists as arrays, numbers and booleans as such (they were
/// Rust debug strings such as "Globs { include: [...] }").
#[test]
fn json_log_fields_are_json_values() {
    let s = Scene::new();
    append(&s.log("a.log"), "one\n");
    let glob = s.glob("*.log");
    let (code, _, _) = Guard::spawn(
        s.logship(&["--path", &glob, "--oneshot"])
            .env("LOGSHIP_LOG_FORMAT", "json"),
    )
    .finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());
    let lines: Vec<serde_json::Value> = s
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = |prefix: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}"))
    };
    let started = line("logship started");
    assert_eq!(started["paths"], serde_json::json!([glob]), "{started}");
    assert!(started["sinks"].is_array(), "{started}");
    assert_eq!(started["first_start"], true, "{started}");
    let watching = line("watching");
    assert_eq!(watching["offset"], 0, "{watching}");
}
