//! Every metric port-monitor exports, rendered from the model at scrape time. Rendering reads
//! only the model: no I/O and no work per socket, so a scrape costs the same whether the node
//! has a thousand sockets or a million.

use std::sync::{Arc, PoisonError, RwLock};

use prometheus::{
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::{kernel::Hook, model::Model};

mod anomalies;
mod failures;
mod headroom;
mod namespace;
mod nat;
mod own;
mod tcp_tuning;

pub use self::{
    anomalies::{ANOMALIES, ANOMALY_LAST_INFO},
    failures::{BIND_ERRORS, CONNECT_ERRORS, PORT_EXHAUSTION},
    headroom::{
        BIND_BEFORE_CONNECT, DESTINATION_PORTS_IN_USE, DESTINATION_UTILIZATION, UTILIZATION_MAX,
    },
    namespace::{
        EPHEMERAL_PORTS_CAPACITY, EPHEMERAL_PORTS_RESERVED, EPHEMERAL_RANGE_MAX,
        EPHEMERAL_RANGE_MIN, EPHEMERAL_SERVER_OVERLAP, NAMESPACE_INFO, NETNS_WORKLOAD_INFO,
        PORTS_IN_USE, SOCKETS,
    },
    nat::{
        CONNTRACK_ENTRIES, CONNTRACK_ENTRIES_LIMIT, CONNTRACK_EVENTS, DESTINATION_CONNECT_TIMEOUTS,
        DESTINATION_SYN_SENT, NAT_PORTS_IN_USE, NAT_UTILIZATION, NAT_UTILIZATION_MAX,
    },
    own::{
        BUILD_INFO, DEGRADED, EVENTS, EVENTS_LOST, EVENTS_UNDECODABLE, KERNEL_MAP_FULL, NAMESPACES,
        PROGRAM_INFO, SNAPSHOT_CORRECTIONS, SNAPSHOT_DURATION, SNAPSHOT_FAILURES, SNAPSHOTS,
        TCP_TRANSITIONS,
    },
    tcp_tuning::{TCP_SETTINGS_INFO, TIME_WAIT_EVENTS},
};

/// Every family rendered from the model, in exposition order: each file's own, family by
/// family.
pub fn all() -> impl Iterator<Item = &'static Spec> {
    namespace::SPECS
        .into_iter()
        .chain(headroom::SPECS)
        .chain(nat::SPECS)
        .chain(tcp_tuning::SPECS)
        .chain(failures::SPECS)
        .chain(anomalies::SPECS)
        .chain(own::SPECS)
}

/// A metric's name, type, help and label names: the contract dashboards and alerts rely on.
pub struct Spec {
    pub name: &'static str,
    pub kind: MetricType,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

pub(super) const fn gauge(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        kind: MetricType::GAUGE,
        help,
        labels,
    }
}

pub(super) const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        kind: MetricType::COUNTER,
        help,
        labels,
    }
}

/// How many series a scrape carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Detail {
    /// Zero-valued series of states, ranges and events are left out, and each counter
    /// appears with its first event: an idle pod namespace costs a dozen series.
    #[default]
    Compact,
    /// Every state, range, event and anomaly kind of every namespace, zeros included.
    Full,
}

/// One metric family being filled in.
pub(super) struct Family<'a> {
    spec: &'a Spec,
    metrics: Vec<Metric>,
    /// Leave out series whose value is 0.
    sparse: bool,
}

impl<'a> Family<'a> {
    pub(super) fn new(spec: &'a Spec) -> Self {
        Self {
            spec,
            metrics: Vec::new(),
            sparse: false,
        }
    }

    /// A family whose zero-valued series are left out at [`Detail::Compact`]: states, ranges
    /// and events a namespace has none of, counters before their first event.
    pub(super) fn sparse(spec: &'a Spec, detail: Detail) -> Self {
        Self {
            sparse: detail == Detail::Compact,
            ..Self::new(spec)
        }
    }

    /// Adds a series; `values` are the label values in the order of `spec.labels`.
    pub(super) fn add(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.spec.labels.len(), "{}", self.spec.name);
        if self.sparse && value == 0.0 {
            return;
        }
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
    pub detail: Detail,
}

/// Renders the model and the static facts as metric families.
#[must_use]
pub fn render(model: &Model, fixed: &Static) -> Vec<MetricFamily> {
    let detail = fixed.detail;
    namespace::render(model, detail)
        .into_iter()
        .chain(headroom::render(model, detail))
        .chain(nat::render(model, detail))
        .chain(tcp_tuning::render(model, detail))
        .chain(failures::render(model, detail))
        .chain(anomalies::render(model, detail))
        .chain(own::render(model, fixed))
        .filter_map(Family::finish)
        .collect()
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
        let descs = all()
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
                conntrack: None,
                conntrack_unreadable: false,
                tcp: crate::model::TcpTuning::default(),
                host: false,
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
            detail: Detail::Full,
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
                    r#"port_monitor_namespace_info{netns="7",name="blue",host="false"} 1"#,
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

    /// The series of one idle pod namespace: a listener, its pod, the kernel's defaults, a
    /// few connections closed long ago.
    fn idle_pod_series(detail: Detail) -> usize {
        let mut sockets = SocketTally::default();
        sockets.add(&crate::model::sockets::tcp(TcpState::Listen, 8080));
        let mut time_wait = crate::model::TimeWaitEvents::default();
        time_wait.set(crate::model::TimeWaitEvent::Tw, 12);
        let pod = NamespaceSnapshot {
            netns: 4_026_532_900,
            ports: Some(PortConfig {
                ephemeral: 32768..=60999,
                reserved: crate::model::PortSet::default(),
                time_wait_reuse: crate::model::TimeWaitReuse::default(),
            }),
            sockets,
            workload: crate::workloads::from_path(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f5c2a71_3b4d_4e8f_9a10_b2c3d4e5f607.slice/cri-containerd-2d8f5e1b4c3a79e0f6b1d2c3a4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b.scope",
            ),
            tcp: crate::model::TcpTuning {
                sysctls: crate::model::TcpSysctls {
                    tw_reuse: Some(2),
                    timestamps: Some(1),
                    max_tw_buckets: Some(262_144),
                    fin_timeout: Some(60),
                },
                time_wait_events: Some(time_wait),
            },
            ..NamespaceSnapshot::default()
        };
        let mut model = Model::default();
        model.apply_snapshot(&[pod], &[], crate::model::Timing::default());
        let fixed = Static {
            detail,
            ..Static::default()
        };
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&render(&model, &fixed), &mut text)
            .expect("encodes");
        String::from_utf8(text)
            .expect("UTF-8")
            .lines()
            .filter(|line| line.contains("netns=\"4026532900\""))
            .count()
    }

    /// The series budget: an idle pod namespace costs at most 12 series by default, and
    /// every one with `--metrics.detail=full`.
    #[test]
    fn an_idle_pod_namespace_costs_at_most_twelve_series() {
        let compact = idle_pod_series(Detail::Compact);
        assert!(compact <= 12, "{compact} series");
        let full = idle_pod_series(Detail::Full);
        assert!(full > 40, "{full} series at full detail");
    }

    #[test]
    fn every_metric_is_documented() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
                .expect("docs/metrics.md");
        for spec in all() {
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
        for spec in all() {
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
            KernelCounters, NamespaceSnapshot, PortConfig, Protocol, SocketTally, TcpState,
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

    /// The busy namespace's conntrack table: five connections masqueraded toward one
    /// destination, one toward another, and the kernel's statistics.
    fn busy_conntrack() -> crate::model::ConntrackSnapshot {
        use crate::model::{ConntrackEvent, NatKey};
        let mut conntrack = crate::model::ConntrackSnapshot {
            entries: 9,
            limit: Some(262_144),
            ..Default::default()
        };
        conntrack.events.add(ConntrackEvent::InsertFailed, 3);
        conntrack.events.add(ConntrackEvent::Drop, 3);
        conntrack.events.add(ConntrackEvent::ClashResolve, 1);
        for (count, port) in [(5, 80), (1, 53)] {
            let protocol = if port == 53 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            for _ in 0..count {
                conntrack.count_nat(
                    NatKey {
                        protocol,
                        nat_address: "10.2.0.1".parse().expect("literal"),
                        destination: "10.2.0.2".parse().expect("literal"),
                        destination_port: port,
                    },
                    false,
                );
            }
        }
        conntrack
    }

    /// The busy namespace's TCP settings, and its `TIME_WAIT` counters: reuse at work, and the
    /// bucket limit hit.
    fn busy_tcp() -> crate::model::TcpTuning {
        use crate::model::TimeWaitEvent;
        let mut events = crate::model::TimeWaitEvents::default();
        for (event, count) in [
            (TimeWaitEvent::Tw, 5000),
            (TimeWaitEvent::TwRecycled, 120),
            (TimeWaitEvent::Overflow, 3),
        ] {
            events.set(event, count);
        }
        crate::model::TcpTuning {
            sysctls: crate::model::TcpSysctls {
                tw_reuse: Some(1),
                timestamps: Some(1),
                max_tw_buckets: Some(5000),
                fin_timeout: Some(30),
            },
            time_wait_events: Some(events),
        }
    }

    /// A node with two namespaces: a busy one with failed calls, a NAT and a connect waiting
    /// for an answer, and a quiet named one.
    fn scenario() -> String {
        let mut busy = busy_sockets();
        busy.add(&socket(
            Protocol::Tcp,
            TcpState::SynSent,
            "10.0.0.2:40009",
            "10.9.0.9:443",
        ));
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
                conntrack: Some(busy_conntrack()),
                conntrack_unreadable: false,
                tcp: busy_tcp(),
                host: true,
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
                conntrack: None,
                conntrack_unreadable: false,
                tcp: crate::model::TcpTuning::default(),
                host: false,
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
        // A connect whose SYNs got no answer.
        let mut timed_out = exhausted;
        timed_out.errno = 110;
        timed_out.flags = 0;
        timed_out.local_port = 40009;
        timed_out.remote_addr[..4].copy_from_slice(&[10, 9, 0, 9]);
        model.apply_failure(&decode::decode(&decode::tests::record(&timed_out)).expect("fixture"));
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
            detail: Detail::default(),
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
