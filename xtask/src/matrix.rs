//! The kernel matrix: the privileged end-to-end tests again inside each kernel of
//! [`vm::MATRIX`], booted under qemu, with a summary per kernel.
//!
//! The guests run the test binary the host just built (they see the host's files). Left out
//! there: the tests of the HTTP endpoint (abuse, TLS, a real Prometheus), which exercise no
//! kernel code and would only take emulated minutes.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, vm};

/// Privileged test modules (and tests) that touch no kernel code: run on the host only.
const HOST_ONLY: &[&str] = &[
    "http_abuse::",
    "tls_auth::",
    "prometheus::",
    "status::privileged_status_reaches_a_daemon_behind_tls_and_basic_auth",
];

/// How long one kernel's run may take (boot included). The whole set takes ~6 minutes
/// under emulation on this project's 2-core machines.
const TIMEOUT: Duration = Duration::from_mins(30);

/// The kernels of the matrix, fetched and prepared (cached under `target/kernels/`).
///
/// # Errors
/// When a kernel cannot be downloaded or prepared.
pub fn prepare() -> Result<Vec<vm::Kernel>> {
    vm::MATRIX
        .iter()
        .map(|series| vm::prepare(series))
        .collect()
}

/// The environment variable that gives the daemon's unit tests the matrix kernels' BTF:
/// their paths, separated by `:`.
pub const BTF_VARIABLE: &str = "PORT_MONITOR_TEST_KERNEL_BTF";

/// The value of [`BTF_VARIABLE`] for `kernels`.
#[must_use]
pub fn btf_paths(kernels: &[vm::Kernel]) -> String {
    kernels
        .iter()
        .map(|kernel| kernel.btf_path().display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// One kernel's result.
struct Row {
    version: String,
    passed: usize,
    failed: Vec<String>,
    status: i32,
    wall: Duration,
}

/// Runs the privileged tests in every kernel of `kernels`, prints a summary, and fails if any
/// kernel failed a test or could not boot.
///
/// # Errors
/// When the test binary cannot be built, a guest does not boot, or a test fails.
pub fn run(kernels: &[vm::Kernel]) -> Result<()> {
    let is_root = cmd::output(cmd::command("id").arg("-u")).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        // As the privileged tests themselves: skip loudly, except where skipping is a failure.
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!(
                "the kernel matrix needs root (qemu guests running privileged tests); CI=true forbids skipping"
            );
        }
        println!("SKIPPED kernel matrix: needs root");
        return Ok(());
    }
    let binary = privileged_test_binary()?;
    let mut command = vec![binary.display().to_string(), "--test-threads=1".to_owned()];
    for module in HOST_ONLY {
        command.extend(["--skip".to_owned(), (*module).to_owned()]);
    }
    let mut rows = Vec::new();
    for kernel in kernels {
        println!(
            "kernel matrix: the privileged tests in {} ({})",
            kernel.version, kernel.series
        );
        let started = Instant::now();
        let outcome = vm::run(
            kernel,
            &command,
            &vm::RunOptions {
                timeout: TIMEOUT,
                stream: true,
                env: vec![
                    // Both kernels of the matrix run fexit programs (measured): the tests
                    // check that the defaults use them there.
                    ("PORT_MONITOR_TEST_EXPECT_FEXIT".to_owned(), "1".to_owned()),
                    // A privileged test must run, not skip, in the guest as on the host.
                    ("CI".to_owned(), "true".to_owned()),
                    // Emulated guests are many times slower: bounded waits stretch.
                    ("PORT_MONITOR_TEST_TIME_SCALE".to_owned(), "4".to_owned()),
                ],
                ..vm::RunOptions::default()
            },
        )
        .with_context(|| format!("the kernel matrix could not run in {}", kernel.version))?;
        let (passed, failed) = results(&outcome.output);
        rows.push(Row {
            version: kernel.version.clone(),
            passed,
            failed,
            status: if outcome.timed_out {
                124
            } else {
                outcome.status
            },
            wall: started.elapsed(),
        });
    }
    let summary = summary(&rows);
    println!("{summary}");
    if rows.iter().any(|row| row.status != 0) {
        bail!("the privileged tests failed in the kernel matrix:\n{summary}");
    }
    Ok(())
}

/// Builds the privileged test binary and returns its path.
fn privileged_test_binary() -> Result<PathBuf> {
    let build = [
        "test",
        "--package",
        "port-monitor",
        "--test",
        "privileged",
        "--no-run",
    ];
    cmd::run(cmd::command("cargo").args(build))?;
    // Built: asking again only names it.
    let output = cmd::output(cmd::command("cargo").args([
        "test",
        "--package",
        "port-monitor",
        "--test",
        "privileged",
        "--no-run",
        "--message-format=json",
    ]))
    .context("building the privileged tests failed")?;
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "privileged")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo did not name the privileged test binary")
}

/// The number of tests passed (from libtest's result line) and the names of those failed.
/// Lines may carry the guest's `[6.1] ` prefix.
fn results(output: &str) -> (usize, Vec<String>) {
    let passed = output
        .lines()
        .filter_map(|line| {
            line.split_once("test result: ")?
                .1
                .split_once(". ")?
                .1
                .split_once(" passed")
        })
        .filter_map(|(count, _)| count.parse::<usize>().ok())
        .sum();
    let failed = output
        .lines()
        .filter_map(|line| line.split_once("test ")?.1.strip_suffix(" ... FAILED"))
        .map(str::to_owned)
        .collect();
    (passed, failed)
}

fn summary(rows: &[Row]) -> String {
    let mut text = String::from(
        "kernel matrix summary:\n| kernel | result | passed | failed | time |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        let result = match row.status {
            0 => "ok".to_owned(),
            124 => "TIMED OUT".to_owned(),
            status => format!("FAILED (exit {status})"),
        };
        let _ = writeln!(
            text,
            "| {} | {result} | {} | {} | {:.0} s |",
            row.version,
            row.passed,
            if row.failed.is_empty() {
                "0".to_owned()
            } else {
                row.failed.join(", ")
            },
            row.wall.as_secs_f64()
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_results_through_the_guest_prefix() {
        let output = "[6.1] test a::one ... ok\n[6.1] test a::two ... FAILED\n\
                      [6.1] test b::three ... ok\n[6.1] test result: FAILED. 2 passed; 1 failed";
        assert_eq!(results(output), (2, vec!["a::two".to_owned()]));
    }
}
