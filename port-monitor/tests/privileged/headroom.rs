//! One hot destination runs out of ports while another, from the same namespace, stays low.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use crate::support::{Exporter, TestNetns, privileged};

#[test]
fn privileged_a_hot_destination_reaches_ratio_one() {
    if !privileged("a_hot_destination_reaches_ratio_one") {
        return;
    }
    let netns = TestNetns::new("hot");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start();

    // Ten connections to :9000 use every port; two to :9001 reuse two of them (a different
    // 4-tuple), which the namespace-wide count cannot tell apart.
    let held = netns.run(|| {
        let hot = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let cold = TcpListener::bind((Ipv4Addr::LOCALHOST, 9001)).expect("listen");
        let mut streams = Vec::new();
        for _ in 0..10 {
            streams.push(TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("hot connect"));
        }
        for _ in 0..2 {
            streams.push(TcpStream::connect((Ipv4Addr::LOCALHOST, 9001)).expect("cold connect"));
        }
        (hot, cold, streams)
    });

    let destination = |port| {
        [
            ("netns", id.as_str()),
            ("protocol", "tcp"),
            ("src_addr", "127.0.0.1"),
            ("dst_addr", "127.0.0.1"),
            ("dst_port", port),
        ]
    };
    let get =
        |m: &crate::support::Metrics, name: &str, labels: &[(&str, &str); 5]| m.get(name, labels);
    let max = [("netns", id.as_str()), ("protocol", "tcp")];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_ephemeral_utilization_max_ratio", &max) == Some(1.0)
    });
    assert_eq!(
        metrics.get("port_monitor_ephemeral_utilization_max_ratio", &max),
        Some(1.0),
        "{}",
        metrics.text
    );
    let (hot, cold) = (destination("9000"), destination("9001"));
    assert_eq!(
        get(&metrics, "port_monitor_destination_ports_in_use", &hot),
        Some(10.0)
    );
    assert_eq!(
        get(&metrics, "port_monitor_destination_utilization_ratio", &hot),
        Some(1.0)
    );
    assert_eq!(
        get(&metrics, "port_monitor_destination_ports_in_use", &cold),
        Some(2.0)
    );
    assert_eq!(
        get(
            &metrics,
            "port_monitor_destination_utilization_ratio",
            &cold
        ),
        Some(0.2)
    );
    // The namespace-wide view: ten distinct ports, so it looks just as full, but it cannot
    // tell that :9001 still has eight ports left.
    assert_eq!(
        metrics.get(
            "port_monitor_ports_in_use",
            &[("netns", &id), ("protocol", "tcp"), ("range", "ephemeral")]
        ),
        Some(10.0)
    );
    // One crossing of the 80% line, counted once however many snapshots it stays there.
    crate::ground_truth::wait_snapshots(&exporter, 2.0);
    crate::anomalies::assert_anomalies(&exporter.scrape(), &id, &[("near_exhaustion", 1.0)]);
    drop(held);

    // The listeners close first and reset the connections they never accepted: no
    // TIME_WAIT, so the destinations' series go with their sockets.
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_ephemeral_utilization_max_ratio", &max) == Some(0.0)
    });
    assert!(
        !metrics.text.contains(&format!(
            "port_monitor_destination_ports_in_use{{netns=\"{id}\""
        )),
        "no stale destination series:\n{}",
        metrics.text
    );
}
