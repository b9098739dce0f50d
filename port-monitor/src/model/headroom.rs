//! How close a namespace is to running out of ports: per destination for TCP, per local
//! address for UDP, from one snapshot of its socket table.
//!
//! Kernel facts this rests on:
//! - `connect()` may reuse a local port toward a different destination (the 4-tuple must be
//!   unique, `__inet_check_established`), so TCP runs out per (source address, destination
//!   address, destination port), not per namespace.
//! - `__inet_hash_connect` skips every port whose bind bucket was made by `bind()`
//!   (listeners, bound sockets): those are lost to every destination at once.
//! - A port held by a `TIME_WAIT` socket can be taken over by a new `connect()` to the same
//!   destination when `tcp_tw_reuse` allows it (`tcp_twsk_unique`, see `TimeWaitReuse`): such
//!   ports are in use, but not lost.
//! - An autobinding UDP socket (`udp_lib_get_port` with port 0) avoids every port any UDP
//!   socket of the namespace holds, whatever its local address: UDP headroom is the
//!   namespace's UDP ports in the range over its capacity.

use std::{cmp::Reverse, collections::BTreeMap, net::IpAddr};

use super::{Destination, PortConfig, Protocol, SocketTally};

/// One destination's share of the namespace's ephemeral ports.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationUse {
    pub destination: Destination,
    /// Ephemeral ports of sockets toward it, `TIME_WAIT` included.
    pub ports: u32,
    /// Of those, the sockets in `TIME_WAIT`.
    pub time_wait: u32,
    /// Of those, the ones a new `connect()` to this destination may take over
    /// (`tcp_tw_reuse`).
    pub reusable: u32,
    /// `(ports - reusable + ports held by bind() in the range) / capacity`.
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
/// `TIME_WAIT` reuse was judged as the sockets were counted, by the settings the tally was
/// made with ([`SocketTally::with_reuse`]); `ports` gives the range and reserved ports.
#[must_use]
pub fn headroom(sockets: &SocketTally, ports: &PortConfig, top: Top) -> Headroom {
    let capacity = f64::from(ports.capacity().max(1));
    let ephemeral = |port: u16| ports.ephemeral.contains(&port) && !ports.reserved.contains(port);
    let bound = sockets.bound_tcp();
    let bound_in_range = f64::from(count(bound.iter(), ephemeral));

    let mut all = BTreeMap::new();
    for (destination, use_) in sockets.destinations() {
        // Whether a port is bound is known only once every socket is listed (a listener may
        // come after connections on its port): the bitmaps are filtered here, not earlier.
        let in_range = |port: u16| ephemeral(port) && !bound.contains(port);
        let ports = use_.local_ports.count(in_range);
        if ports == 0 {
            continue;
        }
        // The tally judged reuse by the namespace's settings as it listed the sockets.
        let reusable = use_.reusable.count(in_range);
        all.insert(
            *destination,
            DestinationUse {
                destination: *destination,
                ports,
                time_wait: use_.time_wait,
                reusable,
                ratio: (f64::from(ports - reusable) + bound_in_range) / capacity,
            },
        );
    }
    let tcp_max = all
        .values()
        .map(|use_| use_.ratio)
        .fold(bound_in_range / capacity, f64::max);

    let udp_in_range = count(sockets.ports(Protocol::Udp).iter(), ephemeral);

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
            (Protocol::Udp, f64::from(udp_in_range) / capacity),
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
        Socket,
        TcpState::{Established, Listen, TimeWait},
        ports::parse_reserved_ports,
        sockets::socket,
    };

    fn config() -> PortConfig {
        PortConfig {
            ephemeral: 40000..=40009,
            reserved: parse_reserved_ports("40009").expect("valid"),
            time_wait_reuse: crate::model::TimeWaitReuse::default(),
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

    /// An autobinding socket avoids every UDP port of the namespace, whatever address holds
    /// it: four ports on three addresses leave five of nine.
    #[test]
    fn udp_headroom_counts_every_port_of_the_namespace() {
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
        assert!((headroom.max_ratio[&Protocol::Udp] - 4.0 / 9.0).abs() < 1e-9);
        assert!(
            headroom.max_ratio[&Protocol::Tcp].abs() < 1e-9,
            "no TCP at all"
        );
    }

    /// `TIME_WAIT` sockets toward loopback, older than the reuse delay, are reusable with the
    /// default `tcp_tw_reuse` = 2; toward another address they are not; with 0 none is.
    #[test]
    fn time_wait_reuse_frees_what_the_kernel_would_reuse() {
        let tally = |config: &PortConfig| {
            let mut tally = SocketTally::with_reuse(config.time_wait_reuse);
            for (port, age) in [(40000, 30), (40001, 30), (40002, 0)] {
                for (local, remote) in [("127.0.0.1", "127.0.0.1:80"), ("10.0.0.2", HOT)] {
                    tally.add(&Socket {
                        timer: crate::model::sockets::TIME_WAIT_LENGTH
                            .saturating_sub(std::time::Duration::from_secs(age)),
                        ..socket(Protocol::Tcp, TimeWait, &format!("{local}:{port}"), remote)
                    });
                }
            }
            tally
        };
        let top = Top {
            count: 5,
            by_source: true,
        };
        let ratio = |config: &PortConfig, address: &str| {
            headroom(&tally(config), config, top)
                .all
                .values()
                .find(|use_| use_.destination.address.to_string() == address)
                .map(|use_| (use_.ports, use_.reusable, use_.ratio))
                .expect("destination")
        };
        let loopback = ratio(&config(), "127.0.0.1");
        assert_eq!(
            (loopback.0, loopback.1),
            (3, 2),
            "the young one is not reusable"
        );
        assert!((loopback.2 - 1.0 / 9.0).abs() < 1e-9);
        assert_eq!(
            ratio(&config(), "10.0.0.1").1,
            0,
            "reuse 2 is loopback only"
        );
        let mut never = config();
        never.time_wait_reuse.mode = 0;
        assert!((ratio(&never, "127.0.0.1").2 - 3.0 / 9.0).abs() < 1e-9);
        let mut everywhere = config();
        everywhere.time_wait_reuse.mode = 1;
        assert_eq!(ratio(&everywhere, "10.0.0.1").1, 2);
        everywhere.time_wait_reuse.timestamps = false;
        assert_eq!(
            ratio(&everywhere, "10.0.0.1").1,
            0,
            "no timestamps, no reuse"
        );
    }

    /// A dual-stack socket connected to `::ffff:10.0.0.1` uses the same ports as IPv4 sockets
    /// connected to `10.0.0.1`: one destination, labelled with the IPv4 address.
    #[test]
    fn ipv4_mapped_destinations_are_the_ipv4_ones() {
        let tally = tally(&[
            (Protocol::Tcp, Established, "10.0.0.2:40000", HOT),
            (
                Protocol::Tcp,
                Established,
                "[::ffff:10.0.0.2]:40001",
                "[::ffff:10.0.0.1]:443",
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
        assert_eq!(headroom.all.len(), 1, "{:?}", headroom.all);
        let hot = &headroom.top[0];
        assert_eq!(hot.destination.address.to_string(), "10.0.0.1");
        assert_eq!(hot.ports, 2);
    }
}
