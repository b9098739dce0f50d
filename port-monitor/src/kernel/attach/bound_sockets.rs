//! The programs that note sockets given a port by `bind()`.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSock},
};

use super::{
    BOUND_SOCKETS_FACTS, Environment, Hook,
    programs::{open_cgroup, program_error, program_mut},
};
use crate::kernel::KernelError;

/// `post_bind4`/`post_bind6` on the cgroup v2 root, and `sock_release` where the socket
/// tables do not list bound sockets (before 6.7): from 6.7 the snapshot forgets what its
/// dumps no longer list, and no program runs on every close.
pub(super) fn attach(ebpf: &mut Ebpf, env: &Environment) -> Result<Vec<Hook>, KernelError> {
    let root = env.cgroup_root.clone()?;
    let cgroup = open_cgroup(&root)?;
    let release = (!env.lists_bound_sockets).then_some(("released", "sock_release"));
    [("bound4", "post_bind4"), ("bound6", "post_bind6")]
        .into_iter()
        .chain(release)
        .map(|(name, attach_type)| {
            let hook = Hook {
                program: name,
                attach_point: format!("cgroup/{attach_type} on {}", root.display()),
                facts: BOUND_SOCKETS_FACTS,
            };
            let program: &mut CgroupSock = program_mut(ebpf, hook.program)?;
            program
                .load()
                .and_then(|()| {
                    program
                        .attach(cgroup.as_fd(), CgroupAttachMode::default())
                        .map(drop)
                })
                .map_err(program_error(&hook))?;
            Ok(hook)
        })
        .collect()
}
