//! `cargo xtask dist`: release-build every shipped binary as a static executable
//! and put it in `target/dist/<bin>`, where the Dockerfile copies it from.
//! Guarantees: every file in target/dist passed the static check (no PT_INTERP).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::{self, human_size};
use crate::elf;
use crate::error::{Error, Result};
use crate::pgo;

/// The binaries we ship, one image each, with the cargo profile each is built with. Each is
/// the binary of the package of the same name, and has a build target of the same name in the
/// Dockerfile. waitfor runs once per Pod start, so it is built for size (`release-small`,
/// opt-level "z"); the long-running ones are built for speed.
pub const BINARIES: &[(&str, &str)] = &[
    ("waitfor", "release-small"),
    ("logship", "release"),
    ("podproxy", "release"),
    ("demo-app", "release-small"),
];

/// Linker flags for every shipped binary: static glibc (a static-pie, so ASLR still applies),
/// with its relative relocations packed (DT_RELR, glibc >= 2.36, binutils >= 2.38), which
/// removes most of the 250+ KiB `.rela.dyn` table a static-pie otherwise carries.
pub const STATIC_RUSTFLAGS: &str =
    "-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs";

/// One binary in target/dist.
pub struct DistBinary {
    pub name: &'static str,
    pub path: PathBuf,
    pub size: u64,
    /// How it was built, when that is worth saying (podproxy: profile-guided or not, and why).
    pub build: Option<String>,
}

/// The glibc target for this machine's architecture. glibc rather than musl
/// because it needs no extra toolchain; `+crt-static` makes it a static-pie.
pub fn target_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// `<root>/target/dist`: the Dockerfile's build context expects it there.
pub fn dist_dir() -> PathBuf {
    cmd::workspace_root().join("target").join("dist")
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR` (relative to the current
/// directory, as cargo reads it; [`cmd::cargo`] passes it on made absolute, since the cargo
/// it starts runs in the workspace root) or `<root>/target`.
fn cargo_target_dir() -> PathBuf {
    cmd::target_dir_from_env().unwrap_or_else(|| cmd::workspace_root().join("target"))
}

pub fn dist() -> Result<Vec<DistBinary>> {
    let triple = target_triple();
    let rustflags = static_rustflags();
    // podproxy is built profile-guided when this machine can train it (see crate::pgo).
    let pgo_tools = pgo::tools();
    let guided = |name: &str| name == "podproxy" && pgo_tools.is_ok();
    let mut profiles: Vec<&str> = BINARIES.iter().map(|(_, p)| *p).collect();
    profiles.sort_unstable();
    profiles.dedup();
    for profile in profiles {
        let mut build = cmd::cargo();
        build.args(["build", "--profile", profile, "--target", &triple, "--bins"]);
        let names: Vec<&str> = BINARIES
            .iter()
            .filter(|(n, p)| *p == profile && !guided(n))
            .map(|(n, _)| *n)
            .collect();
        if names.is_empty() {
            continue;
        }
        for bin in &names {
            build.args(["-p", bin]);
        }
        build
            .env("RUSTFLAGS", &rustflags)
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd::run(
            &mut build,
            &format!(
                "read the compiler errors above; the same build without the static flags is \
                 `cargo build --profile {profile} -p {}`. If the target is missing: `rustup target add {triple}`",
                names.join(" -p ")
            ),
        )?;
    }

    let dist = dist_dir();
    fs::create_dir_all(&dist)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", dist.display())))?;

    let podproxy = match &pgo_tools {
        Ok(tools) => {
            let demo_app = binary_path(&triple, "demo-app")?;
            Some(pgo::build_podproxy(
                tools,
                &cargo_target_dir(),
                &triple,
                &rustflags,
                &demo_app,
            )?)
        }
        Err(why) => {
            println!("podproxy: plain release build, not profile-guided: {why}");
            None
        }
    };

    let mut built = Vec::new();
    for &(name, profile) in BINARIES {
        let (from, build) = match (name, &podproxy) {
            ("podproxy", Some((binary, pgo_profile))) => (
                binary.clone(),
                Some(format!("profile-guided ({})", pgo_profile.display())),
            ),
            ("podproxy", _) => (
                cargo_target_dir().join(&triple).join(profile).join(name),
                Some(format!(
                    "not profile-guided: {}",
                    pgo_tools.as_ref().err().map_or("", String::as_str)
                )),
            ),
            _ => (
                cargo_target_dir().join(&triple).join(profile).join(name),
                None,
            ),
        };
        let to = dist.join(name);
        copy(&from, &to)?;
        if let Some(loader) = elf::interpreter(&to)? {
            return Err(Error::new(format!(
                "{} is dynamically linked (it asks for {loader}); images are FROM scratch and \
                 need a static binary",
                to.display()
            ))
            .fix(
                "make sure nothing overrides RUSTFLAGS for this build (a `[target.*] rustflags` \
                 or `[build] rustflags` in a .cargo/config.toml, or CARGO_TARGET_*_RUSTFLAGS)",
            ));
        }
        let size = fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
        built.push(DistBinary {
            name,
            path: to,
            size,
            build,
        });
    }

    println!("\nstatic binaries:");
    for b in &built {
        println!(
            "  {:<10} {:>10}  static  {}{}",
            b.name,
            human_size(b.size),
            b.path.display(),
            b.build
                .as_deref()
                .map(|how| format!("  ({how})"))
                .unwrap_or_default()
        );
    }
    Ok(built)
}

/// Where the plain build of shipped binary `name` is.
fn binary_path(triple: &str, name: &str) -> Result<PathBuf> {
    let profile = BINARIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .ok_or_else(|| Error::new(format!("{name} is not a shipped binary")))?;
    Ok(cargo_target_dir().join(triple).join(profile).join(name))
}

/// RUSTFLAGS with [`STATIC_RUSTFLAGS`] added. With --target, RUSTFLAGS reaches only the target
/// crates, not build scripts or proc macros, which must stay dynamic; CARGO_ENCODED_RUSTFLAGS
/// would override it, so callers remove it.
fn static_rustflags() -> String {
    let rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if rustflags.contains("crt-static") {
        rustflags
    } else {
        format!("{rustflags} {STATIC_RUSTFLAGS}").trim().to_string()
    }
}

/// Builds `package`'s example `name` as the shipped binaries are built (release, static, same
/// target directory, so their dependencies are built once) and returns its path.
pub fn example(package: &str, name: &str) -> Result<PathBuf> {
    let triple = target_triple();
    let mut build = cmd::cargo();
    build
        .args([
            "build",
            "--release",
            "--target",
            &triple,
            "-p",
            package,
            "--example",
            name,
        ])
        .env("RUSTFLAGS", static_rustflags())
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd::run(
        &mut build,
        &format!("read the compiler errors above (`cargo build -p {package} --example {name}`)"),
    )?;
    Ok(cargo_target_dir()
        .join(&triple)
        .join("release")
        .join("examples")
        .join(name))
}

/// Copies through a temporary name and renames, so target/dist never holds a
/// half-written binary (and a running copy of the old one is not overwritten).
fn copy(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp)
        .and_then(|_| fs::rename(&tmp, to))
        .map_err(|e| {
            Error::new(format!(
                "cannot copy {} to {}: {e}",
                from.display(),
                to.display()
            ))
            .fix("the release build above should have produced it; check CARGO_TARGET_DIR")
        })?;
    Ok(())
}
