//! The framing both dumps share: one `recv()` of a netlink dump holds several messages, the
//! last batch ends with `NLMSG_DONE` (or `NLMSG_ERROR` when the kernel refused). The framing
//! is `netlink-packet-core`'s, read in place; what each message carries is the caller's.

use netlink_packet_core::{NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer};

/// How one batch (one `recv()`) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// More batches follow.
    More,
    /// `NLMSG_DONE`, or an acknowledgement: the answer is complete.
    Done,
    /// `NLMSG_ERROR`: the kernel refused, with this (negative) errno.
    Error(i32),
}

/// A message that does not fit its batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a netlink message at offset {offset} of a {total}-byte batch: {reason}")]
pub struct Overrun {
    pub offset: usize,
    pub total: usize,
    pub reason: String,
}

/// Calls `each(message type, payload)` for every message of one batch that is neither
/// `NLMSG_DONE` nor `NLMSG_ERROR`, and says how the batch ended.
///
/// # Errors
/// When a message does not fit the batch, or `each` fails.
pub fn for_each_message<E: From<Overrun>>(
    bytes: &[u8],
    mut each: impl FnMut(u16, &[u8]) -> Result<(), E>,
) -> Result<Batch, E> {
    let mut offset = 0;
    while offset < bytes.len() {
        let message = NetlinkBuffer::new_checked(&bytes[offset..]).map_err(|error| Overrun {
            offset,
            total: bytes.len(),
            reason: error.to_string(),
        })?;
        let payload = message.payload();
        match message.message_type() {
            NLMSG_DONE => return Ok(Batch::Done),
            NLMSG_ERROR => {
                let code = payload
                    .first_chunk::<4>()
                    .map_or(0, |code| i32::from_ne_bytes(*code));
                // An error message with code 0 acknowledges a request that dumps nothing.
                return Ok(if code == 0 {
                    Batch::Done
                } else {
                    Batch::Error(code)
                });
            }
            kind => each(kind, payload)?,
        }
        // Messages are aligned to 4 bytes.
        offset += (message.length() as usize + 3) & !3;
    }
    Ok(Batch::More)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const HEADER: usize = 16;

    /// A netlink message of `kind` around `payload`, padded to 4 bytes.
    pub(crate) fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(HEADER + payload.len()).expect("small");
        let mut bytes = length.to_ne_bytes().to_vec();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend([0; 10]);
        bytes.extend(payload);
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        bytes
    }

    fn kinds(batch: &[u8]) -> (Vec<u16>, Result<Batch, Overrun>) {
        let mut seen = Vec::new();
        let ended = for_each_message(batch, |kind, _| {
            seen.push(kind);
            Ok::<_, Overrun>(())
        });
        (seen, ended)
    }

    #[test]
    fn walks_messages_until_the_end() {
        let mut batch = message(20, &[1, 2, 3]);
        batch.extend(message(21, &[]));
        assert_eq!(kinds(&batch), (vec![20, 21], Ok(Batch::More)));
        batch.extend(message(NLMSG_DONE, &[0; 4]));
        batch.extend(message(22, &[]));
        assert_eq!(kinds(&batch), (vec![20, 21], Ok(Batch::Done)));
    }

    #[test]
    fn reports_errors_acknowledgements_and_overruns() {
        let refused = message(NLMSG_ERROR, &(-22i32).to_ne_bytes());
        assert_eq!(kinds(&refused).1, Ok(Batch::Error(-22)));
        let acknowledged = message(NLMSG_ERROR, &0i32.to_ne_bytes());
        assert_eq!(kinds(&acknowledged).1, Ok(Batch::Done));
        let mut overrun = message(20, &[0; 8]);
        overrun[0] = 200;
        assert!(matches!(kinds(&overrun).1, Err(Overrun { offset: 0, .. })));
        assert!(kinds(&overrun[..10]).1.is_err(), "a truncated header");
    }
}
