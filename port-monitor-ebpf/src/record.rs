//! Counting a failed socket call and sending its record.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
};
use port_monitor_common::{
    event::{EventKind, FLAG_AUTO_PORT, FLAG_HAS_CALLER, FLAG_HAS_CGROUP, FailureEvent},
    maps::{Counter, ErrorKey},
};

use crate::maps::{COUNTERS, EVENTS, PORT_FAILURES, SOCKET_ERRORS};

/// Past this much unread data the record wakes the reader; below it the reader finds records
/// on its own timer. A wake-up per record cost the workload ~40% in a connect loop, batching
/// ~8% (docs/how-it-works.md).
const WAKEUP_THRESHOLD_BYTES: u64 = 256 * 1024;

/// Adds one to the count of `key`, creating the entry if it is the first. Port failures have
/// a map of their own.
pub fn count_error(key: &ErrorKey) {
    let (map, full) = if key.is_port_failure() {
        (&PORT_FAILURES, Counter::PortFailureKeysDropped)
    } else {
        (&SOCKET_ERRORS, Counter::ErrorKeysDropped)
    };
    if let Some(count) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU slot: nothing else writes it while this program runs.
        unsafe { *count += 1 };
    } else if map.insert(key, 1, 0).is_err() {
        bump(full);
    }
}

/// Adds one to a slot of the `COUNTERS` array.
pub fn bump(counter: Counter) {
    if let Some(count) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: nothing else writes it while this program runs.
        unsafe { *count += 1 };
    }
}

/// The part of a failure record the caller fills in.
pub struct Failure {
    pub key: ErrorKey,
    pub has_caller: bool,
    /// The socket's cgroup, for failures seen outside the caller's context; 0 if unknown.
    pub socket_cgroup: u64,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// Sends the record of `failure`, or counts it as lost when the ring buffer is full.
pub fn send(failure: &Failure) {
    let Some(mut entry) = EVENTS.reserve::<FailureEvent>(0) else {
        bump(Counter::EventsLost);
        return;
    };
    let (tgid, pid, cgroup_id, comm) = if failure.has_caller {
        let pid_tgid = bpf_get_current_pid_tgid();
        // SAFETY: a helper without preconditions.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        let comm = bpf_get_current_comm().unwrap_or([0; 16]);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "tgid and pid are the two halves"
        )]
        ((pid_tgid >> 32) as u32, pid_tgid as u32, cgroup_id, comm)
    } else {
        (0, 0, failure.socket_cgroup, [0; 16])
    };
    entry.write(FailureEvent {
        kind: EventKind::Failure as u8,
        operation: failure.key.operation,
        protocol: failure.key.protocol,
        flags: flag(failure.has_caller, FLAG_HAS_CALLER)
            | flag(failure.key.auto_port != 0, FLAG_AUTO_PORT)
            | flag(cgroup_id != 0, FLAG_HAS_CGROUP),
        netns: failure.key.netns,
        // SAFETY: a helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        tgid,
        pid,
        errno: failure.key.errno,
        family: failure.family,
        local_port: failure.local_port,
        remote_port: failure.remote_port,
        local_addr: failure.local_addr,
        remote_addr: failure.remote_addr,
        comm,
    });
    let wakeup = if EVENTS.query(BPF_RB_AVAIL_DATA.into()) > WAKEUP_THRESHOLD_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wakeup.into());
}

const fn flag(set: bool, flag: u8) -> u8 {
    if set { flag } else { 0 }
}
