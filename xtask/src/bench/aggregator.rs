//! Records a second the aggregator absorbs on one core: the criterion benchmark in
//! `port-monitor/benches/aggregator.rs`, its throughput lines gathered into a table.

use anyhow::{Context as _, Result};

use crate::cmd;

pub fn run() -> Result<String> {
    let output = cmd::output(cmd::command("cargo").args([
        "bench",
        "--package",
        "port-monitor",
        "--bench",
        "aggregator",
    ]))
    .context("cargo bench --package port-monitor --bench aggregator failed")?;
    let mut report = String::from(
        "\n## Aggregator throughput (criterion, one core)\n\n| benchmark | records/s: low | estimate | high |\n|---|---|---|---|\n",
    );
    // criterion prints `GROUP/NAME` (on the `time:` line, or alone on the line before when
    // it is long), then `thrpt: [LOW UNIT EST UNIT HIGH UNIT]`.
    let mut name = "";
    for line in output.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if !line.starts_with(char::is_whitespace) && first.contains('/') {
            name = first;
        } else if let Some(rest) = line.trim().strip_prefix("thrpt:") {
            let values: Vec<&str> = rest
                .trim_matches(|c: char| c.is_whitespace() || c == '[' || c == ']')
                .split_whitespace()
                .collect();
            if let [low, low_unit, estimate, estimate_unit, high, high_unit] = values[..] {
                let row = format!(
                    "| {name} | {low} {low_unit} | {estimate} {estimate_unit} | {high} {high_unit} |\n"
                );
                print!("{row}");
                report.push_str(&row);
            }
        }
    }
    Ok(report)
}
