//! Types shared by the kernel programs (`port-monitor-ebpf`) and the daemon (`port-monitor`).
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each is `#[repr(C)]`,
//! `Copy`, and laid out with no implicit padding (explicit `padding` fields), which keeps the
//! bytes the verifier sees initialised and the layout identical on both sides.
#![no_std]

pub mod event;
pub mod kernel;
pub mod maps;
pub mod socket_list;

/// `IPPROTO_TCP`.
pub const PROTOCOL_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTOCOL_UDP: u8 = 17;

/// `AF_INET`.
pub const FAMILY_INET: u16 = 2;
/// `AF_INET6`.
pub const FAMILY_INET6: u16 = 10;

/// The socket call whose result is counted.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `connect()`, including a non-blocking connect that fails later (refused, timed out).
    Connect = 1,
    /// `bind()`.
    Bind = 2,
    /// The kernel giving a UDP socket a port on its first `connect()` or send.
    Autobind = 3,
}

impl Operation {
    /// The operation with this wire value, if any.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Connect),
            2 => Some(Self::Bind),
            3 => Some(Self::Autobind),
            _ => None,
        }
    }
}
