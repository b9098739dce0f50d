//! Start-up and shutdown: health endpoints, and nothing left in the kernel after SIGTERM.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{Exporter, privileged};

/// Names of the daemon's programs as `bpftool prog show` prints them (the kernel keeps the
/// first 15 characters).
const PROGRAMS: [&str; 4] = [
    "tcp_state_chang",
    "bind4_request",
    "bind6_request",
    "bind_exit",
];

fn loaded_programs() -> String {
    let output = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool is installed by cargo xtask test");
    assert!(output.status.success(), "bpftool prog show failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether any of the daemon's programs is loaded, waiting up to two seconds for the kernel
/// to finish releasing them: a program is freed after an RCU grace period, not at close().
fn any_loaded() -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let loaded = loaded_programs();
        if !PROGRAMS.iter().any(|program| loaded.contains(program)) {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(loaded);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn privileged_sigterm_detaches_every_program() {
    if !privileged("sigterm_detaches_every_program") {
        return;
    }
    let exporter = Exporter::start();
    let attached = loaded_programs();
    for program in PROGRAMS {
        assert!(
            attached.contains(program),
            "{program} is loaded while running"
        );
    }
    assert_eq!(exporter.get("/-/healthy").expect("healthy").0, 200);
    assert_eq!(exporter.get("/-/ready").expect("ready").0, 200);
    assert_eq!(exporter.get("/nope").expect("404").0, 404);

    let log_before_stop = exporter.log();
    let status = exporter.stop();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{log_before_stop}"
    );
    let after = loaded_programs();
    for program in PROGRAMS {
        assert!(
            !after.contains(program),
            "{program} still loaded after SIGTERM:\n{after}"
        );
    }
}

#[test]
fn privileged_busy_port_fails_fast_with_a_clear_message() {
    if !privileged("busy_port_fails_fast_with_a_clear_message") {
        return;
    }
    // Earlier tests' daemons may still be being released.
    assert_eq!(any_loaded(), None, "no daemon running before the test");
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
        !loaded_programs().contains("tcp_state_chang"),
        "nothing loaded when it cannot serve"
    );
}
