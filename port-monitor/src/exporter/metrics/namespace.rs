//! Per-namespace gauges from the latest snapshot: sockets, ports in use, the ephemeral range,
//! and which pod the namespace belongs to.

use super::{Detail, Family, Spec, gauge};
use crate::model::Model;

pub const PORTS_IN_USE: Spec = gauge(
    "port_monitor_ports_in_use",
    "Distinct local ports held by sockets, by port range.",
    &["netns", "protocol", "range"],
);
pub const SOCKETS: Spec = gauge(
    "port_monitor_sockets",
    "Sockets by state, as the kernel's socket tables list them.",
    &["netns", "protocol", "state"],
);
pub const EPHEMERAL_RANGE_MIN: Spec = gauge(
    "port_monitor_ephemeral_range_min",
    "Lowest port of the namespace's ip_local_port_range.",
    &["netns"],
);
pub const EPHEMERAL_RANGE_MAX: Spec = gauge(
    "port_monitor_ephemeral_range_max",
    "Highest port of the namespace's ip_local_port_range.",
    &["netns"],
);
pub const EPHEMERAL_PORTS_RESERVED: Spec = gauge(
    "port_monitor_ephemeral_ports_reserved",
    "Ports of ip_local_reserved_ports inside the ephemeral range.",
    &["netns"],
);
pub const EPHEMERAL_PORTS_CAPACITY: Spec = gauge(
    "port_monitor_ephemeral_ports_capacity",
    "Ports the kernel can hand out automatically: the ephemeral range minus reserved ports.",
    &["netns"],
);
pub const EPHEMERAL_SERVER_OVERLAP: Spec = gauge(
    "port_monitor_ephemeral_server_overlap_ports",
    "Ports of a server port range (servers.port_ranges, Kubernetes NodePorts by default) that the kernel may hand out as ephemeral ports: a client can hold one when a server wants it.",
    &["netns", "server_range"],
);
pub const NAMESPACE_INFO: Spec = gauge(
    "port_monitor_namespace_info",
    "A network namespace with its name under /var/run/netns (empty when it has none), and whether it is the host's own (PID 1's).",
    &["netns", "name", "host"],
);
pub const NETNS_WORKLOAD_INFO: Spec = gauge(
    "port_monitor_netns_workload_info",
    "The pod and container a network namespace belongs to, from a process's cgroup path.",
    &["netns", "pod_uid", "container_id", "runtime"],
);

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 9] = [
    &PORTS_IN_USE,
    &SOCKETS,
    &EPHEMERAL_RANGE_MIN,
    &EPHEMERAL_RANGE_MAX,
    &EPHEMERAL_PORTS_RESERVED,
    &EPHEMERAL_PORTS_CAPACITY,
    &EPHEMERAL_SERVER_OVERLAP,
    &NAMESPACE_INFO,
    &NETNS_WORKLOAD_INFO,
];

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render(model: &Model, detail: Detail) -> [Family<'static>; 9] {
    let mut ports = Family::sparse(&PORTS_IN_USE, detail);
    let mut sockets = Family::sparse(&SOCKETS, detail);
    let mut range_min = Family::new(&EPHEMERAL_RANGE_MIN);
    let mut range_max = Family::new(&EPHEMERAL_RANGE_MAX);
    let mut reserved = Family::sparse(&EPHEMERAL_PORTS_RESERVED, detail);
    let mut capacity = Family::new(&EPHEMERAL_PORTS_CAPACITY);
    let mut overlap = Family::sparse(&EPHEMERAL_SERVER_OVERLAP, detail);
    let mut info = Family::new(&NAMESPACE_INFO);
    let mut workloads = Family::new(&NETNS_WORKLOAD_INFO);
    for (netns, gauges) in model.namespaces() {
        let netns = netns.to_string();
        for (protocol, range, count) in gauges.ports_in_use() {
            ports.add(&[&netns, protocol.label(), range.label()], f64::from(count));
        }
        for (protocol, state, count) in gauges.sockets() {
            sockets.add(
                &[&netns, protocol.label(), state.label_for(protocol)],
                count as f64,
            );
        }
        if let Some(range) = gauges.ephemeral {
            range_min.add(&[&netns], f64::from(range.min));
            range_max.add(&[&netns], f64::from(range.max));
            reserved.add(&[&netns], f64::from(range.reserved));
            capacity.add(&[&netns], f64::from(range.capacity));
        }
        for server in &gauges.server_overlap {
            let range = format!("{}-{}", server.servers.start(), server.servers.end());
            overlap.add(&[&netns, &range], f64::from(server.ports));
        }
        let host = if gauges.host { "true" } else { "false" };
        info.add(&[&netns, gauges.name.as_deref().unwrap_or(""), host], 1.0);
        let workload = &gauges.workload;
        if workload.is_known() {
            let labels = [
                netns.as_str(),
                workload.pod_uid.as_deref().unwrap_or(""),
                workload.container_id.as_deref().unwrap_or(""),
                workload.runtime.unwrap_or(""),
            ];
            workloads.add(&labels, 1.0);
        }
    }
    [
        ports, sockets, range_min, range_max, reserved, capacity, overlap, info, workloads,
    ]
}
