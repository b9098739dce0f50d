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

/// Fills the daemon's map of failed calls (other than port failures) to the brim, as failures
/// in thousands of namespaces would: keys of the live namespace `netns` (so that the daemon,
/// which forgets the keys of namespaces that are gone, keeps them) with every errno, written
/// into the real map through its id.
fn fill_the_failure_map(netns: u32) -> usize {
    use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues, loaded_maps};
    use port_monitor_common::{
        Operation,
        maps::{ErrorKey, SOCKET_ERRORS, SOCKET_ERRORS_MAX_ENTRIES},
    };
    let ids: Vec<u32> = loaded_maps()
        .filter_map(Result::ok)
        .filter(|info| info.name_as_str() == Some(SOCKET_ERRORS))
        .map(|info| info.id())
        .collect();
    assert_eq!(ids.len(), 1, "one daemon, one {SOCKET_ERRORS} map");
    let data = MapData::from_id(ids[0]).expect("open the map");
    let mut map: PerCpuHashMap<_, ErrorKey, u64> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).expect("a per-CPU hash");
    let cpus = aya::util::nr_cpus().expect("CPUs");
    let mut inserted = 0;
    let keys = (1..4096u16).flat_map(|errno| {
        [Operation::Connect, Operation::Bind]
            .into_iter()
            .flat_map(move |operation| {
                [(6, false), (6, true), (17, false), (17, true)].map(|(protocol, auto)| {
                    ErrorKey::new((netns, 0), operation, protocol, errno, auto)
                })
            })
    });
    for key in keys
        .filter(|key| !key.is_port_failure())
        .take(SOCKET_ERRORS_MAX_ENTRIES as usize)
    {
        let values = PerCpuValues::try_from(vec![1u64; cpus]).expect("values");
        if map.insert(key, values, 0).is_ok() {
            inserted += 1;
        }
    }
    inserted
}

/// When the map of other failures is full (a pod that can make namespaces can fill it with
/// refused connections), exhaustion and bind conflicts are still counted exactly: they have a
/// map of their own.
#[test]
fn privileged_a_full_failure_map_does_not_hide_exhaustion() {
    if !privileged("a_full_failure_map_does_not_hide_exhaustion") {
        return;
    }
    let netns = TestNetns::new("fullmap");
    let id = netns.label();
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let filler = TestNetns::new("filler");
    let exporter = Exporter::start();
    let inserted = fill_the_failure_map(filler.id);
    assert_eq!(inserted, 16_384, "the map is full");

    let (connected, failures, keep) = netns.run(connect_until_refused);
    assert_eq!((connected, failures), (10, EXTRA_ATTEMPTS));
    let (conflict, refused) = netns.run(|| {
        let _taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 9500)).expect("bind");
        let again = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 9500));
        // A refused connection: its key does not fit any more.
        let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, 9501)).map(drop);
        (
            again.map(drop).map_err(|error| error.kind()),
            refused.map_err(|e| e.kind()),
        )
    });
    assert_eq!(conflict, Err(ErrorKind::AddrInUse));
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused));

    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let expected = failures as f64;
    let exhaustion = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("operation", "connect"),
    ];
    let conflicts = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("errno", "EADDRINUSE"),
    ];
    let full = [("map", "socket_errors")];
    let metrics = exporter.wait_until(Duration::from_secs(15), |m| {
        m.value("port_monitor_port_exhaustion_total", &exhaustion) == expected
            && m.value("port_monitor_bind_errors_total", &conflicts) == 1.0
            && m.value("port_monitor_kernel_map_full_total", &full) > 0.0
    });
    assert_eq!(
        metrics.value("port_monitor_port_exhaustion_total", &exhaustion),
        expected,
        "exhaustion counted with the map full"
    );
    assert_eq!(
        metrics.value("port_monitor_bind_errors_total", &conflicts),
        1.0,
        "the bind conflict counted with the map full"
    );
    assert!(
        metrics.value("port_monitor_kernel_map_full_total", &full) > 0.0,
        "the refused connection that did not fit is reported"
    );
    assert_eq!(
        metrics.value(
            "port_monitor_kernel_map_full_total",
            &[("map", "port_failures")]
        ),
        0.0
    );
    drop((keep, filler));
}
