//! What the privileged tests share: privileges, namespaces, the exporter process, scrapes.

pub mod exporter;
pub mod metrics;
pub mod netns;
pub mod routed;
pub mod sockets;
pub mod ss;
pub mod tmux;

pub use exporter::Exporter;
pub use metrics::Metrics;
pub use netns::TestNetns;
pub use ss::SsTruth;
pub use tmux::Tmux;

/// How much longer than on this machine a bounded wait may take: the kernel matrix runs the
/// tests in emulated guests (qemu without KVM), many times slower, and sets
/// `PORT_MONITOR_TEST_TIME_SCALE`. A deadline only bounds how long a test waits for a
/// property; it is never the property.
#[must_use]
pub fn time_scale() -> u32 {
    std::env::var("PORT_MONITOR_TEST_TIME_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Whether this test can run. Without root it prints why and skips, unless `CI=true`, where
/// a skipped privileged test would make a green run meaningless: then it fails.
#[must_use]
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let message = format!("{test}: needs root (real eBPF programs and network namespaces)");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message}; CI=true forbids skipping"
    );
    eprintln!("SKIPPED {message}");
    false
}
