//! TLS, client certificates and basic auth from an exporter-toolkit web configuration file,
//! checked with curl: the right password is served, a wrong or missing one refused, plain
//! HTTP refused; a client certificate from the configured CA is served, none or one from
//! elsewhere refused in the handshake.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{Exporter, privileged};

/// Extensions of the server's certificate: curl checks the address it connects to.
pub const SERVER: &[&str] = &["subjectAltName=IP:127.0.0.1"];
/// Extensions of a CA that signs client certificates.
pub const CA: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign",
];
/// Extensions of a client certificate: rustls refuses a CA or a server certificate as one.
const CLIENT: &[&str] = &[
    "basicConstraints=critical,CA:FALSE",
    "extendedKeyUsage=clientAuth",
];

/// An EC certificate valid for a day, made with openssl: `<name>.pem` and its key
/// `<name>-key.pem` in `dir`, self-signed, or signed by `issuer` (the name of one made before).
pub fn make_certificate(
    dir: &Path,
    name: &str,
    subject: &str,
    issuer: Option<&str>,
    extensions: &[&str],
) {
    let mut command = Command::new("openssl");
    command
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
        ])
        .arg(format!("{name}-key.pem"))
        .arg("-out")
        .arg(format!("{name}.pem"))
        .args(["-days", "1", "-subj", subject]);
    if let Some(issuer) = issuer {
        command
            .arg("-CA")
            .arg(format!("{issuer}.pem"))
            .arg("-CAkey")
            .arg(format!("{issuer}-key.pem"));
    }
    for extension in extensions {
        command.args(["-addext", extension]);
    }
    let output = command.output().expect("run openssl");
    assert!(
        output.status.success(),
        "openssl ({name}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// curl's HTTP status for `url` ("000" when no HTTP answer came at all) and the body.
fn curl(dir: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let body = dir.join("body");
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "10", "--cacert"])
        .arg(dir.join("server.pem"))
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
    make_certificate(&dir, "server", "/CN=port-monitor-test", None, SERVER);
    let hash = bcrypt::hash("s3cret", 10).expect("bcrypt");
    // Relative paths: resolved against the file's directory, as the exporter-toolkit does.
    let web_config = dir.join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\nbasic_auth_users:\n  prometheus: {hash}\n"
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
fn privileged_client_certificates_only_from_the_configured_ca() {
    if !privileged("client_certificates_only_from_the_configured_ca") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("port-monitor-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    make_certificate(&dir, "server", "/CN=port-monitor-test", None, SERVER);
    make_certificate(&dir, "ca", "/CN=port-monitor-test-ca", None, CA);
    make_certificate(&dir, "client", "/CN=prometheus", Some("ca"), CLIENT);
    // The same name and usage, but not from the CA: what anyone without the CA's key can make.
    make_certificate(&dir, "impostor", "/CN=prometheus", None, CLIENT);
    let web_config = dir.join("web.yml");
    std::fs::write(
        &web_config,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    )
    .expect("write web config");
    let exporter = Exporter::start_tls_with_client_cert(
        &[&format!("--web.config.file={}", web_config.display())],
        &dir.join("client.pem"),
        &dir.join("client-key.pem"),
    );
    let url = format!("https://{}/metrics", exporter.address);
    let presenting = |name: &str| {
        let cert = dir.join(format!("{name}.pem")).display().to_string();
        let key = dir.join(format!("{name}-key.pem")).display().to_string();
        curl(&dir, &url, &["--cert", &cert, "--key", &key])
    };

    let (status, body) = presenting("client");
    assert_eq!(status, "200", "certificate from the CA");
    assert!(body.contains("port_monitor_build_info"), "{body}");
    // Refused in the handshake: no HTTP answer at all.
    let (status, body) = curl(&dir, &url, &[]);
    assert_eq!(status, "000", "no client certificate got an answer: {body}");
    let (status, body) = presenting("impostor");
    assert_eq!(
        status, "000",
        "certificate from elsewhere got an answer: {body}"
    );
    let (status, _) = presenting("client");
    assert_eq!(status, "200", "served after the refusals");
    // Refused for the intended reasons (rustls's words), not, say, a curl that could not
    // read the key. The server logs a moment after the client sees the alert.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reasons = ["peer sent no certificates", "UnknownIssuer"];
    while !reasons.iter().all(|reason| exporter.log().contains(reason)) {
        assert!(
            Instant::now() < deadline,
            "handshake failures not logged with {reasons:?}:\n{}",
            exporter.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    drop(exporter);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn privileged_a_bad_web_config_stops_the_start_with_the_reason() {
    if !privileged("a_bad_web_config_stops_the_start_with_the_reason") {
        return;
    }
    let path = std::env::temp_dir().join(format!("port-monitor-badweb-{}.yml", std::process::id()));
    let cases = [
        (
            "basic_auth_users:\n  prometheus: not-a-hash\n",
            "not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAnyClientCert\n",
            "use RequireAndVerifyClientCert",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).expect("write");
        let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
            .args(["--web.listen-address=127.0.0.1:0"])
            .arg(format!("--web.config.file={}", path.display()))
            .output()
            .expect("run port-monitor");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text:?}");
        assert!(
            stderr.contains("--web.config.file") && stderr.contains(expected),
            "{text:?}: {stderr}"
        );
    }
    std::fs::remove_file(&path).expect("cleanup");
}
