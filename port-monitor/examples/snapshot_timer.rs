//! Times port-monitor's snapshot of every namespace of the node, once per line read from
//! standard input: the measuring half of `cargo xtask bench scale`, which runs `ss` between
//! two of them. Each answer is one line: `MILLISECONDS LARGEST_TCP RSS_KIB PEAK_RSS_KIB`, the
//! snapshot's duration, the TCP sockets of the namespace with the most, and this process's
//! resident memory now and at its peak.
//!
//! It calls the function the daemon's snapshot thread calls (`snapshot::snapshot_node`),
//! without the bound-socket programs (the tables list bound sockets from Linux 6.7 on, where
//! the daemon does not attach them either). Run as root: it enters every namespace.

use std::io::{BufRead as _, Write as _};

use port_monitor::{
    model::{Protocol, TcpState},
    snapshot::{Sources, snapshot_node},
};

fn main() -> std::io::Result<()> {
    let sources = Sources {
        proc: "/proc".into(),
        bound_sockets: None,
        conntrack: true,
    };
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        line?;
        let snapshot = snapshot_node(&sources);
        let largest = snapshot
            .namespaces
            .iter()
            .map(|namespace| {
                TcpState::LISTED
                    .iter()
                    .map(|state| namespace.sockets.sockets(Protocol::Tcp, *state))
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        let (rss, peak) = memory_kib();
        writeln!(
            out,
            "{:.3} {largest} {rss} {peak}",
            snapshot.duration.as_secs_f64() * 1000.0
        )?;
        out.flush()?;
    }
    Ok(())
}

/// `VmRSS` and `VmHWM` of this process, in KiB (0 where unreadable).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
