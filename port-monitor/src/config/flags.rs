//! Command-line flags, in the Prometheus style (`--web.listen-address`), each also settable
//! from an environment variable. Bad values are refused at start-up with the flag's name and
//! what would be accepted.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};

/// eBPF ephemeral port monitor and Prometheus exporter.
#[derive(Debug, Parser)]
#[command(name = "port-monitor", version, about, long_about = None)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to serve metrics on: "host:port", or ":port" for every interface. For status
    /// and top: where the daemon is asked (":port" asks 127.0.0.1).
    #[arg(
        global = true,
        long = "web.listen-address",
        env = "PORT_MONITOR_WEB_LISTEN_ADDRESS",
        default_value = ":9977",
        value_parser = parse_listen_address
    )]
    pub listen_address: SocketAddr,

    /// Path under which to serve metrics.
    #[arg(
        global = true,
        long = "web.telemetry-path",
        env = "PORT_MONITOR_WEB_TELEMETRY_PATH",
        default_value = "/metrics",
        value_parser = parse_telemetry_path
    )]
    pub telemetry_path: String,

    /// Series per scrape: "compact" leaves out zero-valued states, ranges and events and
    /// creates each counter with its first event (about a dozen series for an idle pod
    /// namespace); "full" exports every one, zeros included.
    #[arg(
        long = "metrics.detail",
        env = "PORT_MONITOR_METRICS_DETAIL",
        default_value = "compact",
        value_enum
    )]
    pub metrics_detail: crate::exporter::metrics::Detail,

    /// Prometheus exporter-toolkit web configuration file: TLS (`tls_server_config`) and
    /// basic auth (`basic_auth_users`, bcrypt hashes). Without it: plain HTTP, no auth. For
    /// status and top: the daemon's file, to know whether to speak TLS (trusting exactly the
    /// daemon's certificate) and whether it asks for credentials.
    #[arg(
        global = true,
        long = "web.config.file",
        env = "PORT_MONITOR_WEB_CONFIG_FILE"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Only log messages at or above this level.
    #[arg(
        global = true,
        long = "log.level",
        env = "PORT_MONITOR_LOG_LEVEL",
        default_value = "info",
        value_enum
    )]
    pub log_level: LogLevel,

    /// Log line format.
    #[arg(
        global = true,
        long = "log.format",
        env = "PORT_MONITOR_LOG_FORMAT",
        default_value = "text",
        value_enum
    )]
    pub log_format: LogFormat,

    #[arg(
        long = "snapshot.interval",
        env = "PORT_MONITOR_SNAPSHOT_INTERVAL",
        value_parser = parse_interval,
        help = format!(
            "How often to read every namespace's socket tables (e.g. 5s, 500ms). Gauges are \
             exact as of the latest read; a shorter interval costs more CPU on nodes with many \
             sockets. [default: intervals.snapshot of the configuration file, else {}]",
            humantime::format_duration(super::DEFAULT_SNAPSHOT_INTERVAL)
        )
    )]
    pub snapshot_interval: Option<Duration>,

    #[arg(
        long = "kernel.poll-interval",
        env = "PORT_MONITOR_KERNEL_POLL_INTERVAL",
        value_parser = parse_interval,
        help = format!(
            "How often to read the kernel programs' counters and records (e.g. 1s, 200ms). \
             [default: intervals.kernel_poll of the configuration file, else {}]",
            humantime::format_duration(super::DEFAULT_POLL_INTERVAL)
        )
    )]
    pub poll_interval: Option<Duration>,

    /// Which hook watches TCP state changes: auto picks tp-btf when the kernel accepts it
    /// and falls back to the classic tracepoint.
    #[arg(
        long = "kernel.tcp-state-hook",
        env = "PORT_MONITOR_KERNEL_TCP_STATE_HOOK",
        default_value = "auto",
        value_enum
    )]
    pub tcp_state_hook: crate::kernel::TcpStateHook,

    /// Where failed binds and UDP autobind failures are seen. fexit: on the kernel functions
    /// that fail, at no cost to anything else; a kernel that refuses fexit then counts
    /// neither, and says so in the degraded metric and the log. tracepoint: syscall
    /// tracepoints, which make every syscall of every process on the node slower (5-8% on a
    /// syscall-bound loop, see BENCHMARKS.md). auto: fexit where the kernel allows it, else
    /// tracepoint.
    #[arg(
        long = "kernel.errno-hook",
        env = "PORT_MONITOR_KERNEL_ERRNO_HOOK",
        default_value = "fexit",
        value_enum
    )]
    pub errno_hook: crate::kernel::ErrnoHook,

    /// The cgroup v2 mount the bind hooks attach to (its root: every process below it is
    /// seen). Found in /proc/self/mountinfo when not given; set it when the host's cgroup v2
    /// root is mounted into the container elsewhere.
    #[arg(long = "kernel.cgroup-root", env = "PORT_MONITOR_KERNEL_CGROUP_ROOT")]
    pub cgroup_root: Option<std::path::PathBuf>,

    /// Do not count failed binds (drops the bind hooks).
    #[arg(long = "no-collector.bind", env = "PORT_MONITOR_NO_COLLECTOR_BIND")]
    pub no_bind: bool,

    /// Do not count UDP autobind exhaustion (drops the autobind hooks).
    #[arg(
        long = "no-collector.autobind",
        env = "PORT_MONITOR_NO_COLLECTOR_AUTOBIND"
    )]
    pub no_autobind: bool,

    /// Do not read conntrack tables (no conntrack or NAT gauges): ctnetlink refuses every
    /// request without the network admin capability, which the daemon then drops with the other
    /// capabilities only attaching needs.
    #[arg(
        global = true,
        long = "no-collector.conntrack",
        env = "PORT_MONITOR_NO_COLLECTOR_CONNTRACK"
    )]
    pub no_conntrack: bool,

    /// TOML file with thresholds and sizes (docs/configuration.md). Without it every
    /// default applies.
    #[arg(global = true, long = "config.file", env = "PORT_MONITOR_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// procfs mount point of the host (in a container: the host's /proc, with hostPID).
    #[arg(
        global = true,
        long = "path.procfs",
        env = "PORT_MONITOR_PATH_PROCFS",
        default_value = "/proc"
    )]
    pub procfs: PathBuf,
}

impl Flags {
    /// The optional kernel program groups the flags leave on.
    #[must_use]
    pub const fn collectors(&self) -> crate::kernel::Collectors {
        crate::kernel::Collectors {
            tcp_state_hook: self.tcp_state_hook,
            errno_hook: self.errno_hook,
            bind: !self.no_bind,
            autobind: !self.no_autobind,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe the kernel, load and attach every program, print which hook gives which fact,
    /// take one snapshot, then detach and exit: 0 when everything works.
    Check,
    /// One screen for the whole node, no daemon needed: every network namespace's ephemeral
    /// ports, `TIME_WAIT`, busiest destinations and NAT, closest to running out first, with
    /// the failures counted by a port-monitor daemon on this node when one answers.
    Status(super::StatusArgs),
    /// `status`, refreshed live in the terminal: keys to sort, pick a namespace and see its
    /// destinations.
    Top(super::TopArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    #[must_use]
    pub const fn as_tracing(self) -> tracing::Level {
        match self {
            Self::Debug => tracing::Level::DEBUG,
            Self::Info => tracing::Level::INFO,
            Self::Warn => tracing::Level::WARN,
            Self::Error => tracing::Level::ERROR,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines with key=value fields.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

use super::MIN_INTERVAL;

fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let invalid = || {
        format!("expected \"host:port\" or \":port\" (e.g. :9977, 127.0.0.1:9977), got {text:?}")
    };
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        // Like Prometheus exporters: every interface, IPv6 and IPv4 (the socket is dual-stack).
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    text.parse().map_err(|_| invalid())
}

fn parse_telemetry_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("must start with \"/\", got {text:?}"));
    }
    if text == "/" || text.starts_with("/-/") {
        return Err(format!(
            "{text:?} is taken by the landing page or the health endpoints"
        ));
    }
    Ok(text.to_owned())
}

/// Parses an interval ("5s", "500ms") no shorter than 50 ms.
///
/// # Errors
/// When the text is not such a duration.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text)
        .map_err(|error| format!("expected a duration such as 5s or 500ms: {error}"))?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, String> {
        Flags::try_parse_from(std::iter::once("port-monitor").chain(args.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_serve_metrics_on_every_interface() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.listen_address, "[::]:9977".parse().expect("literal"));
        assert_eq!(config.telemetry_path, "/metrics");
        assert_eq!(
            config.snapshot_interval, None,
            "the file's or the built-in default"
        );
    }

    #[test]
    fn accepts_prometheus_style_flags() {
        let config = parse(&[
            "--web.listen-address=127.0.0.1:9999",
            "--web.telemetry-path=/prom",
            "--log.level=debug",
            "--snapshot.interval=250ms",
        ])
        .expect("valid flags");
        assert_eq!(
            config.listen_address,
            "127.0.0.1:9999".parse().expect("literal")
        );
        assert_eq!(config.telemetry_path, "/prom");
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.snapshot_interval, Some(Duration::from_millis(250)));
    }

    /// The daemon's flags that say how to reach it are global: given after `status` too, as
    /// a user types them.
    #[test]
    fn status_and_top_take_the_daemons_flags_after_the_subcommand() {
        let flags = parse(&[
            "status",
            "--output=json",
            "--web.listen-address=:9978",
            "--status.username=prometheus",
            "--status.password-file=/run/secrets/password",
        ])
        .expect("valid flags");
        assert_eq!(flags.listen_address.port(), 9978);
        let Some(Command::Status(status)) = flags.command else {
            panic!("status: {:?}", flags.command);
        };
        assert_eq!(status.output, super::super::Output::Json);
        assert_eq!(status.daemon.username.as_deref(), Some("prometheus"));

        let flags = parse(&["top", "-d", "500ms"]).expect("valid flags");
        let Some(Command::Top(top)) = flags.command else {
            panic!("top: {:?}", flags.command);
        };
        assert_eq!(top.refresh_interval, Duration::from_millis(500));

        let error = parse(&["status", "--status.password-file=/p"]).expect_err("no user");
        assert!(error.contains("--status.username"), "{error}");
        let error = parse(&["status", "--output=yaml"]).expect_err("no such output");
        assert!(error.contains("--output"), "{error}");
    }

    #[test]
    fn refuses_bad_values_naming_the_flag() {
        let cases = [
            (&["--web.listen-address=9977"][..], "--web.listen-address"),
            (&["--web.listen-address=:99999"][..], "\":port\""),
            (&["--web.telemetry-path=metrics"][..], "must start with"),
            (&["--web.telemetry-path=/-/ready"][..], "health endpoints"),
            (&["--snapshot.interval=5"][..], "--snapshot.interval"),
            (&["--snapshot.interval=1ms"][..], "at least 50ms"),
            (&["--log.level=loud"][..], "--log.level"),
        ];
        for (args, expected) in cases {
            let error = parse(args).expect_err("invalid flag");
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }
}
