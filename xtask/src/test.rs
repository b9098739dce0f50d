//! `cargo xtask test`: install what is missing and run every check CI runs.

use anyhow::Result;
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Skip formatting and lint checks (tests only).
    #[arg(long)]
    no_lint: bool,
}

pub fn run(options: &Options) -> Result<()> {
    setup::install(setup::Purpose::Test)?;
    if !options.no_lint {
        cmd::run(cmd::command("cargo").args(["fmt", "--all", "--", "--check"]))?;
        cmd::run(cmd::command("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "--deny",
            "warnings",
        ]))?;
    }
    // Unit tests: no root needed, run in parallel.
    cmd::run(cmd::command("cargo").args(["test", "--workspace"]))?;
    // Privileged tests load real eBPF programs and share kernel state: one at a time.
    cmd::run(cmd::command("cargo").args([
        "test",
        "--package",
        "port-monitor",
        "--test",
        "privileged",
        "--",
        "--test-threads=1",
    ]))
}
