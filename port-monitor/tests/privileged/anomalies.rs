//! Each anomaly kind happens for real in a test namespace, and normal traffic triggers none.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use crate::{
    ground_truth::wait_snapshots,
    support::{Exporter, Metrics, TestNetns, privileged},
};

const KINDS: [&str; 8] = [
    "port_exhaustion",
    "near_exhaustion",
    "bind_conflict",
    "listener_in_ephemeral_range",
    "time_wait_accumulation",
    "connection_churn",
    "port_scan",
    "nat_exhaustion",
];

pub fn anomalies(metrics: &Metrics, netns: &str, kind: &str) -> Option<f64> {
    metrics.get(
        "port_monitor_anomalies_total",
        &[("netns", netns), ("kind", kind)],
    )
}

/// Asserts every kind is 0 (or absent) in `netns`, except those in `expected` with their
/// counts.
pub fn assert_anomalies(metrics: &Metrics, netns: &str, expected: &[(&str, f64)]) {
    for kind in KINDS {
        let want = expected
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0.0, |(_, count)| *count);
        // A kind with none yet has no series (--metrics.detail=compact).
        assert_eq!(
            anomalies(metrics, netns, kind).unwrap_or(0.0),
            want,
            "{kind} in {netns}:\n{}",
            metrics.text
        );
    }
}

#[test]
fn privileged_normal_traffic_is_no_anomaly() {
    if !privileged("normal_traffic_is_no_anomaly") {
        return;
    }
    let netns = TestNetns::new("calm");
    let exporter = Exporter::start();
    // A server on a registered port, a few clients coming and going (some TIME_WAIT, at a
    // rate far below the default churn threshold of 100 a second), some staying.
    let held = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).expect("listen");
        for _ in 0..5 {
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 8080)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            drop(server);
        }
        let kept: Vec<_> = (0..5)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 8080)).expect("connect"))
            .collect();
        (listener, kept)
    });
    let metrics = wait_snapshots(&exporter, 3.0);
    assert_anomalies(&metrics, &netns.label(), &[]);
    drop(held);
}

#[test]
fn privileged_a_listener_in_the_ephemeral_range_is_an_anomaly() {
    if !privileged("a_listener_in_the_ephemeral_range_is_an_anomaly") {
        return;
    }
    let netns = TestNetns::new("lisrange");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    netns.sysctl("net.ipv4.ip_local_reserved_ports", "40050");
    let exporter = Exporter::start();
    // 40001 can be handed to a client first; 40050 is reserved and 8080 outside: both fine.
    let held = netns.run(|| {
        [40001, 40050, 8080]
            .map(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("listen"))
    });
    let id = netns.label();
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        anomalies(m, &id, "listener_in_ephemeral_range") == Some(1.0)
    });
    wait_snapshots(&exporter, 2.0);
    let metrics_later = exporter.scrape();
    assert_anomalies(&metrics, &id, &[("listener_in_ephemeral_range", 1.0)]);
    assert_anomalies(&metrics_later, &id, &[("listener_in_ephemeral_range", 1.0)]);
    assert!(
        metrics_later.get(
            "port_monitor_anomaly_last_info",
            &[
                ("kind", "listener_in_ephemeral_range"),
                ("netns", &id),
                ("subject", "port 40001")
            ]
        ) == Some(1.0),
        "the last one is named:\n{}",
        metrics_later.text
    );
    drop(held);
}

#[test]
fn privileged_time_wait_toward_one_destination_accumulates() {
    if !privileged("time_wait_toward_one_destination_accumulates") {
        return;
    }
    let netns = TestNetns::new("twacc");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start();
    // Six client-closed connections to one server: six TIME_WAIT sockets, 60% of ten ports
    // (the default threshold is 50%).
    let listener = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        for _ in 0..6 {
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            std::thread::sleep(Duration::from_millis(10));
            drop(server);
        }
        listener
    });
    let id = netns.label();
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        anomalies(m, &id, "time_wait_accumulation") == Some(1.0)
    });
    // Six of ten ports in TIME_WAIT is also 60% utilization: below the 80% near-exhaustion line.
    assert_anomalies(&metrics, &id, &[("time_wait_accumulation", 1.0)]);
    drop(listener);
}

#[test]
fn privileged_refusals_on_many_ports_are_a_port_scan() {
    if !privileged("refusals_on_many_ports_are_a_port_scan") {
        return;
    }
    let netns = TestNetns::new("scan");
    let exporter = Exporter::start();
    // Thirty closed ports in a row, once each: more distinct ports than the default 20.
    let refused = netns.run(|| {
        (1000..1030)
            .filter(|port| TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).is_err())
            .count()
    });
    assert_eq!(refused, 30);
    let id = netns.label();
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        anomalies(m, &id, "port_scan") == Some(1.0)
    });
    assert_anomalies(&metrics, &id, &[("port_scan", 1.0)]);
    let last = [("kind", "port_scan"), ("netns", id.as_str())];
    assert_eq!(
        metrics.get("port_monitor_anomaly_last_info", &last),
        Some(1.0),
        "{}",
        metrics.text
    );
    // The refusals arrive in softirq, so the process is unknown, but the sockets' cgroup is.
    let line = metrics
        .text
        .lines()
        .find(|line| line.starts_with("port_monitor_anomaly_last_info{kind=\"port_scan\""))
        .expect("last port scan");
    assert!(!line.contains("cgroup_id=\"\""), "names the cgroup: {line}");

    // Refused again and again on one port: not a scan (the default limit is 100 refusals).
    let calm = TestNetns::new("noscan");
    calm.run(|| {
        for _ in 0..30 {
            assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, 1)).is_err());
        }
    });
    let calm_id = calm.label();
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get(
            "port_monitor_connect_errors_total",
            &[("netns", &calm_id), ("errno", "ECONNREFUSED")],
        ) == Some(30.0)
    });
    assert_anomalies(&metrics, &calm_id, &[]);
}

#[test]
fn privileged_many_short_connections_to_one_destination_are_churn() {
    if !privileged("many_short_connections_to_one_destination_are_churn") {
        return;
    }
    let netns = TestNetns::new("churny");
    let exporter = Exporter::start();
    // One burst of 100 connections to one server, each closed by the client at once: done
    // in milliseconds, so inside one snapshot interval (200 ms here), 500 a second at least
    // against the default threshold of 100: one crossing, and nothing after it.
    netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9100)).expect("listen");
        for _ in 0..100 {
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 9100)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            drop(server);
        }
    });
    let id = netns.label();
    exporter.wait_until(Duration::from_secs(10), |m| {
        anomalies(m, &id, "connection_churn") == Some(1.0)
    });
    let metrics = wait_snapshots(&exporter, 2.0);
    assert_anomalies(&metrics, &id, &[("connection_churn", 1.0)]);
    let last = [
        ("kind", "connection_churn"),
        ("netns", id.as_str()),
        ("subject", "127.0.0.1 -> 127.0.0.1:9100"),
    ];
    assert_eq!(
        metrics.get("port_monitor_anomaly_last_info", &last),
        Some(1.0),
        "{}",
        metrics.text
    );
}
