//! The node's own NAT: how close source NAT (SNAT, MASQUERADE) is to running out of ports
//! toward each destination, and how the conntrack table fares.
//!
//! Kernel facts this rests on:
//! - a source-NATed connection's reply tuple carries the address and port its source was
//!   translated to; the reply tuple is unique in the table, so toward one destination address
//!   and port, each NAT port serves one connection at a time (`nf_nat_used_tuple`);
//! - without `--to-ports`, SNAT and MASQUERADE pick ports from 1024-65535 for sources at or
//!   above 1024 (`nf_nat_l4proto_unique_tuple`); with it, from the given range, which only
//!   the configuration knows (`nat.port_range`);
//! - when no port is free the new connection cannot be inserted: conntrack counts
//!   `insert_failed` and `drop`, and the packet (a SYN) is dropped; the client's `connect()`
//!   times out;
//! - since Linux 6.5, a new TCP connection that finds no free port may evict a source-NATed
//!   entry that is closing (conntrack state `TIME_WAIT` or later) and take its port
//!   (`nf_nat_used_tuple_harder`), as `tcp_tw_reuse` lets `connect()` take a `TIME_WAIT`
//!   socket's: those ports are in use but not lost.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    ops::RangeInclusive,
};

use super::Protocol;

/// A NAT address and the destination its translated connections go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatKey {
    pub protocol: Protocol,
    /// The address sources were translated to.
    pub nat_address: IpAddr,
    pub destination: IpAddr,
    pub destination_port: u16,
}

/// The conntrack statistics exported: what `conntrack -S` shows, named as the kernel names
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConntrackEvent {
    /// Packets conntrack could not make sense of.
    Invalid,
    /// New connections that could not be inserted: a clash, or no NAT port free.
    InsertFailed,
    /// Packets dropped because their connection could not be set up.
    Drop,
    /// Connections evicted early because the table was full.
    EarlyDrop,
    /// ICMP errors that matched no connection.
    Error,
    /// Clashes between new connections resolved without a drop.
    ClashResolve,
}

impl ConntrackEvent {
    pub const ALL: [Self; 6] = [
        Self::Invalid,
        Self::InsertFailed,
        Self::Drop,
        Self::EarlyDrop,
        Self::Error,
        Self::ClashResolve,
    ];

    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::InsertFailed => "insert_failed",
            Self::Drop => "drop",
            Self::EarlyDrop => "early_drop",
            Self::Error => "error",
            Self::ClashResolve => "clash_resolve",
        }
    }
}

/// The statistics summed over CPUs, one count per [`ConntrackEvent`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackEvents([u64; ConntrackEvent::ALL.len()]);

impl ConntrackEvents {
    pub fn add(&mut self, event: ConntrackEvent, count: u64) {
        self.0[event as usize] += count;
    }

    #[must_use]
    pub const fn get(&self, event: ConntrackEvent) -> u64 {
        self.0[event as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConntrackEvent, u64)> + '_ {
        ConntrackEvent::ALL.into_iter().zip(self.0)
    }
}

/// One namespace's conntrack table, as one read saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConntrackSnapshot {
    /// Connections in the table.
    pub entries: u64,
    /// The table's limit, where the kernel says.
    pub limit: Option<u64>,
    /// The per-CPU statistics summed.
    pub events: ConntrackEvents,
    /// Source-NATed connections by NAT address and destination.
    pub nat: HashMap<NatKey, NatPorts>,
    /// Whether this kernel's NAT takes over closing TCP entries' ports when it finds no free
    /// one (Linux 6.5 and later).
    pub evicts_closing: bool,
}

/// The NAT ports one NAT address uses toward one destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatPorts {
    /// One per connection.
    pub ports: u32,
    /// Those whose TCP connection is closing (conntrack `TIME_WAIT`, `CLOSE`).
    pub closing: u32,
}

impl ConntrackSnapshot {
    /// Counts one source-NATed connection.
    pub fn count_nat(&mut self, key: NatKey, closing: bool) {
        let ports = self.nat.entry(key).or_default();
        ports.ports += 1;
        ports.closing += u32::from(closing);
    }

    /// Whether the table has held anything or counted anything.
    #[must_use]
    pub fn in_use(&self) -> bool {
        self.entries > 0 || self.events.iter().any(|(_, count)| count > 0)
    }
}

/// One NAT destination's share of the NAT's ports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NatUse {
    pub key: NatKey,
    /// Ports in use, closing connections' included.
    pub ports: u32,
    /// The share of the range a new connection there can no longer have.
    pub ratio: f64,
}

/// What a namespace's conntrack table shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConntrackGauges {
    /// Whether the table is in use at all: a namespace whose conntrack has seen nothing gets
    /// no series (conntrack's module is loaded for every namespace at once).
    pub in_use: bool,
    pub entries: u64,
    pub limit: Option<u64>,
    pub events: ConntrackEvents,
    /// The busiest NAT destinations, most first.
    pub top: Vec<NatUse>,
    /// Every NAT destination at ratio 1: out of ports.
    pub exhausted: Vec<NatKey>,
    /// The highest ratio per protocol.
    pub max_ratio: BTreeMap<Protocol, f64>,
}

impl ConntrackGauges {
    /// The gauges of `snapshot` for a NAT handing out ports from `ports`, with `top` NAT
    /// destinations shown.
    #[must_use]
    pub fn new(snapshot: &ConntrackSnapshot, ports: &RangeInclusive<u16>, top: usize) -> Self {
        let capacity = f64::from(u32::from(*ports.end()) + 1 - u32::from(*ports.start()));
        let mut uses: Vec<NatUse> = snapshot
            .nat
            .iter()
            .map(|(key, ports)| {
                let reclaimable = if snapshot.evicts_closing && key.protocol == Protocol::Tcp {
                    ports.closing
                } else {
                    0
                };
                NatUse {
                    key: *key,
                    ports: ports.ports,
                    ratio: (f64::from(ports.ports - reclaimable) / capacity).min(1.0),
                }
            })
            .collect();
        let mut max_ratio = BTreeMap::new();
        for use_ in &uses {
            let max = max_ratio.entry(use_.key.protocol).or_insert(0.0);
            *max = f64::max(*max, use_.ratio);
        }
        let exhausted = uses
            .iter()
            .filter(|use_| use_.ratio >= 1.0)
            .map(|use_| use_.key)
            .collect();
        uses.sort_by_key(|use_| (Reverse(use_.ports), use_.key));
        uses.truncate(top);
        Self {
            in_use: snapshot.in_use(),
            entries: snapshot.entries,
            limit: snapshot.limit,
            events: snapshot.events,
            top: uses,
            exhausted,
            max_ratio,
        }
    }
}

/// The ports SNAT and MASQUERADE pick from without `--to-ports` (for sources at or above 1024).
pub const DEFAULT_NAT_PORTS: RangeInclusive<u16> = 1024..=65535;

/// Describes a NAT destination for the anomaly's subject.
#[must_use]
pub fn describe(key: &NatKey) -> String {
    format!(
        "{} via {} -> {}:{}",
        key.protocol.label(),
        key.nat_address,
        key.destination,
        key.destination_port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> NatKey {
        NatKey {
            protocol: Protocol::Tcp,
            nat_address: IpAddr::from([10, 2, 0, 1]),
            destination: IpAddr::from([10, 2, 0, 2]),
            destination_port: port,
        }
    }

    #[test]
    fn a_five_port_nat_runs_out_toward_one_destination() {
        let mut snapshot = ConntrackSnapshot::default();
        for _ in 0..5 {
            snapshot.count_nat(key(80), false);
        }
        snapshot.count_nat(key(443), false);
        let gauges = ConntrackGauges::new(&snapshot, &(40000..=40004), 1);
        assert_eq!(gauges.top.len(), 1, "only the top one");
        assert_eq!(gauges.top[0].key, key(80));
        assert!((gauges.top[0].ratio - 1.0).abs() < f64::EPSILON);
        assert_eq!(gauges.exhausted, [key(80)]);
        assert!((gauges.max_ratio[&Protocol::Tcp] - 1.0).abs() < f64::EPSILON);
        let roomy = ConntrackGauges::new(&snapshot, &DEFAULT_NAT_PORTS, 5);
        assert!(roomy.exhausted.is_empty());
        assert!((roomy.top[0].ratio - 5.0 / 64512.0).abs() < 1e-12);
    }

    #[test]
    fn closing_tcp_connections_free_their_port_where_the_kernel_evicts_them() {
        let mut snapshot = ConntrackSnapshot::default();
        for closing in [false, false, false, true, true] {
            snapshot.count_nat(key(80), closing);
        }
        let ratio = |snapshot: &ConntrackSnapshot| {
            ConntrackGauges::new(snapshot, &(40000..=40004), 5).top[0].ratio
        };
        assert!((ratio(&snapshot) - 1.0).abs() < f64::EPSILON, "before 6.5");
        snapshot.evicts_closing = true;
        assert!((ratio(&snapshot) - 0.6).abs() < 1e-12, "6.5 and later");
        assert_eq!(
            ConntrackGauges::new(&snapshot, &(40000..=40004), 5).top[0].ports,
            5,
            "still in use"
        );
    }
}
