//! Running the tools a kernel's preparation needs, and writing its files whole.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs `program args` with `input` on its standard input and returns its standard output,
/// whatever its exit status: callers check what came out.
pub fn pipe(program: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("could not start {program}: cargo xtask setup installs it (zstd, xz-utils)")
        })?;
    let mut stdin = child.stdin.take().context("no pipe to the decompressor")?;
    let output = std::thread::scope(|scope| {
        // A decompressor may stop reading at the end of its stream: a broken pipe is expected.
        scope.spawn(move || stdin.write_all(input).ok());
        child.wait_with_output()
    })
    .with_context(|| format!("{program} failed"))?;
    Ok(output.stdout)
}

/// Runs `command` quietly and returns its standard output; on failure, the error holds its
/// standard error.
pub fn capture(command: &mut Command) -> Result<Vec<u8>> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// Writes `path` whole or not at all, so that an interrupted preparation is redone next time.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let mut partial = PathBuf::from(path);
    partial
        .as_mut_os_string()
        .push(format!(".{}.partial", std::process::id()));
    fs::write(&partial, contents)
        .with_context(|| format!("could not write {}", partial.display()))?;
    fs::rename(&partial, path).with_context(|| format!("could not write {}", path.display()))
}
