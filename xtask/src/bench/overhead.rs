//! Overhead on the workload: `loadgen` loops on loopback, each trial in a fresh network
//! namespace so that every trial starts from the same socket state, in interleaved pairs of
//! "nothing attached" and "monitor attached" trials (`pairs.rs`), reporting the median of the
//! pair ratios with min and max. Then the failed-connect rate whose records all reach
//! port-monitor. Then the same loops in each guest kernel with port-monitor's defaults, which
//! there attach fexit programs (this machine's kernel refuses them).

use std::{fmt::Write as _, fs, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    Netns, RESULTS, Spread, guests,
    pairs::{self, Rates, Trials},
    process::{Hooks, Monitor, PortMonitor, loadgen_result, metric},
};

/// The plot's data: one line per (workload, monitor).
pub const DATA: &str = "overhead.dat";

/// The monitors measured on the host, in the table's and the plot's order.
pub const MONITORS: [Monitor; 4] = [
    Monitor::Defaults,
    Monitor::Tracepoints,
    Monitor::Tcpstates,
    Monitor::Bpftrace,
];

/// 3 workloads x 4 monitors x 7 pairs of two 3 s trials, each after 3 s of settling: ~20
/// minutes.
pub const HOST: Trials = Trials {
    pairs: 7,
    seconds: 3.0,
};

/// In a guest only the defaults are measured: 3 workloads x 5 pairs, each pair ~20 s under
/// emulation (port-monitor takes ~5 s to start there): ~5 minutes a kernel.
pub const GUEST: Trials = Trials {
    pairs: 5,
    seconds: 3.0,
};

/// How long a guest may take.
const GUEST_TIMEOUT: Duration = Duration::from_mins(20);

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

pub fn run(trials: Trials, guest_arguments: &[String]) -> Result<String> {
    let mut report = format!(
        "\n## Overhead on the workload\n\n{} pairs of {} s trials per row, alternating which runs first, each {} s after attaching or stopping the monitor.\n\n| workload | monitor | baseline cycles/s (median) | slowdown median | min | max |\n|---|---|---|---|---|---|\n",
        trials.pairs,
        trials.seconds,
        pairs::SETTLE.as_secs()
    );
    // Grouped by monitor, groups apart by two blank lines: gnuplot's `index` is one monitor.
    let mut data = vec![String::new(); MONITORS.len()];
    let mut hooks: Vec<Option<Hooks>> = vec![None; MONITORS.len()];
    let mut disturbed = String::new();
    for (mode, description) in WORKLOADS {
        println!("workload {mode}: {description}");
        for (index, monitor) in MONITORS.into_iter().enumerate() {
            let paired = pairs::paired(monitor, trials.pairs, || rates(mode, trials.seconds))?;
            let baseline = Spread::of(&paired.baselines).median;
            let slowdown = Spread::of(&paired.slowdowns);
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
            disturbed.extend(paired.disturbed_note(&format!("{mode}, {}", monitor.name())));
            if hooks[index].is_none() {
                hooks[index] = paired.hooks;
            }
        }
    }
    write!(
        report,
        "\nWhat port-monitor attached on this kernel ({}, from port_monitor_program_info):\n\n",
        super::kernel()
    )?;
    for (monitor, hooks) in MONITORS.iter().zip(&hooks) {
        if let Some(hooks) = hooks {
            writeln!(report, "- {}: {hooks}", monitor.name())?;
        }
    }
    if !disturbed.is_empty() {
        write!(
            report,
            "\nPairs that ran beside other work (each run again up to {} times while the wait allowed):\n\n{disturbed}",
            pairs::RETRIES
        )?;
    }
    fs::write(
        Path::new(RESULTS).join(DATA),
        format!(
            "# workload monitor baseline_per_s slowdown_median min max\n{}",
            data.join("\n\n")
        ),
    )?;
    report.push_str(&failure_rate()?);
    report.push_str(&in_guests(guest_arguments));
    Ok(report)
}

/// The header of the guests' table, whose rows [`here`] prints.
const GUEST_TABLE: &str = "| kernel | workload | monitor | hooks attached | baseline cycles/s (median) | slowdown median | min | max | fastest windows: slowdown median (min to max) |\n|---|---|---|---|---|---|---|---|---|\n";

/// `--here`: the workloads with port-monitor's defaults only, a row each for the host.
pub fn here(trials: Trials) -> Result<()> {
    let kernel = super::kernel();
    let monitor = Monitor::Defaults;
    println!(
        "overhead here: {} pairs of {} s trials",
        trials.pairs, trials.seconds
    );
    for (mode, description) in WORKLOADS {
        println!("workload {mode}: {description}");
        let paired = pairs::paired(monitor, trials.pairs, || rates(mode, trials.seconds))?;
        let slowdown = Spread::of(&paired.slowdowns);
        print!("{}", paired.disturbed_note(mode).unwrap_or_default());
        let hooks = paired
            .hooks
            .map_or_else(|| "?".to_owned(), |hooks| hooks.to_string());
        guests::print_row(&format!(
            "| {kernel} | {mode} | {} | {hooks} | {:.0} | {:+.2}% | {:+.2}% | {:+.2}% | {} |",
            monitor.name(),
            Spread::of(&paired.baselines).median,
            slowdown.median,
            slowdown.min,
            slowdown.max,
            Spread::of(&paired.top_slowdowns).signed_percent(),
        ));
    }
    Ok(())
}

/// The guests' section of the report: [`here`] in each kernel of the matrix.
fn in_guests(arguments: &[String]) -> String {
    let guests = guests::table("overhead", arguments, GUEST_TIMEOUT, 9);
    let section = format!(
        "\n## Overhead with port-monitor's defaults in other kernels (fexit)\n\nUnder qemu's software emulation (TCG), on one virtual CPU whose clock counts instructions (`-icount`): a rate there is instructions per cycle, whatever the host runs meanwhile, so ratios are what the hooks add in instructions (not cache effects, which emulation does not model). The last column is the slowdown of each trial's fastest tenth of 50 ms windows: the hooks' own cost per cycle, without port-monitor's own work, which shares the one CPU with the loop there (on a node it runs on other cores). Only port-monitor's defaults, with fewer pairs than on the host to keep the emulated run short: {}\n\n{GUEST_TABLE}{}\nGuest runs:\n\n{}",
        guests::trials_note(arguments, GUEST),
        guests.rows,
        guests.notes,
    );
    print!("{section}");
    section
}

/// One trial: one loadgen's rates.
fn rates(mode: &str, seconds: f64) -> Result<Rates> {
    let netns = Netns::new("load")?;
    loadgen_result(loadgen(&netns, mode, seconds)?).map(Rates::from)
}

/// A loadgen of the workload started in `netns`.
fn loadgen(netns: &Netns, mode: &str, seconds: f64) -> Result<std::process::Child> {
    netns
        .exec("target/release/loadgen")
        .arg(seconds.to_string())
        .arg(mode)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting loadgen")
}

/// `loadgens` processes of the workload at once in a namespace made for them: cycles per
/// second and cycles, summed over the processes.
fn trial(mode: &str, seconds: f64, loadgens: usize) -> Result<(f64, u64)> {
    let netns = Netns::new("load")?;
    let children = (0..loadgens)
        .map(|_| loadgen(&netns, mode, seconds))
        .collect::<Result<Vec<_>>>()?;
    let mut rate = 0.0;
    let mut cycles = 0;
    for child in children {
        let one = loadgen_result(child)?;
        rate += one.rate;
        cycles += one.cycles;
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
