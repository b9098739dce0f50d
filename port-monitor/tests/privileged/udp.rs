//! UDP autobind exhaustion is counted exactly.

use std::{io::ErrorKind, net::Ipv4Addr, time::Duration};

use crate::support::{Exporter, TestNetns, privileged, sockets::unbound_udp};

#[test]
fn privileged_udp_autobind_exhaustion_is_counted_exactly() {
    if !privileged("udp_autobind_exhaustion_is_counted_exactly") {
        return;
    }
    let netns = TestNetns::new("udpx");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40003");
    let exporter = Exporter::start();

    // Four ports, then EAGAIN, on sendto() and connect() alike.
    let (held, failures) = netns.run(|| {
        let mut held = Vec::new();
        let mut failures = 0;
        for attempt in 0..12 {
            let socket = unbound_udp().expect("socket");
            let result = if attempt % 2 == 0 {
                socket.send_to(b"x", (Ipv4Addr::LOCALHOST, 9)).map(drop)
            } else {
                socket.connect((Ipv4Addr::LOCALHOST, 9))
            };
            match result {
                Ok(()) => held.push(socket),
                Err(error) if error.kind() == ErrorKind::WouldBlock => failures += 1,
                Err(error) => panic!("unexpected error: {error}"),
            }
        }
        (held, failures)
    });
    assert_eq!(held.len(), 4, "every port of the range was used");
    assert_eq!(failures, 8);

    let labels = [
        ("netns", id.as_str()),
        ("protocol", "udp"),
        ("operation", "autobind"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_port_exhaustion_total", &labels) == 8.0
            && m.value(
                "port_monitor_ports_in_use",
                &[("netns", &id), ("protocol", "udp"), ("range", "ephemeral")],
            ) == 4.0
    });
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &labels),
        8.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value(
            "port_monitor_ports_in_use",
            &[("netns", &id), ("protocol", "udp"), ("range", "ephemeral")]
        ),
        4.0
    );
    assert_eq!(
        metrics.value(
            "port_monitor_sockets",
            &[
                ("netns", &id),
                ("protocol", "udp"),
                ("state", "established")
            ]
        ),
        2.0
    );
    crate::anomalies::assert_anomalies(&metrics, &id, &[("port_exhaustion", 8.0)]);
    drop(held);
}

#[test]
fn privileged_eagain_from_a_full_buffer_is_not_exhaustion() {
    if !privileged("eagain_from_a_full_buffer_is_not_exhaustion") {
        return;
    }
    let netns = TestNetns::new("eagain");
    let id = netns.label();
    let exporter = Exporter::start();
    // Non-blocking sends into buffers nobody drains end in EAGAIN too, on a TCP connection
    // and on a Unix datagram socket: a full buffer, not a lack of ports.
    let eagains = netns.run(|| {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let mut tcp = std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (_peer, _) = listener.accept().expect("accept");
        tcp.set_nonblocking(true).expect("non-blocking");
        let (unix, _unix_peer) = std::os::unix::net::UnixDatagram::pair().expect("pair");
        unix.set_nonblocking(true).expect("non-blocking");
        let payload = vec![0u8; 4096];
        let mut eagains = 0;
        for _ in 0..4096 {
            if matches!(std::io::Write::write(&mut tcp, &payload), Err(ref e) if e.kind() == ErrorKind::WouldBlock) {
                eagains += 1;
            }
            if matches!(unix.send(&payload), Err(ref e) if e.kind() == ErrorKind::WouldBlock) {
                eagains += 1;
            }
        }
        eagains
    });
    assert!(eagains > 100, "the buffers filled up: {eagains}");
    // Two snapshots later, anything counted would be visible.
    let start = exporter.scrape().value("port_monitor_snapshots_total", &[]);
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_snapshots_total", &[]) >= start + 2.0
    });
    let labels = [
        ("netns", id.as_str()),
        ("protocol", "udp"),
        ("operation", "autobind"),
    ];
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &labels),
        0.0,
        "{eagains} EAGAINs were not autobind"
    );
    assert_eq!(
        metrics.value("port_monitor_events_total", &[("kind", "autobind_failure")]),
        0.0
    );
}
