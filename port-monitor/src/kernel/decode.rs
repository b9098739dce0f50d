//! Decoding the records the kernel programs send. Plain functions over bytes: the record
//! layout is `port_monitor_common::event`, and anything that does not match it is refused
//! rather than trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use port_monitor_common::{
    FAMILY_INET, FAMILY_INET6, Operation,
    event::{EventKind, FAILURE_EVENT_SIZE, FLAG_AUTO_PORT, FLAG_HAS_CALLER, FLAG_HAS_CGROUP},
};

use crate::model::{Caller, Failure, FailureKind, Protocol};

/// Why a record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {expected}-byte layout")]
    Truncated { len: usize, expected: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("unknown operation {0}")]
    UnknownOperation(u8),
    #[error("unknown protocol {0}")]
    UnknownProtocol(u8),
    #[error("unknown address family {0}")]
    UnknownFamily(u16),
}

/// Decodes one ring buffer record.
///
/// # Errors
/// When the bytes are not a record this version of the programs sends.
pub fn decode(record: &[u8]) -> Result<Failure, DecodeError> {
    let kind = *record.first().ok_or(DecodeError::Truncated {
        len: 0,
        expected: FAILURE_EVENT_SIZE,
    })?;
    if kind != EventKind::Failure as u8 {
        return Err(DecodeError::UnknownKind(kind));
    }
    let bytes: &[u8; FAILURE_EVENT_SIZE] = record
        .get(..FAILURE_EVENT_SIZE)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(DecodeError::Truncated {
            len: record.len(),
            expected: FAILURE_EVENT_SIZE,
        })?;
    decode_failure(&Fields(bytes))
}

/// Field access by offset in the `#[repr(C)]` layout of `FailureEvent`.
struct Fields<'a>(&'a [u8; FAILURE_EVENT_SIZE]);

impl Fields<'_> {
    fn u8(&self, offset: usize) -> u8 {
        self.0[offset]
    }
    fn u16(&self, offset: usize) -> u16 {
        u16::from_ne_bytes([self.0[offset], self.0[offset + 1]])
    }
    fn u32(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.array(offset))
    }
    fn u64(&self, offset: usize) -> u64 {
        u64::from_ne_bytes(self.array(offset))
    }
    fn array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.0[offset..offset + N]);
        out
    }
}

// Offsets of `FailureEvent` fields; `layout_matches_the_shared_struct` checks them.
const OPERATION: usize = 1;
const PROTOCOL: usize = 2;
const FLAGS: usize = 3;
const NETNS: usize = 4;
const TIMESTAMP: usize = 8;
const CGROUP_ID: usize = 16;
const TGID: usize = 24;
const PID: usize = 28;
const ERRNO: usize = 32;
const FAMILY: usize = 34;
const LOCAL_PORT: usize = 36;
const REMOTE_PORT: usize = 38;
const LOCAL_ADDR: usize = 40;
const REMOTE_ADDR: usize = 56;
const COMM: usize = 72;

fn decode_failure(fields: &Fields<'_>) -> Result<Failure, DecodeError> {
    let operation = Operation::from_u8(fields.u8(OPERATION))
        .ok_or(DecodeError::UnknownOperation(fields.u8(OPERATION)))?;
    let protocol = Protocol::from_ip(fields.u8(PROTOCOL))
        .ok_or(DecodeError::UnknownProtocol(fields.u8(PROTOCOL)))?;
    let flags = fields.u8(FLAGS);
    let family = fields.u16(FAMILY);
    let address = |offset: usize| -> Result<IpAddr, DecodeError> {
        match family {
            FAMILY_INET => Ok(IpAddr::V4(Ipv4Addr::from(fields.array::<4>(offset)))),
            FAMILY_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(fields.array::<16>(offset)))),
            other => Err(DecodeError::UnknownFamily(other)),
        }
    };
    let caller = (flags & FLAG_HAS_CALLER != 0).then(|| Caller {
        tgid: fields.u32(TGID),
        pid: fields.u32(PID),
        comm: comm(&fields.array::<16>(COMM)),
    });
    let cgroup_id =
        (flags & (FLAG_HAS_CALLER | FLAG_HAS_CGROUP) != 0).then(|| fields.u64(CGROUP_ID));
    Ok(Failure {
        netns: fields.u32(NETNS),
        kind: FailureKind {
            operation,
            protocol,
            errno: fields.u16(ERRNO),
            auto_port: flags & FLAG_AUTO_PORT != 0,
        },
        caller,
        cgroup_id,
        timestamp_ns: fields.u64(TIMESTAMP),
        local: SocketAddr::new(address(LOCAL_ADDR)?, fields.u16(LOCAL_PORT)),
        remote: match operation {
            Operation::Connect => Some(SocketAddr::new(
                address(REMOTE_ADDR)?,
                fields.u16(REMOTE_PORT),
            )),
            Operation::Bind | Operation::Autobind => None,
        },
    })
}

/// A task's `comm`: up to 16 bytes, NUL-padded, not necessarily UTF-8.
fn comm(bytes: &[u8; 16]) -> String {
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::mem::offset_of;

    use port_monitor_common::{PROTOCOL_TCP, event::FailureEvent};

    use super::*;

    /// The bytes the kernel programs would send for `event`.
    pub(crate) fn record(event: &FailureEvent) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(FAILURE_EVENT_SIZE);
        bytes.push(event.kind);
        bytes.push(event.operation);
        bytes.push(event.protocol);
        bytes.push(event.flags);
        bytes.extend(event.netns.to_ne_bytes());
        bytes.extend(event.timestamp_ns.to_ne_bytes());
        bytes.extend(event.cgroup_id.to_ne_bytes());
        bytes.extend(event.tgid.to_ne_bytes());
        bytes.extend(event.pid.to_ne_bytes());
        bytes.extend(event.errno.to_ne_bytes());
        bytes.extend(event.family.to_ne_bytes());
        bytes.extend(event.local_port.to_ne_bytes());
        bytes.extend(event.remote_port.to_ne_bytes());
        bytes.extend(event.local_addr);
        bytes.extend(event.remote_addr);
        bytes.extend(event.comm);
        bytes
    }

    /// A `connect()` from `curl` (pid 4242) in netns 4026532000 that found no free port.
    pub(crate) fn exhausted_connect() -> FailureEvent {
        let mut remote_addr = [0; 16];
        remote_addr[..4].copy_from_slice(&[10, 0, 0, 7]);
        let mut comm = [0; 16];
        comm[..4].copy_from_slice(b"curl");
        FailureEvent {
            kind: EventKind::Failure as u8,
            operation: Operation::Connect as u8,
            protocol: PROTOCOL_TCP,
            flags: FLAG_HAS_CALLER | FLAG_AUTO_PORT,
            netns: 4_026_532_000,
            timestamp_ns: 1,
            cgroup_id: 77,
            tgid: 4242,
            pid: 4243,
            errno: 99,
            family: FAMILY_INET,
            local_port: 0,
            remote_port: 443,
            local_addr: [0; 16],
            remote_addr,
            comm,
        }
    }

    #[test]
    fn layout_matches_the_shared_struct() {
        let offsets = [
            (OPERATION, offset_of!(FailureEvent, operation)),
            (PROTOCOL, offset_of!(FailureEvent, protocol)),
            (FLAGS, offset_of!(FailureEvent, flags)),
            (NETNS, offset_of!(FailureEvent, netns)),
            (TIMESTAMP, offset_of!(FailureEvent, timestamp_ns)),
            (CGROUP_ID, offset_of!(FailureEvent, cgroup_id)),
            (TGID, offset_of!(FailureEvent, tgid)),
            (PID, offset_of!(FailureEvent, pid)),
            (ERRNO, offset_of!(FailureEvent, errno)),
            (FAMILY, offset_of!(FailureEvent, family)),
            (LOCAL_PORT, offset_of!(FailureEvent, local_port)),
            (REMOTE_PORT, offset_of!(FailureEvent, remote_port)),
            (LOCAL_ADDR, offset_of!(FailureEvent, local_addr)),
            (REMOTE_ADDR, offset_of!(FailureEvent, remote_addr)),
            (COMM, offset_of!(FailureEvent, comm)),
        ];
        for (ours, theirs) in offsets {
            assert_eq!(ours, theirs);
        }
        assert_eq!(record(&exhausted_connect()).len(), FAILURE_EVENT_SIZE);
    }

    #[test]
    fn decodes_records() {
        let exhausted = exhausted_connect();
        let mut bind_v6 = exhausted_connect();
        bind_v6.operation = Operation::Bind as u8;
        bind_v6.family = FAMILY_INET6;
        bind_v6.errno = 98;
        bind_v6.local_port = 8080;
        bind_v6.local_addr = Ipv6Addr::LOCALHOST.octets();
        bind_v6.flags = FLAG_HAS_CALLER;
        let mut refused = exhausted_connect();
        refused.flags = FLAG_HAS_CGROUP;
        refused.errno = 111;
        refused.local_port = 40000;

        let cases: [(&str, FailureEvent, Failure); 3] = [
            (
                "connect out of ports",
                exhausted,
                Failure {
                    netns: 4_026_532_000,
                    kind: FailureKind {
                        operation: Operation::Connect,
                        protocol: Protocol::Tcp,
                        errno: 99,
                        auto_port: true,
                    },
                    caller: Some(Caller {
                        tgid: 4242,
                        pid: 4243,
                        comm: "curl".into(),
                    }),
                    cgroup_id: Some(77),
                    timestamp_ns: 1,
                    local: "0.0.0.0:0".parse().expect("literal"),
                    remote: Some("10.0.0.7:443".parse().expect("literal")),
                },
            ),
            (
                "bind to a port in use, IPv6",
                bind_v6,
                Failure {
                    netns: 4_026_532_000,
                    kind: FailureKind {
                        operation: Operation::Bind,
                        protocol: Protocol::Tcp,
                        errno: 98,
                        auto_port: false,
                    },
                    caller: Some(Caller {
                        tgid: 4242,
                        pid: 4243,
                        comm: "curl".into(),
                    }),
                    cgroup_id: Some(77),
                    timestamp_ns: 1,
                    local: "[::1]:8080".parse().expect("literal"),
                    remote: None,
                },
            ),
            (
                "refused in softirq: no caller, the socket's cgroup",
                refused,
                Failure {
                    netns: 4_026_532_000,
                    kind: FailureKind {
                        operation: Operation::Connect,
                        protocol: Protocol::Tcp,
                        errno: 111,
                        auto_port: false,
                    },
                    caller: None,
                    cgroup_id: Some(77),
                    timestamp_ns: 1,
                    local: "0.0.0.0:40000".parse().expect("literal"),
                    remote: Some("10.0.0.7:443".parse().expect("literal")),
                },
            ),
        ];
        for (name, event, expected) in cases {
            assert_eq!(decode(&record(&event)), Ok(expected), "{name}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let good = record(&exhausted_connect());
        let with = |offset: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[offset] = value;
            bytes
        };
        let cases: [(&str, Vec<u8>, DecodeError); 5] = [
            (
                "empty",
                vec![],
                DecodeError::Truncated {
                    len: 0,
                    expected: 88,
                },
            ),
            (
                "truncated",
                good[..40].to_vec(),
                DecodeError::Truncated {
                    len: 40,
                    expected: 88,
                },
            ),
            ("kind", with(0, 9), DecodeError::UnknownKind(9)),
            (
                "operation",
                with(OPERATION, 0),
                DecodeError::UnknownOperation(0),
            ),
            ("family", with(FAMILY, 7), DecodeError::UnknownFamily(7)),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(decode(&bytes), Err(expected), "{name}");
        }
    }

    #[test]
    fn comm_that_is_not_utf8_is_replaced_not_refused() {
        let mut event = exhausted_connect();
        event.comm = [0xff; 16];
        let decoded = decode(&record(&event)).expect("valid record");
        assert_eq!(
            decoded.caller.map(|caller| caller.comm.chars().count()),
            Some(16)
        );
    }
}
