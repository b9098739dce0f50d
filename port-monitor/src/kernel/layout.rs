//! Field offsets of the running kernel, read from its BTF (see
//! `port_monitor_common::kernel` for why they are not compiled in).

use btf_rs::{Btf, Type};
use port_monitor_common::kernel::{ABSENT, KernelLayout};

/// The running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why a field's offset could not be found.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read the kernel's BTF at {VMLINUX_BTF}: {source}. port-monitor needs a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (every major distribution since 2020 has it)"
    )]
    Btf {
        source: std::sync::Arc<btf_rs::Error>,
    },
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's BTF has no field {field} in struct {within}")]
    NoField { within: String, field: String },
}

/// Reads the running kernel's BTF.
///
/// # Errors
/// When the kernel has none.
pub fn running_kernel_btf() -> Result<Btf, LayoutError> {
    Btf::from_file(VMLINUX_BTF).map_err(|source| LayoutError::Btf {
        source: source.into(),
    })
}

/// Groups of optional fields: each serves one fact, which the daemon leaves out (and says
/// so) when the kernel lacks a field of its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optional {
    /// `sk_cgrp_data.cgroup` → `kn` → `id`: whose socket a refused connection was, for
    /// port-scan attribution (Linux >= 5.15).
    SocketCgroup,
    /// `task_struct.files` → ... → `socket.sk` and the saved first syscall argument: the
    /// socket of a failed send, for the syscall-tracepoint autobind programs.
    FileTable,
    /// `net.net_cookie`: telling a namespace from an older one that had the same inode
    /// number (Linux >= 5.12).
    NetCookie,
    /// `skc_state`, `skc_cookie` and the `TIME_WAIT` timer: listing sockets with the
    /// `iter/tcp` iterator instead of `sock_diag`.
    SocketList,
}

/// The offsets of a kernel, with the optional fields it lacks.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub layout: KernelLayout,
    pub missing: Vec<(Optional, LayoutError)>,
}

impl Resolved {
    /// Why the fields of `group` cannot be read, if they cannot.
    #[must_use]
    pub fn missing(&self, group: Optional) -> Option<&LayoutError> {
        self.missing
            .iter()
            .find_map(|(missing, error)| (*missing == group).then_some(error))
    }
}

/// The `struct pt_regs` field holding a syscall's first argument at syscall exit: on arm64
/// `regs[0]` then holds the return value, and the kernel keeps the argument in `orig_x0`.
#[cfg(target_arch = "x86_64")]
const FIRST_SYSCALL_ARGUMENT: &str = "di";
#[cfg(target_arch = "aarch64")]
const FIRST_SYSCALL_ARGUMENT: &str = "orig_x0";

/// Resolves every offset the programs read in `btf`. The fields the TCP state program needs
/// are required; the others are [`ABSENT`] when missing, listed in [`Resolved::missing`].
///
/// # Errors
/// When a required field is missing.
pub fn resolve(btf: &Btf) -> Result<Resolved, LayoutError> {
    let sock = |path: &[&str]| offset(btf, "sock", path);
    let mut missing = Vec::new();
    let mut optional = |group: Optional, found: Result<u32, LayoutError>| {
        found.unwrap_or_else(|error| {
            missing.push((group, error));
            ABSENT
        })
    };
    let layout = KernelLayout {
        sock_family: sock(&["__sk_common", "skc_family"])?,
        // `struct inet_sock` starts with its `struct sock`: offsets from one are from both.
        sock_local_port: offset(btf, "inet_sock", &["inet_sport"])?,
        sock_remote_port: sock(&["__sk_common", "skc_dport"])?,
        sock_local_addr4: sock(&["__sk_common", "skc_rcv_saddr"])?,
        sock_remote_addr4: sock(&["__sk_common", "skc_daddr"])?,
        sock_local_addr6: sock(&["__sk_common", "skc_v6_rcv_saddr"])?,
        sock_remote_addr6: sock(&["__sk_common", "skc_v6_daddr"])?,
        sock_net: sock(&["__sk_common", "skc_net", "net"])?,
        sock_protocol: sock(&["sk_protocol"])?,
        sock_err: sock(&["sk_err"])?,
        net_inum: offset(btf, "net", &["ns", "inum"])?,
        net_cookie: optional(Optional::NetCookie, offset(btf, "net", &["net_cookie"])),
        task_nsproxy: offset(btf, "task_struct", &["nsproxy"])?,
        nsproxy_net: offset(btf, "nsproxy", &["net_ns"])?,
        sock_bound_port: sock(&["__sk_common", "skc_num"])?,
        socket_sk: offset(btf, "socket", &["sk"])?,
        task_files: optional(Optional::FileTable, offset(btf, "task_struct", &["files"])),
        files_fdt: optional(Optional::FileTable, offset(btf, "files_struct", &["fdt"])),
        fdtable_fd: optional(Optional::FileTable, offset(btf, "fdtable", &["fd"])),
        file_private_data: optional(Optional::FileTable, offset(btf, "file", &["private_data"])),
        regs_arg0: optional(
            Optional::FileTable,
            offset(btf, "pt_regs", &[FIRST_SYSCALL_ARGUMENT]),
        ),
        sock_cgroup: optional(Optional::SocketCgroup, sock(&["sk_cgrp_data", "cgroup"])),
        cgroup_kn: optional(Optional::SocketCgroup, offset(btf, "cgroup", &["kn"])),
        kernfs_id: optional(Optional::SocketCgroup, offset(btf, "kernfs_node", &["id"])),
        sock_state: optional(Optional::SocketList, sock(&["__sk_common", "skc_state"])),
        sock_cookie: optional(Optional::SocketList, sock(&["__sk_common", "skc_cookie"])),
        timewait_expires: optional(
            Optional::SocketList,
            offset(btf, "inet_timewait_sock", &["tw_timer", "expires"]),
        ),
        timewait_substate: optional(
            Optional::SocketList,
            offset(btf, "inet_timewait_sock", &["tw_substate"]),
        ),
    };
    Ok(Resolved { layout, missing })
}

/// Whether `sock_diag` lists TCP sockets that are bound but neither listening nor connected:
/// Linux 6.7 added the `TCP_BOUND_INACTIVE` state and dumps the bind hash with it. Found in
/// BTF (an anonymous enum's member), not from the version number, so backports count.
#[must_use]
pub fn lists_bound_sockets(btf: &Btf) -> bool {
    // Type ids are dense from 1; the first id that does not resolve is the end.
    (1..)
        .map_while(|id| btf.resolve_type_by_id(id).ok())
        .any(|ty| {
            matches!(ty, Type::Enum(ref enumeration) if enumeration.members.iter().any(|member| {
                btf.resolve_name(member).is_ok_and(|name| name == "TCP_BOUND_INACTIVE")
            }))
        })
}

/// Byte offset of the field at `path` (member names, outermost first) in struct `name`.
/// Anonymous structs and unions on the way are searched too, as C name lookup does.
fn offset(btf: &Btf, name: &str, path: &[&str]) -> Result<u32, LayoutError> {
    let root = btf
        .resolve_types_by_name(name)
        .map_err(|_| LayoutError::NoStruct(name.to_owned()))?
        .into_iter()
        .find(|ty| matches!(ty, Type::Struct(_)))
        .ok_or_else(|| LayoutError::NoStruct(name.to_owned()))?;
    let mut ty = root;
    let mut bits = 0;
    let mut within = name.to_owned();
    for field in path {
        let (member_bits, member_ty) =
            find_member(btf, &ty, field).ok_or_else(|| LayoutError::NoField {
                within: within.clone(),
                field: (*field).to_owned(),
            })?;
        bits += member_bits;
        ty = member_ty;
        within = format!("{within}.{field}");
    }
    Ok(bits / 8)
}

/// Finds `field` in struct or union `ty` (through typedefs and qualifiers), returning its bit
/// offset and its type.
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Option<(u32, Type)> {
    let (Type::Struct(container) | Type::Union(container)) = strip(btf, ty.clone())? else {
        return None;
    };
    for member in &container.members {
        let member_ty = strip(btf, btf.resolve_chained_type(member).ok()?)?;
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member_name == field {
            return Some((member.bit_offset(), member_ty));
        }
        if member_name.is_empty()
            && let Some((inner_bits, inner_ty)) = find_member(btf, &member_ty, field)
        {
            return Some((member.bit_offset() + inner_bits, inner_ty));
        }
    }
    None
}

/// Follows typedefs and qualifiers to the type they name.
fn strip(btf: &Btf, mut ty: Type) -> Option<Type> {
    loop {
        ty = match ty {
            Type::Typedef(ref inner) => btf.resolve_chained_type(inner).ok()?,
            Type::Volatile(ref inner) | Type::Const(ref inner) | Type::Restrict(ref inner) => {
                btf.resolve_chained_type(inner).ok()?
            }
            Type::TypeTag(ref inner) => btf.resolve_chained_type(inner).ok()?,
            other => return Some(other),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's BTF (world-readable; no root needed). The layout of
    /// `struct sock_common` fixes a few relations that hold on every kernel.
    #[test]
    fn resolves_the_running_kernels_layout() {
        let btf = running_kernel_btf().expect("this kernel has BTF");
        let resolved = resolve(&btf).expect("every required field");
        assert!(resolved.missing.is_empty(), "{:?}", resolved.missing);
        let layout = resolved.layout;
        // skc_daddr opens the struct; inet_sock's own fields follow the whole struct sock.
        assert_eq!(layout.sock_remote_addr4, 0);
        assert_eq!(layout.sock_local_addr4, 4);
        assert!(layout.sock_local_port > layout.sock_err);
        assert_eq!(layout.sock_local_addr6, layout.sock_remote_addr6 + 16);
        assert!(layout.sock_err > layout.sock_net);
        assert!(layout.net_inum > 0 && layout.task_nsproxy > 0);
    }

    #[test]
    fn this_kernel_lists_bound_sockets() {
        // 6.18 here; a test of the detection on 6.1 and 6.12 BTF runs in the kernel matrix.
        let btf = running_kernel_btf().expect("this kernel has BTF");
        assert!(lists_bound_sockets(&btf));
    }

    #[test]
    fn names_a_missing_field() {
        let btf = running_kernel_btf().expect("this kernel has BTF");
        let error = offset(&btf, "sock", &["__sk_common", "no_such_field"]).expect_err("absent");
        assert_eq!(
            error.to_string(),
            "the kernel's BTF has no field no_such_field in struct sock.__sk_common"
        );
    }
}
