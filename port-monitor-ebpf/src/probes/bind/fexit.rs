//! `bind()` errors from fexit programs on the kernel function that binds.
//!
//! Which function exists, and with which arguments, depends on the kernel: `inet_bind` and
//! `inet6_bind` (`struct socket *`, address, length) are the socket layer's entry points on
//! every kernel since 2.6; `__inet_bind` and `__inet6_bind` (`struct sock *`, address,
//! length, flags) are what they call. The daemon reads the running kernel's BTF, loads the
//! program whose argument shape matches the first candidate present, and reports which one
//! served. An fexit program reads the arguments and the return value, which follows the
//! last argument.

use aya_ebpf::{macros::fexit, programs::FExitContext};
use aya_log_ebpf::warn;
use port_monitor_common::{FAMILY_INET, FAMILY_INET6};

use crate::{
    kernel::{self, Unreadable, layout},
    maps::BindRequest,
};

/// `bind(struct socket *sock, struct sockaddr *uaddr, int addr_len)`: `inet_bind`,
/// `inet6_bind`. The return value is the fourth slot.
macro_rules! bind_exit_socket {
    ($name:ident, $function:literal) => {
        #[fexit(function = $function)]
        pub fn $name(ctx: FExitContext) -> i32 {
            let socket: *const u8 = ctx.arg(0);
            let ret: i32 = ctx.arg(3);
            if ret < 0 && on_failed_socket(socket, ctx.arg(1), ret).is_err() {
                warn!(
                    &ctx,
                    "port-monitor: cannot read a failed bind's socket; not counted"
                );
            }
            0
        }
    };
}

/// `__bind(struct sock *sk, struct sockaddr *uaddr, int addr_len, u32 flags)`:
/// `__inet_bind`, `__inet6_bind`. The return value is the fifth slot.
macro_rules! bind_exit_sock {
    ($name:ident, $function:literal) => {
        #[fexit(function = $function)]
        pub fn $name(ctx: FExitContext) -> i32 {
            let ret: i32 = ctx.arg(4);
            if ret < 0 && on_failed(ctx.arg(0), ctx.arg(1), ret).is_err() {
                warn!(
                    &ctx,
                    "port-monitor: cannot read a failed bind's socket; not counted"
                );
            }
            0
        }
    };
}

bind_exit_socket!(bind4_fexit, "inet_bind");
bind_exit_socket!(bind6_fexit, "inet6_bind");
bind_exit_sock!(bind4_fexit_sk, "__inet_bind");
bind_exit_sock!(bind6_fexit_sk, "__inet6_bind");

fn on_failed_socket(socket: *const u8, addr: *const u8, ret: i32) -> Result<(), Unreadable> {
    let sk = kernel::read::<*const u8>(socket, layout().socket_sk)?;
    on_failed(sk, addr, ret)
}

/// `addr` is the kernel's copy of the caller's `struct sockaddr`: `sin_port` and `sin6_port`
/// both sit at offset 2, the IPv4 address at 4, the IPv6 address at 8.
fn on_failed(sk: *const u8, addr: *const u8, ret: i32) -> Result<(), Unreadable> {
    let layout = layout();
    let family = kernel::read::<u16>(sk, layout.sock_family)?;
    let mut bytes = [0u8; 16];
    if family == FAMILY_INET {
        bytes[..4].copy_from_slice(&kernel::read::<[u8; 4]>(addr, 4)?);
    } else if family == FAMILY_INET6 {
        bytes = kernel::read::<[u8; 16]>(addr, 8)?;
    }
    #[expect(clippy::cast_possible_truncation, reason = "IPPROTO_* fit a byte")]
    let request = BindRequest {
        addr: bytes,
        family,
        port: u16::from_be(kernel::read::<u16>(addr, 2)?),
        protocol: kernel::read::<u16>(sk, layout.sock_protocol)? as u8,
        padding: [0; 3],
    };
    let net = kernel::read::<*const u8>(sk, layout.sock_net)?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "errno < 4096"
    )]
    super::report(&request, (-ret) as u16, kernel::net_identity(net, &layout)?);
    Ok(())
}
