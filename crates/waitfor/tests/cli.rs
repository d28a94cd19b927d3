//! The command line, exit codes, signals and exec, against the real binary.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use podkit_tests::ReservedPort;
use support::*;

#[test]
fn every_usage_error_is_one_line_naming_the_problem_with_exit_2() {
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let t = target.as_str();
    let cases: &[(&[&str], &str)] = &[
        (&[], "no target given"),
        (&["db"], "a port is required"),
        (&["ftp://x"], "unknown scheme"),
        (&["file://relative"], "absolute path"),
        (&["--timeout", "5", t], "--timeout"),
        (&["--timeout", "soon", t], "not a duration"),
        (
            &["--attempt-timeout", "0", t],
            "--attempt-timeout must be more than 0",
        ),
        (
            &["--max-interval", "0", t],
            "--max-interval must be more than 0",
        ),
        (&["--success-count", "0", t], "--success-count"),
        (&["--success-count", "many", t], "--success-count"),
        (&["--http-status", "2xx", t], "--http-status"),
        (&["--http-status", "302-301", t], "backwards"),
        (&["--http-body", "(", t], "--http-body"),
        (&["--http-header", "bad name: x", t], "--http-header"),
        (
            &["--http-request-header", "NoColon", t],
            "--http-request-header",
        ),
        (
            &["--ca-file", "/nonexistent/ca.pem", t],
            "--ca-file /nonexistent/ca.pem",
        ),
        (
            &["--ca-file", "/etc/hostname", t],
            "--ca-file /etc/hostname",
        ),
        (
            &["--insecure", "--ca-file", "/etc/hostname", t],
            "contradict",
        ),
        (&["--log-level", "loud=???", t], "--log-level"),
        (&["--log-format", "xml", t], "xml"),
        (&["--frobnicate", t], "--frobnicate"),
    ];
    for (args, needle) in cases {
        let out = run(args);
        assert_eq!(out.code, Some(2), "{args:?}: stderr {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: want one line, got:\n{}",
            out.stderr
        );
        assert!(lines[0].starts_with("waitfor: "), "{args:?}: {}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "{args:?}: {:?} lacks {needle:?}",
            lines[0]
        );
    }
}

#[test]
fn flags_come_from_env_too_and_bad_env_values_are_named() {
    let out = Guard::spawn(
        waitfor()
            .env("WAITFOR_TIMEOUT", "eventually")
            .env("WAITFOR_TARGETS", "127.0.0.1:1"),
    )
    .finish(HANG_GUARD);
    out.assert_code(2).assert_stderr_has("--timeout");

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let out = Guard::spawn(
        waitfor()
            .env("WAITFOR_TARGETS", format!("127.0.0.1:{port}, file:///"))
            .env("WAITFOR_TIMEOUT", "10s"),
    )
    .finish(HANG_GUARD);
    out.assert_code(0)
        .assert_stderr_has(&format!("ready: tcp://127.0.0.1:{port}"))
        .assert_stderr_has("ready: file:///");
}

#[test]
fn help_and_version_exit_0() {
    let out = run(&["--version"]);
    out.assert_code(0);
    assert!(out.stdout.starts_with("waitfor 0."), "{}", out.stdout);
    // The commit it was built from, the target, and what kind of build.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(
        out.stdout.contains(&format!("(commit {head}")),
        "{} (HEAD {head})",
        out.stdout
    );
    assert!(
        out.stdout.contains(", x86_64-unknown-linux-gnu, "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("profile-guided)"), "{}", out.stdout);
    let out = run(&["--help"]);
    out.assert_code(0);
    assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
}

#[test]
fn timeout_exits_124_with_one_line_per_target_still_not_ready() {
    let up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_port = up.local_addr().expect("addr").port();
    let down = ReservedPort::new();
    let down_port = down.port();
    let out = run(&[
        "--timeout",
        "1s",
        &format!("127.0.0.1:{up_port}"),
        &format!("tcp://127.0.0.1:{down_port}"),
    ]);
    out.assert_code(124)
        .assert_stderr_has(&format!("ready: tcp://127.0.0.1:{up_port}"))
        .assert_stderr_has(&format!(
            "timed out after 1s waiting for tcp://127.0.0.1:{down_port}: last error: connection refused"
        ));
    let timeout_lines = out
        .stderr
        .lines()
        .filter(|l| l.contains("timed out after"))
        .count();
    assert_eq!(timeout_lines, 1, "{}", out.stderr);
    // The first line states the targets and settings.
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("timeout 1s") && first.contains(&down_port.to_string()),
        "{first}"
    );
}

#[test]
fn the_deadline_cuts_a_hanging_attempt_short() {
    // Accepts connections (the kernel does) but never answers HTTP: every attempt hangs.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let out = Guard::spawn(waitfor().args([
        "--timeout",
        "1s",
        "--attempt-timeout",
        "10m",
        &format!("http://127.0.0.1:{port}/"),
    ]))
    // Far below the attempt timeout: only the deadline can have ended it.
    .finish(Duration::from_secs(20));
    out.assert_code(124)
        .assert_stderr_has("last error: timed out");
}

#[test]
fn sigterm_and_sigint_end_the_wait_with_143_and_130() {
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let down = ReservedPort::new();
        let mut guard =
            Guard::spawn(waitfor().args(["--timeout", "0", &format!("127.0.0.1:{}", down.port())]));
        assert_still_waiting(&mut guard, Duration::from_millis(600));
        send_signal(guard.id(), signal);
        let out = guard.finish(Duration::from_secs(10));
        out.assert_code(code)
            .assert_stderr_has(&format!("interrupted by SIG{signal}"));
    }
}

#[test]
fn exec_keeps_the_pid_and_passes_args_env_and_exit_code() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let guard = Guard::spawn(waitfor().env("PODKIT_TEST_VALUE", "from-env").args([
        &format!("127.0.0.1:{port}"),
        "--",
        "/bin/sh",
        "-c",
        "echo \"pid=$$ arg=$1 env=$PODKIT_TEST_VALUE\"; exit 7",
        "sh",
        "first arg",
    ]));
    let pid = guard.id();
    let out = guard.finish(HANG_GUARD);
    out.assert_code(7);
    assert_eq!(
        out.stdout.trim(),
        format!("pid={pid} arg=first arg env=from-env")
    );
}

#[test]
fn command_that_cannot_run_exits_127_or_126_and_never_runs_after_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ready = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let out = run(&[&ready, "--", "/nonexistent/app"]);
    out.assert_code(127)
        .assert_stderr_has("command not found: /nonexistent/app");
    let marker = tempfile::tempdir().expect("tempdir");
    let not_executable = marker.path().join("app");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
    let not_executable = not_executable.to_str().expect("utf-8 path");
    let out = run(&[&ready, "--", not_executable]);
    out.assert_code(126).assert_stderr_has(&format!(
        "command cannot be executed: {not_executable}: permission denied"
    ));

    let flag = marker.path().join("ran");
    let down = ReservedPort::new();
    let out = run(&[
        "--timeout",
        "300ms",
        &format!("127.0.0.1:{}", down.port()),
        "--",
        "/bin/touch",
        flag.to_str().expect("utf-8 path"),
    ]);
    out.assert_code(124);
    assert!(!flag.exists(), "COMMAND ran after a timeout");
}

#[test]
fn a_target_still_down_is_reported_every_ten_seconds_with_its_last_error() {
    let down = ReservedPort::new();
    let port = down.port();
    // Attempts every 200ms or less, so several fall between the 10s mark and the deadline (a
    // loaded machine may stall one), and none after a second report would be due (20s).
    let out = run(&[
        "--timeout",
        "12s",
        "--max-interval",
        "200ms",
        &format!("127.0.0.1:{port}"),
    ]);
    out.assert_code(124)
        .assert_stderr_has(&format!("still waiting for tcp://127.0.0.1:{port} after 1"));
    let reports = out
        .stderr
        .lines()
        .filter(|l| l.contains("still waiting"))
        .count();
    assert_eq!(reports, 1, "{}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("still waiting"))
        .unwrap_or_default();
    assert!(line.contains("connection refused"), "{line}");
    // Made by the first attempt past the 10s mark: 10.xs, or 11.xs after a long stall.
    let after: f64 = line
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line}"));
    assert!((10.0..12.0).contains(&after), "{line}");
}

#[test]
fn an_unknown_flag_is_a_usage_error_that_never_suggests_exec_ing_it() {
    let out = run(&["--bogus"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        out.stderr
    );
    // After `--`, waitfor would exec `--bogus`: clap's usual tip must not be passed on.
    assert!(!out.stderr.contains("-- --bogus"), "{}", out.stderr);
}

/// On a terminal (a pty from util-linux `script`), log lines are coloured unless NO_COLOR is
/// set (https://no-color.org).
#[test]
fn no_color_turns_off_colours_on_a_terminal() {
    let on_a_terminal = |no_color: Option<&str>| -> String {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec"])
            .arg(format!(
                "{} --log-format text --timeout 300ms file:///nonexistent/podkit",
                env!("CARGO_BIN_EXE_waitfor")
            ))
            .arg("/dev/null")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd
            .output()
            .expect("script (util-linux) runs waitfor on a pty");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_a_terminal(None);
    assert!(
        coloured.contains('\u{1b}'),
        "no colours on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("file:///nonexistent/podkit"), "{plain:?}");
    assert!(
        !plain.contains('\u{1b}'),
        "colours despite NO_COLOR: {plain:?}"
    );
}
