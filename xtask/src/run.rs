//! `cargo xtask run`: install what is missing, build the exporter, run it in the foreground.

use anyhow::Result;
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Build without optimizations (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
    /// Arguments passed to port-monitor, after `--` (e.g. `-- --web.listen-address=:9999`).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(options: &Options) -> Result<()> {
    setup::install(setup::Purpose::Run)?;
    let mut build = cmd::command("cargo");
    build.args(["build", "--package", "port-monitor"]);
    let profile = if options.debug {
        "debug"
    } else {
        build.arg("--release");
        "release"
    };
    cmd::run(&mut build)?;
    cmd::run(cmd::command(&format!("target/{profile}/port-monitor")).args(&options.args))
}
