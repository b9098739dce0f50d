//! Start-up and shutdown: health endpoints, and nothing left in the kernel after SIGTERM.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{Exporter, privileged, sockets::run_without};

/// Names of every program the daemon can attach, as `bpftool prog show` prints them (the
/// kernel keeps 15 characters of a name: the programs' names fit).
const PROGRAMS: [&str; 18] = [
    "tcp_state_change",
    "tcp_state_tracepoint",
    "bind4_fexit",
    "bind6_fexit",
    "bind4_fexit_sk",
    "bind6_fexit_sk",
    "autobind_fexit",
    "bound4",
    "bound6",
    "released",
    "bind4_request",
    "bind6_request",
    "bind_exit",
    "connect_exit",
    "sendto_exit",
    "sendmsg_exit",
    "sendmmsg_exit",
    "tcp_sockets",
];

/// The socket iterator: loaded at start-up, attached only while a snapshot lists a namespace.
const ITERATOR: &str = "tcp_sockets";

/// The programs the daemon says it attached (`port_monitor_program_info`): which ones depends
/// on the kernel (fexit or syscall tracepoints; the bound-socket programs before 6.7).
fn reported_programs(exporter: &Exporter) -> Vec<String> {
    let (_, text) = exporter.get("/metrics").expect("scrape");
    let mut names: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("port_monitor_program_info{"))
        .filter_map(|line| line.split("program=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn bpftool(object: &str) -> String {
    let output = Command::new("bpftool")
        .args([object, "show"])
        .output()
        .expect("bpftool is installed by cargo xtask test");
    assert!(output.status.success(), "bpftool {object} show failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Ids of the daemon's loaded programs (`219: tracing  name tcp_state_change  tag ...`).
fn our_program_ids() -> Vec<String> {
    program_ids(&PROGRAMS)
}

/// Ids of the loaded programs named one of `names`.
fn program_ids(names: &[&str]) -> Vec<String> {
    bpftool("prog")
        .lines()
        .filter(|line| {
            names
                .iter()
                .any(|name| line.contains(&format!(" name {name} ")))
        })
        .filter_map(|line| line.split(':').next().map(str::to_owned))
        .collect()
}

/// Links (attachments) that run one of `programs` (`105: raw_tracepoint  prog 219`).
fn links_to(programs: &[String]) -> Vec<String> {
    bpftool("link")
        .lines()
        .filter(|line| {
            programs
                .iter()
                .any(|id| line.trim_end().ends_with(&format!("prog {id}")))
        })
        .map(str::to_owned)
        .collect()
}

/// Waits up to `timeout` for `done`. The kernel frees a detached program after an RCU grace
/// period, not at `close()`, and a loaded machine can take seconds to get there.
fn eventually(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const RELEASE: Duration = Duration::from_secs(15);

#[test]
fn privileged_sigterm_detaches_every_program() {
    if !privileged("sigterm_detaches_every_program") {
        return;
    }
    assert!(
        eventually(RELEASE, || our_program_ids().is_empty()),
        "a daemon is still loaded"
    );
    let exporter = Exporter::start();
    let reported = reported_programs(&exporter);
    assert!(reported.len() >= 4, "programs reported: {reported:?}");
    for name in &reported {
        assert!(
            PROGRAMS.contains(&name.as_str()),
            "{name} is in this test's list"
        );
    }
    let ids = our_program_ids();
    assert_eq!(
        ids.len(),
        reported.len(),
        "every program reported is loaded, and only those: {reported:?}\n{}",
        bpftool("prog")
    );
    // Every program but the iterator stays attached; the iterator is attached (a link per
    // namespace) only while a snapshot lists one.
    let attached: Vec<&str> = reported
        .iter()
        .map(String::as_str)
        .filter(|name| *name != ITERATOR)
        .collect();
    assert_eq!(
        links_to(&program_ids(&attached)).len(),
        attached.len(),
        "every program attached"
    );
    assert_eq!(exporter.get("/-/healthy").expect("healthy").0, 200);
    assert_eq!(exporter.get("/-/ready").expect("ready").0, 200);
    assert_eq!(exporter.get("/nope").expect("404").0, 404);

    let log_before_stop = exporter.log();
    let status = exporter.stop();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{log_before_stop}"
    );
    assert!(
        eventually(RELEASE, || links_to(&ids).is_empty()),
        "attachments left after SIGTERM:\n{}",
        bpftool("link")
    );
    assert!(
        eventually(RELEASE, || our_program_ids().is_empty()),
        "programs left after SIGTERM:\n{}",
        bpftool("prog")
    );
}

#[test]
fn privileged_busy_port_fails_fast_with_a_clear_message() {
    if !privileged("busy_port_fails_fast_with_a_clear_message") {
        return;
    }
    assert!(
        eventually(RELEASE, || our_program_ids().is_empty()),
        "a daemon is still loaded"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .arg(format!("--web.listen-address={address}"))
        .output()
        .expect("run port-monitor");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--web.listen-address"),
        "names the flag: {stderr}"
    );
    assert!(
        our_program_ids().is_empty(),
        "nothing loaded when it cannot serve"
    );
}

#[test]
fn privileged_missing_capabilities_are_named() {
    if !privileged("missing_capabilities_are_named") {
        return;
    }
    let output = run_without("bpf,perfmon", &["--web.listen-address=127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in ["CAP_BPF", "CAP_PERFMON", "securityContext.capabilities.add"] {
        assert!(stderr.contains(expected), "names {expected}: {stderr}");
    }
    assert!(
        !stderr.contains("CAP_NET_ADMIN"),
        "names only what is missing: {stderr}"
    );
}

/// The effective capabilities of every thread of a process (`CapEff` in
/// /proc/<pid>/task/<tid>/status: /proc/<pid>/status shows the main thread only), by thread
/// name.
fn effective_capabilities(pid: u32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task directory");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            // A thread may end between the listing and the read.
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim().to_owned())
            };
            let capabilities = u64::from_str_radix(&field("CapEff:")?, 16).expect("hex");
            Some((field("Name:")?, capabilities))
        })
        .collect()
}

#[test]
fn privileged_capabilities_only_attaching_needs_are_dropped() {
    if !privileged("capabilities_only_attaching_needs_are_dropped") {
        return;
    }
    // NET_ADMIN stays while conntrack tables are read (ctnetlink refuses any request
    // without it), and goes with --no-collector.conntrack.
    for (flags, keeps_net_admin) in [(&[][..], true), (&["--no-collector.conntrack"][..], false)] {
        let exporter = Exporter::start_with(flags);
        let threads = effective_capabilities(exporter.pid());
        // The main thread, the runtime's workers and the snapshot thread at least.
        assert!(threads.len() >= 4, "threads: {threads:?}");
        for (name, capabilities) in &threads {
            let has = |bit: u32| capabilities & (1 << bit) != 0;
            // capability.h: NET_ADMIN 12, SYS_PTRACE 19, SYS_ADMIN 21, PERFMON 38, BPF 39.
            assert!(
                !has(38) && has(12) == keeps_net_admin,
                "PERFMON dropped, NET_ADMIN kept only for conntrack ({flags:?}) in thread {name}: {capabilities:#x}"
            );
            assert!(
                has(21) && has(19) && has(39),
                "SYS_ADMIN, SYS_PTRACE and BPF kept in thread {name}: {capabilities:#x}"
            );
        }
        // And it still works without them: a namespace snapshot and the kernel counters.
        let metrics = crate::ground_truth::wait_snapshots(&exporter, 2.0);
        assert!(metrics.value("port_monitor_namespaces", &[]) >= 1.0);
    }
}

/// The daemon's CPU time in seconds, from its /proc/<pid>/stat (utime + stime, in clock ticks
/// of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, fields) = stat.rsplit_once(')').expect("comm in parentheses");
    let ticks: Vec<f64> = fields
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse().expect("ticks"))
        .collect();
    (ticks[0] + ticks[1]) / 100.0
}

/// `process_cpu_seconds_total` is exact to the clock tick, not truncated to whole seconds: a
/// daemon that has used 0.44 s reports 0.44, not 0.
#[test]
fn privileged_cpu_seconds_are_counted_to_the_tick() {
    if !privileged("cpu_seconds_are_counted_to_the_tick") {
        return;
    }
    let exporter = Exporter::start();
    let before = cpu_seconds(exporter.pid());
    let reported = exporter.scrape().value("process_cpu_seconds_total", &[]);
    let after = cpu_seconds(exporter.pid());
    assert!(
        before > 0.0 && before <= reported && reported <= after,
        "process_cpu_seconds_total {reported} between {before} and {after} read from /proc"
    );
}
