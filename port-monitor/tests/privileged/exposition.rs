//! The exposition format of a real scrape passes `promtool check metrics`.

use std::{
    io::Write as _,
    net::{Ipv4Addr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::{Exporter, TestNetns, privileged};

#[test]
fn privileged_scrape_passes_promtool_check_metrics() {
    if !privileged("scrape_passes_promtool_check_metrics") {
        return;
    }
    let netns = TestNetns::new("promtool");
    let id = netns.label();
    let exporter = Exporter::start();
    // Some failures, so that every family has series.
    netns.run(|| {
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, 1));
    });
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.value(
            "port_monitor_connect_errors_total",
            &[("netns", &id), ("errno", "ECONNREFUSED")],
        ) == 1.0
    });
    assert_eq!(
        metrics.value(
            "port_monitor_connect_errors_total",
            &[("netns", &id), ("errno", "ECONNREFUSED")]
        ),
        1.0,
        "{}",
        metrics.text
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by cargo xtask test");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.text.as_bytes())
        .expect("feed promtool");
    let output = promtool.wait_with_output().expect("promtool ran");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        metrics.get("process_resident_memory_bytes", &[]).is_some(),
        "process metrics"
    );
    assert!(
        metrics
            .get(
                "port_monitor_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            )
            .is_some()
    );
}

#[test]
fn privileged_scrapes_are_gzipped_when_asked() {
    if !privileged("scrapes_are_gzipped_when_asked") {
        return;
    }
    let exporter = Exporter::start();
    let mut response = ureq::get(&format!("http://{}/metrics", exporter.address))
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("scrape");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .map(ureq::http::HeaderValue::as_bytes),
        Some(&b"gzip"[..])
    );
    let compressed = response.body_mut().read_to_vec().expect("body");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut text,
    )
    .expect("valid gzip");
    assert!(text.contains("port_monitor_build_info"), "{text}");
    assert!(
        compressed.len() * 3 < text.len(),
        "compressed: {} of {} bytes",
        compressed.len(),
        text.len()
    );
}
