//! The daemon's `/metrics`, read back: only the families that say what the snapshot cannot,
//! the failed calls its kernel programs counted and the anomalies it saw, with the process.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::NetnsId;

/// What the daemon counted since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DaemonReport {
    /// Its version (`port_monitor_build_info`).
    pub version: Option<String>,
    /// When it started, in seconds since the epoch (`process_start_time_seconds`).
    pub started_at: Option<f64>,
    pub namespaces: BTreeMap<NetnsId, NamespaceCounters>,
}

/// One namespace's counters, as the daemon exports them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NamespaceCounters {
    /// Calls that failed for lack of a port (`port_monitor_port_exhaustion_total`), by
    /// "protocol operation" ("tcp connect", "udp autobind").
    pub port_exhaustion: BTreeMap<String, u64>,
    /// `bind()` calls to an explicit port that found it taken.
    pub bind_conflicts: u64,
    /// `port_monitor_anomalies_total` by kind.
    pub anomalies: BTreeMap<String, u64>,
    /// The latest anomaly of each kind, where it was this namespace's.
    pub last_anomalies: Vec<LastAnomaly>,
}

impl NamespaceCounters {
    /// Every failed call for lack of a port.
    #[must_use]
    pub fn exhaustion_total(&self) -> u64 {
        self.port_exhaustion.values().sum()
    }
}

/// `port_monitor_anomaly_last_info`: what happened, and who did it when the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastAnomaly {
    pub kind: String,
    pub subject: String,
    pub comm: Option<String>,
    pub pid: Option<u32>,
}

/// Reads the families status shows out of an exposition in the text format.
#[must_use]
pub fn report(exposition: &str) -> DaemonReport {
    let mut report = DaemonReport::default();
    for sample in exposition.lines().filter_map(Sample::parse) {
        let label = |name: &str| sample.label(name).unwrap_or_default().to_owned();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "counters are whole and far below 2^53"
        )]
        let count = sample.value.max(0.0) as u64;
        match sample.name {
            "port_monitor_build_info" => report.version = sample.label("version").map(Into::into),
            "process_start_time_seconds" => report.started_at = Some(sample.value),
            _ => {}
        }
        let Some(netns) = sample.label("netns").and_then(|netns| netns.parse().ok()) else {
            continue;
        };
        // Every namespace the daemon shows gets an entry: one without failures has zeros.
        let counters = report.namespaces.entry(netns).or_default();
        match sample.name {
            "port_monitor_port_exhaustion_total" => {
                let key = format!("{} {}", label("protocol"), label("operation"));
                *counters.port_exhaustion.entry(key).or_default() += count;
            }
            "port_monitor_anomalies_total" => {
                let kind = label("kind");
                if kind == "bind_conflict" {
                    counters.bind_conflicts += count;
                }
                *counters.anomalies.entry(kind).or_default() += count;
            }
            "port_monitor_anomaly_last_info" => counters.last_anomalies.push(LastAnomaly {
                kind: label("kind"),
                subject: label("subject"),
                comm: sample
                    .label("comm")
                    .filter(|comm| !comm.is_empty())
                    .map(Into::into),
                pid: sample.label("pid").and_then(|pid| pid.parse().ok()),
            }),
            _ => {}
        }
    }
    // With --metrics.detail=full every kind is there at 0: only what happened is news.
    for counters in report.namespaces.values_mut() {
        counters.anomalies.retain(|_, count| *count > 0);
        counters.port_exhaustion.retain(|_, count| *count > 0);
    }
    report
}

/// One line of the exposition: `name{label="value",...} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    /// `None` for comments, blank lines and anything malformed: a line status cannot read
    /// is one fact less, not a reason to show nothing.
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..])?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some(Self {
            name,
            labels,
            value,
        })
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| *label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `name="value",...}` and what follows the closing brace. Values may hold `\\`, `\"` and
/// `\n` escapes, and so commas and braces.
fn parse_labels(text: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (index, '"') => break index,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((name.trim_start_matches(',').trim(), value));
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_failure_families_of_each_namespace() {
        let text = r#"# HELP port_monitor_port_exhaustion_total Calls that failed.
# TYPE port_monitor_port_exhaustion_total counter
port_monitor_port_exhaustion_total{netns="4026532001",protocol="tcp",operation="connect"} 3
port_monitor_port_exhaustion_total{netns="4026532001",protocol="udp",operation="autobind"} 2
port_monitor_port_exhaustion_total{netns="4026532002",protocol="tcp",operation="bind"} 0
port_monitor_anomalies_total{netns="4026532001",kind="port_exhaustion"} 5
port_monitor_anomalies_total{netns="4026532001",kind="bind_conflict"} 1
port_monitor_anomalies_total{netns="4026532001",kind="port_scan"} 0
port_monitor_anomaly_last_info{kind="port_exhaustion",netns="4026532001",subject="0.0.0.0 -> 10.0.0.7:443",comm="curl",pid="4242",cgroup_id="77"} 1
port_monitor_anomaly_last_info{kind="near_exhaustion",netns="4026532002",subject="10.0.0.2 -> 10.0.0.1:443",comm="",pid="",cgroup_id=""} 1
port_monitor_build_info{version="0.1.0",revision="abc"} 1
process_start_time_seconds 1.7e9
"#;
        let report = report(text);
        assert_eq!(report.version.as_deref(), Some("0.1.0"));
        assert_eq!(report.started_at, Some(1.7e9));
        let first = &report.namespaces[&4_026_532_001];
        assert_eq!(first.exhaustion_total(), 5);
        assert_eq!(first.port_exhaustion["tcp connect"], 3);
        assert_eq!(first.bind_conflicts, 1);
        assert!(
            !first.anomalies.contains_key("port_scan"),
            "zeros are no news"
        );
        assert_eq!(
            first.last_anomalies,
            [LastAnomaly {
                kind: "port_exhaustion".into(),
                subject: "0.0.0.0 -> 10.0.0.7:443".into(),
                comm: Some("curl".into()),
                pid: Some(4242),
            }]
        );
        let second = &report.namespaces[&4_026_532_002];
        assert_eq!(second.exhaustion_total(), 0);
        assert_eq!(second.last_anomalies[0].comm, None, "found in a snapshot");
    }

    #[test]
    fn label_values_keep_escaped_quotes_commas_and_braces() {
        let sample = Sample::parse(
            r#"port_monitor_anomaly_last_info{kind="bind_conflict", subject="a \"b\", {c}\\d",comm="x\ny"} 1 1700000000000"#,
        )
        .expect("a sample");
        assert_eq!(sample.label("subject"), Some(r#"a "b", {c}\d"#));
        assert_eq!(sample.label("comm"), Some("x\ny"));
        assert!((sample.value - 1.0).abs() < f64::EPSILON);
        for malformed in [
            "port_monitor_x{netns=\"1\" 1",
            "port_monitor_x{netns=\"1} 1",
            "port_monitor_x",
            "port_monitor_x{} nan-ish",
        ] {
            assert!(Sample::parse(malformed).is_none(), "{malformed}");
        }
    }
}
