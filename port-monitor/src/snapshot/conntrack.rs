//! A namespace's conntrack table over netfilter netlink (ctnetlink), as `conntrack -L`,
//! `conntrack -S` and `conntrack -C` read it: its size and limit, the kernel's per-CPU
//! statistics summed, and the source-NATed connections counted by NAT address and
//! destination. One pass over the table, folded as it is read: no connection is kept.

use std::{os::fd::AsRawFd as _, sync::OnceLock};

use aya::util::KernelVersion;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use netlink_packet_core::{
    DefaultNla, Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader,
};

use super::{
    ctnetlink::{self, Connection},
    netlink::Batch,
};
use crate::model::{ConntrackSnapshot, NatKey, NetnsId, Protocol};

/// Why a namespace's conntrack table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("netfilter netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("conntrack {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "conntrack {what}: the kernel answered error {code}{hint}",
        hint = if *.code == -libc::EOPNOTSUPP {
            " (no ctnetlink: a kernel without CONFIG_NF_CT_NETLINK)"
        } else {
            ""
        }
    )]
    Kernel { what: &'static str, code: i32 },
    #[error("conntrack {what}: undecodable answer: {source}")]
    Decode {
        what: &'static str,
        source: ctnetlink::ParseError,
    },
}

/// Where conntrack keeps its count in every namespace once the module is loaded: without it,
/// the namespace has no conntrack table and nothing is asked (asking would load the module).
const COUNT_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// Opens a netfilter netlink socket in the calling thread's namespace if conntrack is loaded:
/// `None` where it is not (asking ctnetlink would load it, for every namespace).
#[must_use]
pub fn open_if_loaded() -> Option<Result<Socket, ConntrackError>> {
    std::path::Path::new(COUNT_SYSCTL).exists().then(open)
}

/// Reads the table through `socket` where there is one, logging why it could not: the
/// table, and whether it could not be read.
#[must_use]
pub fn read_logged(
    socket: Option<Result<Socket, ConntrackError>>,
    netns: NetnsId,
) -> (Option<ConntrackSnapshot>, bool) {
    match socket.map(|socket| socket.and_then(|socket| read(&socket))) {
        None => (None, false),
        Some(Ok(table)) => (Some(table), false),
        Some(Err(error)) => {
            tracing::warn!(netns, %error, "cannot read the namespace's conntrack table");
            (None, true)
        }
    }
}

/// Opens a netfilter netlink socket in the calling thread's namespace.
///
/// # Errors
/// When the socket cannot be created.
fn open() -> Result<Socket, ConntrackError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
    socket.bind_auto().map_err(ConntrackError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(ConntrackError::Socket)?;
    // A large table arrives faster in large batches.
    let size: libc::c_int = 1 << 20;
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        );
    }
    Ok(socket)
}

/// Reads the table of the socket's namespace.
///
/// # Errors
/// When the kernel refuses a request or answers something undecodable.
pub fn read(socket: &Socket) -> Result<ConntrackSnapshot, ConntrackError> {
    let mut snapshot = ConntrackSnapshot {
        evicts_closing: nat_evicts_closing(),
        ..ConntrackSnapshot::default()
    };
    let table_size = Request {
        message: ctnetlink::GET_STATS,
        dump: false,
        filter: None,
        what: "table size",
    };
    request(socket, &table_size, |attributes| {
        let (entries, limit) = ctnetlink::table_size(attributes)?;
        snapshot.entries = entries.unwrap_or(0);
        snapshot.limit = limit;
        Ok(())
    })?;
    let statistics = Request {
        message: ctnetlink::GET_STATS_CPU,
        dump: true,
        filter: None,
        what: "statistics",
    };
    request(socket, &statistics, |attributes| {
        for (event, count) in ctnetlink::statistics(attributes)?.iter() {
            snapshot.events.add(event, count);
        }
        Ok(())
    })?;
    let nated = Request {
        message: ctnetlink::GET,
        dump: true,
        filter: Some(ctnetlink::source_nat_only()),
        what: "table",
    };
    request(socket, &nated, |attributes| {
        let connection = ctnetlink::connection(attributes)?;
        if let Some(key) = nat_key(&connection) {
            snapshot.count_nat(key, connection.is_closing());
        }
        Ok(())
    })?;
    Ok(snapshot)
}

/// Whether this kernel's NAT evicts a closing TCP entry to take its port when it finds no
/// free one (`nf_nat_used_tuple_harder`, Linux 6.5).
fn nat_evicts_closing() -> bool {
    static EVICTS: OnceLock<bool> = OnceLock::new();
    *EVICTS.get_or_init(|| {
        KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 5, 0))
    })
}

/// Where a source-NATed connection goes, and the address its source became.
fn nat_key(connection: &Connection) -> Option<NatKey> {
    if !connection.is_source_nat() {
        return None;
    }
    let (original, reply) = (connection.original, connection.reply);
    Some(NatKey {
        protocol: Protocol::from_ip(original.protocol)?,
        // The answers go back to the translated source.
        nat_address: reply.destination?,
        destination: original.destination?,
        destination_port: original.destination_port,
    })
}

/// One ctnetlink request.
struct Request {
    message: u16,
    /// A dump, answered in batches until `NLMSG_DONE`; else one answer and an acknowledgement.
    dump: bool,
    /// An attribute that narrows a dump.
    filter: Option<DefaultNla>,
    /// What it asks, for errors.
    what: &'static str,
}

/// Sends one ctnetlink request and calls `each` with every answer's attributes.
fn request(
    socket: &Socket,
    request: &Request,
    mut each: impl FnMut(&[u8]) -> Result<(), ctnetlink::ParseError>,
) -> Result<(), ConntrackError> {
    let what = request.what;
    let mut header = NetlinkHeader::default();
    let attributes = header.buffer_len() + ctnetlink::NFGENMSG;
    let length = attributes + request.filter.as_ref().map_or(0, Emitable::buffer_len);
    header.length = u32::try_from(length).unwrap_or(u32::MAX);
    header.message_type = ctnetlink::SUBSYSTEM | request.message;
    header.flags = NLM_F_REQUEST | if request.dump { NLM_F_DUMP } else { NLM_F_ACK };
    let mut bytes = vec![0; length];
    header.emit(&mut bytes);
    // The nfgenmsg stays zero: AF_UNSPEC (every family), version 0, resource 0.
    if let Some(filter) = &request.filter {
        filter.emit(&mut bytes[attributes..]);
    }
    let io = |source| ConntrackError::Io { what, source };
    socket.send(&bytes, 0).map_err(io)?;
    let mut buffer = Vec::with_capacity(256 * 1024);
    loop {
        buffer.clear();
        socket.recv(&mut buffer, 0).map_err(io)?;
        match ctnetlink::parse_batch(&buffer, &mut each)
            .map_err(|source| ConntrackError::Decode { what, source })?
        {
            Batch::More => {}
            Batch::Done => return Ok(()),
            Batch::Error(code) => return Err(ConntrackError::Kernel { what, code }),
        }
    }
}
