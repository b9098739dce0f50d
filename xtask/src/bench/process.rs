//! The processes a benchmark starts and watches: port-monitor, its peers, and what `/proc`
//! says about them.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// Something attached to the kernel while a workload runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// port-monitor with every collector, as deployed.
    Full,
    /// port-monitor without the UDP autobind collector, whose syscall-exit tracepoints every
    /// `connect()` pays for: what that collector costs.
    WithoutAutobind,
    /// bcc's `tcpstates`: every TCP state change, printed, from the same tracepoint.
    Tcpstates,
    /// A bpftrace one-liner counting the same tracepoint: the cheapest thing a user could
    /// write by hand, and a check that the measurement sees a hook's cost at all.
    Bpftrace,
}

impl Monitor {
    pub const ALL: [Self; 4] = [
        Self::Full,
        Self::WithoutAutobind,
        Self::Tcpstates,
        Self::Bpftrace,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Full => "port-monitor",
            Self::WithoutAutobind => "port-monitor --no-collector.autobind",
            Self::Tcpstates => "bcc tcpstates",
            Self::Bpftrace => "bpftrace (count inet_sock_set_state)",
        }
    }

    /// Starts the monitor and returns once it is attached.
    pub fn start(self) -> Result<Running> {
        match self {
            Self::Full => PortMonitor::start(&[]).map(Running::PortMonitor),
            Self::WithoutAutobind => {
                PortMonitor::start(&["--no-collector.autobind"]).map(Running::PortMonitor)
            }
            Self::Tcpstates => {
                let mut command = Command::new("/usr/sbin/tcpstates-bpfcc");
                command.env("BCC_KERNEL_SOURCE", setup::KERNEL_HEADERS);
                // Its header line comes once the program is attached.
                start_printing(command, "SKADDR")
            }
            Self::Bpftrace => {
                let mut command = Command::new("bpftrace");
                command.args([
                    "-e",
                    "tracepoint:sock:inet_sock_set_state { @[args->newstate] = count(); }",
                ]);
                start_printing(command, "Attaching")
            }
        }
    }
}

/// A monitor attached now; stopped with [`Running::stop`].
pub enum Running {
    PortMonitor(PortMonitor),
    Peer(Child),
}

impl Running {
    pub fn stop(self) -> Result<()> {
        match self {
            Self::PortMonitor(monitor) => monitor.stop(),
            Self::Peer(child) => interrupt(child),
        }
    }
}

/// Starts a peer that prints `ready_marker` once attached, and keeps reading what it prints
/// (to nowhere) so that it never blocks on a full pipe: printing is part of its cost.
fn start_printing(mut command: Command, ready_marker: &str) -> Result<Running> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let stdout = child.stdout.take().context("peer stdout")?;
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    lines.read_line(&mut line)?;
    if !line.contains(ready_marker) {
        let _ = child.kill();
        bail!("{program} did not attach: {line:?}");
    }
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    Ok(Running::Peer(child))
}

/// SIGINT, as Ctrl-C would; killed if still there after 10 s (bcc's tools miss a SIGINT that
/// comes while they work through a backlog of events).
fn interrupt(mut child: Child) -> Result<()> {
    cmd::run(cmd::command("kill").args(["-INT", &child.id().to_string()]))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            println!("  (pid {} ignored SIGINT for 10 s: killed)", child.id());
            child.kill()?;
            child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A port-monitor daemon from `target/release`, listening on a free loopback port.
pub struct PortMonitor {
    child: Child,
    pub address: String,
}

impl PortMonitor {
    pub fn start(extra: &[&str]) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let address = format!("127.0.0.1:{port}");
        let child = Command::new("target/release/port-monitor")
            .args(extra)
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting port-monitor")?;
        let monitor = Self { child, address };
        monitor.wait_ready()?;
        Ok(monitor)
    }

    /// Waits for the readiness endpoint: programs attached, first snapshot taken.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let status = cmd::output(cmd::command("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}/-/ready", self.address),
            ]));
            if status.as_deref() == Some("200") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("port-monitor was not ready within 30 s")
    }

    /// One scrape of `/metrics`: the body.
    pub fn scrape(&self) -> Result<String> {
        cmd::output(cmd::command("curl").args(["-sf", &format!("http://{}/metrics", self.address)]))
            .context("scraping port-monitor")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(self) -> Result<()> {
        interrupt(self.child)
    }
}

/// Seconds one scrape took as curl measured it (connection to last byte), and the body's
/// size; curl's own start-up is not in it.
pub fn timed_scrape(mut curl: Command, url: &str) -> Result<(f64, usize)> {
    let out = curl
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total} %{size_download} %{http_code}",
            url,
        ])
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let seconds: f64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .context("curl time")?;
    let size: usize = fields
        .next()
        .and_then(|f| f.parse().ok())
        .context("curl size")?;
    if fields.next() != Some("200") {
        bail!("scrape of {url} failed: {text}");
    }
    Ok((seconds, size))
}

/// Resident memory of `pid`, in KiB.
pub fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// CPU seconds `pid` used so far (user + system).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&index| fields.get(index)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(
        clippy::cast_precision_loss,
        reason = "tick counts stay far below 2^53"
    )]
    Ok(ticks as f64 / per_second.max(1) as f64)
}

/// The sum of the samples of `name` whose labels contain every one of `labels`
/// (`key="value"` strings); `None` when there is none.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let matches = (rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|label| rest.contains(label));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
