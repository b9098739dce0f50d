//! `conntrack`: what one read of a conntrack table costs port-monitor at 10k, 100k and the
//! most entries this machine allows, beside `conntrack -L | wc -l` on the same table. The
//! measurement is `port-monitor/benches/conntrack.rs` (it calls the daemon's own read); this
//! runs it and keeps its table.

use anyhow::{Context as _, Result};

use crate::cmd;

pub fn run() -> Result<String> {
    let table = cmd::output(cmd::command("cargo").args([
        "bench",
        "--package",
        "port-monitor",
        "--bench",
        "conntrack",
    ]))
    .context("the conntrack benchmark (port-monitor/benches/conntrack.rs)")?;
    Ok(format!("\n## Reading a conntrack table\n\n{table}"))
}
