//! The bookkeeping anomalies need between snapshots and records: which conditions each
//! namespace was in (to count crossings), refused connections (port scans), when each
//! namespace was last read (churn), and the latest anomaly of each kind with who and what.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
};

use super::{
    AnomalyKind, BoundConnection, Caller, Destination, Failure, NamespaceGauges, NamespaceSnapshot,
    NetnsId, Settings,
    anomalies::{Conditions, Crossings, PortScans},
    nat,
};

/// The most recent anomaly of a kind: where, who (when the kernel saw the caller), and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAnomaly {
    pub netns: NetnsId,
    pub caller: Option<Caller>,
    pub cgroup_id: Option<u64>,
    /// The destination, address or port it is about.
    pub subject: String,
}

/// A [`LastAnomaly`] as the book keeps it: a failed call's subject is described only when it
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

/// Anomaly state that outlives one snapshot.
#[derive(Debug, Default)]
pub struct AnomalyBook {
    crossings: Crossings,
    port_scans: PortScans,
    /// When each namespace's previous snapshot began. Its connections stay with the snapshot
    /// thread, which compares the next snapshot's `TIME_WAIT` sockets with them as they are
    /// listed (`snapshot::ConnectionMemory`): the model gets counts per destination.
    previous_reads: HashMap<NetnsId, f64>,
    /// Each namespace's conntrack `insert_failed` at its previous snapshot, and when it last
    /// rose.
    insert_failed: HashMap<NetnsId, (u64, Option<f64>)>,
    latest: BTreeMap<AnomalyKind, Latest>,
}

impl AnomalyBook {
    #[must_use]
    pub fn new(settings: &Settings) -> Self {
        Self {
            port_scans: PortScans::new(settings.port_scan),
            ..Self::default()
        }
    }

    /// Whether conntrack's `insert_failed` rose in `netns` within the last
    /// [`INSERT_FAILURES_QUIET`] seconds: a burst of failures over a few snapshots is one
    /// crossing, not one per snapshot that saw some. The first reading of a table is the
    /// baseline (what happened before port-monitor looked is not counted).
    fn insert_failures_rising(
        &mut self,
        netns: NetnsId,
        conntrack: &nat::ConntrackGauges,
        started: f64,
    ) -> bool {
        let failed = conntrack.events.get(nat::ConntrackEvent::InsertFailed);
        let (before, last_rise) = self.insert_failed.entry(netns).or_insert((failed, None));
        if failed > *before {
            *last_rise = Some(started);
        }
        *before = failed;
        last_rise.is_some_and(|at| started - at < INSERT_FAILURES_QUIET)
    }

    /// Counts the conditions a namespace's snapshot shows starting, taken at `started`
    /// seconds; returns them, for the log.
    pub fn observe(
        &mut self,
        snapshot: &NamespaceSnapshot,
        gauges: &NamespaceGauges,
        started: f64,
        settings: &Settings,
    ) -> Vec<(NetnsId, AnomalyKind, String)> {
        let mut conditions = Conditions {
            connection_churn: self.churn(snapshot, started, settings.churn_per_second),
            ..conditions(snapshot, gauges, settings)
        };
        if let Some(conntrack) = &gauges.conntrack
            && self.insert_failures_rising(snapshot.netns, conntrack, started)
        {
            conditions.nat_exhaustion.insert(INSERT_FAILURES.to_owned());
        }
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
            self.latest.insert(
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

    /// Notes a failed call a record reported. Returns a port scan it starts, for the log.
    pub fn record(&mut self, failure: &Failure) -> Option<String> {
        if failure.kind.is_refused()
            && let Some(remote) = failure.remote
            && let Some(scan) = self.port_scans.record(
                failure.netns,
                failure.cgroup_id.unwrap_or(0),
                failure.timestamp_ns,
                remote.port(),
            )
        {
            self.latest.insert(
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
        self.latest.insert(
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

    /// Anomalies of `kind` counted in `netns` from snapshots and records (failed calls are
    /// counted by the kernel, elsewhere).
    #[must_use]
    pub fn count(&self, netns: NetnsId, kind: AnomalyKind) -> u64 {
        match kind {
            AnomalyKind::PortScan => self.port_scans.count(netns),
            kind => self.crossings.count(netns, kind),
        }
    }

    /// The most recent anomaly of each kind.
    pub fn latest(&self) -> impl Iterator<Item = (AnomalyKind, LastAnomaly)> + '_ {
        self.latest
            .iter()
            .map(|(kind, latest)| (*kind, latest.shown()))
    }

    /// Drops everything about a namespace.
    pub fn forget(&mut self, netns: NetnsId) {
        self.retain(|known| known != netns);
    }

    /// Keeps only the namespaces `alive` says are.
    pub fn retain(&mut self, alive: impl Fn(NetnsId) -> bool) {
        self.crossings.retain(&alive);
        self.port_scans.retain(&alive);
        self.previous_reads.retain(|netns, _| alive(*netns));
        self.insert_failed.retain(|netns, _| alive(*netns));
        self.latest.retain(|_, latest| alive(latest.netns));
    }

    /// Destinations with connections opened and closed since the namespace's previous
    /// snapshot (a `TIME_WAIT` socket whose connection that snapshot did not list) at more
    /// than `per_second`. Remembers when this snapshot began, for the next.
    fn churn(
        &mut self,
        snapshot: &NamespaceSnapshot,
        started: f64,
        per_second: f64,
    ) -> BTreeSet<Destination> {
        let Some(then) = self.previous_reads.insert(snapshot.netns, started) else {
            return BTreeSet::new();
        };
        if !snapshot.sockets.compared() {
            return BTreeSet::new();
        }
        // Since this namespace's own previous read: a read that failed in between makes the
        // interval longer than the node's.
        let seconds = started - then;
        if seconds <= 0.0 {
            return BTreeSet::new();
        }
        snapshot
            .sockets
            .destinations()
            .filter(|(_, sockets)| f64::from(sockets.fresh_time_wait) / seconds > per_second)
            .map(|(destination, _)| *destination)
            .collect()
    }
}

/// The anomalous conditions a namespace's snapshot shows (churn aside).
fn conditions(
    snapshot: &NamespaceSnapshot,
    gauges: &NamespaceGauges,
    settings: &Settings,
) -> Conditions {
    let Some(ports) = &snapshot.ports else {
        return Conditions::default();
    };
    let capacity = f64::from(ports.capacity().max(1));
    let destinations = gauges.headroom.all.values();
    Conditions {
        connection_churn: BTreeSet::new(),
        near_exhaustion: destinations
            .clone()
            .filter(|use_| use_.ratio >= settings.near_exhaustion_ratio)
            .map(|use_| use_.destination)
            .collect(),
        time_wait_accumulation: destinations
            .filter(|use_| f64::from(use_.time_wait) / capacity > settings.time_wait_share)
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
        nat_exhaustion: gauges
            .conntrack
            .iter()
            .flat_map(|conntrack| conntrack.exhausted.iter().map(nat::describe))
            .collect(),
    }
}

/// Seconds without a new conntrack insert failure after which failures are over.
const INSERT_FAILURES_QUIET: f64 = 60.0;

/// The subject of a `nat_exhaustion` that conntrack's insert failures show.
const INSERT_FAILURES: &str = "conntrack insert failures";

/// What a bound-then-connected socket is about: its port and where it went.
fn describe_bound(bound: &BoundConnection) -> String {
    format!(
        "port {} bound by {} before connecting to {}",
        bound.local.port(),
        bound.binder.comm(),
        bound.remote
    )
}
