//! The profile-guided build of podproxy, the shipped binary whose per-request CPU is its
//! product (`cargo xtask bench podproxy` measured a profile-guided build at about 7% more
//! requests per second than the plain one, from code layout and inlining guided by what runs).
//!
//! 1. podproxy is built instrumented (`-Cprofile-generate`, in `target/pgo/gen`).
//! 2. The instrumented binary is trained on this machine, against demo-app's backend on
//!    loopback, weighted as a sidecar's traffic is: mostly HTTP/1.1 keep-alive (wrk) to an
//!    HTTP/1.1 upstream, with the access log off and on; then HTTP/2 prior knowledge (h2load),
//!    an h2c upstream, request bodies, 404s, the admin server, JSON and combined access logs,
//!    and TLS: HTTP/1.1 (wrk) and HTTP/2 by ALPN (h2load). The HTTP phases run podproxy on one
//!    CPU (taskset), where it uses tokio's current-thread scheduler as a sidecar limited to one
//!    CPU does, the TLS phase on all CPUs (the multi-thread scheduler). Every protocol and
//!    scheduler podproxy runs in volume is trained, so none is laid out as cold code; the
//!    WebSocket tunnel (a byte copy) is the one path not trained. A training step that fails
//!    (a process that does not start, wrk or h2load errors, answers other than 2xx/3xx where
//!    they are expected) fails `dist`, naming the step.
//! 3. The counts are merged by `llvm-profdata` into `target/pgo/podproxy-<key>.profdata`, keyed
//!    by the instrumented binary's contents and this file's (the training): the same sources
//!    train once, so a second `dist` rebuilds nothing; changed sources or training train again,
//!    and the new file name (it is in RUSTFLAGS) rebuilds every crate with the new counts. No
//!    profile is committed, so none goes stale.
//! 4. podproxy is built with `-Cprofile-use` (in `target/pgo/use`).
//!
//! Without the tools (llvm-profdata, wrk, h2load, openssl, taskset) podproxy is built plain, and `dist`
//! and the bench say so; `PODKIT_PGO=off` asks for the plain build. rustc's docs on PGO:
//! <https://doc.rust-lang.org/rustc/profile-guided-optimization.html>.

use std::fs;
use std::hash::Hasher;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};

/// The tools the guided build needs.
pub struct Tools {
    profdata: PathBuf,
}

/// Whether the guided build can run here: `Err` says why not, with the fix.
pub fn tools() -> std::result::Result<Tools, String> {
    if let Ok(v) = std::env::var("PODKIT_PGO") {
        if matches!(v.as_str(), "0" | "off" | "no" | "false") {
            return Err(format!("PODKIT_PGO={v}"));
        }
    }
    let profdata = find_profdata().ok_or_else(|| {
        "no llvm-profdata (apt-get install llvm-19, or rustup component add llvm-tools)".to_string()
    })?;
    for (tool, package) in [
        ("wrk", "wrk"),
        ("h2load", "nghttp2-client"),
        ("openssl", "openssl"),
        ("taskset", "util-linux"),
    ] {
        if !on_path(tool) {
            return Err(format!(
                "no {tool} to train it with (apt-get install {package})"
            ));
        }
    }
    Ok(Tools { profdata })
}

/// llvm-profdata: rustup's llvm-tools first (the compiler's own LLVM), then Debian's
/// versioned ones: the compiler's LLVM version, then older ones, newest first (an older one
/// reads the compiler's raw counts as long as their format version is one it knows, and
/// writes an indexed profile the compiler reads; a newer one may write a format the compiler
/// cannot read), then newer ones. A mismatch fails the merge or the build, loudly.
fn find_profdata() -> Option<PathBuf> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    // "LLVM version: 22.1.2"
    let llvm: u32 = Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("LLVM version: ").map(str::to_string))
        })
        .and_then(|v| v.split('.').next().and_then(|m| m.parse().ok()))
        .unwrap_or(19);
    let mut candidates = Vec::new();
    if let Some(sysroot) = sysroot.filter(|s| !s.is_empty()) {
        candidates.push(
            Path::new(&sysroot)
                .join("lib/rustlib")
                .join(crate::dist::target_triple())
                .join("bin/llvm-profdata"),
        );
    }
    for version in (14..=llvm).rev().chain(llvm + 1..=llvm + 4) {
        candidates.push(PathBuf::from(format!("llvm-profdata-{version}")));
    }
    candidates.push(PathBuf::from("llvm-profdata"));
    candidates.into_iter().find(|c| cmd::available(c))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file()
        })
    })
}

/// Builds podproxy profile-guided and returns the binary and its profile. `rustflags` are the
/// static flags of every shipped binary; `demo_app` is a built demo-app, the training upstream.
pub fn build_podproxy(
    tools: &Tools,
    target_dir: &Path,
    triple: &str,
    rustflags: &str,
    demo_app: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let root = target_dir.join("pgo");
    let raw = root.join("raw");
    fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;

    let gen_dir = root.join("gen");
    // Where the counts go is set when the trainee runs (LLVM_PROFILE_FILE); this path only
    // turns the instrumentation on.
    cargo_build(
        &gen_dir,
        triple,
        rustflags,
        &format!("-Cprofile-generate={}", raw.display()),
    )?;
    let instrumented = gen_dir.join(triple).join("release").join("podproxy");
    let key = file_key(&instrumented)?;
    let profile = root.join(format!("podproxy-{key:016x}.profdata"));
    if profile.is_file() {
        println!(
            "podproxy PGO: {} (trained on these sources already)",
            profile.display()
        );
    } else {
        let _ = fs::remove_dir_all(&raw);
        fs::create_dir_all(&raw).map_err(|e| io_error(&raw, e))?;
        train(&instrumented, demo_app, &root.join("train"), &raw)?;
        merge(&tools.profdata, &raw, &profile)?;
        // Profiles of older sources are no use: only this one is kept.
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path != profile && name.starts_with("podproxy-") && name.ends_with(".profdata") {
                    let _ = fs::remove_file(path);
                }
            }
        }
    }

    let use_dir = root.join("use");
    cargo_build(
        &use_dir,
        triple,
        rustflags,
        &format!("-Cprofile-use={}", profile.display()),
    )?;
    Ok((
        use_dir.join(triple).join("release").join("podproxy"),
        profile,
    ))
}

/// Builds podproxy into `target_dir` with the static `rustflags` and `pgo_flag`, passed as
/// CARGO_ENCODED_RUSTFLAGS (one flag per field), so that a path with a space stays one flag.
fn cargo_build(target_dir: &Path, triple: &str, rustflags: &str, pgo_flag: &str) -> Result<()> {
    let flags: Vec<&str> = rustflags
        .split_whitespace()
        .chain(std::iter::once(pgo_flag))
        .collect();
    let mut build = cmd::cargo();
    build
        .args([
            "build",
            "--release",
            "--target",
            triple,
            "-p",
            "podproxy",
            "--bin",
            "podproxy",
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
        .env_remove("RUSTFLAGS");
    cmd::run(
        &mut build,
        "read the compiler errors above; `PODKIT_PGO=off cargo xtask dist` builds podproxy \
         without profile guidance",
    )
}

/// A key for a file's contents and for the training itself (this file's text): SipHash with
/// fixed keys, so the same bytes give the same key in every run.
fn file_key(path: &Path) -> Result<u64> {
    let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
    Ok(key(&bytes))
}

fn key(binary: &[u8]) -> u64 {
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    hasher.write(binary);
    hasher.write(include_str!("pgo.rs").as_bytes());
    hasher.finish()
}

/// A process, and what it is, stopped with SIGTERM on drop (podproxy writes its counts as it
/// exits).
struct Running(Child, &'static str);

impl Running {
    fn stop(mut self) -> Result<()> {
        let result = terminate(&mut self.0, self.1);
        std::mem::forget(self);
        result
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = terminate(&mut self.0, self.1);
    }
}

fn terminate(child: &mut Child, what: &str) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            return if status.success() {
                Ok(())
            } else {
                Err(Error::new(format!(
                    "podproxy PGO: {what} ended {status} at SIGTERM"
                )))
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(Error::new(format!(
        "podproxy PGO: {what} did not stop within 30s of SIGTERM"
    )))
}

/// Starts `cmd` (its stderr into `log`) and waits until it listens on `port`; an error if it
/// exits first (quoting its stderr) or does not listen within 10 s.
fn spawn(what: &'static str, cmd: &mut Command, port: u16, log: &Path) -> Result<Running> {
    let stderr = fs::File::create(log).map_err(|e| io_error(log, e))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::new(format!("podproxy PGO: cannot start {what}: {e}")))?;
    let mut running = Running(child, what);
    let start = Instant::now();
    loop {
        // Exited (a bad flag, a port taken meanwhile): whatever listens there is not ours.
        if let Ok(Some(status)) = running.0.try_wait() {
            let said = fs::read_to_string(log).unwrap_or_default();
            return Err(Error::new(format!(
                "podproxy PGO: {what} exited ({status}) before listening on 127.0.0.1:{port}: {}",
                cmd::tail(said.trim(), 5)
            )));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(running);
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(Error::new(format!(
                "podproxy PGO: {what} does not listen on 127.0.0.1:{port} after 10s"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `N` distinct free loopback ports (each held until all are chosen).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::new(format!("podproxy PGO: no free loopback port: {e}")))?;
        *port = listener
            .local_addr()
            .map_err(|e| Error::new(format!("podproxy PGO: no free loopback port: {e}")))?
            .port();
        held.push(listener);
    }
    Ok(ports)
}

/// Runs the training workload through `podproxy` (instrumented), leaving counts in `raw`.
fn train(podproxy: &Path, demo_app: &Path, dir: &Path, raw: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    println!("podproxy PGO: training {} (about 20 s)", podproxy.display());

    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    cmd::output(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:P-256")
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
        "openssl could not make a test certificate",
    )?;
    let post = dir.join("post.lua");
    let body = "x".repeat(4096);
    fs::write(
        &post,
        format!("wrk.method = \"POST\"\nwrk.body = \"{body}\"\nwrk.headers[\"Content-Type\"] = \"text/plain\"\n"),
    )
    .map_err(|e| io_error(&post, e))?;

    let [backend_port] = free_ports()?;
    let backend = spawn(
        "demo-app backend",
        Command::new(demo_app)
            .args(["backend", "--listen"])
            .arg(format!("127.0.0.1:{backend_port}")),
        backend_port,
        &dir.join("demo-app.stderr"),
    )?;
    let upstream = format!("http://127.0.0.1:{backend_port}");
    let profile_file = raw.join("podproxy-%p.profraw");
    // Starts the instrumented podproxy (its stderr into `<n>.stderr`): its listener's base URL
    // and its admin port. `one_cpu`: pinned to one CPU, podproxy runs tokio's current-thread
    // scheduler (a sidecar's usual lot, and the bench's); unpinned on this machine, the
    // multi-thread one. Both are trained.
    let trainee = |what: &'static str, one_cpu: bool, tls: bool, extra: &[&str]| {
        let [port, admin] = free_ports()?;
        let mut c = if one_cpu {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(podproxy);
            c
        } else {
            Command::new(podproxy)
        };
        c.env("LLVM_PROFILE_FILE", &profile_file)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin")
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--route")
            .arg(format!("/={upstream}"))
            .arg("--route")
            .arg(format!("/h2c={upstream},strip,h2c"))
            .args(["--drain-delay", "0", "--log-level", "warn"])
            .args(extra);
        let running = spawn(
            what,
            &mut c,
            port,
            &dir.join(format!("podproxy-{port}.stderr")),
        )?;
        let scheme = if tls { "https" } else { "http" };
        Ok::<_, Error>((running, format!("{scheme}://127.0.0.1:{port}"), admin))
    };

    // The weights follow a sidecar's traffic: most requests HTTP/1.1 keep-alive to an
    // HTTP/1.1 app, with and without an access log; then HTTP/2, the h2c upstream, bodies,
    // answers the app refuses, the admin server, and TLS.
    let (proxy, base, _) = trainee(
        "podproxy (instrumented)",
        true,
        false,
        &["--access-log", "off"],
    )?;
    wrk(&["-c50", "-d4s"], &format!("{base}/api/items"), None, true)?;
    h2load(&format!("{base}/api/hello?name=pgo"), 1)?;
    proxy.stop()?;

    let log = dir.join("access.log").to_string_lossy().into_owned();
    let (proxy, base, admin) = trainee(
        "podproxy (instrumented, JSON access log)",
        true,
        false,
        &["--access-log", &log, "--access-log-format", "json"],
    )?;
    wrk(&["-c50", "-d3s"], &format!("{base}/api/items"), None, true)?;
    wrk(
        &["-c10", "-d1s"],
        &format!("{base}/h2c/api/items"),
        None,
        true,
    )?;
    wrk(
        &["-c10", "-d1s"],
        &format!("{base}/api/items"),
        Some(&post),
        true,
    )?;
    let refused = format!("{base}/no/such/page?q=1");
    wrk(&["-c5", "-d1s"], &refused, None, false)?;
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    wrk(&["-c2", "-d1s"], &metrics, None, true)?;
    h2load(&format!("{base}/api/hello?name=pgo"), 1)?;
    proxy.stop()?;

    // TLS: HTTP/1.1 (wrk offers no ALPN) and HTTP/2 by ALPN.
    let log = dir.join("access-tls.log").to_string_lossy().into_owned();
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let (proxy, base, _) = trainee(
        "podproxy (instrumented, TLS, all CPUs)",
        false,
        true,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--access-log",
            &log,
            "--access-log-format",
            "combined",
        ],
    )?;
    wrk(&["-c20", "-d2s"], &format!("{base}/api/items"), None, true)?;
    h2load(&format!("{base}/api/items"), 1)?;
    proxy.stop()?;
    backend.stop()?;
    // The access logs are hundreds of megabytes, and of no further use.
    let _ = fs::remove_dir_all(dir);
    Ok(())
}

/// wrk on one thread; an error unless [`wrk_succeeded`].
fn wrk(args: &[&str], url: &str, script: Option<&Path>, all_ok: bool) -> Result<()> {
    let mut c = Command::new("wrk");
    c.arg("-t1").args(args);
    if let Some(script) = script {
        c.arg("-s").arg(script);
    }
    c.arg(url);
    let out = cmd::output(
        &mut c,
        Duration::from_secs(60),
        "wrk failed; see its stderr",
    )?;
    if wrk_succeeded(&out, all_ok) {
        Ok(())
    } else {
        Err(training_failed(
            &format!("wrk {} {url}", args.join(" ")),
            &out,
        ))
    }
}

/// Whether wrk's report shows requests completed without connect errors and, with `all_ok`,
/// every answer 2xx or 3xx (training on error answers would lay out the wrong code as hot).
/// wrk reports "  12345 requests in 5.00s, 1.2MB read", and on trouble
/// "  Socket errors: connect 3, read 0, write 0, timeout 0" and "  Non-2xx or 3xx responses: 7".
fn wrk_succeeded(out: &str, all_ok: bool) -> bool {
    let requests: u64 = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    requests > 0
        && !out.contains("Socket errors: connect")
        && !(all_ok && out.contains("Non-2xx or 3xx responses"))
}

/// h2load for `seconds`: 10 connections, 10 streams each; an error unless
/// [`h2load_succeeded`].
fn h2load(url: &str, seconds: u32) -> Result<()> {
    let out = cmd::output(
        Command::new("h2load")
            .args(["-c10", "-m10", "-D"])
            .arg(seconds.to_string())
            .arg(url),
        Duration::from_secs(60),
        "h2load failed; see its stderr",
    )?;
    if h2load_succeeded(&out) {
        Ok(())
    } else {
        Err(training_failed(&format!("h2load {url}"), &out))
    }
}

/// Whether nine in ten of the requests h2load reports done succeeded (those still open when
/// its time is up may count as failed): "requests: 1000 total, 1000 started, 1000 done,
/// 1000 succeeded, 0 failed, 0 errored, 0 timeout".
fn h2load_succeeded(out: &str) -> bool {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("requests:"))
        .unwrap_or_default();
    let count = |what: &str| -> u64 {
        line.split(',')
            .find(|p| p.trim().ends_with(what))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (done, succeeded) = (count("done"), count("succeeded"));
    succeeded > 0 && succeeded * 10 >= done * 9
}

fn training_failed(command: &str, out: &str) -> Error {
    Error::new(format!(
        "podproxy PGO: training with `{command}` failed:\n{}",
        out.trim()
    ))
    .fix("PODKIT_PGO=off builds podproxy without profile guidance")
}

fn merge(profdata: &Path, raw: &Path, profile: &Path) -> Result<()> {
    let files: Vec<PathBuf> = fs::read_dir(raw)
        .map_err(|e| io_error(raw, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if files.is_empty() {
        return Err(Error::new(format!(
            "podproxy PGO: the trained podproxy wrote no counts into {}",
            raw.display()
        ))
        .fix("PODKIT_PGO=off builds podproxy without profile guidance"));
    }
    let tmp = profile.with_extension("tmp");
    cmd::output(
        Command::new(profdata)
            .arg("merge")
            .arg("-o")
            .arg(&tmp)
            .args(&files),
        Duration::from_secs(120),
        "llvm-profdata could not merge the counts: an llvm-profdata older than the compiler's \
         LLVM may not read its format (rustup component add llvm-tools gives the matching one), \
         or PODKIT_PGO=off builds podproxy without profile guidance",
    )?;
    fs::rename(&tmp, profile).map_err(|e| io_error(profile, e))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::new(format!("podproxy PGO: {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_binary_and_is_stable() {
        assert_eq!(key(b"same bytes"), key(b"same bytes"));
        assert_ne!(key(b"same bytes"), key(b"other bytes"));
    }

    #[test]
    fn wrk_reports_are_read() {
        let good = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 10 connections\n\
                    12345 requests in 1.00s, 1.2MB read\nRequests/sec:  12345.00\n";
        assert!(wrk_succeeded(good, true));
        let refused = format!("{good}  Non-2xx or 3xx responses: 12345\n");
        assert!(!wrk_succeeded(&refused, true));
        assert!(wrk_succeeded(&refused, false));
        let unreachable = "  0 requests in 1.00s, 0B read\n  Socket errors: connect 10, read 0, \
                           write 0, timeout 0\n";
        assert!(!wrk_succeeded(unreachable, false));
        let reset = format!("{good}  Socket errors: connect 2, read 0, write 0, timeout 0\n");
        assert!(!wrk_succeeded(&reset, false));
        assert!(!wrk_succeeded("", false));
    }

    #[test]
    fn h2load_reports_are_read() {
        let report = |done: u32, ok: u32| {
            format!(
                "finished in 1.00s, 1000.00 req/s, 10KB/s\nrequests: {done} total, {done} \
                 started, {done} done, {ok} succeeded, {} failed, 0 errored, 0 timeout\n",
                done - ok
            )
        };
        assert!(h2load_succeeded(&report(1000, 1000)));
        assert!(h2load_succeeded(&report(1000, 900)));
        assert!(!h2load_succeeded(&report(1000, 899)));
        assert!(!h2load_succeeded(&report(0, 0)));
        assert!(!h2load_succeeded("connect failed\n"));
    }

    #[test]
    fn pgo_off_is_honoured() {
        // Only this test sets it, and the process's other tests do not read it.
        std::env::set_var("PODKIT_PGO", "off");
        let why = tools().err();
        std::env::remove_var("PODKIT_PGO");
        assert_eq!(why.as_deref(), Some("PODKIT_PGO=off"));
    }
}
