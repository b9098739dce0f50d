//! `status` as text: a header that says what was read and whether the daemon answered, then
//! one row per namespace, closest to running out first, with its busiest destinations, its
//! NAT and what the daemon counted there indented below it. `top` shares the pieces.

use std::{fmt::Write as _, time::Duration};

use super::{
    daemon::NamespaceCounters,
    namespace::{ConntrackStatus, DestinationStatus, NamespaceStatus},
    status::NodeStatus,
};

/// Destinations listed per namespace in text: the rest are in `--output json` and `top`.
const DESTINATIONS_IN_TEXT: usize = 3;

/// The widest name column: a pod UID with its prefix fits.
const NAME_WIDTH: usize = 40;

/// The whole report.
#[must_use]
pub fn text(node: &NodeStatus) -> String {
    let mut out = String::new();
    for line in header(node) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<10}  {:<NAME_WIDTH$}  {:>11}  {:>8}  {:>7}  {:>6}  {:>9}  {:>9}",
        "NETNS", "NAME", "EPHEMERAL", "CAPACITY", "IN USE", "SHARE", "TIME_WAIT", "MAX RATIO"
    );
    for namespace in &node.namespaces {
        let _ = writeln!(out, "{}", row(namespace));
        for line in details(namespace) {
            let _ = writeln!(out, "{:12}{line}", "");
        }
    }
    out
}

/// What was read and what the daemon said, one line each.
#[must_use]
pub fn header(node: &NodeStatus) -> Vec<String> {
    let mut lines = vec![format!(
        "port-monitor status: {} read in {:.1} ms, closest to running out first",
        count(node.namespaces.len(), "network namespace"),
        node.snapshot_seconds * 1000.0
    )];
    lines.push(daemon_line(node));
    if !node.unreadable.is_empty() {
        let ids: Vec<String> = node.unreadable.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "unreadable: {} ({}), see the log",
            count(ids.len(), "namespace"),
            ids.join(", ")
        ));
    }
    if let Some(reason) = node.conntrack_skipped {
        lines.push(format!("conntrack tables not read: {reason}"));
    }
    lines
}

/// Whether the daemon answered, and since when its counters count; or why not.
#[must_use]
pub fn daemon_line(node: &NodeStatus) -> String {
    let daemon = &node.daemon;
    match (&daemon.error, &daemon.url) {
        (Some(error), _) => format!(
            "daemon: {error}; showing the snapshot alone (only a daemon counts failed calls)"
        ),
        (None, Some(url)) => {
            let version = daemon
                .version
                .as_deref()
                .map(|version| format!("port-monitor {version}, "))
                .unwrap_or_default();
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "whole seconds since the epoch"
            )]
            let up = daemon
                .started_at
                .map(|started| (node.taken_at as f64 - started).max(0.0) as u64)
                .map(|seconds| {
                    format!(
                        "up {}",
                        humantime::format_duration(Duration::from_secs(seconds))
                    )
                })
                .unwrap_or_default();
            format!(
                "daemon: {url} answered ({version}{up}): failures below are counted since it started"
            )
        }
        (None, None) => "daemon: not asked".to_owned(),
    }
}

fn row(namespace: &NamespaceStatus) -> String {
    format!(
        "{:<10}  {:<NAME_WIDTH$}  {:>11}  {:>8}  {:>7}  {:>6}  {:>9}  {:>9}",
        namespace.netns,
        clip(&label(namespace), NAME_WIDTH),
        range(namespace),
        namespace
            .ephemeral_capacity
            .map_or_else(|| "?".to_owned(), |capacity| capacity.to_string()),
        namespace.ephemeral_in_use,
        percent(namespace.ephemeral_in_use_ratio),
        namespace.time_wait,
        ratio(namespace.utilization_max_ratio),
    )
}

/// The lines below a namespace's row: destinations, NAT, the daemon's counters.
#[must_use]
pub fn details(namespace: &NamespaceStatus) -> Vec<String> {
    let mut lines: Vec<String> = namespace
        .destinations
        .iter()
        .take(DESTINATIONS_IN_TEXT)
        .map(destination)
        .collect();
    let more = namespace
        .destinations
        .len()
        .saturating_sub(DESTINATIONS_IN_TEXT);
    if more > 0 {
        lines.push(format!(
            "… {more} more destinations in --output json and top"
        ));
    }
    if let Some(conntrack) = &namespace.conntrack {
        lines.extend(nat(conntrack));
    }
    if let Some(counters) = &namespace.daemon {
        lines.extend(counted(counters));
    }
    lines
}

/// `-> 10.0.0.1:443 from 10.0.0.2   27000 ports (120 TIME_WAIT)  ratio 0.96`.
#[must_use]
pub fn destination(destination: &DestinationStatus) -> String {
    format!(
        "-> {:<40} {:>6} ports ({} TIME_WAIT)  ratio {}",
        destination_address(destination),
        destination.ports_in_use,
        destination.time_wait,
        ratio(destination.utilization_ratio)
    )
}

/// "10.0.0.1:443 from 10.0.0.2".
#[must_use]
pub fn destination_address(destination: &DestinationStatus) -> String {
    let to = std::net::SocketAddr::new(destination.dst_addr, destination.dst_port);
    match destination.src_addr {
        Some(source) => format!("{to} from {source}"),
        None => to.to_string(),
    }
}

/// The conntrack table, then one line per busiest NAT destination.
#[must_use]
pub fn nat(conntrack: &ConntrackStatus) -> Vec<String> {
    let limit = conntrack
        .limit
        .map_or_else(|| "?".to_owned(), |limit| limit.to_string());
    let mut lines = vec![format!(
        "conntrack {}/{limit} entries, {} insert failed, {} dropped; NAT max ratio {}",
        conntrack.entries,
        conntrack.insert_failed,
        conntrack.drop,
        ratio(conntrack.nat_utilization_max_ratio)
    )];
    lines.extend(
        conntrack
            .nat_destinations
            .iter()
            .take(DESTINATIONS_IN_TEXT)
            .map(|nat| {
                let to = std::net::SocketAddr::new(nat.dst_addr, nat.dst_port);
                format!(
                    "NAT {} via {} -> {to}: {} ports  ratio {}",
                    nat.protocol,
                    nat.nat_addr,
                    nat.ports_in_use,
                    ratio(nat.utilization_ratio)
                )
            }),
    );
    lines
}

/// What the daemon counted: failures, anomalies, the latest of each with who did it.
#[must_use]
pub fn counted(counters: &NamespaceCounters) -> Vec<String> {
    let mut lines = Vec::new();
    let exhaustion = counters.exhaustion_total();
    if exhaustion > 0 || counters.bind_conflicts > 0 {
        let by_call: Vec<String> = counters
            .port_exhaustion
            .iter()
            .map(|(call, count)| format!("{call} {count}"))
            .collect();
        lines.push(format!(
            "daemon counted {} ({}), {}",
            count(exhaustion, "port exhaustion"),
            if by_call.is_empty() {
                "none".to_owned()
            } else {
                by_call.join(", ")
            },
            count(counters.bind_conflicts, "bind conflict")
        ));
    }
    let others: Vec<String> = counters
        .anomalies
        .iter()
        .filter(|(kind, _)| !matches!(kind.as_str(), "port_exhaustion" | "bind_conflict"))
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    if !others.is_empty() {
        lines.push(format!("daemon counted anomalies: {}", others.join(", ")));
    }
    for last in &counters.last_anomalies {
        let who = match (&last.comm, last.pid) {
            (Some(comm), Some(pid)) => format!(" by {comm} (pid {pid})"),
            (Some(comm), None) => format!(" by {comm}"),
            _ => String::new(),
        };
        lines.push(format!("last {}: {}{who}", last.kind, last.subject));
    }
    lines
}

/// The name, with the runtime of a container.
#[must_use]
pub fn label(namespace: &NamespaceStatus) -> String {
    match namespace.runtime {
        Some(runtime)
            if namespace.name.starts_with("pod ") || namespace.name.starts_with("container ") =>
        {
            format!("{} ({runtime})", namespace.name)
        }
        _ => namespace.name.clone(),
    }
}

/// "32768-60999", or "?" when the sysctls were unreadable.
#[must_use]
pub fn range(namespace: &NamespaceStatus) -> String {
    match (namespace.ephemeral_min, namespace.ephemeral_max) {
        (Some(min), Some(max)) => format!("{min}-{max}"),
        _ => "?".to_owned(),
    }
}

/// "1 namespace", "2 namespaces".
fn count(number: impl std::fmt::Display, noun: &str) -> String {
    let number = number.to_string();
    if number == "1" {
        format!("1 {noun}")
    } else {
        format!("{number} {noun}s")
    }
}

#[must_use]
pub fn ratio(value: f64) -> String {
    format!("{value:.2}")
}

#[must_use]
pub fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

/// `text` cut to `width` characters, with an ellipsis when cut.
#[must_use]
pub fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::daemon::LastAnomaly;

    #[test]
    fn each_namespace_shows_its_destinations_nat_and_counted_failures() {
        let mut namespace = NamespaceStatus {
            ephemeral_in_use: 9,
            ephemeral_in_use_ratio: 0.09,
            time_wait: 4,
            utilization_max_ratio: 0.96,
            destinations: vec![DestinationStatus {
                src_addr: Some("10.0.0.2".parse().expect("literal")),
                dst_addr: "10.0.0.1".parse().expect("literal"),
                dst_port: 443,
                ports_in_use: 96,
                time_wait: 4,
                utilization_ratio: 0.96,
            }],
            ..NamespaceStatus::example(4_026_532_201, "pod 6d0c1f9e")
        };
        namespace.runtime = Some("containerd");
        namespace.daemon = Some(NamespaceCounters {
            port_exhaustion: [("tcp connect".to_owned(), 3)].into(),
            bind_conflicts: 1,
            anomalies: [("near_exhaustion".to_owned(), 2)].into(),
            last_anomalies: vec![LastAnomaly {
                kind: "port_exhaustion".into(),
                subject: "0.0.0.0 -> 10.0.0.1:443".into(),
                comm: Some("curl".into()),
                pid: Some(4242),
            }],
        });
        let text = text(&NodeStatus::example(vec![namespace]));
        for expected in [
            "port-monitor status: 1 network namespace read in 10.0 ms",
            "daemon: not asked in tests; showing the snapshot alone",
            "4026532201  pod 6d0c1f9e (containerd)",
            "40000-40099       100        9    9.0%          4       0.96",
            "-> 10.0.0.1:443 from 10.0.0.2",
            "96 ports (4 TIME_WAIT)  ratio 0.96",
            "daemon counted 3 port exhaustions (tcp connect 3), 1 bind conflict",
            "daemon counted anomalies: near_exhaustion 2",
            "last port_exhaustion: 0.0.0.0 -> 10.0.0.1:443 by curl (pid 4242)",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }

    #[test]
    fn long_names_are_clipped_with_an_ellipsis() {
        assert_eq!(clip("abcdef", 6), "abcdef");
        assert_eq!(clip("abcdefg", 6), "abcde…");
    }
}
