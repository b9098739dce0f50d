//! Developer tasks. Every step that installs something lives in [`setup`], so that the two
//! README commands (`cargo xtask run`, `cargo xtask test`) work on a fresh Debian machine and
//! install nothing the second time.

mod bench;
mod cmd;
mod dashboards;
mod deploy;
mod fuzz;
mod helm;
mod image;
mod matrix;
mod rules;
mod run;
mod screenshot;
mod setup;
mod test;
mod top_capture;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "port-monitor developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, rust-src, bpf-linker), if missing.
    Setup,
    /// Install what is missing, build in release mode and run the exporter (as root).
    Run(run::Options),
    /// Install what is missing and run every check: format, lints, unit and privileged tests.
    Test(test::Options),
    /// Install what is missing and measure port-monitor's overhead against a baseline and peers.
    Bench(bench::Options),
    /// Write deploy/kubernetes/prometheusrule.yaml and the Helm chart's copy of the alerting
    /// rules from the rules file.
    Rules,
    /// Build the container image (static binary, FROM scratch) with buildah and check it.
    Image,
    /// Lint and render the Helm chart into target/helm, validate it, and compare its defaults
    /// with the kustomize base.
    Helm,
    /// Type-check the Grafana dashboards and rebuild their JSON.
    Dashboards,
    /// Run every fuzz target for a bounded time, keeping each one's corpus.
    Fuzz(fuzz::Options),
    /// Record port exhaustion in a test namespace and photograph Prometheus's graph of it.
    Screenshot,
    /// Run `port-monitor top` on three test namespaces in tmux and write its screen to
    /// docs/top.txt.
    TopCapture,
    /// Run a command in another kernel under qemu, on this machine's files (run it as root).
    Vm(vm::Options),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::install(setup::Purpose::Test),
        Task::Run(options) => run::run(&options),
        Task::Test(options) => test::run(&options),
        Task::Bench(options) => bench::run(&options),
        Task::Rules => rules::write().and_then(|()| helm::write_rules()),
        Task::Dashboards => dashboards::build(),
        Task::Screenshot => screenshot::take(),
        Task::TopCapture => top_capture::capture(),
        Task::Fuzz(options) => fuzz::run(&options),
        Task::Vm(options) => vm::command(&options),
        Task::Image => {
            setup::install(setup::Purpose::Test)?;
            image::build()
        }
        Task::Helm => {
            setup::install(setup::Purpose::Test)?;
            helm::check()
        }
    }
}
