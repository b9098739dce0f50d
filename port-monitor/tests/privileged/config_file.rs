//! The configuration file is read at start-up, and a bad one is refused with the field named.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use crate::support::{Exporter, TestNetns, privileged};

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("port-monitor-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn privileged_the_config_file_sets_how_many_destinations_get_series() {
    if !privileged("the_config_file_sets_how_many_destinations_get_series") {
        return;
    }
    let path = write_config(
        "top1",
        "[destinations]\ntop = 1\nsource_address_label = false\n[anomalies]\nnear_exhaustion_ratio = 0.5\n",
    );
    let netns = TestNetns::new("conf");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start_with(&[&format!("--config.file={}", path.display())]);
    // Six ports toward :9000 (60%, over the configured 50%), two toward :9001.
    let held = netns.run(|| {
        let listeners = [9000, 9001]
            .map(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("listen"));
        let streams: Vec<_> = [9000; 6]
            .into_iter()
            .chain([9001; 2])
            .map(|port| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect"))
            .collect();
        (listeners, streams)
    });
    let id = netns.label();
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get(
            "port_monitor_anomalies_total",
            &[("netns", &id), ("kind", "near_exhaustion")],
        ) == Some(1.0)
    });
    let series: Vec<&str> = metrics
        .text
        .lines()
        .filter(|line| {
            line.starts_with(&format!(
                "port_monitor_destination_ports_in_use{{netns=\"{id}\""
            ))
        })
        .collect();
    assert_eq!(series.len(), 1, "destinations.top = 1: {series:?}");
    assert!(
        series[0].contains("dst_port=\"9000\"") && series[0].ends_with(" 6"),
        "{series:?}"
    );
    assert!(
        series[0].contains("src_addr=\"\""),
        "source address left out: {series:?}"
    );
    drop(held);
    let _ = std::fs::remove_file(path);
}

#[test]
fn privileged_a_bad_config_file_is_refused_naming_the_field() {
    if !privileged("a_bad_config_file_is_refused_naming_the_field") {
        return;
    }
    let path = write_config("bad", "[anomalies]\ntime_wait_share = 2\n");
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .arg(format!("--config.file={}", path.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .expect("run port-monitor");
    let _ = std::fs::remove_file(&path);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("anomalies.time_wait_share = 2"), "{stderr}");
    assert!(stderr.contains("--config.file"), "{stderr}");
}
