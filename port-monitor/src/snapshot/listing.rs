//! Listing one namespace's sockets into its tally: TCP with the socket iterator where the
//! kernel runs it, else with `sock_diag`, UDP with `sock_diag`; and the bound, idle TCP
//! sockets only the bind programs saw.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use port_monitor_common::{FAMILY_INET6, maps::BoundSocket, socket_list::ListedSocket};

use super::{SnapshotError, fold::Fold, inet_diag::DiagSocket, sock_diag};
use crate::{
    kernel::{TcpLister, socket_list},
    model::{self, Protocol, TcpState},
};

/// Lists every TCP and UDP socket of the namespace into `fold`: TCP with `iterator` (opened
/// in the namespace) when there is one, else with `sock_diag`, like UDP. `tracked` says
/// whether the bind programs track bound sockets. Returns the kernel's jiffies when the
/// iterator began, if it ran.
pub(super) fn list_sockets(
    socket: &netlink_sys::Socket,
    iterator: Option<(std::fs::File, &TcpLister)>,
    tracked: bool,
    fold: &mut Fold<'_>,
) -> Result<Option<u32>, SnapshotError> {
    let mut began = None;
    if let Some((iterator, lister)) = iterator {
        began = socket_list::read_all(iterator, |listed| {
            fold.add(Protocol::Tcp, &from_iterator(listed, lister));
        })?;
        // The iterator walks the listening and connection hashes only; a bound socket that
        // is in neither is idle (or gone). Where the tables list idle ones (6.7+), one dump
        // of that state alone tells which; it walks the hash too, so it runs only when a
        // tracked socket is missing, or when nothing tracks them.
        if lister.diag_lists_idle() && (!tracked || fold.unlisted().next().is_some()) {
            sock_diag::dump_bound_inactive(socket, fold)?;
        }
    } else {
        sock_diag::dump_tcp(socket, fold)?;
    }
    sock_diag::dump_udp(socket, fold)?;
    Ok(began)
}

/// An iterator record as a `sock_diag` dump would have listed it.
fn from_iterator(record: &ListedSocket, lister: &TcpLister) -> DiagSocket {
    let expires = lister.remaining(record.expires_in);
    DiagSocket {
        state: record.state,
        local: socket_address(record.family, record.local_addr, record.local_port),
        remote: socket_address(record.family, record.remote_addr, record.remote_port),
        cookie: record.cookie,
        expires_ms: u32::try_from(expires.as_millis()).unwrap_or(u32::MAX),
        expires_at: (TcpState::from_kernel(record.state) == Some(TcpState::TimeWait))
            .then_some(record.expires_at),
    }
}

/// A TCP socket the bind hooks saw get a port and the tables did not list: bound, idle.
pub(super) fn bound_inactive(bound: &BoundSocket) -> model::Socket {
    let local = socket_address(bound.family, bound.addr, bound.port);
    model::Socket {
        protocol: Protocol::Tcp,
        state: TcpState::BoundInactive,
        local,
        remote: SocketAddr::new(local.ip(), 0),
        timer: std::time::Duration::ZERO,
        expires_at: None,
        binder: None,
    }
}

/// An address the kernel programs wrote: IPv4 in the first 4 bytes of `addr`, or IPv6.
fn socket_address(family: u16, addr: [u8; 16], port: u16) -> SocketAddr {
    let ip = if family == FAMILY_INET6 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    SocketAddr::new(ip, port)
}
