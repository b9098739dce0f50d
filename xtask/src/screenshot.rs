//! `cargo xtask screenshot`: the picture in docs/ of port exhaustion as Prometheus sees it.
//! A client in a test namespace with a ten-port range opens a connection to one server every
//! few seconds until the ports run out and keeps trying; port-monitor and a Prometheus server
//! on loopback record it; headless Chromium photographs Prometheus's graph of it.

use std::{
    io::Read as _,
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{cmd, setup};

const NETNS: &str = "pm-screenshot";
const OUTPUT: &str = "docs/exhaustion.png";

/// Opens one connection every 4 s to a server in the namespace, keeps them all, and after
/// the range is used up keeps failing for a while.
const CLIENT: &str = r"
import socket, time
server = socket.socket(); server.bind(('127.0.0.1', 9000)); server.listen(64)
held = []
for _ in range(24):
    try:
        held.append(socket.create_connection(('127.0.0.1', 9000)))
    except OSError:
        pass
    time.sleep(4)
";

struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn take() -> Result<()> {
    setup::install(setup::Purpose::Test)?;
    setup::install_packages(&["chromium-headless-shell"])?;
    cmd::run(cmd::command("cargo").args(["build", "--release", "--package", "port-monitor"]))?;
    let mut running = Running(Vec::new());
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    cmd::run(cmd::command("ip").args(["netns", "add", NETNS]))?;
    cmd::run(cmd::command("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
    cmd::run(cmd::command("ip").args([
        "netns",
        "exec",
        NETNS,
        "sysctl",
        "-qw",
        "net.ipv4.ip_local_port_range=40000 40009",
    ]))?;

    let exporter = free_port()?;
    running.0.push(
        Command::new("target/release/port-monitor")
            .args([
                format!("--web.listen-address=127.0.0.1:{exporter}"),
                "--snapshot.interval=1s".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting port-monitor")?,
    );
    let prometheus = free_port()?;
    let dir = std::env::temp_dir().join("port-monitor-screenshot");
    // A fresh time series database: only this run's data in the picture.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: port-monitor\n    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n"
        ),
    )?;
    running.0.push(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?,
    );
    std::thread::sleep(Duration::from_secs(5));
    println!("client running for about 100 s");
    cmd::run(cmd::command("ip").args(["netns", "exec", NETNS, "python3", "-c", CLIENT]))?;

    // Percent-encodes everything but unreserved characters (RFC 3986).
    let query = |expr: &str| -> String {
        expr.bytes()
            .map(|byte| {
                if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                    char::from(byte).to_string()
                } else {
                    format!("%{byte:02X}")
                }
            })
            .collect()
    };
    let url = format!(
        "http://127.0.0.1:{prometheus}/graph?g0.expr={}&g0.tab=0&g0.range_input=3m&g1.expr={}&g1.tab=0&g1.range_input=3m",
        query(r#"port_monitor_ephemeral_utilization_max_ratio{protocol="tcp"} > 0.01"#),
        query(r"sum by (netns) (increase(port_monitor_port_exhaustion_total[30s]))"),
    );
    ready(prometheus)?;
    cmd::run(cmd::command("chromium-headless-shell").args([
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1560",
        "--virtual-time-budget=15000",
        &format!(
            "--screenshot={}",
            std::fs::canonicalize(".")?.join(OUTPUT).display()
        ),
        &url,
    ]))?;
    println!("wrote {OUTPUT}");
    Ok(())
}

fn ready(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    std::io::Write::write_all(&mut stream, b"GET /-/ready HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(())
}
