//! The numbered echo: the conversation behind `percore serve conversation-echo` and its
//! benchmark. A conversation answers its peer's k-th datagram (k counted per peer from 1) with
//! k in ASCII decimal, a colon, then the payload: the third datagram `abc` gets `3:abc`.
//!
//! k counts the datagrams the conversation received: one the service dropped before the
//! handler saw it (a full inbox, the byte budget; each counted in the service's stats) is not
//! numbered. A reply the kernel refuses (`EMSGSIZE` for a payload near 64 KiB, `ENOBUFS`) is
//! counted in the service's `send_errors` and the conversation goes on with the next datagram:
//! one refused reply does not end a peer's numbering.

use std::io;
use std::io::Write as _;

use crate::Conversation;

/// The reply to the `k`-th datagram `payload`: `k:payload`.
///
/// # Examples
///
/// ```
/// assert_eq!(percore_udp_conversation::numbered_reply(3, b"abc"), b"3:abc");
/// ```
pub fn numbered_reply(k: u64, payload: &[u8]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(21 + payload.len());
    // Writing into a Vec cannot fail.
    let _ = write!(reply, "{k}:");
    reply.extend_from_slice(payload);
    reply
}

/// Answers each datagram with [`numbered_reply`] until the service stops or the peer goes
/// idle. A refused reply is skipped (the service counts it in `send_errors`).
///
/// # Errors
///
/// None: the `Result` is the handler signature's.
///
/// # Cancel safety
///
/// Dropping it ends the conversation; a reply being sent may or may not have gone out.
pub async fn numbered_echo(mut conv: Conversation) -> io::Result<()> {
    let mut k = 0u64;
    while let Some(payload) = conv.recv().await {
        k += 1;
        // Counted by the service; the next datagram still gets its number.
        let _refused = conv.send(numbered_reply(k, &payload)).await;
    }
    Ok(())
}
