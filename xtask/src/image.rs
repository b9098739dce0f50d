//! `cargo xtask image`: the container image, `FROM scratch` with one static binary, built with
//! buildah (no Docker daemon needed) and checked by running the binary from the image's root
//! filesystem.

use anyhow::{Context as _, Result, bail};

use crate::cmd;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const TAG: &str = concat!("port-monitor:", env!("CARGO_PKG_VERSION"));

/// buildah's flags for a machine without overlay support or a container runtime.
const BUILDAH: [&str; 2] = ["--storage-driver", "vfs"];

pub fn build() -> Result<()> {
    cmd::run(
        cmd::command("cargo")
            .args([
                "build",
                "--release",
                "--package",
                "port-monitor",
                "--target",
                TARGET,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    cmd::run(cmd::command("buildah").args(BUILDAH).args([
        "build",
        "--isolation",
        "chroot",
        "--file",
        "deploy/Containerfile",
        "--tag",
        TAG,
        ".",
    ]))?;
    smoke_test()
}

/// Runs `port-monitor --version` from the image's own root filesystem: the binary is there,
/// static, and runs without anything else from the image.
fn smoke_test() -> Result<()> {
    let container = cmd::output(cmd::command("buildah").args(BUILDAH).args(["from", TAG]))
        .context("buildah from")?;
    let container = container.trim().to_owned();
    let result = (|| {
        let root = cmd::output(
            cmd::command("buildah")
                .args(BUILDAH)
                .args(["mount", &container]),
        )
        .context("buildah mount")?;
        let version =
            cmd::output(cmd::command(&format!("{}/port-monitor", root.trim())).arg("--version"))
                .context("running the image's binary")?;
        if !version.contains(env!("CARGO_PKG_VERSION")) {
            bail!("the image's binary says {version:?}");
        }
        println!("image {TAG}: {}", version.trim());
        Ok(())
    })();
    let _ = cmd::run(
        cmd::command("buildah")
            .args(BUILDAH)
            .args(["rm", &container]),
    );
    result
}
