//! Namespaces come and go: when one is gone (and its kernel counters can be deleted), when a
//! new one has taken a deleted one's inode number, and which kernel counts belong to which.

use std::collections::{BTreeMap, BTreeSet};

use port_monitor_common::maps::ErrorKey;

use super::{NamespaceSnapshot, NetnsId};

/// Kernel counters to delete: a namespace's, or only those of one cookie (`Some`) under that
/// inode number.
pub type Retired = (NetnsId, Option<u64>);

/// What the model knows about namespaces beyond their latest gauges.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Namespaces with counters but not found by the latest discovery: retired if the next
    /// one does not find them either.
    unseen: BTreeSet<NetnsId>,
    /// Kernel map entries still to be deleted: of namespaces that are gone (any cookie), and
    /// of earlier namespaces whose inode number a new one has taken (their cookie).
    retired: BTreeSet<Retired>,
    /// Each namespace's cookie, from its latest snapshot.
    cookies: BTreeMap<NetnsId, u64>,
}

impl Lifecycle {
    /// Notes each namespace's cookie; returns the namespaces whose inode number a new
    /// namespace took since the previous snapshot (nothing of the old one may carry over).
    pub fn note_cookies(&mut self, snapshots: &[NamespaceSnapshot]) -> Vec<NetnsId> {
        let mut replaced = Vec::new();
        for snapshot in snapshots {
            let Some(cookie) = snapshot.cookie else {
                continue;
            };
            if let Some(earlier) = self.cookies.insert(snapshot.netns, cookie)
                && earlier != cookie
            {
                self.retired.insert((snapshot.netns, Some(earlier)));
                replaced.push(snapshot.netns);
            }
        }
        replaced
    }

    /// Of the namespaces with counters, those not `seen` by this snapshot nor the one before:
    /// gone. They are retired, and returned.
    pub fn retire_unseen(
        &mut self,
        with_counters: impl Iterator<Item = NetnsId>,
        seen: &BTreeSet<NetnsId>,
    ) -> Vec<NetnsId> {
        // A namespace seen only by the kernel programs may have been created after discovery
        // ran: give it one more interval before calling it gone.
        let unseen: BTreeSet<NetnsId> = with_counters
            .filter(|netns| !seen.contains(netns))
            .collect();
        let gone: Vec<NetnsId> = unseen.intersection(&self.unseen).copied().collect();
        for netns in &gone {
            self.retired.insert((*netns, None));
        }
        self.unseen = unseen
            .into_iter()
            .filter(|netns| !self.retired.contains(&(*netns, None)))
            .collect();
        gone
    }

    /// Whether a kernel count belongs to a namespace that is here now: not retired, and not
    /// an earlier namespace's that had the same inode number (whose entries get retired).
    pub fn admits(&mut self, key: &ErrorKey) -> bool {
        let current = self.cookies.get(&key.netns);
        if key.netns_cookie != 0 && current.is_some_and(|cookie| *cookie != key.netns_cookie) {
            self.retired.insert((key.netns, Some(key.netns_cookie)));
            return false;
        }
        !self.retired.contains(&(key.netns, None))
            && !self.retired.contains(&(key.netns, Some(key.netns_cookie)))
    }

    /// Kernel map entries that should now be deleted.
    #[must_use]
    pub fn retired(&self) -> Vec<Retired> {
        self.retired.iter().copied().collect()
    }

    /// Marks the kernel map entries of `retired` as deleted.
    pub fn forget_retired(&mut self, retired: &[Retired]) {
        for retired in retired {
            self.retired.remove(retired);
        }
    }

    /// Keeps the cookies of the namespaces `alive` says are.
    pub fn retain(&mut self, alive: impl Fn(NetnsId) -> bool) {
        self.cookies.retain(|netns, _| alive(*netns));
    }
}
