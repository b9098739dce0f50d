//! `cargo xtask fuzz`: runs every fuzz target of `port-monitor/fuzz` for a bounded time.
//!
//! Each target keeps its corpus in `port-monitor/fuzz/corpus/<target>` on this machine, so a
//! run starts where the last one stopped; versioned seeds in `seeds/<target>` are read too.
//! A crash stops the run and leaves its input in `artifacts/<target>`.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::{cmd, setup};

const FUZZ_DIR: &str = "port-monitor/fuzz";

/// Every target, as named in `port-monitor/fuzz/Cargo.toml`.
const TARGETS: [&str; 5] = [
    "record_decoder",
    "config_file",
    "web_config",
    "sysctls",
    "cgroup_paths",
];

#[derive(Args)]
pub struct Options {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Run only this target.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
}

pub fn run(options: &Options) -> Result<()> {
    setup::install(setup::Purpose::Run)?;
    setup::install_cargo_fuzz()?;
    match &options.target {
        Some(target) => run_target(target, options.seconds),
        None => run_all(options.seconds),
    }
}

/// Runs every target for `seconds` each.
///
/// # Errors
/// When a target fails to build or finds a crash.
pub fn run_all(seconds: u32) -> Result<()> {
    TARGETS
        .iter()
        .try_for_each(|target| run_target(target, seconds))
}

fn run_target(target: &str, seconds: u32) -> Result<()> {
    let corpus = Path::new(FUZZ_DIR).join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let seeds = Path::new(FUZZ_DIR).join("seeds").join(target);
    let mut command = cmd::command("rustup");
    command
        .args([
            "run",
            "nightly",
            "cargo",
            "fuzz",
            "run",
            "--fuzz-dir",
            FUZZ_DIR,
            target,
        ])
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    // -max_total_time bounds the run; -timeout flags an input that hangs a parser.
    command.args(["--", &format!("-max_total_time={seconds}"), "-timeout=10"]);
    cmd::run(&mut command)
}
