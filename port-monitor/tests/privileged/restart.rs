//! A restart: counters start again from zero, as Prometheus expects of a new process, and the
//! gauges are exact as soon as the new process says it is ready.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use crate::{
    ground_truth::assert_equals_ss,
    support::{Exporter, TestNetns, privileged},
};

/// Connects to a closed port `times` times in `netns`; each is refused.
fn refuse(netns: &TestNetns, times: u32) {
    netns.run(move || {
        for _ in 0..times {
            let result = TcpStream::connect((Ipv4Addr::LOCALHOST, 1));
            assert!(
                matches!(&result, Err(error) if error.kind() == ErrorKind::ConnectionRefused),
                "expected a refusal: {result:?}"
            );
        }
    });
}

#[test]
fn privileged_a_restart_resets_counters_and_starts_with_exact_gauges() {
    if !privileged("a_restart_resets_counters_and_starts_with_exact_gauges") {
        return;
    }
    let netns = TestNetns::new("restart");
    let id = netns.label();
    let refused = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("errno", "ECONNREFUSED"),
    ];
    // Sockets that live across the restart: a listener, ten connections, TIME_WAIT from five
    // more that the clients closed.
    let held = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let address = listener.local_addr().expect("address");
        let mut held = Vec::new();
        for round in 0..15 {
            let client = TcpStream::connect(address).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            if round < 10 {
                held.push((client, server));
            }
        }
        (listener, held)
    });

    let first = Exporter::start();
    refuse(&netns, 5);
    let metrics = first.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_connect_errors_total", &refused) == Some(5.0)
    });
    assert_eq!(
        metrics.value("port_monitor_connect_errors_total", &refused),
        5.0
    );
    assert!(first.stop().success(), "first process exits cleanly");

    // Ready means the programs are attached and the first snapshot is in: scrape at once.
    let second = Exporter::start();
    let metrics = second.scrape();
    assert_equals_ss(&metrics, &netns, &[], "right after the restart");
    assert_eq!(
        metrics
            .get("port_monitor_connect_errors_total", &refused)
            .unwrap_or(0.0),
        0.0,
        "a new process starts its counters from zero"
    );
    refuse(&netns, 3);
    let metrics = second.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_connect_errors_total", &refused) == Some(3.0)
    });
    assert_eq!(
        metrics.value("port_monitor_connect_errors_total", &refused),
        3.0
    );
    drop(held);
}
