//! Listing a namespace's sockets with netlink `sock_diag`, as `ss` does.

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use std::os::fd::AsRawFd as _;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{
    fold::Fold,
    inet_diag::{self, DiagSocket},
    netlink::Batch,
};
use crate::model::Protocol;

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("sock_diag dump of {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("sock_diag dump of {what}: the kernel answered error {code}")]
    Kernel { what: &'static str, code: i32 },
    #[error("sock_diag dump of {what}: undecodable message: {reason}")]
    Decode { what: &'static str, reason: String },
}

/// Opens a `sock_diag` socket in the calling thread's namespace.
///
/// # Errors
/// When the socket cannot be created.
pub fn open() -> Result<Socket, DumpError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DumpError::Socket)?;
    socket.bind_auto().map_err(DumpError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(DumpError::Socket)?;
    Ok(socket)
}

/// The UDP dumps of a namespace's socket table, one per family.
const UDP_TABLES: [(u8, &str); 2] = [(AF_INET, "udp4"), (AF_INET6, "udp6")];

/// One dump request.
#[derive(Clone, Copy)]
enum Request {
    /// `SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2`: one family, one protocol.
    Family(u8, u8),
    /// `TCPDIAG_GETSOCK` with the older `struct inet_diag_req`: the TCP sockets in the states
    /// of this mask, both families, in one walk of the hash (`inet_diag_dump_compat`, in
    /// every kernel since 2.6). The dump walks every bucket of the node's TCP hash
    /// whatever the mask, so asking per family walked it twice.
    TcpBothFamilies(u32),
}

/// Every state, including ones newer than the request (`TCP_BOUND_INACTIVE`, 6.7).
const EVERY_STATE: u32 = u32::MAX;
/// `TCPF_BOUND_INACTIVE`: bound, neither listening nor connected (Linux >= 6.7).
const BOUND_INACTIVE: u32 = 1 << 13;

/// `TCPDIAG_GETSOCK` (`include/uapi/linux/inet_diag.h`); the kernel answers with messages
/// of this type.
const TCPDIAG_GETSOCK: u16 = 18;

/// The network namespace cookie of the socket's namespace (`SO_NETNS_COOKIE`, Linux >= 5.14):
/// unlike its inode number, never reused while the node runs.
///
/// # Errors
/// When the kernel does not know the option.
pub fn netns_cookie(socket: &Socket) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut length = libc::socklen_t::try_from(std::mem::size_of::<u64>())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the option writes at most `length` bytes into `cookie`, which has that size.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut length,
        )
    };
    if result == 0 {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Adds every TCP socket (IPv4 and IPv6, every state) of the socket's namespace to `fold`.
///
/// # Errors
/// When the kernel refuses the dump or sends something undecodable.
pub fn dump_tcp(socket: &Socket, fold: &mut Fold<'_>) -> Result<(), DumpError> {
    dump(
        socket,
        Request::TcpBothFamilies(EVERY_STATE),
        "tcp",
        |diag| {
            fold.add(Protocol::Tcp, diag);
        },
    )
}

/// Adds the TCP sockets that are bound but neither listening nor connected to `fold`: those
/// the socket iterator does not see (they are only in the bind hash). Linux >= 6.7; older
/// kernels list none.
///
/// # Errors
/// As [`dump_tcp`].
pub fn dump_bound_inactive(socket: &Socket, fold: &mut Fold<'_>) -> Result<(), DumpError> {
    dump(
        socket,
        Request::TcpBothFamilies(BOUND_INACTIVE),
        "tcp bound-inactive",
        |diag| fold.add(Protocol::Tcp, diag),
    )
}

/// Adds every UDP socket (IPv4 and IPv6) of the socket's namespace to `fold`. A UDP socket
/// is listed once it has a port (bound, connected or autobound).
///
/// # Errors
/// As [`dump_tcp`].
pub fn dump_udp(socket: &Socket, fold: &mut Fold<'_>) -> Result<(), DumpError> {
    for (family, what) in UDP_TABLES {
        dump(socket, Request::Family(family, IPPROTO_UDP), what, |diag| {
            fold.add(Protocol::Udp, diag);
        })?;
    }
    Ok(())
}

/// Sends one dump request and calls `each` for every socket listed.
fn dump(
    socket: &Socket,
    request: Request,
    what: &'static str,
    mut each: impl FnMut(&DiagSocket),
) -> Result<(), DumpError> {
    let io = |source| DumpError::Io { what, source };
    let bytes = match request {
        Request::Family(family, protocol) => family_request(family, protocol),
        Request::TcpBothFamilies(states) => tcp_request(states),
    };
    socket.send(&bytes, 0).map_err(io)?;

    // A dump arrives as batches of messages, each batch one recv().
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        buffer.clear();
        socket.recv(&mut buffer, 0).map_err(io)?;
        match inet_diag::parse_batch(&buffer, &mut each) {
            Ok(Batch::More) => {}
            Ok(Batch::Done) => return Ok(()),
            Ok(Batch::Error(code)) => return Err(DumpError::Kernel { what, code }),
            Err(error) => {
                return Err(DumpError::Decode {
                    what,
                    reason: error.to_string(),
                });
            }
        }
    }
}

/// A `TCPDIAG_GETSOCK` dump request: a netlink header and a `struct inet_diag_req` (family,
/// source and destination prefix lengths, extensions, the 48-byte socket id, states,
/// tables), the sockets in `states`, nothing else.
fn tcp_request(states: u32) -> Vec<u8> {
    const REQUEST: usize = 4 + 48 + 4 + 4;
    const HEADER: usize = 16;
    let mut bytes = Vec::with_capacity(HEADER + REQUEST);
    bytes.extend_from_slice(&u32::try_from(HEADER + REQUEST).unwrap_or(0).to_ne_bytes());
    bytes.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    // Sequence number and port id: 0, the kernel fills the port id in.
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&[AF_INET, 0, 0, 0]);
    bytes.extend_from_slice(&[0; 48]);
    bytes.extend_from_slice(&states.to_ne_bytes());
    bytes.extend_from_slice(&0_u32.to_ne_bytes());
    bytes
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for every socket of one family and protocol.
fn family_request(family: u8, protocol: u8) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            // Every state, including ones newer than this crate's flag names
            // (TCP_BOUND_INACTIVE, Linux >= 6.7).
            states: StateFlags::from_bits_retain(u32::MAX),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    bytes
}
