//! Decoding the records the kernel programs send. Plain functions over bytes: the record
//! layout is `port_monitor_common::event`, and anything that does not match it is refused
//! rather than trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use port_monitor_common::{
    FAMILY_INET, FAMILY_INET6, Operation,
    event::{
        EventKind, FAILURE_EVENT_SIZE, FLAG_AUTO_PORT, FLAG_HAS_CALLER, FLAG_HAS_CGROUP,
        FailureEvent,
    },
};

use crate::model::{Caller, Failure, FailureKind, Protocol, sockets::canonical};

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
    let bytes = record
        .get(..FAILURE_EVENT_SIZE)
        .ok_or(DecodeError::Truncated {
            len: record.len(),
            expected: FAILURE_EVENT_SIZE,
        })?;
    // SAFETY: `bytes` holds FAILURE_EVENT_SIZE bytes, and `FailureEvent` is plain data
    // (repr(C), integers and byte arrays, no padding): any bytes are a valid value. The read
    // is unaligned: a ring buffer record is only 8-byte aligned by convention. Reading the
    // shared struct itself keeps its layout written in one place.
    let event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FailureEvent>()) };
    decode_failure(&event)
}

fn decode_failure(event: &FailureEvent) -> Result<Failure, DecodeError> {
    let operation = Operation::from_u8(event.operation)
        .ok_or(DecodeError::UnknownOperation(event.operation))?;
    let protocol =
        Protocol::from_ip(event.protocol).ok_or(DecodeError::UnknownProtocol(event.protocol))?;
    let address = |bytes: [u8; 16]| -> Result<IpAddr, DecodeError> {
        match event.family {
            FAMILY_INET => Ok(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            FAMILY_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
            other => Err(DecodeError::UnknownFamily(other)),
        }
    };
    let caller = (event.flags & FLAG_HAS_CALLER != 0).then(|| Caller {
        tgid: event.tgid,
        pid: event.pid,
        comm: comm(&event.comm),
    });
    let cgroup_id =
        (event.flags & (FLAG_HAS_CALLER | FLAG_HAS_CGROUP) != 0).then_some(event.cgroup_id);
    Ok(Failure {
        netns: event.netns,
        kind: FailureKind {
            operation,
            protocol,
            errno: event.errno,
            auto_port: event.flags & FLAG_AUTO_PORT != 0,
        },
        caller,
        cgroup_id,
        timestamp_ns: event.timestamp_ns,
        local: canonical(SocketAddr::new(
            address(event.local_addr)?,
            event.local_port,
        )),
        remote: match operation {
            Operation::Connect => Some(canonical(SocketAddr::new(
                address(event.remote_addr)?,
                event.remote_port,
            ))),
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

    use port_monitor_common::PROTOCOL_TCP;

    use super::*;

    /// The bytes the kernel programs would send for `event`: the struct as it lies in memory.
    pub(crate) fn record(event: &FailureEvent) -> Vec<u8> {
        // SAFETY: `FailureEvent` is plain data without padding: every byte is initialised.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(event).cast::<u8>(), FAILURE_EVENT_SIZE)
        }
        .to_vec()
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
                with(offset_of!(FailureEvent, operation), 0),
                DecodeError::UnknownOperation(0),
            ),
            (
                "family",
                with(offset_of!(FailureEvent, family), 7),
                DecodeError::UnknownFamily(7),
            ),
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
