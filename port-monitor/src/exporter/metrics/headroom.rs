//! Headroom: how close each namespace, and each destination, is to running out of ports, as
//! the kernel decides it; and the sockets that cost a port toward every destination.

use super::{Detail, Family, Spec, gauge};
use crate::model::{Model, Protocol};

pub const DESTINATION_PORTS_IN_USE: Spec = gauge(
    "port_monitor_destination_ports_in_use",
    "Ephemeral ports held by TCP sockets toward one destination, TIME_WAIT included, for the namespace's busiest destinations.",
    &["netns", "protocol", "src_addr", "dst_addr", "dst_port"],
);
pub const DESTINATION_UTILIZATION: Spec = gauge(
    "port_monitor_destination_utilization_ratio",
    "Share of the namespace's ephemeral ports a connect() toward this destination can no longer use: its own plus those held by bind().",
    &["netns", "protocol", "src_addr", "dst_addr", "dst_port"],
);
pub const UTILIZATION_MAX: Spec = gauge(
    "port_monitor_ephemeral_utilization_max_ratio",
    "The highest utilization ratio in the namespace, over every TCP destination or UDP local address.",
    &["netns", "protocol"],
);
pub const BIND_BEFORE_CONNECT: Spec = gauge(
    "port_monitor_bind_before_connect_sockets",
    "Connected TCP sockets whose local port came from bind(): each port is lost to every destination; only namespaces that have some.",
    &["netns"],
);

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 4] = [
    &DESTINATION_PORTS_IN_USE,
    &DESTINATION_UTILIZATION,
    &UTILIZATION_MAX,
    &BIND_BEFORE_CONNECT,
];

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render(model: &Model, detail: Detail) -> [Family<'static>; 4] {
    let mut destination_ports = Family::new(&DESTINATION_PORTS_IN_USE);
    let mut destination_ratio = Family::new(&DESTINATION_UTILIZATION);
    let mut max_ratio = Family::new(&UTILIZATION_MAX);
    let mut bound_connections = Family::new(&BIND_BEFORE_CONNECT);
    for (netns, gauges) in model.namespaces() {
        let netns = netns.to_string();
        for use_ in &gauges.headroom.top {
            let destination = &use_.destination;
            let (source, address, port) = (
                if destination.source.is_unspecified() {
                    String::new()
                } else {
                    destination.source.to_string()
                },
                destination.address.to_string(),
                destination.port.to_string(),
            );
            let labels = [netns.as_str(), "tcp", &source, &address, &port];
            destination_ports.add(&labels, f64::from(use_.ports));
            destination_ratio.add(&labels, use_.ratio);
        }
        for (protocol, ratio) in &gauges.headroom.max_ratio {
            // TCP's is what the alerts watch: always there. UDP's once some port is in use.
            if *protocol == Protocol::Tcp || *ratio > 0.0 || detail == Detail::Full {
                max_ratio.add(&[&netns, protocol.label()], *ratio);
            }
        }
        if gauges.bound_connections > 0 {
            bound_connections.add(&[&netns], gauges.bound_connections as f64);
        }
    }
    [
        destination_ports,
        destination_ratio,
        max_ratio,
        bound_connections,
    ]
}
