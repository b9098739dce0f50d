//! A collector whose kernel hooks cannot be attached is left out: the daemon starts, says
//! what is missing in `port_monitor_degraded` and in its log, and everything else works.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use crate::support::{Exporter, TestNetns, privileged, sockets::tcp_bind};

/// A directory that is not a cgroup: the kernel refuses to attach cgroup programs to it, as it
/// would on a node whose cgroup v2 root is not where it was said to be. The bind collector
/// uses cgroup programs with the syscall-tracepoint hook (`--kernel.errno-hook=tracepoint`),
/// which every kernel offers.
fn not_a_cgroup() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("pm-not-a-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&path).expect("temporary directory");
    path
}

#[test]
fn privileged_bind_hooks_missing_degrade_only_bind_errors() {
    if !privileged("bind_hooks_missing_degrade_only_bind_errors") {
        return;
    }
    let root = not_a_cgroup();
    let flag = format!("--kernel.cgroup-root={}", root.display());
    let netns = TestNetns::new("degraded");
    let id = netns.label();
    let exporter = Exporter::start_with(&[&flag, "--kernel.errno-hook=tracepoint"]);

    // A port taken twice: without the bind hooks the conflict is not counted, but the
    // listener it left behind is in the socket gauges.
    let listener = netns.run(|| {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 7100));
        let listener = tcp_bind(address).expect("first bind");
        nix::sys::socket::listen(
            &listener,
            nix::sys::socket::Backlog::new(8).expect("backlog"),
        )
        .expect("listen");
        assert!(tcp_bind(address).is_err(), "the second bind fails");
        listener
    });
    let listening = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("state", "listen"),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(15), |m| {
        m.get("port_monitor_sockets", &listening) == Some(1.0)
    });
    assert_eq!(
        metrics.get("port_monitor_sockets", &listening),
        Some(1.0),
        "{}",
        metrics.text
    );
    let degraded = |reason| metrics.get("port_monitor_degraded", &[("reason", reason)]);
    assert_eq!(degraded("bind_hooks_unavailable"), Some(1.0));
    assert_eq!(degraded("autobind_hooks_unavailable"), Some(0.0));
    assert!(
        !metrics.text.contains("cgroup/bind4"),
        "no bind program is listed as attached"
    );
    assert!(metrics.text.contains("inet_sock_set_state"));
    let conflicts = [
        ("netns", id.as_str()),
        ("protocol", "tcp"),
        ("errno", "EADDRINUSE"),
    ];
    assert_eq!(
        metrics
            .get("port_monitor_bind_errors_total", &conflicts)
            .unwrap_or(0.0),
        0.0
    );
    drop(listener);
    let log = exporter.log();
    assert!(
        log.contains("bind_hooks_unavailable") && log.contains(&root.display().to_string()),
        "the log says which collector and why:\n{log}"
    );
    let _ = std::fs::remove_dir(root);
}

#[test]
fn privileged_check_fails_and_names_a_missing_collector() {
    if !privileged("check_fails_and_names_a_missing_collector") {
        return;
    }
    let root = not_a_cgroup();
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .arg(format!("--kernel.cgroup-root={}", root.display()))
        .arg("--kernel.errno-hook=tracepoint")
        .arg("check")
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check must not pass degraded");
    assert!(
        stdout.contains("UNAVAILABLE bind_hooks_unavailable"),
        "{stdout}"
    );
    assert!(stderr.contains("running degraded"), "{stderr}");
    assert!(
        stdout.contains("all programs detached: OK"),
        "the rest still ran: {stdout}"
    );
    let _ = std::fs::remove_dir(root);
}
