//! Every map of the kernel programs, with its size and why.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use port_monitor_common::maps::{
    BOUND_SOCKETS_MAX_ENTRIES, BoundSocket, COUNTER_SLOTS, EVENTS_BYTE_SIZE, ErrorKey,
    SOCKET_ERRORS_MAX_ENTRIES, TCP_STATE_SLOTS,
};

/// Failed socket calls by (netns, operation, protocol, errno), port failures aside. Per-CPU, so counting takes no
/// lock and no atomic; the daemon sums the CPUs when it reads.
#[map]
pub static SOCKET_ERRORS: PerCpuHashMap<ErrorKey, u64> =
    PerCpuHashMap::with_max_entries(SOCKET_ERRORS_MAX_ENTRIES, 0);

/// Port failures (out of ports, port taken) by the same key: apart, so that no other failure
/// can crowd them out. Sized like `SOCKET_ERRORS`.
#[map]
pub static PORT_FAILURES: PerCpuHashMap<ErrorKey, u64> =
    PerCpuHashMap::with_max_entries(SOCKET_ERRORS_MAX_ENTRIES, 0);

/// TCP state transitions, indexed by `old * 16 + new`: the hot path's only work.
#[map]
pub static TCP_TRANSITIONS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(TCP_STATE_SLOTS * TCP_STATE_SLOTS, 0);

/// What could not be recorded (see `port_monitor_common::maps::Counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Failure records for the daemon (who failed, toward where).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTE_SIZE, 0);

/// What a thread asked `bind()` for, kept from the cgroup bind hook until the
/// `sys_exit_bind` tracepoint sees the result (the syscall-tracepoint way of counting bind
/// errors only).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BindRequest {
    pub addr: [u8; 16],
    pub family: u16,
    /// Host byte order; 0 asks the kernel to choose.
    pub port: u16,
    pub protocol: u8,
    pub padding: [u8; 3],
}

/// The address a thread asked `bind()` for, from the cgroup bind hook until the syscall
/// returns. LRU and small: a thread is in at most one `bind()` at a time, and an entry whose
/// exit was never seen (the daemon attached mid-call) is simply evicted.
#[map]
pub static BIND_REQUESTS: LruHashMap<u64, BindRequest> = LruHashMap::with_max_entries(4096, 0);

/// TCP sockets bound by `bind()`, by socket cookie, until released: what `sock_diag` does not
/// list before Linux 6.7. Not LRU: evicting a live entry would hide a held port silently,
/// while a full map is counted (`Counter::BoundSocketsDropped`).
#[map]
pub static BOUND_SOCKETS: HashMap<u64, BoundSocket> =
    HashMap::with_max_entries(BOUND_SOCKETS_MAX_ENTRIES, 0);
