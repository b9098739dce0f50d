//! Reading kernel structs at the offsets the daemon found in the running kernel's BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use port_monitor_common::kernel::{ABSENT, KernelLayout};

/// Overridden by the daemon before loading (see `port_monitor_common::kernel`). Lives in
/// `.rodata`, which is frozen after load: the verifier reads these values as constants.
#[unsafe(no_mangle)]
static KERNEL_LAYOUT: KernelLayout = KernelLayout {
    sock_family: 0,
    sock_local_port: 0,
    sock_remote_port: 0,
    sock_local_addr4: 0,
    sock_remote_addr4: 0,
    sock_local_addr6: 0,
    sock_remote_addr6: 0,
    sock_net: 0,
    sock_protocol: 0,
    sock_err: 0,
    net_inum: 0,
    net_cookie: 0,
    task_nsproxy: 0,
    nsproxy_net: 0,
    sock_bound_port: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    regs_arg0: 0,
    sock_cgroup: 0,
    cgroup_kn: 0,
    kernfs_id: 0,
    sock_state: 0,
    sock_cookie: 0,
    timewait_expires: 0,
    timewait_substate: 0,
};

/// The layout, read so that the compiler cannot fold the placeholder zeros above.
pub fn layout() -> KernelLayout {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(&raw const KERNEL_LAYOUT) }
}

/// A kernel read failed: the layout does not fit this kernel, or the object went away.
/// Never expected; the programs log it (aya-log) and count nothing rather than garbage.
pub struct Unreadable;

/// A plain load of a `T` at `offset` bytes into the kernel object at `base`: no helper call
/// (~1 ns), where the verifier knows `base`'s type (a BTF pointer: a `tp_btf` argument, an
/// iterator's object) and checks the access against that struct, making it fault-safe.
///
/// # Safety
/// `base` must be such a BTF pointer and `offset` a frozen layout constant of a field inside
/// its type, or the verifier rejects the program.
pub unsafe fn load<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: as the caller promises; the verifier turns it into a fault-safe load.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// Reads a `T` at `offset` bytes from `base`, a kernel pointer.
pub fn read<T>(base: *const u8, offset: u32) -> Result<T, Unreadable> {
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-safe path; a bad
    // pointer yields an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(|_| Unreadable)
}

/// The inode number and cookie of the network namespace `net` (a `struct net *`); the
/// cookie is 0 on kernels without one.
pub fn net_identity(net: *const u8, layout: &KernelLayout) -> Result<(u32, u64), Unreadable> {
    let cookie = if layout.net_cookie == ABSENT {
        0
    } else {
        read::<u64>(net, layout.net_cookie)?
    };
    Ok((read::<u32>(net, layout.net_inum)?, cookie))
}

/// The id of the cgroup v2 a socket was created in: who owns it, even where the current task
/// is someone else (softirq). 0 (unknown) on kernels without `sk_cgrp_data.cgroup`.
pub fn socket_cgroup_id(sk: *const u8, layout: &KernelLayout) -> Result<u64, Unreadable> {
    if layout.sock_cgroup == ABSENT || layout.cgroup_kn == ABSENT || layout.kernfs_id == ABSENT {
        return Ok(0);
    }
    let cgroup = read::<*const u8>(sk, layout.sock_cgroup)?;
    let node = read::<*const u8>(cgroup, layout.cgroup_kn)?;
    read::<u64>(node, layout.kernfs_id)
}

/// The inode number and cookie of the calling task's network namespace.
pub fn current_net_identity(layout: &KernelLayout) -> Result<(u32, u64), Unreadable> {
    // SAFETY: the helper returns the current task pointer; it is only read through `read`.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let nsproxy = read::<*const u8>(task, layout.task_nsproxy)?;
    let net = read::<*const u8>(nsproxy, layout.nsproxy_net)?;
    net_identity(net, layout)
}
