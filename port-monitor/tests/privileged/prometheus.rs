//! A real Prometheus server scraping a running port-monitor loads the alerting rules and
//! evaluates each without error, accepts every dashboard query, and the core panels and the
//! series the alerts stand on have data.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, connect, socket},
};

use crate::support::{
    Exporter, TestNetns, privileged,
    routed::{self, Routed},
};

/// A Prometheus server on loopback, scraping `target` every second, with the project's
/// alerting rules loaded. Stopped and its data removed on drop.
struct Prometheus {
    child: Child,
    address: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("port-monitor-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("data directory");
        let rules = rules_file();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: port-monitor\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) is installed by cargo xtask test");
        Self {
            child,
            address: format!("127.0.0.1:{port}"),
            dir,
        }
    }

    /// GETs an API path; returns the body.
    fn get(&self, path: &str, query: Option<&str>) -> String {
        let url = format!("http://{}{path}", self.address);
        let mut request = ureq::get(&url);
        if let Some(query) = query {
            request = request.query("query", query);
        }
        request
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .unwrap_or_default()
    }

    /// Runs an instant query; returns the API's answer and the number of series in it.
    fn query(&self, promql: &str) -> (String, usize) {
        let body = self.get("/api/v1/query", Some(promql));
        let series = body.matches("\"metric\":").count();
        (body, series)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn privileged_alert_queries_run_on_a_real_prometheus() {
    if !privileged("alert_queries_run_on_a_real_prometheus") {
        return;
    }
    let (netns, held) = a_namespace_with_traffic();
    let config = std::env::temp_dir().join(format!(
        "port-monitor-prometheus-nat-{}.toml",
        std::process::id()
    ));
    std::fs::write(&config, "[nat]\nport_range = \"40000-40001\"\n").expect("write config");
    let exporter = Exporter::start_with(&[&format!("--config.file={}", config.display())]);
    fail_in(&netns);
    // A NAT out of ports and its client timing out: the NAT and conntrack panels have data.
    let nat = a_nat_out_of_ports();
    let prometheus = Prometheus::start(&exporter.address);
    // Wait for a few scrapes.
    let deadline = Instant::now() + Duration::from_mins(1);
    while prometheus.query("port_monitor_build_info").1 == 0 {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped port-monitor"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Prometheus loaded the rules file and evaluates every rule without error.
    let alerts = std::fs::read_to_string(rules_file())
        .expect("rules file")
        .matches("- alert:")
        .count();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let rules = prometheus.get("/api/v1/rules", None);
        if rules.matches("\"health\":\"ok\"").count() == alerts || Instant::now() >= deadline {
            break rules;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        rules.matches("\"type\":\"alerting\"").count(),
        alerts,
        "every alerting rule of the file loaded:\n{rules}"
    );
    assert_eq!(
        rules.matches("\"health\":\"ok\"").count(),
        alerts,
        "each evaluates without error:\n{rules}"
    );
    // rate() needs two samples of a series: wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("rate(port_monitor_snapshots_total[5m])").1 == 0 {
        assert!(Instant::now() < deadline, "no second scrape");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every dashboard query is valid PromQL; the overview and destination panels have data
    // (the workload panels need pods, which this machine does not run).
    for (file, needs_data) in [
        ("port-monitor-node.json", true),
        ("port-monitor-destinations.json", true),
        ("port-monitor-workloads.json", false),
    ] {
        let mut panels: std::collections::BTreeMap<String, usize> =
            std::collections::BTreeMap::new();
        for (title, expr) in dashboard_queries(file) {
            let (answer, series) = prometheus.query(&expr);
            assert!(
                answer.contains("\"status\":\"success\""),
                "{file} {title}: {expr}\n{answer}"
            );
            if series == 0 {
                eprintln!("{file} {title}: no data for {expr}");
            }
            *panels.entry(title).or_default() += series;
        }
        if needs_data {
            let empty: Vec<&String> = panels
                .iter()
                .filter(|(_, series)| **series == 0)
                .map(|(title, _)| title)
                .collect();
            assert!(empty.is_empty(), "{file}: panels without data: {empty:?}");
        }
    }
    drop((held, nat));
    let _ = std::fs::remove_file(config);

    // What the alerts and dashboards stand on has data.
    for core in [
        "port_monitor_ephemeral_utilization_max_ratio",
        "port_monitor_port_exhaustion_total",
        "port_monitor_anomalies_total",
        "port_monitor_sockets{state=\"time_wait\"}",
        "port_monitor_events_lost_total",
        "up{job=\"port-monitor\"}",
    ] {
        let (status, series) = prometheus.query(core);
        assert!(
            status.contains("\"status\":\"success\"") && series > 0,
            "{core} has no data: {status}"
        );
    }
}

/// A namespace with connections held open, so that destination panels have data: four
/// ephemeral ports, all taken toward a listener, and a refused connect.
fn a_namespace_with_traffic() -> (TestNetns, (TcpListener, Vec<TcpStream>)) {
    let netns = TestNetns::new("grafana");
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40003");
    let held = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 9200)).expect("listen");
        let clients: Vec<_> = (0..4)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, 9200)).expect("connect"))
            .collect();
        // A refused connect: the failure panels have something to show.
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, 1)).is_err());
        (listener, clients)
    });
    (netns, held)
}

/// Counters appear with their first event (--metrics.detail=compact): an exhaustion and a
/// bind conflict in `netns`, once the exporter watches, so that their panels have data too.
fn fail_in(netns: &TestNetns) {
    netns.run(|| {
        let exhausted = TcpStream::connect((Ipv4Addr::LOCALHOST, 9200));
        assert_eq!(
            exhausted.map(drop).map_err(|error| error.raw_os_error()),
            Err(Some(99)),
            "EADDRNOTAVAIL"
        );
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 9200));
        assert!(taken.is_err(), "the port is in use");
    });
}

/// A router masquerading a client to two ports, both taken by connections to a server: a
/// third connect timed out, a fourth is still waiting in `SYN_SENT`. Returned to be held.
fn a_nat_out_of_ports() -> (Routed, Vec<OwnedFd>, Vec<TcpStream>, TcpListener) {
    let net = Routed::new("promnat");
    net.masquerade("tcp", Some("40000-40001"));
    let server = SocketAddr::from((routed::SERVER, 8080));
    let listener = net
        .server
        .run(move || TcpListener::bind(server).expect("listen"));
    let held = net.client.run(move || {
        (0..2)
            .map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(30)).expect("connect"))
            .collect::<Vec<_>>()
    });
    // One SYN retransmission: about 3 s to time out.
    net.client.sysctl("net.ipv4.tcp_syn_retries", "1");
    let timed_out = net
        .client
        .run(move || TcpStream::connect_timeout(&server, Duration::from_mins(1)).map(drop));
    assert_eq!(
        timed_out.map_err(|error| error.kind()),
        Err(ErrorKind::TimedOut)
    );
    // The default six retransmissions: waiting for two minutes, longer than this test.
    net.client.sysctl("net.ipv4.tcp_syn_retries", "6");
    let waiting = net.client.run(move || {
        let socket = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        let address = SockaddrIn::from(match server {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => unreachable!("an IPv4 server"),
        });
        assert_eq!(
            connect(socket.as_raw_fd(), &address),
            Err(Errno::EINPROGRESS)
        );
        socket
    });
    (net, vec![waiting], held, listener)
}

/// (panel title, query) of every target in a dashboard, with its variables set to match all.
fn dashboard_queries(file: &str) -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards")
        .join(file);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard"))
            .expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$job", ".*")
                    .replace("$node", ".*")
                    .replace("$netns", ".*")
                    .replace("$pod", ".*");
                queries.push((title.clone(), expr));
            }
        }
    }
    assert!(!queries.is_empty(), "{file} has queries");
    queries
}

/// The alerting rules as shipped.
fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/port-monitor.rules.yml")
}
