//! The node's own NAT, for real: a client namespace reaches a server namespace through a router
//! namespace that masquerades it to five ports. The sixth connection finds no NAT port: the
//! router's conntrack drops its SYN and the client's `connect()` times out. The exporter sees
//! both sides, and its conntrack counts are the kernel's (`conntrack -S`, `conntrack -C`).

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use crate::{
    anomalies::{anomalies, assert_anomalies},
    support::{
        Exporter, Metrics, TestNetns, privileged,
        routed::{self, Routed, SERVER},
    },
};

/// The NAT's ports: five.
const NAT_PORTS: &str = "40000-40004";
/// Connections beyond the NAT's five ports.
const DROPPED: usize = 3;

/// The statistics compared with `conntrack -S`, as the kernel names them.
const EVENTS: [&str; 6] = [
    "invalid",
    "insert_failed",
    "drop",
    "early_drop",
    "error",
    "clash_resolve",
];

fn config_with_nat_ports(ports: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "port-monitor-nat-{ports}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, format!("[nat]\nport_range = \"{ports}\"\n")).expect("write config");
    path
}

/// The labels of the router's NAT series toward the server's `port` (`routed::ROUTER_OUTSIDE`
/// is the NAT address, `routed::SERVER` the destination).
fn toward_server<'a>(router: &'a str, protocol: &'a str, port: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("netns", router),
        ("protocol", protocol),
        ("nat_addr", "10.77.2.1"),
        ("dst_addr", "10.77.2.2"),
        ("dst_port", port),
    ]
}

/// Whether the exporter's conntrack statistics for `netns` are the kernel's.
fn events_match(metrics: &Metrics, netns: &TestNetns) -> bool {
    let kernel = routed::conntrack_statistics(netns);
    let id = netns.label();
    EVENTS.iter().all(|event| {
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let expected = kernel.get(*event).copied().unwrap_or(0) as f64;
        // An event the kernel never counted has no series (--metrics.detail=compact).
        metrics.value(
            "port_monitor_conntrack_events_total",
            &[("netns", &id), ("event", event)],
        ) == expected
    })
}

/// The anomaly naming the NAT destination, then a second one when conntrack starts failing
/// inserts: `nat_exhaustion` is 2 in the router, and nothing else happened anywhere.
fn assert_nat_exhaustion(metrics: &Metrics, net: &Routed) {
    let router = net.router.label();
    assert_anomalies(metrics, &router, &[("nat_exhaustion", 2.0)]);
    assert_anomalies(metrics, &net.client.label(), &[]);
    assert_eq!(
        metrics.get(
            "port_monitor_degraded",
            &[("reason", "conntrack_unreadable")]
        ),
        Some(0.0)
    );
}

/// Connects [`DROPPED`] times at once from the client to `server` and waits for the exporter
/// to show them waiting in `SYN_SENT` meanwhile; returns how each connect ended.
fn connect_while_watching_syn_sent(
    net: &Routed,
    exporter: &Exporter,
    server: SocketAddr,
) -> Vec<Result<(), ErrorKind>> {
    let client = net.client.label();
    std::thread::scope(|scope| {
        let connects = scope.spawn(|| {
            net.client.run(move || {
                let attempts: Vec<_> = (0..DROPPED)
                    .map(|_| {
                        std::thread::spawn(move || {
                            TcpStream::connect_timeout(&server, Duration::from_mins(1))
                                .map(drop)
                                .map_err(|error| error.kind())
                        })
                    })
                    .collect();
                attempts
                    .into_iter()
                    .map(|attempt| attempt.join().expect("connect thread"))
                    .collect::<Vec<_>>()
            })
        });
        let waiting = [
            ("netns", client.as_str()),
            ("protocol", "tcp"),
            ("dst_addr", "10.77.2.2"),
            ("dst_port", "8080"),
        ];
        exporter.wait_until(Duration::from_secs(10), |m| {
            m.get("port_monitor_destination_syn_sent", &waiting) == Some(3.0)
        });
        connects.join().expect("connects")
    })
}

#[test]
fn privileged_a_nat_out_of_tcp_ports_is_seen_at_the_router_and_the_client() {
    if !privileged("a_nat_out_of_tcp_ports_is_seen_at_the_router_and_the_client") {
        return;
    }
    let net = Routed::new("nat");
    net.masquerade("tcp", Some(NAT_PORTS));
    // Two SYN retransmissions: a dropped connect times out after about 7 s.
    net.client.sysctl("net.ipv4.tcp_syn_retries", "2");
    let config = config_with_nat_ports(NAT_PORTS);
    let exporter = Exporter::start_with(&[&format!("--config.file={}", config.display())]);
    let server = SocketAddr::from((SERVER, 8080));
    let listener = net
        .server
        .run(move || TcpListener::bind(server).expect("listen"));

    // Five connections take the NAT's five ports toward the server.
    let held = net.client.run(move || {
        (0..5)
            .map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(30)).expect("connect"))
            .collect::<Vec<_>>()
    });
    let (router, client) = (net.router.label(), net.client.label());
    let nat = toward_server(&router, "tcp", "8080");
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_nat_utilization_ratio", &nat) == Some(1.0)
            && anomalies(m, &router, "nat_exhaustion") == Some(1.0)
    });
    assert_eq!(
        metrics.get("port_monitor_nat_ports_in_use", &nat),
        Some(5.0)
    );
    assert_eq!(
        metrics.get(
            "port_monitor_nat_utilization_max_ratio",
            &[("netns", &router), ("protocol", "tcp")]
        ),
        Some(1.0)
    );
    let last = metrics
        .text
        .lines()
        .find(|line| line.starts_with("port_monitor_anomaly_last_info{kind=\"nat_exhaustion\""))
        .expect("the last nat_exhaustion");
    assert!(
        last.contains(&format!("netns=\"{router}\""))
            && last.contains("subject=\"tcp via 10.77.2.1 -> 10.77.2.2:8080\""),
        "{last}"
    );

    // Three more find no port: their SYNs are dropped, they wait in SYN_SENT, then time out.
    let outcomes = connect_while_watching_syn_sent(&net, &exporter, server);
    assert_eq!(outcomes, vec![Err(ErrorKind::TimedOut); DROPPED]);

    let timeouts = [
        ("netns", client.as_str()),
        ("protocol", "tcp"),
        ("dst_addr", "10.77.2.2"),
        ("dst_port", "8080"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_destination_connect_timeouts_total", &timeouts) == Some(3.0)
            && anomalies(m, &router, "nat_exhaustion") == Some(2.0)
            && events_match(m, &net.router)
    });
    let kernel = routed::conntrack_statistics(&net.router);
    assert!(
        kernel["insert_failed"] >= 3 && kernel["drop"] >= 3,
        "the kernel dropped every SYN: {kernel:?}"
    );
    assert_eq!(
        metrics.get(
            "port_monitor_connect_errors_total",
            &[("netns", &client), ("errno", "ETIMEDOUT")]
        ),
        Some(3.0)
    );
    assert_nat_exhaustion(&metrics, &net);
    // The client and the server have no NAT of their own: no conntrack series for them.
    for quiet in [&net.client, &net.server] {
        assert_eq!(
            metrics.get(
                "port_monitor_conntrack_entries",
                &[("netns", &quiet.label())]
            ),
            None,
            "{}",
            quiet.name
        );
    }
    drop((held, listener));
    let _ = std::fs::remove_file(config);
}

#[test]
fn privileged_a_nat_out_of_udp_ports_is_seen_at_the_router() {
    if !privileged("a_nat_out_of_udp_ports_is_seen_at_the_router") {
        return;
    }
    let net = Routed::new("natu");
    net.masquerade("udp", Some(NAT_PORTS));
    let config = config_with_nat_ports(NAT_PORTS);
    let exporter = Exporter::start_with(&[&format!("--config.file={}", config.display())]);
    let server = SocketAddr::from((SERVER, 5353));
    let receiver = net.server.run(move || {
        let socket = UdpSocket::bind(server).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        socket
    });
    // Eight flows from eight client ports: five NAT ports, three flows dropped.
    let senders = net.client.run(move || {
        (0..5 + DROPPED)
            .map(|_| {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                socket.send_to(b"query", server).expect("send");
                socket
            })
            .collect::<Vec<_>>()
    });
    let mut delivered = 0;
    let mut buffer = [0; 16];
    while receiver.recv_from(&mut buffer).is_ok() {
        delivered += 1;
    }
    assert_eq!(delivered, 5, "only five flows got a NAT port");

    let router = net.router.label();
    let nat = toward_server(&router, "udp", "5353");
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_nat_utilization_ratio", &nat) == Some(1.0)
            && anomalies(m, &router, "nat_exhaustion") == Some(2.0)
            && events_match(m, &net.router)
    });
    assert_eq!(
        metrics.get("port_monitor_nat_ports_in_use", &nat),
        Some(5.0)
    );
    assert!(routed::conntrack_statistics(&net.router)["insert_failed"] >= 3);
    assert_nat_exhaustion(&metrics, &net);
    drop(senders);
    let _ = std::fs::remove_file(config);
}

#[test]
fn privileged_traffic_through_a_roomy_nat_is_no_anomaly() {
    if !privileged("traffic_through_a_roomy_nat_is_no_anomaly") {
        return;
    }
    let net = Routed::new("natok");
    net.masquerade("tcp", None);
    net.masquerade("udp", None);
    let exporter = Exporter::start();
    let (tcp_server, udp_server) = (
        SocketAddr::from((SERVER, 8080)),
        SocketAddr::from((SERVER, 5353)),
    );
    let listener = net
        .server
        .run(move || TcpListener::bind(tcp_server).expect("listen"));
    let held = net.client.run(move || {
        let streams: Vec<_> = (0..5)
            .map(|_| {
                TcpStream::connect_timeout(&tcp_server, Duration::from_secs(30)).expect("connect")
            })
            .collect();
        let datagrams: Vec<_> = (0..5)
            .map(|_| {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                socket.send_to(b"query", udp_server).expect("send");
                socket
            })
            .collect();
        (streams, datagrams)
    });
    let router = net.router.label();
    let (tcp, udp) = (
        toward_server(&router, "tcp", "8080"),
        toward_server(&router, "udp", "5353"),
    );
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_nat_ports_in_use", &tcp) == Some(5.0)
            && m.get("port_monitor_nat_ports_in_use", &udp) == Some(5.0)
    });
    // The kernel's range without --to-ports: 1024-65535.
    assert_eq!(
        metrics.get("port_monitor_nat_utilization_ratio", &tcp),
        Some(5.0 / 64512.0)
    );
    assert_eq!(
        metrics.value(
            "port_monitor_conntrack_events_total",
            &[("netns", &router), ("event", "insert_failed")]
        ),
        0.0
    );
    let metrics = crate::ground_truth::wait_snapshots(&exporter, 2.0);
    for netns in [&net.client, &net.router, &net.server] {
        assert_anomalies(&metrics, &netns.label(), &[]);
    }
    assert_eq!(
        metrics.value(
            "port_monitor_anomalies_total",
            &[("netns", &router), ("kind", "nat_exhaustion")]
        ),
        0.0
    );
    drop((held, listener));
}

#[test]
fn privileged_conntrack_entries_are_the_kernels_count() {
    if !privileged("conntrack_entries_are_the_kernels_count") {
        return;
    }
    let netns = TestNetns::new("ctcount");
    // A conntrack match is enough for the namespace to track its connections; unanswered UDP
    // flows live 30 s by default, long enough, but not on a slow machine: ten minutes.
    routed::exec(
        &netns,
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "ACCEPT",
        ],
    );
    netns.sysctl("net.netfilter.nf_conntrack_udp_timeout", "600");
    let exporter = Exporter::start();
    // Thousands of flows: one datagram to each of 3000 ports.
    let socket = netns.run(|| {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        for port in 20_000..23_000 {
            socket
                .send_to(b"x", (Ipv4Addr::LOCALHOST, port))
                .expect("send");
        }
        socket
    });
    let count = routed::conntrack_count(&netns);
    assert!(count >= 3000, "conntrack -C says {count}");
    let id = netns.label();
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let expected = count as f64;
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_conntrack_entries", &[("netns", &id)]) == Some(expected)
    });
    assert!(
        metrics
            .get("port_monitor_conntrack_entries_limit", &[("netns", &id)])
            .is_some_and(|limit| limit >= expected),
        "{}",
        metrics.text
    );
    assert_eq!(
        routed::conntrack_count(&netns),
        count,
        "the table did not move"
    );
    drop(socket);
}
