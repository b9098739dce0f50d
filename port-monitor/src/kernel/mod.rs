//! The kernel side: load the programs, attach each to its hook, read their maps and records.
//!
//! Which hook gives which fact, and why it is the cheapest one that gives it exactly, is
//! written beside each program in `port-monitor-ebpf/src/probes/`; [`Hook`] carries the
//! summary that `port-monitor check` prints and the daemon logs.

pub mod decode;
pub mod layout;
pub mod reader;
pub mod requirements;

use std::{fs::File, os::fd::AsFd as _, path::Path, sync::Arc};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, TracePoint},
};
use port_monitor_common::{
    kernel::LAYOUT_GLOBAL,
    maps::{self, Counter, ErrorKey, TCP_STATE_SLOTS},
};

use crate::model::{KernelCounters, NetnsId, TcpState, consistency::Transitions};

/// The compiled kernel programs, built by `build.rs`.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port-monitor"));

/// Optional groups of programs, each with its own cost (see BENCHMARKS.md). The TCP state
/// program is always attached: everything else builds on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collectors {
    /// Which hook watches TCP state changes.
    pub tcp_state_hook: TcpStateHook,
    /// `bind()` errors: cgroup `bind4`/`bind6` and `sys_exit_bind`.
    pub bind: bool,
    /// UDP autobind exhaustion: `sys_exit_{connect,sendto,sendmsg,sendmmsg}`.
    pub autobind: bool,
}

impl Collectors {
    /// Whether a classic tracepoint may be attached: those need tracefs. (And once a syscall
    /// tracepoint is attached, every syscall takes the traced path.)
    const fn need_tracefs(self) -> bool {
        self.bind || self.autobind || !matches!(self.tcp_state_hook, TcpStateHook::TpBtf)
    }
}

/// The hook that watches TCP state changes. Both see the same `inet_sock_set_state`
/// tracepoint; `tp_btf` costs ~60 ns a hit, the classic tracepoint ~166 ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcpStateHook {
    /// The BTF-enabled tracepoint when the kernel accepts it, else the classic one.
    Auto,
    /// `tp_btf/inet_sock_set_state` only.
    TpBtf,
    /// `tracepoint/sock/inet_sock_set_state` only.
    Tracepoint,
}

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

/// An optional collector whose hooks could not all be attached: port-monitor runs without
/// it, logs why, and says so in `port_monitor_degraded`.
#[derive(Clone, Debug)]
pub struct Unavailable {
    /// The `port_monitor_degraded` reason: `bind_hooks_unavailable` or
    /// `autobind_hooks_unavailable`.
    pub reason: &'static str,
    /// What the kernel or the system said.
    pub cause: String,
}

/// One attached program: where it sits and which facts it gives.
#[derive(Clone, Debug)]
pub struct Hook {
    pub program: &'static str,
    pub attach_point: String,
    pub facts: &'static str,
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
    _ebpf: Ebpf,
    /// Log lines from the programs (aya-log), written only on paths that should never run.
    logs: aya_log::EbpfLogger<&'static dyn log::Log>,
    hooks: Vec<Hook>,
    unavailable: Vec<Unavailable>,
    errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    transitions: TransitionReader,
    counters: PerCpuArray<MapData, u64>,
}

impl Kernel {
    /// Checks the system, loads the programs, attaches them and returns them with the ring
    /// buffer their records arrive on. The bind hooks attach to `cgroup_root`, or to the
    /// cgroup v2 mount found in /proc/self/mountinfo.
    ///
    /// An optional collector that cannot be attached (no cgroup v2, no tracefs, a tracepoint
    /// this kernel lacks) is left out and listed in [`Kernel::unavailable`].
    ///
    /// # Errors
    /// When a requirement of the TCP state program is missing or the kernel refuses it; the
    /// message names it.
    pub fn load(
        collectors: Collectors,
        cgroup_root: Option<&Path>,
    ) -> Result<(Self, RingBuf<MapData>), KernelError> {
        requirements::check_capabilities()?;
        // Needed by the optional collectors only: a failure here degrades them.
        let tracefs = if collectors.need_tracefs() {
            requirements::ensure_tracefs()
        } else {
            Ok(())
        };
        let cgroup_root =
            cgroup_root.map_or_else(requirements::cgroup2_root, |path| Ok(path.to_owned()));
        let layout = layout::from_running_kernel()?;
        let btf = aya::Btf::from_sys_fs()
            .map_err(|error| KernelError::Load(Box::new(aya::EbpfError::BtfError(error))))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(LAYOUT_GLOBAL, &layout, true)
            .load(PROGRAMS)
            .map_err(|error| KernelError::Load(Box::new(error)))?;
        let logs = aya_log::EbpfLogger::init(&mut ebpf)
            .map_err(|error| KernelError::Logs(Box::new(error)))?;
        let mut attached = Attached::default();
        attach_all(
            &mut ebpf,
            &btf,
            collectors,
            &tracefs,
            &cgroup_root,
            &mut attached,
        )?;
        let Attached { hooks, unavailable } = attached;
        let events = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)
            .map_err(map_error(maps::EVENTS))?;
        let errors = PerCpuHashMap::try_from(take_map(&mut ebpf, maps::SOCKET_ERRORS)?)
            .map_err(map_error(maps::SOCKET_ERRORS))?;
        let transitions = TransitionReader(Arc::new(
            PerCpuArray::try_from(take_map(&mut ebpf, maps::TCP_TRANSITIONS)?)
                .map_err(map_error(maps::TCP_TRANSITIONS))?,
        ));
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)
            .map_err(map_error(maps::COUNTERS))?;
        Ok((
            Self {
                _ebpf: ebpf,
                logs,
                hooks,
                unavailable,
                errors,
                transitions,
                counters,
            },
            events,
        ))
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
        for entry in &self.errors {
            let (key, per_cpu) = entry.map_err(map_error(maps::SOCKET_ERRORS))?;
            errors.push((key, per_cpu.iter().sum()));
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
        })
    }

    /// Deletes the counters of namespaces that are gone.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn forget(&mut self, gone: &[NetnsId]) -> Result<(), KernelError> {
        let stale: Vec<ErrorKey> = self
            .errors
            .keys()
            .filter_map(Result::ok)
            .filter(|key| gone.contains(&key.netns))
            .collect();
        for key in &stale {
            self.errors
                .remove(key)
                .map_err(map_error(maps::SOCKET_ERRORS))?;
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

/// What attaching gave: the hooks in place, and the collectors left out.
#[derive(Default)]
struct Attached {
    hooks: Vec<Hook>,
    unavailable: Vec<Unavailable>,
}

impl Attached {
    /// Keeps a collector's hooks, or leaves the collector out (with the reason, logged) when
    /// one of them failed. Hooks of the collector attached before the failure stay: they are
    /// harmless, and detaching them mid-way would need state aya does not give back.
    fn collector(&mut self, reason: &'static str, hooks: Result<Vec<Hook>, KernelError>) {
        match hooks {
            Ok(hooks) => self.hooks.extend(hooks),
            Err(error) => {
                tracing::warn!(%error, reason, "collector unavailable, running without it");
                self.unavailable.push(Unavailable {
                    reason,
                    cause: error.to_string(),
                });
            }
        }
    }
}

fn attach_all(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    collectors: Collectors,
    tracefs: &Result<(), requirements::MissingRequirement>,
    cgroup_root: &Result<std::path::PathBuf, requirements::MissingRequirement>,
    attached: &mut Attached,
) -> Result<(), KernelError> {
    // Without tracefs only the BTF tracepoint can watch TCP states.
    let tcp_state_hook = match (tracefs, collectors.tcp_state_hook) {
        (Err(_), TcpStateHook::Auto) => TcpStateHook::TpBtf,
        (Err(missing), TcpStateHook::Tracepoint) => return Err(missing.clone().into()),
        (_, choice) => choice,
    };
    attached
        .hooks
        .push(attach_tcp_state(ebpf, btf, tcp_state_hook)?);
    if collectors.bind {
        let hooks = match (tracefs, cgroup_root) {
            (Ok(()), Ok(root)) => attach_bind(ebpf, root),
            (Err(missing), _) | (_, Err(missing)) => Err(missing.clone().into()),
        };
        attached.collector(BIND_UNAVAILABLE, hooks);
    }
    if collectors.autobind {
        let hooks = tracefs
            .clone()
            .map_err(KernelError::from)
            .and_then(|()| attach_autobind(ebpf));
        attached.collector(AUTOBIND_UNAVAILABLE, hooks);
    }
    Ok(())
}

/// `port_monitor_degraded` reasons.
pub const BIND_UNAVAILABLE: &str = "bind_hooks_unavailable";
pub const AUTOBIND_UNAVAILABLE: &str = "autobind_hooks_unavailable";

fn attach_autobind(ebpf: &mut Ebpf) -> Result<Vec<Hook>, KernelError> {
    let facts = "UDP autobind out of ports (EAGAIN on a UDP socket without a port)";
    [
        ("connect_exit", "sys_exit_connect"),
        ("sendto_exit", "sys_exit_sendto"),
        ("sendmsg_exit", "sys_exit_sendmsg"),
        ("sendmmsg_exit", "sys_exit_sendmmsg"),
    ]
    .into_iter()
    .map(|(program, syscall)| attach_syscall_exit(ebpf, program, syscall, facts))
    .collect()
}

const TCP_STATE_FACTS: &str = "TCP state transitions; connect() failures: out of ports \
                               (EADDRNOTAVAIL), refused, timed out, unreachable";

/// Attaches the TCP state program to the hook `choice` names; `Auto` tries `tp_btf` first and
/// falls back to the classic tracepoint, saying why.
fn attach_tcp_state(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    choice: TcpStateHook,
) -> Result<Hook, KernelError> {
    if choice == TcpStateHook::Tracepoint {
        return attach_tcp_state_tracepoint(ebpf);
    }
    let hook = Hook {
        program: "tcp_state_change",
        attach_point: "tp_btf/inet_sock_set_state".into(),
        facts: TCP_STATE_FACTS,
    };
    let program: &mut BtfTracePoint = program_mut(ebpf, hook.program)?;
    match program
        .load("inet_sock_set_state", btf)
        .and_then(|()| program.attach().map(drop))
        .map_err(program_error(&hook))
    {
        Ok(()) => Ok(hook),
        Err(error) if choice == TcpStateHook::Auto => {
            tracing::warn!(%error, "tp_btf unavailable, using the classic tracepoint (~100 ns more a hit)");
            attach_tcp_state_tracepoint(ebpf)
        }
        Err(error) => Err(error),
    }
}

fn attach_tcp_state_tracepoint(ebpf: &mut Ebpf) -> Result<Hook, KernelError> {
    let hook = Hook {
        program: "tcp_state_tracepoint",
        attach_point: "tracepoint/sock/inet_sock_set_state".into(),
        facts: TCP_STATE_FACTS,
    };
    let program: &mut TracePoint = program_mut(ebpf, hook.program)?;
    program
        .load()
        .and_then(|()| program.attach("sock", "inet_sock_set_state").map(drop))
        .map_err(program_error(&hook))?;
    Ok(hook)
}

fn attach_bind(ebpf: &mut Ebpf, cgroup_root: &Path) -> Result<Vec<Hook>, KernelError> {
    let cgroup = File::open(cgroup_root).map_err(|source| KernelError::Cgroup {
        path: cgroup_root.display().to_string(),
        source,
    })?;
    let mut hooks = Vec::new();
    for (name, hook_name) in [("bind4_request", "bind4"), ("bind6_request", "bind6")] {
        let hook = Hook {
            program: name,
            attach_point: format!("cgroup/{hook_name} on {}", cgroup_root.display()),
            facts: "bind(): the address, port and protocol asked for",
        };
        let program: &mut CgroupSockAddr = program_mut(ebpf, hook.program)?;
        // Other agents on the node (CNI plugins, service meshes) attach programs to the same
        // cgroup; port-monitor must sit beside them, not replace them. A bpf_link attachment
        // (kernels >= 5.7) always runs beside the others, and the kernel refuses any flag on
        // it: so the mode asked for here is the default.
        program
            .load()
            .and_then(|()| {
                program
                    .attach(cgroup.as_fd(), CgroupAttachMode::default())
                    .map(drop)
            })
            .map_err(program_error(&hook))?;
        hooks.push(hook);
    }
    let facts = "bind() errno (EADDRINUSE, EACCES, ...)";
    hooks.push(attach_syscall_exit(
        ebpf,
        "bind_exit",
        "sys_exit_bind",
        facts,
    )?);
    Ok(hooks)
}

fn attach_syscall_exit(
    ebpf: &mut Ebpf,
    program: &'static str,
    syscall: &str,
    facts: &'static str,
) -> Result<Hook, KernelError> {
    let hook = Hook {
        program,
        attach_point: format!("tracepoint/syscalls/{syscall}"),
        facts,
    };
    let program: &mut TracePoint = program_mut(ebpf, hook.program)?;
    program
        .load()
        .and_then(|()| program.attach("syscalls", syscall).map(drop))
        .map_err(program_error(&hook))?;
    Ok(hook)
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|program| program.try_into().ok())
        .ok_or(KernelError::NoProgram(name))
}

fn program_error(hook: &Hook) -> impl Fn(aya::programs::ProgramError) -> KernelError + '_ {
    move |source| {
        let hint = if source.to_string().contains("Operation not permitted") {
            ". The kernel refused with EPERM: check the capabilities listed in the docs, and \
             that kernel lockdown does not forbid this program type"
        } else {
            ""
        };
        KernelError::Program {
            program: hook.program,
            attach_point: hook.attach_point.clone(),
            source: Box::new(source),
            hint,
        }
    }
}
