//! Namespaces come and go, each with its own port range and reserved ports.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use crate::{
    ground_truth::wait_snapshots,
    support::{Exporter, Metrics, TestNetns, privileged},
};

const WAIT: Duration = Duration::from_secs(10);

fn gauge(metrics: &Metrics, name: &str, netns: &TestNetns) -> Option<f64> {
    metrics.get(name, &[("netns", &netns.label())])
}

#[test]
fn privileged_each_namespace_reads_its_own_sysctls_and_changes_are_seen() {
    if !privileged("each_namespace_reads_its_own_sysctls_and_changes_are_seen") {
        return;
    }
    let narrow = TestNetns::new("narrow");
    narrow.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    narrow.sysctl("net.ipv4.ip_local_reserved_ports", "40010-40019,40050,8080");
    let wide = TestNetns::new("wide");
    wide.sysctl("net.ipv4.ip_local_port_range", "20000 59999");
    let exporter = Exporter::start();

    let metrics = wait_snapshots(&exporter, 1.0);
    let cases = [
        (&narrow, 40000.0, 40099.0, 11.0, 89.0),
        (&wide, 20000.0, 59999.0, 0.0, 40000.0),
    ];
    for (netns, min, max, reserved, capacity) in cases {
        assert_eq!(
            gauge(&metrics, "port_monitor_ephemeral_range_min", netns),
            Some(min),
            "{}",
            netns.name
        );
        assert_eq!(
            gauge(&metrics, "port_monitor_ephemeral_range_max", netns),
            Some(max),
            "{}",
            netns.name
        );
        // None reserved: no series (--metrics.detail=compact).
        assert_eq!(
            gauge(&metrics, "port_monitor_ephemeral_ports_reserved", netns).unwrap_or(0.0),
            reserved,
            "{}",
            netns.name
        );
        assert_eq!(
            gauge(&metrics, "port_monitor_ephemeral_ports_capacity", netns),
            Some(capacity),
            "{}",
            netns.name
        );
        let info = [("netns", netns.label()), ("name", netns.name.clone())];
        let info: Vec<(&str, &str)> = info.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            metrics.get("port_monitor_namespace_info", &info),
            Some(1.0),
            "named namespace"
        );
    }

    // A change at run time is seen at the next snapshot.
    narrow.sysctl("net.ipv4.ip_local_port_range", "41000 41009");
    narrow.sysctl("net.ipv4.ip_local_reserved_ports", "");
    let metrics = exporter.wait_until(WAIT, |m| {
        gauge(m, "port_monitor_ephemeral_ports_capacity", &narrow) == Some(10.0)
    });
    assert_eq!(
        gauge(&metrics, "port_monitor_ephemeral_range_min", &narrow),
        Some(41000.0)
    );
    assert_eq!(
        gauge(&metrics, "port_monitor_ephemeral_range_max", &narrow),
        Some(41009.0)
    );
    // None reserved: no series (--metrics.detail=compact).
    assert_eq!(
        gauge(&metrics, "port_monitor_ephemeral_ports_reserved", &narrow),
        None
    );
    assert_eq!(
        gauge(&metrics, "port_monitor_ephemeral_ports_capacity", &narrow),
        Some(10.0)
    );
}

#[test]
fn privileged_a_deleted_namespace_leaves_no_series() {
    if !privileged("a_deleted_namespace_leaves_no_series") {
        return;
    }
    let netns = TestNetns::new("gone");
    let exporter = Exporter::start();
    // Give it counters too: a refused connect.
    netns.run(|| {
        let _ = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, 1));
    });
    let id = netns.label();
    let present = exporter.wait_until(WAIT, |m| {
        m.get(
            "port_monitor_connect_errors_total",
            &[("netns", &id), ("errno", "ECONNREFUSED")],
        ) == Some(1.0)
    });
    assert!(
        present.text.contains(&format!("netns=\"{id}\"")),
        "series exist while it lives"
    );

    drop(netns);
    let metrics = exporter.wait_until(WAIT, |m| !m.text.contains(&format!("netns=\"{id}\"")));
    let stale: Vec<&str> = metrics
        .text
        .lines()
        .filter(|line| line.contains(&format!("netns=\"{id}\"")))
        .collect();
    assert!(
        stale.is_empty(),
        "stale series after deletion:\n{}",
        stale.join("\n")
    );
}

/// The kernel gives a deleted namespace's inode number to a later one. A namespace made in
/// its place between two snapshots inherits nothing of the old one: not its failure counts
/// (kept in the kernel under the same inode number) nor its anomalies. Namespaces are deleted
/// and made until an inode number comes back.
#[test]
fn privileged_a_namespace_reusing_an_inode_starts_from_nothing() {
    if !privileged("a_namespace_reusing_an_inode_starts_from_nothing") {
        return;
    }
    // A long interval: the old namespace goes and the new one comes between two snapshots.
    let exporter = Exporter::start_with(&["--snapshot.interval=5s"]);
    let old = TestNetns::new("reuse");
    let inode = old.id;
    old.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    let failures = old.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let held: Vec<_> = (0..2)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect"))
            .collect();
        let failed = (0..3)
            .filter(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).is_err())
            .count();
        drop((listener, held));
        failed
    });
    assert_eq!(failures, 3);
    let label = inode.to_string();
    let exhaustion = [
        ("netns", label.as_str()),
        ("protocol", "tcp"),
        ("operation", "connect"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(15), |m| {
        m.value("port_monitor_port_exhaustion_total", &exhaustion) == 3.0
    });
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &exhaustion),
        3.0
    );
    let snapshots = metrics.value("port_monitor_snapshots_total", &[]);

    drop(old);
    let mut reborn = None;
    for _ in 0..200 {
        let candidate = TestNetns::new("reuse");
        if candidate.id == inode {
            reborn = Some(candidate);
            break;
        }
        drop(candidate);
        std::thread::sleep(Duration::from_millis(10));
    }
    let reborn = reborn.expect("the kernel gave the inode number back");
    // Did it happen between two snapshots? Otherwise the old one was seen gone, the plain
    // case, and this run proves less.
    let between = exporter.scrape().value("port_monitor_snapshots_total", &[]) == snapshots;
    // Two snapshots later the new namespace is known, with its own (empty) record.
    let metrics = crate::ground_truth::wait_snapshots(&exporter, 2.0);
    assert!(
        metrics.text.contains(&format!("netns=\"{label}\"")),
        "the new namespace is there"
    );
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &exhaustion),
        0.0,
        "the new namespace inherited the old one's failures (swapped between snapshots: \
         {between}):\n{}",
        metrics.text
    );
    crate::anomalies::assert_anomalies(&metrics, &label, &[]);
    println!("inode {inode} came back; between two snapshots: {between}");
    drop(reborn);
}
