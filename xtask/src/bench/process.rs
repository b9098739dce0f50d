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
///
/// There is no row any more for port-monitor with the autobind collector alone turned off
/// (`--no-collector.autobind`): it measured what that collector's
/// `sys_exit_connect`/`sys_exit_send*` tracepoints cost, and the defaults no longer attach
/// those (fexit on `inet_autobind` instead, or
/// nothing where fexit is refused, as on this project's machines, where it would equal
/// [`Monitor::Defaults`]); what syscall tracepoints cost is [`Monitor::Tracepoints`] against
/// [`Monitor::Defaults`] here, and against [`Monitor::CollectorsOff`] in the `syscalls` part.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// port-monitor as deployed (`--kernel.errno-hook=fexit`): `bind()` errno and UDP
    /// autobind failures through fexit programs; where the kernel refuses fexit, those two
    /// collectors are off and only the TCP state program (and, before 6.7, the bound-socket
    /// cgroup programs) is attached. Which it was is read from `port_monitor_program_info`.
    Defaults,
    /// port-monitor with every collector through syscall tracepoints
    /// (`--kernel.errno-hook=tracepoint`): the configuration before fexit, and what `auto`
    /// falls back to where fexit is refused. Every syscall on the node pays for it.
    Tracepoints,
    /// port-monitor with the `bind()` and autobind collectors off: neither fexit nor syscall
    /// tracepoints, the floor the two other configurations are compared with.
    CollectorsOff,
    /// bcc's `tcpstates`: every TCP state change, printed, from the same tracepoint.
    Tcpstates,
    /// A bpftrace one-liner counting the same tracepoint: the cheapest thing a user could
    /// write by hand, and a check that the measurement sees a hook's cost at all.
    Bpftrace,
}

impl Monitor {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Defaults => "port-monitor (defaults: --kernel.errno-hook=fexit)",
            Self::Tracepoints => "port-monitor --kernel.errno-hook=tracepoint",
            Self::CollectorsOff => "port-monitor --no-collector.bind --no-collector.autobind",
            Self::Tcpstates => "bcc tcpstates",
            Self::Bpftrace => "bpftrace (count inet_sock_set_state)",
        }
    }

    /// Starts the monitor and returns once it is attached.
    pub fn start(self) -> Result<Running> {
        match self {
            Self::Defaults => PortMonitor::start(&[]).map(Running::PortMonitor),
            Self::Tracepoints => {
                PortMonitor::start(&["--kernel.errno-hook=tracepoint"]).map(Running::PortMonitor)
            }
            Self::CollectorsOff => {
                PortMonitor::start(&["--no-collector.bind", "--no-collector.autobind"])
                    .map(Running::PortMonitor)
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
    /// What port-monitor attached, from its metrics; `None` for a peer, whose hook is known.
    pub fn hooks(&self) -> Option<Result<Hooks>> {
        match self {
            Self::PortMonitor(monitor) => {
                Some(monitor.scrape().map(|text| Hooks::from_metrics(&text)))
            }
            Self::Peer(_) => None,
        }
    }

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

/// The kernel programs a running port-monitor reports (`port_monitor_program_info`) and the
/// collectors it could not attach (`port_monitor_degraded`): what the flags gave on this
/// kernel, which is not always what they ask for (a kernel may refuse fexit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Attach points, e.g. `fexit/inet_bind`, `cgroup/bind4` (without the cgroup's path).
    pub attached: Vec<String>,
    /// Collectors left out, e.g. `bind`, `autobind`.
    pub unavailable: Vec<String>,
}

impl Hooks {
    pub fn from_metrics(text: &str) -> Self {
        let label = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = start + line.get(start..)?.find('"')?;
            line.get(start..end).map(str::to_owned)
        };
        let attached = text
            .lines()
            .filter(|line| line.starts_with("port_monitor_program_info{"))
            .filter_map(|line| label(line, "hook"))
            .map(|hook| match hook.split_once(" on ") {
                Some((hook, _cgroup)) => hook.to_owned(),
                None => hook,
            })
            .collect();
        let unavailable = text
            .lines()
            .filter(|line| line.starts_with("port_monitor_degraded{") && line.ends_with(" 1"))
            .filter_map(|line| label(line, "reason"))
            .filter_map(|reason| {
                reason
                    .strip_suffix("_hooks_unavailable")
                    .or_else(|| reason.strip_suffix("_unavailable"))
                    .map(|collector| collector.replace('_', " "))
            })
            .collect();
        Self {
            attached,
            unavailable,
        }
    }

    /// The syscall tracepoints, which every syscall on the node pays for.
    pub fn syscall_tracepoints(&self) -> Vec<&str> {
        self.attached
            .iter()
            .filter_map(|hook| hook.strip_prefix("tracepoint/syscalls/"))
            .collect()
    }
}

impl std::fmt::Display for Hooks {
    /// `no syscall tracepoint (other hooks; unavailable: ...)` or `syscall tracepoints a, b
    /// (other hooks ...)`: the fact that decides the cost first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let syscall = self.syscall_tracepoints();
        if syscall.is_empty() {
            write!(f, "no syscall tracepoint")?;
        } else {
            write!(f, "syscall tracepoints {}", syscall.join(", "))?;
        }
        let others: Vec<&str> = self
            .attached
            .iter()
            .map(String::as_str)
            .filter(|hook| !hook.starts_with("tracepoint/syscalls/"))
            .collect();
        write!(f, " (+ {}", others.join(", "))?;
        if !self.unavailable.is_empty() {
            write!(f, "; unavailable: {}", self.unavailable.join(", "))?;
        }
        write!(f, ")")
    }
}

/// What a `loadgen` printed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loadgen {
    /// Cycles per second (wall clock).
    pub rate: f64,
    pub cycles: u64,
    /// The mean rate of the fastest tenth of its 50 ms windows: the rate when the machine
    /// under it let it run (see loadgen's `WINDOW`).
    pub top_rate: f64,
}

/// Waits for a `loadgen` and reads what it printed.
pub fn loadgen_result(child: Child) -> Result<Loadgen> {
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("loadgen failed with {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let mut field = |what: &str| fields.next().with_context(|| format!("loadgen {what}"));
    Ok(Loadgen {
        rate: field("rate")?.parse().context("loadgen rate")?,
        cycles: field("cycles")?.parse().context("loadgen cycles")?,
        top_rate: field("top rate")?.parse().context("loadgen top rate")?,
    })
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

/// Others' eBPF monitors, which spoil any trial: a syscall tracepoint of anyone's slows the
/// baseline as much as the monitored trial, at almost no CPU cost of the monitor's own (which
/// [`OthersCpu`] would see). Names as `/proc/<pid>/stat` has them (15 bytes at most);
/// `privileged-` is port-monitor's privileged test binary.
const OTHER_MONITORS: &[&str] = &["port-monitor", "privileged-", "bpftrace"];

/// The [`OTHER_MONITORS`] running now that this process did not start (its own monitors are
/// its children), as `name (pid)`.
pub fn other_monitors() -> Vec<String> {
    let own = std::process::id();
    let mut found: Vec<String> = processes()
        .into_iter()
        .filter(|process| {
            process.parent != own
                && OTHER_MONITORS
                    .iter()
                    .any(|name| process.comm.starts_with(name))
        })
        .map(|process| format!("{} ({})", process.comm, process.pid))
        .collect();
    found.sort();
    found
}

/// eBPF attachments that can only be someone else's while nothing of this process's is
/// attached (a baseline trial): perf-event links (tracepoints, kprobes), BPF trampolines
/// (fentry/fexit) and raw tracepoints on `sys_enter`/`sys_exit`. A syscall tracepoint of
/// anyone's makes every syscall take the traced path, the baseline's too, and its owner need
/// not be named like a monitor (a test binary loading programs in-process). Empty when
/// `bpftool` is missing.
pub fn foreign_hooks() -> Vec<String> {
    let Some(text) = cmd::output(cmd::command("bpftool").args(["link", "show", "--json"])) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str(&text) else {
        return Vec::new();
    };
    links
        .iter()
        .filter_map(|link| {
            let kind = link["type"].as_str()?;
            let tp_name = link["tp_name"].as_str().unwrap_or_default();
            let foreign = matches!(kind, "perf_event" | "tracing")
                || (kind == "raw_tracepoint" && tp_name.starts_with("sys_"));
            foreign.then(|| format!("someone's {kind} link {}", link["id"]))
        })
        .collect()
}

/// The CPU time other processes use from now on: the machine's busy time (`/proc/stat`, steal
/// left out) less this process's and its children's (running ones from `/proc`, finished
/// ones from `getrusage`). On this project's two-core machines a compiler or a test run on
/// the other core slows a loop's own cycles too (shared caches, maybe a hyperthread of the
/// same core), and takes its core when the scheduler says so: whoever runs, it spoils a
/// trial.
pub struct OthersCpu {
    busy: Duration,
    ours: Duration,
    started: Instant,
}

impl OthersCpu {
    pub fn start() -> Self {
        Self {
            busy: machine_busy(),
            ours: own_cpu(),
            started: Instant::now(),
        }
    }

    /// Others' CPU time since [`OthersCpu::start`], as a share of one core.
    pub fn share(&self) -> f64 {
        let others = machine_busy()
            .saturating_sub(self.busy)
            .saturating_sub(own_cpu().saturating_sub(self.ours));
        others.as_secs_f64() / self.started.elapsed().as_secs_f64().max(1e-3)
    }
}

/// Time all CPUs spent busy so far: user, nice, system, irq and softirq in `/proc/stat`.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .map_or(0, |fields| {
            fields
                .split_whitespace()
                .enumerate()
                .filter(|(index, _)| [0, 1, 2, 5, 6].contains(index))
                .filter_map(|(_, value)| value.parse::<u64>().ok())
                .sum()
        });
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).unwrap_or(100).max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// CPU time of this process and its children: finished ones (waited for, with their own
/// children) from `getrusage`, running ones from `/proc`. A child is in exactly one of the
/// two at any time, so differences over a span count it once.
fn own_cpu() -> Duration {
    let used = |who| {
        // SAFETY: a zeroed rusage is a valid value for getrusage to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid `who` and a valid, writable rusage.
        if unsafe { libc::getrusage(who, &raw mut usage) } != 0 {
            return Duration::ZERO;
        }
        let time = |value: libc::timeval| {
            Duration::from_secs(u64::try_from(value.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(value.tv_usec).unwrap_or(0))
        };
        time(usage.ru_utime) + time(usage.ru_stime)
    };
    let running: f64 = children()
        .into_iter()
        .filter_map(|(pid, _)| cpu_seconds(pid).ok())
        .sum();
    used(libc::RUSAGE_SELF) + used(libc::RUSAGE_CHILDREN) + Duration::from_secs_f64(running)
}

/// This process's running children: pid and command name.
pub fn children() -> Vec<(u32, String)> {
    let own = std::process::id();
    processes()
        .into_iter()
        .filter(|process| process.parent == own)
        .map(|process| (process.pid, process.comm))
        .collect()
}

/// A process, as `/proc/<pid>/stat` has it.
struct Process {
    pid: u32,
    parent: u32,
    comm: String,
}

/// Every process but this one.
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let parent = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some(Process { pid, parent, comm })
        })
        .collect()
}

/// Gives every thread of `pid` the scheduling priority `nice` (negative: ahead of others'
/// work; nice values are per thread on Linux). Best effort: a thread may end meanwhile.
pub fn renice(pid: u32, nice: i32) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for tid in tasks
        .filter_map(Result::ok)
        .filter_map(|task| task.file_name().to_str()?.parse::<libc::id_t>().ok())
    {
        // SAFETY: setpriority takes plain integers; a thread gone meanwhile gives ESRCH.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE port_monitor_degraded gauge
port_monitor_degraded{reason=\"namespace_unreadable\"} 0
port_monitor_degraded{reason=\"bind_hooks_unavailable\"} 1
port_monitor_degraded{reason=\"autobind_hooks_unavailable\"} 1
port_monitor_degraded{reason=\"bound_sockets_unavailable\"} 0
port_monitor_program_info{program=\"tcp_state_change\",hook=\"tp_btf/inet_sock_set_state\"} 1
port_monitor_program_info{program=\"bind4_request\",hook=\"cgroup/bind4 on /sys/fs/cgroup\"} 1
port_monitor_program_info{program=\"bind_exit\",hook=\"tracepoint/syscalls/sys_exit_bind\"} 1
";

    #[test]
    fn hooks_from_metrics() {
        let hooks = Hooks::from_metrics(METRICS);
        assert_eq!(
            hooks.attached,
            [
                "tp_btf/inet_sock_set_state",
                "cgroup/bind4",
                "tracepoint/syscalls/sys_exit_bind"
            ]
        );
        assert_eq!(hooks.unavailable, ["bind", "autobind"]);
        assert_eq!(
            hooks.to_string(),
            "syscall tracepoints sys_exit_bind (+ tp_btf/inet_sock_set_state, cgroup/bind4; \
             unavailable: bind, autobind)"
        );
    }

    #[test]
    fn hooks_without_syscall_tracepoints() {
        let hooks = Hooks::from_metrics(
            "port_monitor_program_info{program=\"autobind_fexit\",hook=\"fexit/inet_autobind\"} 1\n",
        );
        assert_eq!(
            hooks.to_string(),
            "no syscall tracepoint (+ fexit/inet_autobind)"
        );
    }
}
