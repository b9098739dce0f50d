//! Finding every network namespace on the node: the ones processes live in
//! (`/proc/<pid>/ns/net`) and the named ones bind-mounted by `ip netns add`
//! (`/var/run/netns/<name>`). Pods come and go, so this runs before every snapshot.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::model::NetnsId;

/// A namespace and a path that opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pub id: NetnsId,
    pub path: PathBuf,
    /// Its name under `/var/run/netns`, if it has one.
    pub name: Option<String>,
    /// `/proc/<pid>` of a process in it, if one was found: its cgroup says whose it is.
    pub process: Option<PathBuf>,
    /// The host's own namespace: the one of PID 1 (the node's init, where `proc` is the host's).
    pub host: bool,
}

/// Where named namespaces are bind-mounted (`/var/run` is usually a link to `/run`).
const NAMED_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// Every namespace reachable from `proc` (normally `/proc`) and the named-namespace
/// directories, one entry per namespace.
#[must_use]
pub fn discover(proc: &Path) -> Vec<Netns> {
    let mut found: BTreeMap<NetnsId, Netns> = BTreeMap::new();
    for dir in NAMED_DIRS {
        for (path, name) in entries(Path::new(dir)) {
            if let Some(id) = inode(&path) {
                found.entry(id).or_insert(Netns {
                    id,
                    path,
                    name: Some(name),
                    process: None,
                    host: false,
                });
            }
        }
    }
    for (path, name) in entries(proc) {
        // Only processes (thread group leaders): threads share their leader's namespace
        // in all but rare cases, and listing them would multiply the work.
        if !name.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        let process = path;
        let path = process.join("ns/net");
        if let Some(id) = inode(&path) {
            let netns = found.entry(id).or_insert(Netns {
                id,
                path,
                name: None,
                process: None,
                host: false,
            });
            // The first process found: /proc lists pids in ascending order, so usually the
            // oldest, which in a pod is the sandbox ("pause") container.
            netns.process.get_or_insert(process);
        }
    }
    if let Some(host) = inode(&proc.join("1/ns/net")).and_then(|id| found.get_mut(&id)) {
        host.host = true;
    }
    found.into_values().collect()
}

fn entries(dir: &Path) -> impl Iterator<Item = (PathBuf, String)> {
    fs::read_dir(dir).into_iter().flatten().filter_map(|entry| {
        let entry = entry.ok()?;
        Some((entry.path(), entry.file_name().into_string().ok()?))
    })
}

/// The namespace inode a `ns/net` link or bind mount refers to. Processes exit and
/// namespaces are deleted while this runs: those simply drop out.
fn inode(path: &Path) -> Option<NetnsId> {
    let metadata = fs::metadata(path).ok()?;
    NetnsId::try_from(metadata.ino()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_namespace_once() {
        let own = inode(Path::new("/proc/self/ns/net")).expect("own namespace");
        let found = discover(Path::new("/proc"));
        assert_eq!(found.iter().filter(|netns| netns.id == own).count(), 1);
        let mut ids: Vec<NetnsId> = found.iter().map(|netns| netns.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), found.len());
    }

    #[test]
    fn a_missing_proc_finds_nothing_there() {
        assert!(
            discover(Path::new("/nonexistent"))
                .iter()
                .all(|netns| netns.name.is_some())
        );
    }
}
