//! port-monitor about itself: what the kernel programs saw and dropped, how snapshots go,
//! what is attached and what is not seen.

use port_monitor_common::Operation;

use super::{Family, Spec, Static, counter, gauge};
use crate::{kernel, model::Model};

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
    "What port-monitor cannot see now, by reason: namespaces the latest snapshot could not read (namespace_unreadable: their gauges are the previous ones) or read without their port sysctls (sysctl_unreadable: no ephemeral range gauges) or without their conntrack table, where conntrack is loaded (conntrack_unreadable: no conntrack or NAT gauges; a kernel without ctnetlink shows here); 1 when a collector's kernel hooks could not be attached or are not cheap on this kernel (bind_hooks_unavailable, autobind_hooks_unavailable, bound_sockets_unavailable: see the log). 0 when all is seen.",
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

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 13] = [
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

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render<'a>(model: &Model, fixed: &'a Static) -> Vec<Family<'a>> {
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
    degraded.add(&["conntrack_unreadable"], stats.unreadable_conntrack as f64);
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

/// The `kind` label value of `port_monitor_events_total`.
const fn event_kind_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Connect => "connect_failure",
        Operation::Bind => "bind_failure",
        Operation::Autobind => "autobind_failure",
    }
}
