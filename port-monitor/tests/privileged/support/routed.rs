//! Three namespaces made for one test, joined by veth: a client, a router that forwards (and,
//! when asked, masquerades) between two test-made subnets, and a server. Removed after it.

use std::{collections::BTreeMap, net::Ipv4Addr, process::Command};

use super::TestNetns;

/// The client's address, behind the router.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
/// The router's address on the client's side: the client's gateway.
pub const ROUTER_INSIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// The router's address on the server's side: what masquerading translates sources to.
pub const ROUTER_OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
/// The server's address. It has no route back to the client's subnet: only translated
/// connections are answered.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

/// The router's interface toward the server.
const OUTSIDE: &str = "out0";

pub struct Routed {
    pub client: TestNetns,
    pub router: TestNetns,
    pub server: TestNetns,
}

impl Routed {
    pub fn new(purpose: &str) -> Self {
        let net = Self {
            client: TestNetns::new(&format!("{purpose}-c")),
            router: TestNetns::new(&format!("{purpose}-r")),
            server: TestNetns::new(&format!("{purpose}-s")),
        };
        let (client, router, server) = (
            net.client.name.as_str(),
            net.router.name.as_str(),
            net.server.name.as_str(),
        );
        ip(&[
            "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "in0", "netns",
            router,
        ]);
        ip(&[
            "-n", router, "link", "add", OUTSIDE, "type", "veth", "peer", "name", "eth0", "netns",
            server,
        ]);
        for (netns, device, address) in [
            (client, "eth0", CLIENT),
            (router, "in0", ROUTER_INSIDE),
            (router, OUTSIDE, ROUTER_OUTSIDE),
            (server, "eth0", SERVER),
        ] {
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                device,
            ]);
            ip(&["-n", netns, "link", "set", device, "up"]);
        }
        ip(&[
            "-n",
            client,
            "route",
            "add",
            "default",
            "via",
            &ROUTER_INSIDE.to_string(),
        ]);
        net.router.sysctl("net.ipv4.ip_forward", "1");
        net
    }

    /// Masquerades the router's `protocol` traffic toward the server, to the ports
    /// `to_ports` ("MIN-MAX") or, without them, as the kernel chooses (1024-65535).
    pub fn masquerade(&self, protocol: &str, to_ports: Option<&str>) {
        let mut rule = vec![
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            OUTSIDE,
            "-p",
            protocol,
            "-j",
            "MASQUERADE",
        ];
        if let Some(ports) = to_ports {
            rule.extend(["--to-ports", ports]);
        }
        exec(&self.router, "iptables", &rule);
    }
}

/// `conntrack -S` in `netns`: the per-CPU statistics, summed.
pub fn conntrack_statistics(netns: &TestNetns) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for field in exec(netns, "conntrack", &["-S"]).split_whitespace() {
        if let Some((name, value)) = field.split_once('=')
            && name != "cpu"
        {
            *sums.entry(name.to_owned()).or_default() += value.parse::<u64>().expect("a count");
        }
    }
    sums
}

/// `conntrack -C` in `netns`: the entries of its table.
pub fn conntrack_count(netns: &TestNetns) -> u64 {
    exec(netns, "conntrack", &["-C"])
        .trim()
        .parse()
        .expect("a count")
}

/// Runs `program` in `netns` (`ip netns exec`) and returns its output; fails the test if it
/// fails.
pub fn exec(netns: &TestNetns, program: &str, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", &netns.name, program])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error} (cargo xtask setup installs it)"));
    assert!(
        output.status.success(),
        "{program} {args:?} in {}: {}",
        netns.name,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed: {status}");
}
