//! The TCP state program: `tp_btf`, or the classic tracepoint.

use aya::{
    Ebpf,
    programs::{BtfTracePoint, TracePoint},
};

use super::{
    Hook, TCP_STATE_FACTS, TcpStateHook,
    programs::{program_error, program_mut},
};
use crate::kernel::KernelError;

/// Attaches the TCP state program to the hook `choice` names; `Auto` tries `tp_btf` first and
/// falls back to the classic tracepoint, saying why.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    choice: TcpStateHook,
) -> Result<Hook, KernelError> {
    if choice == TcpStateHook::Tracepoint {
        return attach_tracepoint(ebpf);
    }
    let hook = Hook {
        program: "tcp_state_change",
        attach_point: "tp_btf/inet_sock_set_state".into(),
        facts: TCP_STATE_FACTS,
    };
    let program: &mut BtfTracePoint = program_mut(ebpf, hook.program)?;
    match program
        .load("inet_sock_set_state", btf)
        .and_then(|()| program.attach().map(drop))
        .map_err(program_error(&hook))
    {
        Ok(()) => Ok(hook),
        Err(error) if choice == TcpStateHook::Auto => {
            tracing::warn!(%error, "tp_btf unavailable, using the classic tracepoint (~100 ns more a hit)");
            attach_tracepoint(ebpf)
        }
        Err(error) => Err(error),
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<Hook, KernelError> {
    let hook = Hook {
        program: "tcp_state_tracepoint",
        attach_point: "tracepoint/sock/inet_sock_set_state".into(),
        facts: TCP_STATE_FACTS,
    };
    let program: &mut TracePoint = program_mut(ebpf, hook.program)?;
    program
        .load()
        .and_then(|()| program.attach("sock", "inet_sock_set_state").map(drop))
        .map_err(program_error(&hook))?;
    Ok(hook)
}
