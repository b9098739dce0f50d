//! TLS and basic auth from an exporter-toolkit web configuration file, checked with curl:
//! the right password is served, a wrong or missing one refused, plain HTTP refused.

use std::{path::Path, process::Command};

use crate::support::{Exporter, privileged};

/// A self-signed certificate for 127.0.0.1, valid for a day, made with openssl.
fn make_certificate(dir: &Path) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=port-monitor-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// curl's HTTP status for `url` ("000" when no HTTP answer came at all) and the body.
fn curl(dir: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let body = dir.join("body");
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "10", "--cacert"])
        .arg(dir.join("cert.pem"))
        .arg("--output")
        .arg(&body)
        .args(["--write-out", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = std::fs::read_to_string(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    (String::from_utf8_lossy(&output.stdout).into_owned(), text)
}

#[test]
fn privileged_tls_and_basic_auth_guard_the_metrics() {
    if !privileged("tls_and_basic_auth_guard_the_metrics") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("port-monitor-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    make_certificate(&dir);
    let hash = bcrypt::hash("s3cret", 10).expect("bcrypt");
    // Relative paths: resolved against the file's directory, as the exporter-toolkit does.
    let web_config = dir.join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .expect("write web config");
    let exporter = Exporter::start_tls(&[&format!("--web.config.file={}", web_config.display())]);
    let https = |path: &str| format!("https://{}{path}", exporter.address);

    let (status, body) = curl(&dir, &https("/metrics"), &["--user", "prometheus:s3cret"]);
    assert_eq!(status, "200", "right password");
    assert!(body.contains("port_monitor_build_info"), "{body}");

    let (status, _) = curl(&dir, &https("/metrics"), &["--user", "prometheus:wrong"]);
    assert_eq!(status, "401", "wrong password");
    let (status, _) = curl(&dir, &https("/metrics"), &["--user", "nobody:s3cret"]);
    assert_eq!(status, "401", "unknown user");
    let (status, _) = curl(&dir, &https("/metrics"), &[]);
    assert_eq!(status, "401", "no credentials");
    // Probes need no password, but still TLS.
    let (status, _) = curl(&dir, &https("/-/healthy"), &[]);
    assert_eq!(status, "200", "health without credentials");

    let plain = format!("http://{}/metrics", exporter.address);
    let (status, body) = curl(&dir, &plain, &["--user", "prometheus:s3cret"]);
    assert_eq!(status, "000", "plain HTTP got an answer: {body}");
    // The server lives on after all of that.
    let (status, _) = curl(&dir, &https("/metrics"), &["--user", "prometheus:s3cret"]);
    assert_eq!(status, "200", "served after the refusals");

    drop(exporter);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn privileged_a_bad_web_config_stops_the_start_with_the_reason() {
    if !privileged("a_bad_web_config_stops_the_start_with_the_reason") {
        return;
    }
    let path = std::env::temp_dir().join(format!("port-monitor-badweb-{}.yml", std::process::id()));
    std::fs::write(&path, "basic_auth_users:\n  prometheus: not-a-hash\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .args(["--web.listen-address=127.0.0.1:0"])
        .arg(format!("--web.config.file={}", path.display()))
        .output()
        .expect("run port-monitor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--web.config.file") && stderr.contains("not a bcrypt hash"),
        "{stderr}"
    );
    std::fs::remove_file(&path).expect("cleanup");
}
