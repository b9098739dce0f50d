//! The exposition format of a real scrape passes `promtool check metrics`, whatever bytes the
//! processes it names put in their names.

use std::{
    io::Write as _,
    net::{Ipv4Addr, TcpListener, TcpStream},
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

    assert_promtool_accepts(&metrics.text);
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

/// `promtool check metrics` accepts `text`.
fn assert_promtool_accepts(text: &str) {
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
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = promtool.wait_with_output().expect("promtool ran");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A thread name with a quote, a backslash, a newline and a byte that is not UTF-8: what a
/// hostile or careless process can call itself (15 bytes at most).
const HOSTILE_NAME: &[u8] = b"a\"b\\c\nd\xff\0";

#[test]
fn privileged_a_hostile_process_name_cannot_break_the_exposition() {
    if !privileged("a_hostile_process_name_cannot_break_the_exposition") {
        return;
    }
    let netns = TestNetns::new("hostile");
    let id = netns.label();
    // Two ephemeral ports: the third connection to the same destination runs out of ports,
    // in connect(), where the kernel sees the calling thread and its name.
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    let exporter = Exporter::start();
    let (_listener, _connected, third) = netns.run(|| {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        let named = unsafe { libc::prctl(libc::PR_SET_NAME, HOSTILE_NAME.as_ptr()) };
        assert_eq!(named, 0, "prctl(PR_SET_NAME)");
        // Outside the ephemeral range, so that the listener takes none of its two ports.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 7200)).expect("listener");
        let connected = [
            TcpStream::connect((Ipv4Addr::LOCALHOST, 7200)).expect("first port"),
            TcpStream::connect((Ipv4Addr::LOCALHOST, 7200)).expect("second port"),
        ];
        let third = TcpStream::connect((Ipv4Addr::LOCALHOST, 7200)).map(drop);
        (listener, connected, third)
    });
    assert_eq!(
        third.expect_err("out of ports").kind(),
        std::io::ErrorKind::AddrNotAvailable
    );
    // The label value as the text format writes it: quote, backslash and newline escaped,
    // the invalid byte replaced by U+FFFD.
    let escaped = "comm=\"a\\\"b\\\\c\\nd\u{FFFD}\"";
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| m.text.contains(escaped));
    // The namespace can have other anomalies (near_exhaustion, on a slower kernel, comes
    // first): the line meant is the exhaustion's.
    let line = metrics
        .text
        .lines()
        .find(|line| {
            line.starts_with("port_monitor_anomaly_last_info")
                && line.contains(&id)
                && line.contains("kind=\"port_exhaustion\"")
        })
        .unwrap_or_default();
    assert!(
        line.contains(escaped),
        "the name, escaped, in the anomaly's labels: {line:?}\n{}",
        metrics.text
    );
    assert_promtool_accepts(&metrics.text);
}
