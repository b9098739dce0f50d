//! `cargo xtask bench`: what port-monitor costs, side by side with the tools users have
//! today, as ratios against baselines measured in the same run (these machines are shared
//! and noisy: absolute numbers drift, ratios of interleaved pairs do not).
//!
//! Parts, each runnable alone (`cargo xtask bench overhead`):
//! - `overhead`: connect/close and UDP loops on loopback, with nothing, port-monitor, bcc's
//!   `tcpstates` and a bpftrace one-liner attached; and the highest failed-connect rate whose
//!   records all arrive;
//! - `aggregator`: the criterion benchmark of decoding and counting records on one core;
//! - `scrape`: scrape latency of port-monitor and `node_exporter` with 1k, 10k and 100k
//!   sockets in a namespace, port-monitor's memory, CPU and snapshot time, idle and under churn.
//!
//! Every part prints its table; `target/bench/` keeps them and the plot's data, and the plot
//! is written to `docs/benchmarks.png`.

mod aggregator;
mod overhead;
mod plot;
mod process;
mod scrape;

use std::{fmt, fs, path::Path};

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Which parts to run; all when none is named.
    #[arg(value_enum)]
    parts: Vec<Part>,
    /// Interleaved (baseline, monitored) pairs per workload and monitor.
    #[arg(long, default_value_t = 7)]
    pairs: usize,
    /// Seconds each overhead trial runs the workload.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Overhead,
    Aggregator,
    Scrape,
    /// Only draw the plot again, from the data the last runs left in `target/bench/`.
    Plot,
}

/// Where the tables and the plot's data go.
const RESULTS: &str = "target/bench";

pub fn run(options: &Options) -> Result<()> {
    setup::install(setup::Purpose::Bench)?;
    cmd::run(cmd::command("cargo").args(["build", "--release", "--package", "port-monitor"]))?;
    cmd::run(cmd::command("cargo").args(["build", "--release", "--package", "xtask", "--bins"]))?;
    fs::create_dir_all(RESULTS)?;
    let wanted = |part| options.parts.is_empty() || options.parts.contains(&part);
    let mut report = format!("machine: {}\n", machine());
    println!("{report}");
    if wanted(Part::Overhead) {
        report.push_str(&overhead::run(options.pairs, options.seconds)?);
    }
    if wanted(Part::Aggregator) {
        report.push_str(&aggregator::run()?);
    }
    if wanted(Part::Scrape) {
        report.push_str(&scrape::run()?);
    }
    if options.parts != [Part::Plot] {
        fs::write(Path::new(RESULTS).join("report.md"), &report)?;
    }
    if Path::new(RESULTS).join(overhead::DATA).exists()
        && Path::new(RESULTS).join(scrape::DATA).exists()
    {
        plot::draw()?;
    }
    println!("\n{report}");
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = cmd::output(cmd::command("uname").arg("-r")).unwrap_or_default();
    let date = cmd::output(cmd::command("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_default();
    format!("{cores} cores, kernel {}, {}", kernel.trim(), date.trim())
}

/// Minimum, median and maximum of a sample.
#[derive(Clone, Copy)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            min: sorted.first().copied().unwrap_or(f64::NAN),
            median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// Each value scaled (units).
    fn scaled(self, factor: f64) -> Self {
        Self {
            min: self.min * factor,
            median: self.median * factor,
            max: self.max * factor,
        }
    }
}

impl fmt::Display for Spread {
    /// `median (min-max)`, with the precision the caller asks for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = f.precision().unwrap_or(2);
        write!(
            f,
            "{:.precision$} ({:.precision$}-{:.precision$})",
            self.median, self.min, self.max
        )
    }
}

/// A network namespace for one measurement, with loopback up; removed when dropped.
struct Netns(String);

impl Netns {
    fn new(purpose: &str) -> Result<Self> {
        let name = format!("pm-bench-{purpose}-{}", std::process::id());
        cmd::run(cmd::command("ip").args(["netns", "add", &name]))?;
        let netns = Self(name);
        cmd::run(cmd::command("ip").args(["-n", &netns.0, "link", "set", "lo", "up"]))?;
        Ok(netns)
    }

    /// `command` to run inside the namespace.
    fn exec(&self, program: &str) -> std::process::Command {
        let mut command = cmd::command("ip");
        command.args(["netns", "exec", &self.0, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd::command("ip").args(["netns", "del", &self.0]).status();
    }
}
