//! Network namespaces: finding every one on the node and running code inside one.

mod discover;
mod netstat;

pub use discover::{Netns, discover};
pub use netstat::read_tcp_tuning;

use std::{fs::File, io, os::fd::AsFd as _, os::unix::fs::MetadataExt as _, path::Path};

use nix::sched::{CloneFlags, setns};

use crate::model::{NetnsId, PortConfig, TimeWaitReuse, ports};

/// Why a namespace could not be entered or read.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("{path} now refers to namespace {found}, not {expected}: it was replaced")]
    Replaced {
        path: String,
        expected: NetnsId,
        found: u64,
    },
    #[error("entering namespace {netns}: {source}")]
    Enter { netns: NetnsId, source: nix::Error },
    #[error("reading {sysctl}: {source}")]
    ReadSysctl {
        sysctl: &'static str,
        source: io::Error,
    },
    #[error("parsing {sysctl}: {source}")]
    ParseSysctl {
        sysctl: &'static str,
        source: ports::ParseError,
    },
    #[error("the thread that entered namespace {0} panicked")]
    ThreadPanicked(NetnsId),
    #[error("starting a thread: {0}")]
    Spawn(io::Error),
}

/// Runs `work` on a new thread inside the namespace and returns its result.
///
/// `setns` changes the namespace of the calling thread only. Doing it on a throwaway thread
/// means no thread of the daemon ever has to find its way back, and a failure cannot leave
/// one stranded in the wrong namespace. File descriptors opened inside (a netlink socket)
/// stay bound to the namespace after the thread ends.
///
/// # Errors
/// When the namespace cannot be opened or entered.
pub fn run_in<T, F>(netns: &Netns, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = open(netns)?;
    let id = netns.id;
    let thread = std::thread::Builder::new()
        .name(format!("netns-{id}"))
        .spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { netns: id, source })?;
            Ok(work())
        })
        .map_err(NetnsError::Spawn)?;
    thread.join().map_err(|_| NetnsError::ThreadPanicked(id))?
}

/// Opens the namespace and checks it is still the one discovery found: a pid can be reused
/// and a name re-bound between discovery and now.
fn open(netns: &Netns) -> Result<File, NetnsError> {
    let path = netns.path.display().to_string();
    let file = File::open(&netns.path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    let found = file
        .metadata()
        .map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?
        .ino();
    if found != u64::from(netns.id) {
        return Err(NetnsError::Replaced {
            path,
            expected: netns.id,
            found,
        });
    }
    Ok(file)
}

const PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";
const TW_REUSE: &str = "net.ipv4.tcp_tw_reuse";
const TIMESTAMPS: &str = "net.ipv4.tcp_timestamps";
/// Linux >= 6.13 only; before, the delay is 1 s.
const TW_REUSE_DELAY: &str = "net.ipv4.tcp_tw_reuse_delay";

/// Reads the port sysctls of the calling thread's namespace: `/proc/sys/net` shows the
/// namespace of the task that opens it.
///
/// # Errors
/// When a sysctl cannot be read or understood.
pub fn read_port_config() -> Result<PortConfig, NetnsError> {
    let read = |sysctl: &'static str| {
        let path = Path::new("/proc/sys").join(sysctl.replace('.', "/"));
        std::fs::read_to_string(path).map_err(|source| NetnsError::ReadSysctl { sysctl, source })
    };
    let ephemeral =
        ports::parse_port_range(&read(PORT_RANGE)?).map_err(|source| NetnsError::ParseSysctl {
            sysctl: PORT_RANGE,
            source,
        })?;
    let reserved = ports::parse_reserved_ports(&read(RESERVED_PORTS)?).map_err(|source| {
        NetnsError::ParseSysctl {
            sysctl: RESERVED_PORTS,
            source,
        }
    })?;
    // The TIME_WAIT reuse settings refine headroom; where one cannot be read (an older
    // kernel without it) the kernel's default stands.
    let number = |sysctl: &'static str| read(sysctl).ok()?.trim().parse::<u32>().ok();
    let defaults = TimeWaitReuse::default();
    let time_wait_reuse = TimeWaitReuse {
        mode: number(TW_REUSE)
            .and_then(|mode| u8::try_from(mode).ok())
            .unwrap_or(defaults.mode),
        timestamps: number(TIMESTAMPS).map_or(defaults.timestamps, |on| on != 0),
        delay: number(TW_REUSE_DELAY).map_or(defaults.delay, |ms| {
            std::time::Duration::from_millis(u64::from(ms))
        }),
    };
    Ok(PortConfig {
        ephemeral,
        reserved,
        time_wait_reuse,
    })
}
