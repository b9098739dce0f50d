//! The node's own NAT and conntrack table, per namespace; and the client's side of a NAT that
//! runs out elsewhere: connects stuck in `SYN_SENT` and connects that timed out, by
//! destination.

use super::{Detail, Family, Spec, counter, gauge};
use crate::model::Model;

pub const CONNTRACK_ENTRIES: Spec = gauge(
    "port_monitor_conntrack_entries",
    "Connections in the namespace's conntrack table (conntrack -C); only namespaces where conntrack is loaded and has seen traffic.",
    &["netns"],
);
pub const CONNTRACK_ENTRIES_LIMIT: Spec = gauge(
    "port_monitor_conntrack_entries_limit",
    "The most connections the namespace's conntrack table holds (nf_conntrack_max); 0 for no limit.",
    &["netns"],
);
pub const CONNTRACK_EVENTS: Spec = counter(
    "port_monitor_conntrack_events_total",
    "The kernel's per-CPU conntrack statistics summed (conntrack -S), by event as the kernel names it: insert_failed and drop count new connections lost, to a NAT out of ports among others.",
    &["netns", "event"],
);
pub const NAT_PORTS_IN_USE: Spec = gauge(
    "port_monitor_nat_ports_in_use",
    "Source-NATed connections (SNAT, MASQUERADE) from one NAT address toward one destination: each holds one NAT port, for the namespace's busiest NAT destinations.",
    &["netns", "protocol", "nat_addr", "dst_addr", "dst_port"],
);
pub const NAT_UTILIZATION: Spec = gauge(
    "port_monitor_nat_utilization_ratio",
    "Share of the NAT's ports (nat.port_range, 1024-65535 by default) in use toward one destination: at 1, new connections there are dropped.",
    &["netns", "protocol", "nat_addr", "dst_addr", "dst_port"],
);
pub const NAT_UTILIZATION_MAX: Spec = gauge(
    "port_monitor_nat_utilization_max_ratio",
    "The highest NAT utilization ratio in the namespace, over every NAT address and destination.",
    &["netns", "protocol"],
);
pub const DESTINATION_SYN_SENT: Spec = gauge(
    "port_monitor_destination_syn_sent",
    "TCP connects still waiting for the handshake's answer toward one destination, for the namespace's destinations with the most: a NAT or firewall on the way dropping SYNs shows here first.",
    &["netns", "protocol", "dst_addr", "dst_port"],
);
pub const DESTINATION_CONNECT_TIMEOUTS: Spec = counter(
    "port_monitor_destination_connect_timeouts_total",
    "TCP connects that timed out (ETIMEDOUT: the SYNs got no answer) toward one destination, for the namespace's destinations with the most.",
    &["netns", "protocol", "dst_addr", "dst_port"],
);

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 8] = [
    &CONNTRACK_ENTRIES,
    &CONNTRACK_ENTRIES_LIMIT,
    &CONNTRACK_EVENTS,
    &NAT_PORTS_IN_USE,
    &NAT_UTILIZATION,
    &NAT_UTILIZATION_MAX,
    &DESTINATION_SYN_SENT,
    &DESTINATION_CONNECT_TIMEOUTS,
];

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render(model: &Model, detail: Detail) -> [Family<'static>; 8] {
    let mut entries = Family::new(&CONNTRACK_ENTRIES);
    let mut limit = Family::new(&CONNTRACK_ENTRIES_LIMIT);
    let mut events = Family::sparse(&CONNTRACK_EVENTS, detail);
    let mut nat_ports = Family::new(&NAT_PORTS_IN_USE);
    let mut nat_ratio = Family::new(&NAT_UTILIZATION);
    let mut nat_max = Family::new(&NAT_UTILIZATION_MAX);
    let mut syn_sent = Family::new(&DESTINATION_SYN_SENT);
    let mut timeouts = Family::new(&DESTINATION_CONNECT_TIMEOUTS);
    for (netns, gauges) in model.namespaces() {
        let netns = netns.to_string();
        if let Some(conntrack) = gauges.conntrack.as_ref().filter(|table| table.in_use) {
            entries.add(&[&netns], conntrack.entries as f64);
            if let Some(most) = conntrack.limit {
                limit.add(&[&netns], most as f64);
            }
            for (event, count) in conntrack.events.iter() {
                events.add(&[&netns, event.label()], count as f64);
            }
            for use_ in &conntrack.top {
                let key = &use_.key;
                let (nat_address, destination, port) = (
                    key.nat_address.to_string(),
                    key.destination.to_string(),
                    key.destination_port.to_string(),
                );
                let labels = [
                    netns.as_str(),
                    key.protocol.label(),
                    &nat_address,
                    &destination,
                    &port,
                ];
                nat_ports.add(&labels, f64::from(use_.ports));
                nat_ratio.add(&labels, use_.ratio);
            }
            for (protocol, ratio) in &conntrack.max_ratio {
                nat_max.add(&[&netns, protocol.label()], *ratio);
            }
        }
        for (remote, waiting) in &gauges.syn_sent {
            let (address, port) = (remote.ip().to_string(), remote.port().to_string());
            syn_sent.add(&[&netns, "tcp", &address, &port], f64::from(*waiting));
        }
    }
    let top = model.settings().top_destinations;
    for (netns, protocol, remote, count) in model.connect_timeouts(top) {
        let (address, port) = (remote.ip().to_string(), remote.port().to_string());
        timeouts.add(
            &[&netns.to_string(), protocol.label(), &address, &port],
            count as f64,
        );
    }
    [
        entries, limit, events, nat_ports, nat_ratio, nat_max, syn_sent, timeouts,
    ]
}
