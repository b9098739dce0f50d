//! Load for benchmarks: a tight loop, the workload port-monitor must not slow down. Prints
//! cycles per second, the number of cycles, and the rate of the fastest tenth of its 50 ms
//! windows (see [`WINDOW`]).
//!
//! Usage: `loadgen SECONDS fin|rst|udp|refused|syscall [CPU]`.
//! - `fin`: TCP connect + accept + close, the client closing first as real clients do: its
//!   side enters `TIME_WAIT`.
//! - `rst`: the same, the client aborting (`SO_LINGER` 0): no `TIME_WAIT` builds up and
//!   cycles are shorter, which makes a per-hook cost weigh more.
//! - `udp`: a UDP socket connected to a local receiver (the kernel picks its port: autobind),
//!   one datagram sent, closed.
//! - `refused`: a TCP connect to a closed port, refused at once: every cycle is a failed
//!   connect, which port-monitor sends a record for.
//! - `syscall`: `getppid()` and a 1-byte `read()` of `/dev/zero`, pinned to one CPU (`CPU`,
//!   0 when not given) at a raised priority, nothing network-related: the cost a syscall
//!   tracepoint puts on every syscall of every process on the node, whatever the syscall.
//!   Once any syscall tracepoint has a program, the kernel sends every thread's syscalls
//!   through its slower traced entry and exit; two cheap syscalls make that fixed cost weigh
//!   most. Pinned, so that the scheduler moving it between cores does not add noise larger
//!   than the effect.
//!
//! Loopback only, by construction: it connects to sockets it opened itself on 127.0.0.1.

use std::{
    fs::File,
    io::Read as _,
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
    Syscall,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(3.0);
    let mode = match args.next().as_deref() {
        Some("fin") | None => Mode::Fin,
        Some("rst") => Mode::Rst,
        Some("udp") => Mode::Udp,
        Some("refused") => Mode::Refused,
        Some("syscall") => Mode::Syscall,
        Some(other) => {
            return Err(std::io::Error::other(format!(
                "unknown mode {other}: fin, rst, udp, refused or syscall"
            )));
        }
    };
    let duration = Duration::from_secs_f64(seconds);
    // Each mode makes only what its cycle uses, before the clock starts.
    let run = match mode {
        Mode::Fin | Mode::Rst => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let address = listener.local_addr()?;
            timed(duration, || {
                tcp_cycle(&listener, address, mode == Mode::Rst)
            })?
        }
        Mode::Udp => {
            let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            let address = receiver.local_addr()?;
            timed(duration, || udp_cycle(address))?
        }
        Mode::Refused => {
            let closed = closed_port()?;
            timed(duration, || {
                if TcpStream::connect(closed).is_ok() {
                    return Err(std::io::Error::other("the closed port accepted"));
                }
                Ok(())
            })?
        }
        Mode::Syscall => {
            let cpu = match args.next() {
                Some(cpu) => cpu
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("not a CPU number: {cpu}")))?,
                None => 0,
            };
            pin_to(cpu)?;
            ahead_of_others();
            let mut zero = File::open("/dev/zero")?;
            timed(duration, || syscall_cycle(&mut zero))?
        }
    };
    println!("{:.0} {} {:.0}", run.rate, run.cycles, run.top_rate);
    Ok(())
}

/// What one run of the loop did.
struct Run {
    /// Cycles per second of wall-clock time.
    rate: f64,
    cycles: u64,
    /// The mean rate of the fastest tenth of the run's [`WINDOW`]s.
    top_rate: f64,
}

/// The run is also cut into windows of this length, each with its own rate: on this
/// project's machines (virtual machines, and the emulated guests in them) a loop's rate swings
/// by a third from one window to the next with nothing else running, as the machine under
/// them gives and takes CPU; the fastest windows are those it ran unhindered, and their rate
/// varies ~2 % from run to run, where the whole run's varies 5-15 %. A fixed cost added to
/// every cycle (a syscall's traced path) is in every window, the fastest ones too.
const WINDOW: Duration = Duration::from_millis(50);

/// Runs `cycle` for `duration`.
fn timed(
    duration: Duration,
    mut cycle: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<Run> {
    let started = Instant::now();
    let mut cycles: u64 = 0;
    let mut windows: Vec<f64> = Vec::new();
    let (mut window_start, mut window_cycles) = (started, 0_u32);
    loop {
        // 64 cycles between clock reads keeps the timing out of the measured loop.
        for _ in 0..64 {
            cycle()?;
        }
        cycles += 64;
        window_cycles += 64;
        let now = Instant::now();
        let window = now - window_start;
        if window >= WINDOW {
            windows.push(f64::from(window_cycles) / window.as_secs_f64());
            (window_start, window_cycles) = (now, 0);
        }
        if now - started >= duration {
            break;
        }
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "cycle counts stay far below 2^53"
    )]
    let count = cycles as f64;
    let rate = count / started.elapsed().as_secs_f64();
    if windows.is_empty() {
        // A run shorter than a window is its own window.
        windows.push(rate);
    }
    Ok(Run {
        rate,
        cycles,
        top_rate: top_tenth(windows),
    })
}

/// The mean of the largest tenth of `values` (at least one of them).
fn top_tenth(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| b.total_cmp(a));
    let top = &values[..values.len().div_ceil(10)];
    #[expect(
        clippy::cast_precision_loss,
        reason = "a handful of windows, far below 2^53"
    )]
    let count = top.len().max(1) as f64;
    top.iter().sum::<f64>() / count
}

/// Two of the cheapest syscalls there are: what is left is mostly the syscall's entry and
/// exit, which is what a syscall tracepoint slows down.
fn syscall_cycle(zero: &mut File) -> std::io::Result<()> {
    // SAFETY: getppid has no arguments and cannot fail. The C library does not cache it, so
    // each call enters the kernel.
    let parent = unsafe { libc::getppid() };
    let mut byte = [0_u8; 1];
    let read = zero.read(&mut byte)?;
    if read != 1 || parent < 0 {
        return Err(std::io::Error::other("/dev/zero gave no byte"));
    }
    Ok(())
}

/// Puts this process ahead of others' work on its CPU (`nice` -10, ~10 times the weight of a
/// default process), when allowed (as root): a compiler sharing the core would otherwise
/// take it for whole windows of the measurement. Only the windows it still takes away, and
/// what runs on the other core, remain.
fn ahead_of_others() {
    // SAFETY: setpriority takes plain integers; 0 is this process. Failure leaves the
    // priority as it was, which only makes the measurement noisier.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
}

/// Keeps this process on `cpu` alone.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    if cpu >= usize::try_from(libc::CPU_SETSIZE).unwrap_or(0) {
        return Err(std::io::Error::other(format!("no CPU {cpu}")));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`, bounds-checked against its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread (the process has only one); `set` is a valid, sized set.
    let result =
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        )))
    }
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
