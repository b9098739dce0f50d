//! One look at the node: every namespace's gauges from a snapshot of its own (the model's
//! arithmetic, as the daemon's), beside the counters of a daemon on the node when one
//! answers. Plain data, rendered as text, JSON or the `top` screen.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{
    daemon::{Daemon, DaemonReport},
    namespace::NamespaceStatus,
};
use crate::{
    model::{Model, NetnsId, Settings, Timing},
    snapshot::{self, Sources},
};

/// The node as status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// When the snapshot was taken, in seconds since the epoch.
    pub taken_at: u64,
    /// How long reading every namespace took.
    pub snapshot_seconds: f64,
    /// Namespaces found but not readable this time (the log says why).
    pub unreadable: Vec<NetnsId>,
    /// Why conntrack tables were not read, when they were not.
    pub conntrack_skipped: Option<&'static str>,
    pub daemon: DaemonView,
    /// Closest to running out first.
    pub namespaces: Vec<NamespaceStatus>,
}

/// What became of asking the daemon.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonView {
    /// The URL asked, when it could be asked.
    pub url: Option<String>,
    pub answered: bool,
    /// Why not, in one line.
    pub error: Option<String>,
    pub version: Option<String>,
    /// When the daemon started (its counters count from then), in seconds since the epoch.
    pub started_at: Option<f64>,
}

/// Destinations shown per namespace: status has no series budget, so more than the
/// daemon's default five.
const DESTINATIONS_SHOWN: usize = 10;

/// What reading the node needs, made once and used for every refresh.
pub struct Gatherer {
    pub sources: Sources,
    pub settings: Settings,
    conntrack_skipped: Option<&'static str>,
    /// The daemon to ask, or why it cannot be.
    pub daemon: Result<Daemon, String>,
}

impl Gatherer {
    #[must_use]
    pub fn new(
        sources: Sources,
        mut settings: Settings,
        conntrack_skipped: Option<&'static str>,
        daemon: Result<Daemon, String>,
    ) -> Self {
        settings.top_destinations = settings.top_destinations.max(DESTINATIONS_SHOWN);
        Self {
            sources,
            settings,
            conntrack_skipped,
            daemon,
        }
    }

    /// Snapshots every namespace while the daemon is asked.
    #[must_use]
    pub fn gather(&self) -> NodeStatus {
        let (node, report) = std::thread::scope(|scope| {
            let asked = scope.spawn(|| self.ask_daemon());
            let node = snapshot::snapshot_node(&self.sources);
            let report = asked
                .join()
                .unwrap_or_else(|_| Err("asking the daemon panicked".to_owned()));
            (node, report)
        });
        let taken_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut model = Model::new(self.settings.clone());
        model.apply_snapshot(
            &node.namespaces,
            &node.failed,
            Timing {
                duration_seconds: node.duration.as_secs_f64(),
                started_seconds: 0.0,
            },
        );
        let counters = report.as_ref().ok().map(|report| &report.namespaces);
        let mut namespaces: Vec<NamespaceStatus> = model
            .namespaces()
            .map(|(netns, gauges)| {
                NamespaceStatus::new(
                    netns,
                    gauges,
                    counters.and_then(|counters| counters.get(&netns)),
                )
            })
            .collect();
        sort_by_pressure(&mut namespaces);
        NodeStatus {
            taken_at,
            snapshot_seconds: node.duration.as_secs_f64(),
            unreadable: node.failed,
            conntrack_skipped: self.conntrack_skipped,
            daemon: DaemonView {
                url: self
                    .daemon
                    .as_ref()
                    .ok()
                    .map(|daemon| daemon.url().to_owned()),
                answered: report.is_ok(),
                error: report.as_ref().err().cloned(),
                version: report
                    .as_ref()
                    .ok()
                    .and_then(|report| report.version.clone()),
                started_at: report.as_ref().ok().and_then(|report| report.started_at),
            },
            namespaces,
        }
    }

    fn ask_daemon(&self) -> Result<DaemonReport, String> {
        let daemon = self.daemon.as_ref().map_err(Clone::clone)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the async runtime: {error}"))?
            .block_on(daemon.report())
    }
}

/// Closest to running out first; then most ports held; then by id, so that the order holds
/// still between refreshes.
fn sort_by_pressure(namespaces: &mut [NamespaceStatus]) {
    namespaces.sort_by(|a, b| {
        b.utilization_max_ratio
            .total_cmp(&a.utilization_max_ratio)
            .then(b.ephemeral_in_use.cmp(&a.ephemeral_in_use))
            .then(a.netns.cmp(&b.netns))
    });
}

#[cfg(test)]
impl NodeStatus {
    /// A node of `namespaces`, no daemon asked.
    pub(crate) fn example(namespaces: Vec<NamespaceStatus>) -> Self {
        Self {
            taken_at: 1_700_000_000,
            snapshot_seconds: 0.01,
            unreadable: Vec::new(),
            conntrack_skipped: None,
            daemon: DaemonView {
                url: None,
                answered: false,
                error: Some("not asked in tests".to_owned()),
                version: None,
                started_at: None,
            },
            namespaces,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_closest_to_running_out_comes_first() {
        let namespace = |netns, ratio, in_use| NamespaceStatus {
            utilization_max_ratio: ratio,
            ephemeral_in_use: in_use,
            ..NamespaceStatus::example(netns, "x")
        };
        let mut namespaces = vec![
            namespace(1, 0.1, 50),
            namespace(2, 0.9, 1),
            namespace(3, 0.1, 60),
            namespace(4, 0.1, 60),
        ];
        sort_by_pressure(&mut namespaces);
        let order: Vec<NetnsId> = namespaces.iter().map(|namespace| namespace.netns).collect();
        assert_eq!(order, [2, 3, 4, 1]);
    }
}
