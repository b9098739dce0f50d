//! The TCP settings that decide exhaustion, per namespace, and the kernel's `TIME_WAIT`
//! counters: drift between nodes, and whether a tuning knob does anything.

use super::{Detail, Family, Spec, counter, gauge};
use crate::model::Model;

pub const TCP_SETTINGS_INFO: Spec = gauge(
    "port_monitor_tcp_settings_info",
    "The namespace's TCP sysctls that decide port exhaustion, as labels (empty where the kernel has none): tcp_tw_reuse, tcp_timestamps, tcp_max_tw_buckets, tcp_fin_timeout.",
    &[
        "netns",
        "tcp_tw_reuse",
        "tcp_timestamps",
        "tcp_max_tw_buckets",
        "tcp_fin_timeout",
    ],
);
pub const TIME_WAIT_EVENTS: Spec = counter(
    "port_monitor_time_wait_events_total",
    "The kernel's TIME_WAIT counters of the namespace (netstat TW, TWRecycled, TWKilled, TCPTimeWaitOverflow): sockets that ran their TIME_WAIT, whose port tcp_tw_reuse took over, ended early, or got none because tcp_max_tw_buckets was reached.",
    &["netns", "event"],
);

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 2] = [&TCP_SETTINGS_INFO, &TIME_WAIT_EVENTS];

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render(model: &Model, detail: Detail) -> [Family<'static>; 2] {
    let mut settings = Family::new(&TCP_SETTINGS_INFO);
    let mut events = Family::sparse(&TIME_WAIT_EVENTS, detail);
    for (netns, gauges) in model.namespaces() {
        let netns = netns.to_string();
        let sysctls = gauges.tcp.sysctls;
        let value = |sysctl: Option<u32>| sysctl.map(|value| value.to_string()).unwrap_or_default();
        settings.add(
            &[
                &netns,
                &value(sysctls.tw_reuse),
                &value(sysctls.timestamps),
                &value(sysctls.max_tw_buckets),
                &value(sysctls.fin_timeout),
            ],
            1.0,
        );
        for (event, count) in gauges
            .tcp
            .time_wait_events
            .iter()
            .flat_map(crate::model::TimeWaitEvents::iter)
        {
            events.add(&[&netns, event.label()], count as f64);
        }
    }
    [settings, events]
}
