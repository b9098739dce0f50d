//! Anomalies: things that go wrong with ports, counted the moment they happen.
//!
//! Two sources:
//! - failed calls the kernel programs counted (`port_exhaustion`, `bind_conflict`): the
//!   anomaly counters are those counts, so they are exact whatever the ring buffer lost;
//! - conditions a snapshot shows (`near_exhaustion`, `time_wait_accumulation`,
//!   `listener_in_ephemeral_range`): counted once each time a destination or port crosses
//!   into the condition, not once per snapshot it stays there.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque, hash_map::Entry};

use super::{Destination, NetnsId};

/// A kind of anomaly; its `kind` label value is [`AnomalyKind::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// A connect, bind or autobind failed for lack of ports.
    PortExhaustion,
    /// A destination's utilization ratio reached `anomalies.near_exhaustion_ratio`.
    NearExhaustion,
    /// `bind()` to an explicit port that was in use (EADDRINUSE).
    BindConflict,
    /// A socket listens on a port of the namespace's ephemeral range that is not reserved:
    /// a client may be given it first, and then the server cannot start.
    ListenerInEphemeralRange,
    /// `TIME_WAIT` sockets toward one destination passed `anomalies.time_wait_share` of the
    /// namespace's capacity.
    TimeWaitAccumulation,
    /// Connections toward one destination were opened and closed between two snapshots
    /// (leaving `TIME_WAIT` behind) faster than `anomalies.churn_per_second`.
    ConnectionChurn,
    /// One cgroup's connections were refused too often, or on too many distinct ports,
    /// within `anomalies.port_scan_window_seconds`.
    PortScan,
    /// A process gave a socket a port with `bind()` and then connected it: the port is lost
    /// to every destination (`IP_BIND_ADDRESS_NO_PORT` lets the kernel choose it at connect
    /// time instead). Counted once per process that starts doing it.
    BindBeforeConnect,
    /// The node's source NAT ran out of ports toward a destination (its ratio reached 1), or
    /// conntrack failed to insert new connections (`insert_failed` rose). Counted once per
    /// crossing.
    NatExhaustion,
}

impl AnomalyKind {
    pub const ALL: [Self; 9] = [
        Self::PortExhaustion,
        Self::NearExhaustion,
        Self::BindConflict,
        Self::ListenerInEphemeralRange,
        Self::TimeWaitAccumulation,
        Self::ConnectionChurn,
        Self::PortScan,
        Self::BindBeforeConnect,
        Self::NatExhaustion,
    ];

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::PortExhaustion => "port_exhaustion",
            Self::NearExhaustion => "near_exhaustion",
            Self::BindConflict => "bind_conflict",
            Self::ListenerInEphemeralRange => "listener_in_ephemeral_range",
            Self::TimeWaitAccumulation => "time_wait_accumulation",
            Self::ConnectionChurn => "connection_churn",
            Self::PortScan => "port_scan",
            Self::BindBeforeConnect => "bind_before_connect",
            Self::NatExhaustion => "nat_exhaustion",
        }
    }
}

/// What a namespace's snapshot shows in an anomalous condition right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub near_exhaustion: BTreeSet<Destination>,
    pub time_wait_accumulation: BTreeSet<Destination>,
    pub connection_churn: BTreeSet<Destination>,
    pub listeners_in_ephemeral_range: BTreeSet<u16>,
    /// Processes (by tgid) with connected sockets whose port came from `bind()`, and what
    /// each is, for the log.
    pub bind_before_connect: BTreeMap<u32, String>,
    /// NAT destinations out of ports, and conntrack failing inserts, described.
    pub nat_exhaustion: BTreeSet<String>,
}

/// Snapshot-derived anomaly counts, and the conditions seen last time (to count crossings).
#[derive(Debug, Default)]
pub struct Crossings {
    previous: BTreeMap<NetnsId, Conditions>,
    counts: BTreeMap<(NetnsId, AnomalyKind), u64>,
}

impl Crossings {
    /// Counts what entered a condition since the namespace's previous snapshot; returns the
    /// kinds that just happened, with what they are about, for the log.
    pub fn update(&mut self, netns: NetnsId, now: Conditions) -> Vec<(AnomalyKind, String)> {
        let previous = self.previous.remove(&netns).unwrap_or_default();
        let mut happened = Vec::new();
        let mut count = |kind, new: Vec<String>| {
            *self.counts.entry((netns, kind)).or_default() += new.len() as u64;
            happened.extend(new.into_iter().map(|what| (kind, what)));
        };
        count(
            AnomalyKind::NearExhaustion,
            now.near_exhaustion
                .difference(&previous.near_exhaustion)
                .map(describe)
                .collect(),
        );
        count(
            AnomalyKind::TimeWaitAccumulation,
            now.time_wait_accumulation
                .difference(&previous.time_wait_accumulation)
                .map(describe)
                .collect(),
        );
        count(
            AnomalyKind::ConnectionChurn,
            now.connection_churn
                .difference(&previous.connection_churn)
                .map(describe)
                .collect(),
        );
        count(
            AnomalyKind::BindBeforeConnect,
            now.bind_before_connect
                .iter()
                .filter(|(tgid, _)| !previous.bind_before_connect.contains_key(tgid))
                .map(|(_, what)| what.clone())
                .collect(),
        );
        count(
            AnomalyKind::NatExhaustion,
            now.nat_exhaustion
                .difference(&previous.nat_exhaustion)
                .cloned()
                .collect(),
        );
        count(
            AnomalyKind::ListenerInEphemeralRange,
            now.listeners_in_ephemeral_range
                .difference(&previous.listeners_in_ephemeral_range)
                .map(|port| format!("port {port}"))
                .collect(),
        );
        self.previous.insert(netns, now);
        happened
    }

    /// Forgets namespaces that are gone.
    pub fn retain(&mut self, alive: impl Fn(NetnsId) -> bool) {
        self.previous.retain(|netns, _| alive(*netns));
        self.counts.retain(|(netns, _), _| alive(*netns));
    }

    /// The count of `kind` in `netns`.
    #[must_use]
    pub fn count(&self, netns: NetnsId, kind: AnomalyKind) -> u64 {
        self.counts.get(&(netns, kind)).copied().unwrap_or(0)
    }
}

/// Thresholds of the port scan detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PortScanLimits {
    pub window_ns: u64,
    /// Refused connections within the window that make a scan.
    pub refused: usize,
    /// Distinct refused destination ports within the window that make a scan.
    pub distinct_ports: usize,
}

/// Refused connections per (namespace, cgroup) over a sliding window. A scan is counted when
/// a window first goes over a limit, and again only after it has come back under.
#[derive(Debug)]
pub struct PortScans {
    limits: PortScanLimits,
    windows: HashMap<(NetnsId, u64), Window>,
    counts: BTreeMap<NetnsId, u64>,
}

#[derive(Debug, Default)]
struct Window {
    /// (timestamp, destination port), oldest first; never longer than `limits.refused`.
    refusals: VecDeque<(u64, u16)>,
    /// How many of `refusals` are to each port: its length is the distinct ports. Kept up to
    /// date as refusals come and go: rebuilding a set of up to `limits.refused` ports for every
    /// refusal was half the cost of absorbing a record (benches/aggregator.rs).
    ports: HashMap<u16, u32>,
    over: bool,
}

impl Window {
    fn push(&mut self, at_ns: u64, port: u16) {
        self.refusals.push_back((at_ns, port));
        *self.ports.entry(port).or_default() += 1;
    }

    fn pop(&mut self) {
        let Some((_, port)) = self.refusals.pop_front() else {
            return;
        };
        if let Entry::Occupied(mut count) = self.ports.entry(port) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

impl Default for PortScans {
    fn default() -> Self {
        Self::new(super::Settings::default().port_scan)
    }
}

/// Windows tracked at most: past this, idle ones are dropped first.
const MAX_WINDOWS: usize = 4096;

impl PortScans {
    #[must_use]
    pub fn new(limits: PortScanLimits) -> Self {
        Self {
            limits,
            windows: HashMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Records a refused connection; returns a description when it starts a scan.
    pub fn record(&mut self, netns: NetnsId, cgroup: u64, at_ns: u64, port: u16) -> Option<String> {
        let limits = self.limits;
        if self.windows.len() >= MAX_WINDOWS {
            self.windows.retain(|_, window| {
                window
                    .refusals
                    .back()
                    .is_some_and(|(last, _)| at_ns.saturating_sub(*last) <= limits.window_ns)
            });
        }
        let window = self.windows.entry((netns, cgroup)).or_default();
        window.push(at_ns, port);
        while window.refusals.len() > limits.refused
            || window
                .refusals
                .front()
                .is_some_and(|(first, _)| at_ns.saturating_sub(*first) > limits.window_ns)
        {
            window.pop();
        }
        let over =
            window.refusals.len() >= limits.refused || window.ports.len() >= limits.distinct_ports;
        let started = over && !window.over;
        window.over = over;
        if !started {
            return None;
        }
        *self.counts.entry(netns).or_default() += 1;
        Some(format!(
            "cgroup {cgroup}: {} refused connections to {} ports",
            window.refusals.len(),
            window.ports.len()
        ))
    }

    /// Forgets namespaces that are gone.
    pub fn retain(&mut self, alive: impl Fn(NetnsId) -> bool) {
        self.windows.retain(|(netns, _), _| alive(*netns));
        self.counts.retain(|netns, _| alive(*netns));
    }

    /// Scans counted in `netns`.
    #[must_use]
    pub fn count(&self, netns: NetnsId) -> u64 {
        self.counts.get(&netns).copied().unwrap_or(0)
    }
}

fn describe(destination: &Destination) -> String {
    format!(
        "{} -> {}:{}",
        destination.source, destination.address, destination.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(port: u16) -> Destination {
        Destination {
            source: [10, 0, 0, 2].into(),
            address: [10, 0, 0, 1].into(),
            port,
        }
    }

    #[test]
    fn counts_each_crossing_once() {
        let mut crossings = Crossings::default();
        let hot = Conditions {
            near_exhaustion: [destination(443)].into(),
            ..Conditions::default()
        };
        let cases = [
            ("crosses", hot.clone(), 1),
            ("stays above: no new count", hot.clone(), 1),
            ("falls back", Conditions::default(), 1),
            ("crosses again", hot, 2),
        ];
        for (name, conditions, expected) in cases {
            crossings.update(7, conditions);
            assert_eq!(
                crossings.count(7, AnomalyKind::NearExhaustion),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_port_scan_is_counted_once_per_burst() {
        let limits = PortScanLimits {
            window_ns: 1_000,
            refused: 100,
            distinct_ports: 5,
        };
        let mut scans = PortScans::new(limits);
        // Four refusals on distinct ports: under the limit. The fifth port makes a scan.
        for (at, port) in [(0, 1), (10, 2), (20, 3), (30, 4)] {
            assert_eq!(scans.record(7, 42, at, port), None);
        }
        assert!(scans.record(7, 42, 40, 5).is_some());
        // More of the same burst: still the same scan.
        assert_eq!(scans.record(7, 42, 50, 6), None);
        // Another cgroup is another window; the same ports over and over are no scan.
        for at in 0..50 {
            assert_eq!(scans.record(7, 43, at, 80), None);
        }
        // After the window has passed, a new burst is a new scan.
        assert_eq!(scans.record(7, 42, 5_000, 1), None);
        for (offset, port) in [(1, 2), (2, 3), (3, 4)] {
            assert_eq!(scans.record(7, 42, 5_000 + offset, port), None);
        }
        assert!(scans.record(7, 42, 5_004, 5).is_some());
        assert_eq!(scans.count(7), 2);
        assert_eq!(scans.count(8), 0);
    }

    #[test]
    fn distinct_ports_are_those_still_in_the_window() {
        let limits = PortScanLimits {
            window_ns: 1_000,
            refused: 100,
            distinct_ports: 3,
        };
        let mut scans = PortScans::new(limits);
        for cgroup in [1, 2] {
            for (at, port) in [(0, 1), (10, 1), (20, 2)] {
                assert_eq!(scans.record(7, cgroup, at, port), None);
            }
        }
        // Only the first refusal to port 1 has left the window: port 1 still counts.
        assert_eq!(
            scans.record(7, 1, 1_005, 3).as_deref(),
            Some("cgroup 1: 3 refused connections to 3 ports")
        );
        // Both have left: ports 2 and 3 only, until port 1 is refused again.
        assert_eq!(scans.record(7, 2, 1_015, 3), None);
        assert_eq!(
            scans.record(7, 2, 1_016, 1).as_deref(),
            Some("cgroup 2: 3 refused connections to 3 ports")
        );
    }

    #[test]
    fn namespaces_and_kinds_count_apart() {
        let mut crossings = Crossings::default();
        let happened = crossings.update(
            1,
            Conditions {
                time_wait_accumulation: [destination(80), destination(81)].into(),
                listeners_in_ephemeral_range: [40001].into(),
                ..Conditions::default()
            },
        );
        assert_eq!(happened.len(), 3);
        crossings.update(2, Conditions::default());
        assert_eq!(crossings.count(1, AnomalyKind::TimeWaitAccumulation), 2);
        assert_eq!(crossings.count(1, AnomalyKind::ListenerInEphemeralRange), 1);
        assert_eq!(crossings.count(2, AnomalyKind::TimeWaitAccumulation), 0);
        crossings.retain(|netns| netns != 1);
        assert_eq!(
            crossings.count(1, AnomalyKind::TimeWaitAccumulation),
            0,
            "forgotten"
        );
    }
}
