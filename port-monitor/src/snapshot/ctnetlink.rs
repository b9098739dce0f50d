//! Reading the kernel's answers to conntrack dumps (ctnetlink, `include/uapi/linux/netfilter/
//! nfnetlink_conntrack.h`): netlink messages of nested attributes, walked in place with
//! `netlink-packet-core`'s attribute iterator. Only what port-monitor needs is read: each
//! connection's protocol, original destination, the address and port it was source-NATed
//! to, and the per-CPU statistics. A table can hold hundreds of thousands of connections:
//! nothing is allocated per connection (`netlink-packet-netfilter` builds a vector of
//! attributes for each, and does not know the statistics messages).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{DefaultNla, NlasIterator};

use super::netlink::{self, Batch, Overrun};
use crate::model::{ConntrackEvent, ConntrackEvents};

/// `NFNL_SUBSYS_CTNETLINK`, the high byte of every conntrack message type.
pub const SUBSYSTEM: u16 = 1 << 8;
/// `IPCTNL_MSG_CT_GET`: dump the connections.
pub const GET: u16 = 1;
/// `IPCTNL_MSG_CT_GET_STATS_CPU`: dump the statistics, one message per CPU.
pub const GET_STATS_CPU: u16 = 4;
/// `IPCTNL_MSG_CT_GET_STATS`: the table's size and limit.
pub const GET_STATS: u16 = 5;

/// `struct nfgenmsg`: family, version, resource id.
pub const NFGENMSG: usize = 4;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
// enum ctattr_protoinfo, enum ctattr_protoinfo_tcp
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// `TCP_CONNTRACK_TIME_WAIT` (`enum tcp_conntrack`): this state and those after it are a
/// connection closing.
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
// enum ctattr_stats_global
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;
/// `IPS_SRC_NAT` (`enum ip_conntrack_status`): the connection's source was translated.
const IPS_SRC_NAT: u32 = 1 << 4;

/// The per-CPU statistic an attribute carries, by `enum ctattr_stats_cpu` number.
const fn statistic(kind: u16) -> Option<ConntrackEvent> {
    Some(match kind {
        4 => ConntrackEvent::Invalid,
        9 => ConntrackEvent::InsertFailed,
        10 => ConntrackEvent::Drop,
        11 => ConntrackEvent::EarlyDrop,
        12 => ConntrackEvent::Error,
        14 => ConntrackEvent::ClashResolve,
        _ => return None,
    })
}

/// One end of a connection as conntrack keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    pub source: Option<IpAddr>,
    pub destination: Option<IpAddr>,
    pub protocol: u8,
    pub source_port: u16,
    pub destination_port: u16,
}

/// A connection of a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// As the first packet had it.
    pub original: Tuple,
    /// As the answers come back: for a source-NATed connection, their destination is the
    /// address and port the source was translated to.
    pub reply: Tuple,
    pub status: u32,
    /// Conntrack's own TCP state (`enum tcp_conntrack`), for TCP connections.
    pub tcp_state: Option<u8>,
}

impl Connection {
    /// Whether its source was translated (SNAT, MASQUERADE).
    #[must_use]
    pub const fn is_source_nat(&self) -> bool {
        self.status & IPS_SRC_NAT != 0
    }

    /// Whether it is a TCP connection that is closing (`TIME_WAIT`, `CLOSE`): a NAT that
    /// finds no free port may take its port over (Linux 6.5 and later).
    #[must_use]
    pub fn is_closing(&self) -> bool {
        self.tcp_state
            .is_some_and(|state| state >= TCP_CONNTRACK_TIME_WAIT)
    }
}

/// Why a batch could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Overrun(#[from] Overrun),
    #[error("an attribute does not fit its message: {0}")]
    Attribute(String),
}

/// The attribute of a dump request that asks only for source-translated connections: the kernel
/// (5.15 and later) leaves the others out of the answer, which is most of the cost of a large
/// table where few connections are translated; older kernels ignore it, and [`Connection::is_source_nat`]
/// still tells.
#[must_use]
pub fn source_nat_only() -> DefaultNla {
    DefaultNla::new(CTA_STATUS, IPS_SRC_NAT.to_be_bytes().to_vec())
}

/// Calls `each` with the attributes (after the `nfgenmsg` header) of every conntrack message
/// of one batch, and says how the batch ended.
///
/// # Errors
/// When a message does not fit the batch, or `each` fails.
pub fn parse_batch(
    bytes: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), ParseError>,
) -> Result<Batch, ParseError> {
    netlink::for_each_message(bytes, |kind, payload| match payload.get(NFGENMSG..) {
        Some(attributes) if kind & 0xff00 == SUBSYSTEM => each(attributes),
        _ => Ok(()),
    })
}

/// The connection in a message's attributes.
///
/// # Errors
/// When an attribute overruns the message.
pub fn connection(attributes: &[u8]) -> Result<Connection, ParseError> {
    let mut connection = Connection::default();
    for_each(attributes, |kind, value| {
        match kind {
            CTA_TUPLE_ORIG => connection.original = tuple(value)?,
            CTA_TUPLE_REPLY => connection.reply = tuple(value)?,
            CTA_STATUS => connection.status = u32_be(value),
            CTA_PROTOINFO => connection.tcp_state = tcp_state(value)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(connection)
}

/// The values of the statistics in [`STATISTICS`] in one CPU's message, in that order.
///
/// # Errors
/// When an attribute overruns the message.
pub fn statistics(attributes: &[u8]) -> Result<ConntrackEvents, ParseError> {
    let mut values = ConntrackEvents::default();
    for_each(attributes, |kind, value| {
        if let Some(event) = statistic(kind) {
            values.add(event, u64::from(u32_be(value)));
        }
        Ok(())
    })?;
    Ok(values)
}

/// The table's entries and limit from a `GET_STATS` answer; `None` where the kernel does not
/// say (the limit is newer than the count).
///
/// # Errors
/// When an attribute overruns the message.
pub fn table_size(attributes: &[u8]) -> Result<(Option<u64>, Option<u64>), ParseError> {
    let (mut entries, mut limit) = (None, None);
    for_each(attributes, |kind, value| {
        match kind {
            CTA_STATS_GLOBAL_ENTRIES => entries = Some(u64::from(u32_be(value))),
            CTA_STATS_GLOBAL_MAX_ENTRIES => limit = Some(u64::from(u32_be(value))),
            _ => {}
        }
        Ok(())
    })?;
    Ok((entries, limit))
}

/// The TCP state in a `CTA_PROTOINFO` attribute.
fn tcp_state(attributes: &[u8]) -> Result<Option<u8>, ParseError> {
    let mut state = None;
    for_each(attributes, |kind, value| {
        if kind == CTA_PROTOINFO_TCP {
            for_each(value, |kind, value| {
                if kind == CTA_PROTOINFO_TCP_STATE {
                    state = value.first().copied();
                }
                Ok(())
            })?;
        }
        Ok(())
    })?;
    Ok(state)
}

fn tuple(attributes: &[u8]) -> Result<Tuple, ParseError> {
    let mut tuple = Tuple::default();
    for_each(attributes, |kind, value| {
        match kind {
            CTA_TUPLE_IP => for_each(value, |kind, value| {
                match kind {
                    CTA_IP_V4_SRC => tuple.source = ipv4(value),
                    CTA_IP_V4_DST => tuple.destination = ipv4(value),
                    CTA_IP_V6_SRC => tuple.source = ipv6(value),
                    CTA_IP_V6_DST => tuple.destination = ipv6(value),
                    _ => {}
                }
                Ok(())
            })?,
            CTA_TUPLE_PROTO => for_each(value, |kind, value| {
                match kind {
                    CTA_PROTO_NUM => tuple.protocol = value.first().copied().unwrap_or(0),
                    CTA_PROTO_SRC_PORT => tuple.source_port = u16_be(value),
                    CTA_PROTO_DST_PORT => tuple.destination_port = u16_be(value),
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(tuple)
}

/// Calls `each(type, value)` for every attribute in `bytes`.
fn for_each(
    bytes: &[u8],
    mut each: impl FnMut(u16, &[u8]) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    for attribute in NlasIterator::new(bytes) {
        let attribute = attribute.map_err(|error| ParseError::Attribute(error.to_string()))?;
        each(attribute.kind(), attribute.value())?;
    }
    Ok(())
}

fn ipv4(value: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 4] = value.get(..4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

fn ipv6(value: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 16] = value.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

fn u16_be(value: &[u8]) -> u16 {
    value
        .get(..2)
        .map_or(0, |bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn u32_be(value: &[u8]) -> u32 {
    value.get(..4).map_or(0, |bytes| {
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An attribute of `kind` holding `value`, padded to 4 bytes.
    pub(crate) fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let length = u16::try_from(4 + value.len()).expect("small");
        let mut bytes = length.to_ne_bytes().to_vec();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(value);
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        bytes
    }

    fn nested(kind: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        attribute(kind | 0x8000, &attributes.concat())
    }

    fn tuple_attribute(
        kind: u16,
        source: [u8; 4],
        destination: [u8; 4],
        ports: (u16, u16),
    ) -> Vec<u8> {
        nested(
            kind,
            &[
                nested(
                    CTA_TUPLE_IP,
                    &[
                        attribute(CTA_IP_V4_SRC, &source),
                        attribute(CTA_IP_V4_DST, &destination),
                    ],
                ),
                nested(
                    CTA_TUPLE_PROTO,
                    &[
                        attribute(CTA_PROTO_NUM, &[6]),
                        attribute(CTA_PROTO_SRC_PORT, &ports.0.to_be_bytes()),
                        attribute(CTA_PROTO_DST_PORT, &ports.1.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    /// A conntrack message of `kind`: an `nfgenmsg` and `attributes`.
    pub(crate) fn message(kind: u16, attributes: &[u8]) -> Vec<u8> {
        let payload = [&[2, 0, 0, 0][..], attributes].concat();
        crate::snapshot::netlink::tests::message(kind, &payload)
    }

    /// A masqueraded connection: 10.1.0.2:51000 to 10.2.0.2:80, translated to 10.2.0.1:40003,
    /// in `TIME_WAIT`.
    pub(crate) fn masqueraded() -> Vec<u8> {
        [
            tuple_attribute(CTA_TUPLE_ORIG, [10, 1, 0, 2], [10, 2, 0, 2], (51000, 80)),
            tuple_attribute(CTA_TUPLE_REPLY, [10, 2, 0, 2], [10, 2, 0, 1], (80, 40003)),
            attribute(CTA_STATUS, &(IPS_SRC_NAT | 0x8).to_be_bytes()),
            nested(
                CTA_PROTOINFO,
                &[nested(
                    CTA_PROTOINFO_TCP,
                    &[attribute(
                        CTA_PROTOINFO_TCP_STATE,
                        &[TCP_CONNTRACK_TIME_WAIT],
                    )],
                )],
            ),
        ]
        .concat()
    }

    #[test]
    fn reads_a_source_nated_connection() {
        let batch = message(SUBSYSTEM | GET, &masqueraded());
        let mut connections = Vec::new();
        let ended = parse_batch(&batch, |attributes| {
            connections.push(connection(attributes)?);
            Ok(())
        });
        assert_eq!(ended, Ok(Batch::More));
        let nat = connections[0];
        assert!(nat.is_source_nat());
        assert_eq!(nat.original.destination, Some(IpAddr::from([10, 2, 0, 2])));
        assert_eq!(nat.original.destination_port, 80);
        assert_eq!(nat.original.protocol, 6);
        assert_eq!(nat.reply.destination, Some(IpAddr::from([10, 2, 0, 1])));
        assert_eq!(nat.reply.destination_port, 40003);
        assert!(nat.is_closing());
    }

    #[test]
    fn reads_statistics_and_table_size() {
        let cpu = [
            attribute(9, &3u32.to_be_bytes()),
            attribute(10, &5u32.to_be_bytes()),
            attribute(2, &77u32.to_be_bytes()),
        ]
        .concat();
        let values = statistics(&cpu).expect("valid");
        assert_eq!(values.get(ConntrackEvent::InsertFailed), 3);
        assert_eq!(values.get(ConntrackEvent::Drop), 5);
        assert_eq!(
            values.iter().map(|(_, count)| count).sum::<u64>(),
            8,
            "2 is not exported"
        );
        let size = [
            attribute(CTA_STATS_GLOBAL_ENTRIES, &12u32.to_be_bytes()),
            attribute(CTA_STATS_GLOBAL_MAX_ENTRIES, &262_144u32.to_be_bytes()),
        ]
        .concat();
        assert_eq!(table_size(&size), Ok((Some(12), Some(262_144))));
    }

    #[test]
    fn refuses_what_overruns() {
        let mut broken = message(SUBSYSTEM | GET, &masqueraded());
        broken[0] = 255;
        assert!(matches!(
            parse_batch(&broken, |_| Ok(())),
            Err(ParseError::Overrun(_))
        ));
        let short = attribute(CTA_STATUS, &[0; 4]);
        assert!(matches!(
            connection(&short[..6]),
            Err(ParseError::Attribute(_))
        ));
    }
}
