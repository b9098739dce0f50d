//! What every process on the node pays for port-monitor: a loop of `getppid()` and a 1-byte
//! `read()` of `/dev/zero`, pinned to one core (`loadgen … syscall`), with nothing attached
//! and with port-monitor in each way of seeing `bind()` errno and UDP autobind failures.
//!
//! Only a syscall's exit knows its errno, and the two ways to see it differ in who pays. Once
//! any syscall tracepoint has a program, the kernel sends every syscall of every thread
//! through its slower traced path, whatever the syscall; an fexit program on the kernel
//! function costs only the calls of that function. So this loop, which binds nothing and
//! makes no socket, is slowed by `--kernel.errno-hook=tracepoint` and should not be by the
//! defaults (fexit) nor with the two collectors off. Measured here, and in each kernel of
//! the matrix, under qemu, since this machine's kernel refuses fexit: here the defaults
//! attach no fexit program (the two collectors are off), in the guests they do. The table
//! says which hooks each run attached.

use std::{fmt::Write as _, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    Spread, guests,
    pairs::{self, Rates, Trials},
    process::{Monitor, loadgen_result},
};
use crate::cmd;

/// The three ways port-monitor may run, each measured against nothing attached.
const MODES: [Monitor; 3] = [
    Monitor::Defaults,
    Monitor::Tracepoints,
    Monitor::CollectorsOff,
];

/// 3 modes x 5 pairs, each pair ~14 s (two 3 s trials, each after 3 s of settling): ~4
/// minutes.
pub const HOST: Trials = Trials {
    pairs: 5,
    seconds: 3.0,
};

/// Under emulation port-monitor takes ~5 s to start, so a pair takes ~18 s: 3 modes x 5
/// pairs, ~4.5 minutes a kernel, ~13 minutes for the part with the host's. The loop still
/// makes >1M cycles a trial there (~0.5M/s).
pub const GUEST: Trials = Trials {
    pairs: 5,
    seconds: 3.0,
};

/// How long a guest may take.
const GUEST_TIMEOUT: Duration = Duration::from_mins(15);

/// The CPU the loop is pinned to: every machine and guest has one.
const CPU: &str = "0";

const TABLE: &str = "| kernel | mode | hooks attached | baseline cycles/s, fastest windows (median) | slowdown median | min | max | whole trials: slowdown median (min to max) |\n|---|---|---|---|---|---|---|---|\n";

/// The loop on this machine, then in each kernel of the matrix: one table.
pub fn run(trials: Trials, guest_arguments: &[String]) -> Result<String> {
    let mut section = format!(
        "\n## Syscall slowdown: every process on the node\n\nA loop of getppid() + 1-byte read() of /dev/zero pinned to CPU {CPU}, nothing network-related; a trial's rate is that of its fastest tenth of 50 ms windows (the machine under this one takes CPU away from many of them, in the host and more in the guests; port-monitor's own CPU use is not in them either, the scrape part measures that), the whole trials' slowdown is in the last column; interleaved pairs (nothing attached, port-monitor attached), alternating which runs first, each trial {} s after attaching or stopping. Host: {} pairs of {} s trials per row. Guests: under qemu's software emulation (TCG) on one virtual CPU whose clock counts instructions (`-icount`): a rate there is instructions per cycle, the same whatever the host runs, so the fastest windows give what each hook adds in instructions, and the whole trials add the daemon's own work, which shares the one CPU with the loop there (on a node it runs on other cores); {}\n\n{TABLE}",
        pairs::SETTLE.as_secs(),
        trials.pairs,
        trials.seconds,
        guests::trials_note(guest_arguments, GUEST),
    );
    let (rows, disturbed) = measure(trials)?;
    for row in rows {
        section.push_str(&row);
        section.push('\n');
    }
    let guests = guests::table("syscalls", guest_arguments, GUEST_TIMEOUT, 8);
    section.push_str(&guests.rows);
    write!(section, "\nGuest runs:\n\n{}", guests.notes)?;
    if !disturbed.is_empty() {
        write!(
            section,
            "\nPairs on the host that ran beside other work (each run again up to {} times while the wait allowed):\n\n{disturbed}",
            pairs::RETRIES
        )?;
    }
    print!("{section}");
    Ok(section)
}

/// `--here`: the rows of this kernel, for the host.
pub fn here(trials: Trials) -> Result<()> {
    let (rows, disturbed) = measure(trials)?;
    for row in rows {
        guests::print_row(&row);
    }
    print!("{disturbed}");
    Ok(())
}

/// A table row per mode, on the running kernel, and notes on disturbed pairs.
fn measure(trials: Trials) -> Result<(Vec<String>, String)> {
    let kernel = super::kernel();
    println!(
        "syscalls on {kernel}: {} pairs of {} s trials per mode",
        trials.pairs, trials.seconds
    );
    let mut rows = Vec::new();
    let mut disturbed = String::new();
    for monitor in MODES {
        let paired = pairs::paired(monitor, trials.pairs, || rates(trials.seconds))?;
        let slowdown = Spread::of(&paired.top_slowdowns);
        let row = format!(
            "| {kernel} | {} | {} | {:.0} | {:+.2}% | {:+.2}% | {:+.2}% | {} |",
            monitor.name(),
            paired
                .hooks
                .as_ref()
                .map_or_else(|| "?".to_owned(), ToString::to_string),
            Spread::of(&paired.top_baselines).median,
            slowdown.median,
            slowdown.min,
            slowdown.max,
            Spread::of(&paired.slowdowns).signed_percent(),
        );
        println!("{row}");
        rows.push(row);
        disturbed.extend(paired.disturbed_note(monitor.name()));
    }
    Ok((rows, disturbed))
}

/// One trial of the loop. The table's slowdown is that of its fastest 50 ms windows
/// ([`super::process::Loadgen::top_rate`]), not the whole trial's: on this project's machines
/// (virtual machines themselves, and emulated guests in them) the loop's rate swings by a
/// third from one window to the next as the machine under them gives and takes CPU, so whole
/// 3 s trials in a row vary by 5-15 %, in wall time and in the loop's own CPU time alike,
/// which drowns a 5 % effect; the fastest tenth of the windows varies by ~2 %. What a syscall
/// tracepoint adds is a fixed cost on every syscall, so it is in those windows too (measured
/// by hand: 3 trials each, the fastest windows 6-7 % slower with the tracepoints, as whole
/// trials on a quiet machine were). The whole trials' slowdown is in the last column.
fn rates(seconds: f64) -> Result<Rates> {
    let child = cmd::command("target/release/loadgen")
        .args([&seconds.to_string(), "syscall", CPU])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting loadgen")?;
    loadgen_result(child).map(Rates::from)
}
