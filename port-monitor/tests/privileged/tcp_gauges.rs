//! Connections opened and closed on loopback show up in the gauges, and leave none behind.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::support::{Exporter, Metrics, TestNetns, privileged};

const WAIT: Duration = Duration::from_secs(10);

fn sockets(metrics: &Metrics, netns: &str, state: &str) -> f64 {
    metrics.value(
        "port_monitor_sockets",
        &[("netns", netns), ("protocol", "tcp"), ("state", state)],
    )
}

fn ports(metrics: &Metrics, netns: &str, range: &str) -> f64 {
    metrics.value(
        "port_monitor_ports_in_use",
        &[("netns", netns), ("protocol", "tcp"), ("range", range)],
    )
}

/// Closes with an RST (`SO_LINGER` 0): the socket goes away at once, without `TIME_WAIT`.
#[expect(
    clippy::needless_pass_by_value,
    reason = "closing is the point: it takes the stream"
)]
fn abort(stream: TcpStream) {
    nix::sys::socket::setsockopt(
        &stream,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER");
}

#[test]
fn privileged_connections_show_in_gauges_and_leave_none_behind() {
    if !privileged("connections_show_in_gauges_and_leave_none_behind") {
        return;
    }
    let netns = TestNetns::new("gauges");
    let id = netns.label();
    let exporter = Exporter::start();

    // 3 IPv4 and 2 IPv6 connections to two listeners on port 8080 (registered range, below
    // the default ephemeral range): 5 client sockets with ephemeral ports, 5 accepted ones.
    let (listeners, clients, servers) = netns.run(|| {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).expect("bind v4");
        let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 8080)).expect("bind v6");
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for (listener, count) in [(&v4, 3), (&v6, 2)] {
            for _ in 0..count {
                let address: SocketAddr = listener.local_addr().expect("address");
                clients.push(TcpStream::connect(address).expect("connect"));
                servers.push(listener.accept().expect("accept").0);
            }
        }
        ((v4, v6), clients, servers)
    });

    let open = exporter.wait_until(WAIT, |m| sockets(m, &id, "established") == 10.0);
    assert_eq!(sockets(&open, &id, "established"), 10.0, "{}", open.text);
    assert_eq!(sockets(&open, &id, "listen"), 2.0);
    // The clients' 5 ports, plus 8080 (v4 and v6 listeners share the port number).
    assert_eq!(ports(&open, &id, "ephemeral"), 5.0);
    assert_eq!(
        ports(&open, &id, "well_known")
            + ports(&open, &id, "registered")
            + ports(&open, &id, "dynamic"),
        6.0
    );
    assert_eq!(
        open.value("port_monitor_ephemeral_range_min", &[("netns", &id)]),
        32768.0
    );
    assert_eq!(
        open.value("port_monitor_ephemeral_range_max", &[("netns", &id)]),
        60999.0
    );
    let opened = |m: &Metrics| {
        m.value(
            "port_monitor_tcp_state_transitions_total",
            &[("from", "syn_sent"), ("to", "established")],
        )
    };
    assert!(
        opened(&open) >= 5.0,
        "active opens counted: {}",
        opened(&open)
    );

    // Reset every connection: nothing may be left behind.
    for stream in clients.into_iter().chain(servers) {
        abort(stream);
    }
    drop(listeners);
    let closed = exporter.wait_until(WAIT, |m| {
        sockets(m, &id, "established") == 0.0 && sockets(m, &id, "listen") == 0.0
    });
    for state in [
        "established",
        "listen",
        "time_wait",
        "syn_sent",
        "fin_wait1",
        "fin_wait2",
        "close_wait",
    ] {
        assert_eq!(
            sockets(&closed, &id, state),
            0.0,
            "{state} left behind:\n{}",
            closed.text
        );
    }
    for range in ["well_known", "registered", "dynamic", "ephemeral"] {
        assert_eq!(ports(&closed, &id, range), 0.0, "{range} ports left behind");
    }
}

#[test]
fn privileged_time_wait_is_counted_from_the_socket_table() {
    if !privileged("time_wait_is_counted_from_the_socket_table") {
        return;
    }
    let netns = TestNetns::new("timewait");
    let id = netns.label();
    let exporter = Exporter::start();

    // The client closes first, so its side enters TIME_WAIT (60 s), which no state-change
    // event shows: only the socket table does.
    netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let address = listener.local_addr().expect("address");
        for _ in 0..4 {
            let client = TcpStream::connect(address).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            drop(server);
        }
    });
    let metrics = exporter.wait_until(WAIT, |m| sockets(m, &id, "time_wait") == 4.0);
    assert_eq!(sockets(&metrics, &id, "time_wait"), 4.0, "{}", metrics.text);
    assert_eq!(
        ports(&metrics, &id, "ephemeral"),
        4.0,
        "TIME_WAIT sockets hold their ports"
    );
}
