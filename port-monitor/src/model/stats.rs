//! Counts about port-monitor itself and the kernel programs' own counters.

use std::collections::BTreeMap;

use port_monitor_common::{Operation, maps::ErrorKey};

use super::{NamespaceSnapshot, NetnsId, Timing, consistency};

/// The kernel programs' counters, read from their maps: absolute values since they loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Failed calls by key, summed over CPUs.
    pub errors: Vec<(ErrorKey, u64)>,
    /// TCP state transitions, node-wide.
    pub transitions: consistency::Transitions,
    /// Records dropped because the ring buffer was full.
    pub events_lost: u64,
    /// Failed calls not counted because the error map was full.
    pub error_keys_dropped: u64,
    /// Port failures not counted because their map was full.
    pub port_failure_keys_dropped: u64,
    /// Bound sockets not tracked because their map was full.
    pub bound_sockets_dropped: u64,
}

/// Counts about port-monitor itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelfStats {
    /// Ring buffer records received, by operation.
    pub events: BTreeMap<Operation, u64>,
    pub events_lost: u64,
    /// Ring buffer records that did not decode.
    pub events_undecodable: u64,
    pub error_keys_dropped: u64,
    pub port_failure_keys_dropped: u64,
    pub bound_sockets_dropped: u64,
    /// Snapshots of all namespaces completed.
    pub snapshots: u64,
    /// Seconds the latest snapshot of all namespaces took.
    pub last_snapshot_seconds: f64,
    /// Namespaces that could not be read, summed over snapshots.
    pub snapshot_failures: u64,
    /// Namespaces the latest snapshot could not read: their gauges are the previous ones.
    pub unreadable_namespaces: usize,
    /// Namespaces of the latest snapshot whose port sysctls could not be read: their
    /// ephemeral range gauges are missing.
    pub unreadable_sysctls: usize,
    /// Namespaces of the latest snapshot whose conntrack table could not be read.
    pub unreadable_conntrack: usize,
    /// Sockets the counted TCP transitions could not explain, summed over snapshots
    /// (see `consistency`).
    pub snapshot_corrections: u64,
}

impl SelfStats {
    /// Notes a snapshot of the node: `failed` namespaces could not be read.
    pub fn note_snapshot(
        &mut self,
        snapshots: &[NamespaceSnapshot],
        failed: &[NetnsId],
        timing: Timing,
    ) {
        self.snapshots += 1;
        self.last_snapshot_seconds = timing.duration_seconds;
        self.snapshot_failures += failed.len() as u64;
        self.unreadable_namespaces = failed.len();
        self.unreadable_sysctls = snapshots
            .iter()
            .filter(|snapshot| snapshot.ports.is_none())
            .count();
        self.unreadable_conntrack = snapshots
            .iter()
            .filter(|snapshot| snapshot.conntrack_unreadable)
            .count();
    }

    /// Takes the kernel programs' own counters.
    pub fn note_kernel_counters(&mut self, counters: &KernelCounters) {
        self.events_lost = counters.events_lost;
        self.error_keys_dropped = counters.error_keys_dropped;
        self.port_failure_keys_dropped = counters.port_failure_keys_dropped;
        self.bound_sockets_dropped = counters.bound_sockets_dropped;
    }
}
