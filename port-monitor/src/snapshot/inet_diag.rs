//! Reading the kernel's answers to an `inet_diag` dump: netlink messages carrying one
//! `struct inet_diag_msg` each (`include/uapi/linux/inet_diag.h`). A plain function over
//! bytes, read in place: the fields a snapshot needs, including the timer's remaining time,
//! which the netlink crates drop for `TIME_WAIT` sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::netlink::{self, Batch, Overrun};

/// One socket of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// The kernel's TCP state number (UDP sockets use the same numbers).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The socket cookie (`idiag_cookie`), as `SO_COOKIE` and `bpf_get_socket_cookie` give it.
    pub cookie: u64,
    /// Milliseconds until the socket's timer fires (`idiag_expires`); for a `TIME_WAIT`
    /// socket, until it goes away.
    pub expires_ms: u32,
    /// A `TIME_WAIT` socket's expiry in jiffies (low 32 bits): only the socket iterator
    /// tells it.
    pub expires_at: Option<u32>,
}

/// Why a batch could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Overrun(#[from] Overrun),
    #[error("a socket message of {0} bytes is shorter than struct inet_diag_msg")]
    Short(usize),
    #[error("address family {0} in a socket message")]
    Family(u8),
}

/// `SOCK_DIAG_BY_FAMILY`, the type of every socket message of a dump.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCPDIAG_GETSOCK`: the messages of the older TCP request, which lists both families in one
/// walk, carry the request's type and the same `struct inet_diag_msg`.
const TCPDIAG_GETSOCK: u16 = 18;
/// `struct inet_diag_msg`: 4 one-byte fields, the 48-byte `inet_diag_sockid`, expires,
/// rqueue, wqueue, uid, inode.
const INET_DIAG_MSG: usize = 72;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Calls `each` for every socket message of one batch, and says how the batch ended.
///
/// # Errors
/// When a message does not fit the batch or is not an `inet_diag_msg`.
pub fn parse_batch(bytes: &[u8], mut each: impl FnMut(&DiagSocket)) -> Result<Batch, ParseError> {
    netlink::for_each_message(bytes, |kind, payload| {
        if kind == SOCK_DIAG_BY_FAMILY || kind == TCPDIAG_GETSOCK {
            each(&parse_socket(payload)?);
        }
        Ok(())
    })
}

fn parse_socket(message: &[u8]) -> Result<DiagSocket, ParseError> {
    if message.len() < INET_DIAG_MSG {
        return Err(ParseError::Short(message.len()));
    }
    let family = message[0];
    let address = |at: usize| -> Result<IpAddr, ParseError> {
        let bytes = &message[at..at + 16];
        match family {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            AF_INET6 => {
                let mut octets = [0; 16];
                octets.copy_from_slice(bytes);
                Ok(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            other => Err(ParseError::Family(other)),
        }
    };
    // inet_diag_sockid at 4: sport and dport (network order), src at 8, dst at 24, ifindex at
    // 40, cookie at 44 (two u32, low half first, host order).
    let port = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]);
    Ok(DiagSocket {
        state: message[1],
        local: SocketAddr::new(address(8)?, port(4)),
        remote: SocketAddr::new(address(24)?, port(6)),
        cookie: u64::from(u32_at(message, 44)) | (u64::from(u32_at(message, 48)) << 32),
        expires_ms: u32_at(message, 52),
        expires_at: None,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::netlink::tests::message;

    const NLMSG_DONE: u16 = 3;

    fn diag(family: u8, state: u8, local: (&[u8], u16), remote: (&[u8], u16)) -> Vec<u8> {
        let mut bytes = vec![family, state, 3, 0];
        bytes.extend(local.1.to_be_bytes());
        bytes.extend(remote.1.to_be_bytes());
        for address in [local.0, remote.0] {
            let mut padded = [0u8; 16];
            padded[..address.len()].copy_from_slice(address);
            bytes.extend(padded);
        }
        bytes.extend(7u32.to_ne_bytes()); // ifindex
        bytes.extend(0x1234_5678u32.to_ne_bytes()); // cookie, low half
        bytes.extend(0x9u32.to_ne_bytes()); // cookie, high half
        bytes.extend(59_500u32.to_ne_bytes()); // expires
        bytes.extend([0; 16]); // rqueue, wqueue, uid, inode
        bytes
    }

    #[test]
    fn reads_sockets_until_done() {
        let mut batch = message(
            SOCK_DIAG_BY_FAMILY,
            &diag(AF_INET, 6, (&[127, 0, 0, 1], 40001), (&[127, 0, 0, 2], 443)),
        );
        let v6_loopback = Ipv6Addr::LOCALHOST.octets();
        batch.extend(message(
            SOCK_DIAG_BY_FAMILY,
            &diag(AF_INET6, 10, (&v6_loopback, 8080), (&[0; 16], 0)),
        ));
        let mut sockets = Vec::new();
        assert_eq!(parse_batch(&batch, |s| sockets.push(*s)), Ok(Batch::More));
        assert_eq!(
            sockets[0],
            DiagSocket {
                state: 6,
                local: "127.0.0.1:40001".parse().expect("literal"),
                remote: "127.0.0.2:443".parse().expect("literal"),
                cookie: 0x9_1234_5678,
                expires_ms: 59_500,
                expires_at: None,
            }
        );
        assert_eq!(sockets[1].local, "[::1]:8080".parse().expect("literal"));
        batch.extend(message(NLMSG_DONE, &[0; 4]));
        assert_eq!(parse_batch(&batch, |_| {}), Ok(Batch::Done));
    }

    #[test]
    fn refuses_garbage() {
        let mut overrun = message(SOCK_DIAG_BY_FAMILY, &[0; 8]);
        overrun[0] = 200;
        assert!(matches!(
            parse_batch(&overrun, |_| {}),
            Err(ParseError::Overrun(_))
        ));
        let short = message(SOCK_DIAG_BY_FAMILY, &[AF_INET; 8]);
        assert_eq!(parse_batch(&short, |_| {}), Err(ParseError::Short(8)));
        let family = message(
            SOCK_DIAG_BY_FAMILY,
            &diag(99, 1, (&[1, 2, 3, 4], 1), (&[1, 2, 3, 4], 2)),
        );
        assert_eq!(parse_batch(&family, |_| {}), Err(ParseError::Family(99)));
    }
}
