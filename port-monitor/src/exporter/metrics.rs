//! Every metric port-monitor exports, rendered from the model at scrape time. Rendering reads
//! only the model: no I/O and no work per socket, so a scrape costs the same whether the node
//! has a thousand sockets or a million.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use port_monitor_common::Operation;
use prometheus::{
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::{
    kernel::Hook,
    model::{Model, NetnsId, Protocol, errno},
};

/// A metric's name, type, help and label names: the contract dashboards and alerts rely on.
pub struct Spec {
    pub name: &'static str,
    pub kind: MetricType,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec {
        name,
        kind: MetricType::GAUGE,
        help,
        labels,
    }
}

const fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Spec {
    Spec {
        name,
        kind: MetricType::COUNTER,
        help,
        labels,
    }
}

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
pub const NAMESPACE_INFO: Spec = gauge(
    "port_monitor_namespace_info",
    "A network namespace with its name under /var/run/netns (empty when it has none).",
    &["netns", "name"],
);
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
    "Calls that failed because no local port was free: connect() with EADDRNOTAVAIL, bind(port 0) with EADDRINUSE.",
    &["netns", "protocol", "operation"],
);
pub const TCP_TRANSITIONS: Spec = counter(
    "port_monitor_tcp_state_transitions_total",
    "TCP state changes on the node, all namespaces together.",
    &["from", "to"],
);
pub const EVENTS: Spec = counter(
    "port_monitor_events_total",
    "Records received from the kernel programs, by kind.",
    &["kind"],
);
pub const EVENTS_LOST: Spec = counter(
    "port_monitor_events_lost_total",
    "Records the kernel programs dropped because the ring buffer was full (their counts were still kept).",
    &[],
);
pub const KERNEL_MAP_FULL: Spec = counter(
    "port_monitor_kernel_map_full_total",
    "Updates the kernel programs could not make because a map was full.",
    &["map"],
);
pub const SNAPSHOTS: Spec = counter(
    "port_monitor_snapshots_total",
    "Snapshots of every namespace's socket tables taken.",
    &[],
);
pub const SNAPSHOT_FAILURES: Spec = counter(
    "port_monitor_snapshot_failures_total",
    "Namespaces whose socket tables or sysctls could not be read in a snapshot.",
    &[],
);
pub const SNAPSHOT_DURATION: Spec = gauge(
    "port_monitor_snapshot_duration_seconds",
    "How long the latest snapshot of every namespace took.",
    &[],
);
pub const NAMESPACES: Spec = gauge(
    "port_monitor_namespaces",
    "Network namespaces found on the node in the latest snapshot.",
    &[],
);
pub const PROGRAM_INFO: Spec = gauge(
    "port_monitor_program_info",
    "A kernel program port-monitor attached, and where.",
    &["program", "hook"],
);
pub const BUILD_INFO: Spec = gauge(
    "port_monitor_build_info",
    "The version of port-monitor running; always 1.",
    &["version", "revision"],
);

/// Every family rendered from the model, in exposition order.
pub const ALL: [&Spec; 20] = [
    &PORTS_IN_USE,
    &SOCKETS,
    &EPHEMERAL_RANGE_MIN,
    &EPHEMERAL_RANGE_MAX,
    &EPHEMERAL_PORTS_RESERVED,
    &EPHEMERAL_PORTS_CAPACITY,
    &NAMESPACE_INFO,
    &CONNECT_ERRORS,
    &BIND_ERRORS,
    &PORT_EXHAUSTION,
    &TCP_TRANSITIONS,
    &EVENTS,
    &EVENTS_LOST,
    &KERNEL_MAP_FULL,
    &SNAPSHOTS,
    &SNAPSHOT_FAILURES,
    &SNAPSHOT_DURATION,
    &NAMESPACES,
    &PROGRAM_INFO,
    &BUILD_INFO,
];

/// One metric family being filled in.
struct Family<'a> {
    spec: &'a Spec,
    metrics: Vec<Metric>,
}

impl<'a> Family<'a> {
    fn new(spec: &'a Spec) -> Self {
        Self {
            spec,
            metrics: Vec::new(),
        }
    }

    /// Adds a series; `values` are the label values in the order of `spec.labels`.
    fn add(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.spec.labels.len(), "{}", self.spec.name);
        let labels = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        let mut metric = Metric::from_label(labels);
        if self.spec.kind == MetricType::COUNTER {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        self.metrics.push(metric);
    }

    fn finish(self) -> Option<MetricFamily> {
        if self.metrics.is_empty() {
            return None;
        }
        let mut family = MetricFamily::default();
        family.set_name(self.spec.name.to_owned());
        family.set_help(self.spec.help.to_owned());
        family.set_field_type(self.spec.kind);
        family.set_metric(self.metrics);
        Some(family)
    }
}

/// What the exporter knows besides the model: fixed for the process's life.
#[derive(Clone, Debug, Default)]
pub struct Static {
    pub hooks: Vec<Hook>,
    pub version: &'static str,
    pub revision: &'static str,
}

/// Renders the model and the static facts as metric families.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub fn render(model: &Model, fixed: &Static) -> Vec<MetricFamily> {
    let mut ports = Family::new(&PORTS_IN_USE);
    let mut sockets = Family::new(&SOCKETS);
    let mut range_min = Family::new(&EPHEMERAL_RANGE_MIN);
    let mut range_max = Family::new(&EPHEMERAL_RANGE_MAX);
    let mut reserved = Family::new(&EPHEMERAL_PORTS_RESERVED);
    let mut capacity = Family::new(&EPHEMERAL_PORTS_CAPACITY);
    let mut info = Family::new(&NAMESPACE_INFO);
    for (netns, gauges) in model.namespaces() {
        let netns = netns.to_string();
        for (protocol, range, count) in gauges.ports_in_use() {
            ports.add(&[&netns, protocol.label(), range.label()], f64::from(count));
        }
        for (protocol, state, count) in gauges.sockets() {
            sockets.add(&[&netns, protocol.label(), state.label()], count as f64);
        }
        if let Some(range) = gauges.ephemeral {
            range_min.add(&[&netns], f64::from(range.min));
            range_max.add(&[&netns], f64::from(range.max));
            reserved.add(&[&netns], f64::from(range.reserved));
            capacity.add(&[&netns], f64::from(range.capacity));
        }
        info.add(&[&netns, gauges.name.as_deref().unwrap_or("")], 1.0);
    }

    let mut connect = Family::new(&CONNECT_ERRORS);
    let mut bind = Family::new(&BIND_ERRORS);
    // Exhaustion series exist at 0 for every known namespace, so that rate() and increase()
    // see the first failure instead of a series appearing out of nowhere.
    let mut exhausted: BTreeMap<(NetnsId, Protocol, Operation), u64> = model
        .known_namespaces()
        .into_iter()
        .flat_map(|netns| OPERATIONS.map(|operation| ((netns, Protocol::Tcp, operation), 0)))
        .collect();
    for (netns, kind, count) in model.failures() {
        let (netns_label, errno) = (netns.to_string(), errno::name(kind.errno));
        let labels = [netns_label.as_str(), kind.protocol.label(), errno.as_str()];
        match kind.operation {
            Operation::Connect => connect.add(&labels, count as f64),
            Operation::Bind => bind.add(&labels, count as f64),
        }
        if kind.is_exhaustion() {
            *exhausted
                .entry((netns, kind.protocol, kind.operation))
                .or_default() += count;
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

    let mut transitions = Family::new(&TCP_TRANSITIONS);
    for (old, new, count) in model.transitions() {
        transitions.add(&[old.label(), new.label()], count as f64);
    }

    let stats = model.stats();
    let mut events = Family::new(&EVENTS);
    for operation in OPERATIONS {
        let count = stats.events.get(&operation).copied().unwrap_or_default();
        events.add(&[event_kind_label(operation)], count as f64);
    }
    let single = |spec, value: f64| {
        let mut family = Family::new(spec);
        family.add(&[], value);
        family
    };
    let mut map_full = Family::new(&KERNEL_MAP_FULL);
    map_full.add(&["socket_errors"], stats.error_keys_dropped as f64);
    let mut programs = Family::new(&PROGRAM_INFO);
    for hook in &fixed.hooks {
        programs.add(&[hook.program, &hook.attach_point], 1.0);
    }
    let mut build = Family::new(&BUILD_INFO);
    build.add(&[fixed.version, fixed.revision], 1.0);

    [
        ports,
        sockets,
        range_min,
        range_max,
        reserved,
        capacity,
        info,
        connect,
        bind,
        exhaustion,
        transitions,
        events,
        single(&EVENTS_LOST, stats.events_lost as f64),
        map_full,
        single(&SNAPSHOTS, stats.snapshots as f64),
        single(&SNAPSHOT_FAILURES, stats.snapshot_failures as f64),
        single(&SNAPSHOT_DURATION, stats.last_snapshot_seconds),
        single(&NAMESPACES, model.namespaces().count() as f64),
        programs,
        build,
    ]
    .into_iter()
    .filter_map(Family::finish)
    .collect()
}

const OPERATIONS: [Operation; 2] = [Operation::Connect, Operation::Bind];

/// The `kind` label value of `port_monitor_events_total`.
const fn event_kind_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Connect => "connect_failure",
        Operation::Bind => "bind_failure",
    }
}

/// The `operation` label value.
const fn operation_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Connect => "connect",
        Operation::Bind => "bind",
    }
}

/// A `prometheus` collector over the shared model.
pub struct ModelCollector {
    model: Arc<RwLock<Model>>,
    fixed: Static,
    descs: Vec<Desc>,
}

impl ModelCollector {
    /// # Errors
    /// When a metric spec is not a valid Prometheus name or label set.
    pub fn new(model: Arc<RwLock<Model>>, fixed: Static) -> prometheus::Result<Self> {
        let descs = ALL
            .iter()
            .map(|spec| {
                Desc::new(
                    spec.name.to_owned(),
                    spec.help.to_owned(),
                    spec.labels.iter().map(|&label| label.to_owned()).collect(),
                    std::collections::HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            model,
            fixed,
            descs,
        })
    }
}

impl Collector for ModelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let model = self.model.read().unwrap_or_else(PoisonError::into_inner);
        render(&model, &self.fixed)
    }
}
