//! The kernel side: load the programs, attach each to its hook, read their maps and records.
//!
//! Which hook gives which fact, and why it is the cheapest one that gives it exactly, is
//! written beside each program in `port-monitor-ebpf/src/probes/`; [`Hook`] carries the
//! summary that `port-monitor check` prints and the daemon logs.

pub mod attach;
pub mod bound_sockets;
pub mod decode;
pub mod functions;
pub mod layout;
pub mod reader;
pub mod requirements;
pub mod socket_list;

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use port_monitor_common::{
    kernel::LAYOUT_GLOBAL,
    maps::{self, Counter, ErrorKey, TCP_STATE_SLOTS},
};

pub use bound_sockets::BoundSocketReader;
pub use socket_list::TcpLister;

pub use attach::{
    AUTOBIND_UNAVAILABLE, BIND_UNAVAILABLE, BOUND_SOCKETS_UNAVAILABLE, Collectors, ErrnoHook, Hook,
    TcpStateHook, Unavailable,
};

use crate::model::{KernelCounters, Retired, TcpState, consistency::Transitions};

/// The compiled kernel programs, built by `build.rs`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port-monitor"));

/// A handle on the node-wide TCP transition counts, shared with the snapshot thread, which
/// reads them around each snapshot (see `model::consistency`).
#[derive(Clone)]
pub struct TransitionReader(Arc<PerCpuArray<MapData, u64>>);

impl TransitionReader {
    /// The cumulative count of every transition seen so far, summed over CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn read(&self) -> Result<Transitions, KernelError> {
        let mut transitions = Transitions::new();
        for (index, per_cpu) in (0..).zip(self.0.iter()) {
            let count: u64 = per_cpu
                .map_err(map_error(maps::TCP_TRANSITIONS))?
                .iter()
                .sum();
            let (old, new) = (index / TCP_STATE_SLOTS, index % TCP_STATE_SLOTS);
            let state = |value: u32| u8::try_from(value).ok().and_then(TcpState::from_kernel);
            if count > 0
                && let (Some(old), Some(new)) = (state(old), state(new))
            {
                transitions.insert((old, new), count);
            }
        }
        Ok(transitions)
    }
}

/// Why the programs could not be loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Requirement(#[from] requirements::MissingRequirement),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no program {0} (build mismatch)")]
    NoProgram(&'static str),
    #[error("the eBPF object has no map {0} (build mismatch)")]
    NoMap(&'static str),
    #[error("reading the kernel programs' log: {0}")]
    Logs(#[source] Box<aya_log::Error>),
    #[error(
        "{source}. Counting this with syscall tracepoints instead would slow every syscall on \
         the node: --kernel.errno-hook=auto does that where fexit is refused; {off} turns this \
         collector off"
    )]
    FexitUnavailable {
        source: Box<KernelError>,
        off: &'static str,
    },
    #[error("no fexit program could be attached for {facts} ({reasons})")]
    NoCandidate {
        facts: &'static str,
        reasons: String,
    },
    #[error("program {program} ({attach_point}): {source}{hint}")]
    Program {
        program: &'static str,
        attach_point: String,
        source: Box<aya::programs::ProgramError>,
        hint: &'static str,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("opening the cgroup v2 root {path}: {source}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
}

/// The loaded, attached programs and the maps the daemon reads. Dropping it detaches every
/// program: all attachments are links owned by file descriptors, none is pinned.
pub struct Kernel {
    /// The programs and maps; shared with the snapshot thread, which opens the socket
    /// iterator from it.
    _ebpf: Arc<Mutex<Ebpf>>,
    /// Log lines from the programs (aya-log), written only on paths that should never run.
    logs: aya_log::EbpfLogger<&'static dyn log::Log>,
    hooks: Vec<Hook>,
    unavailable: Vec<Unavailable>,
    /// The failure maps: port failures, then the others (keys never overlap).
    errors: [(&'static str, PerCpuHashMap<MapData, ErrorKey, u64>); 2],
    transitions: TransitionReader,
    bound_sockets: Option<BoundSocketReader>,
    tcp_lister: Option<TcpLister>,
    counters: PerCpuArray<MapData, u64>,
}

impl Kernel {
    /// Checks the system, loads the programs, attaches them and returns them with the ring
    /// buffer their records arrive on. Cgroup programs attach to `cgroup_root`, or to the
    /// cgroup v2 mount found in /proc/self/mountinfo.
    ///
    /// An optional collector that cannot be attached (no cgroup v2, no tracefs, a kernel
    /// that refuses fexit, a function this kernel lacks) is left out and listed in
    /// [`Kernel::unavailable`].
    ///
    /// # Errors
    /// When a requirement of the TCP state program is missing or the kernel refuses it; the
    /// message names it.
    pub fn load(
        collectors: Collectors,
        cgroup_root: Option<&Path>,
    ) -> Result<(Self, RingBuf<MapData>), KernelError> {
        requirements::check_capabilities()?;
        let kernel_btf = layout::running_kernel_btf()?;
        let layout = layout::resolve(&kernel_btf)?;
        for (group, missing) in &layout.missing {
            tracing::info!(?group, %missing, "kernel field absent; the fact it serves is left out");
        }
        let btf = aya::Btf::from_sys_fs()
            .map_err(|error| KernelError::Load(Box::new(aya::EbpfError::BtfError(error))))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(LAYOUT_GLOBAL, &layout.layout, true)
            .load(PROGRAMS)
            .map_err(|error| KernelError::Load(Box::new(error)))?;
        let logs = aya_log::EbpfLogger::init(&mut ebpf)
            .map_err(|error| KernelError::Logs(Box::new(error)))?;
        let env = attach::Environment {
            btf: &btf,
            kernel_btf: &kernel_btf,
            layout: &layout,
            // Needed by some hooks only: a failure here degrades what needs it.
            tracefs: if collectors.may_need_tracefs() {
                requirements::ensure_tracefs()
            } else {
                Ok(())
            },
            cgroup_root: cgroup_root
                .map_or_else(requirements::cgroup2_root, |path| Ok(path.to_owned())),
            lists_bound_sockets: layout::lists_bound_sockets(&kernel_btf),
        };
        let attached = attach::attach_all(&mut ebpf, &env, collectors)?;
        let events = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)
            .map_err(map_error(maps::EVENTS))?;
        let mut error_map = |name: &'static str| {
            PerCpuHashMap::try_from(take_map(&mut ebpf, name)?)
                .map(|map| (name, map))
                .map_err(map_error(name))
        };
        let errors = [
            error_map(maps::PORT_FAILURES)?,
            error_map(maps::SOCKET_ERRORS)?,
        ];
        let transitions = TransitionReader(Arc::new(
            PerCpuArray::try_from(take_map(&mut ebpf, maps::TCP_TRANSITIONS)?)
                .map_err(map_error(maps::TCP_TRANSITIONS))?,
        ));
        let bound_sockets = if attached.tracks_bound_sockets {
            Some(BoundSocketReader {
                map: Arc::new(std::sync::Mutex::new(
                    BpfHashMap::try_from(take_map(&mut ebpf, maps::BOUND_SOCKETS)?)
                        .map_err(map_error(maps::BOUND_SOCKETS))?,
                )),
                tables_list_them: env.lists_bound_sockets,
            })
        } else {
            None
        };
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)
            .map_err(map_error(maps::COUNTERS))?;
        let ebpf = Arc::new(Mutex::new(ebpf));
        let tcp_lister = if attached.lists_sockets {
            socket_list::kernel_hz()
                .inspect_err(|error| {
                    tracing::info!(%error, "the kernel's tick rate is unknown; snapshots list TCP sockets with sock_diag");
                })
                .ok()
                .map(|hz| TcpLister::new(Arc::clone(&ebpf), hz, env.lists_bound_sockets))
        } else {
            None
        };
        Ok((
            Self {
                _ebpf: ebpf,
                logs,
                hooks: attached.hooks,
                unavailable: attached.unavailable,
                errors,
                transitions,
                bound_sockets,
                tcp_lister,
                counters,
            },
            events,
        ))
    }

    /// A handle on the sockets whose port came from `bind()`, when the programs that track
    /// them are attached.
    #[must_use]
    pub fn bound_sockets(&self) -> Option<BoundSocketReader> {
        self.bound_sockets.clone()
    }

    /// Adds the sockets bound before the programs were attached, found among the open files
    /// of the processes under `procfs` (see [`bound_sockets::seed`]). Call it once, before
    /// handing out readers. Not needed where the snapshot's listing shows idle bound sockets
    /// (`sock_diag` from Linux 6.7); the socket iterator never does: the snapshot then looks
    /// for idle ones only when a tracked socket is missing from its listing, and must track
    /// them all.
    pub fn seed_bound_sockets(&mut self, procfs: &Path) {
        if let Some(reader) = &self.bound_sockets
            && (!reader.tables_list_them || self.tcp_lister.is_some())
        {
            let mut map = reader
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let added = bound_sockets::seed(&mut map, procfs);
            tracing::info!(added, "bound-but-idle TCP sockets from before start-up");
        }
    }

    /// A handle that lists a namespace's TCP sockets with the iterator program, where the
    /// kernel runs it.
    #[must_use]
    pub fn tcp_lister(&self) -> Option<TcpLister> {
        self.tcp_lister.clone()
    }

    /// Writes what the programs logged to the daemon's log.
    pub fn flush_logs(&mut self) {
        self.logs.flush();
    }

    /// A handle on the TCP transition counts for another thread.
    #[must_use]
    pub fn transitions(&self) -> TransitionReader {
        self.transitions.clone()
    }

    /// Where each program is attached and what it gives.
    #[must_use]
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// The optional collectors that could not be attached, and why.
    #[must_use]
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Reads every counter map, summing the per-CPU values.
    ///
    /// # Errors
    /// When a map read fails.
    pub fn read_counters(&self) -> Result<KernelCounters, KernelError> {
        let mut errors = Vec::new();
        for (name, map) in &self.errors {
            for entry in map {
                let (key, per_cpu) = entry.map_err(map_error(name))?;
                errors.push((key, per_cpu.iter().sum()));
            }
        }
        let transitions = self.transitions.read()?;
        let counter = |slot: Counter| -> Result<u64, KernelError> {
            Ok(self
                .counters
                .get(&(slot as u32), 0)
                .map_err(map_error(maps::COUNTERS))?
                .iter()
                .sum())
        };
        Ok(KernelCounters {
            errors,
            transitions,
            events_lost: counter(Counter::EventsLost)?,
            error_keys_dropped: counter(Counter::ErrorKeysDropped)?,
            port_failure_keys_dropped: counter(Counter::PortFailureKeysDropped)?,
            bound_sockets_dropped: counter(Counter::BoundSocketsDropped)?,
        })
    }

    /// Deletes the counters of namespaces that are gone.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn forget(&mut self, gone: &[Retired]) -> Result<(), KernelError> {
        for (name, map) in &mut self.errors {
            let stale: Vec<ErrorKey> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|key| {
                    gone.iter().any(|(netns, cookie)| {
                        key.netns == *netns
                            && cookie.is_none_or(|cookie| key.netns_cookie == cookie)
                    })
                })
                .collect();
            for key in &stale {
                map.remove(key).map_err(map_error(name))?;
            }
        }
        Ok(())
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, KernelError> {
    ebpf.take_map(name).ok_or(KernelError::NoMap(name))
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map {
        map,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{functions, layout};

    /// The BTF of each kernel of the matrix (`cargo xtask test` passes the files it extracted
    /// from Debian's packages), with the kernel's version from the directory holding it.
    fn matrix_kernels() -> Vec<(PathBuf, (u32, u32))> {
        let Ok(paths) = std::env::var("PORT_MONITOR_TEST_KERNEL_BTF") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PORT_MONITOR_TEST_KERNEL_BTF is unset: run the tests with cargo xtask test"
            );
            eprintln!("SKIPPED: no matrix kernel BTF (cargo xtask test passes it)");
            return Vec::new();
        };
        paths
            .split(':')
            .map(|path| {
                let path = PathBuf::from(path);
                let release = path
                    .parent()
                    .and_then(|dir| dir.file_name())
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut numbers = release
                    .split(['.', '-', '+'])
                    .map_while(|part| part.parse::<u32>().ok());
                let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
                (path, version)
            })
            .collect()
    }

    /// Every field the programs read, every preferred fexit target with the arguments its
    /// program expects, and the right answer to "does `sock_diag` list bound sockets", on each
    /// kernel users run.
    #[test]
    fn each_matrix_kernel_has_what_the_programs_need() {
        for (path, version) in matrix_kernels() {
            let btf = btf_rs::Btf::from_file(&path).expect("the matrix kernel's BTF");
            let resolved = layout::resolve(&btf).expect("every required field");
            assert!(
                resolved.missing.is_empty(),
                "{path:?}: {:?}",
                resolved.missing
            );
            for candidates in [functions::BIND4, functions::BIND6, functions::AUTOBIND] {
                assert_eq!(
                    functions::check(&btf, &candidates[0]),
                    Ok(()),
                    "{path:?}: {candidates:?}"
                );
            }
            assert_eq!(
                layout::lists_bound_sockets(&btf),
                version >= (6, 7),
                "{path:?} ({version:?})"
            );
        }
    }
}
