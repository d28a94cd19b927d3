//! Support for podkit's cross-binary and pod tests.
//!
//! Owns: finding podman and running it with the repository's containers.conf,
//! running commands with a deadline, tearing pods down on drop (also when a test
//! panics), loopback ports and listeners, and reading podman's timestamps.
//! Promises: no helper here sends traffic anywhere but 127.0.0.1, and every
//! failure message names the command that failed and how to get what is missing.
//! crates/xtask/src/podman.rs holds the same podman knowledge for xtask (tests
//! cannot depend on xtask).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root (this crate lives at `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// `k8s-examples/<name>`.
pub fn example_dir(name: &str) -> PathBuf {
    workspace_root().join("k8s-examples").join(name)
}

/// `$CONTAINERS_CONF` if set (xtask sets it), else `images/containers.conf`.
pub fn containers_conf() -> PathBuf {
    match std::env::var_os("CONTAINERS_CONF") {
        Some(conf) if !conf.is_empty() => PathBuf::from(conf),
        _ => workspace_root().join("images").join("containers.conf"),
    }
}

/// `localhost/podkit/<name>:dev`, as `cargo xtask images` tags them.
pub fn image_name(name: &str) -> String {
    format!("localhost/podkit/{name}:dev")
}

/// How a command ended and what it printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// The command line as a person would type it.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion, capturing its output; kills it and panics (naming
/// the command) if it runs past `timeout`, so a hung podman fails the test
/// instead of hanging it.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let command = display(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
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
                panic!(
                    "`{command}` did not finish within {}s and was killed",
                    timeout.as_secs()
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("waiting for `{command}` failed: {e}"),
        }
    };
    Output {
        command,
        code: status.code(),
        stdout: stdout
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: stderr
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
    }
}

fn read_to_string(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Polls `done` every 100 ms until it is true; false if `timeout` passed first.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// podman, run with [`containers_conf`].
#[derive(Debug, Clone)]
pub struct Podman {
    program: PathBuf,
}

impl Podman {
    /// Finds podman on PATH, or fails the test saying how to get it. Pod tests
    /// must never pass by silently doing nothing.
    pub fn find() -> Podman {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("podman"))
                .find(|p| p.is_file())
        });
        match found {
            Some(program) => Podman { program },
            None => panic!(
                "podman is not installed, and the pod tests play k8s-examples/ with \
                 `podman kube play`. Install it (Debian/Ubuntu: `apt-get install podman runc`), \
                 then run `cargo xtask test`; it builds the images first."
            ),
        }
    }

    /// A podman command with CONTAINERS_CONF set.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.env("CONTAINERS_CONF", containers_conf());
        cmd
    }

    /// `podman ARGS...`, killed after `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        run_with_timeout(self.command().args(args), timeout)
    }

    /// Fails the test unless `image` is in local storage.
    pub fn require_image(&self, image: &str) {
        let out = self.run(&["image", "exists", image], QUERY_TIMEOUT);
        assert!(
            out.success(),
            "image {image} is missing: build the images with `cargo xtask images` \
             (`cargo xtask test` does it before the pod tests)"
        );
    }

    /// `podman inspect --format TEMPLATE CONTAINER`, or `None` if there is no such
    /// container (yet).
    pub fn try_inspect(&self, container: &str, template: &str) -> Option<String> {
        let out = self.run(&["inspect", "--format", template, container], QUERY_TIMEOUT);
        out.success().then(|| out.stdout.trim().to_string())
    }

    /// Like [`Podman::try_inspect`], failing the test if the container is missing.
    pub fn inspect(&self, container: &str, template: &str) -> String {
        self.try_inspect(container, template).unwrap_or_else(|| {
            panic!("container {container} does not exist (`podman ps -a --pod` lists what does)")
        })
    }

    /// A time field of a container (`.State.StartedAt`, ...) as nanoseconds since
    /// the Unix epoch.
    pub fn inspect_time(&self, container: &str, field: &str) -> i128 {
        let raw = self.inspect(container, &format!("{{{{{field}.UnixNano}}}}"));
        raw.parse()
            .unwrap_or_else(|_| panic!("{field} of {container} is {raw:?}, not a time"))
    }

    /// `podman logs CONTAINER`, stdout only, as lines. Unlike [`Podman::logs`], a line the
    /// container wrote in several pieces (conmon reads a large write in chunks and `logs -t`
    /// prints each chunk on a line of its own) comes back whole.
    pub fn stdout_lines(&self, container: &str) -> Vec<String> {
        let out = self.run(&["logs", container], QUERY_TIMEOUT);
        assert!(out.success(), "{out}");
        out.stdout.lines().map(str::to_string).collect()
    }

    /// `podman logs -t CONTAINER`, stdout and stderr, as (time, line) pairs.
    pub fn logs(&self, container: &str) -> Vec<(i128, String)> {
        let out = self.run(&["logs", "-t", container], QUERY_TIMEOUT);
        assert!(out.success(), "{out}");
        format!("{}{}", out.stdout, out.stderr)
            .lines()
            .filter_map(|line| {
                let (time, text) = line.split_once(' ')?;
                Some((parse_rfc3339_nanos(time)?, text.to_string()))
            })
            .collect()
    }
}

/// Tears down what a `podman kube play YAML` created when dropped: `kube down`,
/// then `pod rm -f` for each named pod in case `kube down` could not (a failed
/// play). Arm it before playing so a test that panics halfway still cleans up.
pub struct PodGuard {
    podman: Podman,
    yaml: PathBuf,
    pods: Vec<String>,
}

impl PodGuard {
    pub fn new(podman: &Podman, yaml: &Path, pods: &[&str]) -> PodGuard {
        let guard = PodGuard {
            podman: podman.clone(),
            yaml: yaml.to_path_buf(),
            pods: pods.iter().map(|p| p.to_string()).collect(),
        };
        // A leftover from an earlier, killed run would make `kube play` fail.
        guard.tear_down();
        guard
    }

    fn tear_down(&self) {
        let yaml = self.yaml.to_string_lossy();
        let _ = self
            .podman
            .run(&["kube", "down", yaml.as_ref()], QUERY_TIMEOUT);
        for pod in &self.pods {
            let _ = self.podman.run(&["pod", "rm", "-f", pod], QUERY_TIMEOUT);
        }
    }
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// A port on 127.0.0.1 that was free a moment ago (the kernel picked it for
/// port 0), for a binary under test to bind at once. Another socket could take it
/// before then; a port that must stay free for longer, or be bound later, is a
/// [`ReservedPort`].
pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The port in the first `mark` of `log` (a line such as "listening on 127.0.0.1:PORT"
/// with `mark` ending at the colon): how a test finds a port a binary bound for `:0`.
pub fn port_in_log(log: &str, mark: &str) -> Option<u16> {
    let rest = &log[log.find(mark)? + mark.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A loopback port held for a peer that is down now and may come up later.
///
/// The socket is bound but not listening: a connection to it is refused (RST), as
/// to a stopped peer. No other socket's port-0 pick on this machine can land on it
/// (the kernel skips bound ports), and a socket that binds it by number fails too:
/// the hold is bound without SO_REUSEADDR, which every listener sets, and Linux
/// lets two sockets share a port only if both set it (socket(7)). A port that was
/// merely free and released could be taken by any test's listener in the meantime,
/// and the client under test would then talk to that one (a sink test's CI failure,
/// reading that never paused while its receiver was "down", fits that). [`listen`]
/// turns the same socket into the peer's listener, so the port is never free. A
/// peer that binds the port itself (a real server) starts once the hold is dropped.
///
/// [`listen`]: ReservedPort::listen
pub struct ReservedPort {
    socket: socket2::Socket,
    addr: SocketAddr,
}

impl ReservedPort {
    /// Holds a port the kernel picks.
    pub fn new() -> ReservedPort {
        ReservedPort::bind(SocketAddr::from(([127, 0, 0, 1], 0)), false).expect("bind 127.0.0.1:0")
    }

    /// Holds `addr` again after its listener closed, trying for up to 10s. This hold
    /// sets SO_REUSEADDR, as it must to share the port with the old connections in
    /// TIME_WAIT, so only port-0 picks are kept off it (the port was never free for
    /// one to be made with it).
    pub fn at(addr: SocketAddr) -> ReservedPort {
        let start = Instant::now();
        loop {
            match ReservedPort::bind(addr, true) {
                Ok(port) => return port,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot hold {addr} again: {e}"),
            }
        }
    }

    fn bind(addr: SocketAddr, reuse: bool) -> std::io::Result<ReservedPort> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(reuse)?;
        socket.bind(&addr.into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
        Ok(ReservedPort { socket, addr })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer comes up: the held socket starts listening (blocking mode; call
    /// `set_nonblocking(true)` before handing it to tokio).
    pub fn listen(self) -> TcpListener {
        // Set now, as every listener has it (std's and tokio's): its accepted connections
        // inherit it, so the port can be held again ([`ReservedPort::at`]) while they are
        // in TIME_WAIT.
        self.socket
            .set_reuse_address(true)
            .and_then(|()| self.socket.listen(1024))
            .unwrap_or_else(|e| panic!("listen on {}: {e}", self.addr));
        self.socket.into()
    }
}

impl Default for ReservedPort {
    fn default() -> ReservedPort {
        ReservedPort::new()
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A TCP listener on 127.0.0.1 that accepts (and drops) connections on its own
/// thread and counts them: the "dependency" a test brings up when it chooses.
pub struct LoopbackListener {
    /// When the port started accepting, in nanoseconds since the Unix epoch.
    pub listening_since: i128,
    /// The port it listens on (the one asked for, or the kernel's pick for 0).
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackListener {
    /// Listens on `port`, or on a port the kernel picks for 0.
    pub fn bind(port: u16) -> LoopbackListener {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
        LoopbackListener::serve(listener)
    }

    /// Listens on a port held for it until now.
    pub fn on(held: ReservedPort) -> LoopbackListener {
        LoopbackListener::serve(held.listen())
    }

    fn serve(listener: TcpListener) -> LoopbackListener {
        let listening_since = now_nanos();
        let port = listener.local_addr().expect("local address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            drop::<TcpStream>(stream);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        LoopbackListener {
            listening_since,
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for LoopbackListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Parses the RFC 3339 times podman prints (`2026-11-25T09:16:00.665168544Z`,
/// `...+01:00`) into nanoseconds since the Unix epoch.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || s.get(10..11)? != "T" || s.get(13..14)? != ":" {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
        rest = &fraction[digits.len()..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    // Days from the civil date (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

/// The Downward API fields podman 4.3 rejects in `kube play` (it implements metadata.name).
pub const PODMAN_UNSUPPORTED_FIELDS: &[&str] = &["metadata.namespace", "spec.nodeName"];

/// A copy of a manifest that podman 4.3 plays: every env entry whose value comes from a
/// Downward API field podman does not implement is dropped (the same as the examples' READMEs
/// do with sed). The entry is the `- name:` line and the three lines of its `valueFrom`.
pub fn for_podman(yaml: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let entry = lines[i].trim_start().starts_with("- name:")
            && lines.get(i + 3).is_some_and(|l| {
                PODMAN_UNSUPPORTED_FIELDS
                    .iter()
                    .any(|f| l.trim() == format!("fieldPath: {f}"))
            });
        if entry {
            i += 4;
        } else {
            out.push(lines[i]);
            i += 1;
        }
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_log_times_parse_to_unix_nanos() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("2026-11-25T09:16:00.665168544Z"),
            Some(1_795_598_160_665_168_544)
        );
        assert_eq!(
            parse_rfc3339_nanos("2026-11-25T10:16:00.5+01:00"),
            Some(1_795_598_160_500_000_000)
        );
    }

    #[test]
    fn malformed_times_are_rejected() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25 09:16:00Z",
            "2026-11-25T09:16:00.Z",
            "x",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_loopback_listener_counts_connections() {
        // Port 0: a free port picked first and bound after could be taken in between (it
        // was, once, in CI: "Address already in use").
        let listener = LoopbackListener::bind(0);
        TcpStream::connect(("127.0.0.1", listener.port)).expect("connect");
        assert!(wait_until(Duration::from_secs(5), || listener.accepted() == 1));
        assert!(listener.listening_since <= now_nanos());
    }

    #[test]
    fn a_command_past_its_deadline_fails_naming_it() {
        let result = std::panic::catch_unwind(|| {
            run_with_timeout(Command::new("sleep").arg("5"), Duration::from_millis(200))
        });
        let message = result
            .err()
            .and_then(|p| p.downcast_ref::<String>().cloned())
            .expect("run_with_timeout panics on timeout");
        assert!(message.contains("sleep 5"), "{message}");
    }

    #[test]
    fn for_podman_drops_only_the_fields_podman_lacks() {
        let yaml = "env:\n  - name: POD_NAME\n    valueFrom:\n      fieldRef:\n        fieldPath: metadata.name\n  - name: NODE_NAME\n    valueFrom:\n      fieldRef:\n        fieldPath: spec.nodeName\n  - name: X\n    value: y\n";
        let out = super::for_podman(yaml);
        assert!(
            out.contains("POD_NAME") && out.contains("metadata.name") && out.contains("name: X")
        );
        assert!(!out.contains("NODE_NAME") && !out.contains("spec.nodeName"));
    }

    #[test]
    fn a_reserved_port_refuses_connections_is_never_a_port_0_pick_and_listens_in_place() {
        let held = ReservedPort::new();
        let refused = TcpStream::connect(held.addr()).expect_err("connected to a held port");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // A listener that asks for the port by number (std sets SO_REUSEADDR) is refused it.
        assert!(TcpListener::bind(held.addr()).is_err(), "bound a held port");
        for _ in 0..3000 {
            let other = TcpListener::bind("127.0.0.1:0").expect("bind");
            assert_ne!(other.local_addr().expect("addr").port(), held.port());
        }
        let addr = held.addr();
        let listener = held.listen();
        let client = TcpStream::connect(addr).expect("connect once listening");
        // The listener's side closes first, so its socket goes to TIME_WAIT on the port.
        drop(listener.accept().expect("accept"));
        drop(listener);
        let mut end = [0u8; 1];
        assert_eq!((&client).read(&mut end).expect("read the close"), 0);
        drop(client);
        // Held again at once (no wait for TIME_WAIT to end).
        let again = ReservedPort::bind(addr, true).expect("hold the port again");
        assert_eq!(again.addr(), addr);
        let refused = TcpStream::connect(addr).expect_err("connected to a held port");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
