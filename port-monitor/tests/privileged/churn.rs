//! Thousands of connections a second: once the load stops and one snapshot passes, the gauges
//! equal `ss` again, and every failed call is either received or counted as lost.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    ground_truth::{assert_equals_ss, wait_snapshots},
    support::{Exporter, TestNetns, privileged},
};

const LOAD: Duration = Duration::from_secs(4);

#[test]
fn privileged_gauges_equal_ss_after_a_connection_storm() {
    if !privileged("gauges_equal_ss_after_a_connection_storm") {
        return;
    }
    let netns = TestNetns::new("churn");
    let id = netns.label();
    let exporter = Exporter::start();

    // One thread opens and closes connections as fast as it can (the client closes first, so
    // TIME_WAIT builds up); another connects to a closed port, each attempt refused.
    let churn = netns.run(|| {
        std::thread::spawn(|| {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let address = listener.local_addr().expect("address");
            let started = Instant::now();
            let mut connections = 0u64;
            while started.elapsed() < LOAD {
                let client = TcpStream::connect(address).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                drop(client);
                drop(server);
                connections += 1;
            }
            (connections, started.elapsed())
        })
    });
    let refused = netns.run(|| {
        let started = Instant::now();
        let mut refused = 0u64;
        while started.elapsed() < LOAD {
            match TcpStream::connect((Ipv4Addr::LOCALHOST, 1)) {
                Err(error) if error.kind() == ErrorKind::ConnectionRefused => refused += 1,
                other => panic!("expected a refusal: {other:?}"),
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        refused
    });
    let (connections, elapsed) = churn.join().expect("load thread");

    let metrics = wait_snapshots(&exporter, 2.0);
    assert_equals_ss(&metrics, &netns, &[], "after the storm");

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    let (refused_f, rate) = (refused as f64, connections as f64 / elapsed.as_secs_f64());
    let counted = metrics.value(
        "port_monitor_connect_errors_total",
        &[
            ("netns", &id),
            ("protocol", "tcp"),
            ("errno", "ECONNREFUSED"),
        ],
    );
    assert_eq!(
        counted, refused_f,
        "every refusal counted, lost records or not"
    );
    let received = metrics.value("port_monitor_events_total", &[("kind", "connect_failure")]);
    let lost = metrics.value("port_monitor_events_lost_total", &[]);
    assert!(
        received + lost >= refused_f,
        "records received {received} + lost {lost} < refusals {refused}"
    );
    let corrections = metrics.value("port_monitor_snapshot_corrections_total", &[]);
    let snapshots = metrics.value("port_monitor_snapshots_total", &[]);
    let duration = metrics.value("port_monitor_snapshot_duration_seconds", &[]);
    let time_wait = metrics.value(
        "port_monitor_sockets",
        &[("netns", &id), ("protocol", "tcp"), ("state", "time_wait")],
    );
    // The figures docs/how-it-works.md records.
    println!(
        "churn: {connections} connections in {:.1} s ({rate:.0}/s), {refused} refused; records received \
         {received}, lost {lost}; {snapshots} snapshots, last {:.1} ms, {time_wait} TIME_WAIT; corrections {corrections}",
        elapsed.as_secs_f64(),
        duration * 1000.0,
    );
}

/// The check is live: a listener in a namespace that discovery cannot see (entered by one
/// thread only, never by a process) is a state change the socket tables do not show.
///
/// A state change that happens while the tables are being read is forgiven (the read may or
/// may not have seen it), and on a slow kernel (emulated, in the kernel matrix) reads fill
/// most of the time. So hidden listeners keep being opened, one at a time, until one lands
/// between two reads and is reported.
#[test]
fn privileged_sockets_the_tables_do_not_show_are_corrections() {
    if !privileged("sockets_the_tables_do_not_show_are_corrections") {
        return;
    }
    let exporter = Exporter::start_with(&["--snapshot.interval=1s"]);
    wait_snapshots(&exporter, 2.0);
    let corrections = || {
        exporter
            .scrape()
            .value("port_monitor_snapshot_corrections_total", &[])
    };
    let before = corrections();
    let (done, wait_done) = std::sync::mpsc::channel::<()>();
    let wait_done = std::sync::Arc::new(std::sync::Mutex::new(wait_done));
    let mut hidden = Vec::new();
    let mut reported = false;
    for _ in 0..100 {
        let wait_done = std::sync::Arc::clone(&wait_done);
        hidden.push(std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("listen");
            let _ = wait_done.lock().map(|receiver| receiver.recv());
            drop(listener);
        }));
        std::thread::sleep(Duration::from_millis(700));
        if corrections() > before {
            reported = true;
            break;
        }
    }
    drop(done);
    for thread in hidden {
        thread.join().expect("hidden namespace thread");
    }
    assert!(reported, "a listener the tables cannot see was reported");
}
