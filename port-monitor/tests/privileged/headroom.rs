//! One hot destination runs out of ports while another, from the same namespace, stays low.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
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
    let (hot, cold) = (destination("9000"), destination("9001"));
    // A snapshot taken while the connections were being made can show the hot destination
    // full before the cold ones exist: wait for one taken after all of them.
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_ephemeral_utilization_max_ratio", &max) == Some(1.0)
            && get(m, "port_monitor_destination_ports_in_use", &cold) == Some(2.0)
    });
    assert_eq!(
        metrics.get("port_monitor_ephemeral_utilization_max_ratio", &max),
        Some(1.0),
        "{}",
        metrics.text
    );
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

fn ratio_labels<'a>(id: &'a str, protocol: &'a str) -> [(&'a str, &'a str); 2] {
    [("netns", id), ("protocol", protocol)]
}

/// Ten `TIME_WAIT` sockets toward a loopback server fill a ten-port namespace, yet with the
/// default `tcp_tw_reuse` (2: loopback) `connect()` takes their ports over once they are a
/// second old: the headroom says so. With `tcp_tw_reuse` 0 the same sockets block the next
/// connect, and the headroom reads full.
#[test]
fn privileged_time_wait_the_kernel_would_reuse_is_headroom() {
    if !privileged("time_wait_the_kernel_would_reuse_is_headroom") {
        return;
    }
    let netns = TestNetns::new("twreuse");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    // No reuse while the ten are made: on a slow machine (an emulated kernel) the loop can
    // outlast the reuse delay, and a connect taking over an older TIME_WAIT port would leave
    // fewer than ten. The default comes back before port-monitor looks.
    netns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let listener = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        for _ in 0..10 {
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            // The client closes first: its side, in the ephemeral range, waits.
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            drop(server);
        }
        listener
    });
    netns.sysctl("net.ipv4.tcp_tw_reuse", "2");
    // Older than the reuse delay (1 s) before the exporter's first look.
    std::thread::sleep(Duration::from_millis(1500));
    let exporter = Exporter::start();
    let tcp = ratio_labels(&id, "tcp");
    let metrics = crate::ground_truth::wait_snapshots(&exporter, 2.0);
    assert_eq!(
        metrics.get(
            "port_monitor_sockets",
            &[("netns", &id), ("protocol", "tcp"), ("state", "time_wait")]
        ),
        Some(10.0)
    );
    assert_eq!(
        metrics.get("port_monitor_ephemeral_utilization_max_ratio", &tcp),
        Some(0.0),
        "every TIME_WAIT port is reusable:\n{}",
        metrics.text
    );
    // TIME_WAIT piles up toward one destination (an anomaly of its own), but nothing is near
    // exhaustion.
    crate::anomalies::assert_anomalies(&metrics, &id, &[("time_wait_accumulation", 1.0)]);
    // The kernel agrees: an eleventh connection gets a port.
    let eleventh = netns.run(|| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)));
    let eleventh = eleventh.expect("the kernel reuses a TIME_WAIT port");

    netns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_ephemeral_utilization_max_ratio", &tcp) == Some(1.0)
    });
    assert_eq!(
        metrics.get("port_monitor_ephemeral_utilization_max_ratio", &tcp),
        Some(1.0),
        "without reuse, full:\n{}",
        metrics.text
    );
    // The kernel agrees again: no port for a twelfth.
    let twelfth = netns.run(|| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).map(drop));
    assert_eq!(
        twelfth.expect_err("out of ports").kind(),
        std::io::ErrorKind::AddrNotAvailable
    );
    drop((listener, eleventh));
}

/// A dual-stack socket connected to `::ffff:127.0.0.1` takes its port from the same space as
/// IPv4 sockets connected to `127.0.0.1`: one destination, labelled with the IPv4 address.
#[test]
fn privileged_ipv4_mapped_connections_share_the_ipv4_destination() {
    if !privileged("ipv4_mapped_connections_share_the_ipv4_destination") {
        return;
    }
    let netns = TestNetns::new("mapped");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start();
    let held = netns.run(|| {
        // A dual-stack listener: it takes IPv4 connections too.
        let listener = TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 9100)).expect("listen");
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
        let streams = [
            TcpStream::connect((Ipv4Addr::LOCALHOST, 9100)).expect("IPv4 connect"),
            TcpStream::connect((mapped, 9100)).expect("IPv4-mapped connect"),
            TcpStream::connect((mapped, 9100)).expect("IPv4-mapped connect"),
        ];
        (listener, streams)
    });
    let destination = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("dst_addr", "127.0.0.1"),
        ("dst_port", "9100"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_destination_ports_in_use", &destination) == Some(3.0)
    });
    assert_eq!(
        metrics.get("port_monitor_destination_ports_in_use", &destination),
        Some(3.0),
        "{}",
        metrics.text
    );
    assert!(
        !metrics.text.contains("::ffff:"),
        "no IPv4-mapped label:\n{}",
        metrics.text
    );
    drop(held);
}

/// A UDP socket that gets its port on first use (autobind) needs one that no UDP socket of
/// the namespace holds, whatever its address: six ports bound on two addresses leave four
/// for it, whichever address it ends up sending from.
#[test]
fn privileged_udp_headroom_is_every_udp_port_of_the_namespace() {
    if !privileged("udp_headroom_is_every_udp_port_of_the_namespace") {
        return;
    }
    let netns = TestNetns::new("udpheadroom");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start();
    let bound = netns.run(|| {
        let mut sockets = Vec::new();
        for (address, first) in [([127, 0, 0, 1], 40000), ([127, 0, 0, 2], 40003)] {
            for port in first..first + 3 {
                sockets.push(UdpSocket::bind((Ipv4Addr::from(address), port)).expect("bind"));
            }
        }
        sockets
    });
    let udp = ratio_labels(&id, "udp");
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_ephemeral_utilization_max_ratio", &udp) == Some(0.6)
    });
    assert_eq!(
        metrics.get("port_monitor_ephemeral_utilization_max_ratio", &udp),
        Some(0.6),
        "{}",
        metrics.text
    );
    // The kernel agrees: four autobinds succeed, the fifth finds no port (EAGAIN).
    let (receiver, autobound, failure) = netns.run(|| {
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 5000)).expect("receiver");
        let mut sockets = Vec::new();
        let mut failure = None;
        for _ in 0..5 {
            let socket = crate::support::sockets::unbound_udp().expect("socket");
            match socket.connect((Ipv4Addr::new(127, 0, 0, 3), 5000)) {
                Ok(()) => sockets.push(socket),
                Err(error) => failure = Some(error),
            }
        }
        (receiver, sockets, failure)
    });
    assert_eq!(autobound.len(), 4, "four ports were left");
    assert_eq!(
        failure.expect("the fifth fails").kind(),
        std::io::ErrorKind::WouldBlock,
        "EAGAIN"
    );
    drop((bound, receiver, autobound));
}

/// A client that binds port 0 and then connects (as `HAProxy`'s `source`, nginx's
/// `proxy_bind` do) takes a port the kernel will not give any other connection, whatever its
/// destination: each is charged to every destination, counted, and named as an anomaly.
/// Checked against the kernel: only the ports left over are connectable to another server.
#[test]
fn privileged_ports_bound_before_connect_count_against_every_destination() {
    if !privileged("ports_bound_before_connect_count_against_every_destination") {
        return;
    }
    let netns = TestNetns::new("bindconnect");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start();
    let held = netns.run(|| {
        let proxied = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 9001)).expect("listen");
        let mut streams = Vec::new();
        for _ in 0..3 {
            let socket = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::empty(),
                None,
            )
            .expect("socket");
            let any_port = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0);
            nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &any_port)
                .expect("bind port 0");
            let server = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 9000);
            nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&socket), &server)
                .expect("connect");
            streams.push(TcpStream::from(socket));
        }
        for _ in 0..2 {
            streams.push(TcpStream::connect((Ipv4Addr::LOCALHOST, 9001)).expect("connect"));
        }
        (proxied, other, streams)
    });
    let other = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("src_addr", "127.0.0.1"),
        ("dst_addr", "127.0.0.1"),
        ("dst_port", "9001"),
    ];
    let bound = [("netns", id.as_str())];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_bind_before_connect_sockets", &bound) == Some(3.0)
            && m.get("port_monitor_destination_utilization_ratio", &other) == Some(0.5)
    });
    assert_eq!(
        metrics.get("port_monitor_bind_before_connect_sockets", &bound),
        Some(3.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.get("port_monitor_destination_utilization_ratio", &other),
        Some(0.5),
        "two of its own and three bound: half the range lost to :9001\n{}",
        metrics.text
    );
    crate::anomalies::assert_anomalies(&metrics, &id, &[("bind_before_connect", 1.0)]);
    let pid = std::process::id().to_string();
    let last = [
        ("kind", "bind_before_connect"),
        ("netns", id.as_str()),
        ("pid", pid.as_str()),
    ];
    assert_eq!(
        metrics.get("port_monitor_anomaly_last_info", &last),
        Some(1.0),
        "the process that bound is named:\n{}",
        metrics.text
    );
    // The kernel agrees: five more connections to :9001, then none.
    let (more, error) = netns.run(|| {
        let mut more = Vec::new();
        loop {
            match TcpStream::connect((Ipv4Addr::LOCALHOST, 9001)) {
                Ok(stream) => more.push(stream),
                Err(error) => return (more, error.kind()),
            }
            assert!(more.len() <= 10, "more ports than the range has");
        }
    });
    assert_eq!(more.len(), 5, "the bound ports were not free for :9001");
    assert_eq!(error, std::io::ErrorKind::AddrNotAvailable);
    drop((held, more));
}
