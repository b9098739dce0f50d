//! `cargo xtask test`: install what is missing and run every check CI runs.

use anyhow::Result;
use clap::Args;

use crate::{cmd, dashboards, deploy, fuzz, helm, image, matrix, rules, setup};

#[derive(Args)]
pub struct Options {
    /// Skip formatting and lint checks (tests only).
    #[arg(long)]
    no_lint: bool,
}

pub fn run(options: &Options) -> Result<()> {
    setup::install(setup::Purpose::Test)?;
    if !options.no_lint {
        lint()?;
    }
    // The alerting rules: valid, their unit tests pass, the PrometheusRule is current.
    rules::check()?;
    // The dashboards: valid @grafana/schema dashboards, JSON current.
    dashboards::check()?;
    // The Kubernetes manifests: valid for the API they target.
    deploy::check()?;
    // The Helm chart: lints, renders valid objects, and its defaults make the base's.
    helm::check()?;
    // The container image builds and its binary runs.
    image::build()?;
    // The kernels of the matrix, fetched once: their BTF serves the unit tests, their
    // images the privileged tests below.
    let kernels = matrix::prepare()?;
    // Unit tests: no root needed, run in parallel. The default members leave out the eBPF
    // crate, which only builds for the BPF target.
    cmd::run(
        cmd::command("cargo")
            .args(["test", "--all-targets"])
            .env(matrix::BTF_VARIABLE, matrix::btf_paths(&kernels)),
    )?;
    // Privileged tests load real eBPF programs and share kernel state: one at a time.
    cmd::run(cmd::command("cargo").args([
        "test",
        "--package",
        "port-monitor",
        "--test",
        "privileged",
        "--",
        "--test-threads=1",
    ]))?;
    // The same privileged tests inside every kernel of the matrix.
    matrix::run(&kernels)?;
    // The parsers of untrusted input, fuzzed briefly (longer runs: `cargo xtask fuzz`).
    fuzz::run_all(FUZZ_SECONDS)
}

/// Seconds each fuzz target runs in the test suite.
const FUZZ_SECONDS: u32 = 15;

fn lint() -> Result<()> {
    cmd::run(cmd::command("cargo").args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cmd::command("cargo").args(["clippy", "--all-targets", "--", "--deny", "warnings"]))?;
    // `--all-targets` leaves out test targets with `test = false`: the privileged tests.
    cmd::run(cmd::command("cargo").args([
        "clippy",
        "--package",
        "port-monitor",
        "--test",
        "privileged",
        "--",
        "--deny",
        "warnings",
    ]))?;
    // The kernel programs, linted for the target they build for.
    cmd::run(cmd::command("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "port-monitor-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "--deny",
        "warnings",
    ]))
}
