//! `bind()` failures: a port already taken, and `bind(0)` with no port left to give.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use nix::errno::Errno;

use crate::{
    anomalies::assert_anomalies,
    support::{Exporter, TestNetns, privileged, sockets::tcp_bind},
};

#[test]
fn privileged_bind_to_a_port_in_use_is_counted() {
    if !privileged("bind_to_a_port_in_use_is_counted") {
        return;
    }
    let netns = TestNetns::new("bind");
    let id = netns.label();
    let exporter = Exporter::start();

    let errors = netns.run(|| {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 7000));
        let first = (
            tcp_bind(v4).expect("first v4 bind"),
            tcp_bind(v6).expect("first v6 bind"),
        );
        let errors = [tcp_bind(v4).err(), tcp_bind(v6).err(), tcp_bind(v4).err()];
        drop(first);
        errors
    });
    assert_eq!(errors, [Some(Errno::EADDRINUSE); 3]);

    let labels = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("errno", "EADDRINUSE"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_bind_errors_total", &labels) == 3.0
    });
    assert_eq!(
        metrics.value("port_monitor_bind_errors_total", &labels),
        3.0,
        "{}",
        metrics.text
    );
    // An explicit port that is taken is a conflict, not exhaustion.
    let exhaustion = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("operation", "bind"),
    ];
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &exhaustion),
        0.0
    );
    assert_anomalies(&metrics, &id, &[("bind_conflict", 3.0)]);
}

#[test]
fn privileged_bind_port_zero_out_of_ports_is_exhaustion() {
    if !privileged("bind_port_zero_out_of_ports_is_exhaustion") {
        return;
    }
    let netns = TestNetns::new("bind0");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    let exporter = Exporter::start();

    let (held, errors) = netns.run(|| {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let held: Vec<_> = (0..2)
            .map(|_| tcp_bind(any).expect("a port is free"))
            .collect();
        let errors: Vec<_> = (0..3).map(|_| tcp_bind(any).err()).collect();
        (held, errors)
    });
    assert_eq!(errors, [Some(Errno::EADDRINUSE); 3]);

    let exhaustion = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("operation", "bind"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_port_exhaustion_total", &exhaustion) == 3.0
    });
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &exhaustion),
        3.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value(
            "port_monitor_bind_errors_total",
            &[("netns", &id), ("errno", "EADDRINUSE")]
        ),
        3.0
    );
    assert_anomalies(&metrics, &id, &[("port_exhaustion", 3.0)]);
    drop(held);
}
