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
mod anomaly_book;
pub mod connections;
pub mod consistency;
pub mod errno;
mod failures;
pub mod headroom;
mod lifecycle;
mod namespace;
pub mod nat;
pub mod ports;
mod settings;
pub mod sockets;
mod stats;
mod tcp_tuning;
mod timeouts;

use std::collections::{BTreeMap, BTreeSet};

pub use self::{
    anomalies::AnomalyKind,
    anomaly_book::LastAnomaly,
    connections::ConnectionSet,
    failures::{Caller, Failure, FailureKind, Failures},
    lifecycle::Retired,
    namespace::{EphemeralRange, NamespaceGauges, NamespaceSnapshot},
    nat::{ConntrackEvent, ConntrackEvents, ConntrackGauges, ConntrackSnapshot, NatKey},
    ports::{PortConfig, PortList, PortRange, PortSet, TimeWaitReuse},
    settings::{Settings, Timing},
    sockets::{Binder, BoundConnection, Destination, Socket, SocketTally, TcpState},
    stats::{KernelCounters, SelfStats},
    tcp_tuning::{TcpSysctls, TcpTuning, TimeWaitEvent, TimeWaitEvents},
};
use self::{anomaly_book::AnomalyBook, lifecycle::Lifecycle, timeouts::ConnectTimeouts};

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

/// Everything the exporter shows: gauges per namespace from the latest snapshot, the kernel's
/// counters, anomalies, and the model's own bookkeeping, each in its own part.
#[derive(Debug, Default)]
pub struct Model {
    settings: Settings,
    namespaces: BTreeMap<NetnsId, NamespaceGauges>,
    failures: Failures,
    transitions: consistency::Transitions,
    stats: SelfStats,
    lifecycle: Lifecycle,
    consistency: consistency::Consistency,
    anomalies: AnomalyBook,
    connect_timeouts: ConnectTimeouts,
}

impl Model {
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        Self {
            anomalies: AnomalyBook::new(&settings),
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
        for replaced in self.lifecycle.note_cookies(snapshots) {
            // The inode number was freed and given to a new namespace between two
            // snapshots: nothing of the old one carries over.
            self.failures.remove(replaced);
            self.anomalies.forget(replaced);
            self.connect_timeouts.retain(|netns| netns != replaced);
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
        // Namespaces the previous snapshot had and this one does not: their anomaly
        // bookkeeping is kept one more snapshot, as their counters are, so that one missed
        // discovery does not count their anomalies again.
        let absent: BTreeSet<NetnsId> = self
            .namespaces
            .keys()
            .filter(|netns| !namespaces.contains_key(netns))
            .copied()
            .collect();
        self.namespaces = namespaces;
        let mut happened = Vec::new();
        for snapshot in snapshots {
            if let Some(gauges) = self.namespaces.get(&snapshot.netns) {
                happened.extend(self.anomalies.observe(
                    snapshot,
                    gauges,
                    timing.started_seconds,
                    &self.settings,
                ));
            }
        }
        let seen: BTreeSet<NetnsId> = snapshots
            .iter()
            .map(|snapshot| snapshot.netns)
            .chain(failed.iter().copied())
            .collect();
        for gone in self
            .lifecycle
            .retire_unseen(self.failures.namespaces(), &seen)
        {
            self.failures.remove(gone);
        }
        self.stats.note_snapshot(snapshots, failed, timing);
        let mut alive: BTreeSet<NetnsId> = self.known_namespaces();
        alive.extend(&absent);
        self.anomalies.retain(|netns| alive.contains(&netns));
        self.connect_timeouts.retain(|netns| alive.contains(&netns));
        self.lifecycle.retain(|netns| alive.contains(&netns));
        happened
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
        self.failures = Failures::from_counts(&counters.errors, |key| self.lifecycle.admits(key));
        self.transitions.clone_from(&counters.transitions);
        self.stats.note_kernel_counters(counters);
    }

    /// Counts records from the kernel programs that did not decode.
    pub fn count_undecodable(&mut self, records: u64) {
        self.stats.events_undecodable += records;
    }

    /// Counts a record received from the kernel programs. Returns a port scan it starts,
    /// for the log.
    pub fn apply_failure(&mut self, failure: &Failure) -> Option<String> {
        *self.stats.events.entry(failure.kind.operation).or_default() += 1;
        self.connect_timeouts.record(failure);
        self.anomalies.record(failure)
    }

    /// Anomalies by namespace and kind, every known namespace at 0 for every kind.
    #[must_use]
    pub fn anomalies(&self) -> BTreeMap<(NetnsId, AnomalyKind), u64> {
        let mut counts: BTreeMap<(NetnsId, AnomalyKind), u64> = self
            .known_namespaces()
            .into_iter()
            .flat_map(|netns| {
                AnomalyKind::ALL.map(|kind| ((netns, kind), self.anomalies.count(netns, kind)))
            })
            .collect();
        // Failed calls are counted in the kernel: exact, whatever records were lost.
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
        self.anomalies.latest()
    }

    /// Kernel map entries (of namespaces gone or replaced) that should now be deleted.
    #[must_use]
    pub fn retired(&self) -> Vec<Retired> {
        self.lifecycle.retired()
    }

    /// Marks the kernel map entries of `retired` as deleted.
    pub fn forget_retired(&mut self, retired: &[Retired]) {
        self.lifecycle.forget_retired(retired);
    }

    /// Namespaces with gauges, by id.
    pub fn namespaces(&self) -> impl Iterator<Item = (NetnsId, &NamespaceGauges)> {
        self.namespaces
            .iter()
            .map(|(&netns, gauges)| (netns, gauges))
    }

    /// Failed-call counters of every namespace, including one counted by the kernel programs
    /// before discovery found it.
    pub fn failures(&self) -> impl Iterator<Item = (NetnsId, FailureKind, u64)> + '_ {
        self.failures.iter()
    }

    /// Namespaces that appear in any series.
    #[must_use]
    pub fn known_namespaces(&self) -> BTreeSet<NetnsId> {
        self.namespaces
            .keys()
            .copied()
            .chain(self.failures.namespaces())
            .collect()
    }

    /// Connects that timed out, by namespace and destination: the `count` destinations of each
    /// namespace with the most.
    pub fn connect_timeouts(
        &self,
        count: usize,
    ) -> impl Iterator<Item = (NetnsId, Protocol, std::net::SocketAddr, u64)> + '_ {
        self.connect_timeouts.top(count)
    }

    /// What the model is told to compute.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
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
    use port_monitor_common::{Operation, PROTOCOL_TCP, maps::ErrorKey};

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
            conntrack: None,
            conntrack_unreadable: false,
            tcp: crate::model::TcpTuning::default(),
            host: false,
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
        // What the snapshot thread does: each tally is compared with the previous one's
        // connections as its sockets are counted.
        let mut remembered: Option<ConnectionSet> = None;
        let mut namespace = |sockets: &[(TcpState, &str, &str)]| {
            let mut tally = SocketTally::default();
            if let Some(previous) = remembered.take() {
                tally.compare_with(previous);
            }
            for &(state, local, remote) in sockets {
                tally.add(&sockets::socket(Protocol::Tcp, state, local, remote));
            }
            remembered = Some(tally.take_connections());
            NamespaceSnapshot {
                netns: 1,
                cookie: None,
                conntrack: None,
                conntrack_unreadable: false,
                tcp: crate::model::TcpTuning::default(),
                host: false,
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
        let mut remembered: Option<ConnectionSet> = None;
        let mut time_wait = |ports: std::ops::Range<u16>| {
            let mut snapshot = snapshot(1, &[]);
            if let Some(previous) = remembered.take() {
                snapshot.sockets.compare_with(previous);
            }
            for port in ports {
                snapshot.sockets.add(&sockets::socket(
                    Protocol::Tcp,
                    TcpState::TimeWait,
                    &format!("10.0.0.2:{port}"),
                    "10.0.0.1:80",
                ));
            }
            remembered = Some(snapshot.sockets.take_connections());
            snapshot
        };
        model.apply_snapshot(&[time_wait(40000..40000)], &[], at(0.0));
        model.apply_snapshot(&[], &[1], at(1.0));
        // Three connections in the two seconds since its last read: 1.5/s, not churn.
        let later = time_wait(40000..40003);
        assert!(later.sockets.compared());
        let happened = model.apply_snapshot(&[later], &[], at(2.0));
        assert!(happened.is_empty(), "{happened:?}");
        // Five more in the next second: 5/s, churn.
        let happened = model.apply_snapshot(&[time_wait(40000..40008)], &[], at(3.0));
        assert!(
            happened
                .iter()
                .any(|(_, kind, _)| *kind == AnomalyKind::ConnectionChurn),
            "{happened:?}"
        );
    }

    /// The NAT running out toward a destination is counted once while it lasts; conntrack's
    /// insert failures once per burst (a minute without one ends a burst); failures before
    /// the first reading are not counted.
    #[test]
    fn nat_exhaustion_is_counted_once_per_crossing() {
        let mut model = Model::new(Settings {
            nat_ports: 40000..=40004,
            ..Settings::default()
        });
        let at = |seconds| Timing {
            duration_seconds: 0.0,
            started_seconds: seconds,
        };
        let router = |connections: u32, insert_failed: u64| {
            let mut conntrack = ConntrackSnapshot {
                entries: u64::from(connections),
                ..ConntrackSnapshot::default()
            };
            conntrack
                .events
                .add(ConntrackEvent::InsertFailed, insert_failed);
            for _ in 0..connections {
                conntrack.count_nat(
                    NatKey {
                        protocol: Protocol::Tcp,
                        nat_address: "10.2.0.1".parse().expect("literal"),
                        destination: "10.2.0.2".parse().expect("literal"),
                        destination_port: 80,
                    },
                    false,
                );
            }
            NamespaceSnapshot {
                conntrack: Some(conntrack),
                ..snapshot(1, &[])
            }
        };
        let key = (1, AnomalyKind::NatExhaustion);
        let count = |model: &mut Model, snapshot, seconds| {
            model.apply_snapshot(&[snapshot], &[], at(seconds));
            model.anomalies()[&key]
        };
        assert_eq!(count(&mut model, router(4, 7), 0.0), 0, "earlier failures");
        assert_eq!(count(&mut model, router(5, 7), 1.0), 1, "ratio 1");
        assert_eq!(count(&mut model, router(5, 7), 2.0), 1, "still at 1");
        assert_eq!(count(&mut model, router(5, 9), 3.0), 2, "failures start");
        assert_eq!(count(&mut model, router(5, 9), 4.0), 2);
        assert_eq!(count(&mut model, router(5, 10), 5.0), 2, "the same burst");
        assert_eq!(count(&mut model, router(3, 10), 70.0), 2, "all over");
        assert_eq!(count(&mut model, router(5, 11), 71.0), 4, "both again");
        let (_, last) = model
            .last_anomalies()
            .find(|(kind, _)| *kind == AnomalyKind::NatExhaustion)
            .expect("a last one");
        assert_eq!(last.subject, "tcp via 10.2.0.1 -> 10.2.0.2:80");
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
