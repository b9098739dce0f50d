//! What the kernel programs need from the system, checked before loading so that a missing
//! piece is reported by name with what to do about it, not as a raw errno from the loader.

use std::{
    fs,
    path::{Path, PathBuf},
};

use caps::{CapSet, Capability};

/// Something the system lacks.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MissingRequirement {
    #[error(
        "missing capabilities {missing}: port-monitor loads eBPF programs, attaches them to the \
         root cgroup and enters every network namespace. Run it as root, or grant them (in \
         Kubernetes: securityContext.capabilities.add)"
    )]
    Capabilities { missing: String },
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo): the bind() hooks \
         attach to its root. Mount one: mount -t cgroup2 none /sys/fs/cgroup/unified"
    )]
    NoCgroup2,
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({reason}): the \
         syscall tracepoints need it. Mount it: mount -t tracefs tracefs /sys/kernel/tracing"
    )]
    NoTracefs { reason: String },
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(std::sync::Arc<std::io::Error>),
}

/// Capabilities needed for the whole run. `CAP_SYS_ADMIN` alone would also cover loading
/// programs, but kernels >= 5.8 split that out into `CAP_BPF` and `CAP_PERFMON`.
const NEEDED: [(Capability, &str); 5] = [
    (Capability::CAP_BPF, "load programs and read maps"),
    (
        Capability::CAP_PERFMON,
        "attach tracepoints, read kernel memory",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "attach cgroup socket programs, read conntrack tables",
    ),
    (
        Capability::CAP_SYS_ADMIN,
        "enter network namespaces (setns)",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "open other processes' /proc/<pid>/ns/net",
    ),
];

/// Fails with the list of missing capabilities.
///
/// # Errors
/// When a needed capability is not in the effective set.
pub fn check_capabilities() -> Result<(), MissingRequirement> {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(capability, _)| !effective.contains(capability))
        .map(|(capability, why)| format!("{capability} ({why})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingRequirement::Capabilities {
            missing: missing.join(", "),
        })
    }
}

/// Drops the capabilities only loading and attaching need from the effective and permitted
/// sets, for good, so that a compromise of the running daemon cannot attach or trace
/// anything else: `CAP_PERFMON` always, `CAP_NET_ADMIN` unless `reads_conntrack` (ctnetlink
/// refuses even a read without it). Kept: `CAP_BPF` (the maps), `CAP_SYS_ADMIN` (setns),
/// `CAP_SYS_PTRACE` (other processes' /proc).
///
/// # Errors
/// When the kernel refuses (it does not for a process dropping its own capabilities).
pub fn drop_attach_capabilities(reads_conntrack: bool) -> Result<(), caps::errors::CapsError> {
    let net_admin = (!reads_conntrack).then_some(Capability::CAP_NET_ADMIN);
    for capability in [Some(Capability::CAP_PERFMON), net_admin]
        .into_iter()
        .flatten()
    {
        caps::drop(None, CapSet::Effective, capability)?;
        caps::drop(None, CapSet::Permitted, capability)?;
    }
    Ok(())
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on most nodes,
/// `/sys/fs/cgroup/unified` in hybrid mode.
///
/// # Errors
/// When none is mounted.
pub fn cgroup2_root() -> Result<PathBuf, MissingRequirement> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| MissingRequirement::Mountinfo(error.into()))?;
    find_mount(&mountinfo, "cgroup2").ok_or(MissingRequirement::NoCgroup2)
}

/// Makes sure tracefs is mounted where the tracepoint loader looks for it.
///
/// # Errors
/// When it is not mounted and cannot be.
pub fn ensure_tracefs() -> Result<(), MissingRequirement> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if Path::new(TRACEFS).join("events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| MissingRequirement::NoTracefs {
        reason: errno.desc().to_owned(),
    })?;
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(())
}

/// The mount point of the first filesystem of type `fstype` in a mountinfo text.
fn find_mount(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue":
        // the mount point is field 5; the filesystem type follows the " - " separator.
        let (before, after) = line.split_once(" - ")?;
        let mount_point = before.split(' ').nth(4)?;
        (after.split(' ').next()? == fstype).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest
            .get(index + 1..index + 4)
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        if let Some(code) = code {
            out.push(char::from(code));
            rest = &rest[index + 4..];
        } else {
            out.push('\\');
            rest = &rest[index + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,name=systemd
";

    #[test]
    fn finds_the_cgroup2_mount() {
        let cases = [
            (HYBRID, Some("/sys/fs/cgroup/unified")),
            (
                "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
                Some("/sys/fs/cgroup"),
            ),
            (
                "30 23 0:26 / /mnt/my\\040cgroup rw - cgroup2 none rw\n",
                Some("/mnt/my cgroup"),
            ),
            ("25 30 0:23 / /sys rw - sysfs sysfs rw\n", None),
        ];
        for (mountinfo, expected) in cases {
            assert_eq!(
                find_mount(mountinfo, "cgroup2"),
                expected.map(PathBuf::from)
            );
        }
    }
}
