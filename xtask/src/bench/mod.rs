//! `cargo xtask bench`: what port-monitor costs, side by side with the tools users have
//! today, as ratios against baselines measured in the same run (these machines are shared
//! and noisy: absolute numbers drift, ratios of interleaved pairs do not).
//!
//! Parts, each runnable alone (`cargo xtask bench overhead`):
//! - `overhead`: connect/close and UDP loops on loopback, with nothing, port-monitor (its
//!   defaults, and every collector through syscall tracepoints), bcc's `tcpstates` and a
//!   bpftrace one-liner attached; and the highest failed-connect rate whose records all
//!   arrive;
//! - `syscalls`: a loop of the cheapest syscalls, pinned to one core, with nothing and with
//!   port-monitor in each way of seeing `bind()` errno and autobind failures (fexit, syscall
//!   tracepoints, neither): what every process on the node pays for port-monitor;
//! - `aggregator`: the criterion benchmark of decoding and counting records on one core;
//! - `scrape`: scrape latency of port-monitor and `node_exporter` with 1k, 10k and 100k
//!   sockets in a namespace, port-monitor's memory, CPU and snapshot time, idle and under churn;
//! - `conntrack`: one read of a conntrack table at 10k, 100k and the most entries allowed,
//!   beside `conntrack -L`;
//! - `series`: the series of a scrape with 10 and 110 idle pod-like namespaces, at each
//!   `--metrics.detail`;
//! - `scale`: one snapshot against `ss -Htan` at 100k and 1M sockets in a namespace, with
//!   its profile; the daemon's memory, CPU and scrape latency there; a connect/close loop's
//!   slowdown in a namespace holding 100k sockets.
//!
//! `overhead` and `syscalls` then run again in each kernel of [`crate::vm::MATRIX`], under
//! qemu (`guests.rs`): this project's machines refuse fexit, those kernels do not.
//!
//! Every part prints its table; `target/bench/` keeps them (`<part>.md`, the latest run of
//! each, joined in `report.md`) and the plot's data, and the plot is written to
//! `docs/benchmarks.png`.

mod aggregator;
mod conntrack;
mod guests;
mod overhead;
mod pairs;
mod plot;
mod process;
mod scale;
mod scrape;
mod series;
mod syscalls;

use std::{fmt, fs, path::Path};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use pairs::Trials;

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Which parts to run; all when none is named.
    #[arg(value_enum)]
    parts: Vec<Part>,
    /// Interleaved (baseline, monitored) pairs per workload and monitor. Each part has its
    /// own default, smaller in the emulated guests; given, it applies to the host and the
    /// guests alike.
    #[arg(long)]
    pairs: Option<usize>,
    /// Seconds each trial of `overhead` and `syscalls` runs its loop (part defaults as for
    /// --pairs).
    #[arg(long)]
    seconds: Option<f64>,
    /// Measure on this machine's kernel only, as each guest does: no setup, no build, no
    /// guests, no report file; `overhead` measures port-monitor's defaults alone (bcc and
    /// bpftrace compile against the host's kernel) and leaves out the failure records.
    /// Only `overhead` and `syscalls` run.
    #[arg(long)]
    here: bool,
}

impl Options {
    /// The trials a part runs: the flags where given, else the part's own defaults for the
    /// host or for a guest.
    fn trials(&self, host: Trials, guest: Trials) -> Trials {
        let defaults = if self.here { guest } else { host };
        Trials {
            pairs: self.pairs.unwrap_or(defaults.pairs),
            seconds: self.seconds.unwrap_or(defaults.seconds),
        }
    }

    /// The flags a guest gets: those given here, so that the guests run as long as asked.
    fn for_guests(&self) -> Vec<String> {
        let mut arguments = Vec::new();
        if let Some(pairs) = self.pairs {
            arguments.push(format!("--pairs={pairs}"));
        }
        if let Some(seconds) = self.seconds {
            arguments.push(format!("--seconds={seconds}"));
        }
        arguments
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Overhead,
    Syscalls,
    Aggregator,
    Scrape,
    Conntrack,
    Series,
    Scale,
    /// Only draw the plot again, from the data the last runs left in `target/bench/`.
    Plot,
}

/// Where the tables and the plot's data go.
const RESULTS: &str = "target/bench";

pub fn run(options: &Options) -> Result<()> {
    if options.here {
        return here(options);
    }
    setup::install(setup::Purpose::Bench)?;
    cmd::run(cmd::command("cargo").args(["build", "--release", "--package", "port-monitor"]))?;
    cmd::run(cmd::command("cargo").args(["build", "--release", "--package", "xtask", "--bins"]))?;
    fs::create_dir_all(RESULTS)?;
    let wanted = |part| options.parts.is_empty() || options.parts.contains(&part);
    let machine = format!("machine: {}\n", machine());
    println!("{machine}");
    for part in SECTIONS {
        if !wanted(part) {
            continue;
        }
        let section = match part {
            Part::Overhead => overhead::run(
                options.trials(overhead::HOST, overhead::GUEST),
                &options.for_guests(),
            )?,
            Part::Syscalls => syscalls::run(
                options.trials(syscalls::HOST, syscalls::GUEST),
                &options.for_guests(),
            )?,
            Part::Aggregator => aggregator::run()?,
            Part::Scrape => scrape::run()?,
            Part::Conntrack => conntrack::run()?,
            Part::Series => series::run()?,
            Part::Scale => scale::run()?,
            Part::Plot => continue,
        };
        fs::write(section_file(part), format!("{machine}{section}"))?;
    }
    // Each part's latest section, in the parts' order: parts run one at a time still make
    // one report, and running a part again replaces its section.
    let mut report = String::new();
    for part in SECTIONS {
        if let Ok(section) = fs::read_to_string(section_file(part)) {
            report.push_str(&section);
            report.push('\n');
        }
    }
    fs::write(Path::new(RESULTS).join("report.md"), &report)?;
    if Path::new(RESULTS).join(overhead::DATA).exists()
        && Path::new(RESULTS).join(scrape::DATA).exists()
    {
        plot::draw()?;
    }
    println!("\n{report}");
    Ok(())
}

/// The parts that write a section of the report, in the report's order.
const SECTIONS: [Part; 7] = [
    Part::Overhead,
    Part::Syscalls,
    Part::Aggregator,
    Part::Scrape,
    Part::Conntrack,
    Part::Series,
    Part::Scale,
];

/// Where a part's latest section is kept, with the machine it ran on.
fn section_file(part: Part) -> std::path::PathBuf {
    let name = part
        .to_possible_value()
        .map_or_else(|| "part".to_owned(), |value| value.get_name().to_owned());
    Path::new(RESULTS).join(format!("{name}.md"))
}

/// `--here`, in a guest: the parts that measure the kernel, each row printed for the host.
fn here(options: &Options) -> Result<()> {
    let wanted = |part| options.parts.is_empty() || options.parts.contains(&part);
    if options
        .parts
        .iter()
        .any(|part| !matches!(part, Part::Overhead | Part::Syscalls))
    {
        bail!("--here runs only the overhead and syscalls parts");
    }
    println!("machine: {}", machine());
    if wanted(Part::Overhead) {
        overhead::here(options.trials(overhead::HOST, overhead::GUEST))?;
    }
    if wanted(Part::Syscalls) {
        syscalls::here(options.trials(syscalls::HOST, syscalls::GUEST))?;
    }
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let date = cmd::output(cmd::command("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_default();
    format!("{cores} cores, kernel {}, {}", kernel(), date.trim())
}

/// Whether this runs in a guest of `cargo xtask vm`, which sets the variable.
fn in_guest() -> bool {
    std::env::var_os("XTASK_VM_KERNEL").is_some()
}

/// The running kernel's release, and whether it is this machine's or an emulated guest's
/// (whose absolute rates are ~10x lower and not comparable with the host's).
fn kernel() -> String {
    let release = cmd::output(cmd::command("uname").arg("-r")).unwrap_or_default();
    let place = if in_guest() {
        "qemu TCG, instruction clock"
    } else {
        "host"
    };
    format!("{} ({place})", release.trim())
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

impl Spread {
    /// `+median% (+min% to +max%)`, for slowdowns, which may be negative.
    fn signed_percent(self) -> String {
        format!(
            "{:+.2}% ({:+.2}% to {:+.2}%)",
            self.median, self.min, self.max
        )
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

    /// Starts `sockets <argument>` (`xtask/src/bin/sockets.rs`) in the namespace and waits
    /// for its `ready LISTEN ESTABLISHED TIME_WAIT` line. It holds its sockets until its
    /// standard input closes; one that fails is stopped.
    fn hold_sockets(&self, argument: &str) -> Result<(std::process::Child, [usize; 3])> {
        use std::io::BufRead as _;
        let mut child = self
            .exec("target/release/sockets")
            .arg(argument)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the socket generator (target/release/sockets)")?;
        let mut ready = String::new();
        let stdout = child.stdout.take().context("generator stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut ready)?;
        let kinds: Vec<usize> = ready
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        let Ok(kinds) = <[usize; 3]>::try_from(kinds) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the socket generator failed: {ready:?}");
        };
        Ok((child, kinds))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd::command("ip").args(["netns", "del", &self.0]).status();
    }
}
