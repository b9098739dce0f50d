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

    let opened = |m: &Metrics| {
        m.value(
            "port_monitor_tcp_state_transitions_total",
            &[("from", "syn_sent"), ("to", "established")],
        )
    };
    // The gauges come with each snapshot, the node-wide transition counts with each poll of
    // the kernel's counters: either can show first.
    let open = exporter.wait_until(WAIT, |m| {
        sockets(m, &id, "established") == 10.0 && opened(m) >= 5.0
    });
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

/// `IPPROTO_MPTCP`: MPTCP sockets share the TCP state tracepoint but not TCP's tables.
const IPPROTO_MPTCP: i32 = 262;

/// An MPTCP socket of `kind` (`SOCK_STREAM`), or `None` where the kernel has no MPTCP.
fn mptcp_socket() -> Option<std::os::fd::OwnedFd> {
    // SAFETY: plain socket creation; the descriptor is owned by the returned value.
    let fd =
        unsafe { nix::libc::socket(nix::libc::AF_INET, nix::libc::SOCK_STREAM, IPPROTO_MPTCP) };
    // SAFETY: a fresh descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// MPTCP connections change the state of their MPTCP sockets through the same tracepoint as
/// TCP, but those sockets are in no TCP table: counted as TCP, every one would be a state
/// change the tables cannot explain. Only their TCP subflows count.
#[test]
fn privileged_mptcp_sockets_are_not_tcp_sockets() {
    if !privileged("mptcp_sockets_are_not_tcp_sockets") {
        return;
    }
    if mptcp_socket().is_none() {
        println!("this kernel has no MPTCP: nothing to check");
        return;
    }
    let netns = TestNetns::new("mptcp");
    let exporter = Exporter::start();
    crate::ground_truth::wait_snapshots(&exporter, 2.0);
    let corrections =
        |metrics: &Metrics| metrics.value("port_monitor_snapshot_corrections_total", &[]);
    let before = corrections(&exporter.scrape());
    let held = netns.run(|| {
        use nix::sys::socket::{Backlog, SockaddrIn, accept, bind, connect, listen};
        let address = SockaddrIn::new(127, 0, 0, 1, 9300);
        let listener = mptcp_socket().expect("MPTCP listener");
        bind(std::os::fd::AsRawFd::as_raw_fd(&listener), &address).expect("bind");
        listen(&listener, Backlog::new(8).expect("backlog")).expect("listen");
        let mut held = vec![];
        for _ in 0..5 {
            let client = mptcp_socket().expect("MPTCP client");
            connect(std::os::fd::AsRawFd::as_raw_fd(&client), &address).expect("connect");
            let server = accept(std::os::fd::AsRawFd::as_raw_fd(&listener)).expect("accept");
            // SAFETY: accept returned a fresh descriptor.
            let server: std::os::fd::OwnedFd =
                unsafe { std::os::fd::FromRawFd::from_raw_fd(server) };
            held.push((client, server));
        }
        (listener, held)
    });
    let metrics = crate::ground_truth::wait_snapshots(&exporter, 3.0);
    drop(held);
    let metrics_after_close = crate::ground_truth::wait_snapshots(&exporter, 3.0);
    assert_eq!(
        corrections(&metrics),
        before,
        "MPTCP connections open: no correction"
    );
    assert_eq!(
        corrections(&metrics_after_close),
        before,
        "MPTCP connections closed: no correction"
    );
}
