//! Any `/proc/<pid>/cgroup` text yields a workload (possibly unknown), never a panic, and
//! the identifiers it yields are label-safe: no control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let workload = port_monitor::workloads::from_proc_cgroup(text);
    for id in [&workload.pod_uid, &workload.container_id]
        .into_iter()
        .flatten()
    {
        assert!(!id.chars().any(char::is_control), "{id:?}");
    }
});
