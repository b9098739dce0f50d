//! TCP sockets whose port came from `bind()`: `connect()` skips those ports for every
//! destination. The kernel programs (`probes/bound_sockets.rs`) record each socket that
//! `bind()` gives a port from the moment they are attached, with who bound it; before 6.7,
//! where `sock_diag` does not list the idle ones, [`seed`] adds those bound before, found once
//! at start-up among the processes' open files.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use port_monitor_common::{FAMILY_INET, FAMILY_INET6, maps::BoundSocket};

/// The map of bound sockets, by socket cookie.
pub type BoundSocketMap = BpfHashMap<MapData, u64, BoundSocket>;

/// A handle on the bound sockets for the snapshot thread.
#[derive(Clone)]
pub struct BoundSocketReader {
    pub(super) map: Arc<Mutex<BoundSocketMap>>,
    /// The socket tables list every bound socket (Linux >= 6.7): what a complete snapshot
    /// does not list is gone, and no `sock_release` program removes it.
    pub(super) tables_list_them: bool,
}

/// The tracked sockets of one namespace, by socket cookie.
pub type Tracked = HashMap<u64, BoundSocket>;

impl BoundSocketReader {
    /// Every tracked socket, by network namespace cookie. Entries of sockets released while
    /// the map is read may be extra: [`Self::still_tracked`] tells after the dump.
    #[must_use]
    pub fn read(&self) -> HashMap<u64, Tracked> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut by_netns: HashMap<u64, Tracked> = HashMap::new();
        for (cookie, bound) in map.iter().filter_map(Result::ok) {
            by_netns
                .entry(bound.netns_cookie)
                .or_default()
                .insert(cookie, bound);
        }
        by_netns
    }

    /// Whether the socket tables list every bound socket, idle ones included.
    #[must_use]
    pub const fn tables_list_them(&self) -> bool {
        self.tables_list_them
    }

    /// Which of `cookies` are still tracked: a socket released since the map was read is
    /// not, so a dump that missed it because it was gone does not count it as bound.
    #[must_use]
    pub fn still_tracked<'a>(&self, cookies: impl Iterator<Item = &'a u64>) -> HashSet<u64> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        cookies
            .filter(|cookie| map.get(cookie, 0).is_ok())
            .copied()
            .collect()
    }

    /// Forgets sockets that a complete snapshot did not list: gone, where the tables list
    /// every bound socket. Returns how many were removed.
    pub fn forget(&self, gone: &HashSet<u64>) -> usize {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        gone.iter()
            .filter(|cookie| map.remove(cookie).is_ok())
            .count()
    }
}

/// Adds to `map` the TCP sockets of every process under `procfs` that are bound, idle and
/// were never connected or listening: the programs only see binds made after they attached.
/// Returns how many were added.
///
/// Each socket is borrowed with `pidfd_getfd` (a duplicate descriptor: the process's own is
/// untouched) and asked what it is. While the duplicate is held the socket cannot be
/// released, so one closed meanwhile is removed by the `sock_release` program when the
/// duplicate closes: no entry outlives its socket. Processes that end, or whose files cannot
/// be borrowed, are skipped.
pub fn seed(map: &mut BoundSocketMap, procfs: &Path) -> usize {
    let Ok(processes) = fs::read_dir(procfs) else {
        return 0;
    };
    let mut added = 0;
    for process in processes.filter_map(Result::ok) {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(pidfd) = pidfd_open(pid) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for entry in fds.filter_map(Result::ok) {
            let is_socket = fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            let fd = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok());
            if let (true, Some(fd)) = (is_socket, fd)
                && let Some(socket) = pidfd_getfd(&pidfd, fd)
                && let Some((cookie, bound)) = inspect(&socket)
                && map.insert(cookie, bound, 0).is_ok()
            {
                added += 1;
            }
        }
    }
    added
}

/// What a socket is, if a TCP socket bound to a port and never used since: state CLOSE and
/// not one segment sent (a connection that ended also leaves a socket in CLOSE, which may
/// have given its port back).
fn inspect(socket: &OwnedFd) -> Option<(u64, BoundSocket)> {
    let fd = socket.as_raw_fd();
    if getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? != libc::IPPROTO_TCP {
        return None;
    }
    let info = getsockopt::<libc::tcp_info>(fd, libc::IPPROTO_TCP, libc::TCP_INFO)?;
    if info.tcpi_state != TCP_CLOSE || info.tcpi_segs_out != 0 {
        return None;
    }
    let (family, addr, port) = local_address(fd)?;
    (port != 0).then(|| {
        let bound = BoundSocket {
            netns_cookie: getsockopt::<u64>(fd, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE)
                .unwrap_or(0),
            // Who bound it is not known any more: the file may have changed hands.
            cgroup_id: 0,
            addr,
            comm: [0; 16],
            tgid: 0,
            family,
            port,
        };
        getsockopt::<u64>(fd, libc::SOL_SOCKET, SO_COOKIE).map(|cookie| (cookie, bound))
    })?
}

/// `TCP_CLOSE` in `enum tcp_state` (`include/net/tcp_states.h`).
const TCP_CLOSE: u8 = 7;

/// `SO_COOKIE` (`include/uapi/asm-generic/socket.h`): the same cookie the kernel programs
/// read with `bpf_get_socket_cookie`.
const SO_COOKIE: libc::c_int = 57;

/// The local address of a socket: family, address bytes as the kernel programs store them,
/// port in host order.
fn local_address(fd: RawFd) -> Option<(u16, [u8; 16], u16)> {
    // SAFETY: zeroed sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = socklen::<libc::sockaddr_storage>()?;
    // SAFETY: the kernel writes at most `length` bytes into `storage`.
    let result = unsafe { libc::getsockname(fd, (&raw mut storage).cast(), &raw mut length) };
    if result != 0 {
        return None;
    }
    let mut addr = [0u8; 16];
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 = unsafe { &*(&raw const storage).cast::<libc::sockaddr_in>() };
            addr[..4].copy_from_slice(&v4.sin_addr.s_addr.to_ne_bytes());
            Some((FAMILY_INET, addr, u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe { &*(&raw const storage).cast::<libc::sockaddr_in6>() };
            addr = v6.sin6_addr.s6_addr;
            Some((FAMILY_INET6, addr, u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

fn socklen<T>() -> Option<libc::socklen_t> {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).ok()
}

/// A socket option of plain-data type `T`.
fn getsockopt<T: Copy>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut length = socklen::<T>()?;
    // SAFETY: the kernel writes at most `length` bytes into `value`, which is that large and
    // zeroed, so a shorter answer (an older kernel's tcp_info) leaves the rest zero.
    let result =
        unsafe { libc::getsockopt(fd, level, name, value.as_mut_ptr().cast(), &raw mut length) };
    // SAFETY: zero-initialised plain data, partly overwritten by the kernel.
    (result == 0).then(|| unsafe { value.assume_init() })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a plain system call; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    owned(fd)
}

/// A duplicate of descriptor `fd` of the process `pidfd` refers to (needs `CAP_SYS_PTRACE`
/// over it, Linux >= 5.6).
fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: a plain system call; the result is a new descriptor or -1.
    let duplicate = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    owned(duplicate)
}

fn owned(fd: libc::c_long) -> Option<OwnedFd> {
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    use super::*;

    fn bound_tcp() -> OwnedFd {
        // SAFETY: plain socket creation; the descriptor is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let socket = owned(libc::c_long::from(fd)).expect("socket");
        let address = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET"),
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in of its own size.
        let result = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const address).cast(),
                socklen::<libc::sockaddr_in>().expect("size"),
            )
        };
        assert_eq!(result, 0, "bind");
        socket
    }

    /// Needs no privilege: the test's own sockets.
    #[test]
    fn tells_a_bound_idle_socket_from_listeners_and_connections() {
        let idle = bound_tcp();
        let (_, bound) = inspect(&idle).expect("bound and idle");
        assert_eq!(bound.family, FAMILY_INET);
        assert_eq!(&bound.addr[..4], &[127, 0, 0, 1]);
        assert_ne!(bound.port, 0);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listener");
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        for other in [
            OwnedFd::from(listener.try_clone().expect("clone")),
            OwnedFd::from(client),
        ] {
            assert!(inspect(&other).is_none());
        }
    }
}
