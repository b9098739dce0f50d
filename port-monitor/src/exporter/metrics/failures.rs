//! Failed calls the kernel programs counted: by errno, and the port exhaustion among them.

use std::collections::BTreeMap;

use port_monitor_common::Operation;

use super::{Detail, Family, Spec, counter};
use crate::model::{Model, NetnsId, Protocol, errno};

pub const CONNECT_ERRORS: Spec = counter(
    "port_monitor_connect_errors_total",
    "connect() calls that failed, by errno.",
    &["netns", "protocol", "errno"],
);
pub const BIND_ERRORS: Spec = counter(
    "port_monitor_bind_errors_total",
    "bind() calls that failed, by errno.",
    &["netns", "protocol", "errno"],
);
pub const PORT_EXHAUSTION: Spec = counter(
    "port_monitor_port_exhaustion_total",
    "Calls that failed because no local port was free: TCP connect() with EADDRNOTAVAIL, bind(port 0) with EADDRINUSE, UDP autobind with EAGAIN.",
    &["netns", "protocol", "operation"],
);

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 3] = [&CONNECT_ERRORS, &BIND_ERRORS, &PORT_EXHAUSTION];

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render(model: &Model, detail: Detail) -> [Family<'static>; 3] {
    // At full detail, exhaustion series exist at 0 for every known namespace, so that rate()
    // and increase() see the first failure; compact, they appear with it (the alerts count a
    // series that appears as its value).
    let mut exhausted: BTreeMap<(NetnsId, Protocol, Operation), u64> = match detail {
        Detail::Full => model
            .known_namespaces()
            .into_iter()
            .flat_map(|netns| {
                EXHAUSTION_SERIES.map(|(protocol, operation)| ((netns, protocol, operation), 0))
            })
            .collect(),
        Detail::Compact => BTreeMap::new(),
    };
    // The kernel keeps "was the port automatic" apart; the error families do not show it,
    // so those counts are summed here.
    let mut errors: BTreeMap<(Operation, NetnsId, Protocol, u16), u64> = BTreeMap::new();
    for (netns, kind, count) in model.failures() {
        *errors
            .entry((kind.operation, netns, kind.protocol, kind.errno))
            .or_default() += count;
        if kind.is_exhaustion() {
            *exhausted
                .entry((netns, kind.protocol, kind.operation))
                .or_default() += count;
        }
    }
    let mut connect = Family::new(&CONNECT_ERRORS);
    let mut bind = Family::new(&BIND_ERRORS);
    for ((operation, netns, protocol, errno), count) in errors {
        let (netns, errno) = (netns.to_string(), errno::name(errno));
        let labels = [netns.as_str(), protocol.label(), errno.as_str()];
        match operation {
            Operation::Connect => connect.add(&labels, count as f64),
            Operation::Bind => bind.add(&labels, count as f64),
            // Always exhaustion, counted below; which call it was is not kept.
            Operation::Autobind => {}
        }
    }
    let mut exhaustion = Family::new(&PORT_EXHAUSTION);
    for ((netns, protocol, operation), count) in exhausted {
        let labels = [
            &netns.to_string(),
            protocol.label(),
            operation_label(operation),
        ];
        exhaustion.add(&labels, count as f64);
    }
    [connect, bind, exhaustion]
}

/// The ways each protocol runs out of ports: at full detail, their exhaustion series always
/// exist.
const EXHAUSTION_SERIES: [(Protocol, Operation); 4] = [
    (Protocol::Tcp, Operation::Connect),
    (Protocol::Tcp, Operation::Bind),
    (Protocol::Udp, Operation::Bind),
    (Protocol::Udp, Operation::Autobind),
];

/// The `operation` label value.
const fn operation_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Connect => "connect",
        Operation::Bind => "bind",
        Operation::Autobind => "autobind",
    }
}
