//! Builds the kernel programs (`port-monitor-ebpf`) with the nightly toolchain for the BPF
//! target and places the object in `OUT_DIR`, where `src/kernel` includes it.

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("port-monitor lives inside the workspace")?;
    let ebpf_dir = root.join("port-monitor-ebpf");
    let common_dir = root.join("port-monitor-common");
    // Cargo ignores a build-dependency on a bin-only crate: without these lines an edit in
    // the kernel programs or in the shared types would leave a stale object behind.
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir.to_str().context("workspace path is not UTF-8")?;
    println!("cargo:rustc-env=PORT_MONITOR_REVISION={}", revision(root));
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "port-monitor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// The git commit being built, for `port_monitor_build_info`; "unknown" outside a checkout.
fn revision(root: &std::path::Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map_or_else(
            || "unknown".to_owned(),
            |revision| revision.trim().to_owned(),
        )
}
