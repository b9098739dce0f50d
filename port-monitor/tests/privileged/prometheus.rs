//! A real Prometheus server scraping a running port-monitor loads the alerting rules and
//! evaluates each without error, and the series the alerts stand on have data.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{Exporter, privileged};

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
        let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/prometheus/port-monitor.rules.yml");
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
    let exporter = Exporter::start();
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let rules = prometheus.get("/api/v1/rules", None);
        if rules.matches("\"health\":\"ok\"").count() == 7 || Instant::now() >= deadline {
            break rules;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        rules.matches("\"type\":\"alerting\"").count(),
        7,
        "seven alerting rules loaded:\n{rules}"
    );
    assert_eq!(
        rules.matches("\"health\":\"ok\"").count(),
        7,
        "each evaluates without error:\n{rules}"
    );
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
