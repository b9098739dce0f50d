//! The endpoint holds up against abuse: thousands of malformed requests, oversized headers,
//! slowloris and slow-read runs of slowhttptest with more connections than the endpoint keeps
//! open, while normal scrapes keep answering in time and memory stays put.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;

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

/// How long a scrape may take before the test counts it as not served. The property is
/// "scrapes keep being served while the abuse goes on"; this bound only keeps a hung scrape
/// from hanging the test, and is generous so that a busy two-core machine does not fail it
/// (the latencies measured are printed, and in docs/security.md).
const SCRAPE_BOUND: Duration = Duration::from_secs(15);

/// A scrape that must be answered 200 while the abuse goes on; how long it took.
fn scrape_in_time(exporter: &Exporter) -> Duration {
    let started = Instant::now();
    let (status, body) = exporter
        .request("/metrics", None, Some(SCRAPE_BOUND))
        .expect("the scrape is answered");
    assert_eq!(status, 200);
    assert!(body.contains("port_monitor_build_info"));
    started.elapsed()
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
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"BREW /pot HTCPCP/1.0\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ];
    for round in 0..MALFORMED_REQUESTS {
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

    // slowhttptest: more trickling connections than the endpoint keeps open, then clients
    // that ask for /metrics and read the answer a byte at a time.
    let slowloris = slowhttptest(&exporter, &["-H", "-c", "1000", "-r", "500", "-i", "1"]);
    let slow_read = slowhttptest(
        &exporter,
        &[
            "-X", "-c", "600", "-r", "300", "-k", "10", "-w", "1", "-y", "16", "-n", "3", "-z", "1",
        ],
    );
    scrape_in_time(&exporter);

    // The allocator keeps the peak it reached, about 12 MiB for the ~1,100 connections open
    // at once during the slowhttptest runs (hyper's buffers); repeated attacks stay at that
    // peak (docs/security.md). A leak per request or connection would be far past the bound.
    let after = resident_kib(exporter.pid());
    assert!(
        after < before + 24 * 1024,
        "memory after the abuse: {after} kiB, before: {before} kiB"
    );
    println!(
        "http abuse: {MALFORMED_REQUESTS} malformed requests, 1 oversized head, 300 slowloris connections by hand; \
         slowhttptest slowloris {slowloris}; slow read {slow_read}; RSS {before} -> {after} kiB"
    );
}

const MALFORMED_REQUESTS: usize = 3000;

/// Seconds each slowhttptest run lasts.
const SLOWHTTPTEST_SECONDS: u64 = 12;

/// Runs slowhttptest with `mode` against `/metrics`, scraping twice a second while it runs:
/// every scrape must answer in time. Returns what slowhttptest reached, for the record.
fn slowhttptest(exporter: &Exporter, mode: &[&str]) -> String {
    let report = std::env::temp_dir().join(format!("pm-slowhttptest-{}", std::process::id()));
    let mut attack = Command::new("slowhttptest")
        .args(mode)
        .args([
            "-l",
            &SLOWHTTPTEST_SECONDS.to_string(),
            "-p",
            "2",
            "-g",
            "-o",
        ])
        .arg(&report)
        .arg("-u")
        .arg(format!("http://{}/metrics", exporter.address))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("slowhttptest (Debian package slowhttptest; cargo xtask test installs it)");
    let deadline = Instant::now() + Duration::from_secs(SLOWHTTPTEST_SECONDS + 30);
    let mut scrapes = 0;
    let mut slowest = Duration::ZERO;
    while attack.try_wait().expect("slowhttptest status").is_none() {
        assert!(Instant::now() < deadline, "slowhttptest did not end");
        slowest = slowest.max(scrape_in_time(exporter));
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its CSV: seconds, closed, pending, connected, target connections.
    let csv_path = report.with_extension("csv");
    let csv = std::fs::read_to_string(&csv_path).expect("slowhttptest CSV report");
    let peak = csv
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').nth(3)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let _ = std::fs::remove_file(csv_path);
    let _ = std::fs::remove_file(report.with_extension("html"));
    assert!(peak >= 100, "slowhttptest never got going: {csv}");
    format!(
        "{} ({peak} connections open at the peak, {scrapes} scrapes answered, the slowest in {} ms)",
        mode.join(" "),
        slowest.as_millis()
    )
}

/// Connections flooding the endpoint with fresh wrong passwords, each a keep-alive connection
/// sending request after request: more than the endpoint keeps open.
const FLOOD_CONNECTIONS: usize = 520;

/// One flooding connection: a fresh wrong password on every request, until `stop`.
fn flood(address: &str, worker: usize, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut answers = 0;
    let mut attempt = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(address) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        // Keep-alive: the same connection until the server closes it.
        loop {
            attempt += 1;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("prometheus:wrong-{worker}-{attempt}"));
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_err() {
                break;
            }
            let mut buffer = [0; 4096];
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                // The refusals are short: one read holds the whole answer.
                Ok(_) => answers += 1,
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
        }
    }
    answers
}

/// With basic auth on, a flood of connections sending wrong passwords (each costing a bcrypt
/// check) cannot keep the real scraper out: every right-password scrape is answered 200 while
/// it goes on. Before, those connections counted as being answered while they waited for a
/// bcrypt slot, and could not be closed to make room.
#[test]
fn privileged_a_wrong_password_flood_does_not_keep_the_scraper_out() {
    if !privileged("a_wrong_password_flood_does_not_keep_the_scraper_out") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("port-monitor-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let hash = bcrypt::hash("s3cret", 10).expect("bcrypt");
    let web_config = dir.join("web.yml");
    std::fs::write(
        &web_config,
        format!("basic_auth_users:\n  prometheus: {hash}\n"),
    )
    .expect("web config");
    let exporter = Exporter::start_with(&[&format!("--web.config.file={}", web_config.display())]);
    let right = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:s3cret")
    );
    let scrape = || {
        let started = Instant::now();
        let answer = exporter.request("/metrics", Some(&right), Some(SCRAPE_BOUND));
        (answer.map(|(status, _)| status), started.elapsed())
    };
    assert_eq!(scrape().0.expect("scrape before the flood"), 200);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..FLOOD_CONNECTIONS)
        .map(|worker| {
            let (address, stop) = (exporter.address.clone(), std::sync::Arc::clone(&stop));
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || flood(&address, worker, &stop))
                .expect("flood thread")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        outcomes.push(scrape());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood_answers: u64 = workers
        .into_iter()
        .map(|worker| worker.join().expect("flood thread"))
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(status, _)| !matches!(status, Ok(200)))
        .collect();
    let slowest = outcomes
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    println!(
        "wrong-password flood: {FLOOD_CONNECTIONS} connections, {flood_answers} refusals answered; \
         {} of {} right-password scrapes answered 200, the slowest in {} ms",
        outcomes.len() - failed.len(),
        outcomes.len(),
        slowest.as_millis()
    );
    assert!(
        failed.is_empty(),
        "scrapes not served during the flood: {failed:?}"
    );
    assert!(flood_answers > 0, "the flood was answered (401 or 429)");
}
