//! The errno facts (failed binds, UDP autobind): fexit programs on the kernel functions, or the
//! syscall tracepoints where the flag says so.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, FExit, TracePoint},
};

use super::{
    AUTOBIND_FACTS, BIND_FACTS, Environment, ErrnoHook, Hook,
    programs::{
        brief, open_cgroup, program_error, program_mut, refuses_trampolines, with_rollback,
    },
};
use crate::kernel::{
    KernelError,
    functions::{self, Candidate},
    layout::Optional,
};

/// Attaches one fexit program per fact group (`groups`, each a list of candidates) or, as
/// `choice` says, the syscall-tracepoint way (`syscall`). `flag_off` is the flag that turns the
/// collector off, for the message.
pub(super) fn by_errno_hook(
    ebpf: &mut Ebpf,
    env: &Environment,
    choice: ErrnoHook,
    groups: &[&[Candidate]],
    (facts, flag_off): (&'static str, &'static str),
    syscall: fn(&mut Ebpf, &Environment) -> Result<Vec<Hook>, KernelError>,
) -> Result<Vec<Hook>, KernelError> {
    let fexit = |ebpf: &mut Ebpf| {
        with_rollback(ebpf, |ebpf| {
            groups
                .iter()
                .map(|candidates| attach_fexit(ebpf, env, candidates, facts))
                .collect()
        })
    };
    match choice {
        ErrnoHook::Tracepoint => with_rollback(ebpf, |ebpf| syscall(ebpf, env)),
        ErrnoHook::Fexit => fexit(ebpf).map_err(|source| KernelError::FexitUnavailable {
            source: Box::new(source),
            off: flag_off,
        }),
        ErrnoHook::Auto => fexit(ebpf).or_else(|error| {
            tracing::warn!(%error, facts, "fexit unavailable, using syscall tracepoints: every syscall on the node pays");
            with_rollback(ebpf, |ebpf| syscall(ebpf, env))
        }),
    }
}

/// Attaches the program of the first candidate whose function this kernel has with the
/// program's arguments and accepts an fexit program on.
pub(super) fn attach_fexit(
    ebpf: &mut Ebpf,
    env: &Environment,
    candidates: &[Candidate],
    facts: &'static str,
) -> Result<Hook, KernelError> {
    let mut reasons = Vec::new();
    for candidate in candidates {
        if let Err(mismatch) = functions::check(env.kernel_btf, candidate) {
            reasons.push(mismatch.to_string());
            continue;
        }
        let hook = Hook {
            program: candidate.program,
            attach_point: format!("fexit/{}", candidate.function),
            facts,
        };
        let program: &mut FExit = program_mut(ebpf, hook.program)?;
        match program
            .load(candidate.function, env.btf)
            .and_then(|()| program.attach().map(drop))
        {
            Ok(()) => return Ok(hook),
            Err(error) => {
                reasons.push(format!("{}: {}", hook.attach_point, brief(&error)));
                if refuses_trampolines(&error) {
                    // The next candidate would be refused the same way.
                    break;
                }
            }
        }
    }
    Err(KernelError::NoCandidate {
        facts,
        reasons: reasons.join("; "),
    })
}

/// The cgroup bind hooks (what was asked) and `sys_exit_bind` (the errno).
pub(super) fn attach_bind_syscall(
    ebpf: &mut Ebpf,
    env: &Environment,
) -> Result<Vec<Hook>, KernelError> {
    env.tracefs.clone()?;
    let root = env.cgroup_root.clone()?;
    let cgroup = open_cgroup(&root)?;
    let mut hooks = Vec::new();
    for (name, attach_type) in [("bind4_request", "bind4"), ("bind6_request", "bind6")] {
        let hook = Hook {
            program: name,
            attach_point: format!("cgroup/{attach_type} on {}", root.display()),
            facts: "bind(): the address, port and protocol asked for",
        };
        let program: &mut CgroupSockAddr = program_mut(ebpf, hook.program)?;
        // Other agents on the node (CNI plugins, service meshes) attach programs to the same
        // cgroup; port-monitor must sit beside them, not replace them. A bpf_link attachment
        // (kernels >= 5.7) always runs beside the others, and the kernel refuses any flag on
        // it: so the mode asked for here is the default.
        program
            .load()
            .and_then(|()| {
                program
                    .attach(cgroup.as_fd(), CgroupAttachMode::default())
                    .map(drop)
            })
            .map_err(program_error(&hook))?;
        hooks.push(hook);
    }
    hooks.push(attach_syscall_exit(
        ebpf,
        "bind_exit",
        "sys_exit_bind",
        BIND_FACTS,
    )?);
    Ok(hooks)
}

/// `sys_exit_{connect,sendto,sendmsg,sendmmsg}`, which find the socket through the file table.
pub(super) fn attach_autobind_syscall(
    ebpf: &mut Ebpf,
    env: &Environment,
) -> Result<Vec<Hook>, KernelError> {
    env.tracefs.clone()?;
    if let Some(missing) = env.layout.missing(Optional::FileTable) {
        return Err(missing.clone().into());
    }
    [
        ("connect_exit", "sys_exit_connect"),
        ("sendto_exit", "sys_exit_sendto"),
        ("sendmsg_exit", "sys_exit_sendmsg"),
        ("sendmmsg_exit", "sys_exit_sendmmsg"),
    ]
    .into_iter()
    .map(|(program, syscall)| attach_syscall_exit(ebpf, program, syscall, AUTOBIND_FACTS))
    .collect()
}

pub(super) fn attach_syscall_exit(
    ebpf: &mut Ebpf,
    program: &'static str,
    syscall: &str,
    facts: &'static str,
) -> Result<Hook, KernelError> {
    let hook = Hook {
        program,
        attach_point: format!("tracepoint/syscalls/{syscall}"),
        facts,
    };
    let program: &mut TracePoint = program_mut(ebpf, hook.program)?;
    program
        .load()
        .and_then(|()| program.attach("syscalls", syscall).map(drop))
        .map_err(program_error(&hook))?;
    Ok(hook)
}
