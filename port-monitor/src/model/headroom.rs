//! How close a namespace is to running out of ports: per destination for TCP, per local
//! address for UDP, from one snapshot of its socket table.
//!
//! Kernel facts this rests on:
//! - `connect()` may reuse a local port toward a different destination (the 4-tuple must be
//!   unique, `__inet_check_established`), so TCP runs out per (source address, destination
//!   address, destination port), not per namespace.
//! - `__inet_hash_connect` skips every port whose bind bucket was made by `bind()`
//!   (listeners, bound sockets): those are lost to every destination at once.
//! - UDP ports are exclusive per local address, and a wildcard bind takes the port on every
//!   address (`udp_lib_lport_inuse`).

use std::{cmp::Reverse, collections::BTreeMap, net::IpAddr};

use super::{Destination, PortConfig, PortSet, Protocol, SocketTally};

/// One destination's share of the namespace's ephemeral ports.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationUse {
    pub destination: Destination,
    /// Ephemeral ports of sockets toward it, `TIME_WAIT` included.
    pub ports: u32,
    /// Of those, the sockets in `TIME_WAIT`.
    pub time_wait: u32,
    /// `(ports + ports held by bind() in the range) / capacity`.
    pub ratio: f64,
}

/// The headroom of one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Headroom {
    /// The `top_k` TCP destinations using the most ports, most first.
    pub top: Vec<DestinationUse>,
    /// Every TCP destination's ratio, for checks that must see all of them.
    pub all: BTreeMap<Destination, DestinationUse>,
    /// The highest ratio per protocol, over every destination (TCP) or local address (UDP).
    pub max_ratio: BTreeMap<Protocol, f64>,
}

/// Computes the headroom of a namespace from its socket table and port settings.
#[must_use]
pub fn headroom(sockets: &SocketTally, ports: &PortConfig, top: Top) -> Headroom {
    let capacity = f64::from(ports.capacity().max(1));
    let ephemeral = |port: u16| ports.ephemeral.contains(&port) && !ports.reserved.contains(port);
    let bound = sockets.bound_tcp();
    let bound_in_range = f64::from(count(bound.iter(), ephemeral));

    let mut all = BTreeMap::new();
    for (destination, use_) in sockets.destinations() {
        let in_range = |port: &&u16| ephemeral(**port) && !bound.contains(**port);
        let ports = count(use_.local_ports.iter().copied(), |port| in_range(&&port));
        if ports == 0 {
            continue;
        }
        all.insert(
            *destination,
            DestinationUse {
                destination: *destination,
                ports,
                time_wait: use_.time_wait,
                ratio: (f64::from(ports) + bound_in_range) / capacity,
            },
        );
    }
    let tcp_max = all
        .values()
        .map(|use_| use_.ratio)
        .fold(bound_in_range / capacity, f64::max);

    let mut by_address: BTreeMap<IpAddr, PortSet> = BTreeMap::new();
    let mut wildcard = PortSet::default();
    for (address, local_ports) in sockets.udp_addresses() {
        let set = if address.is_unspecified() {
            &mut wildcard
        } else {
            by_address.entry(*address).or_default()
        };
        for &port in local_ports.iter().filter(|port| ephemeral(**port)) {
            set.insert(port);
        }
    }
    let wildcard_count = count(wildcard.iter(), |_| true);
    let udp_max = by_address
        .values()
        .map(|set| {
            count(set.iter().filter(|port| !wildcard.contains(*port)), |_| {
                true
            }) + wildcard_count
        })
        .fold(wildcard_count, u32::max);

    let mut busiest: Vec<DestinationUse> = if top.by_source {
        all.values().cloned().collect()
    } else {
        merge_sources(all.values())
    };
    busiest.sort_by_key(|use_| (Reverse(use_.ports), use_.destination));
    busiest.truncate(top.count);
    Headroom {
        top: busiest,
        all,
        max_ratio: [
            (Protocol::Tcp, tcp_max),
            (Protocol::Udp, f64::from(udp_max) / capacity),
        ]
        .into(),
    }
}

/// Which destinations get their own series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Top {
    /// How many, busiest first.
    pub count: usize,
    /// Whether the source address tells destinations apart. When not, each destination
    /// address and port shows its most-used source (exhaustion is per source), with the
    /// source left unspecified.
    pub by_source: bool,
}

/// One entry per destination address and port: the busiest source's use, source unspecified.
fn merge_sources<'a>(
    destinations: impl Iterator<Item = &'a DestinationUse>,
) -> Vec<DestinationUse> {
    let mut merged: BTreeMap<(IpAddr, u16), DestinationUse> = BTreeMap::new();
    for use_ in destinations {
        let key = (use_.destination.address, use_.destination.port);
        let busier = merged
            .get(&key)
            .is_none_or(|known| use_.ports > known.ports);
        if busier {
            let unspecified = if use_.destination.address.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            };
            let mut use_ = use_.clone();
            use_.destination.source = unspecified;
            merged.insert(key, use_);
        }
    }
    merged.into_values().collect()
}

fn count(ports: impl Iterator<Item = u16>, keep: impl Fn(u16) -> bool) -> u32 {
    u32::try_from(ports.filter(|port| keep(*port)).count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        TcpState::{Established, Listen, TimeWait},
        ports::parse_reserved_ports,
        sockets::socket,
    };

    fn config() -> PortConfig {
        PortConfig {
            ephemeral: 40000..=40009,
            reserved: parse_reserved_ports("40009").expect("valid"),
        }
    }

    fn tally(sockets: &[(Protocol, crate::model::TcpState, &str, &str)]) -> SocketTally {
        let mut tally = SocketTally::default();
        for &(protocol, state, local, remote) in sockets {
            tally.add(&socket(protocol, state, local, remote));
        }
        tally
    }

    const HOT: &str = "10.0.0.1:443";

    #[test]
    fn a_hot_destination_runs_out_while_the_namespace_looks_fine() {
        let tally = tally(&[
            (Protocol::Tcp, Established, "10.0.0.2:40000", HOT),
            (Protocol::Tcp, Established, "10.0.0.2:40001", HOT),
            (Protocol::Tcp, TimeWait, "10.0.0.2:40002", HOT),
            // The same local port toward another destination: allowed, counted there.
            (Protocol::Tcp, Established, "10.0.0.2:40000", "10.0.0.9:80"),
            // Outside the range (explicit bind) and a reserved port: not the kernel's to give.
            (Protocol::Tcp, Established, "10.0.0.2:5000", HOT),
            (Protocol::Tcp, Established, "10.0.0.2:40009", HOT),
        ]);
        let headroom = headroom(
            &tally,
            &config(),
            Top {
                count: 1,
                by_source: true,
            },
        );
        let hot = &headroom.top[0];
        assert_eq!(hot.destination.address.to_string(), "10.0.0.1");
        assert_eq!((hot.ports, hot.time_wait), (3, 1));
        assert!((hot.ratio - 3.0 / 9.0).abs() < 1e-9, "{}", hot.ratio);
        assert_eq!(headroom.top.len(), 1, "only the top K");
        assert_eq!(headroom.all.len(), 2, "but every destination is checked");
        assert!((headroom.max_ratio[&Protocol::Tcp] - 3.0 / 9.0).abs() < 1e-9);
    }

    #[test]
    fn without_source_labels_each_destination_shows_its_busiest_source() {
        let tally = tally(&[
            (Protocol::Tcp, Established, "10.0.0.2:40000", HOT),
            (Protocol::Tcp, Established, "10.0.0.2:40001", HOT),
            (Protocol::Tcp, Established, "10.0.0.3:40000", HOT),
        ]);
        let headroom = headroom(
            &tally,
            &config(),
            Top {
                count: 5,
                by_source: false,
            },
        );
        assert_eq!(headroom.top.len(), 1);
        assert_eq!(headroom.top[0].ports, 2, "the busiest source, not the sum");
        assert!(headroom.top[0].destination.source.is_unspecified());
        assert_eq!(headroom.all.len(), 2, "anomalies still see each source");
    }

    #[test]
    fn ports_held_by_bind_count_against_every_destination() {
        let tally = tally(&[
            (Protocol::Tcp, Listen, "0.0.0.0:40005", "0.0.0.0:0"),
            (Protocol::Tcp, Established, "10.0.0.2:40000", HOT),
            // An accepted connection on the listener's port is no client port.
            (
                Protocol::Tcp,
                Established,
                "10.0.0.2:40005",
                "10.0.0.7:51000",
            ),
        ]);
        let headroom = headroom(
            &tally,
            &config(),
            Top {
                count: 5,
                by_source: true,
            },
        );
        assert_eq!(headroom.top.len(), 1);
        assert!((headroom.top[0].ratio - 2.0 / 9.0).abs() < 1e-9);
    }

    #[test]
    fn udp_runs_out_per_local_address_and_wildcards_take_every_address() {
        let tally = tally(&[
            (
                Protocol::Udp,
                Established,
                "127.0.0.1:40000",
                "127.0.0.1:53",
            ),
            (
                Protocol::Udp,
                Established,
                "127.0.0.1:40001",
                "127.0.0.1:53",
            ),
            (Protocol::Udp, Established, "10.0.0.2:40002", "10.0.0.1:53"),
            (
                Protocol::Udp,
                crate::model::TcpState::Close,
                "0.0.0.0:40003",
                "0.0.0.0:0",
            ),
        ]);
        let headroom = headroom(
            &tally,
            &config(),
            Top {
                count: 5,
                by_source: true,
            },
        );
        assert!((headroom.max_ratio[&Protocol::Udp] - 3.0 / 9.0).abs() < 1e-9);
        assert!(
            headroom.max_ratio[&Protocol::Tcp].abs() < 1e-9,
            "no TCP at all"
        );
    }
}
