//! `cargo xtask test [--require-pods]`: every test layer in order, then a summary.
//!
//! Layers: fmt, clippy, tests (unit + integration: `cargo test --workspace`), pods
//! (build the images, then play k8s-examples/ with podman: the `#[ignore]`d tests
//! in tests/tests/pods.rs). A failed layer does not stop the next one, so one run
//! shows everything that is wrong. Without podman the pod layer is skipped with a
//! banner, or fails under `--require-pods` (CI). Exit status: nonzero if any layer
//! failed.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};
use crate::images;
use crate::podman::{self, Engine};

enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

struct Layer {
    name: &'static str,
    outcome: Outcome,
    took: Duration,
}

pub fn test(require_pods: bool) -> Result<()> {
    let mut layers = Vec::new();
    let mut layer = |name: &'static str, f: &mut dyn FnMut() -> Outcome| {
        println!("\n==================== layer: {name} ====================");
        let started = Instant::now();
        let outcome = f();
        if let Outcome::Failed(why) = &outcome {
            eprintln!("\nlayer {name} FAILED: {why}");
        }
        layers.push(Layer {
            name,
            outcome,
            took: started.elapsed(),
        });
    };

    layer("fmt", &mut || {
        cargo(
            &["fmt", "--all", "--", "--check"],
            "run `cargo fmt --all`; if rustfmt is missing: `rustup component add rustfmt`",
        )
    });
    layer("clippy", &mut || {
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            "fix the warnings above; if clippy is missing: `rustup component add clippy`",
        )
    });
    layer("tests", &mut || {
        cargo(
            &["test", "--workspace"],
            "see the failing tests above; rerun one with `cargo test -p <crate> <name>`",
        )
    });
    layer("pods", &mut || pods(require_pods));

    println!("\n==================== test summary ====================");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for l in &layers {
        let (word, note) = match &l.outcome {
            Outcome::Passed => {
                passed += 1;
                ("passed", String::new())
            }
            Outcome::Failed(why) => {
                failed += 1;
                ("FAILED", first_line(why))
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                ("SKIPPED", why.clone())
            }
        };
        println!(
            "  {:<8} {:<8} {:>7.1}s  {note}",
            l.name,
            word,
            l.took.as_secs_f64()
        );
    }
    println!("layers: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        Err(Error::new(format!("{failed} test layer(s) failed"))
            .fix("see each layer's output above"))
    } else {
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn cargo(args: &[&str], fix: &str) -> Outcome {
    outcome(cmd::run(cmd::cargo().args(args), fix))
}

fn outcome(result: Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn pods(require_pods: bool) -> Outcome {
    if Engine::podman().is_err() {
        let rule = "!".repeat(72);
        eprintln!("\n{rule}");
        eprintln!("!!  podman is not installed: the POD LAYER IS NOT RUN.");
        eprintln!("!!  The examples in k8s-examples/ are untested on this machine.");
        eprintln!("!!  To run it: {}", podman::INSTALL_PODMAN);
        if require_pods {
            eprintln!("!!  --require-pods was given: this is a FAILURE.");
        }
        eprintln!("{rule}\n");
        return if require_pods {
            Outcome::Failed(format!(
                "podman is required (--require-pods) but not installed; {}",
                podman::INSTALL_PODMAN
            ))
        } else {
            Outcome::Skipped(format!("podman not installed; {}", podman::INSTALL_PODMAN))
        };
    }
    if let Err(e) = images::images() {
        return Outcome::Failed(format!("building the images failed: {e}"));
    }
    let mut c: Command = cmd::cargo();
    c.args([
        "test",
        "-p",
        "podkit-tests",
        "--test",
        "pods",
        "--",
        "--ignored",
        "--test-threads=1",
    ])
    .env("CONTAINERS_CONF", podman::containers_conf());
    outcome(cmd::run(
        &mut c,
        "see the failing pod test above; `podman ps -a --pod` shows leftovers, \
         `podman pod rm -f <name>` removes them",
    ))
}
