//! `bind()` failures, by errno (EADDRINUSE: the port was taken; EADDRINUSE on port 0: the
//! namespace is out of ports). The cgroup bind hooks run before the kernel decides and
//! `post_bind` only on success, so the errno is seen at the end of the call, in one of two
//! ways; the daemon picks one per kernel:
//! - [`fexit`]: on the kernel's bind function itself. Runs only when bind() runs.
//! - [`syscall`]: the cgroup bind hooks plus the `sys_exit_bind` tracepoint, for kernels that
//!   refuse trampolines. Once a syscall tracepoint has a program, every syscall of every
//!   process on the node takes the slower traced path: the daemon uses it only when told to.

pub mod fexit;
pub mod syscall;

use port_monitor_common::{Operation, maps::ErrorKey};

use crate::{
    maps::BindRequest,
    record::{self, Failure},
};

/// Counts a failed bind() of `request` in namespace `netns` and sends its record. Runs inside
/// the bind() call: the current task is the caller.
fn report(request: &BindRequest, errno: u16, netns: (u32, u64)) {
    let key = ErrorKey::new(
        netns,
        Operation::Bind,
        request.protocol,
        errno,
        request.port == 0,
    );
    record::count_error(&key);
    record::send(&Failure {
        key,
        has_caller: true,
        socket_cgroup: 0,
        family: request.family,
        local_port: request.port,
        remote_port: 0,
        local_addr: request.addr,
        remote_addr: [0; 16],
    });
}
