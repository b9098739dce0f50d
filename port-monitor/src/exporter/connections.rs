//! A bounded set of open connections that makes room for newcomers.
//!
//! A plain cap on connections can be filled by anyone: hundreds of clients that trickle a
//! header (slowloris) hold every slot until their header timeout, and the scrape that comes
//! next is refused. Here, at the cap, the connection that has waited longest without a request
//! in progress is closed to make room: a scrape sends its request within a millisecond of
//! connecting and is then being answered, so an attacker would have to open a full cap's worth
//! of connections inside that millisecond to push it out. Connections that are all answering
//! at once are never cut; only then is a newcomer refused.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::task::AbortHandle;

/// The open connections, oldest first.
pub struct Connections {
    limit: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    /// By admission order: the first entry that is not answering is the one to close.
    slots: BTreeMap<u64, Slot>,
}

struct Slot {
    answering: Arc<AtomicBool>,
    /// Set once the connection's task is spawned.
    abort: Option<AbortHandle>,
}

/// One admitted connection: leaves the set when dropped (the connection ended or was closed).
pub struct Admission {
    id: u64,
    connections: Arc<Connections>,
    answering: Arc<AtomicBool>,
}

/// Marks its connection as answering a request while it lives.
pub struct Answering(Arc<AtomicBool>);

impl Connections {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::default(),
        })
    }

    /// Admits one more connection, closing the one idle longest when the set is full.
    /// `None` when every open connection is answering a request.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.slots.len() >= self.limit {
            // A slot whose task is not spawned yet cannot be closed: it is the newest anyway.
            let idle = open.slots.iter().find_map(|(&id, slot)| {
                let closable = slot.abort.is_some() && !slot.answering.load(Ordering::Acquire);
                closable.then_some(id)
            })?;
            if let Some(abort) = open.slots.remove(&idle).and_then(|slot| slot.abort) {
                abort.abort();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let answering = Arc::new(AtomicBool::new(false));
        open.slots.insert(
            id,
            Slot {
                answering: Arc::clone(&answering),
                abort: None,
            },
        );
        Some(Admission {
            id,
            connections: Arc::clone(self),
            answering,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }
}

impl Admission {
    /// Gives the set the handle that closes this connection's task.
    pub fn attach(&self, abort: AbortHandle) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = open.slots.get_mut(&self.id) {
            slot.abort = Some(abort);
        }
    }

    /// Call when a request head has arrived; the connection cannot be closed for a newcomer
    /// until the returned guard is dropped (the answer is handed over).
    pub fn answering(&self) -> Answering {
        self.answering.store(true, Ordering::Release);
        Answering(Arc::clone(&self.answering))
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .remove(&self.id);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Admits a connection whose task waits for ever, as a trickling client's would.
    fn open_idle(
        connections: &Arc<Connections>,
    ) -> Option<(Admission, tokio::task::JoinHandle<()>)> {
        let admission = connections.admit()?;
        let task = tokio::spawn(std::future::pending());
        admission.attach(task.abort_handle());
        Some((admission, task))
    }

    #[tokio::test]
    async fn a_full_set_closes_its_oldest_idle_connection() {
        let connections = Connections::new(2);
        let (_first, first_task) = open_idle(&connections).expect("room");
        let (_second, second_task) = open_idle(&connections).expect("room");
        let (_third, _third_task) = open_idle(&connections).expect("room made");
        assert_eq!(connections.len(), 2);
        let closed = tokio::time::timeout(Duration::from_secs(1), first_task)
            .await
            .expect("the oldest is closed");
        assert!(closed.expect_err("aborted").is_cancelled());
        assert!(!second_task.is_finished());
    }

    #[tokio::test]
    async fn connections_answering_are_never_closed_for_a_newcomer() {
        let connections = Connections::new(2);
        let (first, first_task) = open_idle(&connections).expect("room");
        let (second, _second_task) = open_idle(&connections).expect("room");
        let answering_first = first.answering();
        let answering_second = second.answering();
        assert!(connections.admit().is_none(), "both are answering: refuse");
        drop(answering_second);
        let (_third, _third_task) = open_idle(&connections).expect("room made");
        assert!(!first_task.is_finished(), "the one answering stays");
        drop(answering_first);
    }

    #[tokio::test]
    async fn an_ended_connection_frees_its_slot() {
        let connections = Connections::new(1);
        let (first, _task) = open_idle(&connections).expect("room");
        drop(first);
        assert_eq!(connections.len(), 0);
        assert!(connections.admit().is_some());
    }
}
