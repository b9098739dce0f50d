//! Scrape cost as sockets grow, side by side with `node_exporter`, and port-monitor's memory,
//! CPU and snapshot time: idle, with 1k, 10k and 100k sockets in a namespace, and under a
//! connection churn.
//!
//! port-monitor answers a scrape from its model, which the snapshot thread refreshes every
//! interval; `node_exporter`'s tcpstat collector reads the socket table during the scrape.
//! Both are scraped with curl, interleaved, and curl's own timing (connect to last byte) is
//! kept. `node_exporter` runs inside the namespace (its collectors read the namespace they
//! run in), port-monitor outside it (it reads every namespace).

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Netns, RESULTS, Spread,
    process::{PortMonitor, cpu_seconds, metric, resident_kib, timed_scrape},
};
use crate::cmd;

/// The plot's data: one line per socket count.
pub const DATA: &str = "scrape.dat";

const SOCKET_COUNTS: [usize; 3] = [1_000, 10_000, 100_000];

/// Interleaved scrapes of each exporter per socket count.
const SCRAPES: usize = 15;

/// Snapshots whose duration is sampled per socket count.
const SNAPSHOTS: usize = 4;

/// Where `node_exporter` listens, inside the namespace.
const NODE_EXPORTER: &str = "127.0.0.1:9101";

pub fn run() -> Result<String> {
    let monitor = PortMonitor::start(&[])?;
    let mut resources = String::from(
        "\n## Memory and CPU of port-monitor\n\n| state | RSS MiB | CPU seconds / seconds measured | CPU, % of one core | snapshot ms: median (min-max) | node_exporter RSS MiB |\n|---|---|---|---|---|---|\n",
    );
    let idle = usage(&monitor, || {
        std::thread::sleep(Duration::from_secs(20));
        Ok(())
    })?;
    writeln!(
        resources,
        "| idle | {:.1} | {} | {:.2} | {:.2} | - |",
        idle.rss_mib,
        idle.cpu_share(),
        idle.cpu_percent(),
        snapshot_ms(&monitor.scrape()?)
    )?;

    let mut latency = String::from(
        "\n## Scrape latency as sockets grow\n\n| sockets in the namespace (listen / established / time_wait) | seen by port-monitor | port-monitor scrape ms: median (min-max) | node_exporter (tcpstat, sockstat) scrape ms | port-monitor body KiB | node_exporter body KiB |\n|---|---|---|---|---|---|\n",
    );
    let mut data = String::from("# sockets pm_median pm_min pm_max ne_median ne_min ne_max\n");
    for count in SOCKET_COUNTS {
        let WithSockets {
            sockets,
            kinds,
            measured,
        } = with_sockets(&monitor, count)?;
        writeln!(
            latency,
            "| {sockets} ({kinds}) | {:.0} | {:.3} | {:.3} | {:.1} | {:.1} |",
            measured.seen,
            measured.port_monitor,
            measured.node_exporter,
            measured.port_monitor_kib,
            measured.node_exporter_kib,
        )?;
        writeln!(
            resources,
            "| {sockets} sockets | {:.1} | {} | {:.2} | {:.1} | {:.1} |",
            measured.usage.rss_mib,
            measured.usage.cpu_share(),
            measured.usage.cpu_percent(),
            measured.snapshots,
            measured.node_exporter_rss_mib,
        )?;
        let (pm, ne) = (measured.port_monitor, measured.node_exporter);
        writeln!(
            data,
            "{sockets} {} {} {} {} {} {}",
            pm.median, pm.min, pm.max, ne.median, ne.min, ne.max
        )?;
    }
    fs::write(Path::new(RESULTS).join(DATA), data)?;

    let churn = Netns::new("churn")?;
    let mut cycles_per_second = String::new();
    let churn_usage = usage(&monitor, || {
        let output = churn
            .exec("target/release/loadgen")
            .args(["20", "fin"])
            .output()
            .context("loadgen")?;
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .clone_into(&mut cycles_per_second);
        Ok(())
    })?;
    drop(churn);
    writeln!(
        resources,
        "| churn: loadgen fin, {cycles_per_second} connections/s | {:.1} | {} | {:.2} | {:.2} | - |",
        churn_usage.rss_mib,
        churn_usage.cpu_share(),
        churn_usage.cpu_percent(),
        snapshot_ms(&monitor.scrape()?)
    )?;
    monitor.stop()?;
    print!("{latency}{resources}");
    Ok(format!("{latency}{resources}"))
}

/// What port-monitor used while `work` ran.
struct Usage {
    rss_mib: f64,
    cpu_seconds: f64,
    seconds: f64,
}

impl Usage {
    fn cpu_percent(&self) -> f64 {
        self.cpu_seconds / self.seconds * 100.0
    }

    /// `CPU seconds / seconds measured`.
    fn cpu_share(&self) -> String {
        format!("{:.2} / {:.1}", self.cpu_seconds, self.seconds)
    }
}

fn usage(monitor: &PortMonitor, work: impl FnOnce() -> Result<()>) -> Result<Usage> {
    let pid = monitor.pid();
    let (cpu_before, started) = (cpu_seconds(pid)?, Instant::now());
    work()?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    #[expect(clippy::cast_precision_loss, reason = "KiB counts stay far below 2^53")]
    let rss_mib = resident_kib(pid)? as f64 / 1024.0;
    Ok(Usage {
        rss_mib,
        cpu_seconds: cpu,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn snapshot_ms(metrics: &str) -> f64 {
    metric(metrics, "port_monitor_snapshot_duration_seconds", &[]).unwrap_or(f64::NAN) * 1000.0
}

struct WithSockets {
    sockets: usize,
    /// `listen` / `established` / `time_wait` counts.
    kinds: String,
    measured: Measured,
}

/// What one socket count gave.
struct Measured {
    /// TCP sockets port-monitor counted in the namespace.
    seen: f64,
    /// Scrape seconds.
    port_monitor: Spread,
    node_exporter: Spread,
    port_monitor_kib: f64,
    node_exporter_kib: f64,
    /// Snapshot milliseconds.
    snapshots: Spread,
    usage: Usage,
    node_exporter_rss_mib: f64,
}

fn with_sockets(monitor: &PortMonitor, count: usize) -> Result<WithSockets> {
    let netns = Netns::new("sockets")?;
    let inode = fs::metadata(Path::new("/run/netns").join(&netns.0))?.ino();
    let (mut holder, [listen, established, time_wait]) = netns.hold_sockets(&count.to_string())?;
    let mut node_exporter = netns
        .exec("prometheus-node-exporter")
        .args([
            &format!("--web.listen-address={NODE_EXPORTER}"),
            "--collector.disable-defaults",
            "--collector.tcpstat",
            "--collector.sockstat",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting node_exporter")?;
    let result = measure(monitor, &netns, inode, &node_exporter);
    let _ = node_exporter.kill();
    let _ = node_exporter.wait();
    release(holder.stdin.take(), &mut holder);
    Ok(WithSockets {
        sockets: listen + established + time_wait,
        kinds: format!("{listen} / {established} / {time_wait}"),
        measured: result?,
    })
}

/// Closing the holder's standard input lets it exit and its sockets go.
fn release(stdin: Option<std::process::ChildStdin>, holder: &mut Child) {
    drop(stdin);
    let _ = holder.wait();
}

fn measure(
    monitor: &PortMonitor,
    netns: &Netns,
    inode: u64,
    node_exporter: &Child,
) -> Result<Measured> {
    let ne_url = format!("http://{NODE_EXPORTER}/metrics");
    let pm_url = format!("http://{}/metrics", monitor.address);
    // node_exporter up, and a snapshot that started after the sockets were made.
    let deadline = Instant::now() + Duration::from_secs(10);
    while timed_scrape(netns.exec("curl"), &ne_url).is_err() {
        if Instant::now() > deadline {
            bail!("node_exporter did not answer in the namespace");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let snapshots = |text: &str| metric(text, "port_monitor_snapshots_total", &[]).unwrap_or(0.0);
    let first = snapshots(&monitor.scrape()?);
    wait_for(monitor, |text| snapshots(text) >= first + 2.0)?;
    let netns_label = format!("netns=\"{inode}\"");
    let seen = metric(
        &monitor.scrape()?,
        "port_monitor_sockets",
        &[&netns_label, "protocol=\"tcp\""],
    )
    .unwrap_or(0.0);

    let mut pm_times = Vec::new();
    let mut ne_times = Vec::new();
    let mut sizes = (0.0, 0.0);
    let mut durations = Vec::new();
    let usage = usage(monitor, || {
        for _ in 0..SCRAPES {
            let (seconds, size) = timed_scrape(cmd::command("curl"), &pm_url)?;
            pm_times.push(seconds);
            sizes.0 = kib(size);
            let (seconds, size) = timed_scrape(netns.exec("curl"), &ne_url)?;
            ne_times.push(seconds);
            sizes.1 = kib(size);
        }
        // The duration of each snapshot taken from here on.
        let mut last = snapshots(&monitor.scrape()?);
        while durations.len() < SNAPSHOTS {
            let text = wait_for(monitor, |text| snapshots(text) > last)?;
            last = snapshots(&text);
            durations.push(snapshot_ms(&text));
        }
        Ok(())
    })?;
    #[expect(clippy::cast_precision_loss, reason = "KiB counts stay far below 2^53")]
    let node_exporter_rss_mib = resident_kib(node_exporter.id())? as f64 / 1024.0;
    Ok(Measured {
        seen,
        port_monitor: Spread::of(&pm_times).scaled(1000.0),
        node_exporter: Spread::of(&ne_times).scaled(1000.0),
        port_monitor_kib: sizes.0,
        node_exporter_kib: sizes.1,
        snapshots: Spread::of(&durations),
        usage,
        node_exporter_rss_mib,
    })
}

#[expect(clippy::cast_precision_loss, reason = "body sizes stay far below 2^53")]
fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

/// Scrapes until `done` holds (at most 30 s); returns that scrape.
fn wait_for(monitor: &PortMonitor, done: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = monitor.scrape()?;
        if done(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("port-monitor did not take a new snapshot within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
