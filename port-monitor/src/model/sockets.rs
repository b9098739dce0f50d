//! Sockets of one namespace as the kernel's own tables list them, reduced to what the gauges
//! need: a count per (protocol, state) and the set of local ports held per protocol.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{
    PortSet, Protocol, TimeWaitReuse,
    connections::{ConnectionId, ConnectionSet, FastHash},
    ports::PortList,
};

/// A TCP state as the kernel numbers it (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    /// A request socket (`TCP_NEW_SYN_RECV`); `sock_diag` reports it as `SynRecv`, as `ss` does.
    NewSynRecv = 12,
    /// Bound but neither listening nor connected (Linux >= 6.7 lists these in `sock_diag`).
    BoundInactive = 13,
}

impl TcpState {
    /// States a socket table can list, in the order the metrics show them. `Close` is left
    /// out (the tables never list a closed socket) and `NewSynRecv` is folded into `SynRecv`.
    pub const LISTED: [Self; 11] = [
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait1,
        Self::FinWait2,
        Self::TimeWait,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Closing,
        Self::BoundInactive,
    ];

    /// The state with this kernel number.
    #[must_use]
    pub const fn from_kernel(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            13 => Self::BoundInactive,
            _ => return None,
        })
    }

    /// States a UDP socket is listed in: connected, or not (`ss` shows `UNCONN`).
    pub const UDP_LISTED: [Self; 2] = [Self::Established, Self::Close];

    /// The states a socket table lists for `protocol`, in the order the metrics show them.
    #[must_use]
    pub const fn listed(protocol: Protocol) -> &'static [Self] {
        match protocol {
            Protocol::Tcp => &Self::LISTED,
            Protocol::Udp => &Self::UDP_LISTED,
        }
    }

    /// The `state` label value of a `protocol` socket in this state. UDP borrows TCP's
    /// numbers: `established` when connected, `close` when not, shown as `unconnected`.
    #[must_use]
    pub const fn label_for(self, protocol: Protocol) -> &'static str {
        match (protocol, self) {
            (Protocol::Udp, Self::Close) => "unconnected",
            _ => self.label(),
        }
    }

    /// The `state` label value: the `ss` name in lower case with underscores.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::SynSent => "syn_sent",
            Self::SynRecv | Self::NewSynRecv => "syn_recv",
            Self::FinWait1 => "fin_wait1",
            Self::FinWait2 => "fin_wait2",
            Self::TimeWait => "time_wait",
            Self::Close => "close",
            Self::CloseWait => "close_wait",
            Self::LastAck => "last_ack",
            Self::Listen => "listen",
            Self::Closing => "closing",
            Self::BoundInactive => "bound_inactive",
        }
    }

    /// Index into [`SocketTally`]'s per-state counts.
    const fn slot(self) -> usize {
        match self {
            Self::NewSynRecv => Self::SynRecv as usize,
            state => state as usize,
        }
    }
}

const STATE_SLOTS: usize = 14;

/// One socket as a socket table lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    pub state: TcpState,
    /// Local address and port (port 0 while it has none).
    pub local: SocketAddr,
    /// Remote address and port; port 0 when not connected.
    pub remote: SocketAddr,
    /// Time until the socket's timer fires; for a `TIME_WAIT` socket, until it goes away.
    pub timer: Duration,
    /// A `TIME_WAIT` socket's expiry in the kernel's jiffies (low 32 bits), where the listing
    /// tells it (the socket iterator); see [`ConnectionSet`].
    pub expires_at: Option<u32>,
    /// Who gave the socket its port with `bind()`, when a TCP socket did (the kernel
    /// programs saw it); `None` otherwise.
    pub binder: Option<Binder>,
}

/// The process that bound a socket, as the kernel saw it in `bind()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binder {
    /// 0 when unknown (a socket found at start-up).
    pub tgid: u32,
    /// The thread's `comm`, NUL-padded.
    pub comm: [u8; 16],
    /// 0 when unknown.
    pub cgroup_id: u64,
}

impl Binder {
    /// The `comm` as text.
    #[must_use]
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|byte| *byte == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// A connected TCP socket whose port came from `bind()`: the port is lost to every
/// destination (`__inet_hash_connect` skips ports of bind buckets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundConnection {
    pub binder: Binder,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Where TCP connections go: Linux lets `connect()` reuse a local port toward different
/// destinations (the 4-tuple must be unique, `__inet_check_established`), so a namespace
/// runs out of ports per (source address, destination address, destination port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub source: IpAddr,
    pub address: IpAddr,
    pub port: u16,
}

/// The TCP sockets toward one destination, counted as they are listed: at most two 8 KiB
/// bitmaps and a few counters per destination, however many sockets go there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationSockets {
    /// Local ports of its sockets (one per socket: the 4-tuple is unique).
    pub local_ports: PortList,
    /// How many of them are in `TIME_WAIT`.
    pub time_wait: u32,
    /// Local ports of the `TIME_WAIT` ones a new `connect()` to this destination may take
    /// over, by the tally's reuse settings and the sockets' ages when listed.
    pub reusable: PortList,
    /// How many are still in `SYN_SENT`: connecting, no answer yet.
    pub syn_sent: u32,
    /// `TIME_WAIT` sockets of connections the previous snapshot did not list: opened and
    /// closed since (counted only when the tally was given that snapshot's connections).
    pub fresh_time_wait: u32,
}

/// How long a `TIME_WAIT` socket lives (`TCP_TIMEWAIT_LEN`, a kernel constant): its age is
/// this minus the time its timer has left.
pub const TIME_WAIT_LENGTH: Duration = Duration::from_mins(1);

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is: a dual-stack
/// socket connected to one shares the 4-tuple space of IPv4 sockets connected to `a.b.c.d`.
#[must_use]
pub fn canonical(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => address,
        },
        SocketAddr::V4(_) => address,
    }
}

/// Socket counts and held ports of one namespace, and where its connections go. Folded as
/// the sockets are listed: nothing is kept per socket but the connections' set
/// ([`ConnectionSet`], bounded), the bitmaps, and per-destination counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketTally {
    states: [[u64; STATE_SLOTS]; Protocol::COUNT],
    ports: [PortSet; Protocol::COUNT],
    /// TCP ports held by `bind()`: listening or bound-idle sockets.
    bound_tcp: PortSet,
    /// TCP ports with a listening socket.
    listening: PortSet,
    destinations: HashMap<Destination, DestinationSockets, FastHash>,
    /// When a `TIME_WAIT` socket's port may be taken over by a new `connect()`: the
    /// namespace's settings, read before its sockets are listed.
    reuse: TimeWaitReuse,
    /// Every connected TCP socket's identity: the next snapshot tells by them which
    /// connections are new.
    connections: ConnectionSet,
    /// The previous snapshot's connections, while this one is listed; `compared` says
    /// whether there was one.
    previous: Option<ConnectionSet>,
    compared: bool,
    /// Connected TCP sockets whose port came from `bind()`, by the process that bound them
    /// (the latest seen of each).
    bound_connections: HashMap<u32, BoundConnection>,
    /// How many connected TCP sockets got their port from `bind()`.
    bound_connection_count: u64,
}

impl SocketTally {
    /// A tally that judges `TIME_WAIT` reuse by `reuse` (the namespace's settings).
    #[must_use]
    pub fn with_reuse(reuse: TimeWaitReuse) -> Self {
        Self {
            reuse,
            ..Self::default()
        }
    }

    /// Compares the `TIME_WAIT` sockets counted from now on with the previous snapshot's
    /// connections: those it did not list are counted in
    /// [`DestinationSockets::fresh_time_wait`].
    pub fn compare_with(&mut self, previous: ConnectionSet) {
        self.previous = Some(previous);
        self.compared = true;
    }

    /// Whether the tally was compared with a previous snapshot's connections.
    #[must_use]
    pub fn compared(&self) -> bool {
        self.compared
    }

    /// The previous snapshot's connections given to [`Self::compare_with`], back: this
    /// snapshot failed, and the next compares with them instead.
    pub fn take_previous(&mut self) -> Option<ConnectionSet> {
        self.previous.take()
    }

    /// Leaves out of the connections kept for the next snapshot the `TIME_WAIT` sockets
    /// expiring before `expiry` (jiffies, low 32 bits), which were in `TIME_WAIT` before this
    /// listing began (see [`ConnectionSet`]). Call it before any socket is added.
    pub fn keep_time_wait_expiring_from(&mut self, expiry: u32) {
        self.connections = ConnectionSet::from_time_wait_expiring(expiry);
    }

    /// The connections counted, for the next snapshot to compare with; the tally keeps
    /// neither them nor the previous ones.
    pub fn take_connections(&mut self) -> ConnectionSet {
        self.previous = None;
        std::mem::take(&mut self.connections)
    }

    /// Counts one socket.
    pub fn add(&mut self, socket: &Socket) {
        let socket = &Socket {
            local: canonical(socket.local),
            remote: canonical(socket.remote),
            ..*socket
        };
        let port = socket.local.port();
        self.states[socket.protocol.index()][socket.state.slot()] += 1;
        if port == 0 {
            return;
        }
        self.ports[socket.protocol.index()].insert(port);
        match (socket.protocol, socket.state) {
            (Protocol::Tcp, TcpState::Listen | TcpState::BoundInactive) => {
                self.bound_tcp.insert(port);
                if socket.state == TcpState::Listen {
                    self.listening.insert(port);
                }
            }
            // Request sockets and accepted connections share their listener's port; the
            // tables list listeners first, so most are skipped here already.
            (Protocol::Tcp, TcpState::SynRecv | TcpState::NewSynRecv) => {}
            // Bound, then connected: a port lost to every destination, as a listener's is.
            (Protocol::Tcp, _) if socket.remote.port() != 0 && socket.binder.is_some() => {
                self.bound_tcp.insert(port);
                self.connections
                    .insert(ConnectionId::of(socket.local, socket.remote));
                self.bound_connection_count += 1;
                if let Some(binder) = socket.binder {
                    self.bound_connections.insert(
                        binder.tgid,
                        BoundConnection {
                            binder,
                            local: socket.local,
                            remote: socket.remote,
                        },
                    );
                }
            }
            (Protocol::Tcp, state)
                if socket.remote.port() != 0 && !self.bound_tcp.contains(port) =>
            {
                let id = || ConnectionId::of(socket.local, socket.remote);
                let time_wait = state == TcpState::TimeWait;
                if !time_wait || self.connections.covers(socket.expires_at) {
                    self.connections.insert(id());
                }
                let destination = Destination {
                    source: socket.local.ip(),
                    address: socket.remote.ip(),
                    port: socket.remote.port(),
                };
                let entry = self.destinations.entry(destination).or_default();
                entry.local_ports.insert(port);
                if state == TcpState::SynSent {
                    entry.syn_sent += 1;
                }
                if time_wait {
                    entry.time_wait += 1;
                    let age = TIME_WAIT_LENGTH.saturating_sub(socket.timer);
                    if self
                        .reuse
                        .reusable(destination.source, destination.address, age)
                    {
                        entry.reusable.insert(port);
                    }
                    // Born before the previous listing began, it was listed then: not new.
                    if self.previous.as_ref().is_some_and(|previous| {
                        previous.covers(socket.expires_at) && !previous.contains(id())
                    }) {
                        entry.fresh_time_wait += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Sockets of `protocol` in `state`.
    #[must_use]
    pub fn sockets(&self, protocol: Protocol, state: TcpState) -> u64 {
        self.states[protocol.index()][state.slot()]
    }

    /// Distinct local ports held by sockets of `protocol`.
    #[must_use]
    pub fn ports(&self, protocol: Protocol) -> &PortSet {
        &self.ports[protocol.index()]
    }

    /// TCP ports held by `bind()` (listening or bound-idle sockets).
    #[must_use]
    pub fn bound_tcp(&self) -> &PortSet {
        &self.bound_tcp
    }

    /// TCP ports with a listening socket.
    #[must_use]
    pub fn listening(&self) -> &PortSet {
        &self.listening
    }

    /// The `count` remote addresses with the most sockets in `SYN_SENT`, most first (whatever
    /// local address they connect from: a NAT on the way sees one destination).
    #[must_use]
    pub fn syn_sent(&self, count: usize) -> Vec<(SocketAddr, u32)> {
        let mut waiting: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        for (destination, sockets) in &self.destinations {
            if sockets.syn_sent > 0 {
                *waiting
                    .entry(SocketAddr::new(destination.address, destination.port))
                    .or_default() += sockets.syn_sent;
            }
        }
        let mut waiting: Vec<(SocketAddr, u32)> = waiting.into_iter().collect();
        waiting.sort_by_key(|(remote, count)| (std::cmp::Reverse(*count), *remote));
        waiting.truncate(count);
        waiting
    }

    /// TCP sockets by destination.
    pub fn destinations(&self) -> impl Iterator<Item = (&Destination, &DestinationSockets)> {
        self.destinations.iter()
    }

    /// Connected TCP sockets whose port came from `bind()`: how many, and by process.
    #[must_use]
    pub fn bound_connections(&self) -> (u64, &HashMap<u32, BoundConnection>) {
        (self.bound_connection_count, &self.bound_connections)
    }

    /// The connected TCP sockets' identities (until [`Self::take_connections`]).
    #[must_use]
    pub fn connections(&self) -> &ConnectionSet {
        &self.connections
    }
}

/// A socket for tests: `local` and `remote` as "address:port".
#[cfg(test)]
pub(crate) fn socket(protocol: Protocol, state: TcpState, local: &str, remote: &str) -> Socket {
    Socket {
        protocol,
        state,
        local: local.parse().expect("address"),
        remote: remote.parse().expect("address"),
        timer: Duration::ZERO,
        expires_at: None,
        binder: None,
    }
}

/// A TCP socket on 127.0.0.1 with no peer, for tests that only care about ports.
#[cfg(test)]
pub(crate) fn tcp(state: TcpState, port: u16) -> Socket {
    socket(
        Protocol::Tcp,
        state,
        &format!("127.0.0.1:{port}"),
        "0.0.0.0:0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_request_sockets_into_syn_recv() {
        let mut tally = SocketTally::default();
        tally.add(&tcp(TcpState::NewSynRecv, 80));
        tally.add(&tcp(TcpState::SynRecv, 80));
        assert_eq!(tally.sockets(Protocol::Tcp, TcpState::SynRecv), 2);
        assert_eq!(tally.ports(Protocol::Tcp).count_in(0..=65535), 1);
    }

    #[test]
    fn shared_ports_count_once_and_port_zero_not_at_all() {
        let mut tally = SocketTally::default();
        tally.add(&tcp(TcpState::Listen, 8080));
        tally.add(&tcp(TcpState::Established, 8080));
        tally.add(&tcp(TcpState::TimeWait, 40000));
        tally.add(&tcp(TcpState::SynSent, 0));
        assert_eq!(
            tally.ports(Protocol::Tcp).iter().collect::<Vec<_>>(),
            [8080, 40000]
        );
        assert_eq!(tally.sockets(Protocol::Tcp, TcpState::SynSent), 1);
    }

    #[test]
    fn labels_match_ss_state_names() {
        for state in TcpState::LISTED {
            let label = state.label();
            assert_eq!(label, label.to_lowercase());
            assert_eq!(TcpState::from_kernel(state as u8), Some(state));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(14), None);
    }

    /// A `TIME_WAIT` socket is fresh when the previous snapshot did not list its connection
    /// (in any state); without a previous snapshot nothing is compared.
    #[test]
    fn time_wait_of_connections_the_previous_snapshot_did_not_list_is_fresh() {
        let to = |state, port: u16| {
            socket(
                Protocol::Tcp,
                state,
                &format!("10.0.0.2:{port}"),
                "10.0.0.1:443",
            )
        };
        let mut first = SocketTally::default();
        first.add(&to(TcpState::Established, 40000));
        first.add(&to(TcpState::TimeWait, 40001));
        assert!(!first.compared());
        let previous = first.take_connections();
        assert_eq!(previous.len(), 2);
        let mut second = SocketTally::default();
        second.compare_with(previous);
        for port in [40000, 40001, 40002, 40003] {
            second.add(&to(TcpState::TimeWait, port));
        }
        second.add(&to(TcpState::Established, 40004));
        let (_, toward) = second.destinations().next().expect("one destination");
        assert_eq!((toward.time_wait, toward.fresh_time_wait), (4, 2));
        assert!(second.compared());
    }

    /// Where the listing tells each `TIME_WAIT` socket's expiry, those born before the
    /// listing began are not kept (they cannot be new next time) and not asked about: the
    /// same count as keeping every one.
    #[test]
    fn time_wait_born_before_the_previous_listing_is_neither_kept_nor_asked_about() {
        let to = |state, port: u16, expires_at: Option<u32>| Socket {
            expires_at,
            ..socket(
                Protocol::Tcp,
                state,
                &format!("10.0.0.2:{port}"),
                "10.0.0.1:443",
            )
        };
        // The first listing began when sockets born then expire at 1000.
        let mut first = SocketTally::default();
        first.keep_time_wait_expiring_from(1000);
        first.add(&to(TcpState::Established, 40000, None));
        first.add(&to(TcpState::TimeWait, 40001, Some(900)));
        first.add(&to(TcpState::TimeWait, 40002, Some(1005)));
        let previous = first.take_connections();
        assert_eq!(previous.len(), 2, "the old TIME_WAIT socket is not kept");
        let mut second = SocketTally::default();
        second.keep_time_wait_expiring_from(2000);
        second.compare_with(previous);
        // Listed before: old, born during the first listing, established then.
        second.add(&to(TcpState::TimeWait, 40001, Some(900)));
        second.add(&to(TcpState::TimeWait, 40002, Some(1005)));
        second.add(&to(TcpState::TimeWait, 40000, Some(1500)));
        // New since: opened and closed between the listings.
        second.add(&to(TcpState::TimeWait, 40003, Some(1600)));
        let (_, toward) = second.destinations().next().expect("one destination");
        assert_eq!((toward.time_wait, toward.fresh_time_wait), (4, 1));
        assert!(second.take_connections().is_empty(), "all born before 2000");
    }

    /// Past a list's worth of ports a destination's ports are a bitmap: the same count.
    #[test]
    fn a_destination_with_many_sockets_keeps_a_bitmap() {
        let mut tally = SocketTally::default();
        for port in 1024..=u16::MAX {
            tally.add(&socket(
                Protocol::Tcp,
                TcpState::Established,
                &format!("10.0.0.2:{port}"),
                "10.0.0.1:443",
            ));
        }
        let (_, toward) = tally.destinations().next().expect("one destination");
        assert!(matches!(toward.local_ports, PortList::Many(_)));
        assert_eq!(toward.local_ports.count(|port| port >= 40000), 25536);
        assert_eq!(toward.local_ports.count(|_| true), 64512);
    }
}
