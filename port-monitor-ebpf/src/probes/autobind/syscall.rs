//! UDP autobind failures at the exit of `connect()`, `sendto()`, `sendmsg()` and `sendmmsg()`,
//! for kernels that refuse fexit. Every such call pays the tracepoint's dispatch, and every
//! other syscall on the node the traced path; the program itself only compares the return
//! value with -EAGAIN. Only then does it look at the socket (the file descriptor is the first
//! argument, still in the task's saved registers) to tell autobind failure (a UDP socket still
//! without a port) from a full send buffer on a non-blocking socket.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;

use super::EAGAIN;
use crate::kernel::{self, Unreadable, layout};

/// Offset of `long ret` in a `sys_exit_*` record: 8 bytes of common fields, then
/// `int __syscall_nr` padded to 8 (see the `format` file in tracefs).
const SYS_EXIT_RET_OFFSET: usize = 16;

macro_rules! sys_exit {
    ($name:ident, $syscall:literal) => {
        #[tracepoint(category = "syscalls", name = $syscall)]
        pub fn $name(ctx: TracePointContext) -> u32 {
            on_exit(&ctx);
            0
        }
    };
}

sys_exit!(connect_exit, "sys_exit_connect");
sys_exit!(sendto_exit, "sys_exit_sendto");
sys_exit!(sendmsg_exit, "sys_exit_sendmsg");
sys_exit!(sendmmsg_exit, "sys_exit_sendmmsg");

fn on_exit(ctx: &TracePointContext) {
    // SAFETY: the offset is within the tracepoint's record.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(SYS_EXIT_RET_OFFSET) }) else {
        return;
    };
    if ret == -i64::from(EAGAIN) && on_eagain().is_err() {
        warn!(
            ctx,
            "port-monitor: cannot read the socket of a failed send; not counted"
        );
    }
}

fn on_eagain() -> Result<(), Unreadable> {
    let layout = layout();
    let sk = current_socket(&layout)?;
    if sk.is_null() || kernel::read::<u16>(sk, layout.sock_bound_port)? != 0 {
        // A full send buffer: not a port problem.
        return Ok(());
    }
    super::report_if_udp(sk)
}

/// The `struct sock` behind the calling task's first syscall argument, a file descriptor.
fn current_socket(
    layout: &port_monitor_common::kernel::KernelLayout,
) -> Result<*const u8, Unreadable> {
    // SAFETY: helpers without preconditions; the returned pointers are only read through
    // bpf_probe_read_kernel.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let fd = kernel::read::<u64>(regs, layout.regs_arg0)?;
    // SAFETY: as above.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files = kernel::read::<*const u8>(task, layout.task_files)?;
    let fdt = kernel::read::<*const u8>(files, layout.files_fdt)?;
    let max_fds = kernel::read::<u32>(fdt, 0)?;
    if fd >= u64::from(max_fds) {
        return Ok(core::ptr::null());
    }
    let table = kernel::read::<*const *const u8>(fdt, layout.fdtable_fd)?;
    #[expect(clippy::cast_possible_truncation, reason = "fd < max_fds, a u32")]
    let file = kernel::read::<*const u8>(table.cast(), (fd as u32) * 8)?;
    let socket = kernel::read::<*const u8>(file, layout.file_private_data)?;
    kernel::read::<*const u8>(socket, layout.socket_sk)
}
