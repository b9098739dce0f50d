//! Adding one namespace's listed sockets to its tally, whatever listed them (`sock_diag` or
//! the TCP socket iterator), and noting which of the sockets bound with `bind()` were listed.

use std::{collections::HashSet, time::Duration};

use port_monitor_common::maps::BoundSocket;

use super::inet_diag::DiagSocket;
use crate::{
    kernel::bound_sockets::Tracked,
    model::{self, Binder, Protocol, SocketTally, TcpState},
};

/// A namespace's tally as its sockets are listed.
pub struct Fold<'a> {
    pub tally: &'a mut SocketTally,
    /// The TCP sockets the kernel programs saw get their port from `bind()`, by cookie.
    bound: &'a Tracked,
    /// The cookies of `bound` listed so far.
    pub listed: HashSet<u64>,
}

impl<'a> Fold<'a> {
    pub fn new(tally: &'a mut SocketTally, bound: &'a Tracked) -> Self {
        Self {
            tally,
            bound,
            listed: HashSet::new(),
        }
    }

    /// Adds one listed socket. TCP sockets in `bound` are told so, with who bound them.
    pub fn add(&mut self, protocol: Protocol, socket: &DiagSocket) {
        // No lookup at all where nothing is tracked (Linux >= 6.7 without the programs).
        let bound_by = if protocol == Protocol::Tcp && !self.bound.is_empty() {
            self.bound.get(&socket.cookie)
        } else {
            None
        };
        if bound_by.is_some() {
            self.listed.insert(socket.cookie);
        }
        let state = match (protocol, TcpState::from_kernel(socket.state)) {
            // A TCP socket in a table with state CLOSE is bound but neither listening nor
            // connected: Linux >= 6.7 lists those from the bind hash, with their real
            // state, CLOSE (checked on 6.18 with a raw sock_diag request).
            (Protocol::Tcp, Some(TcpState::Close)) => Some(TcpState::BoundInactive),
            (_, state) => state,
        };
        if let Some(state) = state {
            self.tally.add(&model::Socket {
                protocol,
                state,
                local: socket.local,
                remote: socket.remote,
                timer: Duration::from_millis(u64::from(socket.expires_ms)),
                expires_at: socket.expires_at,
                binder: bound_by.map(binder),
            });
        }
    }

    /// The tracked sockets of this namespace not listed so far.
    pub fn unlisted(&self) -> impl Iterator<Item = (&u64, &BoundSocket)> {
        self.bound
            .iter()
            .filter(|(cookie, _)| !self.listed.contains(*cookie))
    }
}

/// Who bound a socket, as the bind hook saw it.
fn binder(bound: &BoundSocket) -> Binder {
    Binder {
        tgid: bound.tgid,
        comm: bound.comm,
        cgroup_id: bound.cgroup_id,
    }
}
