//! A part again inside each kernel of [`vm::MATRIX`]: the host's kernel refuses fexit, the
//! kernels users run (Debian's 6.1 and 6.12) accept it, so what port-monitor's defaults cost
//! can only be measured there.
//!
//! The guest sees the host's files, so it runs the `xtask` binary the host just built with
//! `bench <part> --here`: this kernel only, no setup and no build (the guest cannot build).
//! It prints each table row behind [`ROW`]; the host collects those lines from the guest's
//! output and puts them in its own table. The guests are emulated (TCG) on one virtual CPU
//! whose clock counts instructions (qemu's `-icount`, four instructions a nanosecond): their
//! absolute rates mean nothing, but a rate there is an instruction count per cycle, deaf to
//! what else the host runs, so the ratio of two trials is what a hook adds in instructions
//! (not cache or branch effects, which emulation does not model). On the one CPU the daemon's
//! own work takes turns with the loop: whole trials include it, the fastest windows do not.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    pairs::{self, Trials},
    process::{OthersCpu, children, other_monitors, renice},
};
use crate::vm;

/// Marks a line of a guest's output as one of its table rows.
const ROW: &str = "bench-row ";

/// Prints a table row for the host to collect (`row` is one line of markdown table).
pub fn print_row(row: &str) {
    println!("{ROW}{row}");
}

/// One kernel's run.
struct Guest {
    /// The kernel's release.
    version: String,
    /// The table rows it printed.
    rows: Vec<String>,
    /// Why the run failed, if it did; rows printed before a failure are kept.
    failure: Option<String>,
    /// From preparing the kernel (once the host was quiet) to the guest's exit.
    wall: Duration,
    /// Other work that ran on the host during the guest's run, with roughly how long.
    host_busy: Vec<String>,
}

/// The guests' rows of a part's table, and a note on each guest's run.
pub struct Table {
    /// Rows, each ending in a newline; a kernel that failed has a row saying so.
    pub rows: String,
    /// A list: how long each guest took, and what else the host ran meanwhile.
    pub notes: String,
}

/// [`run`], as rows of a table of `columns` columns (the kernel's first) and notes.
pub fn table(part: &str, arguments: &[String], timeout: Duration, columns: usize) -> Table {
    let mut table = Table {
        rows: String::new(),
        notes: String::new(),
    };
    for guest in run(part, arguments, timeout) {
        for row in &guest.rows {
            table.rows.push_str(row);
            table.rows.push('\n');
        }
        if let Some(failure) = &guest.failure {
            let empty = " |".repeat(columns.saturating_sub(2));
            let _ = writeln!(
                table.rows,
                "| {} | FAILED: {failure} |{empty}",
                guest.version
            );
        }
        let busy = if guest.host_busy.is_empty() {
            "the host ran nothing else".to_owned()
        } else {
            format!("the host also ran {}", guest.host_busy.join(", "))
        };
        let note = format!(
            "- {}: {:.0} s, boot included; {busy}\n",
            guest.version,
            guest.wall.as_secs_f64()
        );
        print!("bench {part} in {note}");
        table.notes.push_str(&note);
    }
    table
}

/// What a guest's table was measured with, said in the report.
pub fn trials_note(arguments: &[String], defaults: Trials) -> String {
    if arguments.is_empty() {
        format!(
            "{} pairs of {} s trials per row in each guest.",
            defaults.pairs, defaults.seconds
        )
    } else {
        format!("Trials: {}.", arguments.join(" "))
    }
}

/// How often the host looks for other work while a guest runs.
const SAMPLE: Duration = Duration::from_secs(1);

/// The guest's scheduling priority on the host. An emulated guest's clock runs on while the
/// host gives its CPU to others, so others' work lowers every rate the guest measures, and on
/// two cores a compiler always finds one; ahead of it, the guest keeps its CPUs (a
/// `nice` of -10 weighs ~10 times a default one).
const GUEST_NICE: i32 = -10;

/// Runs `xtask bench <part> --here <arguments>` in each kernel of the matrix, one after the
/// other, each allowed `timeout`. A kernel that cannot be prepared or booted, or whose run
/// fails, is reported in its [`Guest::failure`], and the next one is run all the same: a
/// benchmark report with one kernel missing, saying why, is worth more than none.
fn run(part: &str, arguments: &[String], timeout: Duration) -> Vec<Guest> {
    let mut command = vec![
        "target/release/xtask".to_owned(),
        "bench".to_owned(),
        part.to_owned(),
        "--here".to_owned(),
    ];
    command.extend(arguments.iter().cloned());
    vm::MATRIX
        .iter()
        .map(|series| {
            println!(
                "bench {part} in Linux {series}, under qemu: {}",
                command.join(" ")
            );
            let mut guest = Guest {
                version: (*series).to_owned(),
                rows: Vec::new(),
                failure: None,
                wall: Duration::ZERO,
                host_busy: Vec::new(),
            };
            pairs::wait_quiet();
            let started = Instant::now();
            let done = AtomicBool::new(false);
            let (result, busy) = std::thread::scope(|scope| {
                let watcher = scope.spawn(|| watch(&done));
                let result = run_one(series, &command, timeout, &mut guest);
                done.store(true, Ordering::Relaxed);
                (result, watcher.join().unwrap_or_default())
            });
            guest.host_busy = busy;
            if let Err(error) = result {
                guest.failure = Some(format!("{error:#}"));
            }
            guest.wall = started.elapsed();
            if let Some(failure) = &guest.failure {
                eprintln!("bench {part} in {}: FAILED: {failure}", guest.version);
            }
            guest
        })
        .collect()
}

/// Puts the guest ahead of other work on the host and watches that work until `done`: the
/// other monitors seen, and the CPU other processes used.
fn watch(done: &AtomicBool) -> Vec<String> {
    let meter = OthersCpu::start();
    let started = Instant::now();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    while !done.load(Ordering::Relaxed) {
        // Every time: qemu starts its threads as the guest boots.
        for (pid, _) in children()
            .into_iter()
            .filter(|(_, comm)| comm.starts_with("qemu-system"))
        {
            renice(pid, GUEST_NICE);
        }
        for found in other_monitors() {
            let name = found
                .rsplit_once(" (")
                .map_or(found.as_str(), |(name, _pid)| name);
            *seen.entry(name.to_owned()).or_default() += 1;
        }
        std::thread::sleep(SAMPLE);
    }
    let mut busy: Vec<String> = seen
        .into_iter()
        .map(|(name, samples)| format!("{name} (~{} s)", samples * SAMPLE.as_secs()))
        .collect();
    let share = meter.share();
    if share > 0.05 {
        busy.push(format!(
            "other processes using {:.0} CPU-seconds ({:.0}% of a core over {:.0} s)",
            share * started.elapsed().as_secs_f64(),
            share * 100.0,
            started.elapsed().as_secs_f64()
        ));
    }
    busy
}

fn run_one(series: &str, command: &[String], timeout: Duration, guest: &mut Guest) -> Result<()> {
    let kernel = vm::prepare(series)?;
    guest.version.clone_from(&kernel.version);
    let outcome = vm::run(
        &kernel,
        command,
        &vm::RunOptions {
            timeout,
            stream: true,
            // The guest's clock counts instructions: a loop's rate is its instructions per
            // cycle, whatever the host runs meanwhile (with the host's clock, trials in a row
            // swung by 20-40 % here). One CPU: qemu's instruction clock did not boot with two.
            cpus: 1,
            instruction_clock: true,
            ..vm::RunOptions::default()
        },
    )?;
    guest.rows = outcome
        .output
        .lines()
        .filter_map(|line| line.strip_prefix(ROW))
        .map(str::to_owned)
        .collect();
    if outcome.timed_out {
        guest.failure = Some(format!(
            "stopped after {timeout:?} (console log kept under target/vm-runs/)"
        ));
    } else if outcome.status != 0 {
        let last = outcome.output.lines().last().unwrap_or_default();
        guest.failure = Some(format!("exit status {}: {last}", outcome.status));
    }
    Ok(())
}
