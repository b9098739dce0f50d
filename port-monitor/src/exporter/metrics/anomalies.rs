//! Anomalies: counts by kind, and the latest of each with who and what.

use super::{Detail, Family, Spec, counter, gauge};
use crate::model::Model;

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

/// The families of this file, in exposition order.
pub(super) const SPECS: [&Spec; 2] = [&ANOMALIES, &ANOMALY_LAST_INFO];

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
pub(super) fn render(model: &Model, detail: Detail) -> [Family<'static>; 2] {
    let mut counts = Family::sparse(&ANOMALIES, detail);
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
