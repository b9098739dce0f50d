//! Attaching the programs: for each fact, the cheapest hook the running kernel offers.
//!
//! | fact | preferred hook | fallback |
//! |---|---|---|
//! | TCP state changes, failed connects | `tp_btf/inet_sock_set_state` | the classic tracepoint |
//! | `bind()` errno | fexit on `inet_bind`/`inet6_bind` | cgroup bind hooks + `sys_exit_bind` (only when asked: it slows every syscall) |
//! | UDP autobind failures | fexit on `inet_autobind` | `sys_exit_{connect,send*}` (likewise) |
//! | ports held by `bind()`: idle ones before Linux 6.7, and bound then connected | cgroup `post_bind` (+ `sock_release` before 6.7) | none |
//! | the snapshot's TCP sockets (not a hook: read once per namespace per snapshot) | `iter/tcp` | `sock_diag` |
//!
//! A collector that cannot be attached is left out, logged, and reported as [`Unavailable`]
//! (`port_monitor_degraded`); only the TCP state program is required.

mod bound_sockets;
mod errno;
mod programs;
mod socket_list;
mod tcp_state;

use aya::Ebpf;

use self::programs::with_rollback;
use super::{KernelError, functions, layout::Resolved, requirements::MissingRequirement};

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
const SOCKET_LIST_FACTS: &str =
    "the snapshot's TCP sockets, listed without a netlink message each (else sock_diag)";
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
    /// The socket-listing iterator is loaded: the snapshot lists TCP sockets with it.
    pub lists_sockets: bool,
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
        .push(tcp_state::attach(ebpf, env.btf, tcp_state_hook)?);
    if collectors.bind {
        let hooks = errno::by_errno_hook(
            ebpf,
            env,
            collectors.errno_hook,
            &[functions::BIND4, functions::BIND6],
            (BIND_FACTS, "--no-collector.bind"),
            errno::attach_bind_syscall,
        );
        attached.collector(BIND_UNAVAILABLE, hooks);
    }
    if collectors.autobind {
        let hooks = errno::by_errno_hook(
            ebpf,
            env,
            collectors.errno_hook,
            &[functions::AUTOBIND],
            (AUTOBIND_FACTS, "--no-collector.autobind"),
            errno::attach_autobind_syscall,
        );
        attached.collector(AUTOBIND_UNAVAILABLE, hooks);
    }
    let hooks = with_rollback(ebpf, |ebpf| bound_sockets::attach(ebpf, env));
    attached.tracks_bound_sockets = attached.collector(BOUND_SOCKETS_UNAVAILABLE, hooks);
    match socket_list::load(ebpf, env) {
        Ok(hook) => {
            attached.hooks.push(hook);
            attached.lists_sockets = true;
        }
        // Nothing is lost: the same sockets come from sock_diag.
        Err(error) => tracing::info!(
            %error,
            "the TCP socket iterator is unavailable; snapshots list TCP sockets with sock_diag"
        ),
    }
    Ok(attached)
}
