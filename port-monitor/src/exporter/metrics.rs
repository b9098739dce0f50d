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
    kernel::{self, Hook},
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
pub const BIND_BEFORE_CONNECT: Spec = gauge(
    "port_monitor_bind_before_connect_sockets",
    "Connected TCP sockets whose local port came from bind(): each port is lost to every destination; only namespaces that have some.",
    &["netns"],
);
pub const NAMESPACE_INFO: Spec = gauge(
    "port_monitor_namespace_info",
    "A network namespace with its name under /var/run/netns (empty when it has none).",
    &["netns", "name"],
);
pub const NETNS_WORKLOAD_INFO: Spec = gauge(
    "port_monitor_netns_workload_info",
    "The pod and container a network namespace belongs to, from a process's cgroup path.",
    &["netns", "pod_uid", "container_id", "runtime"],
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
    "Calls that failed because no local port was free: TCP connect() with EADDRNOTAVAIL, bind(port 0) with EADDRINUSE, UDP autobind with EAGAIN.",
    &["netns", "protocol", "operation"],
);
pub const ANOMALIES: Spec = counter(
    "port_monitor_anomalies_total",
    "Anomalies by kind, counted when they happen (docs/metrics.md defines each kind).",
    &["netns", "kind"],
);
pub const ANOMALY_LAST_INFO: Spec = gauge(
    "port_monitor_anomaly_last_info",
    "The most recent anomaly of each kind: where, what, and the process when the kernel saw it.",
    &["kind", "netns", "subject", "comm", "pid", "cgroup_id"],
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
pub const EVENTS_UNDECODABLE: Spec = counter(
    "port_monitor_events_undecodable_total",
    "Records from the kernel programs that could not be decoded (a daemon and programs of different builds).",
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
    "Namespaces whose socket tables could not be read in a snapshot (their previous gauges stand).",
    &[],
);
pub const DEGRADED: Spec = gauge(
    "port_monitor_degraded",
    "What port-monitor cannot see now, by reason: namespaces the latest snapshot could not read (namespace_unreadable: their gauges are the previous ones) or read without their port sysctls (sysctl_unreadable: no ephemeral range gauges); 1 when a collector's kernel hooks could not be attached or are not cheap on this kernel (bind_hooks_unavailable, autobind_hooks_unavailable, bound_sockets_unavailable: see the log). 0 when all is seen.",
    &["reason"],
);
pub const SNAPSHOT_CORRECTIONS: Spec = counter(
    "port_monitor_snapshot_corrections_total",
    "Sockets the socket tables showed that the TCP state changes counted in between could not explain.",
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
pub const ALL: [&Spec; 30] = [
    &PORTS_IN_USE,
    &SOCKETS,
    &DESTINATION_PORTS_IN_USE,
    &DESTINATION_UTILIZATION,
    &UTILIZATION_MAX,
    &EPHEMERAL_RANGE_MIN,
    &EPHEMERAL_RANGE_MAX,
    &EPHEMERAL_PORTS_RESERVED,
    &EPHEMERAL_PORTS_CAPACITY,
    &BIND_BEFORE_CONNECT,
    &NAMESPACE_INFO,
    &NETNS_WORKLOAD_INFO,
    &CONNECT_ERRORS,
    &BIND_ERRORS,
    &PORT_EXHAUSTION,
    &ANOMALIES,
    &ANOMALY_LAST_INFO,
    &TCP_TRANSITIONS,
    &EVENTS,
    &EVENTS_LOST,
    &EVENTS_UNDECODABLE,
    &KERNEL_MAP_FULL,
    &SNAPSHOTS,
    &SNAPSHOT_FAILURES,
    &DEGRADED,
    &SNAPSHOT_CORRECTIONS,
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
    /// `port_monitor_degraded` reasons of the collectors that could not be attached.
    pub unavailable: Vec<&'static str>,
    pub version: &'static str,
    pub revision: &'static str,
}

/// Renders the model and the static facts as metric families.
#[must_use]
pub fn render(model: &Model, fixed: &Static) -> Vec<MetricFamily> {
    namespace_gauges(model)
        .into_iter()
        .chain(failure_counters(model))
        .chain(anomalies(model))
        .chain(self_metrics(model, fixed))
        .filter_map(Family::finish)
        .collect()
}

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
fn namespace_gauges(model: &Model) -> [Family<'static>; 12] {
    let mut ports = Family::new(&PORTS_IN_USE);
    let mut sockets = Family::new(&SOCKETS);
    let mut destination_ports = Family::new(&DESTINATION_PORTS_IN_USE);
    let mut destination_ratio = Family::new(&DESTINATION_UTILIZATION);
    let mut max_ratio = Family::new(&UTILIZATION_MAX);
    let mut range_min = Family::new(&EPHEMERAL_RANGE_MIN);
    let mut range_max = Family::new(&EPHEMERAL_RANGE_MAX);
    let mut reserved = Family::new(&EPHEMERAL_PORTS_RESERVED);
    let mut capacity = Family::new(&EPHEMERAL_PORTS_CAPACITY);
    let mut bound_connections = Family::new(&BIND_BEFORE_CONNECT);
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
        if gauges.bound_connections > 0 {
            bound_connections.add(&[&netns], gauges.bound_connections as f64);
        }
        info.add(&[&netns, gauges.name.as_deref().unwrap_or("")], 1.0);
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
            max_ratio.add(&[&netns, protocol.label()], *ratio);
        }
    }
    [
        ports,
        sockets,
        destination_ports,
        destination_ratio,
        max_ratio,
        range_min,
        range_max,
        reserved,
        capacity,
        bound_connections,
        info,
        workloads,
    ]
}

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
fn failure_counters(model: &Model) -> [Family<'static>; 3] {
    // Exhaustion series exist at 0 for every known namespace, so that rate() and increase()
    // see the first failure instead of a series appearing out of nowhere.
    let mut exhausted: BTreeMap<(NetnsId, Protocol, Operation), u64> = model
        .known_namespaces()
        .into_iter()
        .flat_map(|netns| {
            EXHAUSTION_SERIES.map(|(protocol, operation)| ((netns, protocol, operation), 0))
        })
        .collect();
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

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
fn anomalies(model: &Model) -> [Family<'static>; 2] {
    let mut counts = Family::new(&ANOMALIES);
    for ((netns, kind), count) in model.anomalies() {
        counts.add(&[&netns.to_string(), kind.label()], count as f64);
    }
    let mut last = Family::new(&ANOMALY_LAST_INFO);
    for (kind, anomaly) in model.last_anomalies() {
        let caller = anomaly.caller.as_ref();
        let (pid, cgroup) = (
            caller
                .map(|caller| caller.tgid.to_string())
                .unwrap_or_default(),
            anomaly
                .cgroup_id
                .map(|cgroup| cgroup.to_string())
                .unwrap_or_default(),
        );
        let labels = [
            kind.label(),
            &anomaly.netns.to_string(),
            &anomaly.subject,
            caller.map_or("", |caller| caller.comm.as_str()),
            &pid,
            &cgroup,
        ];
        last.add(&labels, 1.0);
    }
    [counts, last]
}

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
fn self_metrics<'a>(model: &Model, fixed: &'a Static) -> Vec<Family<'a>> {
    let single = |spec, value: f64| {
        let mut family = Family::new(spec);
        family.add(&[], value);
        family
    };
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
    let mut map_full = Family::new(&KERNEL_MAP_FULL);
    map_full.add(&["bound_sockets"], stats.bound_sockets_dropped as f64);
    map_full.add(&["port_failures"], stats.port_failure_keys_dropped as f64);
    map_full.add(&["socket_errors"], stats.error_keys_dropped as f64);
    let mut programs = Family::new(&PROGRAM_INFO);
    for hook in &fixed.hooks {
        programs.add(&[hook.program, &hook.attach_point], 1.0);
    }
    let mut degraded = Family::new(&DEGRADED);
    degraded.add(
        &["namespace_unreadable"],
        stats.unreadable_namespaces as f64,
    );
    degraded.add(&["sysctl_unreadable"], stats.unreadable_sysctls as f64);
    for reason in [
        kernel::BIND_UNAVAILABLE,
        kernel::AUTOBIND_UNAVAILABLE,
        kernel::BOUND_SOCKETS_UNAVAILABLE,
    ] {
        let missing = fixed.unavailable.contains(&reason);
        degraded.add(&[reason], f64::from(u8::from(missing)));
    }
    let mut build = Family::new(&BUILD_INFO);
    build.add(&[fixed.version, fixed.revision], 1.0);
    vec![
        transitions,
        events,
        single(&EVENTS_LOST, stats.events_lost as f64),
        single(&EVENTS_UNDECODABLE, stats.events_undecodable as f64),
        map_full,
        single(&SNAPSHOTS, stats.snapshots as f64),
        single(&SNAPSHOT_FAILURES, stats.snapshot_failures as f64),
        degraded,
        single(&SNAPSHOT_CORRECTIONS, stats.snapshot_corrections as f64),
        single(&SNAPSHOT_DURATION, stats.last_snapshot_seconds),
        single(&NAMESPACES, model.namespaces().count() as f64),
        programs,
        build,
    ]
}

const OPERATIONS: [Operation; 3] = [Operation::Connect, Operation::Bind, Operation::Autobind];

/// The ways each protocol runs out of ports: their exhaustion series always exist.
const EXHAUSTION_SERIES: [(Protocol, Operation); 4] = [
    (Protocol::Tcp, Operation::Connect),
    (Protocol::Tcp, Operation::Bind),
    (Protocol::Udp, Operation::Bind),
    (Protocol::Udp, Operation::Autobind),
];

/// The `kind` label value of `port_monitor_events_total`.
const fn event_kind_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Connect => "connect_failure",
        Operation::Bind => "bind_failure",
        Operation::Autobind => "autobind_failure",
    }
}

/// The `operation` label value.
const fn operation_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Connect => "connect",
        Operation::Bind => "bind",
        Operation::Autobind => "autobind",
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

#[cfg(test)]
mod tests {
    use port_monitor_common::{
        Operation, PROTOCOL_TCP,
        event::{FLAG_AUTO_PORT, FLAG_HAS_CALLER},
        maps::ErrorKey,
    };
    use prometheus::{Encoder as _, TextEncoder};

    use super::*;
    use crate::{
        kernel::decode::{self, tests::exhausted_connect, tests::record},
        model::{KernelCounters, NamespaceSnapshot, PortConfig, SocketTally, TcpState},
    };

    /// The exposition text of the model after feeding it `records` (raw ring buffer bytes)
    /// and `errors` (the error map's entries), with one namespace 7 snapshotted.
    fn exposition(records: &[Vec<u8>], errors: &[(ErrorKey, u64)]) -> String {
        let mut model = Model::default();
        let mut sockets = SocketTally::default();
        sockets.add(&crate::model::sockets::tcp(TcpState::Established, 40001));
        model.apply_snapshot(
            &[NamespaceSnapshot {
                netns: 7,
                cookie: None,
                name: Some("blue".into()),
                ports: Some(PortConfig {
                    ephemeral: 40000..=40009,
                    reserved: std::iter::empty().collect(),
                    time_wait_reuse: crate::model::TimeWaitReuse::default(),
                }),
                sockets,
                workload: crate::workloads::Workload::default(),
            }],
            &[],
            crate::model::Timing {
                duration_seconds: 0.5,
                started_seconds: 0.0,
            },
        );
        for bytes in records {
            model.apply_failure(&decode::decode(bytes).expect("fixture decodes"));
        }
        model.apply_kernel_counters(&KernelCounters {
            errors: errors.to_vec(),
            transitions: [((TcpState::SynSent, TcpState::Established), 5)].into(),
            events_lost: 2,
            error_keys_dropped: 0,
            port_failure_keys_dropped: 0,
            bound_sockets_dropped: 0,
        });
        let fixed = Static {
            hooks: Vec::new(),
            unavailable: Vec::new(),
            version: "1.2.3",
            revision: "abc",
        };
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&render(&model, &fixed), &mut text)
            .expect("encodes");
        String::from_utf8(text).expect("UTF-8")
    }

    fn key(netns: u32, operation: Operation, errno: u16, auto_port: bool) -> ErrorKey {
        ErrorKey::new((netns, 0), operation, PROTOCOL_TCP, errno, auto_port)
    }

    #[test]
    fn aggregates_raw_records_and_counters_into_series() {
        struct Case {
            name: &'static str,
            records: Vec<Vec<u8>>,
            errors: Vec<(ErrorKey, u64)>,
            lines: &'static [&'static str],
        }
        let mut bind_conflict = exhausted_connect();
        bind_conflict.operation = Operation::Bind as u8;
        bind_conflict.errno = 98;
        bind_conflict.flags = FLAG_HAS_CALLER;
        let mut bind_exhausted = bind_conflict;
        bind_exhausted.flags = FLAG_HAS_CALLER | FLAG_AUTO_PORT;

        let cases = [
            Case {
                name: "a quiet namespace has its gauges and zeroed exhaustion counters",
                records: vec![],
                errors: vec![],
                lines: &[
                    r#"port_monitor_sockets{netns="7",protocol="tcp",state="established"} 1"#,
                    r#"port_monitor_sockets{netns="7",protocol="tcp",state="time_wait"} 0"#,
                    r#"port_monitor_ports_in_use{netns="7",protocol="tcp",range="ephemeral"} 1"#,
                    r#"port_monitor_ports_in_use{netns="7",protocol="tcp",range="registered"} 1"#,
                    r#"port_monitor_ephemeral_range_min{netns="7"} 40000"#,
                    r#"port_monitor_ephemeral_range_max{netns="7"} 40009"#,
                    r#"port_monitor_ephemeral_ports_capacity{netns="7"} 10"#,
                    r#"port_monitor_namespace_info{netns="7",name="blue"} 1"#,
                    r#"port_monitor_port_exhaustion_total{netns="7",protocol="tcp",operation="connect"} 0"#,
                    r#"port_monitor_port_exhaustion_total{netns="7",protocol="tcp",operation="bind"} 0"#,
                    r#"port_monitor_tcp_state_transitions_total{from="syn_sent",to="established"} 5"#,
                    "port_monitor_events_lost_total 2",
                    r#"port_monitor_build_info{version="1.2.3",revision="abc"} 1"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="near_exhaustion"} 0"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="listener_in_ephemeral_range"} 0"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="time_wait_accumulation"} 0"#,
                ],
            },
            Case {
                name: "connect out of ports: an error, an exhaustion, an event",
                records: vec![record(&exhausted_connect())],
                errors: vec![(key(7, Operation::Connect, 99, true), 4)],
                lines: &[
                    r#"port_monitor_connect_errors_total{netns="7",protocol="tcp",errno="EADDRNOTAVAIL"} 4"#,
                    r#"port_monitor_port_exhaustion_total{netns="7",protocol="tcp",operation="connect"} 4"#,
                    r#"port_monitor_events_total{kind="connect_failure"} 1"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="port_exhaustion"} 4"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="bind_conflict"} 0"#,
                    r#"port_monitor_anomaly_last_info{kind="port_exhaustion",netns="4026532000",subject="0.0.0.0 -> 10.0.0.7:443",comm="curl",pid="4242",cgroup_id="77"} 1"#,
                ],
            },
            Case {
                name: "bind conflict and bind(0) out of ports: both errors, one exhaustion",
                records: vec![record(&bind_conflict), record(&bind_exhausted)],
                errors: vec![
                    (key(7, Operation::Bind, 98, false), 2),
                    (key(7, Operation::Bind, 98, true), 3),
                ],
                lines: &[
                    r#"port_monitor_bind_errors_total{netns="7",protocol="tcp",errno="EADDRINUSE"} 5"#,
                    r#"port_monitor_port_exhaustion_total{netns="7",protocol="tcp",operation="bind"} 3"#,
                    r#"port_monitor_events_total{kind="bind_failure"} 2"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="bind_conflict"} 2"#,
                    r#"port_monitor_anomalies_total{netns="7",kind="port_exhaustion"} 3"#,
                ],
            },
            Case {
                name: "a namespace only the kernel has seen yet still gets its counters",
                records: vec![],
                errors: vec![(key(9, Operation::Connect, 111, false), 1)],
                lines: &[
                    r#"port_monitor_connect_errors_total{netns="9",protocol="tcp",errno="ECONNREFUSED"} 1"#,
                    r#"port_monitor_port_exhaustion_total{netns="9",protocol="tcp",operation="connect"} 0"#,
                ],
            },
        ];
        for case in cases {
            let text = exposition(&case.records, &case.errors);
            for line in case.lines {
                assert!(
                    text.lines().any(|have| have == *line),
                    "{}: missing {line}\n{text}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn every_metric_is_documented() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
                .expect("docs/metrics.md");
        for spec in ALL {
            assert!(
                docs.contains(spec.name),
                "{} is missing from docs/metrics.md",
                spec.name
            );
            for label in spec.labels {
                assert!(
                    docs.contains(label),
                    "label {label} of {} is not documented",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn every_family_has_help_and_a_type() {
        let text = exposition(&[], &[(key(7, Operation::Connect, 99, true), 1)]);
        for spec in ALL {
            let rendered = text.contains(&format!("# TYPE {} ", spec.name));
            let has_series = text.lines().any(|line| line.starts_with(spec.name));
            assert_eq!(rendered, has_series, "{}", spec.name);
            assert!(spec.help.ends_with('.'), "{} help is a sentence", spec.name);
            if spec.kind == MetricType::COUNTER {
                assert!(spec.name.ends_with("_total"), "{} is a counter", spec.name);
            }
        }
    }
}

#[cfg(test)]
mod golden {
    use std::{io::Write as _, path::PathBuf, process::Command};

    use port_monitor_common::{Operation, PROTOCOL_TCP, PROTOCOL_UDP, maps::ErrorKey};
    use prometheus::{Encoder as _, TextEncoder};

    use super::*;
    use crate::{
        kernel::{Hook, decode},
        model::{
            KernelCounters, NamespaceSnapshot, PortConfig, SocketTally, TcpState,
            ports::parse_reserved_ports, sockets::socket,
        },
    };

    /// The busy namespace's sockets: a hot destination, `TIME_WAIT`, a listener in the
    /// ephemeral range, a UDP socket.
    fn busy_sockets() -> SocketTally {
        let mut busy = SocketTally::default();
        busy.add(&socket(
            Protocol::Tcp,
            TcpState::Listen,
            "0.0.0.0:40005",
            "0.0.0.0:0",
        ));
        for port in 40000..40004 {
            busy.add(&socket(
                Protocol::Tcp,
                TcpState::Established,
                &format!("10.0.0.2:{port}"),
                "10.0.0.1:443",
            ));
        }
        for port in 40006..40008 {
            busy.add(&socket(
                Protocol::Tcp,
                TcpState::TimeWait,
                &format!("10.0.0.2:{port}"),
                "10.0.0.1:443",
            ));
        }
        busy.add(&socket(
            Protocol::Tcp,
            TcpState::Established,
            "10.0.0.2:40000",
            "10.0.0.3:5432",
        ));
        // A port bound, then connected: lost to every destination.
        busy.add(&crate::model::Socket {
            binder: Some(crate::model::Binder {
                tgid: 4343,
                comm: *b"haproxy\0\0\0\0\0\0\0\0\0",
                cgroup_id: 78,
            }),
            ..socket(
                Protocol::Tcp,
                TcpState::Established,
                "10.0.0.2:40008",
                "10.0.0.4:80",
            )
        });
        busy.add(&socket(
            Protocol::Udp,
            TcpState::Close,
            "0.0.0.0:40001",
            "0.0.0.0:0",
        ));
        busy
    }

    /// The kernel counters of the scenario's busy namespace.
    fn scenario_counters() -> KernelCounters {
        KernelCounters {
            errors: vec![
                (
                    ErrorKey::new(
                        (4_026_532_001, 0),
                        Operation::Connect,
                        PROTOCOL_TCP,
                        99,
                        true,
                    ),
                    3,
                ),
                (
                    ErrorKey::new(
                        (4_026_532_001, 0),
                        Operation::Connect,
                        PROTOCOL_TCP,
                        111,
                        false,
                    ),
                    12,
                ),
                (
                    ErrorKey::new((4_026_532_001, 0), Operation::Bind, PROTOCOL_TCP, 98, false),
                    1,
                ),
                (
                    ErrorKey::new(
                        (4_026_532_001, 0),
                        Operation::Autobind,
                        PROTOCOL_UDP,
                        11,
                        true,
                    ),
                    2,
                ),
            ],
            transitions: [
                ((TcpState::Close, TcpState::SynSent), 20),
                ((TcpState::SynSent, TcpState::Established), 5),
                ((TcpState::SynSent, TcpState::Close), 15),
            ]
            .into(),
            events_lost: 0,
            error_keys_dropped: 0,
            port_failure_keys_dropped: 0,
            bound_sockets_dropped: 0,
        }
    }

    /// A node with two namespaces: a busy one with failed calls, and a quiet named one.
    fn scenario() -> String {
        let busy = busy_sockets();
        let mut quiet = SocketTally::default();
        quiet.add(&socket(
            Protocol::Tcp,
            TcpState::Listen,
            "[::]:8080",
            "[::]:0",
        ));
        let snapshots = [
            NamespaceSnapshot {
                netns: 4_026_532_001,
                cookie: None,
                name: None,
                ports: Some(PortConfig {
                    ephemeral: 40000..=40009,
                    reserved: parse_reserved_ports("40009").expect("valid"),
                    time_wait_reuse: crate::model::TimeWaitReuse::default(),
                }),
                sockets: busy,
                workload: crate::workloads::from_path(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f5c2a71_3b4d_4e8f_9a10_b2c3d4e5f607.slice/cri-containerd-2d8f5e1b4c3a79e0f6b1d2c3a4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b.scope",
                ),
            },
            NamespaceSnapshot {
                netns: 4_026_532_002,
                cookie: None,
                name: Some("blue".into()),
                ports: Some(PortConfig {
                    ephemeral: 32768..=60999,
                    reserved: parse_reserved_ports("").expect("valid"),
                    time_wait_reuse: crate::model::TimeWaitReuse::default(),
                }),
                sockets: quiet,
                workload: crate::workloads::Workload::default(),
            },
        ];
        let mut model = Model::default();
        let timing = crate::model::Timing {
            duration_seconds: 0.012,
            started_seconds: 0.0,
        };
        model.apply_snapshot(&snapshots, &[], timing);
        let mut exhausted = decode::tests::exhausted_connect();
        exhausted.netns = 4_026_532_001;
        model.apply_failure(&decode::decode(&decode::tests::record(&exhausted)).expect("fixture"));
        model.apply_kernel_counters(&scenario_counters());
        let fixed = Static {
            hooks: vec![Hook {
                program: "tcp_state_change",
                attach_point: "tp_btf/inet_sock_set_state".into(),
                facts: "",
            }],
            // A node without the syscall tracepoints: the degraded gauge says so.
            unavailable: vec![crate::kernel::AUTOBIND_UNAVAILABLE],
            version: "0.0.0-test",
            revision: "golden",
        };
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&render(&model, &fixed), &mut text)
            .expect("encodes");
        String::from_utf8(text).expect("UTF-8")
    }

    fn golden_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/exporter/testdata/golden.prom")
    }

    /// The exposition of a fixed scenario, line for line. After an intended change, rewrite
    /// it with `UPDATE_GOLDEN=1 cargo test -p port-monitor golden` and review the diff.
    #[test]
    fn golden_exposition_matches() {
        let text = scenario();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden_path(), &text).expect("write golden file");
        }
        let golden = std::fs::read_to_string(golden_path()).expect("golden file");
        assert_eq!(
            text, golden,
            "exposition changed; see this test's doc comment"
        );
    }

    /// `promtool check metrics` (Debian package prometheus, installed by `cargo xtask test`)
    /// accepts the golden exposition. Without promtool it skips, except under CI=true.
    #[test]
    fn golden_exposition_passes_promtool() {
        let spawned = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut promtool) = spawned else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool missing under CI=true"
            );
            eprintln!("SKIPPED golden_exposition_passes_promtool: promtool is not installed");
            return;
        };
        let golden = std::fs::read_to_string(golden_path()).expect("golden file");
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(golden.as_bytes())
            .expect("feed promtool");
        let output = promtool.wait_with_output().expect("promtool ran");
        assert!(
            output.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
