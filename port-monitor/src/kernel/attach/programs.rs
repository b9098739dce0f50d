//! Loading and attaching helpers the hooks share: errors that say what to do, and rollback of
//! a collector that could not be attached whole.

use std::{fs::File, path::Path};

use aya::{Ebpf, programs::Program};

use super::Hook;
use crate::kernel::KernelError;

/// Runs `attach`; if it fails, detaches whatever it attached before failing, so that a
/// collector is either wholly in place or not at all.
pub(super) fn with_rollback(
    ebpf: &mut Ebpf,
    attach: impl FnOnce(&mut Ebpf) -> Result<Vec<Hook>, KernelError>,
) -> Result<Vec<Hook>, KernelError> {
    let before: Vec<String> = loaded(ebpf);
    let result = attach(ebpf);
    if result.is_err() {
        let now = loaded(ebpf);
        for name in now.iter().filter(|name| !before.contains(name)) {
            if let Some(program) = ebpf.program_mut(name) {
                unload(program);
            }
        }
    }
    result
}

/// The names of the programs loaded so far.
pub(super) fn loaded(ebpf: &Ebpf) -> Vec<String> {
    ebpf.programs()
        .filter(|(_, program)| program.fd().is_ok())
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Detaches and unloads a program. Failing to is harmless: the program only watches.
pub(super) fn unload(program: &mut Program) {
    let result = match program {
        Program::FExit(program) => program.unload(),
        Program::TracePoint(program) => program.unload(),
        Program::CgroupSockAddr(program) => program.unload(),
        Program::CgroupSock(program) => program.unload(),
        _ => Ok(()),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "unloading a program of a collector left out");
    }
}

pub(super) fn open_cgroup(root: &Path) -> Result<File, KernelError> {
    File::open(root).map_err(|source| KernelError::Cgroup {
        path: root.display().to_string(),
        source,
    })
}

pub(super) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut Program>,
{
    ebpf.program_mut(name)
        .and_then(|program| program.try_into().ok())
        .ok_or(KernelError::NoProgram(name))
}

/// EPERM on loading a tracing program: the kernel runs no trampolines for anyone.
pub(super) fn refuses_trampolines(error: &aya::programs::ProgramError) -> bool {
    matches!(error, aya::programs::ProgramError::LoadError { io_error, .. }
        if io_error.raw_os_error() == Some(libc::EPERM))
}

/// A program error in a few words: the errno, and the verifier's last line when it spoke.
pub(super) fn brief(error: &aya::programs::ProgramError) -> String {
    match error {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            match log.lines().rev().find(|line| !line.trim().is_empty()) {
                Some(last) => format!("{io_error} ({})", last.trim()),
                None if refuses_trampolines(error) => format!(
                    "{io_error}: this kernel refuses BPF trampolines (kernel lockdown, or no \
                     CONFIG_FUNCTION_TRACER)"
                ),
                None => io_error.to_string(),
            }
        }
        other => other.to_string(),
    }
}

pub(super) fn program_error(
    hook: &Hook,
) -> impl Fn(aya::programs::ProgramError) -> KernelError + '_ {
    move |source| {
        let hint = if source.to_string().contains("Operation not permitted") {
            ". The kernel refused with EPERM: check the capabilities listed in the docs, and \
             that kernel lockdown does not forbid this program type"
        } else {
            ""
        };
        KernelError::Program {
            program: hook.program,
            attach_point: hook.attach_point.clone(),
            source: Box::new(source),
            hint,
        }
    }
}
