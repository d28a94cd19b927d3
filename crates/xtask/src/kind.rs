//! `cargo xtask kind-demo`: the examples on a real Kubernetes, in a local kind cluster.
//!
//! Creates the cluster `podkit-demo` (unless it exists), builds the images and loads them as
//! image archives (`kind load image-archive`, which works with kind's docker and podman
//! providers alike), applies `separate-pods` and `native-sidecars` (the latter needs
//! Kubernetes >= 1.29, which current kind node images are), waits for the rollouts, then
//! port-forwards to the frontend Service and the native-sidecar Pod and fetches a page through
//! each. The cluster is left running for exploring; the last lines say how to delete it.
//!
//! It needs kind and kubectl, which this project's CI machine does not have (and no registry
//! to pull kind's node image from), so it is not run there; every step prints its command.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};
use crate::images;
use crate::podman::{image_name, Engine};

const CLUSTER: &str = "podkit-demo";
const IMAGES: [&str; 5] = ["waitfor", "logship", "podproxy", "demo-app", "busybox"];
const STEP: Duration = Duration::from_secs(300);

pub fn kind_demo() -> Result<()> {
    for (tool, fix) in [
        (
            "kind",
            "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
        ),
        (
            "kubectl",
            "install kubectl: https://kubernetes.io/docs/tasks/tools/",
        ),
    ] {
        if !cmd::available(tool) {
            return Err(Error::new(format!("{tool} is not installed")).fix(fix));
        }
    }
    let engine = Engine::detect()?;
    images::images()?;

    let clusters = cmd::output(
        Command::new("kind").args(["get", "clusters"]),
        STEP,
        "check that kind can reach its container engine (`kind get clusters`)",
    )?;
    if !clusters.lines().any(|c| c.trim() == CLUSTER) {
        step(
            Command::new("kind").args(["create", "cluster", "--name", CLUSTER, "--wait", "120s"]),
        )?;
    }
    let context = format!("kind-{CLUSTER}");

    let archives = cmd::workspace_root().join("target").join("kind");
    std::fs::create_dir_all(&archives)
        .map_err(|e| Error::new(format!("{}: {e}", archives.display())))?;
    for name in IMAGES {
        let archive = archives.join(format!("{name}.tar"));
        let _ = std::fs::remove_file(&archive);
        let mut save = engine.command();
        save.args(["save", "-o"])
            .arg(&archive)
            .arg(image_name(name));
        step(&mut save)?;
        step(
            Command::new("kind")
                .args(["load", "image-archive", "--name", CLUSTER])
                .arg(&archive),
        )?;
    }

    let version = cmd::output(
        Command::new("kubectl").args(["--context", &context, "version", "-o", "json"]),
        STEP,
        "check the cluster: `kubectl cluster-info --context kind-podkit-demo`",
    )?;
    let minor = server_minor(&version).unwrap_or(0);
    let examples = cmd::workspace_root().join("k8s-examples");
    apply(&context, &examples.join("separate-pods"))?;
    let native = minor >= 29;
    if native {
        apply(&context, &examples.join("native-sidecars"))?;
    } else {
        println!(
            "Kubernetes 1.{minor}: native sidecars need 1.29 or later; native-sidecars skipped"
        );
    }

    for deployment in ["backend", "frontend"] {
        step(Command::new("kubectl").args([
            "--context",
            &context,
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=300s",
        ]))?;
    }
    if native {
        step(Command::new("kubectl").args([
            "--context",
            &context,
            "wait",
            "--for=condition=Ready",
            "pod/native-sidecars",
            "--timeout=300s",
        ]))?;
    }

    let mut targets = vec![("service/frontend", 18080u16, 80u16)];
    if native {
        targets.push(("pod/native-sidecars", 18081, 8080));
    }
    for (target, local, remote) in targets {
        let forward = PortForward::start(&context, target, local, remote)?;
        let page = http_get(local, "/")?;
        println!("\nGET / through {target} (kubectl port-forward {local}:{remote}):\n{page}");
        drop(forward);
    }
    step(Command::new("kubectl").args([
        "--context",
        &context,
        "logs",
        "deployment/frontend",
        "-c",
        "logship",
        "--tail=5",
    ]))?;
    println!(
        "\nThe cluster stays up for exploring (`kubectl --context {context} get pods`).\n\
         Delete it with: kind delete cluster --name {CLUSTER}"
    );
    Ok(())
}

/// Runs a command, printing it and its output; fails with its stderr.
fn step(c: &mut Command) -> Result<()> {
    println!("$ {}", cmd::display(c));
    let out = cmd::capture(c, STEP)?;
    print!("{}", out.stdout);
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "`{}` failed ({})\n  stderr: {}",
            cmd::display(c),
            out.status,
            cmd::tail(out.stderr.trim(), 20)
        )))
    }
}

fn apply(context: &str, dir: &Path) -> Result<()> {
    step(
        Command::new("kubectl")
            .args(["--context", context, "apply", "-k"])
            .arg(dir),
    )
}

/// The server's minor version from `kubectl version -o json` ("minor": "30" or "30+").
fn server_minor(json: &str) -> Option<u32> {
    let server = &json[json.find("\"serverVersion\"")?..];
    let key = "\"minor\": \"";
    let start = server.find(key)? + key.len();
    let digits: String = server[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `kubectl port-forward`, stopped on drop.
struct PortForward(Child);

impl PortForward {
    fn start(context: &str, target: &str, local: u16, remote: u16) -> Result<PortForward> {
        let child = Command::new("kubectl")
            .args(["--context", context, "port-forward", target])
            .arg(format!("{local}:{remote}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::new(format!("kubectl port-forward {target}: {e}")))?;
        let forward = PortForward(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", local)).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(Error::new(format!(
                    "kubectl port-forward {target} {local}:{remote} never listened"
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(forward)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET on 127.0.0.1:`port`; the body.
fn http_get(port: u16, path: &str) -> Result<String> {
    let err = |e: std::io::Error| Error::new(format!("GET 127.0.0.1:{port}{path}: {e}"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(err)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(err)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, b)| b.to_string()))
}

#[cfg(test)]
mod tests {
    use super::server_minor;

    #[test]
    fn the_server_minor_version_is_read() {
        let json = r#"{"clientVersion": {"minor": "31"}, "serverVersion": {"major": "1", "minor": "30+", "gitVersion": "v1.30.0"}}"#;
        assert_eq!(server_minor(json), Some(30));
        assert_eq!(server_minor("{}"), None);
    }
}
