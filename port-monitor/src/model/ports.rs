//! Port numbers: the IANA ranges, a namespace's ephemeral range and reserved ports, and a set
//! of ports cheap enough to build from every socket of a namespace.

use std::ops::RangeInclusive;

/// A range that `port_monitor_ports_in_use` reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRange {
    /// IANA system ports, 0-1023 (port 0 is never held).
    WellKnown,
    /// IANA user ports, 1024-49151.
    Registered,
    /// IANA dynamic/private ports, 49152-65535.
    Dynamic,
    /// The namespace's `ip_local_port_range` minus its `ip_local_reserved_ports`: the ports
    /// the kernel may hand out to `connect()` and `bind(0)`.
    Ephemeral,
}

impl PortRange {
    pub const ALL: [Self; 4] = [
        Self::WellKnown,
        Self::Registered,
        Self::Dynamic,
        Self::Ephemeral,
    ];

    /// The `range` label value.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::WellKnown => "well_known",
            Self::Registered => "registered",
            Self::Dynamic => "dynamic",
            Self::Ephemeral => "ephemeral",
        }
    }

    /// The ports of a fixed IANA range; `None` for [`PortRange::Ephemeral`], which depends on
    /// the namespace.
    #[must_use]
    pub const fn iana(self) -> Option<RangeInclusive<u16>> {
        match self {
            Self::WellKnown => Some(1..=1023),
            Self::Registered => Some(1024..=49151),
            Self::Dynamic => Some(49152..=65535),
            Self::Ephemeral => None,
        }
    }
}

/// A set of ports: one bit per port, 8 KiB. Building it is O(sockets) and counting a range is
/// O(range / 64), whatever the number of sockets sharing a port.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: Box<[u64; 1024]>,
}

impl Default for PortSet {
    fn default() -> Self {
        Self {
            words: Box::new([0; 1024]),
        }
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<u16> for PortSet {
    fn from_iter<I: IntoIterator<Item = u16>>(ports: I) -> Self {
        let mut set = Self::default();
        for port in ports {
            set.insert(port);
        }
        set
    }
}

impl PortSet {
    pub fn insert(&mut self, port: u16) {
        self.words[usize::from(port / 64)] |= 1 << (port % 64);
    }

    #[must_use]
    pub fn contains(&self, port: u16) -> bool {
        self.words[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    /// How many ports of `range` are in the set.
    #[must_use]
    pub fn count_in(&self, range: RangeInclusive<u16>) -> u32 {
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return 0;
        }
        let (first_word, last_word) = (usize::from(first / 64), usize::from(last / 64));
        // Bits at and above `first` in the first word, at and below `last` in the last.
        let low_mask = u64::MAX << (first % 64);
        let high_mask = u64::MAX >> (63 - last % 64);
        if first_word == last_word {
            return (self.words[first_word] & low_mask & high_mask).count_ones();
        }
        let middle: u32 = self.words[first_word + 1..last_word]
            .iter()
            .map(|word| word.count_ones())
            .sum();
        (self.words[first_word] & low_mask).count_ones()
            + middle
            + (self.words[last_word] & high_mask).count_ones()
    }

    /// How many ports of `range` are in both sets.
    #[must_use]
    pub fn count_common_in(&self, other: &Self, range: RangeInclusive<u16>) -> u32 {
        let mut both = self.clone();
        for (word, other) in both.words.iter_mut().zip(other.words.iter()) {
            *word &= other;
        }
        both.count_in(range)
    }

    /// The ports in the set, in ascending order (empty words are skipped whole).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0_u16..1024)
            .zip(self.words.iter())
            .filter(|(_, word)| **word != 0)
            .flat_map(|(index, &word)| {
                (0_u16..64)
                    .filter(move |bit| word & (1 << bit) != 0)
                    .map(move |bit| index * 64 + bit)
            })
    }
}

/// The local ports of the sockets toward one destination: a list while short, the 8 KiB
/// bitmap once the list would be larger. A destination's sockets have distinct local ports
/// (the 4-tuple is unique), so the two hold the same thing, and memory is at most 8 KiB per
/// destination whatever the number of sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortList {
    Few(Vec<u16>),
    Many(PortSet),
}

/// Ports a list holds before it becomes a bitmap: as many bytes as the bitmap.
const FEW_PORTS: usize = 4096;

impl Default for PortList {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl PortList {
    pub fn insert(&mut self, port: u16) {
        match self {
            Self::Few(ports) if ports.len() < FEW_PORTS => ports.push(port),
            Self::Few(ports) => {
                let mut set: PortSet = ports.iter().copied().collect();
                set.insert(port);
                *self = Self::Many(set);
            }
            Self::Many(set) => set.insert(port),
        }
    }

    /// How many of the ports `keep` says to count.
    #[must_use]
    pub fn count(&self, keep: impl Fn(u16) -> bool) -> u32 {
        let kept = match self {
            Self::Few(ports) => ports.iter().filter(|port| keep(**port)).count(),
            Self::Many(set) => set.iter().filter(|port| keep(*port)).count(),
        };
        u32::try_from(kept).unwrap_or(u32::MAX)
    }
}

/// A namespace's port allocation settings, read from its own sysctls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// `net.ipv4.ip_local_port_range` (it applies to IPv6 too).
    pub ephemeral: RangeInclusive<u16>,
    /// `net.ipv4.ip_local_reserved_ports`: skipped by automatic port selection.
    pub reserved: PortSet,
    /// When `connect()` may take over a port a `TIME_WAIT` socket holds.
    pub time_wait_reuse: TimeWaitReuse,
}

/// When `connect()` may reuse the 4-tuple of a `TIME_WAIT` socket (`tcp_twsk_unique`): with
/// `net.ipv4.tcp_tw_reuse` 1 toward every destination, 2 (the default) toward loopback only
/// (a loopback source or destination address), 0 never; and only if the connection used TCP
/// timestamps (`net.ipv4.tcp_timestamps`, on by default) and its last timestamp is older than
/// `net.ipv4.tcp_tw_reuse_delay` (Linux >= 6.13; 1 s before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWaitReuse {
    /// `net.ipv4.tcp_tw_reuse`: 0, 1 or 2.
    pub mode: u8,
    /// `net.ipv4.tcp_timestamps` is not 0.
    pub timestamps: bool,
    /// `net.ipv4.tcp_tw_reuse_delay`, or 1 s where the kernel has no such setting.
    pub delay: std::time::Duration,
}

impl Default for TimeWaitReuse {
    /// The kernel's defaults.
    fn default() -> Self {
        Self {
            mode: 2,
            timestamps: true,
            delay: std::time::Duration::from_secs(1),
        }
    }
}

impl TimeWaitReuse {
    /// Whether a `TIME_WAIT` socket from `source` to `destination` that has been waiting for
    /// `age` can be taken over by a new `connect()` to the same destination.
    #[must_use]
    pub fn reusable(
        &self,
        source: std::net::IpAddr,
        destination: std::net::IpAddr,
        age: std::time::Duration,
    ) -> bool {
        let toward = match self.mode {
            1 => true,
            2 => source.is_loopback() || destination.is_loopback(),
            _ => false,
        };
        toward && self.timestamps && age > self.delay
    }
}

impl PortConfig {
    /// Ports the kernel can hand out automatically: the range minus the reserved ports in it.
    #[must_use]
    pub fn capacity(&self) -> u32 {
        let size = u32::from(*self.ephemeral.end()) + 1 - u32::from(*self.ephemeral.start());
        size - self.reserved_in_range()
    }

    /// Reserved ports that fall inside the ephemeral range.
    #[must_use]
    pub fn reserved_in_range(&self) -> u32 {
        self.reserved.count_in(self.ephemeral.clone())
    }

    /// Ports of `servers` that the kernel may hand out automatically: in the ephemeral range
    /// and not reserved. A client may hold one when a server wants to bind it.
    #[must_use]
    pub fn overlap(&self, servers: &RangeInclusive<u16>) -> u32 {
        let start = (*servers.start()).max(*self.ephemeral.start());
        let end = (*servers.end()).min(*self.ephemeral.end());
        if start > end {
            return 0;
        }
        u32::from(end) + 1 - u32::from(start) - self.reserved.count_in(start..=end)
    }

    /// How many ports of `used` count in `range` for this namespace.
    #[must_use]
    pub fn count_in_use(&self, used: &PortSet, range: PortRange) -> u32 {
        match range.iana() {
            Some(ports) => used.count_in(ports),
            None => {
                used.count_in(self.ephemeral.clone())
                    - used.count_common_in(&self.reserved, self.ephemeral.clone())
            }
        }
    }
}

/// Why a sysctl value could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("expected two port numbers \"LOW HIGH\", got {0:?}")]
    RangeShape(String),
    #[error("{0:?} is not a port number (0-65535)")]
    NotAPort(String),
    #[error("range {low}-{high} is empty")]
    EmptyRange { low: u16, high: u16 },
}

/// Parses `ip_local_port_range` ("32768\t60999\n").
///
/// # Errors
/// When the text is not two port numbers in ascending order.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, ParseError> {
    let mut fields = text.split_whitespace();
    let (Some(low), Some(high), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ParseError::RangeShape(text.to_owned()));
    };
    let (low, high) = (parse_port(low)?, parse_port(high)?);
    if low > high {
        return Err(ParseError::EmptyRange { low, high });
    }
    Ok(low..=high)
}

/// Parses `ip_local_reserved_ports` ("" or "8080,9000-9100\n").
///
/// # Errors
/// When an item is neither a port nor an ascending range of ports.
pub fn parse_reserved_ports(text: &str) -> Result<PortSet, ParseError> {
    let mut set = PortSet::default();
    for item in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (low, high) = if let Some((low, high)) = item.split_once('-') {
            (parse_port(low)?, parse_port(high)?)
        } else {
            let port = parse_port(item)?;
            (port, port)
        };
        if low > high {
            return Err(ParseError::EmptyRange { low, high });
        }
        for port in low..=high {
            set.insert(port);
        }
    }
    Ok(set)
}

fn parse_port(text: &str) -> Result<u16, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| ParseError::NotAPort(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_list_their_ports_in_order() {
        let ports = [0, 1, 63, 64, 1000, 40000, 65535];
        let set: PortSet = ports.into_iter().collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), ports);
    }

    #[test]
    fn a_port_list_counts_the_same_as_a_list_and_as_a_bitmap() {
        let mut list = PortList::default();
        for port in 0..4096 {
            list.insert(port * 3);
        }
        assert!(matches!(list, PortList::Few(_)));
        let few = list.count(|port| port % 2 == 0);
        list.insert(65535);
        assert!(matches!(list, PortList::Many(_)));
        assert_eq!(list.count(|port| port % 2 == 0), few);
        assert_eq!(list.count(|_| true), 4097);
    }

    #[test]
    fn counts_ports_in_ranges_across_word_boundaries() {
        let set: PortSet = [0, 63, 64, 1023, 1024, 49151, 49152, 65535]
            .into_iter()
            .collect();
        let cases = [
            (0..=65535, 8),
            (0..=0, 1),
            (1..=62, 0),
            (63..=64, 2),
            (1..=1023, 3),
            (1024..=49151, 2),
            (49152..=65535, 2),
            (65535..=65535, 1),
            #[expect(
                clippy::reversed_empty_ranges,
                reason = "an empty range counts nothing"
            )]
            (100..=99, 0),
        ];
        for (range, expected) in cases {
            assert_eq!(set.count_in(range.clone()), expected, "{range:?}");
        }
    }

    #[test]
    fn parses_the_port_range_sysctl() {
        assert_eq!(parse_port_range("32768\t60999\n"), Ok(32768..=60999));
        assert_eq!(parse_port_range("40000 40009"), Ok(40000..=40009));
        assert_eq!(
            parse_port_range("5000 4000"),
            Err(ParseError::EmptyRange {
                low: 5000,
                high: 4000
            })
        );
        assert!(matches!(
            parse_port_range("1"),
            Err(ParseError::RangeShape(_))
        ));
        assert!(matches!(
            parse_port_range("1 70000"),
            Err(ParseError::NotAPort(_))
        ));
    }

    #[test]
    fn parses_the_reserved_ports_sysctl() {
        assert_eq!(
            parse_reserved_ports("\n").map(|set| set.count_in(0..=65535)),
            Ok(0)
        );
        let set = parse_reserved_ports("8080,40000-40004, 50000\n").expect("valid list");
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [8080, 40000, 40001, 40002, 40003, 40004, 50000]
        );
        assert!(matches!(
            parse_reserved_ports("80,x"),
            Err(ParseError::NotAPort(_))
        ));
        assert!(matches!(
            parse_reserved_ports("90-80"),
            Err(ParseError::EmptyRange { .. })
        ));
    }

    #[test]
    fn ephemeral_ports_exclude_reserved_ones() {
        let config = PortConfig {
            ephemeral: 40000..=40009,
            reserved: parse_reserved_ports("40000-40001,50000").expect("valid list"),
            time_wait_reuse: crate::model::TimeWaitReuse::default(),
        };
        assert_eq!(config.capacity(), 8);
        assert_eq!(config.reserved_in_range(), 2);
        let used: PortSet = [80, 40000, 40005, 40009, 50000].into_iter().collect();
        assert_eq!(config.count_in_use(&used, PortRange::Ephemeral), 2);
        assert_eq!(config.count_in_use(&used, PortRange::WellKnown), 1);
        assert_eq!(config.count_in_use(&used, PortRange::Registered), 3);
        assert_eq!(config.count_in_use(&used, PortRange::Dynamic), 1);
    }

    #[test]
    fn overlap_with_server_ports_leaves_out_reserved_ports() {
        let mut config = PortConfig {
            ephemeral: 32768..=60999,
            reserved: PortSet::default(),
            time_wait_reuse: TimeWaitReuse::default(),
        };
        assert_eq!(config.overlap(&(30000..=32767)), 0, "the kernel's default");
        config.ephemeral = 30000..=60999;
        assert_eq!(config.overlap(&(30000..=32767)), 2768);
        config.reserved = parse_reserved_ports("30000-30999").expect("valid");
        assert_eq!(config.overlap(&(30000..=32767)), 1768);
        assert_eq!(config.overlap(&(61000..=62000)), 0);
    }
}
