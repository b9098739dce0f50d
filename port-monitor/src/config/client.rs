//! Flags of the commands run by hand on a node (`status`, `top`): how to show the node, and
//! how to reach the daemon that serves on it. Where the daemon listens, its telemetry path and
//! its web configuration file are the daemon's own flags (global), so the environment a
//! daemon runs with serves both.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

/// `port-monitor status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// text: one screen for a person; json: the same facts for scripts (jq).
    #[arg(
        long = "output",
        short = 'o',
        env = "PORT_MONITOR_OUTPUT",
        default_value = "text",
        value_enum
    )]
    pub output: Output,

    #[command(flatten)]
    pub daemon: DaemonAccess,
}

/// `port-monitor top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often the node is read again (e.g. 2s, 500ms).
    #[arg(
        long = "top.refresh-interval",
        short = 'd',
        env = "PORT_MONITOR_TOP_REFRESH_INTERVAL",
        default_value = "2s",
        value_parser = super::parse_interval
    )]
    pub refresh_interval: Duration,

    #[command(flatten)]
    pub daemon: DaemonAccess,
}

/// How `status` and `top` present the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What the client side of the daemon's web configuration needs beyond its file: the file
/// holds bcrypt hashes, not passwords, and the server's certificate, not the client's.
#[derive(Debug, Args)]
pub struct DaemonAccess {
    /// User for the daemon's basic auth (one of its `basic_auth_users`).
    #[arg(long = "status.username", env = "PORT_MONITOR_STATUS_USERNAME")]
    pub username: Option<String>,

    /// File holding that user's password (a trailing newline is ignored).
    #[arg(
        long = "status.password-file",
        env = "PORT_MONITOR_STATUS_PASSWORD_FILE",
        requires = "username"
    )]
    pub password_file: Option<PathBuf>,

    /// PEM file of the CA that signed the daemon's certificate: speak TLS and verify the
    /// certificate against it and the name (--status.server-name). Without it, and with
    /// --web.config.file naming TLS, the daemon's own certificate file is trusted, and only
    /// it.
    #[arg(long = "status.ca-file", env = "PORT_MONITOR_STATUS_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// The name the daemon's certificate must carry when verified against --status.ca-file.
    /// [default: the address asked]
    #[arg(
        long = "status.server-name",
        env = "PORT_MONITOR_STATUS_SERVER_NAME",
        requires = "ca_file"
    )]
    pub server_name: Option<String>,

    /// PEM client certificate, for a daemon that requires one (`client_auth_type`).
    #[arg(
        long = "status.cert-file",
        env = "PORT_MONITOR_STATUS_CERT_FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,

    /// PEM private key of --status.cert-file.
    #[arg(
        long = "status.key-file",
        env = "PORT_MONITOR_STATUS_KEY_FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
}
