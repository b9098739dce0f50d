//! Ground truth: what `ss` (iproute2) lists in a namespace, tallied the way the exporter
//! labels it.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

/// Sockets by (protocol, state label) and local ports by protocol, from `ss -tanu`.
#[derive(Debug, Default)]
pub struct SsTruth {
    pub sockets: BTreeMap<(String, String), u64>,
    pub ports: BTreeMap<String, BTreeSet<u16>>,
    /// Local ports of the sockets toward each peer, by (protocol, peer "address:port").
    pub toward: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl SsTruth {
    /// Runs `ss -tanuH` in the named namespace.
    pub fn read(netns: &str) -> Self {
        let output = Command::new("ss")
            .args(["-N", netns, "-tanuH"])
            .output()
            .expect("ss (iproute2) is installed by cargo xtask test");
        assert!(
            output.status.success(),
            "ss failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut truth = Self::default();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (netid, state, local, peer) = (fields[0], fields[1], fields[4], fields[5]);
            let label = state_label(netid, state);
            *truth.sockets.entry((netid.to_owned(), label)).or_default() += 1;
            let port: u16 = local
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .expect("local port");
            if port != 0 {
                truth
                    .ports
                    .entry(netid.to_owned())
                    .or_default()
                    .insert(port);
                truth
                    .toward
                    .entry((netid.to_owned(), peer.to_owned()))
                    .or_default()
                    .insert(port);
            }
        }
        truth
    }

    pub fn sockets(&self, protocol: &str, state: &str) -> u64 {
        self.sockets
            .get(&(protocol.to_owned(), state.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Distinct local ports of `protocol` sockets toward `peer` ("127.0.0.1:9000") within
    /// `low..=high`.
    pub fn ports_toward(&self, protocol: &str, peer: &str, low: u16, high: u16) -> u64 {
        self.toward
            .get(&(protocol.to_owned(), peer.to_owned()))
            .map_or(0, |ports| ports.range(low..=high).count() as u64)
    }

    /// Distinct local ports of `protocol` within `low..=high`.
    pub fn ports_in(&self, protocol: &str, low: u16, high: u16) -> u64 {
        self.ports
            .get(protocol)
            .map_or(0, |ports| ports.range(low..=high).count() as u64)
    }
}

/// `ss` state names (`TIME-WAIT`, `UNCONN`) as the exporter's `state` label values.
fn state_label(netid: &str, state: &str) -> String {
    match (netid, state) {
        ("udp", "UNCONN") => "unconnected".into(),
        (_, "ESTAB") => "established".into(),
        (_, other) => other
            .to_lowercase()
            .replace('-', "_")
            .replace("wait_1", "wait1")
            .replace("wait_2", "wait2"),
    }
}
