//! What `--version` says about the build: the git commit, the target, and whether the build was
//! profile-guided (xtask dist passes `-Cprofile-use` in the flags every crate is built with).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Without optional locks, so looking never rewrites the index (which would make the next
    // build run this again).
    let dirty = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])
    .is_some();
    println!(
        "cargo:rustc-env=PODKIT_COMMIT={commit}{}",
        if dirty { "-modified" } else { "" }
    );
    println!(
        "cargo:rustc-env=PODKIT_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let build = if flags.contains("profile-use") {
        "profile-guided"
    } else {
        "not profile-guided"
    };
    println!("cargo:rustc-env=PODKIT_BUILD={build}");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    // A new commit or a checkout changes HEAD or the ref it names.
    // (Only files that exist: a missing one would make every build run this again.)
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let mut watch = vec![format!("{dir}/HEAD"), format!("{dir}/index")];
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(format!("{dir}/{head}"));
        }
        watch.push(format!("{dir}/packed-refs"));
        for path in watch.iter().filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
