//! `cargo xtask bench`: what port-monitor costs, as ratios against a baseline measured in the
//! same run (these machines are shared and noisy: absolute numbers drift, ratios of
//! interleaved pairs do not).
//!
//! Overhead on the workload: a connect/accept/close loop on loopback (`loadgen`), each trial
//! in a fresh network namespace so that every trial starts from the same socket state,
//! alternating "no monitor" and "monitor attached" trials, reporting the median of the pair
//! ratios with min and max. Peers are measured the same way.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct Options {
    /// Interleaved (baseline, monitored) pairs per workload and monitor.
    #[arg(long, default_value_t = 7)]
    pairs: usize,
    /// Seconds each trial runs the workload.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// A workload: the loadgen's close mode, and what it stands for.
const WORKLOADS: [(&str, &str); 2] = [
    (
        "fin",
        "connect/accept/close, client closes first (TIME_WAIT builds up)",
    ),
    (
        "rst",
        "connect/accept/abort (SO_LINGER 0): short cycles, hooks weigh most",
    ),
];

/// Something attached to the kernel while the workload runs.
#[derive(Clone, Copy)]
enum Monitor {
    Full,
    /// port-monitor without the UDP autobind collector, whose syscall-exit tracepoints every
    /// `connect()` pays for: what that collector costs.
    WithoutAutobind,
    /// A bpftrace one-liner counting the same tracepoint: the cheapest thing a user could
    /// write by hand, and a check that the measurement sees a hook's cost at all.
    Bpftrace,
}

impl Monitor {
    const fn name(self) -> &'static str {
        match self {
            Self::Full => "port-monitor",
            Self::WithoutAutobind => "port-monitor --no-collector.autobind",
            Self::Bpftrace => "bpftrace (count inet_sock_set_state)",
        }
    }
}

pub fn run(options: &Options) -> Result<()> {
    setup::install(setup::Purpose::Bench)?;
    cmd::run(cmd::command("cargo").args(["build", "--release", "--package", "port-monitor"]))?;
    cmd::run(cmd::command("cargo").args([
        "build",
        "--release",
        "--package",
        "xtask",
        "--bin",
        "loadgen",
    ]))?;
    println!("machine: {}", machine());
    let mut report = String::from(
        "| workload | monitor | baseline cycles/s (median) | slowdown median | min | max |\n|---|---|---|---|---|---|\n",
    );
    for (mode, description) in WORKLOADS {
        println!("workload {mode}: {description}");
        for monitor in [Monitor::Full, Monitor::WithoutAutobind, Monitor::Bpftrace] {
            let (baselines, slowdowns) = measure(monitor, mode, options)?;
            let line = format!(
                "| {mode} | {} | {:.0} | {:+.2}% | {:+.2}% | {:+.2}% |\n",
                monitor.name(),
                median(&baselines),
                median(&slowdowns),
                min(&slowdowns),
                max(&slowdowns),
            );
            print!("{line}");
            report.push_str(&line);
        }
    }
    println!("\n{report}");
    Ok(())
}

/// Interleaved pairs: baseline rates and slowdowns in percent.
fn measure(monitor: Monitor, mode: &str, options: &Options) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut baselines = Vec::new();
    let mut slowdowns = Vec::new();
    for pair in 0..options.pairs {
        let baseline = trial(mode, options.seconds)?;
        let running = start(monitor)?;
        let monitored = trial(mode, options.seconds);
        stop(running)?;
        let monitored = monitored?;
        let slowdown = (1.0 - monitored / baseline) * 100.0;
        println!(
            "  {} pair {pair}: {baseline:.0} -> {monitored:.0} cycles/s ({slowdown:+.2}%)",
            monitor.name()
        );
        baselines.push(baseline);
        slowdowns.push(slowdown);
    }
    Ok((baselines, slowdowns))
}

/// One run of the workload in a namespace made for it; cycles per second.
fn trial(mode: &str, seconds: f64) -> Result<f64> {
    let netns = format!("pm-bench-{}", std::process::id());
    cmd::run(cmd::command("ip").args(["netns", "add", &netns]))?;
    let result = (|| {
        cmd::run(cmd::command("ip").args(["-n", &netns, "link", "set", "lo", "up"]))?;
        let output = cmd::output(
            cmd::command("ip")
                .args(["netns", "exec", &netns, "target/release/loadgen"])
                .arg(seconds.to_string())
                .arg(mode),
        )
        .context("loadgen failed")?;
        output.trim().parse::<f64>().context("loadgen output")
    })();
    cmd::run(cmd::command("ip").args(["netns", "del", &netns]))?;
    result
}

fn start(monitor: Monitor) -> Result<Child> {
    match monitor {
        Monitor::Full | Monitor::WithoutAutobind => {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut command = Command::new("target/release/port-monitor");
            if matches!(monitor, Monitor::WithoutAutobind) {
                command.arg("--no-collector.autobind");
            }
            let child = command
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting port-monitor")?;
            wait_ready(port)?;
            Ok(child)
        }
        Monitor::Bpftrace => {
            let mut child = Command::new("bpftrace")
                .args([
                    "-e",
                    "tracepoint:sock:inet_sock_set_state { @[args->newstate] = count(); }",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace")?;
            // bpftrace prints "Attaching 1 probe..." once the probe is in place.
            let stdout = child.stdout.take().context("bpftrace stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if !line.contains("Attaching") {
                bail!("bpftrace did not attach: {line}");
            }
            Ok(child)
        }
    }
}

fn stop(mut child: Child) -> Result<()> {
    cmd::run(cmd::command("kill").args(["-INT", &child.id().to_string()]))?;
    child.wait()?;
    Ok(())
}

/// Waits for port-monitor's readiness endpoint (programs attached, first snapshot taken).
fn wait_ready(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port-monitor was not ready within 30 s")
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = cmd::output(cmd::command("uname").arg("-r")).unwrap_or_default();
    format!("{cores} cores, kernel {}", kernel.trim())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
