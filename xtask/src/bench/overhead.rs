//! Overhead on the workload: `loadgen` loops on loopback, each trial in a fresh network
//! namespace so that every trial starts from the same socket state, alternating "nothing
//! attached" and "monitor attached" trials, reporting the median of the pair ratios with min
//! and max. Then the failed-connect rate whose records all reach port-monitor.

use std::{fmt::Write as _, fs, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    Netns, RESULTS, Spread,
    process::{Monitor, PortMonitor, metric},
};

/// The plot's data: one line per (workload, monitor).
pub const DATA: &str = "overhead.dat";

/// A workload: the loadgen's mode, and what it stands for.
const WORKLOADS: [(&str, &str); 3] = [
    (
        "fin",
        "TCP connect/accept/close, client closes first (TIME_WAIT builds up)",
    ),
    (
        "rst",
        "TCP connect/accept/abort (SO_LINGER 0): short cycles, hooks weigh most",
    ),
    ("udp", "UDP socket, connect (autobind), one datagram, close"),
];

pub fn run(pairs: usize, seconds: f64) -> Result<String> {
    let mut report = String::from(
        "\n## Overhead on the workload\n\n| workload | monitor | baseline cycles/s (median) | slowdown median | min | max |\n|---|---|---|---|---|---|\n",
    );
    // Grouped by monitor, groups apart by two blank lines: gnuplot's `index` is one monitor.
    let mut data = vec![String::new(); Monitor::ALL.len()];
    for (mode, description) in WORKLOADS {
        println!("workload {mode}: {description}");
        for (index, monitor) in Monitor::ALL.into_iter().enumerate() {
            let (baselines, slowdowns) = measure(monitor, mode, pairs, seconds)?;
            let baseline = Spread::of(&baselines).median;
            let slowdown = Spread::of(&slowdowns);
            let line = format!(
                "| {mode} | {} | {baseline:.0} | {:+.2}% | {:+.2}% | {:+.2}% |\n",
                monitor.name(),
                slowdown.median,
                slowdown.min,
                slowdown.max,
            );
            print!("{line}");
            report.push_str(&line);
            writeln!(
                data[index],
                "{mode} {index} {baseline:.0} {:.3} {:.3} {:.3}",
                slowdown.median, slowdown.min, slowdown.max
            )?;
        }
    }
    fs::write(
        Path::new(RESULTS).join(DATA),
        format!(
            "# workload monitor baseline_per_s slowdown_median min max\n{}",
            data.join("\n\n")
        ),
    )?;
    report.push_str(&failure_rate()?);
    Ok(report)
}

/// Interleaved pairs: baseline rates and slowdowns in percent.
fn measure(
    monitor: Monitor,
    mode: &str,
    pairs: usize,
    seconds: f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut baselines = Vec::new();
    let mut slowdowns = Vec::new();
    for pair in 0..pairs {
        let baseline = trial(mode, seconds, 1)?.0;
        let running = monitor.start()?;
        let monitored = trial(mode, seconds, 1);
        running.stop()?;
        let monitored = monitored?.0;
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

/// `loadgens` processes of the workload at once in a namespace made for them: cycles per
/// second and cycles, summed over the processes.
fn trial(mode: &str, seconds: f64, loadgens: usize) -> Result<(f64, u64)> {
    let netns = Netns::new("load")?;
    let children = (0..loadgens)
        .map(|_| {
            netns
                .exec("target/release/loadgen")
                .arg(seconds.to_string())
                .arg(mode)
                .stdout(Stdio::piped())
                .spawn()
                .context("starting loadgen")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rate = 0.0;
    let mut cycles = 0;
    for child in children {
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace();
        rate += fields
            .next()
            .and_then(|f| f.parse::<f64>().ok())
            .context("loadgen rate")?;
        cycles += fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .context("loadgen cycles")?;
    }
    Ok((rate, cycles))
}

/// Failed connects as fast as one and two processes can make them (each is a record in the
/// ring buffer): are all the records received, and how many are lost?
fn failure_rate() -> Result<String> {
    let mut report = String::from(
        "\n## Failure records: the highest rate with none lost\n\n| loadgens | refused connects/s | connects | records received | lost | port_monitor_connect_errors_total |\n|---|---|---|---|---|---|\n",
    );
    for loadgens in [1, 2] {
        let monitor = PortMonitor::start(&[])?;
        let before = monitor.scrape()?;
        let (rate, connects) = trial("refused", 5.0, loadgens)?;
        // The reader drains every 100 ms and polls counters every second.
        std::thread::sleep(Duration::from_secs(3));
        let after = monitor.scrape()?;
        monitor.stop()?;
        let delta = |name: &str, labels: &[&str]| {
            metric(&after, name, labels).unwrap_or(0.0)
                - metric(&before, name, labels).unwrap_or(0.0)
        };
        let received = delta("port_monitor_events_total", &["kind=\"connect_failure\""]);
        let lost = delta("port_monitor_events_lost_total", &[]);
        let counted = delta(
            "port_monitor_connect_errors_total",
            &["errno=\"ECONNREFUSED\""],
        );
        let line = format!(
            "| {loadgens} | {rate:.0} | {connects} | {received:.0} | {lost:.0} | {counted:.0} |\n"
        );
        print!("{line}");
        report.push_str(&line);
    }
    Ok(report)
}
