//! Failed calls: what the kernel programs count and record about them.

use std::collections::BTreeMap;

use port_monitor_common::{Operation, maps::ErrorKey};

use super::{NetnsId, Protocol, errno};

/// Labels of a failed-call counter within one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailureKind {
    pub operation: Operation,
    pub protocol: Protocol,
    pub errno: u16,
    /// The kernel was choosing the local port (connect without bind, bind to port 0).
    pub auto_port: bool,
}

impl FailureKind {
    /// Whether this is a `connect()` the destination refused (RST: nothing listening).
    #[must_use]
    pub fn is_refused(self) -> bool {
        self.operation == Operation::Connect && self.errno == errno::ECONNREFUSED
    }

    /// Whether this is a `bind()` to an explicit port that something else holds.
    #[must_use]
    pub fn is_bind_conflict(self) -> bool {
        self.operation == Operation::Bind && !self.auto_port && self.errno == errno::EADDRINUSE
    }

    /// Whether this failure means the namespace had no free port to give.
    #[must_use]
    pub fn is_exhaustion(self) -> bool {
        self.auto_port
            && match self.operation {
                Operation::Connect => self.errno == errno::EADDRNOTAVAIL,
                Operation::Bind => self.errno == errno::EADDRINUSE,
                Operation::Autobind => self.errno == errno::EAGAIN,
            }
    }

    pub(super) fn from_key(key: &ErrorKey) -> Option<Self> {
        Some(Self {
            operation: Operation::from_u8(key.operation)?,
            protocol: Protocol::from_ip(key.protocol)?,
            errno: key.errno,
            auto_port: key.auto_port != 0,
        })
    }
}

/// A failed call as one ring buffer record describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub netns: NetnsId,
    pub kind: FailureKind,
    /// Who made the call, when the kernel saw it in the caller's context.
    pub caller: Option<Caller>,
    /// The cgroup v2 of the caller, or of the socket when the caller is unknown.
    pub cgroup_id: Option<u64>,
    /// When the kernel saw it (`CLOCK_MONOTONIC`, nanoseconds).
    pub timestamp_ns: u64,
    pub local: std::net::SocketAddr,
    /// The destination of a `connect()`; `None` for `bind()`.
    pub remote: Option<std::net::SocketAddr>,
}

/// The process behind a failed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
}

/// Failed-call counts by namespace and kind, as the kernel programs counted them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures(BTreeMap<NetnsId, BTreeMap<FailureKind, u64>>);

impl Failures {
    /// The counts of the kernel's `counts` that `admit` lets through.
    pub fn from_counts(
        counts: &[(ErrorKey, u64)],
        mut admit: impl FnMut(&ErrorKey) -> bool,
    ) -> Self {
        let mut failures: BTreeMap<NetnsId, BTreeMap<FailureKind, u64>> = BTreeMap::new();
        for (key, count) in counts {
            if !admit(key) {
                continue;
            }
            if let Some(kind) = FailureKind::from_key(key) {
                *failures
                    .entry(key.netns)
                    .or_default()
                    .entry(kind)
                    .or_default() += count;
            }
        }
        Self(failures)
    }

    /// Every count, by namespace and kind.
    pub fn iter(&self) -> impl Iterator<Item = (NetnsId, FailureKind, u64)> + '_ {
        self.0.iter().flat_map(|(&netns, kinds)| {
            kinds
                .iter()
                .map(move |(&kind, &count)| (netns, kind, count))
        })
    }

    /// Namespaces with counts.
    pub fn namespaces(&self) -> impl Iterator<Item = NetnsId> + '_ {
        self.0.keys().copied()
    }

    /// Drops a namespace's counts.
    pub fn remove(&mut self, netns: NetnsId) {
        self.0.remove(&netns);
    }
}
