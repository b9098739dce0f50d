//! Readiness and liveness as kubelet and Prometheus see them: no scrape answered with an empty
//! node before the first snapshot, and `/-/healthy` failing while the daemon cannot work.

use std::time::{Duration, Instant};

use nix::{
    sys::{ptrace, wait},
    unistd::Pid,
};

use crate::support::{Exporter, Metrics, privileged};

/// A scrape that arrives right after start-up is answered only once the first snapshot is in
/// (or refused with 503): never with the node's gauges missing, which Prometheus would record
/// as series that vanished.
#[test]
fn privileged_no_scrape_is_answered_before_the_first_snapshot() {
    if !privileged("no_scrape_is_answered_before_the_first_snapshot") {
        return;
    }
    let exporter = Exporter::start_unready();
    let (status, body) = exporter.get("/metrics").expect("first scrape");
    match status {
        200 => {
            let metrics = Metrics::parse(&body);
            assert!(
                metrics.value("port_monitor_snapshots_total", &[]) >= 1.0
                    && metrics.value("port_monitor_namespaces", &[]) >= 1.0,
                "a scrape answered before any snapshot:\n{body}"
            );
        }
        503 => assert!(body.contains("first snapshot"), "{body}"),
        other => panic!("status {other}: {body}"),
    }
}

/// The daemon's snapshot thread, found by name among its threads.
fn snapshot_thread(pid: u32) -> Pid {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let tid = tasks
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "snapshot")
        })
        .and_then(|task| task.file_name().to_str()?.parse::<i32>().ok())
        .expect("a thread named snapshot");
    Pid::from_raw(tid)
}

fn healthy(exporter: &Exporter) -> (u16, String) {
    exporter.get("/-/healthy").expect("/-/healthy answers")
}

/// A snapshot thread that hangs (here: stopped under ptrace, the rest of the daemon running)
/// makes `/-/healthy` fail, saying why, so that kubelet restarts the pod; once it runs again
/// the daemon is healthy again.
#[test]
fn privileged_a_hung_snapshot_thread_fails_liveness() {
    if !privileged("a_hung_snapshot_thread_fails_liveness") {
        return;
    }
    let exporter = Exporter::start();
    assert_eq!(healthy(&exporter).0, 200);
    let thread = snapshot_thread(exporter.pid());
    ptrace::seize(thread, ptrace::Options::empty()).expect("PTRACE_SEIZE the snapshot thread");
    ptrace::interrupt(thread).expect("PTRACE_INTERRUPT");
    wait::waitpid(thread, Some(wait::WaitPidFlag::__WALL)).expect("the thread stops");

    // The kernel reader may be reported first: the thread can stop while it holds the model,
    // which the reader then waits for. The snapshot thread is named once its own limit passes.
    let deadline = Instant::now() + Duration::from_mins(2);
    let mut answer = healthy(&exporter);
    while !answer.1.contains("snapshot thread") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        answer = healthy(&exporter);
    }
    ptrace::detach(thread, None).expect("PTRACE_DETACH");
    assert_eq!(
        answer.0, 503,
        "unhealthy while snapshots stop: {}",
        answer.1
    );
    assert!(answer.1.contains("snapshot thread"), "{}", answer.1);

    let deadline = Instant::now() + Duration::from_mins(1);
    while healthy(&exporter).0 != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(healthy(&exporter).0, 200, "healthy again once it runs");
}
