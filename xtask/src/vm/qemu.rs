//! Boots a prepared kernel under qemu for one run, follows the command's output while it
//! runs, and collects its exit status.

use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Kernel, Outcome, RunOptions};

/// How often the output file is read while the guest runs.
const POLL: Duration = Duration::from_millis(100);

/// Console lines shown when a guest fails.
const CONSOLE_TAIL: usize = 30;

/// Boots `kernel` with the command written in `run_dir`, and returns what it did.
pub fn boot(kernel: &Kernel, run_dir: &Path, options: &RunOptions) -> Result<Outcome> {
    let output_path = run_dir.join("output.log");
    File::create(&output_path)
        .with_context(|| format!("could not create {}", output_path.display()))?;
    let qemu_log = File::create(run_dir.join("qemu.log"))?;
    let start = Instant::now();
    let mut qemu = command(kernel, run_dir, options)
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone()?)
        .stderr(qemu_log)
        .spawn()
        .context(
            "could not start qemu-system-x86_64: install qemu-system-x86 \
             (cargo xtask setup installs it)",
        )?;
    let mut output_file = File::open(&output_path)?;
    let mut follower = Follower {
        prefix: options.stream.then(|| format!("[{}] ", kernel.series)),
        ..Follower::default()
    };
    let (qemu_status, timed_out) = loop {
        let exited = qemu.try_wait()?;
        follower.read(&mut output_file)?;
        if let Some(status) = exited {
            break (status, false);
        }
        if start.elapsed() >= options.timeout {
            // Our own child, by its handle.
            qemu.kill().ok();
            let status = qemu.wait()?;
            follower.read(&mut output_file)?;
            break (status, true);
        }
        thread::sleep(POLL);
    };
    let wall = start.elapsed();
    follower.finish();
    let output = String::from_utf8_lossy(&follower.output).into_owned();
    let boot = fs::read_to_string(run_dir.join("started"))
        .ok()
        .and_then(|uptime| uptime.trim().parse::<f64>().ok())
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok());
    if timed_out {
        return Ok(Outcome {
            status: 124,
            output,
            wall,
            timed_out,
            boot,
        });
    }
    let status = fs::read_to_string(run_dir.join("exit-status"))
        .ok()
        .and_then(|status| status.trim().parse::<i32>().ok());
    let Some(status) = status else {
        let qemu_said = fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default();
        bail!(
            "kernel {} ({}) did not report the command's exit status: it did not boot, or \
             stopped (qemu exited with {qemu_status}{}{}). Run directory kept: {}\n\
             The end of its console log:\n{}",
            kernel.version,
            kernel.series,
            if qemu_said.trim().is_empty() {
                ""
            } else {
                ", saying: "
            },
            qemu_said.trim(),
            run_dir.display(),
            console_tail(&run_dir.join("console.log")),
        );
    };
    Ok(Outcome {
        status,
        output,
        wall,
        timed_out,
        boot,
    })
}

/// The qemu command line.
fn command(kernel: &Kernel, run_dir: &Path, options: &RunOptions) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    // Software emulation (TCG), on every core. KVM would be many times faster, but this
    // project's machines are virtual machines whose nested /dev/kvm fails to run stock
    // kernels; `-cpu max` gives the guest every instruction TCG emulates. A larger
    // translation cache keeps the kernel's hot code translated.
    if options.instruction_clock {
        // One virtual nanosecond per four instructions, and no sleeping: the guest's time
        // is its instruction count (icount needs single-threaded TCG).
        qemu.args(["-accel", "tcg,thread=single,tb-size=256", "-cpu", "max"]);
        qemu.args(["-icount", "shift=2,sleep=off"]);
    } else {
        qemu.args(["-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max"]);
    }
    qemu.args(["-machine", "pc", "-smp", &options.cpus.to_string()]);
    qemu.args(["-m", &options.memory]);
    // No default devices, no display, no reboot: the guest powering off ends qemu.
    qemu.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    qemu.arg("-serial")
        .arg(format!("file:{}", run_dir.join("console.log").display()));
    qemu.arg("-kernel").arg(&kernel.vmlinux);
    qemu.arg("-initrd").arg(&kernel.initramfs);
    // panic=-1: a panicking guest reboots at once, which -no-reboot turns into qemu's exit.
    qemu.arg("-append").arg(format!(
        "console=ttyS0 loglevel=4 panic=-1 rdinit=/init mitigations=off \
         xtask.out={} xtask.kernel={}",
        run_dir.display(),
        kernel.dir.display()
    ));
    // The host's root, read-only (init.sh puts a tmpfs overlay on it), and the run directory,
    // writable. virtio-9p shares directories with no image to build; multidevs=remap keeps
    // inode numbers unique across the host's mounts, which the guest sees as one filesystem.
    qemu.args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ]);
    qemu.arg("-fsdev").arg(format!(
        "local,id=results,path={},security_model=none,multidevs=remap",
        run_dir.display()
    ));
    qemu.args(["-device", "virtio-9p-pci,fsdev=results,mount_tag=results"]);
    // Entropy, so that nothing in the guest blocks waiting for random numbers.
    qemu.args(["-device", "virtio-rng-pci"]);
    qemu
}

/// Reads the output file as the guest appends to it, keeps every byte and, when streaming,
/// prints each complete line with a prefix.
#[derive(Default)]
struct Follower {
    prefix: Option<String>,
    output: Vec<u8>,
    /// Where the output's unprinted part starts.
    printed: usize,
}

impl Follower {
    fn read(&mut self, file: &mut File) -> Result<()> {
        file.read_to_end(&mut self.output)
            .context("could not read the guest's output")?;
        if let Some(end) = self.output.iter().rposition(|byte| *byte == b'\n') {
            self.print(end + 1);
        }
        Ok(())
    }

    /// Prints what is left, a last line without its newline included.
    fn finish(&mut self) {
        self.print(self.output.len());
    }

    fn print(&mut self, end: usize) {
        let Some(prefix) = &self.prefix else {
            return;
        };
        if end <= self.printed {
            return;
        }
        let text = String::from_utf8_lossy(&self.output[self.printed..end]);
        let mut stdout = std::io::stdout().lock();
        for line in text.lines() {
            // The terminal may be gone; the output is returned all the same.
            writeln!(stdout, "{prefix}{line}").ok();
        }
        stdout.flush().ok();
        self.printed = end;
    }
}

/// The last lines of the guest's console log.
fn console_tail(path: &Path) -> String {
    let Ok(log) = fs::read(path) else {
        return format!("(no console log at {})", path.display());
    };
    let log = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(CONSOLE_TAIL)..].join("\n")
}
