//! `tp_btf/inet_sock_set_state`: every TCP state change, v4 and v6.
//!
//! tp_btf costs ~60 ns a hit against ~166 ns for the classic tracepoint, and a connect/accept/
//! close cycle hits it ~10 times, so the common path only counts the transition in a per-CPU
//! array (measured: 1.4% on a loopback connect loop, the same as an empty program).
//!
//! One transition needs more: SYN_SENT -> CLOSE is a connect that failed. The source port is
//! read from `inet_sport`, not `skc_num`: `tcp_set_state(TCP_CLOSE)` calls `inet_put_port`,
//! which zeroes `skc_num`, before `inet_sk_state_store` fires the tracepoint.
//! - Source port still 0: `tcp_v4_connect`/`tcp_v6_connect` set SYN_SENT before
//!   `inet_hash_connect` picks the port, and roll back to CLOSE when `__inet_hash_connect`
//!   finds none free. connect() returns EADDRNOTAVAIL: the namespace is out of ports. This
//!   runs inside the connect() call, so the current task is the caller.
//! - Source port set: the handshake failed later. `tcp_reset` (RST: ECONNREFUSED),
//!   `tcp_write_err` (ETIMEDOUT) and `tcp_v4_err`/`tcp_v6_err` (ICMP) store the error in
//!   `sk_err` before `tcp_done` moves the socket to CLOSE; that is the errno connect() (or
//!   `SO_ERROR`, for a non-blocking connect) reports. It usually runs in softirq, where the
//!   current task is not the caller. `sk_err` 0 means the caller gave up (closed the socket).

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use port_monitor_common::{
    FAMILY_INET, FAMILY_INET6, Operation, PROTOCOL_TCP,
    maps::{ErrorKey, transition_index},
};

use crate::{
    kernel::{self, Unreadable, layout},
    maps::TCP_TRANSITIONS,
    record::{self, Failure},
};

const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const EADDRNOTAVAIL: u16 = 99;

#[btf_tracepoint(function = "inet_sock_set_state")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn tcp_state_change(ctx: BtfTracePointContext) -> i32 {
    // Arguments: (const struct sock *sk, const int oldstate, const int newstate).
    let (sk, old, new): (*const u8, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    // A plain load, not a helper call: `sk` is a BTF pointer and the offset a constant of the
    // frozen layout, so the verifier checks the access against `struct sock` itself. The
    // hot path pays ~1 ns for it.
    // SAFETY: the verifier allows only a load of `sk_protocol` inside `struct sock`.
    let protocol: u16 = unsafe { kernel::load(sk, layout().sock_protocol) };
    if protocol == u16::from(PROTOCOL_TCP) && on_transition(sk, old, new).is_err() {
        warn!(
            &ctx,
            "port-monitor: cannot read a failed connect's socket; not counted"
        );
    }
    0
}

/// The same hook through the classic tracepoint, for kernels where tp_btf cannot attach:
/// ~166 ns a hit instead of ~60 (docs/how-it-works.md). The daemon picks it only then.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn tcp_state_tracepoint(ctx: TracePointContext) -> u32 {
    // Record layout (events/sock/inet_sock_set_state/format, stable): skaddr at 8,
    // oldstate at 16, newstate at 20, protocol at 30.
    // SAFETY: the offsets are within the tracepoint's record.
    let fields = unsafe {
        (
            ctx.read_at::<*const u8>(8),
            ctx.read_at::<i32>(16),
            ctx.read_at::<i32>(20),
            ctx.read_at::<u16>(30),
        )
    };
    if let (Ok(sk), Ok(old), Ok(new), Ok(protocol)) = fields
        && protocol == u16::from(PROTOCOL_TCP)
        && on_transition(sk, old, new).is_err()
    {
        warn!(
            &ctx,
            "port-monitor: cannot read a failed connect's socket; not counted"
        );
    }
    0
}

/// Counts the transition of a TCP socket; a connect that failed also gets counted by errno and
/// recorded. The tracepoint fires for MPTCP, SCTP and DCCP sockets too, which TCP's socket
/// tables do not list: the callers pass TCP only.
fn on_transition(sk: *const u8, old: i32, new: i32) -> Result<(), Unreadable> {
    #[expect(clippy::cast_sign_loss, reason = "bounds checked by the guard")]
    if (0..16).contains(&old)
        && (0..16).contains(&new)
        && let Some(count) = TCP_TRANSITIONS.get_ptr_mut(transition_index(old as u32, new as u32))
    {
        // SAFETY: a per-CPU slot: nothing else writes it while this program runs.
        unsafe { *count += 1 };
    }
    if old == TCP_SYN_SENT && new == TCP_CLOSE {
        on_connect_failed(sk)
    } else {
        Ok(())
    }
}

fn on_connect_failed(sk: *const u8) -> Result<(), Unreadable> {
    let layout = layout();
    let local_port = u16::from_be(kernel::read::<u16>(sk, layout.sock_local_port)?);
    let (errno, auto_port) = if local_port == 0 {
        (EADDRNOTAVAIL, true)
    } else {
        let err = kernel::read::<i32>(sk, layout.sock_err)?;
        if err <= 0 {
            return Ok(());
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "errno < 4096"
        )]
        (err as u16, false)
    };
    let net = kernel::read::<*const u8>(sk, layout.sock_net)?;
    let netns = kernel::net_identity(net, &layout)?;
    let key = ErrorKey::new(netns, Operation::Connect, PROTOCOL_TCP, errno, auto_port);
    record::count_error(&key);

    let family = kernel::read::<u16>(sk, layout.sock_family)?;
    let mut local_addr = [0u8; 16];
    let mut remote_addr = [0u8; 16];
    if family == FAMILY_INET {
        local_addr[..4].copy_from_slice(&kernel::read::<[u8; 4]>(sk, layout.sock_local_addr4)?);
        remote_addr[..4].copy_from_slice(&kernel::read::<[u8; 4]>(sk, layout.sock_remote_addr4)?);
    } else if family == FAMILY_INET6 {
        local_addr = kernel::read::<[u8; 16]>(sk, layout.sock_local_addr6)?;
        remote_addr = kernel::read::<[u8; 16]>(sk, layout.sock_remote_addr6)?;
    }
    // The current task is the caller only inside connect() (out of ports); otherwise the
    // socket's own cgroup says whose it is.
    let socket_cgroup = if auto_port {
        0
    } else {
        kernel::socket_cgroup_id(sk, &layout)?
    };
    record::send(&Failure {
        key,
        has_caller: auto_port,
        socket_cgroup,
        family,
        local_port,
        remote_port: u16::from_be(kernel::read::<u16>(sk, layout.sock_remote_port)?),
        local_addr,
        remote_addr,
    });
    Ok(())
}
