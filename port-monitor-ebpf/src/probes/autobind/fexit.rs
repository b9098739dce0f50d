//! `fexit/inet_autobind`: `static int inet_autobind(struct sock *sk)`, called by
//! `inet_dgram_connect` and `inet_send_prepare` (IPv4 and IPv6) only while the socket has no
//! port. It returns -EAGAIN when `get_port` found none free: exactly the failure counted.

use aya_ebpf::{macros::fexit, programs::FExitContext};
use aya_log_ebpf::warn;

use super::EAGAIN;

#[fexit(function = "inet_autobind")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the macro requires"
)]
pub fn autobind_fexit(ctx: FExitContext) -> i32 {
    let ret: i32 = ctx.arg(1);
    if ret == -i32::from(EAGAIN) && super::report_if_udp(ctx.arg(0)).is_err() {
        warn!(
            &ctx,
            "port-monitor: cannot read a failed autobind's socket; not counted"
        );
    }
    0
}
