//! One namespace as status shows it: the model's gauges of it, reduced to what a person (or
//! a script) reads first, beside what the daemon counted there.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;

use super::daemon::NamespaceCounters;
use crate::model::{
    NamespaceGauges, NetnsId, PortRange, Protocol, TcpState, headroom::DestinationUse, nat::NatUse,
};

/// One namespace.
#[derive(Clone, Debug, Serialize)]
pub struct NamespaceStatus {
    /// The inode number of the namespace (`ls -iL /proc/<pid>/ns/net`): the `netns` label.
    pub netns: NetnsId,
    /// Its `ip netns` name, "host", "pod <uid>", "container <id>", or "unnamed".
    pub name: String,
    pub host: bool,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub runtime: Option<&'static str>,
    /// `net.ipv4.ip_local_port_range`; absent with the capacity when unreadable.
    pub ephemeral_min: Option<u16>,
    pub ephemeral_max: Option<u16>,
    /// Ports of that range in `ip_local_reserved_ports`.
    pub ephemeral_reserved: Option<u32>,
    /// The ports the kernel may hand out: the range minus the reserved ones.
    pub ephemeral_capacity: Option<u32>,
    /// Distinct local TCP ports held in that range, in any state.
    pub ephemeral_in_use: u32,
    /// The same for UDP (a separate port space).
    pub ephemeral_in_use_udp: u32,
    /// `ephemeral_in_use / ephemeral_capacity`.
    pub ephemeral_in_use_ratio: f64,
    /// TCP sockets in `TIME_WAIT`.
    pub time_wait: u64,
    /// Sockets by `protocol_state` (`tcp_established`, `udp_unconnected`), non-zero only.
    pub sockets: BTreeMap<String, u64>,
    /// The highest of the ratios below: how close the namespace is to running out.
    pub utilization_max_ratio: f64,
    /// The worst TCP destination's share of the range a new connect to it cannot use.
    pub tcp_utilization_max_ratio: f64,
    /// UDP ports over capacity (an autobinding socket avoids them all).
    pub udp_utilization_ratio: f64,
    /// The busiest TCP destinations, most ports first.
    pub destinations: Vec<DestinationStatus>,
    /// Its conntrack table and the node's NAT, where conntrack holds anything.
    pub conntrack: Option<ConntrackStatus>,
    /// What the daemon counted here, when it answered and knows the namespace.
    pub daemon: Option<NamespaceCounters>,
}

/// One TCP destination's headroom.
#[derive(Clone, Debug, Serialize)]
pub struct DestinationStatus {
    /// The source address, when destinations are told apart by it (the default).
    pub src_addr: Option<IpAddr>,
    pub dst_addr: IpAddr,
    pub dst_port: u16,
    /// Ephemeral ports of sockets toward it, `TIME_WAIT` included.
    pub ports_in_use: u32,
    pub time_wait: u32,
    /// The share of the range a new connect to it can no longer use.
    pub utilization_ratio: f64,
}

/// The conntrack table and the NAT's busiest destinations.
#[derive(Clone, Debug, Serialize)]
pub struct ConntrackStatus {
    pub entries: u64,
    pub limit: Option<u64>,
    /// New connections conntrack could not insert (a NAT out of ports among others).
    pub insert_failed: u64,
    pub drop: u64,
    pub nat_utilization_max_ratio: f64,
    pub nat_destinations: Vec<NatDestinationStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NatDestinationStatus {
    pub protocol: &'static str,
    pub nat_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub dst_port: u16,
    pub ports_in_use: u32,
    pub utilization_ratio: f64,
}

impl NamespaceStatus {
    pub(super) fn new(
        netns: NetnsId,
        gauges: &NamespaceGauges,
        daemon: Option<&NamespaceCounters>,
    ) -> Self {
        let ephemeral = gauges.ephemeral;
        let in_use = |wanted: Protocol| {
            gauges
                .ports_in_use()
                .find(|&(protocol, range, _)| protocol == wanted && range == PortRange::Ephemeral)
                .map_or(0, |(_, _, count)| count)
        };
        let ephemeral_in_use = in_use(Protocol::Tcp);
        let capacity = ephemeral.map(|range| range.capacity);
        let ratio = |protocol| {
            gauges
                .headroom
                .max_ratio
                .get(&protocol)
                .copied()
                .unwrap_or(0.0)
        };
        let conntrack = gauges
            .conntrack
            .as_ref()
            .filter(|conntrack| conntrack.in_use)
            .map(|conntrack| ConntrackStatus {
                entries: conntrack.entries,
                limit: conntrack.limit,
                insert_failed: conntrack
                    .events
                    .get(crate::model::ConntrackEvent::InsertFailed),
                drop: conntrack.events.get(crate::model::ConntrackEvent::Drop),
                nat_utilization_max_ratio: conntrack
                    .max_ratio
                    .values()
                    .copied()
                    .fold(0.0, f64::max),
                nat_destinations: conntrack
                    .top
                    .iter()
                    .map(NatDestinationStatus::new)
                    .collect(),
            });
        let nat_ratio = conntrack
            .as_ref()
            .map_or(0.0, |conntrack| conntrack.nat_utilization_max_ratio);
        let (tcp_ratio, udp_ratio) = (ratio(Protocol::Tcp), ratio(Protocol::Udp));
        Self {
            netns,
            name: name(gauges),
            host: gauges.host,
            pod_uid: gauges.workload.pod_uid.clone(),
            container_id: gauges.workload.container_id.clone(),
            runtime: gauges.workload.runtime,
            ephemeral_min: ephemeral.map(|range| range.min),
            ephemeral_max: ephemeral.map(|range| range.max),
            ephemeral_reserved: ephemeral.map(|range| range.reserved),
            ephemeral_capacity: capacity,
            ephemeral_in_use,
            ephemeral_in_use_udp: in_use(Protocol::Udp),
            ephemeral_in_use_ratio: capacity
                .filter(|&capacity| capacity > 0)
                .map_or(0.0, |capacity| {
                    f64::from(ephemeral_in_use) / f64::from(capacity)
                }),
            time_wait: gauges
                .sockets()
                .find(|&(protocol, state, _)| {
                    protocol == Protocol::Tcp && state == TcpState::TimeWait
                })
                .map_or(0, |(_, _, count)| count),
            sockets: gauges
                .sockets()
                .filter(|&(_, _, count)| count > 0)
                .map(|(protocol, state, count)| {
                    (
                        format!("{}_{}", protocol.label(), state.label_for(protocol)),
                        count,
                    )
                })
                .collect(),
            utilization_max_ratio: tcp_ratio.max(udp_ratio).max(nat_ratio),
            tcp_utilization_max_ratio: tcp_ratio,
            udp_utilization_ratio: udp_ratio,
            destinations: gauges
                .headroom
                .top
                .iter()
                .map(DestinationStatus::new)
                .collect(),
            conntrack,
            daemon: daemon.cloned(),
        }
    }
}

impl DestinationStatus {
    fn new(use_: &DestinationUse) -> Self {
        let destination = use_.destination;
        Self {
            src_addr: (!destination.source.is_unspecified()).then_some(destination.source),
            dst_addr: destination.address,
            dst_port: destination.port,
            ports_in_use: use_.ports,
            time_wait: use_.time_wait,
            utilization_ratio: use_.ratio,
        }
    }
}

impl NatDestinationStatus {
    fn new(use_: &NatUse) -> Self {
        Self {
            protocol: use_.key.protocol.label(),
            nat_addr: use_.key.nat_address,
            dst_addr: use_.key.destination,
            dst_port: use_.key.destination_port,
            ports_in_use: use_.ports,
            utilization_ratio: use_.ratio,
        }
    }
}

/// What to call a namespace: its `ip netns` name, the host, its pod or container.
fn name(gauges: &NamespaceGauges) -> String {
    if let Some(name) = &gauges.name {
        return name.clone();
    }
    if gauges.host {
        return "host".to_owned();
    }
    let workload = &gauges.workload;
    match (&workload.pod_uid, &workload.container_id) {
        (Some(uid), _) => format!("pod {uid}"),
        (None, Some(id)) => format!("container {}", id.get(..12).unwrap_or(id)),
        (None, None) => "unnamed".to_owned(),
    }
}

#[cfg(test)]
impl NamespaceStatus {
    /// An idle namespace with a 100-port range, for tests to modify.
    pub(crate) fn example(netns: NetnsId, name: &str) -> Self {
        Self {
            netns,
            name: name.to_owned(),
            host: false,
            pod_uid: None,
            container_id: None,
            runtime: None,
            ephemeral_min: Some(40000),
            ephemeral_max: Some(40099),
            ephemeral_reserved: Some(0),
            ephemeral_capacity: Some(100),
            ephemeral_in_use: 0,
            ephemeral_in_use_udp: 0,
            ephemeral_in_use_ratio: 0.0,
            time_wait: 0,
            sockets: BTreeMap::new(),
            utilization_max_ratio: 0.0,
            tcp_utilization_max_ratio: 0.0,
            udp_utilization_ratio: 0.0,
            destinations: Vec::new(),
            conntrack: None,
            daemon: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Model, NamespaceSnapshot, PortConfig, Settings, SocketTally, TimeWaitReuse, Timing,
        sockets::socket,
    };

    const POD: &str = "6d0c1f9e-2b1a-4c3d-9e8f-0a1b2c3d4e5f";

    /// A pod with a ten-port range: three connections to :443, two `TIME_WAIT` toward :80
    /// (not loopback, so not reusable), a UDP socket.
    fn gauges() -> NamespaceGauges {
        let mut sockets = SocketTally::default();
        for (state, port, remote) in [
            (TcpState::Established, 40000, "10.0.0.1:443"),
            (TcpState::Established, 40001, "10.0.0.1:443"),
            (TcpState::Established, 40002, "10.0.0.1:443"),
            (TcpState::TimeWait, 40003, "10.0.0.1:80"),
            (TcpState::TimeWait, 40004, "10.0.0.1:80"),
        ] {
            sockets.add(&socket(
                Protocol::Tcp,
                state,
                &format!("10.0.0.2:{port}"),
                remote,
            ));
        }
        sockets.add(&socket(
            Protocol::Udp,
            TcpState::Close,
            "0.0.0.0:40005",
            "0.0.0.0:0",
        ));
        let snapshot = NamespaceSnapshot {
            netns: 7,
            ports: Some(PortConfig {
                ephemeral: 40000..=40009,
                reserved: crate::model::PortSet::default(),
                time_wait_reuse: TimeWaitReuse::default(),
            }),
            sockets,
            workload: crate::workloads::Workload {
                pod_uid: Some(POD.to_owned()),
                container_id: None,
                runtime: Some("containerd"),
            },
            ..NamespaceSnapshot::default()
        };
        let mut model = Model::new(Settings::default());
        model.apply_snapshot(&[snapshot], &[], Timing::default());
        model.namespaces().next().expect("one namespace").1.clone()
    }

    #[test]
    fn a_namespace_is_shown_with_the_models_gauges() {
        let status = NamespaceStatus::new(7, &gauges(), None);
        assert_eq!(status.name, format!("pod {POD}"));
        assert_eq!(status.runtime, Some("containerd"));
        assert_eq!(
            (
                status.ephemeral_capacity,
                status.ephemeral_in_use,
                status.time_wait
            ),
            (Some(10), 5, 2)
        );
        assert_eq!(status.ephemeral_in_use_udp, 1);
        assert!((status.ephemeral_in_use_ratio - 0.5).abs() < 1e-9);
        assert_eq!(status.sockets["tcp_time_wait"], 2);
        assert_eq!(status.sockets["udp_unconnected"], 1);
        assert!(!status.sockets.contains_key("tcp_listen"), "zeros left out");
        let shown: Vec<(u16, u32)> = status
            .destinations
            .iter()
            .map(|destination| (destination.dst_port, destination.ports_in_use))
            .collect();
        assert_eq!(shown, [(443, 3), (80, 2)], "busiest first");
        assert!((status.utilization_max_ratio - 0.3).abs() < 1e-9);
        assert!((status.udp_utilization_ratio - 0.1).abs() < 1e-9);
        assert!(status.conntrack.is_none(), "no conntrack read");
    }
}
