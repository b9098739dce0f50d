//! Errno values as the names users know them from `man connect` and `man bind`.

/// `connect()` found no free local port (`__inet_hash_connect`).
pub const EADDRNOTAVAIL: u16 = 99;
/// `bind()` found the port taken, or no free port for port 0 (`inet_csk_get_port`).
pub const EADDRINUSE: u16 = 98;

/// The destination answered the handshake with RST: nothing listens there.
pub const ECONNREFUSED: u16 = 111;
/// The handshake got no answer: the SYNs were dropped somewhere.
pub const ETIMEDOUT: u16 = 110;

/// A UDP socket got no port on its first `connect()` or send (`inet_autobind`).
pub const EAGAIN: u16 = 11;

/// The symbolic name of a positive errno (`99` -> `"EADDRNOTAVAIL"`); `"E<number>"` for one
/// libc does not name. The label stays bounded: the kernel's errno values are below 4096.
#[must_use]
pub fn name(errno: u16) -> String {
    match nix::errno::Errno::from_raw(i32::from(errno)) {
        nix::errno::Errno::UnknownErrno => format!("E{errno}"),
        known => format!("{known:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_errnos_of_connect_and_bind() {
        let cases = [
            (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
            (EADDRINUSE, "EADDRINUSE"),
            (111, "ECONNREFUSED"),
            (110, "ETIMEDOUT"),
            (113, "EHOSTUNREACH"),
            (13, "EACCES"),
            (22, "EINVAL"),
            (11, "EAGAIN"),
            (4000, "E4000"),
        ];
        for (errno, expected) in cases {
            assert_eq!(name(errno), expected);
        }
    }
}
