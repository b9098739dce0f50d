//! Times port-monitor's snapshot of every namespace of the node, once per line read from
//! standard input: the measuring half of `cargo xtask bench scale`, which runs `ss` between
//! two of them. A line `sock_diag` lists TCP sockets with `sock_diag`; any other, with the
//! `iter/tcp` program (the daemon's default). Each answer is one line: `MILLISECONDS
//! LARGEST_TCP RSS_KIB PEAK_RSS_KIB`, the snapshot's duration, the TCP sockets of the
//! namespace with the most, and this process's resident memory now and at its peak.
//!
//! It loads the kernel programs as the daemon does (without the errno collectors, which a
//! snapshot does not read) and calls the function the daemon's snapshot thread calls
//! (`snapshot::snapshot_node_with`) with the daemon's sources, each listing with its own
//! memory of the previous snapshot, as the daemon keeps one. Run as root: it enters every
//! namespace.

use std::io::{BufRead as _, Write as _};

use port_monitor::{
    kernel::{Collectors, ErrnoHook, Kernel, TcpStateHook},
    model::{Protocol, TcpState},
    snapshot::{ConnectionMemory, Sources, snapshot_node_with},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let collectors = Collectors {
        tcp_state_hook: TcpStateHook::Auto,
        errno_hook: ErrnoHook::Fexit,
        bind: false,
        autobind: false,
    };
    let (kernel, _events) = Kernel::load(collectors, None)?;
    let sources = |tcp_lister| Sources {
        proc: "/proc".into(),
        bound_sockets: kernel.bound_sockets(),
        conntrack: true,
        tcp_lister,
    };
    let mut by_iterator = (sources(kernel.tcp_lister()), ConnectionMemory::default());
    let mut by_sock_diag = (sources(None), ConnectionMemory::default());
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let (sources, memory) = if line?.trim() == "sock_diag" {
            &mut by_sock_diag
        } else {
            &mut by_iterator
        };
        let snapshot = snapshot_node_with(sources, memory);
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
