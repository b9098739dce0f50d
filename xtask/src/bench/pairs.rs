//! Interleaved (baseline, monitored) pairs: the measurement every overhead figure comes from.
//!
//! These machines are shared and noisy, so a slowdown is only taken between two trials run
//! one after the other, and reported as the spread of many such pairs. Two effects are kept
//! out of it: the first trial of a pair runs ~2-3 % faster whatever it measures, so the order
//! alternates (baseline first in even pairs, monitored first in odd ones); and attaching a
//! syscall tracepoint slows every syscall more in its first seconds than afterwards, so each
//! trial starts [`SETTLE`] after the monitor was attached or detached.
//!
//! Other work on the machine spoils a pair (another eBPF monitor's syscall tracepoint slows
//! the baseline as much as the monitored trial; a compiler or a test run takes a core of two,
//! see [`OthersCpu`]): a pair waits for the machine to be quiet, and is run again when it was
//! not during the pair, within a limited patience.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::process::{Hooks, Loadgen, Monitor, OthersCpu, foreign_hooks, other_monitors};

/// How long the machine is left alone after a monitor is attached or stopped, before a
/// trial: long enough for start-up (first snapshot, the kernel's work on attaching or
/// freeing programs) to be over, so that the trial sees the steady state.
pub const SETTLE: Duration = Duration::from_secs(3);

/// How many pairs, and how long each trial runs.
#[derive(Clone, Copy, Debug)]
pub struct Trials {
    pub pairs: usize,
    pub seconds: f64,
}

/// What a trial measured: the loop's rate over the whole trial, and that of its fastest
/// windows (see [`Loadgen::top_rate`]).
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub whole: f64,
    pub top: f64,
}

impl From<Loadgen> for Rates {
    fn from(run: Loadgen) -> Self {
        Self {
            whole: run.rate,
            top: run.top_rate,
        }
    }
}

/// The pairs of one monitor on one workload.
#[derive(Default)]
pub struct Paired {
    /// Baseline rates over whole trials, per pair.
    pub baselines: Vec<f64>,
    /// Slowdowns in percent over whole trials, per pair: positive when the monitored trial
    /// was slower. This includes the CPU the monitor takes from the workload.
    pub slowdowns: Vec<f64>,
    /// Baseline rates of the fastest windows, per pair.
    pub top_baselines: Vec<f64>,
    /// Slowdowns in percent of the fastest windows, per pair: the cost the hooks add to each
    /// cycle, with the machine's swings (and mostly the monitor's own CPU use) left out.
    pub top_slowdowns: Vec<f64>,
    /// What port-monitor attached, read during its first monitored trial; `None` for a peer.
    pub hooks: Option<Hooks>,
    /// Pairs kept although other work ran during them (after [`RETRIES`]), with what ran.
    pub disturbed: Vec<String>,
}

impl Paired {
    /// A line for the report when pairs were disturbed: `what` and which processes.
    pub fn disturbed_note(&self, what: &str) -> Option<String> {
        (!self.disturbed.is_empty()).then(|| {
            format!(
                "- {what}: {} of {} pairs ran beside other work: {}\n",
                self.disturbed.len(),
                self.slowdowns.len(),
                self.disturbed.join("; ")
            )
        })
    }
}

/// The share of one core other processes may use during a pair: more, and the pair is
/// disturbed. A quiet machine's own daemons use ~1 %.
const OTHERS_LIMIT: f64 = 0.1;

/// How many times a disturbed pair is run again before it is kept as it is.
pub const RETRIES: usize = 2;

/// How long, in all, this process waits for other work to end or runs disturbed pairs
/// again; once spent, pairs run beside other work and are only marked. A colleague's long
/// test run then costs the benchmark ten minutes, not ten minutes a pair.
const PATIENCE: Duration = Duration::from_mins(10);

/// Patience spent so far, in milliseconds.
static WAITED_MS: AtomicU64 = AtomicU64::new(0);

fn patience_left() -> bool {
    Duration::from_millis(WAITED_MS.load(Ordering::Relaxed)) < PATIENCE
}

fn spend(spent: Duration) {
    let millis = u64::try_from(spent.as_millis()).unwrap_or(u64::MAX);
    WAITED_MS.fetch_add(millis, Ordering::Relaxed);
}

/// `pairs` interleaved pairs of `trial` (a workload run once) with nothing attached and with
/// `monitor` attached, in alternating order.
pub fn paired(
    monitor: Monitor,
    pairs: usize,
    mut trial: impl FnMut() -> Result<Rates>,
) -> Result<Paired> {
    let mut paired = Paired::default();
    for pair in 0..pairs {
        let baseline_first = pair % 2 == 0;
        let mut attempt = 0;
        let (baseline, monitored, others) = loop {
            wait_quiet();
            let started = Instant::now();
            let meter = OthersCpu::start();
            let mut others = Vec::new();
            let (baseline, monitored) = if baseline_first {
                let baseline = alone(&mut trial, &mut others)?;
                let monitored = attached(monitor, &mut trial, &mut paired.hooks, &mut others)?;
                (baseline, monitored)
            } else {
                let monitored = attached(monitor, &mut trial, &mut paired.hooks, &mut others)?;
                (alone(&mut trial, &mut others)?, monitored)
            };
            let share = meter.share();
            if share > OTHERS_LIMIT {
                others.push(format!("other processes ({:.0}% of a core)", share * 100.0));
            }
            if others.is_empty() || attempt == RETRIES || !patience_left() {
                break (baseline, monitored, others);
            }
            spend(started.elapsed());
            attempt += 1;
            println!(
                "  {} pair {pair}: {} ran beside it, again",
                monitor.name(),
                others.join(", ")
            );
        };
        let slowdown = (1.0 - monitored.whole / baseline.whole) * 100.0;
        let top_slowdown = (1.0 - monitored.top / baseline.top) * 100.0;
        println!(
            "  {} pair {pair} ({} first): {:.0} -> {:.0} cycles/s ({slowdown:+.2}%), fastest windows {:.0} -> {:.0} ({top_slowdown:+.2}%){}",
            monitor.name(),
            if baseline_first {
                "baseline"
            } else {
                "monitored"
            },
            baseline.whole,
            monitored.whole,
            baseline.top,
            monitored.top,
            if others.is_empty() {
                String::new()
            } else {
                format!(", DISTURBED by {}", others.join(", "))
            }
        );
        if !others.is_empty() {
            paired
                .disturbed
                .push(format!("pair {pair}: {}", others.join(", ")));
        }
        paired.baselines.push(baseline.whole);
        paired.slowdowns.push(slowdown);
        paired.top_baselines.push(baseline.top);
        paired.top_slowdowns.push(top_slowdown);
    }
    Ok(paired)
}

/// Waits until no other monitor runs and other processes leave the machine alone, while
/// [`PATIENCE`] lasts.
pub fn wait_quiet() {
    let mut said = false;
    while patience_left() {
        let poll = Duration::from_secs(2);
        let meter = OthersCpu::start();
        std::thread::sleep(poll);
        let mut others = other_monitors();
        others.extend(foreign_hooks());
        let share = meter.share();
        if share > OTHERS_LIMIT {
            others.push(format!("other processes ({:.0}% of a core)", share * 100.0));
        }
        if others.is_empty() {
            return;
        }
        if !said {
            println!("  waiting for {} to end", others.join(", "));
            said = true;
        }
        spend(poll);
    }
}

/// Adds to `others` the other monitors running now that are not in it yet, and, when
/// nothing of this process's is attached (`alone`), others' hooks.
fn note_others(others: &mut Vec<String>, alone: bool) {
    let hooks = if alone { foreign_hooks() } else { Vec::new() };
    for found in other_monitors().into_iter().chain(hooks) {
        if !others.contains(&found) {
            others.push(found);
        }
    }
}

/// A trial with nothing attached: the monitor of the previous trial, if any, was stopped.
fn alone(trial: &mut impl FnMut() -> Result<Rates>, others: &mut Vec<String>) -> Result<Rates> {
    std::thread::sleep(SETTLE);
    note_others(others, true);
    let rate = trial()?;
    note_others(others, true);
    Ok(rate)
}

/// A trial with `monitor` attached and settled; the first one also reads what port-monitor
/// attached (after the trial, so that the scrape is not part of it).
fn attached(
    monitor: Monitor,
    trial: &mut impl FnMut() -> Result<Rates>,
    hooks: &mut Option<Hooks>,
    others: &mut Vec<String>,
) -> Result<Rates> {
    let running = monitor.start()?;
    std::thread::sleep(SETTLE);
    note_others(others, false);
    let rate = trial();
    note_others(others, false);
    let found = if rate.is_ok() && hooks.is_none() {
        running.hooks().transpose()
    } else {
        Ok(None)
    };
    running.stop()?;
    if let Some(found) = found? {
        *hooks = Some(found);
    }
    rate
}
