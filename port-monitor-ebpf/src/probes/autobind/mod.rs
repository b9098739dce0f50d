//! UDP autobind failures: a UDP socket without a port gets one from the kernel on its first
//! connect() or send (`inet_autobind`), and when the namespace has none left the call returns
//! EAGAIN. No tracepoint or cgroup hook sees that: `post_bind` does not run for autobind, and
//! the cgroup sendmsg hook runs before it. Two ways to see it; the daemon picks one per kernel:
//! - [`fexit`]: on `inet_autobind` itself, which runs only for sockets still without a port.
//! - [`syscall`]: at the exit of every connect() and send, for kernels that refuse
//!   trampolines. Every syscall on the node then takes the slower traced path: the daemon uses
//!   it only when told to.

pub mod fexit;
pub mod syscall;

use port_monitor_common::{Operation, PROTOCOL_UDP, maps::ErrorKey};

use crate::{
    kernel::{self, Unreadable, layout},
    record::{self, Failure},
};

pub const EAGAIN: u16 = 11;

/// Counts an autobind failure of `sk` (a `struct sock *` still without a port) and sends its
/// record, when `sk` is a UDP socket. Runs inside the failing call: the current task is the
/// caller.
fn report_if_udp(sk: *const u8) -> Result<(), Unreadable> {
    let layout = layout();
    if kernel::read::<u16>(sk, layout.sock_protocol)? != u16::from(PROTOCOL_UDP) {
        return Ok(());
    }
    let net = kernel::read::<*const u8>(sk, layout.sock_net)?;
    let key = ErrorKey::new(
        kernel::net_identity(net, &layout)?,
        Operation::Autobind,
        PROTOCOL_UDP,
        EAGAIN,
        true,
    );
    record::count_error(&key);
    record::send(&Failure {
        key,
        has_caller: true,
        socket_cgroup: 0,
        family: kernel::read::<u16>(sk, layout.sock_family)?,
        local_port: 0,
        remote_port: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    });
    Ok(())
}
