//! Is the daemon doing its job: the heartbeats of its two loops, for `/-/ready` (the first
//! snapshot is in) and `/-/healthy` (both loops still beat, so that kubelet restarts a daemon
//! whose snapshot thread or kernel reader died or hung).
//!
//! The loops report here and the endpoint reads; nothing here does I/O.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// A loop is stalled when it has not beaten for this many of its intervals...
const STALLED_INTERVALS: u32 = 5;
/// ...and never sooner than this: a busy node's scheduler is not a dead daemon.
const MIN_STALL: Duration = Duration::from_secs(10);

/// The daemon's heartbeats.
pub struct Health {
    started: Instant,
    snapshot_interval: Duration,
    poll_interval: Duration,
    ready: watch::Sender<bool>,
    /// When the latest snapshot ended, and how long it took.
    snapshot: Mutex<Option<(Instant, Duration)>>,
    /// Milliseconds from `started` to the kernel reader's latest counter poll.
    polled_ms: AtomicU64,
}

impl Health {
    #[must_use]
    pub fn new(snapshot_interval: Duration, poll_interval: Duration) -> Self {
        Self {
            started: Instant::now(),
            snapshot_interval,
            poll_interval,
            ready: watch::Sender::new(false),
            snapshot: Mutex::new(None),
            polled_ms: AtomicU64::new(0),
        }
    }

    /// A snapshot of every namespace is in the model; it took `duration`.
    pub fn snapshot_taken(&self, duration: Duration) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), duration));
        self.ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
    }

    /// The kernel reader read the counters.
    pub fn counters_polled(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.polled_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Whether the first snapshot is in.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits up to `timeout` for the first snapshot; whether it came.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.subscribe();
        matches!(
            tokio::time::timeout(timeout, ready.wait_for(|ready| *ready)).await,
            Ok(Ok(_))
        )
    }

    /// What is wrong now, in words; empty when both loops beat.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        self.problems_at(Instant::now())
    }

    fn problems_at(&self, now: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        let snapshot = *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, took) = snapshot.unwrap_or((self.started, Duration::ZERO));
        // A snapshot that takes long is not a stall: allow two of the latest's length more.
        let limit = stall_limit(self.snapshot_interval) + took * 2;
        let silent = now.saturating_duration_since(last);
        if silent > limit {
            problems.push(format!(
                "no snapshot for {} s (one is due every {} s): the snapshot thread died or hangs",
                silent.as_secs(),
                self.snapshot_interval.as_secs_f64()
            ));
        }
        let polled = self.started + Duration::from_millis(self.polled_ms.load(Ordering::Relaxed));
        let silent = now.saturating_duration_since(polled);
        if silent > stall_limit(self.poll_interval) {
            problems.push(format!(
                "kernel counters not read for {} s (due every {} s): the kernel reader died or hangs",
                silent.as_secs(),
                self.poll_interval.as_secs_f64()
            ));
        }
        problems
    }
}

fn stall_limit(interval: Duration) -> Duration {
    (interval * STALLED_INTERVALS).max(MIN_STALL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_while_both_loops_beat() {
        let health = Health::new(Duration::from_secs(5), Duration::from_secs(1));
        let start = health.started;
        assert!(
            health
                .problems_at(start + Duration::from_secs(9))
                .is_empty()
        );
        health.snapshot_taken(Duration::from_millis(100));
        health.counters_polled();
        assert!(health.is_ready());
        assert!(health.problems_at(Instant::now()).is_empty());
    }

    #[test]
    fn a_silent_loop_is_named() {
        let health = Health::new(Duration::from_secs(5), Duration::from_secs(1));
        health.snapshot_taken(Duration::from_secs(1));
        health.counters_polled();
        let later = Instant::now() + Duration::from_secs(26);
        let problems = health.problems_at(later);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("kernel reader"), "{problems:?}");
        let much_later = Instant::now() + Duration::from_secs(40);
        let problems = health.problems_at(much_later);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("snapshot thread"), "{problems:?}");
    }

    #[test]
    fn a_long_snapshot_is_not_a_stall() {
        let health = Health::new(Duration::from_secs(5), Duration::from_secs(1));
        health.snapshot_taken(Duration::from_secs(20));
        health.counters_polled();
        let problems = health.problems_at(Instant::now() + Duration::from_secs(9));
        assert!(problems.is_empty(), "{problems:?}");
        let problems = health.problems_at(Instant::now() + Duration::from_secs(70));
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("snapshot thread")),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn waits_for_the_first_snapshot() {
        let health =
            std::sync::Arc::new(Health::new(Duration::from_secs(5), Duration::from_secs(1)));
        assert!(!health.wait_ready(Duration::from_millis(10)).await);
        let later = std::sync::Arc::clone(&health);
        tokio::spawn(async move { later.snapshot_taken(Duration::ZERO) });
        assert!(health.wait_ready(Duration::from_secs(5)).await);
    }
}
