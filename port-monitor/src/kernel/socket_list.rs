//! The `iter/tcp` program (`probes/socket_list.rs`) as the snapshot uses it: for each
//! namespace, an iterator opened from inside it lists its TCP sockets as [`ListedSocket`]
//! records, read like a file.

use std::{
    fs::File,
    io::Read as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aya::{Ebpf, programs::Iter};
use port_monitor_common::socket_list::{LISTED_SOCKET_SIZE, ListedSocket, TCP_LISTER};

/// Why a namespace's TCP sockets could not be listed with the iterator.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("the eBPF object has no iterator program {TCP_LISTER} (build mismatch)")]
    NoProgram,
    #[error("opening the TCP socket iterator: {0}")]
    Open(String),
    #[error("reading the TCP socket iterator: {0}")]
    Read(#[from] std::io::Error),
}

/// Opens TCP socket iterators for the snapshot thread. Cloning shares the loaded program.
#[derive(Clone)]
pub struct TcpLister {
    ebpf: Arc<Mutex<Ebpf>>,
    /// Jiffies a second on this kernel (`CONFIG_HZ`): `TIME_WAIT` timers are in jiffies.
    hz: u64,
    /// `sock_diag` can list the bound-but-idle TCP sockets the iterator cannot see (Linux
    /// 6.7+).
    diag_lists_idle: bool,
}

impl TcpLister {
    pub(super) fn new(ebpf: Arc<Mutex<Ebpf>>, hz: u64, diag_lists_idle: bool) -> Self {
        Self {
            ebpf,
            hz,
            diag_lists_idle,
        }
    }

    /// Whether `sock_diag` lists the bound-but-idle TCP sockets (Linux 6.7+), which live only
    /// in the bind hash, where the iterator does not look.
    #[must_use]
    pub const fn diag_lists_idle(&self) -> bool {
        self.diag_lists_idle
    }

    /// Opens an iterator over the TCP sockets of the calling thread's network namespace (the
    /// kernel takes the namespace when the iterator is made). It can be read from any thread.
    ///
    /// # Errors
    /// When the kernel refuses to make the iterator.
    pub fn open(&self) -> Result<File, ListError> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(PoisonError::into_inner);
        let program: &mut Iter = ebpf
            .program_mut(TCP_LISTER)
            .and_then(|program| program.try_into().ok())
            .ok_or(ListError::NoProgram)?;
        let link = program
            .attach()
            .and_then(|id| program.take_link(id))
            .map_err(|error| ListError::Open(error.to_string()))?;
        // The iterator keeps the link alive; dropping ours detaches nothing it needs.
        link.into_file()
            .map_err(|error| ListError::Open(error.to_string()))
    }

    /// How long a `TIME_WAIT` socket has left, from the jiffies the program read (as the
    /// kernel's `jiffies_delta_to_msecs` makes it for `sock_diag`: none when due).
    #[must_use]
    pub fn remaining(&self, jiffies: i32) -> Duration {
        let jiffies = u64::try_from(jiffies).unwrap_or(0);
        Duration::from_millis(jiffies.saturating_mul(1000) / self.hz.max(1))
    }

    /// Jiffies a second on this kernel.
    #[must_use]
    pub const fn hz(&self) -> u64 {
        self.hz
    }
}

/// Calls `each` with every socket of an opened iterator; returns the kernel's jiffies when
/// the listing began (its clock record), if the kernel wrote one.
///
/// # Errors
/// When a read fails (the kernel stops an iterator it cannot continue with an error).
pub fn read_all(
    mut file: File,
    mut each: impl FnMut(&ListedSocket),
) -> Result<Option<u32>, ListError> {
    let mut clock = None;
    // The kernel fills a read with whole records, but a buffer that is not a multiple of
    // their size could end inside one: the tail waits for the next read.
    let mut buffer = vec![0; 64 * 1024];
    let mut kept = 0;
    loop {
        let read = match file.read(&mut buffer[kept..]) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        if read == 0 {
            return Ok(clock);
        }
        let filled = kept + read;
        let mut records = buffer[..filled].chunks_exact(LISTED_SOCKET_SIZE);
        for record in &mut records {
            if let Ok(record) = <&[u8; LISTED_SOCKET_SIZE]>::try_from(record) {
                let record = ListedSocket::from_bytes(record);
                if record.is_clock() {
                    clock = Some(record.expires_at);
                } else {
                    each(&record);
                }
            }
        }
        kept = records.remainder().len();
        buffer.copy_within(filled - kept..filled, 0);
    }
}

/// Jiffies a second on the running kernel: the resolution of the coarse clocks is one tick
/// (`TICK_NSEC`, 10^9 / `CONFIG_HZ` rounded), which `clock_getres` reports.
///
/// # Errors
/// When the clock is unknown or its resolution is not one tick of a plausible `HZ`.
pub fn kernel_hz() -> std::io::Result<u64> {
    let mut resolution = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `resolution`.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut resolution) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let nanoseconds = u64::try_from(resolution.tv_nsec).unwrap_or(0);
    match (resolution.tv_sec, nanoseconds) {
        // HZ from 24 to 10000: every value Linux offers is in there.
        (0, 100_000..=41_666_667) => Ok((1_000_000_000 + nanoseconds / 2) / nanoseconds),
        _ => Err(std::io::Error::other(format!(
            "the coarse clock's resolution ({}.{:09} s) is not a kernel tick",
            resolution.tv_sec, resolution.tv_nsec
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_kernel_tick_rate() {
        let hz = kernel_hz().expect("the coarse clock ticks");
        assert!([100, 250, 300, 1000].contains(&hz), "HZ {hz}");
    }
}
