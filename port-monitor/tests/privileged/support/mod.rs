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
