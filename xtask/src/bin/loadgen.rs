//! Connection load for benchmarks: a tight loop of TCP connect + accept + close on loopback,
//! the workload port-monitor must not slow down. Prints cycles per second.
//!
//! Usage: `loadgen SECONDS fin|rst`. `fin`: the client closes first, as real clients do, and
//! its side enters `TIME_WAIT`. `rst`: the client aborts (`SO_LINGER` 0), so no `TIME_WAIT` builds
//! up and cycles are shorter, which makes a per-hook cost weigh more. Loopback only, by
//! construction: it connects to the listener it opened itself on 127.0.0.1.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(3.0);
    let abort = args.next().as_deref() == Some("rst");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let address = listener.local_addr()?;
    let duration = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut cycles: u64 = 0;
    while started.elapsed() < duration {
        // 64 cycles between clock reads keeps the timing out of the measured loop.
        for _ in 0..64 {
            let client = TcpStream::connect(address)?;
            let (server, _) = listener.accept()?;
            if abort {
                set_linger_zero(&client)?;
            }
            drop(client);
            drop(server);
        }
        cycles += 64;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "cycle counts stay far below 2^53"
    )]
    let rate = cycles as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0}");
    Ok(())
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
