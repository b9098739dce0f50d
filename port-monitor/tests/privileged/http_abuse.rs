//! The endpoint holds up against abuse: malformed requests, oversized headers and a slowloris
//! of hundreds of connections, while normal scrapes keep answering in time and memory stays
//! put.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::support::{Exporter, privileged};

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS kiB")
}

/// Sends raw bytes and returns the status line of the answer (empty if the server closed).
fn raw(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A scrape that must answer 200 within two seconds.
fn scrape_in_time(exporter: &Exporter) {
    let started = Instant::now();
    let (status, body) = exporter.get("/metrics").expect("scrape");
    assert_eq!(status, 200);
    assert!(body.contains("port_monitor_build_info"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "scrape took {:?}",
        started.elapsed()
    );
}

#[test]
fn privileged_abuse_does_not_starve_scrapes() {
    if !privileged("abuse_does_not_starve_scrapes") {
        return;
    }
    let exporter = Exporter::start();
    scrape_in_time(&exporter);
    let before = resident_kib(exporter.pid());

    // Malformed requests: each refused, none crashes anything.
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"BREW /pot HTCPCP/1.0\r\n\r\n",
    ];
    for round in 0..250 {
        let status = raw(&exporter.address, garbage[round % garbage.len()]);
        assert!(!status.contains(" 200 "), "garbage got {status}");
    }
    // A head far larger than any scrape's.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let status = raw(&exporter.address, huge.as_bytes());
    assert!(
        status.is_empty() || status.contains(" 431 "),
        "oversized head got {status:?}"
    );
    scrape_in_time(&exporter);

    // Slowloris: 300 connections trickling a header, one byte a second.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(&exporter.address).expect("connect");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("start");
            stream
        })
        .collect();
    for _ in 0..3 {
        for stream in &mut slow {
            let _ = stream.write_all(b"a");
        }
        scrape_in_time(&exporter);
        std::thread::sleep(Duration::from_secs(1));
    }
    // The server hangs up on them once the header timeout passes.
    std::thread::sleep(Duration::from_secs(4));
    let mut closed = 0;
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut bytes = [0; 512];
        // Ok: an answer or end of file, from the server; Err: still waiting (timed out).
        if stream.read(&mut bytes).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        slow.len(),
        "every slow connection was answered or closed by the server"
    );
    drop(slow);
    scrape_in_time(&exporter);

    let after = resident_kib(exporter.pid());
    assert!(
        after < before + 16 * 1024,
        "memory after the abuse: {after} kiB, before: {before} kiB"
    );
    println!(
        "http abuse: 250 malformed requests, 1 oversized head, 300 slowloris connections; RSS {before} -> {after} kiB"
    );
}
