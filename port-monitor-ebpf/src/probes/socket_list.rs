//! `iter/tcp`: lists every TCP socket of the namespace that opened the iterator, one
//! [`ListedSocket`] each, for the snapshot. Runs only when the daemon reads the iterator
//! (once per namespace per snapshot), never in the path of a connection.
//!
//! The kernel walks its socket hashes and calls this program per socket with no netlink
//! message to build, so listing 100k sockets costs a fraction of a `sock_diag` dump. Fields are
//! plain loads at the offsets the daemon found in the kernel's BTF (frozen `.rodata`): the
//! verifier checks each against `struct sock_common` and makes it fault-safe.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_seq_write, bpf_skc_to_tcp_timewait_sock};
use port_monitor_common::{
    FAMILY_INET6,
    kernel::KernelLayout,
    socket_list::{LISTED_SOCKET_SIZE, ListedSocket},
};

use crate::kernel::{layout, load};

const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// Four 32-bit loads: how the verifier lets an `in6_addr` (an array of `__be32`) be read.
unsafe fn load_addr6(base: *const u8, offset: u32) -> [u8; 16] {
    let mut addr = [0; 16];
    for word in 0..4 {
        // SAFETY: the caller's promise, for each word of the address.
        let value: u32 = unsafe { load(base, offset + word * 4) };
        addr[word as usize * 4..word as usize * 4 + 4].copy_from_slice(&value.to_ne_bytes());
    }
    addr
}

/// `struct bpf_iter__tcp`, the program's context.
#[repr(C)]
struct IterTcp {
    meta: *const IterMeta,
    /// The socket; NULL on the last call, after every socket.
    sk_common: *const u8,
}

/// `struct bpf_iter_meta`.
#[repr(C)]
struct IterMeta {
    seq: *mut core::ffi::c_void,
    session_id: u64,
    /// How many sockets this listing called the program with before this call.
    seq_num: u64,
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "a record is 56 bytes (checked in port-monitor-common)"
)]
const RECORD_SIZE: u32 = LISTED_SOCKET_SIZE as u32;

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
extern "C" fn tcp_sockets(ctx: *const IterTcp) -> i32 {
    // SAFETY: loads of the context's own fields, which the verifier types (BTF pointers).
    let (meta, sk) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
    // SAFETY: the meta's fields; the seq_file comes straight from it, a trusted pointer, as
    // bpf_seq_write requires.
    let (seq, first) = unsafe { ((*meta).seq, (*meta).seq_num == 0) };
    if first {
        // The first call of a listing (with its first socket, or with none when there is
        // none): the clock record, which the daemon's churn count needs.
        let clock = ListedSocket {
            // SAFETY: a helper without arguments.
            expires_at: jiffies_low(unsafe { bpf_jiffies64() }),
            ..ListedSocket::default()
        };
        write(seq, &clock);
    }
    if sk.is_null() {
        return 0;
    }
    let layout = layout();
    // SAFETY: `sk` is the context's `struct sock_common *`; every offset is of a field of it.
    let mut socket = unsafe { listed(sk, &layout) };
    // What sock_diag (and so `ss`) reports: a request socket is SYN_RECV; a TIME_WAIT socket
    // is in its substate, FIN_WAIT2 for one moved out of FIN_WAIT2 early.
    if socket.state == TCP_NEW_SYN_RECV {
        socket.state = TCP_SYN_RECV;
    } else if socket.state == TCP_TIME_WAIT {
        // SAFETY: the helper checks the socket's kind and returns NULL for any other.
        let tw = unsafe { bpf_skc_to_tcp_timewait_sock(sk.cast_mut().cast()) }.cast::<u8>();
        if !tw.is_null() {
            // SAFETY: `tw` is a `struct tcp_timewait_sock *`, which starts with the
            // `inet_timewait_sock` both offsets are in.
            let (expires, substate): (u64, u8) = unsafe {
                (
                    load(tw, layout.timewait_expires),
                    load(tw, layout.timewait_substate),
                )
            };
            // SAFETY: a helper without arguments.
            let now = unsafe { bpf_jiffies64() };
            socket.expires_in = jiffies_low(expires.wrapping_sub(now)).cast_signed();
            socket.expires_at = jiffies_low(expires);
            socket.state = substate;
        }
    }
    write(seq, &socket);
    0
}

/// The low 32 bits of a jiffies value: differences of up to 2^31 ticks (months) compare
/// right with wrapping arithmetic.
#[expect(clippy::cast_possible_truncation, reason = "the low half, on purpose")]
const fn jiffies_low(jiffies: u64) -> u32 {
    jiffies as u32
}

fn write(seq: *mut core::ffi::c_void, record: &ListedSocket) {
    // SAFETY: `seq` is the iterator's seq_file; `record` is initialised, padding too.
    unsafe {
        bpf_seq_write(seq.cast(), core::ptr::from_ref(record).cast(), RECORD_SIZE);
    }
}

/// The fields every kind of socket has, in `struct sock_common`.
unsafe fn listed(sk: *const u8, layout: &KernelLayout) -> ListedSocket {
    // SAFETY: the caller's promise: `sk` is a `struct sock_common *`.
    unsafe {
        let family: u16 = load(sk, layout.sock_family);
        let (local_addr, remote_addr) = if family == FAMILY_INET6 {
            (
                load_addr6(sk, layout.sock_local_addr6),
                load_addr6(sk, layout.sock_remote_addr6),
            )
        } else {
            let mut local = [0; 16];
            let mut remote = [0; 16];
            local[..4].copy_from_slice(&load::<u32>(sk, layout.sock_local_addr4).to_ne_bytes());
            remote[..4].copy_from_slice(&load::<u32>(sk, layout.sock_remote_addr4).to_ne_bytes());
            (local, remote)
        };
        ListedSocket {
            cookie: load(sk, layout.sock_cookie),
            expires_in: 0,
            expires_at: 0,
            local_addr,
            remote_addr,
            family,
            local_port: load(sk, layout.sock_bound_port),
            remote_port: u16::from_be(load(sk, layout.sock_remote_port)),
            state: load(sk, layout.sock_state),
            padding: 0,
        }
    }
}
