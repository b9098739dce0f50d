//! Anomalies: things that go wrong with ports, counted the moment they happen.
//!
//! Two sources:
//! - failed calls the kernel programs counted (`port_exhaustion`, `bind_conflict`): the
//!   anomaly counters are those counts, so they are exact whatever the ring buffer lost;
//! - conditions a snapshot shows (`near_exhaustion`, `time_wait_accumulation`,
//!   `listener_in_ephemeral_range`): counted once each time a destination or port crosses
//!   into the condition, not once per snapshot it stays there.

use std::collections::{BTreeMap, BTreeSet};

use super::{Destination, NetnsId};

/// A kind of anomaly; its `kind` label value is [`AnomalyKind::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// A connect, bind or autobind failed for lack of ports.
    PortExhaustion,
    /// A destination's utilization ratio reached `anomalies.near_exhaustion_ratio`.
    NearExhaustion,
    /// `bind()` to an explicit port that was in use (EADDRINUSE).
    BindConflict,
    /// A socket listens on a port of the namespace's ephemeral range that is not reserved:
    /// a client may be given it first, and then the server cannot start.
    ListenerInEphemeralRange,
    /// `TIME_WAIT` sockets toward one destination passed `anomalies.time_wait_share` of the
    /// namespace's capacity.
    TimeWaitAccumulation,
}

impl AnomalyKind {
    pub const ALL: [Self; 5] = [
        Self::PortExhaustion,
        Self::NearExhaustion,
        Self::BindConflict,
        Self::ListenerInEphemeralRange,
        Self::TimeWaitAccumulation,
    ];

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::PortExhaustion => "port_exhaustion",
            Self::NearExhaustion => "near_exhaustion",
            Self::BindConflict => "bind_conflict",
            Self::ListenerInEphemeralRange => "listener_in_ephemeral_range",
            Self::TimeWaitAccumulation => "time_wait_accumulation",
        }
    }
}

/// What a namespace's snapshot shows in an anomalous condition right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub near_exhaustion: BTreeSet<Destination>,
    pub time_wait_accumulation: BTreeSet<Destination>,
    pub listeners_in_ephemeral_range: BTreeSet<u16>,
}

/// Snapshot-derived anomaly counts, and the conditions seen last time (to count crossings).
#[derive(Debug, Default)]
pub struct Crossings {
    previous: BTreeMap<NetnsId, Conditions>,
    counts: BTreeMap<(NetnsId, AnomalyKind), u64>,
}

impl Crossings {
    /// Counts what entered a condition since the namespace's previous snapshot; returns the
    /// kinds that just happened, with what they are about, for the log.
    pub fn update(&mut self, netns: NetnsId, now: Conditions) -> Vec<(AnomalyKind, String)> {
        let previous = self.previous.remove(&netns).unwrap_or_default();
        let mut happened = Vec::new();
        let mut count = |kind, new: Vec<String>| {
            *self.counts.entry((netns, kind)).or_default() += new.len() as u64;
            happened.extend(new.into_iter().map(|what| (kind, what)));
        };
        count(
            AnomalyKind::NearExhaustion,
            now.near_exhaustion
                .difference(&previous.near_exhaustion)
                .map(describe)
                .collect(),
        );
        count(
            AnomalyKind::TimeWaitAccumulation,
            now.time_wait_accumulation
                .difference(&previous.time_wait_accumulation)
                .map(describe)
                .collect(),
        );
        count(
            AnomalyKind::ListenerInEphemeralRange,
            now.listeners_in_ephemeral_range
                .difference(&previous.listeners_in_ephemeral_range)
                .map(|port| format!("port {port}"))
                .collect(),
        );
        self.previous.insert(netns, now);
        happened
    }

    /// Forgets namespaces that are gone.
    pub fn retain(&mut self, alive: impl Fn(NetnsId) -> bool) {
        self.previous.retain(|netns, _| alive(*netns));
        self.counts.retain(|(netns, _), _| alive(*netns));
    }

    /// The count of `kind` in `netns`.
    #[must_use]
    pub fn count(&self, netns: NetnsId, kind: AnomalyKind) -> u64 {
        self.counts.get(&(netns, kind)).copied().unwrap_or(0)
    }
}

fn describe(destination: &Destination) -> String {
    format!(
        "{} -> {}:{}",
        destination.source, destination.address, destination.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(port: u16) -> Destination {
        Destination {
            source: [10, 0, 0, 2].into(),
            address: [10, 0, 0, 1].into(),
            port,
        }
    }

    #[test]
    fn counts_each_crossing_once() {
        let mut crossings = Crossings::default();
        let hot = Conditions {
            near_exhaustion: [destination(443)].into(),
            ..Conditions::default()
        };
        let cases = [
            ("crosses", hot.clone(), 1),
            ("stays above: no new count", hot.clone(), 1),
            ("falls back", Conditions::default(), 1),
            ("crosses again", hot, 2),
        ];
        for (name, conditions, expected) in cases {
            crossings.update(7, conditions);
            assert_eq!(
                crossings.count(7, AnomalyKind::NearExhaustion),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn namespaces_and_kinds_count_apart() {
        let mut crossings = Crossings::default();
        let happened = crossings.update(
            1,
            Conditions {
                time_wait_accumulation: [destination(80), destination(81)].into(),
                listeners_in_ephemeral_range: [40001].into(),
                ..Conditions::default()
            },
        );
        assert_eq!(happened.len(), 3);
        crossings.update(2, Conditions::default());
        assert_eq!(crossings.count(1, AnomalyKind::TimeWaitAccumulation), 2);
        assert_eq!(crossings.count(1, AnomalyKind::ListenerInEphemeralRange), 1);
        assert_eq!(crossings.count(2, AnomalyKind::TimeWaitAccumulation), 0);
        crossings.retain(|netns| netns != 1);
        assert_eq!(
            crossings.count(1, AnomalyKind::TimeWaitAccumulation),
            0,
            "forgotten"
        );
    }
}
