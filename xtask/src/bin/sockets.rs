//! Socket population for the scrape benchmark: opens about `COUNT` TCP sockets on loopback in
//! the network namespace it runs in, of the kinds a busy node has, then holds them until its
//! standard input closes.
//!
//! Usage: `sockets COUNT`, or `sockets idle`: one listener on port 8080, as an idle pod has,
//! for the series benchmark. Established connections (both ends) make up to two fifths of the
//! sockets, as many as the descriptor limit allows (this machine's hard limit is 20,000 and
//! cannot be raised without `CAP_SYS_RESOURCE`); the rest is `TIME_WAIT` (client closes
//! first), which holds no descriptor, made by every core at once, and 32 listeners. Prints `ready LISTEN ESTABLISHED TIME_WAIT` once they exist. `TIME_WAIT`
//! sockets live 60 s: measure within that. Loopback only, by construction: every connection
//! goes to a listener this process opened on 127.0.0.1.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
};

/// Listeners the connections spread over: with several destination ports, a source port can
/// be reused once per destination, so more `TIME_WAIT` fit in one port range (a million need
/// at least 16 of 64k ports; 32 leave room).
const LISTENERS: u16 = 32;
const FIRST_PORT: u16 = 20_000;

fn main() -> std::io::Result<()> {
    let argument = std::env::args().nth(1);
    if argument.as_deref() == Some("idle") {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080))?;
        println!("ready 1 0 0");
        std::io::stdout().flush()?;
        std::io::stdin().read_to_end(&mut Vec::new())?;
        drop(listener);
        return Ok(());
    }
    let count: usize = argument
        .and_then(|arg| arg.parse().ok())
        .ok_or_else(|| std::io::Error::other("usage: sockets COUNT | sockets idle"))?;
    let descriptors = raise_file_limit()?;
    let listeners = (0..LISTENERS)
        .map(|offset| TcpListener::bind((Ipv4Addr::LOCALHOST, FIRST_PORT + offset)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addresses: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<_>>()?;
    // Two descriptors a connection, and some room for the rest of the process.
    let connections = (count / 5).min(descriptors.saturating_sub(100) / 2);
    let time_wait = count.saturating_sub(2 * connections + listeners.len());

    let mut held = Vec::with_capacity(2 * connections);
    for index in 0..connections {
        let listener = &listeners[index % listeners.len()];
        let client = TcpStream::connect(addresses[index % addresses.len()])?;
        let (server, _) = listener.accept()?;
        held.push((client, server));
    }
    // TIME_WAIT lives 60 s: a million of them must be made faster than that, so every core
    // makes its share, each on listeners of its own.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (listeners, addresses) = (&listeners, &addresses);
                let share = time_wait / threads + usize::from(thread < time_wait % threads);
                scope.spawn(move || -> std::io::Result<()> {
                    let mine: Vec<usize> = (thread..listeners.len()).step_by(threads).collect();
                    for index in 0..share {
                        let which = mine[index % mine.len()];
                        let client = TcpStream::connect(addresses[which])?;
                        let (server, _) = listeners[which].accept()?;
                        // The client closes first, so its end waits in TIME_WAIT; the
                        // server's end is gone once it closes too.
                        drop(client);
                        drop(server);
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a worker panicked")))
        })
    })?;
    println!("ready {} {} {time_wait}", listeners.len(), 2 * held.len());
    std::io::stdout().flush()?;
    // Hold everything until the benchmark closes our standard input.
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    Ok(())
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_file_limit() -> std::io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a correctly sized value, read then written.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}
