//! Every manifest in k8s-examples/ is checked against the JSON schema of a pinned Kubernetes
//! version (kubernetes-validate from PyPI, strict: unknown fields are errors) and against the
//! Pod Security Standards "restricted" profile plus podkit's rules (read-only root filesystem,
//! requests and limits, probes on the admin endpoints, the Downward API env logship reads),
//! by tests/manifests/validate.py. The checker itself is tested on manifests that break each
//! rule.
//!
//! The validator lives in a virtualenv under target/ (created on first use: it needs python3
//! with venv and PyPI); `PODKIT_VALIDATE_PYTHON` points at another interpreter that has
//! kubernetes-validate.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use podkit_tests::{example_dir, workspace_root};

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.32.0";
/// The validator, pinned (its schemas are bundled, so validation needs no network).
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("PODKIT_VALIDATE_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = workspace_root().join("target").join("venv-kubernetes-validate");
        let python = venv.join("bin").join("python");
        let ready = venv.join(".installed");
        if std::fs::read_to_string(&ready).ok().as_deref() != Some(VALIDATOR) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 is needed to validate the manifests");
            assert!(
                made.success(),
                "python3 -m venv {} failed: install python3-venv (Debian: apt-get install python3-venv)",
                venv.display()
            );
            let installed = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", VALIDATOR])
                .status()
                .expect("pip");
            assert!(
                installed.success(),
                "pip install {VALIDATOR} failed: the manifest tests need PyPI once"
            );
            std::fs::write(&ready, VALIDATOR).expect("mark the venv");
        }
        python
    })
}

/// Runs the validator on `paths`: (exit code, stdout lines, stderr).
fn validate(paths: &[PathBuf]) -> (Option<i32>, Vec<String>, String) {
    let out = Command::new(python())
        .arg(
            workspace_root()
                .join("tests")
                .join("manifests")
                .join("validate.py"),
        )
        .arg(KUBERNETES)
        .args(paths)
        .output()
        .expect("run validate.py");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_example_manifest_passes_the_schema_and_the_restricted_profile() {
    let examples = example_dir("fullstack-pod")
        .parent()
        .expect("k8s-examples")
        .to_path_buf();
    let (code, problems, summary) = validate(&[examples]);
    assert_eq!(code, Some(0), "{}\n{summary}", problems.join("\n"));
    // Every example folder is in there (a folder that stopped parsing would shrink this).
    let files: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(files >= 20, "{summary}");
    for required in [
        "init-wait",
        "log-sidecar",
        "proxy-sidecar",
        "fullstack-pod",
        "separate-pods",
        "native-sidecars",
        "job-with-sidecar",
    ] {
        assert!(
            example_dir(required).is_dir(),
            "k8s-examples/{required} is missing"
        );
    }
}

#[test]
fn the_checks_catch_what_they_promise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(example_dir("fullstack-pod").join("pod.yaml"))
        .expect("fullstack-pod");
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "privileged",
            "        allowPrivilegeEscalation: false\n",
            "        allowPrivilegeEscalation: true\n",
            "allowPrivilegeEscalation must be false",
        ),
        (
            "writable-root",
            "        readOnlyRootFilesystem: true\n",
            "        readOnlyRootFilesystem: false\n",
            "readOnlyRootFilesystem must be true",
        ),
        (
            "unknown-field",
            "  automountServiceAccountToken: false\n",
            "  automountServiceAccountToken: false\n  hostNetwrk: true\n",
            "schema 1.32.0",
        ),
        (
            "no-limits",
            "        limits: { cpu: 100m, memory: 32Mi }\n",
            "",
            "resources.limits.cpu is missing",
        ),
        (
            "probe-off-admin",
            "        httpGet: { path: /ready, port: 9901 }\n",
            "        httpGet: { path: /, port: 8080 }\n",
            "not on podproxy's admin endpoints",
        ),
        (
            "no-downward-api",
            "              fieldPath: metadata.name\n",
            "              fieldPath: metadata.uid\n",
            "env POD_NAME must come from the Downward API field metadata.name",
        ),
        (
            "logship-gates-the-pod",
            "      livenessProbe:\n        httpGet: { path: /healthz, port: 9090 }\n",
            "      readinessProbe:\n        httpGet: { path: /readyz, port: 9090 }\n      livenessProbe:\n        httpGet: { path: /healthz, port: 9090 }\n",
            "remove logship's readinessProbe",
        ),
    ];
    for (name, from, to, expected) in cases {
        assert!(
            good.contains(from),
            "{name}: the example no longer has {from:?}"
        );
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, good.replacen(from, to, 1)).expect("write");
        let (code, problems, summary) = validate(&[path]);
        assert_eq!(code, Some(1), "{name}: {summary}");
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{name}: expected {expected:?} in:\n{}",
            problems.join("\n")
        );
    }
}
