//! The configuration file (`--config.file`, TOML): thresholds and sizes that a team tunes
//! once for its fleet. Every field has a default (the model's, or the intervals' in
//! `config`), so an empty file, or none, is valid; a value out of range is refused at start-up
//! with the field's name and what is accepted.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Deserializer};

use super::{DEFAULT_POLL_INTERVAL, DEFAULT_SNAPSHOT_INTERVAL, MIN_INTERVAL};
use crate::model::{Settings, anomalies::PortScanLimits};

/// The file as written. Each field's comment is its documentation (docs/configuration.md
/// repeats it with an example).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub intervals: Intervals,
    pub destinations: Destinations,
    pub anomalies: Anomalies,
    pub nat: Nat,
    pub servers: Servers,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Servers {
    /// Port ranges servers listen on, "MIN-MAX" each: an ephemeral range that overlaps one
    /// may hand a client a port a server then cannot bind. The Kubernetes node ports by default.
    #[serde(deserialize_with = "port_ranges")]
    pub port_ranges: Vec<std::ops::RangeInclusive<u16>>,
}

impl Default for Servers {
    fn default() -> Self {
        Self {
            port_ranges: Settings::default().server_ports,
        }
    }
}

/// Port ranges written "MIN-MAX" each.
fn port_ranges<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<std::ops::RangeInclusive<u16>>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| parse_port_range(text).map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Nat {
    /// The ports this node's source NAT (SNAT, MASQUERADE) hands out, "MIN-MAX": the
    /// `--to-ports` of its rules, or the kernel's 1024-65535 when they give none. NAT
    /// utilization is measured against it.
    #[serde(deserialize_with = "port_range")]
    pub port_range: std::ops::RangeInclusive<u16>,
}

impl Default for Nat {
    fn default() -> Self {
        Self {
            port_range: Settings::default().nat_ports,
        }
    }
}

/// A port range written "MIN-MAX".
fn port_range<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::ops::RangeInclusive<u16>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_port_range(&text).map_err(serde::de::Error::custom)
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let parsed = text.split_once('-').and_then(|(min, max)| {
        let (min, max) = (
            min.trim().parse::<u16>().ok()?,
            max.trim().parse::<u16>().ok()?,
        );
        (1 <= min && min <= max).then_some(min..=max)
    });
    parsed.ok_or_else(|| {
        format!("{text:?} is not a port range such as \"1024-65535\" (1 <= MIN <= MAX <= 65535)")
    })
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Intervals {
    /// How often every namespace's socket tables are read ("5s", "500ms"; at least 50ms).
    /// `--snapshot.interval` overrides it.
    #[serde(deserialize_with = "duration")]
    pub snapshot: Duration,
    /// How often the kernel programs' counters are read. `--kernel.poll-interval` overrides
    /// it.
    #[serde(deserialize_with = "duration")]
    pub kernel_poll: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            snapshot: DEFAULT_SNAPSHOT_INTERVAL,
            kernel_poll: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// A duration written as text ("5s", "500ms").
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|error| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration such as \"5s\" or \"500ms\": {error}"
        ))
    })
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Destinations {
    /// TCP destinations per namespace that get their own `port_monitor_destination_*`
    /// series, busiest first (1-100). The max-ratio gauge looks at every destination anyway.
    pub top: usize,
    /// Whether destination series carry the source address (`src_addr`). Exhaustion is per
    /// source address; with `false`, each destination address and port shows its busiest
    /// source and `src_addr` is empty, which keeps series stable when pod addresses change.
    pub source_address_label: bool,
}

impl Default for Destinations {
    fn default() -> Self {
        let model = Settings::default();
        Self {
            top: model.top_destinations,
            source_address_label: model.destination_source_address,
        }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Anomalies {
    /// A destination is near exhaustion when its utilization ratio reaches this (0-1,
    /// exclusive of 0). Counted once each time it crosses upward.
    pub near_exhaustion_ratio: f64,
    /// `TIME_WAIT` sockets toward one destination above this share of the namespace's
    /// capacity (0-1, exclusive of 0) are an accumulation. Counted once per crossing.
    pub time_wait_share: f64,
    /// Sliding window, in seconds, over which refused connections of one cgroup are counted
    /// for `port_scan` (0.1-3600).
    pub port_scan_window_seconds: f64,
    /// Refused connections of one cgroup within the window that make a port scan (2-100000).
    pub port_scan_refused: usize,
    /// Distinct destination ports refused to one cgroup within the window that make a port
    /// scan (2-65535).
    pub port_scan_distinct_ports: usize,
    /// Connections a second toward one destination, opened and closed between two snapshots
    /// (so living less than `--snapshot.interval`), that make churn (0.1-1000000).
    pub churn_per_second: f64,
}

impl Default for Anomalies {
    fn default() -> Self {
        let model = Settings::default();
        #[expect(
            clippy::cast_precision_loss,
            reason = "the default window, 10 s in nanoseconds"
        )]
        Self {
            near_exhaustion_ratio: model.near_exhaustion_ratio,
            time_wait_share: model.time_wait_share,
            port_scan_window_seconds: model.port_scan.window_ns as f64 / 1e9,
            port_scan_refused: model.port_scan.refused,
            port_scan_distinct_ports: model.port_scan.distinct_ports,
            churn_per_second: model.churn_per_second,
        }
    }
}

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {field} = {value} is out of range: {accepted}")]
    Invalid {
        path: String,
        field: &'static str,
        value: String,
        accepted: &'static str,
    },
}

impl ConfigFile {
    /// Reads and validates the file; `None` means every default.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML of this shape, or a value is out of
    /// range.
    pub fn load(path: Option<&Path>) -> Result<Self, FileError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parses and validates `text`, naming `path` in errors.
    ///
    /// # Errors
    /// When `text` is not valid TOML of this shape, or a value is out of range.
    pub fn parse(text: &str, path: &str) -> Result<Self, FileError> {
        let config: Self = toml::from_str(text).map_err(|source| FileError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &str) -> Result<(), FileError> {
        let invalid = |field, value: String, accepted| FileError::Invalid {
            path: path.to_owned(),
            field,
            value,
            accepted,
        };
        for (field, value) in [
            ("intervals.snapshot", self.intervals.snapshot),
            ("intervals.kernel_poll", self.intervals.kernel_poll),
        ] {
            if value < MIN_INTERVAL {
                return Err(invalid(
                    field,
                    format!("{:?}", humantime::format_duration(value).to_string()),
                    "a duration of at least 50ms",
                ));
            }
        }
        if !(1..=100).contains(&self.destinations.top) {
            return Err(invalid(
                "destinations.top",
                self.destinations.top.to_string(),
                "1 to 100",
            ));
        }
        let ratios = [
            (
                "anomalies.near_exhaustion_ratio",
                self.anomalies.near_exhaustion_ratio,
            ),
            ("anomalies.time_wait_share", self.anomalies.time_wait_share),
        ];
        for (field, value) in ratios {
            if !(value > 0.0 && value <= 1.0) {
                return Err(invalid(
                    field,
                    value.to_string(),
                    "a ratio above 0 and at most 1",
                ));
            }
        }
        let anomalies = &self.anomalies;
        if !(0.1..=3600.0).contains(&anomalies.port_scan_window_seconds) {
            let value = anomalies.port_scan_window_seconds.to_string();
            return Err(invalid(
                "anomalies.port_scan_window_seconds",
                value,
                "0.1 to 3600",
            ));
        }
        if !(2..=100_000).contains(&anomalies.port_scan_refused) {
            let value = anomalies.port_scan_refused.to_string();
            return Err(invalid("anomalies.port_scan_refused", value, "2 to 100000"));
        }
        if !(0.1..=1_000_000.0).contains(&anomalies.churn_per_second) {
            let value = anomalies.churn_per_second.to_string();
            return Err(invalid(
                "anomalies.churn_per_second",
                value,
                "0.1 to 1000000",
            ));
        }
        if !(2..=65_535).contains(&anomalies.port_scan_distinct_ports) {
            let value = anomalies.port_scan_distinct_ports.to_string();
            return Err(invalid(
                "anomalies.port_scan_distinct_ports",
                value,
                "2 to 65535",
            ));
        }
        Ok(())
    }

    /// The snapshot interval: the flag's if given, else this file's.
    #[must_use]
    pub fn snapshot_interval(&self, flag: Option<Duration>) -> Duration {
        flag.unwrap_or(self.intervals.snapshot)
    }

    /// The kernel poll interval: the flag's if given, else this file's.
    #[must_use]
    pub fn poll_interval(&self, flag: Option<Duration>) -> Duration {
        flag.unwrap_or(self.intervals.kernel_poll)
    }

    /// What the model computes with.
    #[must_use]
    pub fn settings(&self) -> Settings {
        Settings {
            top_destinations: self.destinations.top,
            destination_source_address: self.destinations.source_address_label,
            near_exhaustion_ratio: self.anomalies.near_exhaustion_ratio,
            time_wait_share: self.anomalies.time_wait_share,
            port_scan: PortScanLimits {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "validated: 0.1 to 3600 s"
                )]
                window_ns: (self.anomalies.port_scan_window_seconds * 1e9) as u64,
                refused: self.anomalies.port_scan_refused,
                distinct_ports: self.anomalies.port_scan_distinct_ports,
            },
            churn_per_second: self.anomalies.churn_per_second,
            nat_ports: self.nat.port_range.clone(),
            server_ports: self.servers.port_ranges.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_means_every_default() {
        assert_eq!(
            ConfigFile::parse("", "test.toml").expect("valid"),
            ConfigFile::default()
        );
    }

    /// docs/configuration.md shows every field with its default: the example must parse to
    /// exactly the defaults, so that the docs cannot drift from the code.
    #[test]
    fn the_documented_example_is_the_defaults() {
        let docs = include_str!("../../../docs/configuration.md");
        let example = docs
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/configuration.md");
        assert_eq!(
            ConfigFile::parse(example, "docs/configuration.md").expect("valid"),
            ConfigFile::default()
        );
    }

    #[test]
    fn reads_every_field() {
        let config = ConfigFile::parse(
            "[destinations]\ntop = 10\n[anomalies]\nnear_exhaustion_ratio = 0.9\ntime_wait_share = 0.25\n",
            "test.toml",
        )
        .expect("valid");
        assert_eq!(config.destinations.top, 10);
        let nat =
            ConfigFile::parse("[nat]\nport_range = \"40000-40004\"", "test.toml").expect("valid");
        assert_eq!(nat.settings().nat_ports, 40000..=40004);
        assert_eq!(config.snapshot_interval(None), Duration::from_secs(5));
        assert_eq!(
            config.snapshot_interval(Some(Duration::from_secs(2))),
            Duration::from_secs(2),
            "the flag wins"
        );
        assert_eq!(
            config.settings().near_exhaustion_ratio.to_bits(),
            0.9_f64.to_bits()
        );
        assert_eq!(
            config.settings().time_wait_share.to_bits(),
            0.25_f64.to_bits()
        );
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let cases = [
            (
                "[destinations]\ntop = 0",
                "destinations.top = 0 is out of range: 1 to 100",
            ),
            (
                "[anomalies]\nnear_exhaustion_ratio = 1.5",
                "anomalies.near_exhaustion_ratio = 1.5",
            ),
            (
                "[anomalies]\ntime_wait_share = 0",
                "anomalies.time_wait_share = 0",
            ),
            (
                "[intervals]\nsnapshot = \"5\"",
                "\"5\" is not a duration such as \"5s\"",
            ),
            (
                "[intervals]\nsnapshot = \"10ms\"",
                "intervals.snapshot = \"10ms\" is out of range",
            ),
            (
                "[anomalies]\nport_scan_refused = 1",
                "anomalies.port_scan_refused = 1",
            ),
            (
                "[anomalies]\nport_scan_window_seconds = 0",
                "anomalies.port_scan_window_seconds = 0",
            ),
            (
                "[anomalies]\nnear_exhaustion = 0.5",
                "unknown field `near_exhaustion`",
            ),
            ("[destinations]\ntop = \"five\"", "invalid type"),
            (
                "[nat]\nport_range = \"40004-40000\"",
                "is not a port range such as",
            ),
            (
                "[servers]\nport_ranges = [\"8080\"]",
                "is not a port range such as",
            ),
        ];
        for (text, expected) in cases {
            let error = ConfigFile::parse(text, "test.toml")
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.starts_with("test.toml"), "names the file: {error}");
        }
    }
}
