//! `port-monitor status` and `top`, run by hand on a node: the JSON's counts equal what `ss`
//! lists in a test namespace; the daemon's counters and its TLS and basic auth are honoured;
//! `top`, driven in tmux as a person would, shows the namespace, answers keys and gives the
//! terminal back as it found it.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::{
    support::{Exporter, SsTruth, TestNetns, Tmux, privileged, sockets::run_without},
    tls_auth::{CA, SERVER, make_certificate},
};

/// `port-monitor status --output json` with `args`: the parsed JSON and the text of stderr.
fn status_json(args: &[&str]) -> (Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .args(["status", "--output", "json"])
        .args(args)
        .output()
        .expect("run status");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "status failed: {stderr}");
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "status printed no JSON ({error}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (json, stderr)
}

/// The entry of `netns` in the status JSON.
fn entry<'a>(json: &'a Value, netns: &TestNetns) -> &'a Value {
    json["namespaces"]
        .as_array()
        .expect("a namespaces list")
        .iter()
        .find(|entry| entry["netns"] == netns.id)
        .unwrap_or_else(|| panic!("namespace {} not in {json:#}", netns.id))
}

/// The destination `port` on 127.0.0.1 in a namespace's entry.
fn destination(entry: &Value, port: u16) -> &Value {
    entry["destinations"]
        .as_array()
        .expect("a destinations list")
        .iter()
        .find(|destination| {
            destination["dst_addr"] == "127.0.0.1" && destination["dst_port"] == port
        })
        .unwrap_or_else(|| panic!("no destination 127.0.0.1:{port} in {entry:#}"))
}

/// An address where nothing listens: status must say no daemon answered, and still show all.
fn nobody_listening() -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("free port");
    let address = listener.local_addr().expect("address");
    format!("--web.listen-address={address}")
}

/// A 100-port range: twelve connections held to :9000, five to :9001 closed by the client
/// first (its side waits in `TIME_WAIT`), and a connected UDP socket.
#[test]
fn privileged_status_json_counts_equal_ss() {
    if !privileged("status_json_counts_equal_ss") {
        return;
    }
    let netns = TestNetns::new("status");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40099");
    let _held = netns.run(|| {
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 9001)).expect("listen");
        let streams: Vec<TcpStream> = (0..12)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect"))
            .collect();
        for _ in 0..5 {
            let client = TcpStream::connect((Ipv4Addr::LOCALHOST, 9001)).expect("connect");
            let (server, _) = closed.accept().expect("accept");
            drop(client);
            std::thread::sleep(Duration::from_millis(20));
            drop(server);
        }
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("udp");
        udp.connect((Ipv4Addr::LOCALHOST, 53)).expect("udp connect");
        (busy, closed, streams, udp)
    });

    let (json, stderr) = status_json(&[&nobody_listening()]);
    let truth = SsTruth::read(&netns.name);
    let entry = entry(&json, &netns);
    assert_eq!(entry["name"], netns.name.as_str());
    assert_eq!(entry["ephemeral_capacity"], 100);
    assert_eq!(
        entry["time_wait"],
        truth.sockets("tcp", "time_wait"),
        "{entry:#}"
    );
    assert_eq!(
        entry["time_wait"], 5,
        "the client side of each closed connection"
    );
    assert_eq!(
        entry["ephemeral_in_use"],
        truth.ports_in("tcp", 40000, 40099),
        "{entry:#}"
    );
    // Linux gives a port held toward :9000 to a connect toward :9001 too (another 4-tuple).
    assert!(entry["ephemeral_in_use"].as_u64() >= Some(12), "{entry:#}");
    assert_eq!(
        entry["ephemeral_in_use_udp"],
        truth.ports_in("udp", 40000, 40099)
    );
    for (port, held) in [(9000, 12), (9001, 5)] {
        let shown = destination(entry, port);
        let peer = format!("127.0.0.1:{port}");
        assert_eq!(
            shown["ports_in_use"],
            truth.ports_toward("tcp", &peer, 40000, 40099),
            "{shown:#}"
        );
        assert_eq!(shown["ports_in_use"], held);
    }
    // Nothing else holds a port of the range: twelve of a hundred, toward :9000.
    let ratio = destination(entry, 9000)["utilization_ratio"]
        .as_f64()
        .expect("a ratio");
    assert!((ratio - 0.12).abs() < 1e-9, "{ratio}");
    assert_eq!(json["daemon"]["answered"], false);
    let said = json["daemon"]["error"].as_str().expect("why not");
    assert!(said.contains("no daemon answers"), "{said}");
    assert!(!stderr.contains("cannot snapshot"), "{stderr}");
}

/// Text for people: the namespace's row and its busiest destination, and the one line that
/// says no daemon answered.
#[test]
fn privileged_status_text_shows_the_namespace_and_says_no_daemon_answered() {
    if !privileged("status_text_shows_the_namespace_and_says_no_daemon_answered") {
        return;
    }
    let netns = TestNetns::new("statustext");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let _held = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let streams: Vec<TcpStream> = (0..8)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect"))
            .collect();
        (listener, streams)
    });
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .args(["status", &nobody_listening()])
        .output()
        .expect("run status");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let row = text
        .lines()
        .find(|line| line.starts_with(&netns.label()))
        .unwrap_or_else(|| panic!("no row for {}:\n{text}", netns.id));
    for expected in [netns.name.as_str(), "40000-40009", "80.0%", "0.80"] {
        assert!(row.contains(expected), "{expected:?} in {row:?}");
    }
    assert!(
        text.contains("-> 127.0.0.1:9000 from 127.0.0.1"),
        "the destination below its row:\n{text}"
    );
    let daemon: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("daemon:"))
        .collect();
    assert_eq!(daemon.len(), 1, "{text}");
    assert!(daemon[0].contains("no daemon answers"), "{text}");
}

/// Without the capabilities that entering namespaces needs, status says which are missing
/// and how to run it, instead of showing an empty node.
#[test]
fn privileged_status_names_the_missing_capabilities() {
    if !privileged("status_names_the_missing_capabilities") {
        return;
    }
    let output = run_without("sys_admin,sys_ptrace", &["status"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "status ran without them: {stderr}"
    );
    for expected in ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "run it as root"] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}

/// `top` piped into a file has no screen to draw on: it says what to use instead, rather
/// than writing escape codes or failing silently.
#[test]
fn privileged_top_without_a_terminal_points_to_json() {
    if !privileged("top_without_a_terminal_points_to_json") {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
        .args(["top", &nobody_listening()])
        .output()
        .expect("run top");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing drawn");
    assert!(stderr.contains("status --output json"), "{stderr}");
}

/// With a daemon on the node, the calls it saw fail are shown with the namespace, and the
/// last exhaustion names the process that hit it.
#[test]
fn privileged_status_shows_what_the_daemon_counted() {
    if !privileged("status_shows_what_the_daemon_counted") {
        return;
    }
    let netns = TestNetns::new("statusdaemon");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let exporter = Exporter::start();
    let _held = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let mut streams = Vec::new();
        loop {
            match TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)) {
                Ok(stream) => streams.push(stream),
                Err(error) if error.kind() == ErrorKind::AddrNotAvailable => break,
                Err(error) => panic!("unexpected connect error: {error}"),
            }
            assert!(streams.len() <= 10, "more connections than ports");
        }
        (listener, streams)
    });
    let exhaustion = [
        ("netns", netns.label()),
        ("protocol", "tcp".to_owned()),
        ("operation", "connect".to_owned()),
    ];
    let labels: Vec<(&str, &str)> = exhaustion.iter().map(|(k, v)| (*k, v.as_str())).collect();
    exporter.wait_until(Duration::from_secs(10), |m| {
        m.value("port_monitor_port_exhaustion_total", &labels) >= 1.0
            && m.text.contains("kind=\"port_exhaustion\"")
    });

    let (json, _) = status_json(&[&format!("--web.listen-address={}", exporter.address)]);
    assert_eq!(json["daemon"]["answered"], true, "{:#}", json["daemon"]);
    let counted = &entry(&json, &netns)["daemon"];
    assert_eq!(counted["port_exhaustion"]["tcp connect"], 1, "{counted:#}");
    let last = counted["last_anomalies"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|last| last["kind"] == "port_exhaustion")
        .unwrap_or_else(|| panic!("no last exhaustion in {counted:#}"));
    assert_eq!(last["pid"], std::process::id(), "{last:#}");
    assert!(
        last["subject"]
            .as_str()
            .is_some_and(|subject| subject.ends_with("127.0.0.1:9000")),
        "{last:#}"
    );
    assert_eq!(entry(&json, &netns)["utilization_max_ratio"], 1.0);
}

/// A daemon behind TLS and basic auth: status trusts the certificate named in the daemon's
/// own web configuration (or a CA given), sends the user's password from a file, and says
/// which flag is missing when it cannot get in, while still showing the snapshot.
#[test]
fn privileged_status_reaches_a_daemon_behind_tls_and_basic_auth() {
    if !privileged("status_reaches_a_daemon_behind_tls_and_basic_auth") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("port-monitor-status-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    // A server certificate from a CA, as a node's would be.
    make_certificate(&dir, "ca", "/CN=port-monitor-test-ca", None, CA);
    let server = [SERVER, &["basicConstraints=critical,CA:FALSE"]].concat();
    make_certificate(&dir, "server", "/CN=port-monitor-test", Some("ca"), &server);
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let web_config = dir.join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .expect("write web config");
    let password = write(&dir, "password", "s3cret\n");
    let wrong = write(&dir, "wrong", "guess\n");
    let web_config_flag = format!("--web.config.file={}", web_config.display());
    let exporter = Exporter::start_tls(&[&web_config_flag]);
    let listen = format!("--web.listen-address={}", exporter.address);
    let daemon = |args: &[&str]| {
        let (json, _) = status_json(&[&[listen.as_str()], args].concat());
        assert!(
            !json["namespaces"].as_array().expect("a list").is_empty(),
            "the snapshot is shown either way"
        );
        json["daemon"].clone()
    };
    let user = "--status.username=prometheus";
    let password_file = format!("--status.password-file={}", password.display());

    let answered = daemon(&[&web_config_flag, user, &password_file]);
    assert_eq!(answered["answered"], true, "{answered:#}");
    assert!(
        answered["url"]
            .as_str()
            .is_some_and(|url| url.starts_with("https://")),
        "{answered:#}"
    );
    let with_ca = format!("--status.ca-file={}", dir.join("ca.pem").display());
    let answered = daemon(&[&with_ca, user, &password_file]);
    assert_eq!(
        answered["answered"], true,
        "verified against a CA: {answered:#}"
    );

    let wrong_password_file = format!("--status.password-file={}", wrong.display());
    let cases = [
        (vec![web_config_flag.as_str()], "--status.username"),
        (
            vec![web_config_flag.as_str(), user, &wrong_password_file],
            "refused the credentials",
        ),
        // Verified against the CA, the certificate must carry the name asked for.
        (
            vec![
                with_ca.as_str(),
                "--status.server-name=elsewhere.example",
                user,
                password_file.as_str(),
            ],
            "TLS handshake",
        ),
        // Plain HTTP to a TLS endpoint: the hint names the flags that turn TLS on.
        (vec![user, password_file.as_str()], "--web.config.file"),
    ];
    for (args, expected) in cases {
        let refused = daemon(&args);
        assert_eq!(refused["answered"], false, "{args:?}: {refused:#}");
        let error = refused["error"].as_str().expect("why");
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    drop(exporter);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// The row `top` marks as selected.
fn selected_row(screen: &str) -> Option<String> {
    screen
        .lines()
        .find(|line| line.starts_with("> "))
        .map(ToOwned::to_owned)
}

#[test]
fn privileged_top_shows_the_namespace_and_answers_keys() {
    if !privileged("top_shows_the_namespace_and_answers_keys") {
        return;
    }
    let Some(tmux) = Tmux::start() else {
        return;
    };
    let netns = TestNetns::new("top");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let _held = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).expect("listen");
        let streams: Vec<TcpStream> = (0..9)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect"))
            .collect();
        (listener, streams)
    });
    tmux.type_line(&format!(
        "{} top --top.refresh-interval=200ms {}; echo top-exited-$?",
        env!("CARGO_BIN_EXE_port-monitor"),
        nobody_listening()
    ));
    tmux.wait_for("top lists the test namespace", |screen| {
        screen.contains(&netns.name) && screen.contains("sorted by max ratio")
    });

    tmux.press("t");
    tmux.wait_for("t sorts by TIME_WAIT", |screen| {
        screen.contains("sorted by TIME_WAIT") && screen.contains("TIME_WAIT▼")
    });
    tmux.press("r");
    tmux.wait_for("r sorts by max ratio again", |screen| {
        screen.contains("sorted by max ratio") && screen.contains("MAX RATIO▼")
    });

    // Down until the test namespace is selected (other namespaces may be on the node).
    tmux.press("Home");
    let mut moves = 0;
    loop {
        let screen = tmux.screen();
        let selected = selected_row(&screen).unwrap_or_default();
        if selected.contains(&netns.label()) {
            break;
        }
        assert!(moves < 100, "never selected {}:\n{screen}", netns.id);
        tmux.press("Down");
        tmux.wait_for("Down moves the selection", |after| {
            selected_row(after).unwrap_or_default() != selected
        });
        moves += 1;
    }
    tmux.press("Enter");
    let details = tmux.wait_for("Enter shows the namespace's destinations", |screen| {
        screen.contains("DESTINATION") && screen.contains("127.0.0.1:9000 from 127.0.0.1")
    });
    assert!(
        details.contains("ephemeral 40000-40009 (10 ports): 9 TCP ports in use (90.0%)"),
        "{details}"
    );
    tmux.press("Escape");
    tmux.wait_for("Esc goes back to the list", |screen| {
        screen.contains("MAX RATIO▼") && !screen.contains("DESTINATION")
    });

    tmux.press("q");
    tmux.wait_for("q quits with status 0", |screen| {
        screen.contains("top-exited-0")
    });
    // The terminal is back in cooked mode with echo: raw mode was undone.
    tmux.type_line("stty -a; echo stty-done");
    let screen = tmux.wait_for("stty answers", |screen| {
        screen.lines().any(|line| line.trim_end() == "stty-done")
    });
    let flags: Vec<&str> = screen.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(flags.contains(&flag), "{flag} after top:\n{screen}");
    }
}
