//! Connects that timed out, by destination: what a client sees when a NAT or firewall on the
//! way drops its SYNs (a cloud NAT gateway out of ports, say), where the node itself never
//! sees a port error. Counted from the failure records, which carry the destination.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use super::{Failure, NetnsId, Protocol, errno};

/// Destinations kept per namespace: past it, a new destination is not counted (those already
/// counted keep counting), so that a client timing out toward every address cannot grow the
/// series without bound.
const DESTINATIONS_PER_NAMESPACE: usize = 64;

/// Timed-out connects by namespace and destination.
#[derive(Debug, Default)]
pub struct ConnectTimeouts(BTreeMap<NetnsId, HashMap<(Protocol, SocketAddr), u64>>);

impl ConnectTimeouts {
    /// Counts `failure` if it is a connect that timed out.
    pub fn record(&mut self, failure: &Failure) {
        let kind = failure.kind;
        let (port_monitor_common::Operation::Connect, errno::ETIMEDOUT, Some(remote)) =
            (kind.operation, kind.errno, failure.remote)
        else {
            return;
        };
        let destinations = self.0.entry(failure.netns).or_default();
        let key = (kind.protocol, remote);
        if let Some(count) = destinations.get_mut(&key) {
            *count += 1;
        } else if destinations.len() < DESTINATIONS_PER_NAMESPACE {
            destinations.insert(key, 1);
        }
    }

    /// The `count` destinations of each namespace with the most timeouts.
    pub fn top(
        &self,
        count: usize,
    ) -> impl Iterator<Item = (NetnsId, Protocol, SocketAddr, u64)> + '_ {
        self.0.iter().flat_map(move |(&netns, destinations)| {
            let mut busiest: Vec<_> = destinations.iter().collect();
            busiest.sort_by_key(|((protocol, remote), timeouts)| {
                (std::cmp::Reverse(**timeouts), *protocol, *remote)
            });
            busiest
                .into_iter()
                .take(count)
                .map(move |((protocol, remote), timeouts)| (netns, *protocol, *remote, *timeouts))
        })
    }

    /// Keeps only the namespaces `alive` says are.
    pub fn retain(&mut self, alive: impl Fn(NetnsId) -> bool) {
        self.0.retain(|netns, _| alive(*netns));
    }
}
