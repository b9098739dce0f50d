//! One namespace as the metrics show it: its snapshot reduced to gauges.

use std::collections::BTreeMap;

use crate::workloads::Workload;

use super::{
    NetnsId, PortConfig, PortRange, Protocol, Settings, SocketTally, TcpState, TcpTuning, headroom,
    nat::{ConntrackGauges, ConntrackSnapshot},
};

/// What one namespace's socket tables and sysctls said at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceSnapshot {
    pub netns: NetnsId,
    /// The namespace's cookie (`SO_NETNS_COOKIE`), which no later namespace shares even when
    /// it gets the same inode number; `None` where the kernel cannot tell it.
    pub cookie: Option<u64>,
    /// A name from `/var/run/netns`, when the namespace has one.
    pub name: Option<String>,
    /// `None` when the sysctls could not be read (the reason is logged where it happened).
    pub ports: Option<PortConfig>,
    /// The pod or container whose namespace this is, from a process's cgroup path.
    pub workload: Workload,
    pub sockets: SocketTally,
    /// Its conntrack table, where conntrack is loaded and could be read.
    pub conntrack: Option<ConntrackSnapshot>,
    /// Conntrack is loaded but its table could not be read (the reason is logged).
    pub conntrack_unreadable: bool,
    /// Its TCP settings and `TIME_WAIT` counters.
    pub tcp: TcpTuning,
    /// The host's own namespace (PID 1's).
    pub host: bool,
}

/// The gauges of one namespace, derived from its latest snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceGauges {
    pub name: Option<String>,
    pub workload: Workload,
    /// Ephemeral range, reserved ports inside it, and capacity; `None` when unreadable.
    pub ephemeral: Option<EphemeralRange>,
    /// Per-destination and per-address use of the ephemeral range; empty when unreadable.
    pub headroom: headroom::Headroom,
    /// Connected TCP sockets whose port came from `bind()`.
    pub bound_connections: u64,
    /// TCP sockets still in `SYN_SENT`, by remote address, most first (the busiest few): a
    /// NAT or firewall on the way dropping SYNs shows here first.
    pub syn_sent: Vec<(std::net::SocketAddr, u32)>,
    /// The conntrack table and the node's NAT, where conntrack is in use.
    pub conntrack: Option<ConntrackGauges>,
    /// Its TCP settings and `TIME_WAIT` counters.
    pub tcp: TcpTuning,
    /// How far its ephemeral range reaches into each server port range.
    pub server_overlap: Vec<ServerOverlap>,
    /// The host's own namespace (PID 1's).
    pub host: bool,
    sockets: BTreeMap<(Protocol, TcpState), u64>,
    ports_in_use: BTreeMap<(Protocol, PortRange), u32>,
}

/// A namespace's ephemeral port range, summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EphemeralRange {
    pub min: u16,
    pub max: u16,
    pub reserved: u32,
    pub capacity: u32,
}

/// Server ports the kernel may hand out as ephemeral ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOverlap {
    /// The server range, as configured (`servers.port_ranges`).
    pub servers: std::ops::RangeInclusive<u16>,
    /// Its ports in the ephemeral range and not reserved.
    pub ports: u32,
}

impl NamespaceGauges {
    pub(super) fn from_snapshot(snapshot: &NamespaceSnapshot, settings: &Settings) -> Self {
        let mut sockets = BTreeMap::new();
        let mut ports_in_use = BTreeMap::new();
        // Every listed state has its series, at 0 when no socket is in it.
        for protocol in Protocol::ALL {
            for &state in TcpState::listed(protocol) {
                sockets.insert((protocol, state), snapshot.sockets.sockets(protocol, state));
            }
            let used = snapshot.sockets.ports(protocol);
            for range in PortRange::ALL {
                let count = match (range.iana(), &snapshot.ports) {
                    (Some(ports), _) => Some(used.count_in(ports)),
                    (None, Some(config)) => Some(config.count_in_use(used, range)),
                    (None, None) => None,
                };
                if let Some(count) = count {
                    ports_in_use.insert((protocol, range), count);
                }
            }
        }
        Self {
            headroom: snapshot
                .ports
                .as_ref()
                .map(|ports| {
                    let top = headroom::Top {
                        count: settings.top_destinations,
                        by_source: settings.destination_source_address,
                    };
                    headroom::headroom(&snapshot.sockets, ports, top)
                })
                .unwrap_or_default(),
            bound_connections: snapshot.sockets.bound_connections().0,
            syn_sent: snapshot.sockets.syn_sent(settings.top_destinations),
            tcp: snapshot.tcp,
            host: snapshot.host,
            server_overlap: snapshot
                .ports
                .iter()
                .flat_map(|config| {
                    settings.server_ports.iter().map(|servers| ServerOverlap {
                        servers: servers.clone(),
                        ports: config.overlap(servers),
                    })
                })
                .collect(),
            conntrack: snapshot.conntrack.as_ref().map(|conntrack| {
                ConntrackGauges::new(conntrack, &settings.nat_ports, settings.top_destinations)
            }),
            name: snapshot.name.clone(),
            workload: snapshot.workload.clone(),
            ephemeral: snapshot.ports.as_ref().map(|config| EphemeralRange {
                min: *config.ephemeral.start(),
                max: *config.ephemeral.end(),
                reserved: config.reserved_in_range(),
                capacity: config.capacity(),
            }),
            sockets,
            ports_in_use,
        }
    }

    /// Sockets by (protocol, state).
    pub fn sockets(&self) -> impl Iterator<Item = (Protocol, TcpState, u64)> + '_ {
        self.sockets
            .iter()
            .map(|(&(protocol, state), &count)| (protocol, state, count))
    }

    /// Distinct local ports held, by (protocol, range).
    pub fn ports_in_use(&self) -> impl Iterator<Item = (Protocol, PortRange, u32)> + '_ {
        self.ports_in_use
            .iter()
            .map(|(&(protocol, range), &count)| (protocol, range, count))
    }
}
