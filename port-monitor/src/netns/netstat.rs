//! A namespace's TCP settings and `TIME_WAIT` counters, read from inside it.

use std::path::Path;

use crate::model::{TcpSysctls, TcpTuning, TimeWaitEvent, TimeWaitEvents};

/// Reads the calling thread's namespace's TCP tuning. What cannot be read is left out: these
/// refine what the gauges say, and an older kernel may lack a sysctl.
#[must_use]
pub fn read_tcp_tuning() -> TcpTuning {
    let number = |sysctl: &str| {
        let path = Path::new("/proc/sys").join(sysctl.replace('.', "/"));
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    };
    TcpTuning {
        sysctls: TcpSysctls {
            tw_reuse: number("net.ipv4.tcp_tw_reuse"),
            timestamps: number("net.ipv4.tcp_timestamps"),
            max_tw_buckets: number("net.ipv4.tcp_max_tw_buckets"),
            fin_timeout: number("net.ipv4.tcp_fin_timeout"),
        },
        // thread-self: /proc/self/net is the namespace of the process's main thread, not of
        // this one, which entered another.
        time_wait_events: std::fs::read_to_string("/proc/thread-self/net/netstat")
            .ok()
            .and_then(|text| parse_time_wait_events(&text)),
    }
}

/// The `TIME_WAIT` counters of a `/proc/net/netstat` text: pairs of lines, names then values,
/// each starting with its group (`TcpExt:`). `None` without a `TcpExt` group.
#[must_use]
pub fn parse_time_wait_events(netstat: &str) -> Option<TimeWaitEvents> {
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some(("TcpExt:", names)), Some(("TcpExt:", values))) =
            (names.split_once(' '), values.split_once(' '))
        else {
            continue;
        };
        let mut events = TimeWaitEvents::default();
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Some(event) = TimeWaitEvent::ALL
                .into_iter()
                .find(|event| event.netstat_name() == name)
            {
                events.set(event, value.parse().unwrap_or(0));
            }
        }
        return Some(events);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_time_wait_counters() {
        let netstat = "TcpExt: SyncookiesSent TW TWRecycled TWKilled TCPTimeWaitOverflow\n\
                       TcpExt: 0 1200 35 2 7\n\
                       IpExt: InNoRoutes InTruncatedPkts\n\
                       IpExt: 0 0\n";
        let events = parse_time_wait_events(netstat).expect("TcpExt");
        assert_eq!(events.get(TimeWaitEvent::Tw), 1200);
        assert_eq!(events.get(TimeWaitEvent::TwRecycled), 35);
        assert_eq!(events.get(TimeWaitEvent::TwKilled), 2);
        assert_eq!(events.get(TimeWaitEvent::Overflow), 7);
        assert_eq!(parse_time_wait_events("IpExt: A\nIpExt: 1\n"), None);
    }

    /// This process's own namespace: the counters and sysctls are there to read.
    #[test]
    fn reads_this_namespace() {
        let tuning = read_tcp_tuning();
        assert!(tuning.sysctls.tw_reuse.is_some());
        assert!(tuning.sysctls.fin_timeout.is_some());
        assert!(tuning.time_wait_events.is_some());
    }
}
