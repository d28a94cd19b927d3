//! podkit's build, image, test and demo tasks, run as `cargo xtask <command>`
//! (alias in .cargo/config.toml). std only, so it builds in seconds.

mod bench;
mod bench_rotation;
mod cmd;
mod demo;
mod dist;
mod elf;
mod error;
mod images;
mod kind;
mod layers;
mod packages;
mod pgo;
mod podman;

use std::process::ExitCode;

use error::{Error, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  dist                     release-build the binaries as static executables into target/dist/
  images                   dist, then one image per binary (localhost/podkit/<bin>:dev) and
                           localhost/podkit/busybox:dev; each smoke-tested
  test [--require-pods]    fmt, clippy, unit + integration tests, then the pod tests
                           (skipped without podman, unless --require-pods)
  demo                     play k8s-examples/fullstack-pod with podman: requests, shipped logs
  demo init-wait           play k8s-examples/init-wait and show waitfor holding the app
  kind-demo                a kind cluster with separate-pods and native-sidecars (needs kind, kubectl)
  bench <target>           end-to-end benchmarks; targets: waitfor, logship (rotation: its rotation row alone), podproxy";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::from(e.code)
        }
    }
}

fn dispatch(args: &[&str]) -> Result<()> {
    use packages::{ensure, BENCH, PGO, PODS, TESTS};
    // What each command needs from the system, installed or named first (see packages.rs).
    match args {
        ["dist"] => ensure("dist", &[PGO])?,
        ["images" | "demo" | "kind-demo", ..] => ensure(args[0], &[PODS, PGO])?,
        ["test", ..] => ensure("test", &[TESTS, PODS, PGO])?,
        ["bench", "waitfor" | "logship" | "rotation" | "podproxy"] => {
            ensure("bench", &[BENCH, PODS, PGO])?
        }
        _ => {}
    }
    match args {
        ["dist"] => dist::dist().map(|_| ()),
        ["images"] => images::images(),
        ["test"] => layers::test(false),
        ["test", "--require-pods"] => layers::test(true),
        ["demo"] => demo::demo(),
        ["demo", "init-wait"] => demo::demo_init_wait(),
        ["kind-demo"] => kind::kind_demo(),
        ["bench", "waitfor"] => bench::bench_waitfor(),
        ["bench", "logship"] => bench::bench_logship(),
        ["bench", "rotation"] => bench::bench_logship_rotation(),
        ["bench", "podproxy"] => bench::bench_podproxy(),
        ["bench", other] => Err(Error::new(format!("unknown bench target `{other}`"))
            .fix("known targets: waitfor, logship (rotation: its rotation row alone), podproxy")),
        ["bench"] => Err(Error::new("`bench` needs a target").fix("cargo xtask bench waitfor")),
        [] | ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(Error::new(format!("unknown arguments: {}", args.join(" "))).fix(USAGE)),
    }
}
