//! Which workload a cgroup belongs to, from its path alone: no API access needed.
//!
//! Kubernetes nodes name cgroups after the pod and the container, in one of two layouts
//! depending on the kubelet's cgroup driver, with the container runtime's prefix:
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<container id>`
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with
//!   underscores>.slice/cri-containerd-<container id>.scope` (`crio-`, `docker-`)
//!
//! Outside Kubernetes, Docker uses `/docker/<id>` or `/system.slice/docker-<id>.scope`.
//! cgroup v1 lists one path per hierarchy (`4:memory:/kubepods/...`), v2 one (`0::/...`).

/// What a cgroup path says about the workload in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The pod's UID, with dashes, when the path is a Kubernetes pod's.
    pub pod_uid: Option<String>,
    /// The container's id (64 hex digits), when the path is a container's.
    pub container_id: Option<String>,
    /// The runtime that made the container, when its prefix says (`containerd`, `cri-o`,
    /// `docker`).
    pub runtime: Option<&'static str>,
}

impl Workload {
    /// Whether the path said anything at all.
    #[must_use]
    pub fn is_known(&self) -> bool {
        self.pod_uid.is_some() || self.container_id.is_some()
    }
}

/// Reads the workload from a cgroup path (`/kubepods/...`).
#[must_use]
pub fn from_path(path: &str) -> Workload {
    let mut workload = Workload::default();
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        if let Some(uid) = pod_uid(segment) {
            workload.pod_uid = Some(uid);
        } else if let Some((runtime, id)) = container(segment) {
            workload.runtime = runtime.or(workload.runtime);
            workload.container_id = Some(id.to_owned());
        }
    }
    workload
}

/// Reads the workload from the contents of `/proc/<pid>/cgroup`: the cgroup v2 line if it
/// names a workload, else the first v1 line that does (in hybrid mode the unified hierarchy
/// may hold everything at its root).
#[must_use]
pub fn from_proc_cgroup(text: &str) -> Workload {
    let paths = text.lines().filter_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (hierarchy, _controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        Some((hierarchy == "0", path))
    });
    let mut fallback = Workload::default();
    for (unified, path) in paths {
        let workload = from_path(path);
        if unified && workload.is_known() {
            return workload;
        }
        if !fallback.is_known() {
            fallback = workload;
        }
    }
    fallback
}

/// `pod<uid>` (cgroupfs) or `kubepods-<class>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let segment = segment.strip_suffix(".slice").unwrap_or(segment);
    let start = segment.rfind("pod")?;
    let before = &segment[..start];
    if !(before.is_empty() || before.ends_with('-')) {
        return None;
    }
    let uid = segment[start + 3..].replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A UUID: 8-4-4-4-12 hex digits.
fn is_uid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| {
            group.len() == len && group.bytes().all(|byte| byte.is_ascii_hexdigit())
        })
}

/// `<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`,
/// `crio-conmon-<id>.scope` is the runtime's monitor, not the container.
fn container(segment: &str) -> Option<(Option<&'static str>, &str)> {
    const PREFIXES: [(&str, &str); 3] = [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ];
    let (runtime, id) = match segment.strip_suffix(".scope") {
        Some(scope) => {
            let (prefix, runtime) = PREFIXES
                .iter()
                .find(|(prefix, _)| scope.starts_with(prefix))?;
            (Some(*runtime), &scope[prefix.len()..])
        }
        None => (None, segment),
    };
    (id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some((runtime, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2d8f5e1b4c3a79e0f6b1d2c3a4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b";
    const UID: &str = "0f5c2a71-3b4d-4e8f-9a10-b2c3d4e5f607";

    fn workload(
        pod_uid: Option<&str>,
        container_id: Option<&str>,
        runtime: Option<&'static str>,
    ) -> Workload {
        Workload {
            pod_uid: pod_uid.map(str::to_owned),
            container_id: container_id.map(str::to_owned),
            runtime,
        }
    }

    #[test]
    fn reads_every_runtime_and_driver_layout() {
        let uid_underscores = UID.replace('-', "_");
        let cases = [
            (
                "cgroupfs driver, containerd or CRI-O, v1 or v2",
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                workload(Some(UID), Some(ID), None),
            ),
            (
                "cgroupfs driver, guaranteed pod (no QoS level)",
                format!("/kubepods/pod{UID}/{ID}"),
                workload(Some(UID), Some(ID), None),
            ),
            (
                "systemd driver, containerd",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_underscores}.slice/cri-containerd-{ID}.scope"
                ),
                workload(Some(UID), Some(ID), Some("containerd")),
            ),
            (
                "systemd driver, CRI-O, best effort",
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_underscores}.slice/crio-{ID}.scope"
                ),
                workload(Some(UID), Some(ID), Some("cri-o")),
            ),
            (
                "systemd driver, guaranteed, docker (dockershim)",
                format!("/kubepods.slice/kubepods-pod{uid_underscores}.slice/docker-{ID}.scope"),
                workload(Some(UID), Some(ID), Some("docker")),
            ),
            (
                "systemd driver, the pod's own slice (pause-less processes)",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_underscores}.slice"
                ),
                workload(Some(UID), None, None),
            ),
            (
                "plain Docker, cgroupfs",
                format!("/docker/{ID}"),
                workload(None, Some(ID), None),
            ),
            (
                "plain Docker, systemd",
                format!("/system.slice/docker-{ID}.scope"),
                workload(None, Some(ID), Some("docker")),
            ),
            (
                "a system service",
                "/system.slice/sshd.service".to_owned(),
                workload(None, None, None),
            ),
            ("the root", "/".to_owned(), workload(None, None, None)),
            (
                "CRI-O's conmon is not the container",
                format!(
                    "/kubepods.slice/kubepods-pod{uid_underscores}.slice/crio-conmon-{ID}.scope"
                ),
                workload(Some(UID), None, None),
            ),
        ];
        for (name, path, expected) in cases {
            assert_eq!(from_path(&path), expected, "{name}: {path}");
        }
    }

    #[test]
    fn reads_proc_cgroup_of_v1_and_v2() {
        let v2 = format!("0::/kubepods/burstable/pod{UID}/{ID}\n");
        let hybrid = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"
        );
        let v1 = format!("11:memory:/user.slice\n4:cpu,cpuacct:/kubepods/pod{UID}/{ID}\n");
        assert_eq!(from_proc_cgroup(&v2), workload(Some(UID), Some(ID), None));
        assert_eq!(
            from_proc_cgroup(&hybrid),
            workload(Some(UID), Some(ID), None),
            "hybrid: the v2 root says nothing, the v1 lines do"
        );
        assert_eq!(from_proc_cgroup(&v1), workload(Some(UID), Some(ID), None));
        assert_eq!(from_proc_cgroup("garbage"), Workload::default());
    }
}
