//! The standard `process_*` metrics, with CPU time to the clock tick.
//!
//! The prometheus crate's process collector counts `process_cpu_seconds_total` in whole
//! seconds (it divides clock ticks by ticks per second as integers), so a daemon that has used
//! 0.44 s of CPU reports 0 and a rate over a few minutes is mostly noise. This collector keeps
//! the crate's other process metrics and computes that one from `/proc/self/stat` itself.

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

const CPU_SECONDS: &str = "process_cpu_seconds_total";

/// `process_*` metrics of this process.
pub struct ProcessCollector {
    inner: prometheus::process_collector::ProcessCollector,
    cpu: prometheus::Counter,
    ticks_per_second: f64,
}

impl ProcessCollector {
    /// The collector for this process.
    ///
    /// # Errors
    /// When the metric description is refused (it is not).
    pub fn for_self() -> prometheus::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(Self {
            inner: prometheus::process_collector::ProcessCollector::for_self(),
            cpu: prometheus::Counter::new(
                CPU_SECONDS,
                "Total user and system CPU time spent in seconds.",
            )?,
            // 100 on every Linux architecture; the fallback only guards a failing sysconf.
            ticks_per_second: u32::try_from(ticks)
                .ok()
                .filter(|ticks| *ticks > 0)
                .map_or(100.0, f64::from),
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = self
            .inner
            .collect()
            .into_iter()
            .filter(|family| family.name() != CPU_SECONDS)
            .collect();
        if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| cpu_ticks(&stat))
        {
            #[expect(
                clippy::cast_precision_loss,
                reason = "2^52 clock ticks are over a million years"
            )]
            let seconds = ticks as f64 / self.ticks_per_second;
            // The counter only moves forward: CPU time does too.
            self.cpu.inc_by((seconds - self.cpu.get()).max(0.0));
            families.extend(self.cpu.collect());
        }
        families
    }
}

/// `utime + stime` in clock ticks, from the text of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may contain spaces and parentheses itself: fields are
/// counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt, utime (14), stime (15).
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_a_tricky_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 31 13 0 0 20 0 7 0";
        assert_eq!(cpu_ticks(stat), Some(44));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn exports_cpu_time_and_the_other_process_metrics() {
        let collector = ProcessCollector::for_self().expect("collector");
        let families = collector.collect();
        let cpu: Vec<_> = families
            .iter()
            .filter(|family| family.name() == CPU_SECONDS)
            .collect();
        assert_eq!(cpu.len(), 1, "exactly one family");
        assert!(cpu[0].get_metric()[0].get_counter().get_value() > 0.0);
        assert!(
            families
                .iter()
                .any(|family| family.name() == "process_resident_memory_bytes")
        );
    }
}
