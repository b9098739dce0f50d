//! Connection load for benchmarks: a tight loop on loopback, the workload port-monitor must
//! not slow down. Prints cycles per second, then the number of cycles.
//!
//! Usage: `loadgen SECONDS fin|rst|udp|refused`.
//! - `fin`: TCP connect + accept + close, the client closing first as real clients do: its
//!   side enters `TIME_WAIT`.
//! - `rst`: the same, the client aborting (`SO_LINGER` 0): no `TIME_WAIT` builds up and
//!   cycles are shorter, which makes a per-hook cost weigh more.
//! - `udp`: a UDP socket connected to a local receiver (the kernel picks its port: autobind),
//!   one datagram sent, closed.
//! - `refused`: a TCP connect to a closed port, refused at once: every cycle is a failed
//!   connect, which port-monitor sends a record for.
//!
//! Loopback only, by construction: it connects to sockets it opened itself on 127.0.0.1.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fin,
    Rst,
    Udp,
    Refused,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(3.0);
    let mode = match args.next().as_deref() {
        Some("fin") | None => Mode::Fin,
        Some("rst") => Mode::Rst,
        Some("udp") => Mode::Udp,
        Some("refused") => Mode::Refused,
        Some(other) => {
            return Err(std::io::Error::other(format!(
                "unknown mode {other}: fin, rst, udp or refused"
            )));
        }
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let (tcp_address, udp_address) = (listener.local_addr()?, receiver.local_addr()?);
    let closed = closed_port()?;
    let duration = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut cycles: u64 = 0;
    while started.elapsed() < duration {
        // 64 cycles between clock reads keeps the timing out of the measured loop.
        for _ in 0..64 {
            match mode {
                Mode::Fin | Mode::Rst => tcp_cycle(&listener, tcp_address, mode == Mode::Rst)?,
                Mode::Udp => udp_cycle(udp_address)?,
                Mode::Refused => {
                    if TcpStream::connect(closed).is_ok() {
                        return Err(std::io::Error::other("the closed port accepted"));
                    }
                }
            }
        }
        cycles += 64;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "cycle counts stay far below 2^53"
    )]
    let rate = cycles as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0} {cycles}");
    Ok(())
}

fn tcp_cycle(listener: &TcpListener, address: SocketAddr, abort: bool) -> std::io::Result<()> {
    let client = TcpStream::connect(address)?;
    let (server, _) = listener.accept()?;
    if abort {
        set_linger_zero(&client)?;
    }
    drop(client);
    drop(server);
    Ok(())
}

fn udp_cycle(receiver: SocketAddr) -> std::io::Result<()> {
    // Unbound: connect() picks the port (autobind), as a client's first call does.
    let socket = unbound_udp()?;
    socket.connect(receiver)?;
    socket.send(b"x")?;
    Ok(())
}

/// A UDP socket without a port (the standard library only makes bound ones).
fn unbound_udp() -> std::io::Result<UdpSocket> {
    // SAFETY: plain socket creation; the descriptor is owned by the returned socket.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// `SO_LINGER` with a zero timeout: `close()` sends RST and frees the socket at once.
fn set_linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
