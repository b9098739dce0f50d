//! Each namespace's connections at its previous snapshot, kept by the snapshot thread so that
//! the next snapshot can count, as its sockets are listed, the `TIME_WAIT` ones of
//! connections opened since (`connection_churn`). Bounded per namespace
//! ([`ConnectionSet`]); one entry per namespace on the node.

use std::collections::HashMap;

use crate::model::{ConnectionSet, NetnsId};

/// The connections each namespace's last successful snapshot listed.
#[derive(Debug, Default)]
pub struct ConnectionMemory {
    by_netns: HashMap<NetnsId, Remembered>,
    /// Snapshots taken with this memory, for [`Remembered::seen`].
    round: u64,
    /// The kernel's jiffies (low 32 bits) when the latest listing by the socket iterator
    /// began: every later listing begins after it.
    clock: Option<u32>,
}

/// How long the kernel keeps a `TIME_WAIT` socket (`TCP_TIMEWAIT_LEN`), in seconds.
const TIME_WAIT_SECONDS: u64 = 60;

#[derive(Debug)]
struct Remembered {
    /// The namespace's cookie: an inode number given again to a new namespace does not
    /// inherit the old one's connections.
    cookie: Option<u64>,
    connections: ConnectionSet,
    /// The last round discovery found the namespace in.
    seen: u64,
}

impl ConnectionMemory {
    /// Starts a snapshot of the node.
    pub(super) fn begin(&mut self) {
        self.round += 1;
    }

    /// The namespace exists (found by discovery), whether or not it can be read.
    pub(super) fn seen(&mut self, netns: NetnsId) {
        if let Some(remembered) = self.by_netns.get_mut(&netns) {
            remembered.seen = self.round;
        }
    }

    /// The connections of the namespace's previous snapshot, taken out (they are replaced by
    /// [`Self::remember`]); none when it had none or was another namespace.
    pub(super) fn take(&mut self, netns: NetnsId, cookie: Option<u64>) -> Option<ConnectionSet> {
        let remembered = self.by_netns.remove(&netns)?;
        (remembered.cookie == cookie).then_some(remembered.connections)
    }

    pub(super) fn remember(
        &mut self,
        netns: NetnsId,
        cookie: Option<u64>,
        connections: ConnectionSet,
    ) {
        self.by_netns.insert(
            netns,
            Remembered {
                cookie,
                connections,
                seen: self.round,
            },
        );
    }

    /// Ends a snapshot: namespaces discovery missed twice in a row are gone. (Once is kept,
    /// as the model keeps a vanished namespace's bookkeeping one more snapshot.)
    pub(super) fn end(&mut self) {
        let round = self.round;
        self.by_netns
            .retain(|_, remembered| remembered.seen + 1 >= round);
    }

    /// A listing by the socket iterator began at `jiffies`.
    pub(super) fn listing_began(&mut self, jiffies: u32) {
        self.clock = Some(jiffies);
    }

    /// When a `TIME_WAIT` socket born as the next listing begins, or later, expires (jiffies,
    /// low 32 bits, on a kernel ticking `hz` a second), as far as the memory can tell: the
    /// start of the latest listing stands for it (an earlier start only keeps more).
    pub(super) fn time_wait_born_since(&self, hz: u64) -> Option<u32> {
        let length = u32::try_from(TIME_WAIT_SECONDS * hz).ok()?;
        self.clock.map(|began| began.wrapping_add(length))
    }

    /// How many connections are kept for the namespace's next snapshot.
    #[must_use]
    pub fn kept(&self, netns: NetnsId) -> Option<usize> {
        self.by_netns
            .get(&netns)
            .map(|remembered| remembered.connections.len())
    }

    /// Namespaces remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_netns.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_netns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::connections::ConnectionId;

    fn one_connection() -> ConnectionSet {
        let mut set = ConnectionSet::default();
        set.insert(ConnectionId::of(
            "10.0.0.2:40000".parse().expect("address"),
            "10.0.0.1:443".parse().expect("address"),
        ));
        set
    }

    #[test]
    fn a_namespace_gets_back_its_own_connections_only() {
        let mut memory = ConnectionMemory::default();
        memory.begin();
        memory.remember(1, Some(10), one_connection());
        memory.end();
        memory.begin();
        memory.seen(1);
        assert_eq!(memory.take(1, Some(10)).map(|set| set.len()), Some(1));
        memory.remember(1, Some(10), one_connection());
        memory.end();
        memory.begin();
        assert!(
            memory.take(1, Some(11)).is_none(),
            "a new namespace, same inode"
        );
    }

    #[test]
    fn a_namespace_missing_twice_is_forgotten() {
        let mut memory = ConnectionMemory::default();
        memory.begin();
        memory.remember(1, None, one_connection());
        memory.end();
        memory.begin();
        memory.end();
        assert_eq!(memory.len(), 1, "missed once: kept");
        memory.begin();
        memory.end();
        assert!(memory.is_empty());
    }
}
