//! `series`: what the metrics of a node cost Prometheus, as its pods grow: the series of a
//! scrape with 10 and with 110 idle pod-like namespaces (one listener each, as a pod's
//! server has), at `--metrics.detail=compact` (the default) and `full`.

use std::{
    fmt::Write as _,
    os::unix::fs::MetadataExt as _,
    process::Child,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{Netns, process::PortMonitor};

/// Namespaces per run: a small node, and Kubernetes' default pod limit per node.
const NAMESPACE_COUNTS: [usize; 2] = [10, 110];

pub fn run() -> Result<String> {
    let mut table = String::from(
        "\n## Series per node\n\n| idle namespaces | detail | series in a scrape | series of one idle namespace (mean) | node-wide and other series |\n|---:|---|---:|---:|---:|\n",
    );
    for count in NAMESPACE_COUNTS {
        let idle = IdleNamespaces::new(count)?;
        for detail in ["compact", "full"] {
            let monitor = PortMonitor::start(&[&format!("--metrics.detail={detail}")])?;
            let text = wait_for_all(&monitor, &idle.ids)?;
            monitor.stop()?;
            let series = text.lines().filter(|line| !line.starts_with('#')).count();
            let theirs: usize = idle
                .ids
                .iter()
                .map(|id| {
                    let label = format!("netns=\"{id}\"");
                    text.lines().filter(|line| line.contains(&label)).count()
                })
                .sum();
            #[expect(clippy::cast_precision_loss, reason = "small counts")]
            let mean = theirs as f64 / count as f64;
            writeln!(
                table,
                "| {count} | {detail} | {series} | {mean:.1} | {} |",
                series - theirs
            )?;
        }
    }
    Ok(table)
}

/// Namespaces holding one listener each, removed (and their holders stopped) on drop.
struct IdleNamespaces {
    ids: Vec<u64>,
    holders: Vec<Child>,
    _namespaces: Vec<Netns>,
}

impl IdleNamespaces {
    fn new(count: usize) -> Result<Self> {
        let mut namespaces = Vec::with_capacity(count);
        let mut holders = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for index in 0..count {
            let netns = Netns::new(&format!("idle{index}"))?;
            ids.push(std::fs::metadata(format!("/run/netns/{}", netns.0))?.ino());
            let (holder, _) = netns.hold_sockets("idle")?;
            holders.push(holder);
            namespaces.push(netns);
        }
        Ok(Self {
            ids,
            holders,
            _namespaces: namespaces,
        })
    }
}

impl Drop for IdleNamespaces {
    fn drop(&mut self) {
        for holder in &mut self.holders {
            // Closing its standard input releases it.
            drop(holder.stdin.take());
            let _ = holder.wait();
        }
    }
}

/// Scrapes until every namespace of `ids` has its listener counted.
fn wait_for_all(monitor: &PortMonitor, ids: &[u64]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let text = monitor.scrape()?;
        let seen = ids
            .iter()
            .filter(|id| {
                text.contains(&format!(
                    "port_monitor_sockets{{netns=\"{id}\",protocol=\"tcp\",state=\"listen\"}} 1"
                ))
            })
            .count();
        if seen == ids.len() {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {} namespaces seen", ids.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
