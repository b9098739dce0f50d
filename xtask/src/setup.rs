//! Installs what building, running and testing port-monitor need, and nothing that is already
//! there: a second run only checks.

use anyhow::{Result, bail};

use crate::cmd;

/// What the caller is about to do, which decides what must be present.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Build and run the exporter.
    Run,
    /// Build the exporter and run every test.
    Test,
    /// Build the exporter and benchmark it beside its peers.
    Bench,
}

/// The LLVM that bpf-linker links against. bpf-linker's default (LLVM 23) is not packaged for
/// this Debian release; LLVM 22 is, in bookworm-security.
const LLVM_MAJOR: &str = "22";

/// Debian packages needed to build (bpf-linker needs LLVM's development files).
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];

/// Debian packages the benchmarks use: `ip` for their namespaces, the peers measured beside
/// port-monitor (bpftrace, bcc's `tcpstates` with kernel headers to compile against,
/// `node_exporter`), `curl` to time scrapes, gnuplot for the plot, and `iptables` and
/// `conntrack` to fill a conntrack table and time `conntrack -L` beside port-monitor's read.
const BENCH_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "conntrack",
    "bpftrace",
    "bpfcc-tools",
    "linux-headers-amd64",
    "prometheus-node-exporter",
    "curl",
    "gnuplot-nox",
];

/// Debian packages the tests use: `ip` and `ss` (namespaces and ground truth), `bpftool`
/// (nothing left attached after shutdown), `promtool` (exposition format, alerting rules),
/// `kubectl` (kustomize; from the cloud-sdk repository this machine kind has), `buildah`
/// (the container image), `curl` and `openssl` (TLS and basic auth) and `slowhttptest`
/// (the endpoint under abuse), `iptables` (a NAT between test namespaces), `conntrack`
/// (what the kernel's conntrack says, to compare with) and `tmux` (a terminal that drives
/// `port-monitor top` as a person would, and captures its screen for docs/top.txt).
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "conntrack",
    "bpftool",
    "prometheus",
    "kubectl",
    "buildah",
    "curl",
    "openssl",
    "slowhttptest",
    "tmux",
];

/// Python packages the tests use, pinned, installed into a virtual environment of the
/// project's own (`target/tools/venv`) so that nothing outside the checkout changes: the
/// Kubernetes schema validator, checkov, and the Helm SDK (Helm's Go SDK as a library, no
/// helm binary), which lints and renders the chart (`xtask/src/helm.py`).
const PYTHON_TOOLS: &[(&str, &str)] = &[
    ("kubernetes-validate", "1.37.0"),
    ("checkov", "3.3.30"),
    ("helm-python-sdk", "0.2.2"),
];

const VENV: &str = "target/tools/venv";

/// Debian packages that boot another kernel for the tests' kernel matrix and the benchmarks
/// ([`crate::vm`]): qemu, a static busybox for the guest's initramfs (a dynamic one would need
/// the host's libraries before the host's root is mounted), `modprobe`/`depmod` to list and
/// order the kernel's 9p, virtio and overlay modules, and `zstd`/`xz` to decompress the
/// kernel image and its modules. `apt-get` and `dpkg-deb`, which fetch the kernels, are
/// always there on Debian.
pub const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "zstd",
    "xz-utils",
];

pub fn install(purpose: Purpose) -> Result<()> {
    let mut packages = BUILD_PACKAGES.to_vec();
    match purpose {
        Purpose::Run => {}
        Purpose::Test => packages.extend_from_slice(TEST_PACKAGES),
        Purpose::Bench => packages.extend_from_slice(BENCH_PACKAGES),
    }
    if purpose != Purpose::Run {
        // The tests and the benchmarks both run in other kernels, under qemu.
        packages.extend_from_slice(VM_PACKAGES);
    }
    install_apt_packages(&packages)?;
    install_rust_src()?;
    install_bpf_linker()?;
    if purpose == Purpose::Test {
        install_python_tools()?;
        install_cargo_fuzz()?;
    }
    if purpose == Purpose::Bench {
        merge_kernel_headers()?;
    }
    Ok(())
}

/// Where bcc finds kernel headers (`BCC_KERNEL_SOURCE`).
pub const KERNEL_HEADERS: &str = "target/tools/kernel-headers";

/// bcc compiles its programs against kernel headers when it starts; this kernel ships none
/// (no package, no `CONFIG_IKHEADERS`). `tcpstates` on the `inet_sock_set_state` tracepoint
/// reads only the tracepoint's arguments, whose layout bcc takes from the running kernel's
/// tracefs, so Debian's headers of another kernel compile it correctly. Debian splits them
/// into a common tree and an architecture tree; bcc wants one: a tree of symbolic links
/// joining both.
fn merge_kernel_headers() -> Result<()> {
    let target = std::path::Path::new(KERNEL_HEADERS);
    if target.join("include/linux/kconfig.h").exists() {
        return Ok(());
    }
    let mut arch_trees: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/src")?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with("-amd64"))
        .collect();
    arch_trees.sort();
    let Some(arch) = arch_trees.pop() else {
        bail!("no /usr/src/linux-headers-*-amd64 after installing linux-headers-amd64");
    };
    let common = std::path::PathBuf::from(arch.to_string_lossy().replace("-amd64", "-common"));
    std::fs::create_dir_all(target)?;
    for tree in [&common, &arch] {
        cmd::run(
            cmd::command("cp")
                .args(["-rsf", "--"])
                .arg(tree.join("."))
                .arg(target),
        )?;
    }
    Ok(())
}

/// cargo-fuzz, pinned, for the fuzz targets (`cargo xtask fuzz`; the tests run them briefly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Installs cargo-fuzz when it is missing or another version.
///
/// # Errors
/// When `cargo install` fails.
pub fn install_cargo_fuzz() -> Result<()> {
    let installed = cmd::output(cmd::command("cargo-fuzz").arg("--version")).unwrap_or_default();
    if installed.contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    cmd::run(cmd::command("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// The path of an installed Python tool's command.
#[must_use]
pub fn python_tool(name: &str) -> String {
    format!("{VENV}/bin/{name}")
}

/// The version of a package installed in the virtual environment, as pip recorded it.
fn installed_python_package(name: &str) -> Option<String> {
    cmd::output(cmd::command(&python_tool("python")).args([
        "-c",
        "import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))",
        name,
    ]))
}

fn install_python_tools() -> Result<()> {
    let missing: Vec<String> = PYTHON_TOOLS
        .iter()
        .filter(|(name, version)| {
            installed_python_package(name).as_deref().map(str::trim) != Some(*version)
        })
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !std::path::Path::new(VENV).join("bin/pip").exists() {
        cmd::run(cmd::command("python3").args(["-m", "venv", VENV]))?;
    }
    cmd::run(
        cmd::command(&format!("{VENV}/bin/pip"))
            .args(["install", "--quiet"])
            .args(&missing),
    )
}

/// Installs Debian packages a single task needs, when missing.
///
/// # Errors
/// When apt-get fails or the caller is not root.
pub fn install_packages(packages: &[&str]) -> Result<()> {
    install_apt_packages(packages)
}

fn install_apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !is_apt_package_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    require_root(&format!(
        "install the Debian packages {}",
        missing.join(" ")
    ))?;
    cmd::run(
        cmd::command("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    cmd::run(
        cmd::command("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn is_apt_package_installed(package: &str) -> bool {
    cmd::output(cmd::command("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_some_and(|status| status.trim() == "installed")
}

/// The eBPF crate is built with `-Z build-std=core`, which needs the nightly's source.
fn install_rust_src() -> Result<()> {
    let installed = cmd::output(cmd::command("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(());
    }
    cmd::run(cmd::command("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn install_bpf_linker() -> Result<()> {
    if cmd::succeeds(cmd::command("bpf-linker").arg("--version")) {
        return Ok(());
    }
    let llvm_feature = format!("llvm-{LLVM_MAJOR}");
    cmd::run(
        cmd::command("cargo")
            .args(["install", "bpf-linker", "--locked", "--no-default-features"])
            .args(["--features", &llvm_feature])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")),
    )
}

/// Installing system packages needs root; say so before apt-get fails with a lock error.
///
/// # Errors
/// When the caller is not root.
pub fn require_root(action: &str) -> Result<()> {
    let uid = cmd::output(cmd::command("id").arg("-u")).unwrap_or_default();
    if uid.trim() != "0" {
        bail!("need root to {action}: run this command as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}
