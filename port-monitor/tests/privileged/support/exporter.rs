//! The daemon binary, started for one test and stopped after it.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::Metrics;

/// A running port-monitor, reading fast so that tests wait little.
pub struct Exporter {
    child: Option<Child>,
    pub address: String,
    log: PathBuf,
    /// Served over TLS (`--web.config.file` with `tls_server_config`): readiness is probed
    /// with curl, which the tests' HTTP client cannot do without TLS support, given these
    /// extra arguments (a client certificate when the server requires one).
    tls: Option<Vec<String>>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Exporter {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let mut exporter = Self::spawn(extra, None);
        exporter.wait_ready();
        exporter
    }

    /// Starts and returns as soon as the endpoint accepts connections, before it is ready.
    pub fn start_unready() -> Self {
        let exporter = Self::spawn(&[], None);
        let deadline = Instant::now() + READY_TIMEOUT;
        while std::net::TcpStream::connect(&exporter.address).is_err() {
            assert!(
                Instant::now() < deadline,
                "no endpoint:\n{}",
                exporter.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        exporter
    }

    /// Starts with a web configuration that turns TLS on; readiness is probed over HTTPS.
    pub fn start_tls(extra: &[&str]) -> Self {
        let mut exporter = Self::spawn(extra, Some(Vec::new()));
        exporter.wait_ready();
        exporter
    }

    /// Starts with a web configuration that requires a client certificate; readiness is
    /// probed over HTTPS with `cert` and its `key`.
    pub fn start_tls_with_client_cert(extra: &[&str], cert: &Path, key: &Path) -> Self {
        let probe = vec![
            "--cert".to_owned(),
            cert.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
        ];
        let mut exporter = Self::spawn(extra, Some(probe));
        exporter.wait_ready();
        exporter
    }

    fn spawn(extra: &[&str], tls: Option<Vec<String>>) -> Self {
        // Ask the kernel for a free port, then hand it over (the window between is tiny).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!(
            "port-monitor-test-{}-{port}.log",
            std::process::id()
        ));
        // The tests count every fact on every kernel: where fexit is refused (this machine's
        // own kernel), bind and autobind failures are seen through the syscall tracepoints.
        // The default hook choice has tests of its own (check.rs).
        let given = |flag: &str| extra.iter().any(|arg| arg.starts_with(flag));
        let errno_hook = (!given("--kernel.errno-hook")).then_some("--kernel.errno-hook=auto");
        let snapshot_interval =
            (!given("--snapshot.interval")).then_some("--snapshot.interval=200ms");
        let child = Command::new(env!("CARGO_BIN_EXE_port-monitor"))
            .arg(format!("--web.listen-address={address}"))
            .args(["--kernel.poll-interval=100ms", "--log.level=debug"])
            .args(snapshot_interval)
            .args(errno_hook)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start port-monitor");
        Self {
            child: Some(child),
            address,
            log,
            tls,
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!(
                    "port-monitor exited with {status} before ready:\n{}",
                    self.log()
                );
            }
            if self.is_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "port-monitor not ready within {READY_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    fn is_ready(&self) -> bool {
        let Some(probe) = &self.tls else {
            return self.get("/-/ready").is_ok_and(|(status, _)| status == 200);
        };
        Command::new("curl")
            .args([
                "--silent",
                "--insecure",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
            ])
            .args(probe)
            .arg(format!("https://{}/-/ready", self.address))
            .output()
            .is_ok_and(|output| output.stdout == b"200")
    }

    /// GET `path`: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        self.request(path, None, None)
    }

    /// GET `path` with an `Authorization` header, giving up after `timeout`: status and body.
    /// A new connection each time.
    pub fn request(
        &self,
        path: &str,
        authorization: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(u16, String), ureq::Error> {
        let mut request = ureq::get(&format!("http://{}{path}", self.address));
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request
            .config()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .call()?;
        let status = response.status().as_u16();
        // Scrapes of a node with thousands of series run past ureq's default 10 MiB.
        let body = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()?;
        Ok((status, body))
    }

    /// Scrapes `/metrics`.
    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("scrape");
        assert_eq!(status, 200, "scrape status");
        Metrics::parse(&body)
    }

    /// Scrapes until `done` holds or `timeout` passes (times [`super::time_scale`]);
    /// returns the last scrape either way, for the caller's assertions to report.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + timeout * super::time_scale();
        loop {
            let metrics = self.scrape();
            if done(&metrics) || Instant::now() >= deadline {
                return metrics;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        kill(pid(&child), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 10 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(pid(&child), Signal::SIGTERM);
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
}
