//! Records the kernel programs send over the ring buffer.
//!
//! Only rare events travel this way (a failed connect or bind): a ring buffer record costs the
//! workload ~400 ns even without a wake-up (docs/how-it-works.md, "What a hook costs"), so
//! anything that only needs counting is counted in a map instead.

/// The first byte of every record says which record it is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`FailureEvent`].
    Failure = 1,
}

/// A `connect()` or `bind()` that failed, with who made the call and where it went.
///
/// 88 bytes, no padding: the fields are ordered by alignment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureEvent {
    /// [`EventKind::Failure`].
    pub kind: u8,
    /// [`crate::Operation`] as its wire value.
    pub operation: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// [`FLAG_HAS_CALLER`] and [`FLAG_AUTO_PORT`].
    pub flags: u8,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// `bpf_ktime_get_ns()` when the failure was seen.
    pub timestamp_ns: u64,
    /// cgroup v2 id of the caller, or of the socket (see [`FLAG_HAS_CGROUP`]).
    pub cgroup_id: u64,
    /// Process id (thread group id) of the caller.
    pub tgid: u32,
    /// Thread id of the caller.
    pub pid: u32,
    /// The errno, positive.
    pub errno: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order; 0 when none was assigned.
    pub local_port: u16,
    /// Remote port, host byte order; 0 for bind.
    pub remote_port: u16,
    /// Local address: IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub local_addr: [u8; 16],
    /// Remote address, as `local_addr`; zero for bind.
    pub remote_addr: [u8; 16],
    /// The caller's `comm`, NUL-padded.
    pub comm: [u8; 16],
}

/// `tgid`, `pid`, `comm` and `cgroup_id` describe the caller. Unset when the failure was seen
/// outside the caller's context (a refusal or timeout handled in softirq).
pub const FLAG_HAS_CALLER: u8 = 1;
/// The kernel was choosing the local port (connect without a bound port, bind to port 0).
pub const FLAG_AUTO_PORT: u8 = 2;
/// `cgroup_id` is the socket's cgroup, known even without the caller.
pub const FLAG_HAS_CGROUP: u8 = 4;

/// Size of a [`FailureEvent`] on the wire.
pub const FAILURE_EVENT_SIZE: usize = core::mem::size_of::<FailureEvent>();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_event_has_no_padding() {
        let fields = 4 + 4 + 8 + 8 + 4 + 4 + 4 * 2 + 3 * 16;
        assert_eq!(FAILURE_EVENT_SIZE, fields);
    }
}
