//! Protocol probes against the real servers, started late by the test, from Debian packages:
//! postgresql, redis-server, mariadb-server, and dnsmasq for DNS. Each test says which package
//! it needs and fails (never silently passes) when it is missing; .ci/run installs them all.

mod support;

use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use podkit_tests::ReservedPort;
use support::*;

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// The uid and gid of a system user, from /etc/passwd.
fn system_user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or_else(|| panic!("user {name} missing: apt-get install postgresql"))
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join(name))
        .rfind(|p| p.exists())
        .unwrap_or_else(|| panic!("this test needs {name} from the Debian package postgresql: apt-get install postgresql"))
}

#[test]
fn postgres_is_ready_only_once_it_accepts_connections() {
    let initdb = postgres_bin("initdb");
    let postgres = postgres_bin("postgres");
    let runuser = require_program(&["runuser"], "util-linux");
    let (uid, gid) = system_user("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    chown(dir.path(), Some(uid), Some(gid)).expect("chown data dir");
    let data = dir.path().join("data");
    let status = quiet(
        Command::new(&runuser)
            .args(["-u", "postgres", "--"])
            .arg(&initdb)
            .args(["-A", "trust", "-U", "postgres", "-D"]),
    )
    .arg(&data)
    .status()
    .expect("run initdb");
    assert!(status.success(), "initdb failed");

    // Held while waitfor waits (see ReservedPort), let go for the server to bind.
    let held = ReservedPort::new();
    let port = held.port();
    let mut waiter =
        Guard::spawn(waitfor().args(["--timeout", "60s", &format!("postgres://127.0.0.1:{port}")]));
    assert_still_waiting(&mut waiter, Duration::from_millis(700));
    drop(held);
    let _server = Guard::spawn(
        quiet(
            Command::new(&runuser)
                .args(["-u", "postgres", "--"])
                .arg(&postgres),
        )
        .arg("-D")
        .arg(&data)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
        ])
        .arg(dir.path()),
    );
    waiter
        .finish(HANG_GUARD)
        .assert_code(0)
        .assert_stderr_has(&format!("ready: postgres://127.0.0.1:{port}"))
        .assert_stderr_has("accepting connections");
}

#[test]
fn redis_is_ready_on_pong_and_on_noauth() {
    let redis = require_program(&["redis-server"], "redis-server");
    for (password, answer) in [(None, "PONG"), (Some("s3cret"), "NOAUTH")] {
        let held = ReservedPort::new();
        let port = held.port();
        let mut waiter = Guard::spawn(waitfor().args([
            "--timeout",
            "60s",
            &format!("redis://127.0.0.1:{port}"),
        ]));
        assert_still_waiting(&mut waiter, Duration::from_millis(500));
        drop(held);
        let mut cmd = Command::new(&redis);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(pw) = password {
            cmd.args(["--requirepass", pw]);
        }
        let _server = Guard::spawn(quiet(&mut cmd));
        waiter
            .finish(HANG_GUARD)
            .assert_code(0)
            .assert_stderr_has(answer);
    }
}

#[test]
fn mariadb_is_ready_once_its_greeting_arrives() {
    let mariadbd = require_program(&["mariadbd", "/usr/sbin/mariadbd"], "mariadb-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let held = ReservedPort::new();
    let port = held.port();
    let mut waiter =
        Guard::spawn(waitfor().args(["--timeout", "60s", &format!("mysql://127.0.0.1:{port}")]));
    assert_still_waiting(&mut waiter, Duration::from_millis(500));
    drop(held);
    let d = dir.path().display();
    let _server = Guard::spawn(quiet(Command::new(&mariadbd).args([
        "--no-defaults",
        &format!("--datadir={d}"),
        "--skip-grant-tables",
        "--user=root",
        &format!("--port={port}"),
        "--bind-address=127.0.0.1",
        &format!("--socket={d}/mysqld.sock"),
        &format!("--pid-file={d}/mysqld.pid"),
        &format!("--log-error={d}/error.log"),
    ])));
    waiter
        .finish(HANG_GUARD)
        .assert_code(0)
        .assert_stderr_has("greeting from server")
        .assert_stderr_has("MariaDB");
}

/// A name that starts to resolve only after a while: dnsmasq on a loopback address answers for
/// `podkit.test` from a hosts directory it watches, and waitfor runs in a private mount
/// namespace whose /etc/resolv.conf points at it (so the host's resolver is never touched).
#[test]
fn a_dns_name_that_resolves_late_is_waited_for() {
    let dnsmasq = require_program(&["dnsmasq", "/usr/sbin/dnsmasq"], "dnsmasq");
    let unshare = require_program(&["unshare"], "util-linux");
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts_dir = dir.path().join("hosts.d");
    std::fs::create_dir(&hosts_dir).expect("hosts dir");
    let resolv = dir.path().join("resolv.conf");
    let server_ip = "127.0.0.77";
    std::fs::write(
        &resolv,
        format!("nameserver {server_ip}\noptions timeout:1 attempts:1\n"),
    )
    .expect("resolv.conf");
    let _dns = Guard::spawn(quiet(Command::new(&dnsmasq).args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--pid-file=",
        "--bind-interfaces",
        &format!("--listen-address={server_ip}"),
        "--port=53",
        "--local=/podkit.test/",
        &format!("--hostsdir={}", hosts_dir.display()),
    ])));

    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} --timeout 60s --log-level debug dns://late.podkit.test",
        resolv.display(),
        env!("CARGO_BIN_EXE_waitfor")
    );
    let mut waiter = Guard::spawn(test_env(Command::new(&unshare).args([
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        &script,
    ])));
    assert_still_waiting(&mut waiter, Duration::from_millis(1500));
    std::fs::write(hosts_dir.join("late"), "127.0.0.1 late.podkit.test\n").expect("add host");
    waiter
        .finish(HANG_GUARD)
        .assert_code(0)
        .assert_stderr_has("name not found")
        .assert_stderr_has("ready: dns://late.podkit.test")
        .assert_stderr_has("resolved to 127.0.0.1");
}
