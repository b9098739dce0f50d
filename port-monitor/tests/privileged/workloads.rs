//! A namespace is attributed to the pod and container its process's cgroup path names.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::{Exporter, privileged};

const UID: &str = "0f5c2a71-3b4d-4e8f-9a10-b2c3d4e5f607";
const ID: &str = "2d8f5e1b4c3a79e0f6b1d2c3a4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b";

/// The cgroup v2 mount point (hybrid hosts mount it at /sys/fs/cgroup/unified).
fn cgroup2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            after
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup v2 mount")
}

#[test]
fn privileged_a_pods_namespace_is_attributed_from_its_cgroup_path() {
    if !privileged("a_pods_namespace_is_attributed_from_its_cgroup_path") {
        return;
    }
    // What a kubelet with the cgroupfs driver makes: kubepods/burstable/pod<uid>/<container>.
    let test_root = cgroup2_root().join(format!("pm-test-{}", std::process::id()));
    let pod = test_root.join(format!("kubepods/burstable/pod{UID}"));
    let container = pod.join(ID);
    std::fs::create_dir_all(&container).expect("create cgroup");
    // A process in its own network namespace, moved into that cgroup.
    let mut sandbox = Command::new("unshare")
        // Long enough for a slow machine to start the exporter; killed at the end.
        .args(["--net", "sleep", "600"])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    std::thread::sleep(Duration::from_millis(200));
    let pid = sandbox.id();
    // unshare execs sleep in the new namespace: the same pid.
    std::fs::write(container.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("its namespace");
    let id = netns
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .to_owned();

    let exporter = Exporter::start();
    let labels = [
        ("netns", id.as_str()),
        ("pod_uid", UID),
        ("container_id", ID),
    ];
    let metrics = exporter.wait_until(Duration::from_secs(10), |m| {
        m.get("port_monitor_netns_workload_info", &labels) == Some(1.0)
    });
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    // Remove the test cgroups, innermost first.
    for dir in container
        .ancestors()
        .take_while(|dir| dir.starts_with(&test_root))
    {
        let _ = std::fs::remove_dir(dir);
    }
    assert_eq!(
        metrics.get("port_monitor_netns_workload_info", &labels),
        Some(1.0),
        "{}",
        metrics.text
    );
}
