//! Offsets of the kernel struct fields the programs read.
//!
//! The Rust eBPF toolchain emits no CO-RE relocations, so offsets compiled into the object would
//! be right for one kernel build only. Instead the daemon reads them from the running kernel's
//! BTF (`/sys/kernel/btf/vmlinux`) at start-up and writes them into the programs' read-only data
//! before loading. The verifier sees them as constants, so `tp_btf` programs read fields with
//! plain loads checked against BTF, not with a helper call per field.

/// Name of the global the daemon overrides with the running kernel's [`KernelLayout`].
pub const LAYOUT_GLOBAL: &str = "KERNEL_LAYOUT";

/// The offset of a field this kernel does not have. Only fields whose fact can live without
/// them may be absent (see [`KernelLayout`]); the programs check before reading one.
pub const ABSENT: u32 = u32::MAX;

/// Byte offsets of kernel struct fields. All `u32`, so the struct has no padding.
///
/// The fields the TCP state program needs are required: without them the daemon does not
/// start. The others may be [`ABSENT`]: the socket-cgroup chain (`sock_cgroup`, `cgroup_kn`,
/// `kernfs_id`, for port-scan attribution: `sk_cgrp_data.cgroup` is new in 5.15) and the
/// file-table chain the syscall-tracepoint autobind program walks (`task_files` to
/// `regs_arg0`); `net_cookie`; a collector whose fields are absent is left out and reported.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `struct sock` → `__sk_common.skc_family` (`u16`).
    pub sock_family: u32,
    /// `struct inet_sock` → `inet_sport`: local port, network byte order (`u16`). Not
    /// `skc_num`: `inet_put_port` zeroes that before the CLOSE transition is traced, while
    /// `inet_sport` keeps the port a failed connect had been given.
    pub sock_local_port: u32,
    /// `struct sock` → `__sk_common.skc_dport`: remote port, network byte order (`u16`).
    pub sock_remote_port: u32,
    /// `struct sock` → `__sk_common.skc_rcv_saddr`: local IPv4 address (`u32`).
    pub sock_local_addr4: u32,
    /// `struct sock` → `__sk_common.skc_daddr`: remote IPv4 address (`u32`).
    pub sock_remote_addr4: u32,
    /// `struct sock` → `__sk_common.skc_v6_rcv_saddr`: local IPv6 address (16 bytes).
    pub sock_local_addr6: u32,
    /// `struct sock` → `__sk_common.skc_v6_daddr`: remote IPv6 address (16 bytes).
    pub sock_remote_addr6: u32,
    /// `struct sock` → `__sk_common.skc_net.net` (`struct net *`).
    pub sock_net: u32,
    /// `struct sock` → `sk_protocol` (`u16`).
    pub sock_protocol: u32,
    /// `struct sock` → `sk_err` (`int`): the error a failed connect reports to its caller.
    pub sock_err: u32,
    /// `struct net` → `ns.inum`: the namespace's inode number (`unsigned int`).
    pub net_inum: u32,
    /// `struct net` → `net_cookie` (`u64`, set when the namespace is made, Linux >= 5.12).
    /// May be [`ABSENT`]: counts then follow the inode number alone.
    pub net_cookie: u32,
    /// `struct task_struct` → `nsproxy` (`struct nsproxy *`).
    pub task_nsproxy: u32,
    /// `struct nsproxy` → `net_ns` (`struct net *`).
    pub nsproxy_net: u32,
    /// `struct sock` → `__sk_common.skc_num`: the bound local port, host byte order (`u16`);
    /// 0 while the socket has none.
    pub sock_bound_port: u32,
    /// `struct task_struct` → `files` (`struct files_struct *`).
    pub task_files: u32,
    /// `struct files_struct` → `fdt` (`struct fdtable *`).
    pub files_fdt: u32,
    /// `struct fdtable` → `fd` (`struct file **`).
    pub fdtable_fd: u32,
    /// `struct file` → `private_data`: for a socket file, its `struct socket *`.
    pub file_private_data: u32,
    /// `struct socket` → `sk` (`struct sock *`).
    pub socket_sk: u32,
    /// `struct pt_regs` → the first syscall argument as the syscall saw it: `di` on x86-64,
    /// `orig_x0` on arm64 (at syscall exit `regs[0]` already holds the return value).
    pub regs_arg0: u32,
    /// `struct sock` → `sk_cgrp_data.cgroup`: the cgroup v2 the socket was created in
    /// (Linux >= 5.15; before, the pointer hides in a tagged `val`). May be [`ABSENT`].
    pub sock_cgroup: u32,
    /// `struct cgroup` → `kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node` → `id`: the cgroup id (`u64`), as `bpf_get_current_cgroup_id`.
    pub kernfs_id: u32,
    /// `sock_common.skc_state`: for the socket-listing iterator.
    pub sock_state: u32,
    /// `sock_common.skc_cookie`: for the socket-listing iterator (0 until someone asks for
    /// it, as the bind programs and `sock_diag` do).
    pub sock_cookie: u32,
    /// `inet_timewait_sock.tw_timer.expires`: when a `TIME_WAIT` socket goes, in jiffies.
    pub timewait_expires: u32,
    /// `inet_timewait_sock.tw_substate`: the state a `TIME_WAIT` socket is reported in
    /// (`FIN_WAIT2` for one the kernel moved out of `FIN_WAIT2` early, `tcp_fin_timeout`).
    pub timewait_substate: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields, so no padding.
unsafe impl aya::Pod for KernelLayout {}
