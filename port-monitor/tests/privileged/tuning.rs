//! The settings behind the classic tuning advice, per namespace, as the kernel has them: the
//! TCP sysctls, the kernel's `TIME_WAIT` counters (equal to its `/proc/net/netstat`), and an
//! ephemeral range reaching into the server ports.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Duration,
};

use crate::support::{Exporter, Metrics, TestNetns, privileged, routed};

/// The kernel's `TcpExt` counter `name` in `netns`.
fn netstat(netns: &TestNetns, name: &str) -> f64 {
    let text = routed::exec(netns, "cat", &["/proc/net/netstat"]);
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(position) = names.split_whitespace().position(|field| field == name) {
            return values
                .split_whitespace()
                .nth(position)
                .and_then(|value| value.parse().ok())
                .expect("a counter");
        }
    }
    panic!("no {name} in /proc/net/netstat")
}

/// The exporter's count of `event` in `netns`: absent is none yet (compact detail).
fn time_wait_events(metrics: &Metrics, netns: &TestNetns, event: &str) -> f64 {
    metrics.value(
        "port_monitor_time_wait_events_total",
        &[("netns", &netns.label()), ("event", event)],
    )
}

#[test]
fn privileged_tcp_settings_and_time_wait_counters_are_the_kernels() {
    if !privileged("tcp_settings_and_time_wait_counters_are_the_kernels") {
        return;
    }
    let netns = TestNetns::new("tuning");
    netns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    netns.sysctl("net.ipv4.tcp_fin_timeout", "20");
    // Room for five TIME_WAIT sockets: the clients closing after them get none.
    netns.sysctl("net.ipv4.tcp_max_tw_buckets", "5");
    netns.sysctl("net.ipv4.ip_local_port_range", "30000 60999");
    netns.sysctl("net.ipv4.ip_local_reserved_ports", "30000-30099");
    let exporter = Exporter::start();
    netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).expect("listen");
        for _ in 0..12 {
            // The client closes first: its side keeps TIME_WAIT, or overflows.
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 8080)).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            drop(server);
        }
    });
    let overflow = netstat(&netns, "TCPTimeWaitOverflow");
    assert!(overflow > 0.0, "the bucket limit was hit");
    let id = netns.label();
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        time_wait_events(m, &netns, "tcp_time_wait_overflow") == overflow
    });
    assert_eq!(
        time_wait_events(&metrics, &netns, "tw"),
        netstat(&netns, "TW")
    );
    let settings = metrics
        .text
        .lines()
        .find(|line| {
            line.starts_with("port_monitor_tcp_settings_info{")
                && line.contains(&format!("netns=\"{id}\""))
        })
        .expect("the namespace's settings");
    for label in [
        "tcp_tw_reuse=\"1\"",
        "tcp_timestamps=\"1\"",
        "tcp_max_tw_buckets=\"5\"",
        "tcp_fin_timeout=\"20\"",
    ] {
        assert!(settings.contains(label), "{label} in {settings}");
    }
    // NodePorts 30000-32767 less the 100 reserved.
    assert_eq!(
        metrics.get(
            "port_monitor_ephemeral_server_overlap_ports",
            &[("netns", &id), ("server_range", "30000-32767")]
        ),
        Some(2668.0)
    );
}
