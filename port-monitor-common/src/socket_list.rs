//! The records of the socket-listing iterator (`iter/tcp`): one per TCP socket of the
//! namespace that opened the iterator, written by the kernel program and read by the snapshot.
//! The iterator walks the kernel's socket hashes without building a netlink message a socket,
//! which is what makes it cheaper than `sock_diag` on nodes with many sockets.

/// The name of the iterator program.
pub const TCP_LISTER: &str = "tcp_sockets";

/// One TCP socket: a full socket, a `TIME_WAIT` socket or a request socket (`NEW_SYN_RECV`).
/// 56 bytes, explicit padding.
///
/// Every listing starts with one record that is no socket (`family` 0): the kernel's clock
/// when the listing began, in `expires_at` ([`Self::is_clock`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListedSocket {
    /// The socket cookie; 0 when nobody asked for it yet (the bind programs always have).
    pub cookie: u64,
    /// `TIME_WAIT` sockets: jiffies until the kernel frees it (0 or less when due); 0 for the
    /// others.
    pub expires_in: i32,
    /// `TIME_WAIT` sockets: when the kernel frees it, in jiffies (the low 32 bits, compared
    /// with wrapping arithmetic); the clock record: the jiffies when the listing began.
    pub expires_at: u32,
    /// Local address: IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub local_addr: [u8; 16],
    /// Remote address, as `local_addr`.
    pub remote_addr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// The kernel's TCP state as `sock_diag` reports it: a `TIME_WAIT` socket's substate
    /// (`TIME_WAIT` or `FIN_WAIT2`), `SYN_RECV` for a request socket.
    pub state: u8,
    pub padding: u8,
}

/// The size of one record in the iterator's output.
pub const LISTED_SOCKET_SIZE: usize = core::mem::size_of::<ListedSocket>();

const _: () = assert!(LISTED_SOCKET_SIZE == 56);

impl ListedSocket {
    /// Whether this is the listing's clock record, not a socket.
    #[must_use]
    pub const fn is_clock(&self) -> bool {
        self.family == 0
    }

    /// Reads one record from the iterator's output (`bytes` is one record long).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; LISTED_SOCKET_SIZE]) -> Self {
        // SAFETY: `bytes` holds exactly one record; every field is an integer or an array of
        // them, so any bytes are a valid value; the read does not assume alignment.
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_the_program_writes() {
        let socket = ListedSocket {
            cookie: 0x0102_0304_0506_0708,
            expires_in: -3,
            expires_at: 0xffff_fff0,
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            family: 10,
            local_port: 40_000,
            remote_port: 443,
            state: 6,
            padding: 0,
        };
        // SAFETY: repr(C), no implicit padding: every byte is initialised.
        let bytes: [u8; LISTED_SOCKET_SIZE] = unsafe { core::mem::transmute(socket) };
        assert_eq!(ListedSocket::from_bytes(&bytes), socket);
    }
}
