//! The socket-listing iterator: loaded here, attached by the snapshot once per namespace
//! (`kernel::socket_list`). Not a collector: without it the snapshot lists TCP sockets with
//! `sock_diag`, the same numbers at a higher cost on nodes with many sockets.

use aya::{Ebpf, programs::Iter};
use port_monitor_common::socket_list::TCP_LISTER;

use super::{
    Environment, Hook, SOCKET_LIST_FACTS,
    programs::{program_error, program_mut},
};
use crate::kernel::{KernelError, layout::Optional};

/// Loads `iter/tcp`, where the kernel has the fields it reads and accepts it.
pub(super) fn load(ebpf: &mut Ebpf, env: &Environment) -> Result<Hook, KernelError> {
    if let Some(missing) = env.layout.missing(Optional::SocketList) {
        return Err(missing.clone().into());
    }
    let hook = Hook {
        program: TCP_LISTER,
        attach_point: "iter/tcp (per namespace, per snapshot)".into(),
        facts: SOCKET_LIST_FACTS,
    };
    let program: &mut Iter = program_mut(ebpf, TCP_LISTER)?;
    program.load("tcp", env.btf).map_err(program_error(&hook))?;
    Ok(hook)
}
