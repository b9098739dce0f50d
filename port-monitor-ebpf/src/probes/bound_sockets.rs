//! TCP sockets whose port came from `bind()`. `__inet_hash_connect` skips such a port for
//! every destination, whether the socket then stays idle or connects itself (a proxy's
//! `source` address, a client that binds port 0 before connecting): the daemon needs to know
//! which sockets these are, and sock_diag cannot say. `post_bind4`/`post_bind6` remember a
//! socket once bind() gave it a port (bind to port 0 included: the hook sees the port chosen),
//! with who bound it; the snapshot matches them by socket cookie.
//!
//! Before Linux 6.7 `sock_diag` does not list bound-but-idle sockets at all (6.7 added
//! `TCP_BOUND_INACTIVE` and dumps the bind hash too): there `sock_release` forgets a socket
//! when it goes, and the daemon adds the idle ones its dump did not list. From 6.7 the daemon
//! forgets what its dumps no longer list, and `sock_release`, which runs for every socket
//! closed on the node, is not attached. Where it is, it only looks the cookie up (lock-free)
//! and deletes when it finds one.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_netns_cookie, bpf_get_socket_cookie,
    },
    macros::cgroup_sock,
    programs::SockContext,
};
use port_monitor_common::{
    FAMILY_INET, FAMILY_INET6, PROTOCOL_TCP,
    maps::{BoundSocket, Counter},
};

use crate::{maps::BOUND_SOCKETS, record};

/// The cgroup hook's verdict: 1 lets the call go ahead. These programs only watch.
const ALLOW: i32 = 1;

#[cgroup_sock(post_bind4)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn bound4(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let sock = unsafe { &*ctx.sock };
    let mut addr = [0u8; 16];
    // SAFETY: a field of the context, read at its fixed offset (the verifier allows
    // `src_ip4` in post_bind4).
    let ip = unsafe { core::ptr::read_volatile(&raw const sock.src_ip4) };
    addr[..4].copy_from_slice(&ip.to_ne_bytes());
    remember(&ctx, FAMILY_INET, addr);
    ALLOW
}

#[cgroup_sock(post_bind6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn bound6(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let sock = unsafe { &*ctx.sock };
    // Word by word at fixed offsets: the verifier refuses a context pointer moved by a loop.
    // SAFETY: fields of the context (the verifier allows `src_ip6` in post_bind6).
    let words = unsafe {
        [
            core::ptr::read_volatile(&raw const sock.src_ip6[0]),
            core::ptr::read_volatile(&raw const sock.src_ip6[1]),
            core::ptr::read_volatile(&raw const sock.src_ip6[2]),
            core::ptr::read_volatile(&raw const sock.src_ip6[3]),
        ]
    };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&words[0].to_ne_bytes());
    addr[4..8].copy_from_slice(&words[1].to_ne_bytes());
    addr[8..12].copy_from_slice(&words[2].to_ne_bytes());
    addr[12..].copy_from_slice(&words[3].to_ne_bytes());
    remember(&ctx, FAMILY_INET6, addr);
    ALLOW
}

#[cgroup_sock(sock_release)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn released(ctx: SockContext) -> i32 {
    // SAFETY: the context is a socket; the helper only reads (or assigns) its cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    // SAFETY: only checks for presence; the value is not read.
    if unsafe { BOUND_SOCKETS.get(cookie) }.is_some() {
        let _ = BOUND_SOCKETS.remove(cookie);
    }
    ALLOW
}

/// Remembers a TCP socket `bind()` gave a port, bound to `addr`.
fn remember(ctx: &SockContext, family: u16, addr: [u8; 16]) {
    // SAFETY: the context pointer is valid for the program's run.
    let sock = unsafe { &*ctx.sock };
    // `src_port` is 0 after a bind with IP_BIND_ADDRESS_NO_PORT: the port comes at connect(),
    // from the connect side, shared across destinations.
    if sock.protocol != u32::from(PROTOCOL_TCP) || sock.src_port == 0 {
        return;
    }
    // SAFETY: the context is a socket; the helpers only read it.
    let (cookie, netns_cookie) = unsafe {
        (
            bpf_get_socket_cookie(ctx.sock.cast()),
            bpf_get_netns_cookie(ctx.sock.cast()),
        )
    };
    // post_bind runs inside bind(): the current task is the caller.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a port fits 16 bits; the tgid is the upper half"
    )]
    let bound = BoundSocket {
        netns_cookie,
        // SAFETY: a helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        addr,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        family,
        port: sock.src_port as u16,
    };
    if BOUND_SOCKETS.insert(cookie, bound, 0).is_err() {
        record::bump(Counter::BoundSocketsDropped);
    }
}
