//! The TCP settings that decide how fast a namespace runs out of ports, and the kernel's own
//! count of what its `TIME_WAIT` handling did: the facts behind the classic tuning advice,
//! per namespace, so that drift between nodes and a knob that does nothing both show.

/// The namespace's TCP sysctls that decide exhaustion, as read (`None`: not readable there,
/// an older kernel without it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSysctls {
    /// `net.ipv4.tcp_tw_reuse`: 0, 1 (every destination) or 2 (loopback only).
    pub tw_reuse: Option<u32>,
    /// `net.ipv4.tcp_timestamps`: `tcp_tw_reuse` needs them.
    pub timestamps: Option<u32>,
    /// `net.ipv4.tcp_max_tw_buckets`: past it, a closing socket skips `TIME_WAIT`
    /// (`TCPTimeWaitOverflow`).
    pub max_tw_buckets: Option<u32>,
    /// `net.ipv4.tcp_fin_timeout`: how long an orphaned socket stays in `FIN_WAIT2` (not how
    /// long `TIME_WAIT` lasts, which is fixed at 60 s).
    pub fin_timeout: Option<u32>,
}

/// The kernel's `TIME_WAIT` counters of a namespace (`/proc/net/netstat`, `TcpExt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeWaitEvent {
    /// `TW`: `TIME_WAIT` sockets that ran their course.
    Tw,
    /// `TWRecycled`: `TIME_WAIT` sockets whose port `connect()` took over (`tcp_tw_reuse`).
    TwRecycled,
    /// `TWKilled`: `TIME_WAIT` sockets ended early (an RST, or the SYN of a new connection).
    TwKilled,
    /// `TCPTimeWaitOverflow`: closing sockets that got no `TIME_WAIT` because
    /// `tcp_max_tw_buckets` was reached.
    Overflow,
}

impl TimeWaitEvent {
    pub const ALL: [Self; 4] = [Self::Tw, Self::TwRecycled, Self::TwKilled, Self::Overflow];

    /// The label value.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Tw => "tw",
            Self::TwRecycled => "tw_recycled",
            Self::TwKilled => "tw_killed",
            Self::Overflow => "tcp_time_wait_overflow",
        }
    }

    /// The counter's name in `/proc/net/netstat`.
    #[must_use]
    pub const fn netstat_name(self) -> &'static str {
        match self {
            Self::Tw => "TW",
            Self::TwRecycled => "TWRecycled",
            Self::TwKilled => "TWKilled",
            Self::Overflow => "TCPTimeWaitOverflow",
        }
    }
}

/// The counts of [`TimeWaitEvent`], one each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitEvents([u64; TimeWaitEvent::ALL.len()]);

impl TimeWaitEvents {
    pub fn set(&mut self, event: TimeWaitEvent, count: u64) {
        self.0[event as usize] = count;
    }

    #[must_use]
    pub const fn get(&self, event: TimeWaitEvent) -> u64 {
        self.0[event as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (TimeWaitEvent, u64)> + '_ {
        TimeWaitEvent::ALL.into_iter().zip(self.0)
    }
}

/// What the namespace's TCP settings and counters say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTuning {
    pub sysctls: TcpSysctls,
    /// `None` where `/proc/net/netstat` could not be read.
    pub time_wait_events: Option<TimeWaitEvents>,
}
