//! Snapshots at the scale of a busy proxy node: 100k and 1M TCP sockets in one namespace.
//!
//! For each size, in namespaces made for it (`sockets N`: established pairs up to the
//! descriptor limit, the rest `TIME_WAIT`, which holds no descriptor and lives 60 s, so each
//! measurement runs on sockets made for it just before):
//! - `ss -Htan` listing the namespace and port-monitor's snapshot of every namespace
//!   (`examples/snapshot_timer.rs`, the function the daemon's snapshot thread calls) with
//!   each TCP source, the `iter/tcp` program (the default) and `sock_diag`, one after the
//!   other, the order rotated each round; then one more snapshot under `perf record -g`, the
//!   profile of where its time goes. Twice: with the node's one TCP hash table, which every
//!   namespace's listing walks whole, and with a table of the namespace's own
//!   (`net.ipv4.tcp_child_ehash_entries`, Linux 6.1+, set while the namespace is made);
//! - on sockets made again, the daemon as deployed: its RSS (now and peak), its CPU, its own
//!   snapshot durations, and scrape latency.
//!
//! Then the workload's side: a connect/close loop (`loadgen fin`) in a namespace that already
//! holds 100k sockets, with port-monitor running and not, in interleaved pairs.
//!
//! In the namespaces: `tcp_tw_reuse` 0 (the generator's own connects must not take over its
//! `TIME_WAIT` sockets), `tcp_max_tw_buckets` 2,000,000 and the port range 1024-65535.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Netns, RESULTS, Spread,
    process::{PortMonitor, cpu_seconds, metric, resident_kib, timed_scrape},
};
use crate::cmd;

const SIZES: [usize; 2] = [100_000, 1_000_000];

/// Rounds of (`ss`, snapshot by the iterator, snapshot by `sock_diag`) per size.
const ROUNDS: usize = 4;

/// Buckets of a namespace's own TCP hash table, where the run gives it one: the size of the
/// node's table on the machine the figures were first taken on, so chains are as long.
const OWN_TABLE: u32 = 262_144;

/// Scrapes of the daemon per size, one a second.
const SCRAPES: usize = 12;

/// `TIME_WAIT` sockets live 60 s from their making: past this after the generator is ready
/// the first of them may be gone, and the measurement says so.
const WINDOW: Duration = Duration::from_secs(55);

/// Sockets in the namespace the connect/close loop runs in.
const LOADED: usize = 100_000;

/// Interleaved (without, with port-monitor) pairs of the loop, and seconds a trial runs:
/// long enough for two of the daemon's snapshots (every 5 s) to fall inside.
const PAIRS: usize = 5;
const LOOP_SECONDS: u32 = 12;

pub fn run() -> Result<String> {
    cmd::run(cmd::command("cargo").args([
        "build",
        "--release",
        "--package",
        "port-monitor",
        "--example",
        "snapshot_timer",
    ]))?;
    let mut timing = String::from(
        "\n## Snapshots at scale: one snapshot against `ss -Htan`\n\n| sockets made (listen / established / time_wait) | TCP hash table | made in s | listed by `ss` | seen by the snapshot | `ss -Htan` ms: median (min-max) | snapshot ms, iterator | snapshot ms, `sock_diag` | iterator / `ss` | `sock_diag` / `ss` | snapshot process RSS / peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut daemon = String::from(
        "\n## Snapshots at scale: the daemon\n\n| sockets | seen by the daemon | RSS MiB now / peak | CPU seconds / seconds measured | CPU, % of one core | daemon snapshot ms: median (min-max) | scrape ms: median (min-max) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut profiles = String::new();
    let mut notes = Vec::new();
    for size in SIZES {
        for table in [Table::Shared, Table::Own] {
            let row = time_snapshots(size, table, &mut notes)?;
            timing.push_str(&row.table);
            profiles.push_str(&row.profile);
        }
        daemon.push_str(&daemon_at(size, &mut notes)?);
    }
    let slowdown = slowdown()?;
    let mut section = format!("{timing}{daemon}{slowdown}{profiles}");
    for note in notes {
        writeln!(section, "\n- {note}")?;
    }
    print!("{section}");
    Ok(section)
}

/// Which TCP hash table the namespace's sockets are in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// The node's one table (the default): every namespace's listing walks all of it.
    Shared,
    /// A table of its own, [`OWN_TABLE`] buckets (`tcp_child_ehash_entries`).
    Own,
}

impl Table {
    const fn label(self) -> &'static str {
        match self {
            Self::Shared => "the node's",
            Self::Own => "its own",
        }
    }
}

/// A namespace for the sockets, with the sysctls a million of them need.
fn scale_netns(purpose: &str) -> Result<Netns> {
    scale_netns_with(purpose, Table::Shared)
}

/// [`scale_netns`] with the TCP hash table `table`. The node's `tcp_child_ehash_entries`,
/// which only namespaces made while it is set get, is set for the making and put back.
fn scale_netns_with(purpose: &str, table: Table) -> Result<Netns> {
    const CHILD_TABLE: &str = "net.ipv4.tcp_child_ehash_entries";
    let netns = if table == Table::Own {
        let before = cmd::output(cmd::command("sysctl").args(["-n", CHILD_TABLE]))
            .context("this kernel has no per-namespace TCP hash tables (Linux 6.1+)")?;
        cmd::run(cmd::command("sysctl").args(["-q", "-w", &format!("{CHILD_TABLE}={OWN_TABLE}")]))?;
        let made = Netns::new(purpose);
        cmd::run(cmd::command("sysctl").args([
            "-q",
            "-w",
            &format!("{CHILD_TABLE}={}", before.trim()),
        ]))?;
        made?
    } else {
        Netns::new(purpose)?
    };
    cmd::run(netns.exec("sysctl").args([
        "-q",
        "-w",
        "net.ipv4.tcp_tw_reuse=0",
        "net.ipv4.tcp_max_tw_buckets=2000000",
        "net.ipv4.ip_local_port_range=1024 65535",
    ]))?;
    Ok(netns)
}

/// `sockets N` running in a namespace, holding its sockets until dropped.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// When it printed `ready`: `TIME_WAIT` sockets begin to expire 60 s after their making.
    ready: Instant,
    made_in: Duration,
    /// `listen / established / time_wait` as the generator counted them.
    kinds: String,
    total: usize,
}

impl Holder {
    fn start(netns: &Netns, count: usize) -> Result<Self> {
        let started = Instant::now();
        let (mut child, [listen, established, time_wait]) =
            netns.hold_sockets(&count.to_string())?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            ready: Instant::now(),
            made_in: started.elapsed(),
            kinds: format!("{listen} / {established} / {time_wait}"),
            total: listen + established + time_wait,
        })
    }

    /// Whether the first `TIME_WAIT` sockets may be gone already.
    fn expiring(&self) -> bool {
        self.ready.elapsed() > WINDOW
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its standard input lets it exit and its sockets go.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The snapshot timer: one snapshot of every namespace per line written to it.
struct Timer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What one timed snapshot answered.
struct Timed {
    millis: f64,
    largest: f64,
    rss_kib: f64,
    peak_kib: f64,
}

impl Timer {
    fn start() -> Result<Self> {
        let mut child = Command::new("target/release/examples/snapshot_timer")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the snapshot timer")?;
        let stdin = child.stdin.take().context("timer stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("timer stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// One snapshot, its TCP sockets listed by `source` (`iterator` or `sock_diag`).
    fn snapshot(&mut self, source: &str) -> Result<Timed> {
        writeln!(self.stdin, "{source}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let fields: Vec<f64> = line
            .split_whitespace()
            .filter_map(|field| field.parse().ok())
            .collect();
        let [millis, largest, rss_kib, peak_kib] = fields[..] else {
            bail!("the snapshot timer answered {line:?}");
        };
        Ok(Timed {
            millis,
            largest,
            rss_kib,
            peak_kib,
        })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ss -Htan` in the namespace: milliseconds (process start to exit) and lines listed.
fn time_ss(netns: &Netns) -> Result<(f64, usize)> {
    let started = Instant::now();
    let mut child = netns
        .exec("ss")
        .arg("-Htan")
        .stdout(Stdio::piped())
        .spawn()
        .context("running ss")?;
    let mut lines = 0;
    let mut buffer = vec![0; 1 << 16];
    let mut stdout = child.stdout.take().context("ss stdout")?;
    loop {
        let read = stdout.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        #[expect(clippy::naive_bytecount, reason = "a few MB, once a round")]
        let newlines = buffer[..read].iter().filter(|byte| **byte == b'\n').count();
        lines += newlines;
    }
    if !child.wait()?.success() {
        bail!("ss failed");
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0, lines))
}

struct TimingRow {
    table: String,
    profile: String,
}

/// What one round measures.
#[derive(Clone, Copy)]
enum Measure {
    Ss,
    Iterator,
    SockDiag,
}

/// `ss` and the snapshot by each source, the order rotated each round, on `size` sockets in
/// a namespace with the TCP hash table `table`; then the snapshot's profile.
fn time_snapshots(size: usize, table: Table, notes: &mut Vec<String>) -> Result<TimingRow> {
    let netns = scale_netns_with("scale", table)?;
    // Started before the sockets are made: its start-up is not in the window.
    let mut timer = Timer::start()?;
    let holder = Holder::start(&netns, size)?;
    let (mut ss, mut listed, mut seen) = (Vec::new(), 0, 0.0);
    let (mut by_iterator, mut by_sock_diag) = (Vec::new(), Vec::new());
    let mut memory = (0.0, 0.0);
    let orders = [
        [Measure::Ss, Measure::Iterator, Measure::SockDiag],
        [Measure::Iterator, Measure::SockDiag, Measure::Ss],
        [Measure::SockDiag, Measure::Ss, Measure::Iterator],
        [Measure::Ss, Measure::SockDiag, Measure::Iterator],
    ];
    for round in 0..ROUNDS {
        if holder.expiring() {
            notes.push(format!(
                "{size} sockets, {} table: {round} of {ROUNDS} rounds fitted in the {}-s window after the sockets were made",
                table.label(),
                WINDOW.as_secs()
            ));
            break;
        }
        for measure in orders[round % orders.len()] {
            let source = match measure {
                Measure::Ss => {
                    let (millis, lines) = time_ss(&netns)?;
                    ss.push(millis);
                    listed = lines;
                    continue;
                }
                Measure::Iterator => "iterator",
                Measure::SockDiag => "sock_diag",
            };
            let answer = timer.snapshot(source)?;
            if matches!(measure, Measure::Iterator) {
                by_iterator.push(answer.millis);
                seen = answer.largest;
            } else {
                by_sock_diag.push(answer.millis);
            }
            memory = (answer.rss_kib, answer.peak_kib);
        }
    }
    let profile = profile(&mut timer, size, table)?;
    let late = holder.expiring();
    let (kinds, made_in) = (holder.kinds.clone(), holder.made_in);
    if holder.total < size {
        notes.push(format!(
            "{size} sockets asked, the generator made {} ({kinds})",
            holder.total
        ));
    }
    drop(holder);
    drop(netns);
    if late {
        notes.push(format!(
            "{size} sockets, {} table: the profile's snapshot ran after the first TIME_WAIT sockets could expire",
            table.label()
        ));
    }
    let (ss, by_iterator, by_sock_diag) = (
        Spread::of(&ss),
        Spread::of(&by_iterator),
        Spread::of(&by_sock_diag),
    );
    let mut row = String::new();
    writeln!(
        row,
        "| {size} ({kinds}) | {} | {:.1} | {listed} | {seen:.0} | {ss:.1} | {by_iterator:.1} | {by_sock_diag:.1} | {:.2} | {:.2} | {:.1} / {:.1} |",
        table.label(),
        made_in.as_secs_f64(),
        by_iterator.median / ss.median,
        by_sock_diag.median / ss.median,
        memory.0 / 1024.0,
        memory.1 / 1024.0,
    )?;
    Ok(TimingRow {
        table: row,
        profile,
    })
}

/// One more snapshot under `perf record -g`: the heaviest symbols, by self time.
fn profile(timer: &mut Timer, size: usize, table: Table) -> Result<String> {
    let data = Path::new(RESULTS).join(format!("scale-{size}-{}.perf.data", table as u8));
    let perf = cmd::command("perf")
        .args(["record", "-g", "-q", "-o"])
        .arg(&data)
        .args(["-p", &timer.child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(perf) = perf else {
        return Ok(format!(
            "\n{size} sockets: perf is not installed, no profile.\n"
        ));
    };
    std::thread::sleep(Duration::from_millis(500));
    let profiled = timer.snapshot("iterator")?;
    cmd::run(cmd::command("kill").args(["-INT", &perf.id().to_string()]))?;
    let _ = perf.wait_with_output();
    let report = cmd::output(
        cmd::command("perf")
            .args(["report", "--no-children", "--stdio", "-q", "-g", "none"])
            .args(["--sort", "dso,sym", "--percent-limit", "1.5", "-i"])
            .arg(&data),
    )
    .unwrap_or_default();
    let mut top = String::new();
    for line in report
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(25)
    {
        writeln!(top, "{}", line.trim_end())?;
    }
    Ok(format!(
        "\n### Where one snapshot's time goes at {size} sockets, {} TCP hash table\n\n`perf record -g` of the snapshot timer during one snapshot by the iterator ({:.0} ms under perf), self time by symbol (>= 1.5%):\n\n```text\n{top}```\n",
        table.label(),
        profiled.millis
    ))
}

/// The daemon as deployed, on `size` sockets made for it.
fn daemon_at(size: usize, notes: &mut Vec<String>) -> Result<String> {
    let netns = scale_netns("daemon")?;
    let inode = fs::metadata(Path::new("/run/netns").join(&netns.0))?.ino();
    let holder = Holder::start(&netns, size)?;
    let monitor = PortMonitor::start(&[])?;
    let url = format!("http://{}/metrics", monitor.address);
    let pid = monitor.pid();
    let snapshots = |text: &str| metric(text, "port_monitor_snapshots_total", &[]).unwrap_or(0.0);
    let (cpu_before, started) = (cpu_seconds(pid)?, Instant::now());
    let mut last = snapshots(&monitor.scrape()?);
    let (mut scrapes, mut durations, mut seen) = (Vec::new(), Vec::new(), 0.0);
    let netns_label = format!("netns=\"{inode}\"");
    for _ in 0..SCRAPES {
        if holder.expiring() {
            notes.push(format!(
                "{size} sockets, daemon: {} scrapes fitted in the window",
                scrapes.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let (seconds, _) = timed_scrape(cmd::command("curl"), &url)?;
        scrapes.push(seconds * 1000.0);
        let text = monitor.scrape()?;
        if snapshots(&text) > last {
            last = snapshots(&text);
            durations.push(
                metric(&text, "port_monitor_snapshot_duration_seconds", &[]).unwrap_or(f64::NAN)
                    * 1000.0,
            );
            seen = metric(
                &text,
                "port_monitor_sockets",
                &[&netns_label, "protocol=\"tcp\""],
            )
            .unwrap_or(0.0);
        }
    }
    let cpu = cpu_seconds(pid)? - cpu_before;
    let seconds = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "KiB counts stay far below 2^53")]
    let rss = resident_kib(pid)? as f64 / 1024.0;
    let peak = peak_kib(pid).unwrap_or(f64::NAN) / 1024.0;
    monitor.stop()?;
    drop(holder);
    drop(netns);
    Ok(format!(
        "| {size} | {seen:.0} | {rss:.1} / {peak:.1} | {cpu:.2} / {seconds:.1} | {:.2} | {:.1} | {:.3} |\n",
        cpu / seconds * 100.0,
        Spread::of(&durations),
        Spread::of(&scrapes),
    ))
}

/// Peak resident memory of `pid` (`VmHWM`), in KiB.
fn peak_kib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The connect/close loop in a namespace holding [`LOADED`] sockets, without and with the
/// daemon running, interleaved pairs (the order swapped each pair).
fn slowdown() -> Result<String> {
    let mut lines = String::new();
    let mut slowdowns = Vec::new();
    let mut baselines = Vec::new();
    for pair in 0..PAIRS {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut rates = [0.0; 2];
        for monitored in order {
            rates[usize::from(monitored)] = loop_trial(monitored)?;
        }
        let [baseline, monitored] = rates;
        let slowdown = (1.0 - monitored / baseline) * 100.0;
        writeln!(
            lines,
            "  pair {pair}: {baseline:.0} -> {monitored:.0} cycles/s ({slowdown:+.2}%)"
        )?;
        slowdowns.push(slowdown);
        baselines.push(baseline);
    }
    let spread = Spread::of(&slowdowns);
    Ok(format!(
        "\n## Snapshots at scale: the workload's slowdown\n\n`loadgen {LOOP_SECONDS} fin` in a namespace holding {LOADED} sockets, {PAIRS} interleaved pairs.\n\n| baseline cycles/s (median) | slowdown median | min | max |\n|---|---|---|---|\n| {:.0} | {:+.2}% | {:+.2}% | {:+.2}% |\n\n```text\n{lines}```\n",
        Spread::of(&baselines).median,
        spread.median,
        spread.min,
        spread.max
    ))
}

/// One trial: fresh namespace, [`LOADED`] sockets, then the loop; cycles a second.
fn loop_trial(monitored: bool) -> Result<f64> {
    let netns = scale_netns("loop")?;
    let holder = Holder::start(&netns, LOADED)?;
    // The loop connects to one listener: it needs the default TIME_WAIT reuse on loopback to
    // keep finding ports, as in the overhead part.
    cmd::run(
        netns
            .exec("sysctl")
            .args(["-q", "-w", "net.ipv4.tcp_tw_reuse=2"]),
    )?;
    let monitor = monitored.then(|| PortMonitor::start(&[])).transpose()?;
    let output = netns
        .exec("target/release/loadgen")
        .args([&LOOP_SECONDS.to_string(), "fin"])
        .output()
        .context("loadgen")?;
    if let Some(monitor) = monitor {
        monitor.stop()?;
    }
    drop(holder);
    drop(netns);
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .and_then(|rate| rate.parse().ok())
        .context("loadgen's rate")
}
