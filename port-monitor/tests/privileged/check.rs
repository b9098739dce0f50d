//! `port-monitor check`: probe, load, attach, report, snapshot, detach; and the hook each fact
//! gets on this kernel.

use std::process::{Command, Output};

use crate::support::{privileged, sockets::run_without};

fn check(args: &[&str]) -> (Output, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .args(args)
        .arg("check")
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The attach points check lists as attached (its indented lines).
fn attached(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|line| line.starts_with("  "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Set by the kernel matrix (`cargo xtask test`) for kernels known to run fexit programs.
fn kernel_runs_fexit() -> bool {
    std::env::var("PORT_MONITOR_TEST_EXPECT_FEXIT").as_deref() == Ok("1")
}

/// With the defaults no syscall tracepoint is attached, on any kernel: they would make every
/// syscall on the node slower. Where the kernel runs fexit programs, `bind()` errors and UDP
/// autobind failures are counted from them; where it does not, check says which facts are not
/// counted, why, and which flag would count them at that price.
#[test]
fn privileged_check_defaults_attach_no_syscall_tracepoint() {
    if !privileged("check_defaults_attach_no_syscall_tracepoint") {
        return;
    }
    let (output, stdout, stderr) = check(&[]);
    let hooks = attached(&stdout);
    assert!(
        !hooks.contains("tracepoint/syscalls/"),
        "a syscall tracepoint by default:\n{stdout}"
    );
    assert!(hooks.contains("tp_btf/inet_sock_set_state"), "{stdout}");
    assert!(stdout.contains("all programs detached: OK"), "{stdout}");
    let fexit = ["fexit/inet_bind", "fexit/inet6_bind", "fexit/inet_autobind"];
    if hooks.contains("fexit/") || kernel_runs_fexit() {
        for hook in fexit {
            assert!(hooks.contains(hook), "{hook} attached:\n{stdout}");
        }
        assert!(output.status.success(), "check failed:\n{stdout}\n{stderr}");
    } else {
        for reason in ["bind_hooks_unavailable", "autobind_hooks_unavailable"] {
            let line = stdout
                .lines()
                .find(|line| line.starts_with(&format!("UNAVAILABLE {reason}")))
                .unwrap_or_else(|| panic!("{reason} reported:\n{stdout}"));
            assert!(
                line.contains("--kernel.errno-hook=auto") && line.contains("fexit/"),
                "says what failed and what to do: {line}"
            );
        }
        assert!(!output.status.success(), "check must not pass degraded");
        assert!(stderr.contains("running degraded"), "{stderr}");
    }
}

/// `--kernel.errno-hook=auto` counts every fact on every kernel: fexit where the kernel runs
/// it, the syscall tracepoints where it does not.
#[test]
fn privileged_check_auto_reports_every_hook_and_exits_zero() {
    if !privileged("check_auto_reports_every_hook_and_exits_zero") {
        return;
    }
    let (output, stdout, stderr) = check(&["--kernel.errno-hook=auto"]);
    assert!(output.status.success(), "check failed:\n{stdout}\n{stderr}");
    let hooks = attached(&stdout);
    let expected: &[&str] = if hooks.contains("fexit/") || kernel_runs_fexit() {
        &["fexit/inet_bind", "fexit/inet6_bind", "fexit/inet_autobind"]
    } else {
        &[
            "cgroup/bind4",
            "cgroup/bind6",
            "tracepoint/syscalls/sys_exit_bind",
            "tracepoint/syscalls/sys_exit_connect",
            "tracepoint/syscalls/sys_exit_sendmsg",
        ]
    };
    for hook in ["tp_btf/inet_sock_set_state"].iter().chain(expected) {
        assert!(hooks.contains(hook), "{hook} attached:\n{stdout}");
    }
    assert!(stdout.contains("network namespaces read"), "{stdout}");
    assert!(stdout.contains("all programs detached: OK"), "{stdout}");
}

/// The syscall tracepoints can be asked for on any kernel (the benchmarks compare them).
#[test]
fn privileged_check_tracepoint_hook_is_honoured() {
    if !privileged("check_tracepoint_hook_is_honoured") {
        return;
    }
    let (output, stdout, stderr) = check(&["--kernel.errno-hook=tracepoint"]);
    assert!(output.status.success(), "check failed:\n{stdout}\n{stderr}");
    let hooks = attached(&stdout);
    assert!(!hooks.contains("fexit/"), "{stdout}");
    for hook in [
        "tracepoint/syscalls/sys_exit_bind",
        "tracepoint/syscalls/sys_exit_sendto",
    ] {
        assert!(hooks.contains(hook), "{hook} attached:\n{stdout}");
    }
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
