//! Every `port_monitor_sockets` and `port_monitor_ports_in_use` value equals what `ss -tanu`
//! reports in the namespace: TCP and UDP, IPv4 and IPv6, listening, established, `TIME_WAIT`
//! and bound-but-idle sockets, some of them older than the exporter.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use crate::support::{Exporter, Metrics, SsTruth, TestNetns, privileged, sockets::tcp_bind};

/// Waits until the exporter has taken `count` more snapshots than now.
pub fn wait_snapshots(exporter: &Exporter, count: f64) -> Metrics {
    let start = exporter.scrape().value("port_monitor_snapshots_total", &[]);
    exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_snapshots_total", &[]) >= start + count
    })
}

/// Asserts that every socket and port gauge of `netns` equals `ss`. `bound_idle_tcp` are the
/// ports of TCP sockets bound but idle: the kernel (>= 6.7) lists them as `bound_inactive`,
/// which iproute2 6.1's `ss` does not know, so they are added to its TCP ports here.
pub fn assert_equals_ss(metrics: &Metrics, netns: &TestNetns, bound_idle_tcp: &[u16], what: &str) {
    let truth = SsTruth::read(&netns.name);
    let id = netns.label();
    let states: [(&str, &[&str]); 2] = [
        (
            "tcp",
            &[
                "established",
                "syn_sent",
                "syn_recv",
                "fin_wait1",
                "fin_wait2",
                "time_wait",
                "close_wait",
                "last_ack",
                "listen",
                "closing",
            ],
        ),
        ("udp", &["established", "unconnected"]),
    ];
    for (protocol, states) in states {
        for state in states {
            let labels = [
                ("netns", id.as_str()),
                ("protocol", protocol),
                ("state", state),
            ];
            #[expect(clippy::cast_precision_loss, reason = "small counts")]
            let expected = truth.sockets(protocol, state) as f64;
            // A state with no socket has no series (--metrics.detail=compact).
            assert_eq!(
                metrics.value("port_monitor_sockets", &labels),
                expected,
                "{what}: {protocol} {state}\n{truth:?}"
            );
        }
    }
    let bound = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("state", "bound_inactive"),
    ];
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let idle = bound_idle_tcp.len() as f64;
    assert_eq!(
        metrics.value("port_monitor_sockets", &bound),
        idle,
        "{what}: bound-idle TCP sockets"
    );

    let port = |name| {
        let value = metrics.value(name, &[("netns", &id)]);
        format!("{value}").parse::<u16>().expect("a port number")
    };
    let (low, high) = (
        port("port_monitor_ephemeral_range_min"),
        port("port_monitor_ephemeral_range_max"),
    );
    let ranges = [
        ("well_known", 1, 1023),
        ("registered", 1024, 49151),
        ("dynamic", 49152, 65535),
        ("ephemeral", low, high),
    ];
    for protocol in ["tcp", "udp"] {
        for (range, first, last) in ranges {
            let mut expected = truth.ports_in(protocol, first, last);
            if protocol == "tcp" {
                let from_ss = truth.ports.get("tcp").cloned().unwrap_or_default();
                expected += bound_idle_tcp
                    .iter()
                    .filter(|port| (first..=last).contains(*port) && !from_ss.contains(port))
                    .count() as u64;
            }
            let labels = [
                ("netns", id.as_str()),
                ("protocol", protocol),
                ("range", range),
            ];
            #[expect(clippy::cast_precision_loss, reason = "small counts")]
            let expected = expected as f64;
            assert_eq!(
                metrics.value("port_monitor_ports_in_use", &labels),
                expected,
                "{what}: {protocol} ports in {range}\n{truth:?}"
            );
        }
    }
}

#[test]
fn privileged_gauges_equal_ss_for_every_kind_of_socket() {
    if !privileged("gauges_equal_ss_for_every_kind_of_socket") {
        return;
    }
    let netns = TestNetns::new("truth");
    // Sockets older than the exporter: no event ever describes them.
    let before = netns.run(|| {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).expect("listen v4");
        let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 8081)).expect("listen v6");
        let mut streams = Vec::new();
        for (listener, count) in [(&v4, 3), (&v6, 2)] {
            for _ in 0..count {
                streams.push(
                    TcpStream::connect(listener.local_addr().expect("address")).expect("connect"),
                );
                streams.push(listener.accept().expect("accept").0);
            }
        }
        let udp_unconnected = UdpSocket::bind((Ipv4Addr::LOCALHOST, 5353)).expect("udp bind");
        let udp_connected = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("udp6 bind");
        udp_connected
            .connect((Ipv6Addr::LOCALHOST, 5353))
            .expect("udp6 connect");
        let idle = tcp_bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 7777))).expect("bind");
        (v4, v6, streams, udp_unconnected, udp_connected, idle)
    });
    let exporter = Exporter::start();

    // Sockets made while it runs: TIME_WAIT (the client closes first), an autobound UDP
    // socket, another bound-idle TCP socket.
    let after = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9090)).expect("listen");
        for _ in 0..2 {
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 9090)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            drop(server);
        }
        let autobound = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("udp");
        autobound
            .send_to(b"x", (Ipv4Addr::LOCALHOST, 5353))
            .expect("send");
        let idle = tcp_bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 7778))).expect("bind");
        (listener, autobound, idle)
    });

    let metrics = wait_snapshots(&exporter, 2.0);
    assert_equals_ss(&metrics, &netns, &[7777, 7778], "mixed sockets");
    let id = netns.label();
    let time_wait = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("state", "time_wait"),
    ];
    assert_eq!(
        metrics.value("port_monitor_sockets", &time_wait),
        2.0,
        "TIME_WAIT seen"
    );
    drop((before, after));
}
