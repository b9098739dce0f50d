//! What one read of a conntrack table costs port-monitor, beside `conntrack -L | wc -l` on the
//! same table: at 10k entries, 100k, and the most this machine's `nf_conntrack_max` allows.
//!
//! The table is filled in a namespace made for the run (removed after it): UDP datagrams on
//! loopback. Twice: each flow source-NATed to 127.0.0.2, so that every entry is one
//! port-monitor folds into its NAT counts (the worst case: tens of thousands of NAT
//! destinations); then none translated, which the kernel leaves out of the answer to
//! port-monitor's filtered dump. Unanswered UDP flows are kept ten minutes there, so the table
//! holds still while it is read.
//!
//! For each size: port-monitor's read (`snapshot::conntrack::read`, the function the snapshot
//! thread calls) and `conntrack -L | wc -l`, interleaved, the median of several of each; and
//! how much the bench process's peak memory grew over its reads (`VmHWM`, reset before).
//!
//! Run as root with `cargo bench --package port-monitor --bench conntrack`; `cargo xtask
//! bench conntrack` runs it and keeps its table. Prints a Markdown table.

use std::{
    fs::File,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsFd as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};
use port_monitor::snapshot::conntrack;

/// Reads timed per size and tool; the median is reported.
const ROUNDS: usize = 5;
/// Entries left free below the limit: a full table starts evicting.
const HEADROOM: u64 = 1000;
/// Flows sent from one socket, each to its own port.
const FLOWS_PER_SOCKET: u64 = 60_000;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED conntrack bench: needs root (it makes a network namespace)");
        return;
    }
    let limit: u64 = read_number("/proc/sys/net/netfilter/nf_conntrack_max");
    let sizes = [10_000, 100_000, limit.saturating_sub(HEADROOM)];
    println!(
        "| entries | translated | port-monitor read (median of {ROUNDS}) | NAT destinations | peak memory growth | `conntrack -L \\| wc -l` (median of {ROUNDS}) | ratio |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for translated in [true, false] {
        let netns = BenchNetns::new(translated);
        let mut filled = 0;
        let mut sockets = Vec::new();
        for size in sizes {
            sockets.extend(netns.fill(size - filled));
            filled = size;
            let entries = netns.conntrack_count();
            let (ours, nat_destinations, growth) = netns.time_reads();
            let theirs = netns.time_conntrack_list();
            println!(
                "| {entries} | {} | {:.1} ms | {nat_destinations} | {:.1} MiB | {:.1} ms | {:.1}x |",
                if translated { "all" } else { "none" },
                millis(ours),
                f64::from(u32::try_from(growth / 1024).unwrap_or(u32::MAX)) / 1024.0,
                millis(theirs),
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
        // The next namespace's table needs the room.
        drop((sockets, netns));
    }
    println!(
        "\nnf_conntrack_max = {limit}; kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
}

/// The namespace the table is filled in: created for the run, deleted on drop.
struct BenchNetns {
    name: String,
}

impl BenchNetns {
    /// A namespace whose flows are all source-NATed (`translated`), or none of them.
    fn new(translated: bool) -> Self {
        let name = format!("pm-bench-conntrack-{}-{translated}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.exec("ip", &["link", "set", "lo", "up"]);
        // Either rule has conntrack track the namespace.
        let rule: &[&str] = if translated {
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "lo",
                "-p",
                "udp",
                "-j",
                "SNAT",
                "--to-source",
                "127.0.0.2",
            ]
        } else {
            &[
                "-A",
                "OUTPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "ACCEPT",
            ]
        };
        netns.exec("iptables", rule);
        netns.exec(
            "sysctl",
            &["-qw", "net.netfilter.nf_conntrack_udp_timeout=600"],
        );
        netns
    }

    /// Runs `work` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(PathBuf::from("/run/netns").join(&self.name)).expect("namespace");
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            work()
        })
        .join()
        .expect("work in the namespace")
    }

    /// Adds `count` flows: one datagram each, from a new socket every [`FLOWS_PER_SOCKET`]
    /// flows, to ports from 1024 up where nothing listens. Returns the sockets, to be held.
    fn fill(&self, count: u64) -> Vec<UdpSocket> {
        self.run(move || {
            let mut sockets = Vec::new();
            for flow in 0..count {
                if flow % FLOWS_PER_SOCKET == 0 {
                    sockets.push(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind"));
                }
                let port = u16::try_from(1024 + flow % FLOWS_PER_SOCKET).expect("a port");
                sockets
                    .last()
                    .expect("a socket")
                    .send_to(b"x", (Ipv4Addr::LOCALHOST, port))
                    .expect("send");
            }
            sockets
        })
    }

    /// Reads the table [`ROUNDS`] times the way the snapshot thread does: the median time,
    /// the NAT destinations found, and how much the peak memory grew.
    fn time_reads(&self) -> (Duration, usize, u64) {
        self.run(|| {
            // Reset the peak to the current size (proc(5), clear_refs).
            std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
            let before = peak_memory();
            let socket = conntrack::open_if_loaded()
                .expect("conntrack loaded")
                .expect("a ctnetlink socket");
            let mut times = Vec::new();
            let mut destinations = 0;
            for _ in 0..ROUNDS {
                let started = Instant::now();
                let table = conntrack::read(&socket).expect("read");
                times.push(started.elapsed());
                destinations = table.nat.len();
            }
            (
                median(times),
                destinations,
                peak_memory().saturating_sub(before),
            )
        })
    }

    /// Times `conntrack -L | wc -l` in the namespace [`ROUNDS`] times: the median.
    fn time_conntrack_list(&self) -> Duration {
        let times = (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                self.exec("sh", &["-c", "conntrack -L 2>/dev/null | wc -l"]);
                started.elapsed()
            })
            .collect();
        median(times)
    }

    /// `conntrack -C` in the namespace.
    fn conntrack_count(&self) -> u64 {
        self.exec("conntrack", &["-C"])
            .trim()
            .parse()
            .expect("a count")
    }

    fn exec(&self, program: &str, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("{program}: {error} (cargo xtask setup --bench)"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The process's peak resident memory (`VmHWM`), in bytes.
fn peak_memory() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{path}: {error} (is nf_conntrack loaded?)"))
        .trim()
        .parse()
        .expect("a number")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}: {status}");
}
