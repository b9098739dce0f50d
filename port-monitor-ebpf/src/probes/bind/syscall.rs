//! `bind()` errors from the cgroup `bind4`/`bind6` hooks, which see what was asked, and the
//! `syscalls/sys_exit_bind` tracepoint, which sees the errno. The cgroup hook runs inside the
//! same bind() call, in the caller's context, so the two are joined by thread id.
//!
//! For kernels that refuse fexit only: enabling a syscall tracepoint puts every syscall of
//! every process on the node on the slower traced path (docs/how-it-works.md has the cost).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_sock_addr, tracepoint},
    programs::{SockAddrContext, TracePointContext},
};
use aya_log_ebpf::warn;
use port_monitor_common::{FAMILY_INET, FAMILY_INET6};

use crate::{
    kernel::{self, Unreadable, layout},
    maps::{BIND_REQUESTS, BindRequest},
};

/// The cgroup hook's verdict: 1 lets the bind() go ahead. These programs only watch; they
/// must never refuse a call.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(bind4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn bind4_request(ctx: SockAddrContext) -> i32 {
    remember(&ctx, FAMILY_INET);
    ALLOW
}

#[cgroup_sock_addr(bind6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn bind6_request(ctx: SockAddrContext) -> i32 {
    remember(&ctx, FAMILY_INET6);
    ALLOW
}

fn remember(ctx: &SockAddrContext, family: u16) {
    // SAFETY: the context pointer is valid for the program's run.
    let addr = unsafe { &*ctx.sock_addr };
    let mut bytes = [0u8; 16];
    if family == FAMILY_INET {
        bytes[..4].copy_from_slice(&addr.user_ip4.to_ne_bytes());
    } else {
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(addr.user_ip6) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "ports and protocols fit their types"
    )]
    let request = BindRequest {
        addr: bytes,
        family,
        // user_port holds the port in network byte order in its low 16 bits.
        port: u16::from_be(addr.user_port as u16),
        protocol: addr.protocol as u8,
        padding: [0; 3],
    };
    // Failing to remember only loses this call's errno: nothing to do about it here.
    let _ = BIND_REQUESTS.insert(bpf_get_current_pid_tgid(), request, 0);
}

/// Offset of `long ret` in the `sys_exit_bind` record (see its `format` file in tracefs):
/// 8 bytes of common fields, `int __syscall_nr` padded to 8.
const SYS_EXIT_RET_OFFSET: usize = 16;

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn bind_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: BIND_REQUESTS values are plain data; the entry is copied out before removal.
    let Some(request) = (unsafe { BIND_REQUESTS.get(pid_tgid) }).copied() else {
        // Not an IPv4/IPv6 bind (or the hook missed it): nothing to report.
        return 0;
    };
    let _ = BIND_REQUESTS.remove(pid_tgid);
    // SAFETY: the offset is within the tracepoint's record.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(SYS_EXIT_RET_OFFSET) }) else {
        return 0;
    };
    if ret < 0 && on_bind_failed(&request, ret).is_err() {
        warn!(
            &ctx,
            "port-monitor: cannot read the caller's namespace; bind failure not counted"
        );
    }
    0
}

fn on_bind_failed(request: &BindRequest, ret: i64) -> Result<(), Unreadable> {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "errno < 4096"
    )]
    let errno = (-ret) as u16;
    super::report(request, errno, kernel::current_net_identity(&layout())?);
    Ok(())
}
