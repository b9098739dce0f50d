//! A client connecting to one listener until the namespace's ten ephemeral ports run out:
//! the exporter counts exactly the EADDRNOTAVAIL failures the client saw.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use crate::{
    anomalies::assert_anomalies,
    support::{Exporter, TestNetns, privileged},
};

#[test]
fn privileged_connect_exhaustion_is_counted_exactly() {
    if !privileged("connect_exhaustion_is_counted_exactly") {
        return;
    }
    connect_exhaustion_is_counted_exactly("tp-btf", "tp_btf/inet_sock_set_state");
}

/// The same, with the hook a kernel without `tp_btf` gets.
#[test]
fn privileged_connect_exhaustion_is_counted_exactly_with_the_classic_tracepoint() {
    if !privileged("connect_exhaustion_is_counted_exactly_with_the_classic_tracepoint") {
        return;
    }
    connect_exhaustion_is_counted_exactly("tracepoint", "tracepoint/sock/inet_sock_set_state");
}

/// Attempts after the first EADDRNOTAVAIL, each expected to fail the same way.
const EXTRA_ATTEMPTS: usize = 7;

fn connect_exhaustion_is_counted_exactly(hook: &str, attach_point: &str) {
    let netns = TestNetns::new("exhaust");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start_with(&[&format!("--kernel.tcp-state-hook={hook}")]);
    assert!(
        exporter
            .scrape()
            .text
            .contains(&format!("hook=\"{attach_point}\"")),
        "the chosen hook is reported"
    );

    let (connected, failures, _keep) = netns.run(connect_until_refused);
    assert_eq!(connected, 10, "every port of the range was used");
    assert_eq!(failures, EXTRA_ATTEMPTS);

    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let expected = failures as f64;
    let exhaustion = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("operation", "connect"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_port_exhaustion_total", &exhaustion) == expected
            && m.value(
                "port_monitor_ports_in_use",
                &[("netns", &id), ("protocol", "tcp"), ("range", "ephemeral")],
            ) == 10.0
    });
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &exhaustion),
        expected,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value(
            "port_monitor_connect_errors_total",
            &[
                ("netns", &id),
                ("protocol", "tcp"),
                ("errno", "EADDRNOTAVAIL")
            ]
        ),
        expected
    );
    assert_eq!(
        metrics.value("port_monitor_ephemeral_range_min", &[("netns", &id)]),
        40000.0
    );
    assert_eq!(
        metrics.value("port_monitor_ephemeral_range_max", &[("netns", &id)]),
        40009.0
    );
    assert_eq!(
        metrics.value("port_monitor_ephemeral_ports_capacity", &[("netns", &id)]),
        10.0
    );
    assert_eq!(
        metrics.value(
            "port_monitor_ports_in_use",
            &[("netns", &id), ("protocol", "tcp"), ("range", "ephemeral")]
        ),
        10.0
    );
    assert_eq!(metrics.value("port_monitor_events_lost_total", &[]), 0.0);
    // Every port toward the one destination in use: it also crossed the 80% line, once.
    assert_anomalies(
        &metrics,
        &id,
        &[("port_exhaustion", expected), ("near_exhaustion", 1.0)],
    );
    // Who did it: this test process (the failing connect ran in its thread).
    let pid = std::process::id().to_string();
    let last = [
        ("kind", "port_exhaustion"),
        ("netns", id.as_str()),
        ("pid", pid.as_str()),
    ];
    assert_eq!(
        metrics.get("port_monitor_anomaly_last_info", &last),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert!(
        exporter.log().contains("port exhaustion"),
        "each failure is logged with who and where"
    );
}

/// Connects to a listener on :9000 until the ports run out, then `EXTRA_ATTEMPTS` more times.
/// Returns the connections made, the EADDRNOTAVAIL failures, and what must stay open.
fn connect_until_refused() -> (usize, usize, (TcpListener, Vec<TcpStream>)) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("bind");
    let mut held = Vec::new();
    let mut failures = 0;
    while failures < EXTRA_ATTEMPTS {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)) {
            Ok(stream) => held.push(stream),
            Err(error) if error.kind() == ErrorKind::AddrNotAvailable => failures += 1,
            Err(error) => panic!("unexpected connect error: {error}"),
        }
        assert!(held.len() <= 10, "more connections than ports in the range");
    }
    (held.len(), failures, (listener, held))
}
