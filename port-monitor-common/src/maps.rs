//! Names, keys and sizes of the maps the daemon reads. Each map's purpose and why its size is
//! what it is lives beside its definition in `port-monitor-ebpf/src/maps.rs`.

use crate::Operation;

/// Per-CPU hash of [`ErrorKey`] to a count of failed socket calls, except port failures.
pub const SOCKET_ERRORS: &str = "SOCKET_ERRORS";
/// Per-CPU hash of [`ErrorKey`] to a count of port failures: out of ports, port taken
/// ([`ErrorKey::is_port_failure`]). A map of their own, so that other failures (refused
/// connections, which anyone can cause in as many namespaces as they can make) cannot fill
/// the space these need.
pub const PORT_FAILURES: &str = "PORT_FAILURES";
/// Ring buffer of [`crate::event::FailureEvent`] records.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU array of [`Counter`] values: what the kernel programs could not record.
pub const COUNTERS: &str = "COUNTERS";
/// Per-CPU array of TCP state transition counts, indexed by [`transition_index`].
pub const TCP_TRANSITIONS: &str = "TCP_TRANSITIONS";

/// Hash of socket cookie to [`BoundSocket`]: TCP sockets given a port by `bind()`, the ports
/// `connect()` skips for every destination, whether the socket stays idle (which `sock_diag`
/// does not list before Linux 6.7) or connects (bind before connect). Entries go when the
/// socket is released (the `sock_release` program, before 6.7) or when a snapshot no longer
/// lists it (from 6.7, where every bound socket is listed).
pub const BOUND_SOCKETS: &str = "BOUND_SOCKETS";

/// Capacity of [`BOUND_SOCKETS`]. Bound-but-idle sockets are few, but every socket that
/// binds before it connects or listens has an entry until it closes (a proxy with a fixed
/// source address holds one per connection): past this the newest are not tracked and
/// [`Counter::BoundSocketsDropped`] counts them.
pub const BOUND_SOCKETS_MAX_ENTRIES: u32 = 65_536;

/// Capacity of [`SOCKET_ERRORS`] and of [`PORT_FAILURES`] each: one entry per (netns,
/// operation, protocol, errno) seen. A node has at most a few hundred namespaces and a
/// handful of errnos each.
pub const SOCKET_ERRORS_MAX_ENTRIES: u32 = 16_384;

/// Size in bytes of the [`EVENTS`] ring buffer (a power of two, a multiple of the page size).
/// 1 MiB holds ~11,000 failure records: several seconds of a client failing in a tight loop.
pub const EVENTS_BYTE_SIZE: u32 = 1 << 20;

/// The kernel's TCP states run from 1 (`TCP_ESTABLISHED`) to 13 (`TCP_BOUND_INACTIVE`);
/// 16 leaves room and keeps the index arithmetic a shift.
pub const TCP_STATE_SLOTS: u32 = 16;

/// Index of the `old -> new` TCP state transition in [`TCP_TRANSITIONS`].
#[must_use]
pub const fn transition_index(old: u32, new: u32) -> u32 {
    old * TCP_STATE_SLOTS + new
}

/// Key of [`SOCKET_ERRORS`] and [`PORT_FAILURES`]. 24 bytes, explicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorKey {
    /// The socket's network namespace cookie (`struct net` → `net_cookie`): unlike the inode
    /// number, never given to another namespace, so a namespace made after another was
    /// deleted does not inherit its counts. 0 on kernels without the field.
    pub netns_cookie: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// The errno, positive (`EADDRNOTAVAIL` = 99).
    pub errno: u16,
    /// [`crate::Operation`] as its wire value.
    pub operation: u8,
    /// IP protocol number ([`crate::PROTOCOL_TCP`], [`crate::PROTOCOL_UDP`]).
    pub protocol: u8,
    /// 1 when the kernel was choosing the local port: a connect without a bound port, a bind
    /// to port 0. Such a call failing with "address in use / not available" means the
    /// namespace ran out of ports.
    pub auto_port: u8,
    /// Explicit padding, always zero (the key is hashed byte by byte).
    pub padding: [u8; 7],
}

impl ErrorKey {
    /// The key of a failed `operation` in the namespace `netns` (inode number and cookie);
    /// `auto_port` when the kernel was choosing the port.
    #[must_use]
    pub const fn new(
        netns: (u32, u64),
        operation: crate::Operation,
        protocol: u8,
        errno: u16,
        auto_port: bool,
    ) -> Self {
        Self {
            netns_cookie: netns.1,
            netns: netns.0,
            errno,
            operation: operation as u8,
            protocol,
            auto_port: auto_port as u8,
            padding: [0; 7],
        }
    }
}

/// Value of [`BOUND_SOCKETS`]: where a TCP socket is bound, and who bound it. 56 bytes, no
/// padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundSocket {
    /// The socket's network namespace, as `bpf_get_netns_cookie` and `SO_NETNS_COOKIE` give
    /// it (cgroup socket programs cannot read the namespace's inode number).
    pub netns_cookie: u64,
    /// The cgroup v2 id of the process that called `bind()`; 0 when unknown.
    pub cgroup_id: u64,
    /// Local address: IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub addr: [u8; 16],
    /// The `comm` of the thread that called `bind()`, NUL-padded; empty when unknown.
    pub comm: [u8; 16],
    /// The process that called `bind()`; 0 when unknown (a socket found at start-up).
    pub tgid: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub port: u16,
}

impl ErrorKey {
    /// Whether this is a port failure: a call that found no free port (connect
    /// EADDRNOTAVAIL, bind to port 0 EADDRINUSE, autobind EAGAIN) or its port taken (bind
    /// EADDRINUSE).
    #[must_use]
    pub const fn is_port_failure(&self) -> bool {
        const EAGAIN: u16 = 11;
        const EADDRINUSE: u16 = 98;
        const EADDRNOTAVAIL: u16 = 99;
        matches!(
            (Operation::from_u8(self.operation), self.errno),
            (Some(Operation::Connect), EADDRNOTAVAIL)
                | (Some(Operation::Bind), EADDRINUSE)
                | (Some(Operation::Autobind), EAGAIN)
        )
    }
}

/// Slots of the [`COUNTERS`] array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record did not fit in the ring buffer and was dropped (its count was still kept).
    EventsLost = 0,
    /// A new [`ErrorKey`] did not fit in [`SOCKET_ERRORS`]; the failure went uncounted.
    ErrorKeysDropped = 1,
    /// A bound socket did not fit in [`BOUND_SOCKETS`]; its port may go unseen.
    BoundSocketsDropped = 2,
    /// A new port-failure key did not fit in [`PORT_FAILURES`]; the failure went uncounted
    /// (its record, if the ring buffer had room, still reached the daemon).
    PortFailureKeysDropped = 3,
}

/// Number of slots in [`COUNTERS`].
pub const COUNTER_SLOTS: u32 = 4;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integer fields, no padding (asserted in the tests below).
    unsafe impl aya::Pod for super::ErrorKey {}
    // SAFETY: repr(C), only integer fields and arrays, no padding (asserted below).
    unsafe impl aya::Pod for super::BoundSocket {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_key_has_no_padding() {
        assert_eq!(core::mem::size_of::<ErrorKey>(), 8 + 4 + 2 + 1 + 1 + 1 + 7);
    }

    #[test]
    fn port_failures_are_out_of_ports_or_port_taken() {
        let key = |operation, errno| ErrorKey::new((1, 1), operation, 6, errno, true);
        assert!(key(Operation::Connect, 99).is_port_failure());
        assert!(key(Operation::Bind, 98).is_port_failure());
        assert!(key(Operation::Autobind, 11).is_port_failure());
        assert!(!key(Operation::Connect, 111).is_port_failure());
        assert!(!key(Operation::Bind, 13).is_port_failure());
    }

    #[test]
    fn bound_socket_has_no_padding() {
        assert_eq!(
            core::mem::size_of::<BoundSocket>(),
            8 + 8 + 16 + 16 + 4 + 2 + 2
        );
    }

    #[test]
    fn transition_indices_fit_the_table() {
        assert_eq!(transition_index(13, 13), 13 * 16 + 13);
        assert!(transition_index(15, 15) < TCP_STATE_SLOTS * TCP_STATE_SLOTS);
    }
}
