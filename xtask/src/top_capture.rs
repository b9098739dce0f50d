//! `cargo xtask top-capture`: docs/top.txt, the screen of `port-monitor top` on a node with
//! three test namespaces (one out of ports, one near it toward a busy destination with
//! `TIME_WAIT` build-up, one idle) and a daemon counting their failures, captured with tmux as a person
//! would see it: the list, then one namespace's destinations.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

const OUTPUT: &str = "docs/top.txt";
const TMUX_SOCKET: &str = "port-monitor-top-capture";
const BINARY: &str = "target/debug/port-monitor";

/// Each namespace: its name, its ephemeral range, and the client run in it, which prints
/// "ready" once its sockets are in place and then holds them.
const NAMESPACES: [(&str, &str, &str); 3] = [
    (
        "pm-demo-batch",
        "40000 40009",
        r"
import socket, time
server = socket.socket(); server.bind(('127.0.0.1', 5432)); server.listen(64)
held = []
for _ in range(13):
    try:
        held.append(socket.create_connection(('127.0.0.1', 5432)))
    except OSError:
        pass
print('ready', flush=True); time.sleep(3600)
",
    ),
    (
        "pm-demo-api",
        "40000 40099",
        r"
import socket, time
busy = socket.socket(); busy.bind(('127.0.0.1', 8080)); busy.listen(128)
other = socket.socket(); other.bind(('127.0.0.1', 9090)); other.listen(128)
# Short connections the client closes first: its side waits in TIME_WAIT.
for _ in range(30):
    client = socket.create_connection(('127.0.0.1', 8080))
    server, _ = busy.accept()
    client.close(); time.sleep(0.01); server.close()
held = [socket.create_connection(('127.0.0.1', 8080)) for _ in range(62)]
held += [socket.create_connection(('127.0.0.1', 9090)) for _ in range(4)]
print('ready', flush=True); time.sleep(3600)
",
    ),
    (
        "pm-demo-idle",
        "32768 60999",
        r"
import socket, time
server = socket.socket(); server.bind(('127.0.0.1', 80)); server.listen(8)
print('ready', flush=True); time.sleep(3600)
",
    ),
];

/// Everything started, stopped and removed on the way out, whatever happens.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        // Quitting top usually ended the server already.
        let _ = Command::new("tmux")
            .args(["-L", TMUX_SOCKET, "kill-server"])
            .stderr(Stdio::null())
            .status();
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (name, _, _) in NAMESPACES {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn capture() -> Result<()> {
    setup::install(setup::Purpose::Test)?;
    cmd::run(cmd::command("cargo").args(["build", "--package", "port-monitor"]))?;
    let mut running = Running(Vec::new());
    let daemon = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // The daemon first, so that it counts the connects that find no port.
    running.0.push(
        Command::new(BINARY)
            .args([
                format!("--web.listen-address={daemon}"),
                "--snapshot.interval=1s".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting port-monitor")?,
    );
    std::thread::sleep(Duration::from_secs(5));
    for (name, range, client) in NAMESPACES {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        cmd::run(cmd::command("ip").args(["netns", "add", name]))?;
        cmd::run(cmd::command("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        let sysctl = format!("net.ipv4.ip_local_port_range={range}");
        cmd::run(cmd::command("ip").args(["netns", "exec", name, "sysctl", "-qw", &sysctl]))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", name, "python3", "-c", client])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the client in {name}"))?;
        let stdout = child.stdout.take().context("the client's output")?;
        running.0.push(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("the client in {name} stopped before its sockets were in place");
        }
    }
    // Two snapshots of the daemon, so that its counters are in what top reads.
    std::thread::sleep(Duration::from_secs(3));

    tmux(&[
        "new-session",
        "-d",
        "-x",
        "150",
        "-y",
        "20",
        &format!("{BINARY} top --web.listen-address={daemon} --top.refresh-interval=1s"),
    ])?;
    let list = wait_for("the list", |screen| {
        screen.contains("pm-demo-batch") && screen.contains("answered")
    })?;
    // The first row, out of ports: Enter shows where its connections went and who ran out.
    tmux(&["send-keys", "Enter"])?;
    let out_of_ports = wait_for("the batch namespace", |screen| {
        screen.contains("DESTINATION") && screen.contains("last port_exhaustion")
    })?;
    // The second: a destination near the end, with TIME_WAIT the kernel would reuse.
    tmux(&["send-keys", "Escape"])?;
    tmux(&["send-keys", "Down"])?;
    tmux(&["send-keys", "Enter"])?;
    let near = wait_for("the api namespace", |screen| {
        screen.contains("DESTINATION") && screen.contains("127.0.0.1:9090")
    })?;
    tmux(&["send-keys", "q"])?;
    let text = format!(
        "port-monitor top (150x20), captured with tmux by `cargo xtask top-capture`:\n\n{}\n\n\
         Enter on the selected namespace:\n\n{}\n\n\
         Esc, Down, Enter:\n\n{}\n",
        list.trim_end(),
        out_of_ports.trim_end(),
        near.trim_end()
    );
    std::fs::write(OUTPUT, text).with_context(|| format!("writing {OUTPUT}"))?;
    println!("wrote {OUTPUT}");
    Ok(())
}

fn tmux(args: &[&str]) -> Result<String> {
    cmd::output(cmd::command("tmux").args(["-L", TMUX_SOCKET]).args(args))
        .with_context(|| format!("tmux {args:?} failed"))
}

/// The screen once `done` holds, within 30 s.
fn wait_for(what: &str, done: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = tmux(&["capture-pane", "-p"])?;
        if done(&screen) {
            return Ok(screen);
        }
        if Instant::now() > deadline {
            bail!("top never showed {what}:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
