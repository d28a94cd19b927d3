//! The container engine: finding podman (or docker for plain image builds), and the
//! handful of podman invocations xtask makes: build, run, image size, `kube play`,
//! `kube down`, logs and inspect. Every podman command gets CONTAINERS_CONF (see
//! [`containers_conf`]); every failure says which command failed and what to try.
//! tests/src/lib.rs keeps a small copy of this for the pod tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{self, Captured};
use crate::error::{Error, Result};

/// How long an image build or a query may take before we call it hung.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

pub const INSTALL_PODMAN: &str = "install podman (Debian/Ubuntu: `apt-get install podman runc`; \
                                  Fedora: `dnf install podman`)";

/// `localhost/podkit/<name>:dev`: the name is fully qualified so podman never asks
/// a registry for it, and so kind/containerd see the same name after `kind load`.
pub fn image_name(name: &str) -> String {
    format!("localhost/podkit/{name}:dev")
}

/// The containers.conf podman runs with: `$CONTAINERS_CONF` if the caller set it
/// (for a laptop whose podman needs its own), else `images/containers.conf`
/// (runc, lowered ulimits, cgroupfs: what works in CI sandboxes).
pub fn containers_conf() -> PathBuf {
    match std::env::var_os("CONTAINERS_CONF") {
        Some(conf) if !conf.is_empty() => PathBuf::from(conf),
        _ => cmd::workspace_root().join("images").join("containers.conf"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Podman,
    Docker,
}

pub struct Engine {
    kind: Kind,
}

impl Engine {
    /// podman, required: `kube play` exists only there.
    pub fn podman() -> Result<Engine> {
        if cmd::available("podman") {
            Ok(Engine { kind: Kind::Podman })
        } else {
            Err(
                Error::new("podman is not installed (or `podman --version` fails)")
                    .fix(INSTALL_PODMAN),
            )
        }
    }

    /// podman if present, else a working docker: enough to build and run images.
    pub fn detect() -> Result<Engine> {
        if cmd::available("podman") {
            return Ok(Engine { kind: Kind::Podman });
        }
        let docker_works = Command::new("docker")
            .arg("info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if docker_works {
            return Ok(Engine { kind: Kind::Docker });
        }
        Err(Error::new("no container engine: podman is not installed and docker is absent or its daemon is not reachable")
            .fix(INSTALL_PODMAN))
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Podman => "podman",
            Kind::Docker => "docker",
        }
    }

    /// A command for this engine, with podman's CONTAINERS_CONF set.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.name());
        if self.kind == Kind::Podman {
            c.env("CONTAINERS_CONF", containers_conf());
        }
        c.current_dir(cmd::workspace_root());
        c
    }

    /// Builds `containerfile` (optionally one `target` of it) with `context`.
    /// RUN steps get no network: our images are FROM scratch and fetch nothing.
    pub fn build(
        &self,
        containerfile: &Path,
        context: &Path,
        target: Option<&str>,
        build_args: &[(&str, &str)],
        tag: &str,
    ) -> Result<()> {
        let mut c = self.command();
        c.arg("build").arg("--network=none");
        if self.kind == Kind::Podman {
            c.arg("--pull=never");
        }
        c.arg("-f").arg(containerfile).args(["-t", tag]);
        if let Some(target) = target {
            c.args(["--target", target]);
        }
        for (k, v) in build_args {
            c.arg("--build-arg").arg(format!("{k}={v}"));
        }
        c.arg(context);
        println!("$ {}", cmd::display(&c));
        let out = cmd::capture(&mut c, BUILD_TIMEOUT)?;
        if out.status.success() {
            return Ok(());
        }
        print!("{}{}", out.stdout, out.stderr);
        Err(
            Error::new(format!("building image {tag} failed ({})", out.status)).fix(
                self.hint(&out.stderr).unwrap_or_else(|| {
                    format!(
                        "see the build output above; rerun it alone with: {}",
                        cmd::display(&c)
                    )
                }),
            ),
        )
    }

    /// `run --rm --network none IMAGE ARGS...`, returning stdout.
    pub fn run(&self, image: &str, args: &[&str]) -> Result<String> {
        let mut c = self.command();
        c.args(["run", "--rm", "--network", "none", image])
            .args(args);
        let out = cmd::capture(&mut c, QUERY_TIMEOUT)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::new(format!(
                "`{}` failed ({})\n  output: {}",
                cmd::display(&c),
                out.status,
                cmd::tail(format!("{}{}", out.stdout, out.stderr).trim(), 20)
            ))
            .fix(self.hint(&out.stderr).unwrap_or_else(|| {
                "run it by hand to see why; the image may be stale: `cargo xtask images`".into()
            })))
        }
    }

    /// The image's size in bytes, as the engine reports it.
    pub fn image_size(&self, image: &str) -> Result<u64> {
        let mut c = self.command();
        c.args(["image", "inspect", "--format", "{{.Size}}", image]);
        let out = cmd::output(
            &mut c,
            QUERY_TIMEOUT,
            "build the images: `cargo xtask images`",
        )?;
        out.trim().parse().map_err(|_| {
            Error::new(format!(
                "`{}` printed {out:?}, not a size",
                cmd::display(&c)
            ))
        })
    }

    /// `podman kube play --replace --network NETWORK [--configmap CM] YAML`.
    /// podman runs the init containers inside this call, so it returns once they
    /// finished (or one failed). The caller judges the outcome.
    pub fn kube_play(
        &self,
        yaml: &Path,
        network: &str,
        configmap: Option<&Path>,
        timeout: Duration,
    ) -> Result<(String, Captured)> {
        let mut c = self.command();
        c.args(["kube", "play", "--replace", "--network", network]);
        if let Some(cm) = configmap {
            c.arg("--configmap").arg(cm);
        }
        c.arg(yaml);
        let line = cmd::display(&c);
        println!("$ {line}");
        let out = cmd::capture(&mut c, timeout)?;
        Ok((line, out))
    }

    /// `podman kube down YAML`: stops and removes the pods the YAML describes.
    pub fn kube_down(&self, yaml: &Path) -> Result<()> {
        let mut c = self.command();
        c.args(["kube", "down"]).arg(yaml);
        cmd::output(
            &mut c,
            QUERY_TIMEOUT,
            "remove the pods by hand: `podman pod rm -f <name>`",
        )
        .map(|_| ())
    }

    /// `podman logs -t CONTAINER`: both streams, each line prefixed with its time.
    pub fn logs(&self, container: &str) -> Result<String> {
        let mut c = self.command();
        c.args(["logs", "-t", container]);
        let out = cmd::capture(&mut c, QUERY_TIMEOUT)?;
        Ok(format!("{}{}", out.stdout, out.stderr))
    }

    /// `podman inspect --format TEMPLATE CONTAINER`, trimmed.
    pub fn inspect(&self, container: &str, template: &str) -> Result<String> {
        let mut c = self.command();
        c.args(["inspect", "--format", template, container]);
        cmd::output(
            &mut c,
            QUERY_TIMEOUT,
            "is the pod still there? `podman ps -a --pod`",
        )
        .map(|s| s.trim().to_string())
    }

    /// What we know about common podman failures in sandboxes and CI.
    fn hint(&self, stderr: &str) -> Option<String> {
        if self.kind != Kind::Podman {
            return None;
        }
        let conf = containers_conf();
        if stderr.contains("setrlimit") || stderr.contains("error setting rlimit") {
            Some(format!(
                "podman tried to raise nofile/nproc above this shell's hard limit; {} lowers \
                 default_ulimits: make sure CONTAINERS_CONF points at it",
                conf.display()
            ))
        } else if stderr.contains("crun") || stderr.contains("cgroup") {
            Some(format!(
                "crun fails on hybrid cgroup hosts; {} selects runc with cgroupfs: make sure \
                 CONTAINERS_CONF points at it and runc is installed (`apt-get install runc`)",
                conf.display()
            ))
        } else if stderr.contains("image not known") || stderr.contains("pull") {
            Some("the image is not in local storage: `cargo xtask images`".into())
        } else {
            None
        }
    }
}

/// A played YAML that is torn down (`kube down`) when this guard drops, also on
/// an early return or a panic.
pub struct Played<'a> {
    engine: &'a Engine,
    yaml: PathBuf,
}

impl<'a> Played<'a> {
    /// Arms the guard before `kube play`, so a half-started pod is removed too.
    pub fn guard(engine: &'a Engine, yaml: &Path) -> Self {
        Played {
            engine,
            yaml: yaml.to_path_buf(),
        }
    }
}

impl Drop for Played<'_> {
    fn drop(&mut self) {
        println!("$ podman kube down {}", self.yaml.display());
        if let Err(e) = self.engine.kube_down(&self.yaml) {
            eprintln!("warning: teardown failed: {e}");
        }
    }
}
