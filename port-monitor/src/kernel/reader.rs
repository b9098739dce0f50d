//! Moving what the kernel programs produce into the model: records from the ring buffer as
//! they come, counters on a timer.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{Kernel, decode};
use crate::model::{Failure, Model, errno};

/// Records are submitted without a wake-up (a wake-up per record cost the workload ~40%);
/// the reader looks on this timer, and is woken early only when the ring is filling up.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Runs until `shutdown` turns true, then returns the kernel handle so that the caller
/// decides when the programs are detached. `on_poll` runs after each read of the counters.
///
/// # Errors
/// When the ring buffer cannot be registered with the runtime.
pub async fn run(
    mut kernel: Kernel,
    events: RingBuf<MapData>,
    model: Arc<RwLock<Model>>,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    on_poll: impl Fn(),
) -> std::io::Result<Kernel> {
    // SAFETY: the ring buffer owns its file descriptor, which stays open and the same for as
    // long as the AsyncFd owns the ring buffer.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|error| error.into_parts().1)?;
    let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
    let mut poll_timer = tokio::time::interval(poll_interval);
    let mut log = FailureLog::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            guard = events.readable_mut() => match guard {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut(), &model, &mut log);
                    guard.clear_ready();
                }
                Err(error) => tracing::warn!(%error, "polling the ring buffer failed"),
            },
            _ = drain_timer.tick() => {
                drain(events.get_mut(), &model, &mut log);
                kernel.flush_logs();
            }
            _ = poll_timer.tick() => {
                poll_counters(&mut kernel, &model);
                on_poll();
            }
        }
    }
    // Whatever arrived before the signal still counts.
    drain(events.get_mut(), &model, &mut log);
    poll_counters(&mut kernel, &model);
    Ok(kernel)
}

fn drain(events: &mut RingBuf<MapData>, model: &RwLock<Model>, log: &mut FailureLog) {
    let mut failures = Vec::new();
    let mut undecodable = 0;
    while let Some(record) = events.next() {
        match decode::decode(&record) {
            Ok(failure) => failures.push(failure),
            Err(error) => {
                undecodable += 1;
                log.undecodable(&error);
            }
        }
    }
    if failures.is_empty() && undecodable == 0 {
        return;
    }
    model
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .count_undecodable(undecodable);
    for failure in &failures {
        log.record(failure);
    }
    let mut model = model.write().unwrap_or_else(PoisonError::into_inner);
    for failure in &failures {
        if let Some(scan) = model.apply_failure(failure) {
            tracing::warn!(
                netns = failure.netns,
                kind = "port_scan",
                subject = scan,
                "anomaly"
            );
        }
    }
}

fn poll_counters(kernel: &mut Kernel, model: &RwLock<Model>) {
    let retired = model
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .retired();
    if !retired.is_empty() {
        match kernel.forget(&retired) {
            Ok(()) => model
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .forget_retired(&retired),
            Err(error) => tracing::warn!(%error, "deleting counters of deleted namespaces failed"),
        }
    }
    match kernel.read_counters() {
        Ok(counters) => model
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply_kernel_counters(&counters),
        Err(error) => tracing::warn!(%error, "reading the kernel programs' counters failed"),
    }
}

/// Logs failed calls, at most [`FailureLog::PER_SECOND`] lines a second so that a client
/// failing in a tight loop cannot flood the log; the rest are summarised. Records that do not
/// decode (a daemon and programs of different builds) are logged once a minute at most.
#[derive(Default)]
struct FailureLog {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
    undecodable_logged: Option<Instant>,
    undecodable_suppressed: u64,
}

impl FailureLog {
    const PER_SECOND: u32 = 10;
    const UNDECODABLE_EVERY: Duration = Duration::from_mins(1);

    fn undecodable(&mut self, error: &decode::DecodeError) {
        let now = Instant::now();
        if self
            .undecodable_logged
            .is_some_and(|last| now.duration_since(last) < Self::UNDECODABLE_EVERY)
        {
            self.undecodable_suppressed += 1;
            return;
        }
        tracing::warn!(
            %error,
            since_last_line = self.undecodable_suppressed,
            "undecodable record from the kernel programs (counted in port_monitor_events_undecodable_total)"
        );
        self.undecodable_logged = Some(now);
        self.undecodable_suppressed = 0;
    }

    fn record(&mut self, failure: &Failure) {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            if self.suppressed > 0 {
                tracing::warn!(suppressed = self.suppressed, "more failed calls not logged");
            }
            self.window = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged >= Self::PER_SECOND {
            self.suppressed += 1;
            return;
        }
        self.logged += 1;
        let kind = failure.kind;
        let caller = failure.caller.as_ref();
        let remote = failure.remote.map(|remote| remote.to_string());
        macro_rules! emit {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    netns = failure.netns,
                    operation = ?kind.operation,
                    protocol = kind.protocol.label(),
                    errno = errno::name(kind.errno),
                    local = %failure.local,
                    remote = remote.as_deref().unwrap_or(""),
                    comm = caller.map_or("", |caller| caller.comm.as_str()),
                    pid = caller.map_or(0, |caller| caller.tgid),
                    cgroup_id = failure.cgroup_id.unwrap_or(0),
                    $message
                )
            };
        }
        if kind.is_exhaustion() {
            emit!(warn, "port exhaustion: no free local port");
        } else {
            emit!(debug, "socket call failed");
        }
    }
}
