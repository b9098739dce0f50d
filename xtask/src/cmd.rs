//! Running child processes with the project's environment and a readable failure message.

use std::{
    env,
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Cargo's own bin directory, where `cargo install` puts bpf-linker. It is put first on PATH
/// for every child so a fresh shell that has not sourced `~/.cargo/env` still finds it.
pub fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// A command with `cargo_bin_dir()` first on PATH.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    let mut paths = vec![cargo_bin_dir()];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    if let Ok(path) = env::join_paths(paths) {
        command.env("PATH", path);
    }
    command
}

/// Runs `command` with inherited stdio and fails with the command line if it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    println!("+ {line}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// Runs `command` quietly and says whether it succeeded; a missing program counts as failure.
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `command` quietly and returns its standard output, or `None` if it failed.
pub fn output(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn describe(command: &Command) -> String {
    let mut parts: Vec<OsString> = vec![command.get_program().to_owned()];
    parts.extend(command.get_args().map(ToOwned::to_owned));
    parts
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
