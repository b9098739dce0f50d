//! Sockets the standard library cannot make.

use std::{net::SocketAddr, os::fd::OwnedFd};

use nix::{
    errno::Errno,
    sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, socket},
};

/// A TCP socket bound to `address` (no `SO_REUSEADDR`) that neither listens nor connects.
pub fn tcp_bind(address: SocketAddr) -> Result<OwnedFd, Errno> {
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let socket = socket(family, SockType::Stream, SockFlag::empty(), None)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&socket),
        &SockaddrStorage::from(address),
    )?;
    Ok(socket)
}

/// A UDP socket without a port: the kernel gives it one on its first send or connect.
pub fn unbound_udp() -> Result<std::net::UdpSocket, Errno> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::empty(),
        None,
    )?;
    Ok(std::net::UdpSocket::from(fd))
}

/// Runs the daemon as root but without the capabilities in `drop` (setpriv names, e.g.
/// `"bpf,perfmon"`), which are taken out of the bounding set.
pub fn run_without(drop: &str, args: &[&str]) -> std::process::Output {
    let bounding_set: String = drop
        .split(',')
        .map(|cap| format!("-{cap}"))
        .collect::<Vec<_>>()
        .join(",");
    std::process::Command::new("setpriv")
        .arg(format!("--bounding-set={bounding_set}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_port-monitor"))
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}
