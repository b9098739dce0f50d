//! The model: what port-monitor knows about the node, as plain data.
//!
//! Every fact enters once, from the cheapest source that gives it exactly:
//! - gauges (sockets by state, ports in use, port ranges) from the kernel's socket tables and
//!   sysctls, one [`NamespaceSnapshot`] per namespace per interval;
//! - counters (failed calls, TCP transitions, lost records) from the kernel programs' maps,
//!   as absolute values in [`KernelCounters`];
//! - one [`Failure`] per failed call that the programs managed to send.
//!
//! Nothing here does I/O; the exporter renders this state at scrape time.

pub mod anomalies;
pub mod consistency;
pub mod errno;
mod failures;
pub mod headroom;
mod namespace;
pub mod ports;
pub mod sockets;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
};

use port_monitor_common::{Operation, maps::ErrorKey};

pub use self::{
    anomalies::AnomalyKind,
    failures::{Caller, Failure, FailureKind},
    namespace::{EphemeralRange, NamespaceGauges, NamespaceSnapshot},
    ports::{PortConfig, PortRange, PortSet, TimeWaitReuse},
    sockets::{Binder, BoundConnection, Destination, Socket, SocketTally, TcpState},
};

/// A network namespace, by the inode number of its `/proc/<pid>/ns/net`.
pub type NetnsId = u32;

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const COUNT: usize = 2;
    pub const ALL: [Self; Self::COUNT] = [Self::Tcp, Self::Udp];

    /// The protocol with this IP protocol number, if port-monitor follows it.
    #[must_use]
    pub const fn from_ip(number: u8) -> Option<Self> {
        match number {
            port_monitor_common::PROTOCOL_TCP => Some(Self::Tcp),
            port_monitor_common::PROTOCOL_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// The `protocol` label value.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

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
    /// Sockets the counted TCP transitions could not explain, summed over snapshots
    /// (see [`consistency`]).
    pub snapshot_corrections: u64,
}

/// What the model is told to compute: the configuration file's values (`config`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// TCP destinations per namespace with their own series.
    pub top_destinations: usize,
    /// Whether destination series tell source addresses apart (`src_addr`).
    pub destination_source_address: bool,
    /// Utilization ratio from which a destination is near exhaustion.
    pub near_exhaustion_ratio: f64,
    /// Share of capacity above which `TIME_WAIT` toward one destination accumulates.
    pub time_wait_share: f64,
    /// When refused connections make a port scan.
    pub port_scan: anomalies::PortScanLimits,
    /// Connections a second, opened and closed between snapshots toward one destination,
    /// that make churn.
    pub churn_per_second: f64,
}

/// When a snapshot was taken, for rates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// How long reading every namespace took.
    pub duration_seconds: f64,
    /// When it began, in seconds on a monotonic clock (the daemon's start, say).
    pub started_seconds: f64,
}

impl Default for Settings {
    /// The defaults of the configuration file (docs/configuration.md), written only here.
    fn default() -> Self {
        Self {
            top_destinations: 5,
            destination_source_address: true,
            near_exhaustion_ratio: 0.8,
            time_wait_share: 0.5,
            port_scan: anomalies::PortScanLimits {
                window_ns: 10_000_000_000,
                refused: 100,
                distinct_ports: 20,
            },
            churn_per_second: 100.0,
        }
    }
}

/// Everything the exporter shows.
#[derive(Debug, Default)]
pub struct Model {
    settings: Settings,
    namespaces: BTreeMap<NetnsId, NamespaceGauges>,
    failures: BTreeMap<NetnsId, BTreeMap<FailureKind, u64>>,
    transitions: consistency::Transitions,
    stats: SelfStats,
    /// Namespaces with counters but not found by the latest discovery: retired if the next
    /// one does not find them either.
    unseen: BTreeSet<NetnsId>,
    /// Kernel map entries still to be deleted: of namespaces that are gone (any cookie), and
    /// of earlier namespaces whose inode number a new one has taken (their cookie).
    retired: BTreeSet<Retired>,
    /// Each namespace's cookie, from its latest snapshot.
    cookies: BTreeMap<NetnsId, u64>,
    consistency: consistency::Consistency,
    crossings: anomalies::Crossings,
    port_scans: anomalies::PortScans,
    /// Each namespace's connections at its previous snapshot (hashed 4-tuples), and when that
    /// snapshot began.
    previous_connections: HashMap<NetnsId, (f64, HashSet<u64>)>,
    /// Namespaces missing from the latest snapshot but present in the one before: their
    /// anomaly bookkeeping is kept one more snapshot, as their counters are, so that one
    /// missed discovery does not count their anomalies again.
    absent_once: BTreeSet<NetnsId>,
    last_anomaly: BTreeMap<AnomalyKind, Latest>,
}

/// What a bound-then-connected socket is about: its port and where it went.
fn describe_bound(bound: &BoundConnection) -> String {
    format!(
        "port {} bound by {} before connecting to {}",
        bound.local.port(),
        bound.binder.comm(),
        bound.remote
    )
}

/// Kernel counters to delete: a namespace's, or only those of one cookie (`Some`) under that
/// inode number.
pub type Retired = (NetnsId, Option<u64>);

/// The most recent anomaly of a kind: where, who (when the kernel saw the caller), and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAnomaly {
    pub netns: NetnsId,
    pub caller: Option<Caller>,
    pub cgroup_id: Option<u64>,
    /// The destination, address or port it is about.
    pub subject: String,
}

/// A [`LastAnomaly`] as the model keeps it: a failed call's subject is described only when it
/// is shown. Failure records can come by the million a second and only the last one of each
/// kind is ever shown, while formatting the addresses of every one was most of the cost of
/// absorbing a record (benches/aggregator.rs).
#[derive(Clone, Debug)]
struct Latest {
    netns: NetnsId,
    caller: Option<Caller>,
    cgroup_id: Option<u64>,
    subject: Subject,
}

#[derive(Clone, Debug)]
enum Subject {
    /// Described when it happened: a condition a snapshot showed, a port scan.
    Described(String),
    /// A failed call's local address, and its destination for a connect.
    Call {
        local: SocketAddr,
        remote: Option<SocketAddr>,
    },
}

impl Latest {
    fn shown(&self) -> LastAnomaly {
        LastAnomaly {
            netns: self.netns,
            caller: self.caller.clone(),
            cgroup_id: self.cgroup_id,
            subject: match &self.subject {
                Subject::Described(subject) => subject.clone(),
                Subject::Call {
                    local,
                    remote: Some(remote),
                } => format!("{} -> {remote}", local.ip()),
                Subject::Call {
                    local,
                    remote: None,
                } => local.to_string(),
            },
        }
    }
}

impl Model {
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        Self {
            port_scans: anomalies::PortScans::new(settings.port_scan),
            settings,
            ..Self::default()
        }
    }

    /// Replaces every namespace's gauges with a complete snapshot of the node. `failed`
    /// namespaces exist but could not be read: they keep their previous gauges. Any other
    /// namespace missing from the snapshot is gone: its series are removed and its kernel
    /// counters retired. Returns the anomalies the snapshot shows starting, for the log.
    pub fn apply_snapshot(
        &mut self,
        snapshots: &[NamespaceSnapshot],
        failed: &[NetnsId],
        timing: Timing,
    ) -> Vec<(NetnsId, AnomalyKind, String)> {
        for snapshot in snapshots {
            let Some(cookie) = snapshot.cookie else {
                continue;
            };
            if let Some(earlier) = self.cookies.insert(snapshot.netns, cookie)
                && earlier != cookie
            {
                // The inode number was freed and given to a new namespace between two
                // snapshots: nothing of the old one carries over.
                self.forget_namespace(snapshot.netns);
                self.retired.insert((snapshot.netns, Some(earlier)));
            }
        }
        let mut namespaces: BTreeMap<NetnsId, NamespaceGauges> = snapshots
            .iter()
            .map(|snapshot| {
                (
                    snapshot.netns,
                    NamespaceGauges::from_snapshot(snapshot, &self.settings),
                )
            })
            .collect();
        for netns in failed {
            if let Some(previous) = self.namespaces.remove(netns) {
                namespaces.insert(*netns, previous);
            }
        }
        let absent: BTreeSet<NetnsId> = self
            .namespaces
            .keys()
            .filter(|netns| !namespaces.contains_key(netns))
            .copied()
            .collect();
        self.namespaces = namespaces;
        let mut happened = Vec::new();
        for snapshot in snapshots {
            let churn = self.churn(snapshot, timing.started_seconds);
            let Some(gauges) = self.namespaces.get(&snapshot.netns) else {
                continue;
            };
            let conditions = anomalies::Conditions {
                connection_churn: churn,
                ..self.conditions(snapshot, gauges)
            };
            happened.extend(self.count_crossings(snapshot, conditions));
        }
        let seen: BTreeSet<NetnsId> = snapshots
            .iter()
            .map(|snapshot| snapshot.netns)
            .chain(failed.iter().copied())
            .collect();
        // A namespace seen only by the kernel programs may have been created after discovery
        // ran: give it one more interval before calling it gone.
        let unseen: BTreeSet<NetnsId> = self
            .failures
            .keys()
            .copied()
            .filter(|netns| !seen.contains(netns))
            .collect();
        for netns in unseen.intersection(&self.unseen) {
            self.failures.remove(netns);
            self.retired.insert((*netns, None));
        }
        self.unseen = unseen
            .into_iter()
            .filter(|netns| !self.retired.contains(&(*netns, None)))
            .collect();
        self.stats.snapshots += 1;
        self.stats.last_snapshot_seconds = timing.duration_seconds;
        self.stats.snapshot_failures += failed.len() as u64;
        self.stats.unreadable_namespaces = failed.len();
        self.stats.unreadable_sysctls = snapshots
            .iter()
            .filter(|snapshot| snapshot.ports.is_none())
            .count();
        let mut alive: BTreeSet<NetnsId> = self.known_namespaces();
        alive.extend(&absent);
        self.absent_once = absent;
        self.crossings.retain(|netns| alive.contains(&netns));
        self.port_scans.retain(|netns| alive.contains(&netns));
        self.previous_connections
            .retain(|netns, _| alive.contains(netns));
        self.last_anomaly
            .retain(|_, last| alive.contains(&last.netns));
        self.cookies.retain(|netns, _| alive.contains(netns));
        happened
    }

    /// Counts the conditions a namespace's snapshot shows starting, and remembers the latest of
    /// each kind; returns them, for the log.
    fn count_crossings(
        &mut self,
        snapshot: &NamespaceSnapshot,
        conditions: anomalies::Conditions,
    ) -> Vec<(NetnsId, AnomalyKind, String)> {
        let mut happened = Vec::new();
        for (kind, subject) in self.crossings.update(snapshot.netns, conditions) {
            // Bind before connect names the process the bind hook saw.
            let binder = (kind == AnomalyKind::BindBeforeConnect)
                .then(|| {
                    let (_, by_process) = snapshot.sockets.bound_connections();
                    by_process
                        .values()
                        .find(|bound| describe_bound(bound) == subject)
                        .map(|bound| bound.binder)
                })
                .flatten();
            self.last_anomaly.insert(
                kind,
                Latest {
                    netns: snapshot.netns,
                    caller: binder
                        .filter(|binder| binder.tgid != 0)
                        .map(|binder| Caller {
                            tgid: binder.tgid,
                            pid: binder.tgid,
                            comm: binder.comm(),
                        }),
                    cgroup_id: binder.map(|binder| binder.cgroup_id).filter(|id| *id != 0),
                    subject: Subject::Described(subject.clone()),
                },
            );
            happened.push((snapshot.netns, kind, subject));
        }
        happened
    }

    /// Drops the anomaly bookkeeping and counters of a namespace.
    fn forget_namespace(&mut self, netns: NetnsId) {
        self.failures.remove(&netns);
        self.crossings.retain(|known| known != netns);
        self.port_scans.retain(|known| known != netns);
        self.previous_connections.remove(&netns);
        self.last_anomaly.retain(|_, last| last.netns != netns);
    }

    /// Checks the latest snapshot against the TCP transitions counted just before and just
    /// after its tables were read, and counts what they could not explain. Returns that
    /// number, or `None` for the first check.
    pub fn check_transitions(
        &mut self,
        before: &consistency::Transitions,
        after: consistency::Transitions,
    ) -> Option<u64> {
        if self.stats.unreadable_namespaces > 0 {
            // The totals would include the stale gauges of the namespaces not read: no check
            // this time, and the next compares with a complete snapshot.
            self.consistency.restart();
            return None;
        }
        let mut totals = consistency::Totals::new();
        for gauges in self.namespaces.values() {
            for (protocol, state, count) in gauges.sockets() {
                if protocol == Protocol::Tcp {
                    *totals.entry(state).or_default() += count;
                }
            }
        }
        let corrections = self.consistency.check(before, totals, after);
        self.stats.snapshot_corrections += corrections.unwrap_or(0);
        corrections
    }

    /// Replaces the counters with the kernel's current values.
    pub fn apply_kernel_counters(&mut self, counters: &KernelCounters) {
        let mut failures: BTreeMap<NetnsId, BTreeMap<FailureKind, u64>> = BTreeMap::new();
        for (key, count) in &counters.errors {
            let current = self.cookies.get(&key.netns);
            if key.netns_cookie != 0 && current.is_some_and(|cookie| *cookie != key.netns_cookie) {
                // Counts of an earlier namespace with this inode number.
                self.retired.insert((key.netns, Some(key.netns_cookie)));
                continue;
            }
            if self.retired.contains(&(key.netns, None))
                || self.retired.contains(&(key.netns, Some(key.netns_cookie)))
            {
                continue;
            }
            if let Some(kind) = FailureKind::from_key(key) {
                *failures
                    .entry(key.netns)
                    .or_default()
                    .entry(kind)
                    .or_default() += count;
            }
        }
        self.failures = failures;
        self.transitions.clone_from(&counters.transitions);
        self.stats.events_lost = counters.events_lost;
        self.stats.error_keys_dropped = counters.error_keys_dropped;
        self.stats.port_failure_keys_dropped = counters.port_failure_keys_dropped;
        self.stats.bound_sockets_dropped = counters.bound_sockets_dropped;
    }

    /// Counts records from the kernel programs that did not decode.
    pub fn count_undecodable(&mut self, records: u64) {
        self.stats.events_undecodable += records;
    }

    /// Counts a record received from the kernel programs. Returns a port scan it starts,
    /// for the log.
    pub fn apply_failure(&mut self, failure: &Failure) -> Option<String> {
        *self.stats.events.entry(failure.kind.operation).or_default() += 1;
        if failure.kind.is_refused()
            && let Some(remote) = failure.remote
            && let Some(scan) = self.port_scans.record(
                failure.netns,
                failure.cgroup_id.unwrap_or(0),
                failure.timestamp_ns,
                remote.port(),
            )
        {
            self.last_anomaly.insert(
                AnomalyKind::PortScan,
                Latest {
                    netns: failure.netns,
                    caller: None,
                    cgroup_id: failure.cgroup_id,
                    subject: Subject::Described(scan.clone()),
                },
            );
            return Some(scan);
        }
        let kind = if failure.kind.is_exhaustion() {
            AnomalyKind::PortExhaustion
        } else if failure.kind.is_bind_conflict() {
            AnomalyKind::BindConflict
        } else {
            return None;
        };
        self.last_anomaly.insert(
            kind,
            Latest {
                netns: failure.netns,
                caller: failure.caller.clone(),
                cgroup_id: failure.cgroup_id,
                subject: Subject::Call {
                    local: failure.local,
                    remote: failure.remote,
                },
            },
        );
        None
    }

    /// Destinations with connections opened and closed since the namespace's previous
    /// snapshot (a `TIME_WAIT` socket whose connection that snapshot did not list) at more
    /// than the churn rate. Remembers this snapshot's connections for the next.
    fn churn(&mut self, snapshot: &NamespaceSnapshot, started: f64) -> BTreeSet<Destination> {
        let current = snapshot.sockets.connections().clone();
        let Some((then, previous)) = self
            .previous_connections
            .insert(snapshot.netns, (started, current))
        else {
            return BTreeSet::new();
        };
        // Since this namespace's own previous read: a read that failed in between makes the
        // interval longer than the node's.
        let seconds = started - then;
        if seconds <= 0.0 {
            return BTreeSet::new();
        }
        let mut churned: BTreeMap<Destination, u32> = BTreeMap::new();
        for (destination, tuple) in snapshot.sockets.time_wait() {
            if !previous.contains(tuple) {
                *churned.entry(*destination).or_default() += 1;
            }
        }
        churned
            .into_iter()
            .filter(|(_, count)| f64::from(*count) / seconds > self.settings.churn_per_second)
            .map(|(destination, _)| destination)
            .collect()
    }

    /// The anomalous conditions a namespace's snapshot shows.
    fn conditions(
        &self,
        snapshot: &NamespaceSnapshot,
        gauges: &NamespaceGauges,
    ) -> anomalies::Conditions {
        let Some(ports) = &snapshot.ports else {
            return anomalies::Conditions::default();
        };
        let capacity = f64::from(ports.capacity().max(1));
        let destinations = gauges.headroom.all.values();
        anomalies::Conditions {
            connection_churn: BTreeSet::new(),
            near_exhaustion: destinations
                .clone()
                .filter(|use_| use_.ratio >= self.settings.near_exhaustion_ratio)
                .map(|use_| use_.destination)
                .collect(),
            time_wait_accumulation: destinations
                .filter(|use_| f64::from(use_.time_wait) / capacity > self.settings.time_wait_share)
                .map(|use_| use_.destination)
                .collect(),
            listeners_in_ephemeral_range: snapshot
                .sockets
                .listening()
                .iter()
                .filter(|port| ports.ephemeral.contains(port) && !ports.reserved.contains(*port))
                .collect(),
            bind_before_connect: snapshot
                .sockets
                .bound_connections()
                .1
                .iter()
                .map(|(tgid, bound)| (*tgid, describe_bound(bound)))
                .collect(),
        }
    }

    /// Anomalies by namespace and kind, every known namespace at 0 for every kind.
    #[must_use]
    pub fn anomalies(&self) -> BTreeMap<(NetnsId, AnomalyKind), u64> {
        let mut counts: BTreeMap<(NetnsId, AnomalyKind), u64> = self
            .known_namespaces()
            .into_iter()
            .flat_map(|netns| {
                AnomalyKind::ALL.map(|kind| {
                    let count = match kind {
                        AnomalyKind::PortScan => self.port_scans.count(netns),
                        kind => self.crossings.count(netns, kind),
                    };
                    ((netns, kind), count)
                })
            })
            .collect();
        for (netns, kind, count) in self.failures() {
            let anomaly = if kind.is_exhaustion() {
                AnomalyKind::PortExhaustion
            } else if kind.is_bind_conflict() {
                AnomalyKind::BindConflict
            } else {
                continue;
            };
            *counts.entry((netns, anomaly)).or_default() += count;
        }
        counts
    }

    /// The most recent anomaly of each kind.
    pub fn last_anomalies(&self) -> impl Iterator<Item = (AnomalyKind, LastAnomaly)> + '_ {
        self.last_anomaly
            .iter()
            .map(|(kind, latest)| (*kind, latest.shown()))
    }

    /// Namespaces that are gone and whose kernel map entries should now be deleted.
    #[must_use]
    pub fn retired(&self) -> Vec<Retired> {
        self.retired.iter().copied().collect()
    }

    /// Marks the kernel map entries of `retired` as deleted.
    pub fn forget_retired(&mut self, retired: &[Retired]) {
        for retired in retired {
            self.retired.remove(retired);
        }
    }

    /// Namespaces with gauges, by id.
    pub fn namespaces(&self) -> impl Iterator<Item = (NetnsId, &NamespaceGauges)> {
        self.namespaces
            .iter()
            .map(|(&netns, gauges)| (netns, gauges))
    }

    /// Failed-call counters of every namespace, including one counted by the kernel programs
    /// before discovery found it. Every namespace with gauges has its exhaustion counters at 0.
    pub fn failures(&self) -> impl Iterator<Item = (NetnsId, FailureKind, u64)> + '_ {
        self.failures.iter().flat_map(|(&netns, kinds)| {
            kinds
                .iter()
                .map(move |(&kind, &count)| (netns, kind, count))
        })
    }

    /// Namespaces that appear in any series.
    #[must_use]
    pub fn known_namespaces(&self) -> BTreeSet<NetnsId> {
        self.namespaces
            .keys()
            .chain(self.failures.keys())
            .copied()
            .collect()
    }

    /// Node-wide TCP state transitions.
    pub fn transitions(&self) -> impl Iterator<Item = (TcpState, TcpState, u64)> + '_ {
        self.transitions
            .iter()
            .map(|(&(old, new), &count)| (old, new, count))
    }

    #[must_use]
    pub fn stats(&self) -> &SelfStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use port_monitor_common::{PROTOCOL_TCP, maps::ErrorKey};

    use super::*;

    fn snapshot(netns: NetnsId, sockets: &[(TcpState, u16)]) -> NamespaceSnapshot {
        let mut tally = SocketTally::default();
        for &(state, port) in sockets {
            tally.add(&sockets::tcp(state, port));
        }
        NamespaceSnapshot {
            netns,
            cookie: None,
            name: None,
            ports: Some(PortConfig {
                ephemeral: 40000..=40009,
                reserved: [40000].into_iter().collect(),
                time_wait_reuse: crate::model::TimeWaitReuse::default(),
            }),
            sockets: tally,
            workload: crate::workloads::Workload::default(),
        }
    }

    fn error(netns: u32, operation: Operation, errno: u16, auto_port: bool) -> ErrorKey {
        ErrorKey::new((netns, 0), operation, PROTOCOL_TCP, errno, auto_port)
    }

    #[test]
    fn gauges_follow_the_latest_snapshot() {
        let mut model = Model::default();
        model.apply_snapshot(
            &[snapshot(
                1,
                &[
                    (TcpState::Listen, 80),
                    (TcpState::Established, 80),
                    (TcpState::Established, 40001),
                    (TcpState::TimeWait, 40002),
                    (TcpState::TimeWait, 40000),
                ],
            )],
            &[],
            Timing::default(),
        );
        let (_, gauges) = model.namespaces().next().expect("one namespace");
        let sockets: BTreeMap<_, _> = gauges
            .sockets()
            .filter(|(protocol, _, _)| *protocol == Protocol::Tcp)
            .map(|(_, state, n)| (state, n))
            .collect();
        assert_eq!(sockets[&TcpState::Established], 2);
        assert_eq!(sockets[&TcpState::TimeWait], 2);
        assert_eq!(sockets[&TcpState::SynSent], 0, "known states exist at 0");
        let ports: BTreeMap<_, _> = gauges
            .ports_in_use()
            .filter(|(protocol, _, _)| *protocol == Protocol::Tcp)
            .map(|(_, range, n)| (range, n))
            .collect();
        // 40000 is reserved: held, but not one the kernel could have handed out.
        assert_eq!(ports[&PortRange::Ephemeral], 2);
        assert_eq!(ports[&PortRange::WellKnown], 1);
        assert_eq!(ports[&PortRange::Registered], 3);
        assert_eq!(
            gauges.ephemeral,
            Some(EphemeralRange {
                min: 40000,
                max: 40009,
                reserved: 1,
                capacity: 9
            })
        );
    }

    #[test]
    fn a_namespace_that_could_not_be_read_keeps_its_gauges() {
        let mut model = Model::default();
        model.apply_snapshot(
            &[snapshot(1, &[(TcpState::Listen, 80)]), snapshot(2, &[])],
            &[],
            Timing::default(),
        );
        model.apply_snapshot(&[snapshot(2, &[])], &[1], Timing::default());
        assert_eq!(
            model
                .namespaces()
                .map(|(netns, _)| netns)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(model.stats().snapshot_failures, 1);
        assert_eq!(model.stats().unreadable_namespaces, 1);
        // Degraded says what is wrong now: it clears once the namespace reads again.
        model.apply_snapshot(
            &[snapshot(1, &[]), snapshot(2, &[])],
            &[],
            Timing::default(),
        );
        assert_eq!(model.stats().unreadable_namespaces, 0);
        assert_eq!(model.stats().snapshot_failures, 1);
    }

    #[test]
    fn a_deleted_namespace_disappears_with_its_counters() {
        let mut model = Model::default();
        let counters = KernelCounters {
            errors: vec![
                (error(1, Operation::Connect, errno::EADDRNOTAVAIL, true), 3),
                (error(2, Operation::Bind, errno::EADDRINUSE, false), 1),
            ],
            ..KernelCounters::default()
        };
        model.apply_snapshot(
            &[snapshot(1, &[]), snapshot(2, &[])],
            &[],
            Timing::default(),
        );
        model.apply_kernel_counters(&counters);
        assert_eq!(model.failures().count(), 2);

        // Namespace 2 is deleted: its gauges go at once, its counters after one more
        // snapshot that does not find it either (it could have been created after discovery).
        model.apply_snapshot(&[snapshot(1, &[])], &[], Timing::default());
        assert_eq!(model.namespaces().count(), 1);
        assert!(model.retired().is_empty());
        model.apply_snapshot(&[snapshot(1, &[])], &[], Timing::default());
        assert_eq!(model.retired(), [(2, None)]);
        assert_eq!(
            model.known_namespaces().into_iter().collect::<Vec<_>>(),
            [1]
        );

        // Until the kernel entries are deleted, reading them does not bring the series back.
        model.apply_kernel_counters(&counters);
        assert_eq!(
            model
                .failures()
                .map(|(netns, _, _)| netns)
                .collect::<Vec<_>>(),
            [1]
        );
        model.forget_retired(&[(2, None)]);
        assert!(model.retired().is_empty());
    }

    /// Namespace 1 is deleted and a new one gets its inode number between two snapshots: the
    /// cookie tells them apart, and the old one's counts are retired, not inherited.
    #[test]
    fn a_new_namespace_with_an_old_inode_inherits_nothing() {
        let mut model = Model::default();
        let with_cookie = |cookie| NamespaceSnapshot {
            cookie: Some(cookie),
            ..snapshot(1, &[])
        };
        let failure = |cookie| {
            let mut key = error(1, Operation::Connect, errno::EADDRNOTAVAIL, true);
            key.netns_cookie = cookie;
            key
        };
        model.apply_snapshot(&[with_cookie(10)], &[], Timing::default());
        model.apply_kernel_counters(&KernelCounters {
            errors: vec![(failure(10), 3)],
            ..KernelCounters::default()
        });
        assert_eq!(model.failures().map(|(_, _, n)| n).sum::<u64>(), 3);

        model.apply_snapshot(&[with_cookie(11)], &[], Timing::default());
        model.apply_kernel_counters(&KernelCounters {
            errors: vec![(failure(10), 3), (failure(11), 1)],
            ..KernelCounters::default()
        });
        assert_eq!(
            model.failures().map(|(_, _, n)| n).sum::<u64>(),
            1,
            "only the new namespace's own failure"
        );
        assert_eq!(model.retired(), [(1, Some(10))]);
    }

    #[test]
    fn connections_opened_and_closed_between_snapshots_are_churn() {
        let settings = Settings {
            churn_per_second: 2.0,
            ..Settings::default()
        };
        let mut model = Model::new(settings);
        let namespace = |sockets: &[(TcpState, &str, &str)]| {
            let mut tally = SocketTally::default();
            for &(state, local, remote) in sockets {
                tally.add(&sockets::socket(Protocol::Tcp, state, local, remote));
            }
            NamespaceSnapshot {
                netns: 1,
                cookie: None,
                name: None,
                ports: Some(PortConfig {
                    ephemeral: 40000..=49999,
                    reserved: PortSet::default(),
                    time_wait_reuse: crate::model::TimeWaitReuse::default(),
                }),
                sockets: tally,
                workload: crate::workloads::Workload::default(),
            }
        };
        let at = |seconds| Timing {
            duration_seconds: 0.0,
            started_seconds: seconds,
        };
        let long_lived = (TcpState::Established, "10.0.0.2:40000", "10.0.0.1:443");
        model.apply_snapshot(&[namespace(&[long_lived])], &[], at(0.0));
        // The long-lived one closed (its TIME_WAIT was listed before as established): not
        // churn. Two new ones to :443 opened and closed within the second: 2/s, not above 2.
        let quiet = namespace(&[
            (TcpState::TimeWait, "10.0.0.2:40000", "10.0.0.1:443"),
            (TcpState::TimeWait, "10.0.0.2:40001", "10.0.0.1:443"),
            (TcpState::TimeWait, "10.0.0.2:40002", "10.0.0.1:443"),
        ]);
        let happened = model.apply_snapshot(&[quiet], &[], at(1.0));
        assert!(happened.is_empty(), "{happened:?}");
        // Three new ones to :80 within the next second: above 2/s.
        let busy = namespace(&[
            (TcpState::TimeWait, "10.0.0.2:40003", "10.0.0.1:80"),
            (TcpState::TimeWait, "10.0.0.2:40004", "10.0.0.1:80"),
            (TcpState::TimeWait, "10.0.0.2:40005", "10.0.0.1:80"),
        ]);
        let happened = model.apply_snapshot(&[busy], &[], at(2.0));
        assert_eq!(happened.len(), 1, "{happened:?}");
        assert_eq!(happened[0].1, AnomalyKind::ConnectionChurn);
        assert_eq!(model.anomalies()[&(1, AnomalyKind::ConnectionChurn)], 1);
    }

    /// A namespace whose read failed in between: its churn is over the two intervals since
    /// its own previous read, not over one.
    #[test]
    fn churn_after_a_failed_read_is_over_the_real_interval() {
        let settings = Settings {
            churn_per_second: 2.0,
            ..Settings::default()
        };
        let mut model = Model::new(settings);
        let at = |seconds| Timing {
            duration_seconds: 0.0,
            started_seconds: seconds,
        };
        let time_wait = |ports: std::ops::Range<u16>| {
            let mut snapshot = snapshot(1, &[]);
            for port in ports {
                snapshot.sockets.add(&sockets::socket(
                    Protocol::Tcp,
                    TcpState::TimeWait,
                    &format!("10.0.0.2:{port}"),
                    "10.0.0.1:80",
                ));
            }
            snapshot
        };
        model.apply_snapshot(&[time_wait(40000..40000)], &[], at(0.0));
        model.apply_snapshot(&[], &[1], at(1.0));
        // Three connections in the two seconds since its last read: 1.5/s, not churn.
        let happened = model.apply_snapshot(&[time_wait(40000..40003)], &[], at(2.0));
        assert!(happened.is_empty(), "{happened:?}");
    }

    /// A namespace missing from one snapshot (a discovery that missed it) and back in the
    /// next keeps its anomaly bookkeeping: a condition that lasted is not counted again.
    #[test]
    fn a_namespace_missing_once_is_not_counted_again() {
        let mut model = Model::default();
        let listener = || snapshot(1, &[(TcpState::Listen, 40005)]);
        model.apply_snapshot(&[listener()], &[], Timing::default());
        let key = (1, AnomalyKind::ListenerInEphemeralRange);
        assert_eq!(model.anomalies()[&key], 1);
        model.apply_snapshot(&[], &[], Timing::default());
        model.apply_snapshot(&[listener()], &[], Timing::default());
        assert_eq!(
            model.anomalies()[&key],
            1,
            "the same listener, counted once"
        );
    }

    /// A snapshot that could not read every namespace counts no correction: its totals would
    /// hold the stale gauges of those it missed.
    #[test]
    fn an_incomplete_snapshot_is_not_checked_against_transitions() {
        let mut model = Model::default();
        let transitions = consistency::Transitions::new();
        let listening = || snapshot(1, &[(TcpState::Listen, 80)]);
        model.apply_snapshot(&[listening(), snapshot(2, &[])], &[], Timing::default());
        assert_eq!(
            model.check_transitions(&transitions, transitions.clone()),
            None
        );
        // Namespace 1 unreadable: its stale listener would otherwise be compared with
        // transitions that say nothing of it.
        model.apply_snapshot(&[snapshot(2, &[])], &[1], Timing::default());
        assert_eq!(
            model.check_transitions(&transitions, transitions.clone()),
            None
        );
        model.apply_snapshot(&[listening(), snapshot(2, &[])], &[], Timing::default());
        assert_eq!(
            model.check_transitions(&transitions, transitions.clone()),
            None,
            "the comparison starts again from a complete snapshot"
        );
        model.apply_snapshot(&[listening(), snapshot(2, &[])], &[], Timing::default());
        assert_eq!(
            model.check_transitions(&transitions, transitions.clone()),
            Some(0)
        );
    }

    #[test]
    fn the_latest_failure_of_each_kind_is_shown_with_its_addresses() {
        let failure = |operation, errno, auto_port, local: &str, remote: Option<&str>| Failure {
            netns: 1,
            kind: FailureKind {
                operation,
                protocol: Protocol::Tcp,
                errno,
                auto_port,
            },
            caller: None,
            cgroup_id: Some(7),
            timestamp_ns: 0,
            local: local.parse().expect("literal"),
            remote: remote.map(|remote| remote.parse().expect("literal")),
        };
        let mut model = Model::default();
        for failure in [
            failure(
                Operation::Connect,
                errno::EADDRNOTAVAIL,
                true,
                "10.0.0.2:0",
                Some("10.0.0.1:443"),
            ),
            failure(
                Operation::Connect,
                errno::EADDRNOTAVAIL,
                true,
                "[fd00::2]:0",
                Some("[fd00::1]:443"),
            ),
            failure(
                Operation::Bind,
                errno::EADDRINUSE,
                false,
                "[::1]:8080",
                None,
            ),
        ] {
            assert_eq!(model.apply_failure(&failure), None);
        }
        let shown: Vec<_> = model
            .last_anomalies()
            .map(|(kind, last)| (kind, last.subject))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    AnomalyKind::PortExhaustion,
                    "fd00::2 -> [fd00::1]:443".into()
                ),
                (AnomalyKind::BindConflict, "[::1]:8080".into()),
            ]
        );
    }

    #[test]
    fn exhaustion_needs_an_automatic_port_and_the_out_of_ports_errno() {
        let kind = |operation, errno, auto_port| FailureKind {
            operation,
            protocol: Protocol::Tcp,
            errno,
            auto_port,
        };
        let cases = [
            (kind(Operation::Connect, errno::EADDRNOTAVAIL, true), true),
            (kind(Operation::Connect, errno::EADDRNOTAVAIL, false), false),
            (kind(Operation::Connect, 111, false), false),
            (kind(Operation::Bind, errno::EADDRINUSE, true), true),
            (kind(Operation::Bind, errno::EADDRINUSE, false), false),
            (kind(Operation::Bind, 13, true), false),
        ];
        for (kind, expected) in cases {
            assert_eq!(kind.is_exhaustion(), expected, "{kind:?}");
        }
    }
}
