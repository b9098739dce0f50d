//! `port-monitor check`: probe, load, attach, report, snapshot, detach.

use std::process::Command;

use crate::support::{privileged, sockets::run_without};

#[test]
fn privileged_check_reports_every_hook_and_exits_zero() {
    if !privileged("check_reports_every_hook_and_exits_zero") {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .arg("check")
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for hook in [
        "tp_btf/inet_sock_set_state",
        "cgroup/bind4",
        "cgroup/bind6",
        "tracepoint/syscalls/sys_exit_bind",
        "tracepoint/syscalls/sys_exit_connect",
        "tracepoint/syscalls/sys_exit_sendmsg",
    ] {
        assert!(stdout.contains(hook), "{hook} reported:\n{stdout}");
    }
    assert!(stdout.contains("network namespaces read"), "{stdout}");
    assert!(stdout.contains("all programs detached: OK"), "{stdout}");
}

#[test]
fn privileged_check_names_what_is_missing() {
    if !privileged("check_names_what_is_missing") {
        return;
    }
    let output = run_without("net_admin", &["check"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
}
