//! The system packages each xtask command needs: one list, in one place (`.ci/run` has none of
//! its own: it only calls xtask). Before a command runs, the packages it needs are checked with
//! `dpkg-query`. As root on Debian or Ubuntu, what is missing is installed, and the `apt-get`
//! line is printed. Otherwise that line is printed for the person to run, and the command exits
//! 2. Packages marked optional (the profile-guided build's tools) are installed when they can
//! be; without them the build is plain, as `cargo xtask dist` says.

use std::process::Command;

use crate::error::{Error, Result};

/// A package and what it is for, shown when it is missing.
pub struct Package {
    pub name: &'static str,
    pub why: &'static str,
    pub optional: bool,
}

const fn needed(name: &'static str, why: &'static str) -> Package {
    Package {
        name,
        why,
        optional: false,
    }
}

const fn optional(name: &'static str, why: &'static str) -> Package {
    Package {
        name,
        why,
        optional: true,
    }
}

/// `cargo xtask test`: the real peers the integration tests start.
pub const TESTS: &[Package] = &[
    needed("postgresql", "waitfor's postgres probe tests"),
    needed("redis-server", "waitfor's redis probe tests"),
    needed("mariadb-server", "waitfor's mysql probe tests"),
    needed("dnsmasq", "waitfor's DNS probe tests"),
    needed("rsyslog", "logship's syslog sink tests"),
    needed("rsyslog-gnutls", "logship's syslog+tls sink test"),
    needed("nginx", "podproxy's tests (a real upstream)"),
    needed("wrk", "podproxy's load tests"),
    needed(
        "busybox-static",
        "podproxy's tests and the example shell image",
    ),
    needed("python3", "the manifest checks"),
    needed(
        "python3-venv",
        "the manifest checks (kubernetes-validate in a venv)",
    ),
    needed("file", "the static-binary checks"),
    needed("ca-certificates", "TLS"),
    needed("bsdutils", "`script`: a terminal for the NO_COLOR test"),
];

/// The images, the pod tests and the demo: podman and what it runs with here.
pub const PODS: &[Package] = &[
    needed("podman", "images and `podman kube play`"),
    needed(
        "runc",
        "the OCI runtime podman uses here (see images/containers.conf)",
    ),
    needed("catatonit", "podman's pod infra image"),
    needed("busybox-static", "the example shell image"),
];

/// `cargo xtask dist`'s profile-guided podproxy (without them the build is plain).
pub const PGO: &[Package] = &[
    optional("llvm-19", "llvm-profdata, to merge the training's counts"),
    optional("nghttp2-client", "h2load, to train HTTP/2"),
    optional("openssl", "a certificate for the TLS training"),
    optional("wrk", "the HTTP/1.1 training"),
];

/// The benchmarks' peers and tools.
pub const BENCH: &[Package] = &[
    needed("wait-for-it", "waitfor's peer"),
    needed("hyperfine", "repeated timings"),
    needed("time", "GNU time, for peak RSS"),
    needed("rsyslog", "logship's peer"),
    needed("nginx", "podproxy's peer"),
    needed("haproxy", "podproxy's peer"),
    needed("wrk", "the load"),
];

fn installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The packages of `lists` that are not installed, each once, in order.
fn missing<'a>(lists: &[&'a [Package]]) -> Vec<&'a Package> {
    let mut out: Vec<&Package> = Vec::new();
    for p in lists.iter().flat_map(|l| l.iter()) {
        if !out.iter().any(|o| o.name == p.name) && !installed(p.name) {
            out.push(p);
        }
    }
    out
}

fn apt_line(packages: &[&Package]) -> String {
    let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
    format!("apt-get install -y {}", names.join(" "))
}

fn apt(args: &[&str]) -> bool {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure what `command` needs is installed (see the module's notes).
pub fn ensure(command: &str, lists: &[&[Package]]) -> Result<()> {
    ensure_as(command, lists, is_root())
}

fn ensure_as(command: &str, lists: &[&[Package]], root: bool) -> Result<()> {
    if !std::path::Path::new("/usr/bin/dpkg-query").exists() {
        let names: Vec<&str> = lists
            .iter()
            .flat_map(|l| l.iter())
            .filter(|p| !p.optional)
            .map(|p| p.name)
            .collect();
        println!(
            "cargo xtask {command}: not a Debian or Ubuntu system, so its packages are not checked; it needs (Debian names): {}",
            names.join(" ")
        );
        return Ok(());
    }
    let missing = missing(lists);
    if missing.is_empty() {
        return Ok(());
    }
    let (required, optional): (Vec<&Package>, Vec<&Package>) =
        missing.into_iter().partition(|p| !p.optional);
    for p in required.iter().chain(&optional) {
        println!(
            "cargo xtask {command} needs {}{}: {}",
            p.name,
            if p.optional { " (optional)" } else { "" },
            p.why
        );
    }
    if !root {
        if required.is_empty() {
            println!(
                "without them the build is plain; to have them: sudo {}",
                apt_line(&optional)
            );
            return Ok(());
        }
        return Err(Error::new(format!(
            "cargo xtask {command}: system packages are missing"
        ))
        .fix(format!("sudo {}", apt_line(&required)))
        .exit_code(2));
    }
    println!("\ninstalling what `cargo xtask {command}` needs:\n  apt-get update");
    if !apt(&["update", "-qq"]) {
        return Err(Error::new("apt-get update failed (see above)")
            .fix("check the machine's package sources, then run it again"));
    }
    if !required.is_empty() {
        println!("  {}", apt_line(&required));
        let mut args = vec!["install", "-y", "-qq", "-o", "Dpkg::Use-Pty=0"];
        args.extend(required.iter().map(|p| p.name));
        if !apt(&args) {
            return Err(
                Error::new(format!("{} failed (see above)", apt_line(&required)))
                    .fix("check the machine's package sources, then run it again")
                    .exit_code(2),
            );
        }
    }
    if !optional.is_empty() {
        println!("  {}", apt_line(&optional));
        let mut args = vec!["install", "-y", "-qq", "-o", "Dpkg::Use-Pty=0"];
        args.extend(optional.iter().map(|p| p.name));
        if !apt(&args) {
            println!("the optional packages could not be installed: podproxy is built plain");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_names_each_package_once_and_says_why() {
        for list in [TESTS, PODS, PGO, BENCH] {
            for (i, p) in list.iter().enumerate() {
                assert!(!p.why.is_empty(), "{} has no reason", p.name);
                assert!(
                    !list[i + 1..].iter().any(|q| q.name == p.name),
                    "{} twice",
                    p.name
                );
            }
        }
        assert!(PGO.iter().all(|p| p.optional));
        assert!(TESTS.iter().chain(PODS).chain(BENCH).all(|p| !p.optional));
    }

    #[test]
    fn without_root_a_missing_package_is_named_with_the_line_to_run_and_exit_2() {
        const LIST: &[Package] = &[
            needed("bash", "present on every Debian"),
            needed("podkit-no-such-package", "missing"),
        ];
        assert!(installed("bash"));
        assert!(!installed("podkit-no-such-package"));
        let e = ensure_as("test", &[LIST], false).expect_err("missing");
        assert_eq!(e.code, 2);
        assert_eq!(
            e.fix.as_deref(),
            Some("sudo apt-get install -y podkit-no-such-package")
        );
        // Only optional ones missing: not an error, the build is plain.
        const OPTIONAL: &[Package] = &[optional("podkit-no-such-package", "missing")];
        assert!(ensure_as("dist", &[OPTIONAL], false).is_ok());
    }

    #[test]
    fn the_apt_line_names_the_missing_packages() {
        let line = apt_line(&[&PODS[0], &PODS[1]]);
        assert_eq!(line, "apt-get install -y podman runc");
    }
}
