//! Snapshots of every namespace's socket tables and port sysctls: the exact source of the
//! gauges, including what no event shows (`TIME_WAIT` sockets, sockets older than the daemon).
//!
//! Runs on its own thread: the dumps are blocking netlink I/O, and the cost grows with the
//! number of sockets, so it stays off the async runtime that serves scrapes.

pub mod conntrack;
mod ctnetlink;
mod fold;
mod inet_diag;
mod listing;
mod memory;
mod netlink;
mod sock_diag;

pub use memory::ConnectionMemory;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use self::fold::Fold;
use crate::{
    kernel::{
        BoundSocketReader, TcpLister, TransitionReader, bound_sockets::Tracked,
        socket_list::ListError,
    },
    model::{Model, NamespaceSnapshot, NetnsId, SocketTally, Timing, consistency::Transitions},
    netns::{self, Netns, NetnsError},
    workloads,
};

/// Why one namespace could not be snapshotted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Dump(#[from] sock_diag::DumpError),
    #[error(transparent)]
    List(#[from] ListError),
}

impl SnapshotError {
    /// The namespace went away between discovery and now: normal churn, not a failure.
    fn is_vanished(&self) -> bool {
        matches!(
            self,
            Self::Netns(NetnsError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
        ) || matches!(self, Self::Netns(NetnsError::Replaced { .. }))
    }
}

/// What a snapshot reads, besides each namespace's socket tables and port sysctls.
pub struct Sources {
    /// The host's procfs: where the namespaces are found.
    pub proc: PathBuf,
    /// Which TCP sockets got their port from `bind()`, where the kernel programs track them.
    pub bound_sockets: Option<BoundSocketReader>,
    /// Whether each namespace's conntrack table is read (ctnetlink needs `CAP_NET_ADMIN`).
    pub conntrack: bool,
    /// Lists TCP sockets with the `iter/tcp` program, where the kernel runs it: a fraction of
    /// the cost of a `sock_diag` dump on a node with many sockets. Else `sock_diag`.
    pub tcp_lister: Option<TcpLister>,
}

/// The result of snapshotting every namespace once.
pub struct NodeSnapshot {
    pub namespaces: Vec<NamespaceSnapshot>,
    /// Namespaces that exist but could not be read this time: their previous gauges stand.
    pub failed: Vec<NetnsId>,
    pub duration: Duration,
}

/// Discovers the namespaces under `sources.proc` and snapshots each. `sources.bound_sockets`
/// tells which TCP sockets got their port from `bind()` (charged to every destination), and
/// adds the idle ones where the kernel's tables do not list them (before 6.7). A snapshot
/// alone: nothing to compare its connections with (see [`snapshot_node_with`]).
#[must_use]
pub fn snapshot_node(sources: &Sources) -> NodeSnapshot {
    snapshot_node_with(sources, &mut ConnectionMemory::default())
}

/// [`snapshot_node`], comparing each namespace's `TIME_WAIT` sockets with the connections
/// `memory` kept from its previous snapshot, and keeping this snapshot's in their place.
#[must_use]
pub fn snapshot_node_with(sources: &Sources, memory: &mut ConnectionMemory) -> NodeSnapshot {
    let bound_sockets = sources.bound_sockets.as_ref();
    let started = Instant::now();
    let mut namespaces = Vec::new();
    let mut failed = Vec::new();
    // Read before the dumps: a socket bound after this is in no dump's reckoning.
    let bound = bound_sockets
        .map(BoundSocketReader::read)
        .unwrap_or_default();
    let lists_bound = bound_sockets.is_some_and(BoundSocketReader::tables_list_them);
    let mut listed = HashSet::new();
    memory.begin();
    for netns in netns::discover(&sources.proc) {
        memory.seen(netns.id);
        let read = Reading {
            bound: &bound,
            reader: bound_sockets,
            lists_bound,
            conntrack: sources.conntrack,
            lister: sources.tcp_lister.as_ref(),
        };
        match snapshot_namespace(&netns, &read, &mut listed, memory) {
            Ok(snapshot) => namespaces.push(snapshot),
            Err(error) if error.is_vanished() => {
                tracing::debug!(netns = netns.id, %error, "namespace went away during snapshot");
            }
            Err(error) => {
                tracing::warn!(netns = netns.id, path = %netns.path.display(), %error, "cannot snapshot namespace");
                failed.push(netns.id);
            }
        }
    }
    if let Some(reader) = bound_sockets
        && lists_bound
        && failed.is_empty()
    {
        // Every bound socket is in the tables: one that no complete snapshot lists is gone.
        let gone: HashSet<u64> = bound
            .values()
            .flat_map(|tracked| tracked.keys())
            .filter(|cookie| !listed.contains(*cookie))
            .copied()
            .collect();
        reader.forget(&gone);
    }
    memory.end();
    NodeSnapshot {
        namespaces,
        failed,
        duration: started.elapsed(),
    }
}

/// What reading one namespace needs to know.
struct Reading<'a> {
    /// The sockets the kernel programs saw get a port from `bind()`, by namespace cookie.
    bound: &'a HashMap<u64, Tracked>,
    /// The live map, asked after a dump which of the unlisted sockets still exist.
    reader: Option<&'a BoundSocketReader>,
    /// Whether the kernel's tables list bound, idle TCP sockets (6.7 and later).
    lists_bound: bool,
    conntrack: bool,
    lister: Option<&'a TcpLister>,
}

fn snapshot_namespace(
    netns: &Netns,
    read: &Reading<'_>,
    listed: &mut HashSet<u64>,
    memory: &mut ConnectionMemory,
) -> Result<NamespaceSnapshot, SnapshotError> {
    let id = netns.id;
    let reads_conntrack = read.conntrack;
    let tcp_lister = read.lister.cloned();
    let (socket, ports, tcp, conntrack_socket, iterator) = netns::run_in(netns, move || {
        sock_diag::open().map(|socket| {
            let conntrack = reads_conntrack.then(conntrack::open_if_loaded).flatten();
            let tcp = netns::read_tcp_tuning();
            // Made here: the kernel lists the namespace of the thread that makes the iterator.
            let iterator = tcp_lister.and_then(|tcp_lister| {
                tcp_lister
                    .open()
                    .inspect_err(|error| {
                        tracing::warn!(netns = id, %error, "listing TCP sockets with sock_diag instead");
                    })
                    .ok()
            });
            (socket, netns::read_port_config(), tcp, conntrack, iterator)
        })
    })??;
    let ports = ports
        .inspect_err(|error| {
            tracing::warn!(netns = id, %error, "cannot read the namespace's port sysctls");
        })
        .ok();
    let cookie = sock_diag::netns_cookie(&socket).ok();
    let no_sockets = Tracked::new();
    let tracked = cookie
        .and_then(|cookie| read.bound.get(&cookie))
        .unwrap_or(&no_sockets);
    let mut sockets = ports.as_ref().map_or_else(SocketTally::default, |ports| {
        SocketTally::with_reuse(ports.time_wait_reuse)
    });
    let iterating = iterator.as_ref().and(read.lister);
    if let Some(expiry) = iterating.and_then(|lister| memory.time_wait_born_since(lister.hz())) {
        sockets.keep_time_wait_expiring_from(expiry);
    }
    // A previous set that left out old TIME_WAIT sockets can only be compared by a listing
    // that tells each one's expiry.
    if let Some(previous) = memory.take(id, cookie)
        && (iterating.is_some() || previous.holds_every_time_wait())
    {
        sockets.compare_with(previous);
    }
    let mut fold = Fold::new(&mut sockets, tracked);
    let listing = listing::list_sockets(
        &socket,
        iterator.zip(read.lister),
        read.reader.is_some(),
        &mut fold,
    );
    let listed_here = std::mem::take(&mut fold.listed);
    match listing {
        Ok(began) => {
            if let Some(began) = began {
                memory.listing_began(began);
            }
        }
        Err(error) => {
            // The model keeps the time of the last good read: the connections of that read
            // stay for the next one to compare with.
            if let Some(previous) = sockets.take_previous() {
                memory.remember(id, cookie, previous);
            }
            return Err(error);
        }
    }
    if !read.lists_bound
        && let Some(reader) = read.reader
    {
        // Asked after the dump: a socket closed between the map read and the dump is in
        // neither, and counting it would leave its port held until the next snapshot.
        let unlisted = tracked
            .keys()
            .filter(|cookie| !listed_here.contains(*cookie));
        let alive = reader.still_tracked(unlisted);
        for (_, bound) in tracked.iter().filter(|(cookie, _)| alive.contains(*cookie)) {
            sockets.add(&listing::bound_inactive(bound));
        }
    }
    listed.extend(listed_here);
    memory.remember(id, cookie, sockets.take_connections());
    let (conntrack, conntrack_unreadable) = conntrack::read_logged(conntrack_socket, id);
    Ok(NamespaceSnapshot {
        netns: id,
        cookie,
        conntrack,
        conntrack_unreadable,
        tcp,
        host: netns.host,
        name: netns.name.clone(),
        ports,
        sockets,
        workload: netns
            .process
            .as_ref()
            .and_then(|process| std::fs::read_to_string(process.join("cgroup")).ok())
            .map(|text| workloads::from_proc_cgroup(&text))
            .unwrap_or_default(),
    })
}

/// Snapshots the node every `interval` on a dedicated thread, into `model`, until `stop`
/// receives or is dropped. `on_snapshot` runs after each snapshot is in the model, with how
/// long it took. The
/// TCP transitions are read just before and just after each snapshot, for the model's
/// consistency check.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn(
    sources: Sources,
    interval: Duration,
    model: Arc<RwLock<Model>>,
    transitions: TransitionReader,
    stop: mpsc::Receiver<()>,
    on_snapshot: impl Fn(Duration) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            let clock = Instant::now();
            let mut connections = ConnectionMemory::default();
            loop {
                let started = Instant::now();
                let before = read_transitions(&transitions);
                let snapshot = snapshot_node_with(&sources, &mut connections);
                let after = read_transitions(&transitions);
                let mut model = model.write().unwrap_or_else(PoisonError::into_inner);
                let timing = Timing {
                    duration_seconds: snapshot.duration.as_secs_f64(),
                    started_seconds: started.duration_since(clock).as_secs_f64(),
                };
                let anomalies =
                    model.apply_snapshot(&snapshot.namespaces, &snapshot.failed, timing);
                for (netns, kind, subject) in anomalies {
                    tracing::warn!(netns, kind = kind.label(), subject, "anomaly");
                }
                if let (Some(before), Some(after)) = (before, after)
                    && let Some(corrections) = model.check_transitions(&before, after)
                {
                    tracing::debug!(corrections, "socket tables checked against TCP transitions");
                }
                drop(model);
                on_snapshot(snapshot.duration);
                match stop.recv_timeout(interval.saturating_sub(snapshot.duration)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
}

fn read_transitions(reader: &TransitionReader) -> Option<Transitions> {
    reader
        .read()
        .inspect_err(|error| tracing::warn!(%error, "reading TCP transitions failed"))
        .ok()
}
