//! `cargo xtask images`: the static binaries (via dist) in one FROM-scratch image
//! each, `localhost/podkit/<bin>:dev`, plus `localhost/podkit/busybox:dev`, the
//! shell image of the examples. Guarantees: every image it reports was
//! smoke-tested by running it (`--version` for ours).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::{self, human_size};
use crate::dist;
use crate::elf;
use crate::error::{Error, Result};
use crate::podman::{image_name, Engine};

/// The version the images are labelled with: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const INSTALL_BUSYBOX: &str =
    "install a static busybox (Debian/Ubuntu: `apt-get install busybox-static`), \
     or point PODKIT_BUSYBOX at one";

pub fn images() -> Result<()> {
    let binaries = dist::dist()?;
    let engine = Engine::detect()?;
    let root = cmd::workspace_root();
    println!("\n== building images with {} ==", engine.name());

    let busybox = build_busybox(&engine, &root)?;
    let mut built = vec![busybox];
    for bin in &binaries {
        let image = image_name(bin.name);
        engine.build(
            &root.join("Dockerfile"),
            &root,
            Some(bin.name),
            &[("VERSION", VERSION)],
            &image,
        )?;
        let printed = engine.run(&image, &["--version"])?;
        // "NAME VERSION (commit C, TARGET, [not ]profile-guided)".
        let expected = format!("{} {VERSION} (commit ", bin.name);
        if !printed.trim().starts_with(&expected) {
            return Err(Error::new(format!(
                "smoke test of {image}: `--version` printed {:?}, expected {expected:?}",
                printed.trim()
            ))
            .fix(format!(
                "{} must print its name and the workspace version",
                bin.name
            )));
        }
        println!("smoke test: {image} --version -> {}", printed.trim());
        built.push(image);
    }

    println!("\nimages ({}):", engine.name());
    for image in &built {
        let size = engine.image_size(image)?;
        println!("  {image:<36} {:>10}", human_size(size));
    }
    Ok(())
}

/// `localhost/podkit/busybox:dev` from images/busybox/Containerfile, with the
/// host's static busybox copied into a context under target/images/busybox.
fn build_busybox(engine: &Engine, root: &Path) -> Result<String> {
    let source = find_busybox()?;
    let context = root.join("target").join("images").join("busybox");
    fs::create_dir_all(&context)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", context.display())))?;
    for (from, name) in [
        (source.clone(), "busybox"),
        (root.join("images").join("passwd"), "passwd"),
        (root.join("images").join("group"), "group"),
    ] {
        fs::copy(&from, context.join(name)).map_err(|e| {
            Error::new(format!(
                "cannot copy {} into {}: {e}",
                from.display(),
                context.display()
            ))
        })?;
    }
    let image = image_name("busybox");
    engine.build(
        &root.join("images").join("busybox").join("Containerfile"),
        &context,
        None,
        &[],
        &image,
    )?;
    let printed = engine.run(&image, &["sh", "-c", "id -u && echo ok"])?;
    if printed.split_whitespace().collect::<Vec<_>>() != ["65532", "ok"] {
        return Err(Error::new(format!(
            "smoke test of {image}: expected it to run `sh` as 65532, it printed {printed:?}"
        )));
    }
    println!("smoke test: {image} sh -c 'id -u' -> 65532");
    Ok(image)
}

/// `$PODKIT_BUSYBOX`, /bin/busybox or /usr/bin/busybox, and it must be static: it
/// runs FROM scratch, with no libc beside it.
fn find_busybox() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("PODKIT_BUSYBOX") {
        Some(p) if !p.is_empty() => vec![PathBuf::from(p)],
        _ => vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
    };
    let path = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::new(format!(
                "no busybox at {}: the example images need one",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
            .fix(INSTALL_BUSYBOX)
        })?
        .clone();
    if let Some(loader) = elf::interpreter(&path)? {
        return Err(Error::new(format!(
            "{} is dynamically linked (it needs {loader}) and cannot run FROM scratch",
            path.display()
        ))
        .fix(INSTALL_BUSYBOX));
    }
    Ok(path)
}
