//! Attaching the programs: for each fact, the cheapest hook the running kernel offers.
//!
//! | fact | preferred hook | fallback |
//! |---|---|---|
//! | TCP state changes, failed connects | `tp_btf/inet_sock_set_state` | the classic tracepoint |
//! | `bind()` errno | fexit on `inet_bind`/`inet6_bind` | cgroup bind hooks + `sys_exit_bind` (only when asked: it slows every syscall) |
//! | UDP autobind failures | fexit on `inet_autobind` | `sys_exit_{connect,send*}` (likewise) |
//! | ports held by `bind()` alone, before Linux 6.7 | cgroup `post_bind` + `sock_release` | none |
//!
//! A collector that cannot be attached is left out, logged, and reported as [`Unavailable`]
//! (`port_monitor_degraded`); only the TCP state program is required.

use std::{fs::File, os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, FExit, Program, TracePoint,
    },
};

use super::{
    KernelError,
    functions::{self, Candidate},
    layout::{Optional, Resolved},
    requirements::MissingRequirement,
};

/// Optional groups of programs, each with its own cost (see BENCHMARKS.md). The TCP state
/// program is always attached: everything else builds on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collectors {
    /// Which hook watches TCP state changes.
    pub tcp_state_hook: TcpStateHook,
    /// Where `bind()` errno and UDP autobind failures are seen.
    pub errno_hook: ErrnoHook,
    /// `bind()` errors.
    pub bind: bool,
    /// UDP autobind exhaustion.
    pub autobind: bool,
}

impl Collectors {
    /// Whether a classic tracepoint may be attached: those need tracefs.
    #[must_use]
    pub const fn may_need_tracefs(self) -> bool {
        let syscall_tracepoints =
            (self.bind || self.autobind) && !matches!(self.errno_hook, ErrnoHook::Fexit);
        syscall_tracepoints || !matches!(self.tcp_state_hook, TcpStateHook::TpBtf)
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

/// Where the errno of `bind()` and UDP autobind failures are seen. Only the kernel function or
/// the syscall's exit knows them; the two differ in who pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrnoHook {
    /// fexit programs on the kernel functions: only `bind()` and a port-less UDP socket's first
    /// send pay. A kernel that refuses trampolines (lockdown, no BTF-based tracing) then
    /// counts neither fact, and says so.
    Fexit,
    /// fexit where the kernel allows it, else the syscall tracepoints.
    Auto,
    /// Syscall tracepoints: every syscall of every process on the node takes the slower
    /// traced path (5-8% on a syscall-bound loop).
    Tracepoint,
}

/// One attached program: where it sits and which facts it gives.
#[derive(Clone, Debug)]
pub struct Hook {
    pub program: &'static str,
    pub attach_point: String,
    pub facts: &'static str,
}

/// An optional collector whose hooks could not all be attached: port-monitor runs without
/// it, logs why, and says so in `port_monitor_degraded`.
#[derive(Clone, Debug)]
pub struct Unavailable {
    /// The `port_monitor_degraded` reason.
    pub reason: &'static str,
    /// What the kernel or the system said, and what to do.
    pub cause: String,
}

/// `port_monitor_degraded` reasons.
pub const BIND_UNAVAILABLE: &str = "bind_hooks_unavailable";
pub const AUTOBIND_UNAVAILABLE: &str = "autobind_hooks_unavailable";
pub const BOUND_SOCKETS_UNAVAILABLE: &str = "bound_sockets_unavailable";

const TCP_STATE_FACTS: &str = "TCP state transitions; connect() failures: out of ports \
                               (EADDRNOTAVAIL), refused, timed out, unreachable";
const BIND_FACTS: &str = "bind() errno (EADDRINUSE, EACCES, ...)";
const AUTOBIND_FACTS: &str = "UDP autobind out of ports (EAGAIN on a UDP socket without a port)";
const BOUND_SOCKETS_FACTS: &str =
    "TCP ports held by bind(): bind before connect; idle ones (not in sock_diag before 6.7)";

/// What the running kernel and system offer, found before attaching.
pub struct Environment<'a> {
    /// The kernel's BTF, as the loader needs it (fexit and `tp_btf` targets).
    pub btf: &'a aya::Btf,
    /// The same BTF, for reading function signatures.
    pub kernel_btf: &'a btf_rs::Btf,
    pub layout: &'a Resolved,
    pub tracefs: Result<(), MissingRequirement>,
    pub cgroup_root: Result<std::path::PathBuf, MissingRequirement>,
    /// `sock_diag` lists bound-but-idle TCP sockets (Linux >= 6.7).
    pub lists_bound_sockets: bool,
}

/// What attaching gave: the hooks in place, and the collectors left out.
#[derive(Default)]
pub struct Attached {
    pub hooks: Vec<Hook>,
    pub unavailable: Vec<Unavailable>,
    /// The bound-socket programs are attached: the snapshot matches their sockets.
    pub tracks_bound_sockets: bool,
}

impl Attached {
    /// Keeps a collector's hooks, or leaves the collector out (with the reason, logged).
    fn collector(&mut self, reason: &'static str, hooks: Result<Vec<Hook>, KernelError>) -> bool {
        match hooks {
            Ok(hooks) => {
                self.hooks.extend(hooks);
                true
            }
            Err(error) => {
                tracing::warn!(%error, reason, "collector unavailable, running without it");
                self.unavailable.push(Unavailable {
                    reason,
                    cause: error.to_string(),
                });
                false
            }
        }
    }
}

/// Attaches the TCP state program and every collector `collectors` asks for.
///
/// # Errors
/// When the TCP state program cannot be attached.
pub fn attach_all(
    ebpf: &mut Ebpf,
    env: &Environment,
    collectors: Collectors,
) -> Result<Attached, KernelError> {
    let mut attached = Attached::default();
    // Without tracefs only the BTF tracepoint can watch TCP states.
    let tcp_state_hook = match (&env.tracefs, collectors.tcp_state_hook) {
        (Err(_), TcpStateHook::Auto) => TcpStateHook::TpBtf,
        (Err(missing), TcpStateHook::Tracepoint) => return Err(missing.clone().into()),
        (_, choice) => choice,
    };
    attached
        .hooks
        .push(attach_tcp_state(ebpf, env.btf, tcp_state_hook)?);
    if collectors.bind {
        let hooks = by_errno_hook(
            ebpf,
            env,
            collectors.errno_hook,
            &[functions::BIND4, functions::BIND6],
            (BIND_FACTS, "--no-collector.bind"),
            attach_bind_syscall,
        );
        attached.collector(BIND_UNAVAILABLE, hooks);
    }
    if collectors.autobind {
        let hooks = by_errno_hook(
            ebpf,
            env,
            collectors.errno_hook,
            &[functions::AUTOBIND],
            (AUTOBIND_FACTS, "--no-collector.autobind"),
            attach_autobind_syscall,
        );
        attached.collector(AUTOBIND_UNAVAILABLE, hooks);
    }
    let hooks = with_rollback(ebpf, |ebpf| attach_bound_sockets(ebpf, env));
    attached.tracks_bound_sockets = attached.collector(BOUND_SOCKETS_UNAVAILABLE, hooks);
    Ok(attached)
}

/// Attaches one fexit program per fact group (`groups`, each a list of candidates) or, as
/// `choice` says, the syscall-tracepoint way (`syscall`). `flag_off` is the flag that turns the
/// collector off, for the message.
fn by_errno_hook(
    ebpf: &mut Ebpf,
    env: &Environment,
    choice: ErrnoHook,
    groups: &[&[Candidate]],
    (facts, flag_off): (&'static str, &'static str),
    syscall: fn(&mut Ebpf, &Environment) -> Result<Vec<Hook>, KernelError>,
) -> Result<Vec<Hook>, KernelError> {
    let fexit = |ebpf: &mut Ebpf| {
        with_rollback(ebpf, |ebpf| {
            groups
                .iter()
                .map(|candidates| attach_fexit(ebpf, env, candidates, facts))
                .collect()
        })
    };
    match choice {
        ErrnoHook::Tracepoint => with_rollback(ebpf, |ebpf| syscall(ebpf, env)),
        ErrnoHook::Fexit => fexit(ebpf).map_err(|source| KernelError::FexitUnavailable {
            source: Box::new(source),
            off: flag_off,
        }),
        ErrnoHook::Auto => fexit(ebpf).or_else(|error| {
            tracing::warn!(%error, facts, "fexit unavailable, using syscall tracepoints: every syscall on the node pays");
            with_rollback(ebpf, |ebpf| syscall(ebpf, env))
        }),
    }
}

/// Attaches the program of the first candidate whose function this kernel has with the
/// program's arguments and accepts an fexit program on.
fn attach_fexit(
    ebpf: &mut Ebpf,
    env: &Environment,
    candidates: &[Candidate],
    facts: &'static str,
) -> Result<Hook, KernelError> {
    let mut reasons = Vec::new();
    for candidate in candidates {
        if let Err(mismatch) = functions::check(env.kernel_btf, candidate) {
            reasons.push(mismatch.to_string());
            continue;
        }
        let hook = Hook {
            program: candidate.program,
            attach_point: format!("fexit/{}", candidate.function),
            facts,
        };
        let program: &mut FExit = program_mut(ebpf, hook.program)?;
        match program
            .load(candidate.function, env.btf)
            .and_then(|()| program.attach().map(drop))
        {
            Ok(()) => return Ok(hook),
            Err(error) => {
                reasons.push(format!("{}: {}", hook.attach_point, brief(&error)));
                if refuses_trampolines(&error) {
                    // The next candidate would be refused the same way.
                    break;
                }
            }
        }
    }
    Err(KernelError::NoCandidate {
        facts,
        reasons: reasons.join("; "),
    })
}

/// Runs `attach`; if it fails, detaches whatever it attached before failing, so that a
/// collector is either wholly in place or not at all.
fn with_rollback(
    ebpf: &mut Ebpf,
    attach: impl FnOnce(&mut Ebpf) -> Result<Vec<Hook>, KernelError>,
) -> Result<Vec<Hook>, KernelError> {
    let before: Vec<String> = loaded(ebpf);
    let result = attach(ebpf);
    if result.is_err() {
        let now = loaded(ebpf);
        for name in now.iter().filter(|name| !before.contains(name)) {
            if let Some(program) = ebpf.program_mut(name) {
                unload(program);
            }
        }
    }
    result
}

/// The names of the programs loaded so far.
fn loaded(ebpf: &Ebpf) -> Vec<String> {
    ebpf.programs()
        .filter(|(_, program)| program.fd().is_ok())
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Detaches and unloads a program. Failing to is harmless: the program only watches.
fn unload(program: &mut Program) {
    let result = match program {
        Program::FExit(program) => program.unload(),
        Program::TracePoint(program) => program.unload(),
        Program::CgroupSockAddr(program) => program.unload(),
        Program::CgroupSock(program) => program.unload(),
        _ => Ok(()),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "unloading a program of a collector left out");
    }
}

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

/// The cgroup bind hooks (what was asked) and `sys_exit_bind` (the errno).
fn attach_bind_syscall(ebpf: &mut Ebpf, env: &Environment) -> Result<Vec<Hook>, KernelError> {
    env.tracefs.clone()?;
    let root = env.cgroup_root.clone()?;
    let cgroup = open_cgroup(&root)?;
    let mut hooks = Vec::new();
    for (name, attach_type) in [("bind4_request", "bind4"), ("bind6_request", "bind6")] {
        let hook = Hook {
            program: name,
            attach_point: format!("cgroup/{attach_type} on {}", root.display()),
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
    hooks.push(attach_syscall_exit(
        ebpf,
        "bind_exit",
        "sys_exit_bind",
        BIND_FACTS,
    )?);
    Ok(hooks)
}

/// `sys_exit_{connect,sendto,sendmsg,sendmmsg}`, which find the socket through the file table.
fn attach_autobind_syscall(ebpf: &mut Ebpf, env: &Environment) -> Result<Vec<Hook>, KernelError> {
    env.tracefs.clone()?;
    if let Some(missing) = env.layout.missing(Optional::FileTable) {
        return Err(missing.clone().into());
    }
    [
        ("connect_exit", "sys_exit_connect"),
        ("sendto_exit", "sys_exit_sendto"),
        ("sendmsg_exit", "sys_exit_sendmsg"),
        ("sendmmsg_exit", "sys_exit_sendmmsg"),
    ]
    .into_iter()
    .map(|(program, syscall)| attach_syscall_exit(ebpf, program, syscall, AUTOBIND_FACTS))
    .collect()
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

/// `post_bind4`/`post_bind6` on the cgroup v2 root, and `sock_release` where the socket
/// tables do not list bound sockets (before 6.7): from 6.7 the snapshot forgets what its
/// dumps no longer list, and no program runs on every close.
fn attach_bound_sockets(ebpf: &mut Ebpf, env: &Environment) -> Result<Vec<Hook>, KernelError> {
    let root = env.cgroup_root.clone()?;
    let cgroup = open_cgroup(&root)?;
    let release = (!env.lists_bound_sockets).then_some(("released", "sock_release"));
    [("bound4", "post_bind4"), ("bound6", "post_bind6")]
        .into_iter()
        .chain(release)
        .map(|(name, attach_type)| {
            let hook = Hook {
                program: name,
                attach_point: format!("cgroup/{attach_type} on {}", root.display()),
                facts: BOUND_SOCKETS_FACTS,
            };
            let program: &mut CgroupSock = program_mut(ebpf, hook.program)?;
            program
                .load()
                .and_then(|()| {
                    program
                        .attach(cgroup.as_fd(), CgroupAttachMode::default())
                        .map(drop)
                })
                .map_err(program_error(&hook))?;
            Ok(hook)
        })
        .collect()
}

fn open_cgroup(root: &Path) -> Result<File, KernelError> {
    File::open(root).map_err(|source| KernelError::Cgroup {
        path: root.display().to_string(),
        source,
    })
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut Program>,
{
    ebpf.program_mut(name)
        .and_then(|program| program.try_into().ok())
        .ok_or(KernelError::NoProgram(name))
}

/// EPERM on loading a tracing program: the kernel runs no trampolines for anyone.
fn refuses_trampolines(error: &aya::programs::ProgramError) -> bool {
    matches!(error, aya::programs::ProgramError::LoadError { io_error, .. }
        if io_error.raw_os_error() == Some(libc::EPERM))
}

/// A program error in a few words: the errno, and the verifier's last line when it spoke.
fn brief(error: &aya::programs::ProgramError) -> String {
    match error {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            match log.lines().rev().find(|line| !line.trim().is_empty()) {
                Some(last) => format!("{io_error} ({})", last.trim()),
                None if refuses_trampolines(error) => format!(
                    "{io_error}: this kernel refuses BPF trampolines (kernel lockdown, or no \
                     CONFIG_FUNCTION_TRACER)"
                ),
                None => io_error.to_string(),
            }
        }
        other => other.to_string(),
    }
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
