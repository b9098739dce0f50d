//! Namespaces come and go, each with its own port range and reserved ports.

use std::time::Duration;

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
        assert_eq!(
            gauge(&metrics, "port_monitor_ephemeral_ports_reserved", netns),
            Some(reserved),
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
    assert_eq!(
        gauge(&metrics, "port_monitor_ephemeral_ports_reserved", &narrow),
        Some(0.0)
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
