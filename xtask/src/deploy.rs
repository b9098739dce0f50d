//! The Kubernetes manifests (`deploy/kubernetes`, a kustomize base): rendered with
//! `kubectl kustomize`, validated offline against the Kubernetes API schemas with
//! `kubernetes-validate --strict`, and linted with checkov (every finding fixed, or skipped
//! with its reason in the manifest and docs/kubernetes.md).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{cmd, setup};

/// The Kubernetes versions the manifests are validated against: the oldest supported by
/// common managed offerings, and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

pub fn check() -> Result<()> {
    let rendered = cmd::output(cmd::command("kubectl").args(["kustomize", "deploy/kubernetes"]))
        .context("kubectl kustomize deploy/kubernetes failed")?;
    let path = PathBuf::from("target/deploy/port-monitor.yaml");
    std::fs::create_dir_all("target/deploy")?;
    std::fs::write(&path, rendered)?;
    // The custom resources (PodMonitor, PrometheusRule) have no schema in the tool: it warns
    // about them and validates every built-in kind strictly.
    for version in KUBERNETES_VERSIONS {
        cmd::run(
            cmd::command(&setup::python_tool("kubernetes-validate"))
                .args(["--strict", "--kubernetes-version", version])
                .arg(&path),
        )?;
    }
    cmd::run(cmd::command(&setup::python_tool("checkov")).args([
        "--quiet",
        "--compact",
        // Offline: no guideline download from the vendor's service.
        "--skip-download",
        "--framework",
        "kubernetes",
        "--directory",
        "deploy/kubernetes",
    ]))
}
