//! Runs one command as root inside another Linux kernel, under qemu, with this machine's root
//! filesystem as the guest's, and returns its output and exit status.
//!
//! Why: an eBPF program meets a different verifier, BTF and set of tracepoints on each kernel
//! release, so the privileged tests and the benchmarks must run on the kernels users run, not
//! only on this machine's. A container would share the host's kernel; a virtual machine with
//! a disk image would need the toolchain, the checkout and the test binaries copied in. Here
//! the guest mounts the host's `/` read-only over virtio-9p, so it sees the same binaries and
//! files as the host at the same paths, with nothing to build or keep in sync.
//!
//! How: [`prepare`] fetches a Debian kernel package once and makes what booting it needs
//! (cached in `target/kernels/<version>/`, see `kernel.rs` and `initramfs.rs`); [`run`] boots
//! it (`qemu.rs`). The guest's init (`init.sh`, `stage2.sh`) puts a tmpfs overlay over the
//! shared root, so the command may write anywhere and its writes vanish at power-off, mounts
//! what eBPF programs need (bpffs, tracefs, debugfs, cgroup2 ...), and runs the command with
//! the caller's environment and working directory. Its output and exit status come back
//! through a second, writable 9p share: a run directory under `target/vm-runs/`, which the
//! host reads while the guest writes, to show progress.

mod initramfs;
mod kernel;
mod qemu;
mod tools;

use std::{
    env, fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Args, builder::PossibleValuesParser};

use crate::setup;

/// The kernel series the tests and benchmarks run on: Debian 12's kernel and its backport.
pub const MATRIX: &[&str] = &["6.1", "6.12"];

/// A Debian kernel, extracted and ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Its series, one of [`MATRIX`].
    pub series: &'static str,
    /// Its release, `uname -r` in the guest, e.g. `6.1.0-57-amd64`.
    pub version: String,
    /// The extracted package (`boot/`, `lib/modules/<version>/`), `target/kernels/<version>`.
    pub dir: PathBuf,
    /// The uncompressed ELF image qemu boots.
    vmlinux: PathBuf,
    /// The guest's first stage: busybox, init scripts, the modules that reach the host's files.
    initramfs: PathBuf,
}

impl Kernel {
    /// The kernel's BTF (the raw `.BTF` section of its vmlinux), for unit tests that check
    /// programs or type layouts against a kernel other than the running one.
    #[must_use]
    pub fn btf_path(&self) -> PathBuf {
        self.dir.join("btf")
    }
}

/// Fetches (once) and prepares the newest Debian kernel of a series in [`MATRIX`]: downloads
/// and extracts its package, takes the ELF vmlinux and BTF out of it and builds an initramfs.
///
/// # Errors
/// When the series is not in [`MATRIX`], no package for it is found, or a step fails.
pub fn prepare(series: &str) -> Result<Kernel> {
    let Some(&series) = MATRIX.iter().find(|known| **known == series) else {
        bail!(
            "no kernel series {series} in the matrix: choose one of {}",
            MATRIX.join(", ")
        );
    };
    kernel::prepare(series, &target_dir().join("kernels"))
}

/// How to run a command in a guest.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory, in qemu's syntax (`2G`).
    pub memory: String,
    /// How long the guest may run, boot included, before it is stopped.
    pub timeout: Duration,
    /// Variables set for the command, on top of the caller's environment.
    pub env: Vec<(String, String)>,
    /// Print the command's output while it runs, each line prefixed with `[<series>] `.
    pub stream: bool,
    /// The command's working directory; the current one when `None`.
    pub dir: Option<PathBuf>,
    /// The guest's clock counts instructions (qemu's `-icount`): a program's speed is then
    /// its instruction count, whatever else the host runs. For benchmarks of a fixed cost
    /// per call; everything runs on one host thread, so slower than the default.
    pub instruction_clock: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            cpus: 2,
            memory: "2G".to_owned(),
            timeout: Duration::from_mins(10),
            env: Vec::new(),
            stream: false,
            dir: None,
            instruction_clock: false,
        }
    }
}

/// What a command did in a guest.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command's exit status; 124 when it timed out (as with `timeout(1)`).
    pub status: i32,
    /// What the command wrote to stdout and stderr, interleaved.
    pub output: String,
    /// From starting qemu to its exit.
    pub wall: Duration,
    /// Whether the guest was stopped at [`RunOptions::timeout`].
    pub timed_out: bool,
    /// The guest's uptime when the command started: what booting cost.
    pub boot: Option<Duration>,
}

/// Runs `command` as root in a guest booted from `kernel` (see the module's documentation),
/// with the caller's environment plus [`RunOptions::env`], in the caller's working directory
/// or [`RunOptions::dir`].
///
/// The run directory is deleted when the command succeeds and kept otherwise, with the guest
/// console's log (`console.log`) beside the output.
///
/// # Errors
/// When qemu cannot start, or the guest never reports an exit status (it did not boot, or
/// panicked): the error names the kernel and ends with its console log's last lines.
pub fn run(kernel: &Kernel, command: &[String], options: &RunOptions) -> Result<Outcome> {
    ensure!(!command.is_empty(), "no command to run in the guest");
    let dir = match &options.dir {
        Some(dir) => std::path::absolute(dir),
        None => env::current_dir(),
    }
    .context("could not find the working directory for the guest's command")?;
    let run_dir = new_run_dir(&kernel.version)?;
    fs::write(
        run_dir.join("command.sh"),
        script(kernel, command, &dir, &options.env),
    )
    .with_context(|| format!("could not write the command to {}", run_dir.display()))?;
    let outcome = qemu::boot(kernel, &run_dir, options)?;
    if outcome.status == 0 && !outcome.timed_out {
        // Best effort: a leftover run directory only costs disk space under target/.
        fs::remove_dir_all(&run_dir).ok();
    } else if outcome.timed_out {
        eprintln!(
            "vm: {} stopped after {:?}; its console log is in {}",
            kernel.version,
            options.timeout,
            run_dir.join("console.log").display()
        );
    }
    Ok(outcome)
}

/// The workspace's target directory, where kernels and run directories are kept.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from)
}

/// A fresh directory for one run: the guest's results share.
fn new_run_dir(version: &str) -> Result<PathBuf> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let runs = target_dir().join("vm-runs");
    fs::create_dir_all(&runs)
        .with_context(|| format!("could not create {}: is target/ writable?", runs.display()))?;
    let run_dir = std::path::absolute(runs.join(format!(
        "{version}.{}.{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )))?;
    // The path goes on the kernel's command line, which spaces split.
    ensure!(
        !run_dir.to_string_lossy().contains(char::is_whitespace),
        "the guest cannot reach {}: move the checkout to a path without spaces",
        run_dir.display()
    );
    fs::create_dir(&run_dir).with_context(|| format!("could not create {}", run_dir.display()))?;
    Ok(run_dir)
}

/// Variables of the caller's that mean nothing in the guest, or mislead there (the guest's
/// output goes to a file, not to the caller's terminal).
const DROPPED_VARIABLES: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME", "DISPLAY", "TERM"];
const DROPPED_PREFIXES: &[&str] = &["SSH_", "XDG_", "DBUS_", "TMUX"];

/// The shell script the guest runs (`stage2.sh`): the environment, the directory, the command.
fn script(kernel: &Kernel, command: &[String], dir: &Path, extra: &[(String, String)]) -> String {
    let mut variables: Vec<(String, String)> = env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| {
            !DROPPED_VARIABLES.contains(&name.as_str())
                && !DROPPED_PREFIXES
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                && !extra.iter().any(|(set, _)| set == name)
                && name != "XTASK_VM_KERNEL"
        })
        .collect();
    variables.push(("TERM".to_owned(), "dumb".to_owned()));
    // The command may want to know where it runs.
    variables.push(("XTASK_VM_KERNEL".to_owned(), kernel.version.clone()));
    variables.extend(extra.iter().cloned());
    let mut lines = vec!["# Written by cargo xtask (xtask/src/vm), run by stage2.sh.".to_owned()];
    for (name, value) in &variables {
        let is_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name {
            let value = if name == "PATH" {
                guest_path(value)
            } else {
                value.clone()
            };
            lines.push(format!("export {name}={}", quote(&value)));
        }
    }
    lines.push(format!("cd {} || exit 125", quote(&dir.to_string_lossy())));
    let words: Vec<String> = command.iter().map(|word| quote(word)).collect();
    lines.push(format!("exec {}\n", words.join(" ")));
    lines.join("\n")
}

/// The caller's PATH without pyenv's directories: each call of a pyenv shim runs a shell
/// script that reads dozens of files, which over 9p costs seconds; Debian's `python3` answers.
fn guest_path(path: &str) -> String {
    path.split(':')
        .filter(|directory| !directory.contains("pyenv"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `word` quoted for a POSIX shell.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `cargo xtask vm`: run one command in another kernel, for developers.
#[derive(Args)]
pub struct Options {
    /// The kernel series to boot.
    #[arg(long, value_parser = PossibleValuesParser::new(MATRIX))]
    kernel: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Guest memory, in qemu's syntax.
    #[arg(long, default_value = "2G")]
    memory: String,
    /// Seconds the guest may run, boot included.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The guest's clock counts instructions instead of following the host's (qemu
    /// `-icount`): timings inside measure instruction counts, deaf to the host's load.
    #[arg(long)]
    instruction_clock: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Prepares the kernel, runs the command in it and exits with the command's status.
///
/// # Errors
/// When the caller is not root, or the kernel cannot be prepared or booted.
pub fn command(options: &Options) -> Result<()> {
    if options.instruction_clock && options.cpus != 1 {
        bail!(
            "--instruction-clock runs on one virtual CPU (qemu's instruction clock did not boot \
             with more here): add --cpus 1"
        );
    }
    setup::require_root("fetch Debian kernels and install qemu with apt-get")?;
    setup::install_packages(setup::VM_PACKAGES)?;
    let kernel = prepare(&options.kernel)?;
    let outcome = run(
        &kernel,
        &options.command,
        &RunOptions {
            cpus: options.cpus,
            memory: options.memory.clone(),
            timeout: Duration::from_secs(options.timeout),
            stream: true,
            instruction_clock: options.instruction_clock,
            ..RunOptions::default()
        },
    )?;
    let boot = outcome.boot.map_or_else(
        || "?".to_owned(),
        |boot| format!("{:.1}", boot.as_secs_f64()),
    );
    eprintln!(
        "vm: {}: exit status {}{}, command started at guest uptime {boot} s, {:.1} s in all",
        kernel.version,
        outcome.status,
        if outcome.timed_out {
            " (timed out)"
        } else {
            ""
        },
        outcome.wall.as_secs_f64(),
    );
    std::process::exit(outcome.status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
    }

    #[test]
    fn drops_pyenv_from_path() {
        assert_eq!(
            guest_path("/root/.cargo/bin:/root/.pyenv/shims:/root/.pyenv/bin:/usr/bin:/bin"),
            "/root/.cargo/bin:/usr/bin:/bin"
        );
    }

    #[test]
    fn script_sets_environment_directory_and_command() {
        let kernel = Kernel {
            series: "6.1",
            version: "6.1.0-57-amd64".to_owned(),
            dir: PathBuf::from("/k"),
            vmlinux: PathBuf::from("/k/vmlinux"),
            initramfs: PathBuf::from("/k/initramfs.cpio"),
        };
        let text = script(
            &kernel,
            &["sh".to_owned(), "-c".to_owned(), "echo 'hi'".to_owned()],
            Path::new("/work/x y"),
            &[("RUST_LOG".to_owned(), "debug".to_owned())],
        );
        assert!(text.contains("export RUST_LOG='debug'\n"));
        assert_eq!(text.matches("export RUST_LOG=").count(), 1);
        assert!(text.contains("export XTASK_VM_KERNEL='6.1.0-57-amd64'\n"));
        assert!(text.ends_with("cd '/work/x y' || exit 125\nexec 'sh' '-c' 'echo '\\''hi'\\'''\n"));
    }
}
