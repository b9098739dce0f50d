//! The commands run by hand on a node in trouble: `status`, one look at every namespace, and
//! `top`, the same refreshed live. They take their own snapshot (socket tables and sysctls,
//! no kernel programs), so they work with or without a daemon; when one answers on the
//! node, its counters of failed calls and anomalies are shown beside the snapshot.

mod daemon;
mod namespace;
mod render;
mod status;
mod top;

use std::io::Write as _;

use anyhow::{Context as _, Result, bail};
use caps::{CapSet, Capability};

pub use self::{
    namespace::NamespaceStatus,
    status::{Gatherer, NodeStatus},
};
use crate::{
    config::{ConfigFile, DaemonAccess, Flags, Output, StatusArgs, TopArgs},
    snapshot::Sources,
};

/// `port-monitor status`: one snapshot, printed.
///
/// # Errors
/// When a needed capability or the configuration file is missing, or stdout fails.
pub fn status(flags: &Flags, args: &StatusArgs) -> Result<()> {
    let node = gatherer(flags, &args.daemon)?.gather();
    let text = match args.output {
        Output::Text => render::text(&node),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(&node).context("writing JSON")?;
            json.push('\n');
            json
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `status | head` closes the pipe early: not a failure.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("writing to stdout")
        }
        _ => Ok(()),
    }
}

/// `port-monitor top`: the same, refreshed until q.
///
/// # Errors
/// When a needed capability or the configuration file is missing, or the terminal fails.
pub fn top(flags: &Flags, args: &TopArgs) -> Result<()> {
    top::run(gatherer(flags, &args.daemon)?, args.refresh_interval)
}

/// Capabilities reading every namespace needs: a missing one would leave the screen empty.
const NEEDED: [(Capability, &str); 2] = [
    (Capability::CAP_SYS_ADMIN, "enter each network namespace"),
    (
        Capability::CAP_SYS_PTRACE,
        "open other processes' /proc/<pid>/ns/net",
    ),
];

fn gatherer(flags: &Flags, access: &DaemonAccess) -> Result<Gatherer> {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(capability, _)| !effective.contains(capability))
        .map(|(capability, why)| format!("{capability} ({why})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing capabilities {}: run it as root (sudo port-monitor ...), or in the \
             port-monitor pod of the node (kubectl -n port-monitor exec <pod> -- \
             /port-monitor status)",
            missing.join(", ")
        );
    }
    let file = ConfigFile::load(flags.config_file.as_deref())
        .context("invalid configuration file (--config.file)")?;
    let conntrack_skipped = if flags.no_conntrack {
        Some("--no-collector.conntrack")
    } else if !effective.contains(&Capability::CAP_NET_ADMIN) {
        Some("reading them needs CAP_NET_ADMIN")
    } else {
        None
    };
    let sources = Sources {
        proc: flags.procfs.clone(),
        // Without the kernel programs, bound idle sockets are counted where the socket
        // tables list them (Linux 6.7 and later), as `ss` shows them.
        bound_sockets: None,
        conntrack: conntrack_skipped.is_none(),
        // The programs are not loaded: `sock_diag`, as `ss` lists them.
        tcp_lister: None,
    };
    Ok(Gatherer::new(
        sources,
        file.settings(),
        conntrack_skipped,
        daemon::Daemon::new(flags, access),
    ))
}
