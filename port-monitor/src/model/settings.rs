//! What the model is told to compute, and when a snapshot was taken.

use std::ops::RangeInclusive;

use super::{anomalies::PortScanLimits, nat::DEFAULT_NAT_PORTS};

/// What the model is told to compute: the configuration file's values (`config`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// TCP destinations per namespace with their own series.
    pub top_destinations: usize,
    /// Whether destination series tell source addresses apart (`src_addr`).
    pub destination_source_address: bool,
    /// Utilization ratio from which a destination is near exhaustion.
    pub near_exhaustion_ratio: f64,
    /// Share of capacity above which `TIME_WAIT` toward one destination accumulates.
    pub time_wait_share: f64,
    /// When refused connections make a port scan.
    pub port_scan: PortScanLimits,
    /// Connections a second, opened and closed between snapshots toward one destination,
    /// that make churn.
    pub churn_per_second: f64,
    /// The ports the node's source NAT hands out.
    pub nat_ports: RangeInclusive<u16>,
    /// Port ranges servers listen on: an ephemeral range should not overlap them.
    pub server_ports: Vec<RangeInclusive<u16>>,
}

/// When a snapshot was taken, for rates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// How long reading every namespace took.
    pub duration_seconds: f64,
    /// When it began, in seconds on a monotonic clock (the daemon's start, say).
    pub started_seconds: f64,
}

impl Default for Settings {
    /// The defaults of the configuration file (docs/configuration.md), written only here.
    fn default() -> Self {
        Self {
            top_destinations: 5,
            destination_source_address: true,
            near_exhaustion_ratio: 0.8,
            time_wait_share: 0.5,
            port_scan: PortScanLimits {
                window_ns: 10_000_000_000,
                refused: 100,
                distinct_ports: 20,
            },
            churn_per_second: 100.0,
            nat_ports: DEFAULT_NAT_PORTS,
            // Kubernetes NodePorts (kube-apiserver --service-node-port-range).
            server_ports: vec![30000..=32767],
        }
    }
}
