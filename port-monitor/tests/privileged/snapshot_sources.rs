//! The snapshot's two ways of listing TCP sockets, the `iter/tcp` program and `sock_diag`,
//! give the same tally for every kind of socket, and the iterator's `TIME_WAIT` timers are the
//! kernel's. The library is called directly: both listings of one namespace, moments apart.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use nix::sys::socket::{SockaddrStorage, connect};
use port_monitor::{
    kernel::{
        BoundSocketReader, Collectors, ErrnoHook, Kernel, TcpLister, TcpStateHook, socket_list,
    },
    model::{NamespaceSnapshot, Protocol, TcpState},
    snapshot::{ConnectionMemory, Sources, snapshot_node, snapshot_node_with},
};

use crate::support::{TestNetns, privileged, sockets::tcp_bind};

/// `TCP_TIMEWAIT_LEN`: how long the kernel keeps a `TIME_WAIT` socket.
const TIME_WAIT_LENGTH: Duration = Duration::from_mins(1);

fn load_kernel() -> Kernel {
    let collectors = Collectors {
        tcp_state_hook: TcpStateHook::Auto,
        errno_hook: ErrnoHook::Fexit,
        bind: false,
        autobind: false,
    };
    let (kernel, _events) = Kernel::load(collectors, None).expect("the kernel programs load");
    kernel
}

/// What a snapshot reads: every namespace, conntrack left out, TCP listed by `tcp_lister`
/// (`None`: `sock_diag`), bound sockets told by `bound_sockets`.
fn sources(bound_sockets: Option<BoundSocketReader>, tcp_lister: Option<TcpLister>) -> Sources {
    Sources {
        proc: PathBuf::from("/proc"),
        bound_sockets,
        conntrack: false,
        tcp_lister,
    }
}

fn snapshot_of(netns: &TestNetns, sources: &Sources) -> NamespaceSnapshot {
    snapshot_node(sources)
        .namespaces
        .into_iter()
        .find(|namespace| namespace.netns == netns.id)
        .expect("the test namespace is snapshotted")
}

/// Every kind of TCP socket in one namespace: listeners (IPv4, IPv6), established
/// connections both ways, an IPv4-mapped one, `TIME_WAIT` on the closing side, `FIN_WAIT2`
/// (a `TIME_WAIT` socket in its substate) against `CLOSE_WAIT`, request sockets (`SYN_RECV`),
/// a socket bound and then connected, and one bound and left idle.
fn make_sockets(netns: &TestNetns) -> Vec<Box<dyn Send>> {
    netns.run(|| {
        let mut held: Vec<Box<dyn Send>> = Vec::new();
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen v4");
        let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("listen v6");
        let dual = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("listen dual");
        let (v4_at, v6_at, dual_at) = (
            v4.local_addr().expect("v4 address"),
            v6.local_addr().expect("v6 address"),
            dual.local_addr().expect("dual address"),
        );
        let mapped = SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), dual_at.port());
        for round in 0..6 {
            for (listener, to) in [(&v4, v4_at), (&v6, v6_at), (&dual, mapped)] {
                let client = TcpStream::connect(to).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                if round % 2 == 0 {
                    // The client closes first: its end goes to TIME_WAIT.
                    drop(client);
                    drop(server);
                } else {
                    held.push(Box::new((client, server)));
                }
            }
        }
        for _ in 0..2 {
            // The client closes, the server does not: the kernel keeps the client's end as a
            // TIME_WAIT socket in its FIN_WAIT2 substate, the server's in CLOSE_WAIT.
            let client = TcpStream::connect(v4_at).expect("connect");
            let (server, _) = v4.accept().expect("accept");
            drop(client);
            held.push(Box::new(server));
        }
        // A listener that accepts only once data arrives keeps a connection that sent none
        // as a request socket (SYN_RECV), its client established.
        let deferred = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen deferred");
        let seconds: nix::libc::c_int = 60;
        // SAFETY: sets an int option from a live int.
        let set = unsafe {
            nix::libc::setsockopt(
                deferred.as_raw_fd(),
                nix::libc::IPPROTO_TCP,
                nix::libc::TCP_DEFER_ACCEPT,
                (&raw const seconds).cast(),
                4,
            )
        };
        assert_eq!(set, 0, "TCP_DEFER_ACCEPT");
        for _ in 0..2 {
            held.push(Box::new(
                TcpStream::connect(deferred.local_addr().expect("address")).expect("connect"),
            ));
        }
        held.push(Box::new(deferred));
        let bound_then_connected =
            tcp_bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)).expect("bind");
        connect(
            bound_then_connected.as_raw_fd(),
            &SockaddrStorage::from(v4_at),
        )
        .expect("connect a bound socket");
        held.push(Box::new(v4.accept().expect("accept")));
        held.push(Box::new(bound_then_connected));
        held.push(Box::new(
            tcp_bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)).expect("bind idle"),
        ));
        held.extend([Box::new(v4) as Box<dyn Send>, Box::new(v6), Box::new(dual)]);
        held
    })
}

#[test]
fn privileged_iterator_and_sock_diag_list_the_same_sockets() {
    if !privileged("privileged_iterator_and_sock_diag_list_the_same_sockets") {
        return;
    }
    let kernel = load_kernel();
    let lister = kernel.tcp_lister();
    assert!(
        lister.is_some(),
        "every kernel of the matrix (5.9 and later) runs the iter/tcp program"
    );
    let netns = TestNetns::new("iter");
    // Reuse off: whether a TIME_WAIT port counts as reusable must not depend on the moment.
    netns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let _sockets = make_sockets(&netns);
    let tracked = |tcp_lister| sources(kernel.bound_sockets(), tcp_lister);
    let by_iterator = snapshot_of(&netns, &tracked(lister));
    let by_sock_diag = snapshot_of(&netns, &tracked(None));
    let tally = &by_iterator.sockets;
    // What was made, so that equality cannot come from two empty listings.
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::Listen), 4);
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::TimeWait), 9);
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::FinWait2), 2);
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::CloseWait), 2);
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::SynRecv), 2);
    // 9 pairs, the bound one's pair, and the deferred listener's two clients.
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::Established), 22);
    assert_eq!(tally.sockets(Protocol::Tcp, TcpState::BoundInactive), 1);
    assert_eq!(tally.bound_connections().0, 1, "bound, then connected");
    assert_eq!(by_iterator.sockets, by_sock_diag.sockets);
    // Without the bind programs: idle bound sockets only where sock_diag lists them (6.7+),
    // which the iterator's listing then asks it for.
    let untracked = |tcp_lister| sources(None, tcp_lister);
    let by_iterator = snapshot_of(&netns, &untracked(kernel.tcp_lister()));
    let by_sock_diag = snapshot_of(&netns, &untracked(None));
    assert_eq!(by_iterator.sockets, by_sock_diag.sockets);
}

#[test]
fn privileged_iterator_time_wait_timers_are_the_kernels() {
    if !privileged("privileged_iterator_time_wait_timers_are_the_kernels") {
        return;
    }
    let kernel = load_kernel();
    let lister = kernel.tcp_lister().expect("the iter/tcp program loads");
    let netns = TestNetns::new("iter-timer");
    let closed = Instant::now();
    let _listener = netns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        for _ in 0..3 {
            let client =
                TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
            let server = listener.accept().expect("accept");
            drop(client);
            drop(server);
        }
        listener
    });
    let iterator = netns.run(move || lister.open().expect("open the iterator"));
    let mut remaining = Vec::new();
    let lister = kernel.tcp_lister().expect("the iter/tcp program loads");
    socket_list::read_all(iterator, |socket| {
        if socket.state == 6 {
            remaining.push(lister.remaining(socket.expires_in));
        }
    })
    .expect("read the iterator");
    let elapsed = closed.elapsed();
    // Jiffies move in ticks (10 ms at HZ=100, the coarsest): two of rounding either way.
    let tick = Duration::from_millis(20);
    assert_eq!(remaining.len(), 3, "three TIME_WAIT sockets: {remaining:?}");
    for left in remaining {
        assert!(
            left + elapsed + tick >= TIME_WAIT_LENGTH && left <= TIME_WAIT_LENGTH + tick,
            "{left:?} left of a TIME_WAIT made at most {elapsed:?} ago"
        );
    }
}

/// Churn (`TIME_WAIT` sockets of connections the previous snapshot did not list) counts the
/// same by both listings, though the iterator's memory leaves out the `TIME_WAIT` sockets that
/// were already old.
#[test]
fn privileged_iterator_counts_churn_as_sock_diag_does() {
    if !privileged("privileged_iterator_counts_churn_as_sock_diag_does") {
        return;
    }
    let kernel = load_kernel();
    let netns = TestNetns::new("iter-churn");
    netns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let listener = netns.run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen"));
    let to = listener.local_addr().expect("address");
    let connect = |count: usize| {
        let listener = listener.try_clone().expect("listener");
        netns.run(move || {
            (0..count)
                .map(|_| {
                    let client = TcpStream::connect(to).expect("connect");
                    (client, listener.accept().expect("accept").0)
                })
                .collect::<Vec<_>>()
        })
    };
    // The client closes first: its end stays in TIME_WAIT.
    let close = |pairs: Vec<(TcpStream, TcpStream)>| {
        for (client, server) in pairs {
            drop(client);
            drop(server);
        }
    };
    let (by_iterator, by_sock_diag) = (sources(None, kernel.tcp_lister()), sources(None, None));
    // One memory per listing: the iterator's, then sock_diag's.
    let mut memories = [ConnectionMemory::default(), ConnectionMemory::default()];
    // (TIME_WAIT, of them new) toward the listener by each listing.
    let churn = |memories: &mut [ConnectionMemory; 2]| {
        let [iterator_memory, sock_diag_memory] = memories;
        [
            (&by_iterator, iterator_memory),
            (&by_sock_diag, sock_diag_memory),
        ]
        .map(|(sources, memory)| {
            let snapshot = snapshot_node_with(sources, memory)
                .namespaces
                .into_iter()
                .find(|namespace| namespace.netns == netns.id)
                .expect("the test namespace is snapshotted");
            snapshot
                .sockets
                .destinations()
                .find(|(destination, _)| destination.port == to.port())
                .map_or((0, 0), |(_, toward)| {
                    (toward.time_wait, toward.fresh_time_wait)
                })
        })
    };
    churn(&mut memories);
    // Five connections closed (their TIME_WAIT is old by the third snapshot), three open.
    close(connect(5));
    let open = connect(3);
    assert_eq!(churn(&mut memories), [(5, 5); 2]);
    // The three close, four more open and close: new.
    close(open);
    close(connect(4));
    assert_eq!(churn(&mut memories), [(12, 4); 2]);
    // The five closed before the previous snapshot are not kept by the iterator's memory;
    // the seven closed since may be (those born in the kernel tick the listing began in).
    let [by_iterator_kept, by_sock_diag_kept] =
        memories.each_ref().map(|memory| memory.kept(netns.id));
    assert_eq!(by_sock_diag_kept, Some(12));
    assert!(
        by_iterator_kept.is_some_and(|kept| kept <= 7),
        "the iterator's memory keeps {by_iterator_kept:?} of 12 TIME_WAIT sockets"
    );
    // Nothing new, and none of the twelve asked about.
    assert_eq!(churn(&mut memories), [(12, 0); 2]);
}
