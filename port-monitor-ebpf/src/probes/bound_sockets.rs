//! TCP sockets that hold a port through `bind()` alone: bound, neither listening nor
//! connected. Their port is taken for every `connect()` of the namespace, yet before Linux 6.7
//! `sock_diag` does not list them (they live only in the bind hash; 6.7 added
//! `TCP_BOUND_INACTIVE` and dumps that hash too). On such kernels the daemon attaches these:
//! `post_bind4`/`post_bind6` remember a socket once bind() gave it a port (bind to port 0
//! included: the hook sees the port chosen), `sock_release` forgets it. The daemon adds the
//! ones its dump did not list, matched by socket cookie.
//!
//! bind() is rare next to connect(); `sock_release` runs for every socket closed on the node,
//! so it only looks the cookie up (lock-free) and deletes when it finds one.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
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
    remember(&ctx, FAMILY_INET);
    ALLOW
}

#[cgroup_sock(post_bind6)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn bound6(ctx: SockContext) -> i32 {
    remember(&ctx, FAMILY_INET6);
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

fn remember(ctx: &SockContext, family: u16) {
    // SAFETY: the context pointer is valid for the program's run.
    let sock = unsafe { &*ctx.sock };
    // `src_port` is 0 after a bind with IP_BIND_ADDRESS_NO_PORT: the port comes at connect(),
    // and a connected socket is in the dump.
    if sock.protocol != u32::from(PROTOCOL_TCP) || sock.src_port == 0 {
        return;
    }
    let mut addr = [0u8; 16];
    if family == FAMILY_INET {
        addr[..4].copy_from_slice(&sock.src_ip4.to_ne_bytes());
    } else {
        for (chunk, word) in addr.chunks_exact_mut(4).zip(sock.src_ip6) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
    }
    // SAFETY: the context is a socket; the helpers only read it.
    let (cookie, netns_cookie) = unsafe {
        (
            bpf_get_socket_cookie(ctx.sock.cast()),
            bpf_get_netns_cookie(ctx.sock.cast()),
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "a port fits 16 bits")]
    let bound = BoundSocket {
        netns_cookie,
        addr,
        family,
        port: sock.src_port as u16,
        padding: [0; 4],
    };
    if BOUND_SOCKETS.insert(cookie, bound, 0).is_err() {
        record::bump(Counter::BoundSocketsDropped);
    }
}
