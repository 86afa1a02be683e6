//! The link between session servers and a standalone relay, sans-IO: what
//! lets a forced end, an extension and the relayed byte counts cross from
//! one process to the other when the relay does not run inside the server.
//!
//! It is the project's secure channel ([`crate::crypto::channel`], Noise
//! IK, records sealed with AES-256-GCM) on a TCP stream of tryst messages
//! (`HandshakeInit`, `HandshakeReply`, `Sealed`, reassembled by
//! [`FrameBuffer`]). The session server is the initiator ([`LinkInitiator`]);
//! the relay the responder ([`LinkResponder`]), which takes only initiators
//! whose static keys its operator listed and closes every other connection
//! without a reply.
//!
//! The relay's static key pair is derived from the relay key the two
//! already share ([`link_keypair`]: HMAC-SHA256 of the key under its own
//! label, a PRF output used as an X25519 secret), so a session server that
//! can mint tokens for the relay also knows whom it talks to, and no new
//! key file is needed on its side.
//!
//! The records carry the [`LinkMessage`]s, types `0x38..=0x3b` (PROTOCOL.md,
//! "The relay link"): extensions and ends from the session server, each
//! allocation and each ended allocation's byte counts and reason from the
//! relay. The handshake payloads are empty.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use hmac::{KeyInit, Mac};
use rand_core::{CryptoRng, RngCore};

use super::server::{RelayEndReason, RelayEvent};
use super::RelayKey;
use crate::crypto::channel::{INIT_OVERHEAD, REPLY_OVERHEAD, SEALED_OVERHEAD};
use crate::crypto::{Initiator, Responder, SecureChannel, StaticKeypair};
use crate::time::Instant;
use crate::wire::{
    FrameBuffer, HandshakeInit, HandshakeReply, Message, PublicKey, Sealed, SessionId, HEADER_LEN,
    MAGIC, MAX_MESSAGE_LEN, SESSION_ID_LEN, VERSION,
};

/// Type byte of [`LinkMessage::Extend`] (session server -> relay).
pub const LINK_EXTEND_TYPE: u8 = 0x38;
/// Type byte of [`LinkMessage::End`] (session server -> relay).
pub const LINK_END_TYPE: u8 = 0x39;
/// Type byte of [`LinkMessage::Allocated`] (relay -> session server).
pub const LINK_ALLOCATED_TYPE: u8 = 0x3a;
/// Type byte of [`LinkMessage::Ended`] (relay -> session server).
pub const LINK_ENDED_TYPE: u8 = 0x3b;
/// Longest link message: an `Ended` (header, session, reason, two counts).
pub const MAX_LINK_MESSAGE_LEN: usize = HEADER_LEN + SESSION_ID_LEN + 1 + 8 + 8;
/// Most messages a link holds for its peer while its handshake runs; more
/// are refused ([`LinkError::QueueFull`]), never buffered without bound.
pub const MAX_QUEUED: usize = 1024;
/// Label of the relay's link key derivation.
const LINK_KEY_LABEL: &[u8] = b"tryst relay link static key v1";

type HmacSha256 = hmac::Hmac<sha2_v11::Sha256>;

/// The relay's static key pair on the link, derived from the relay key
/// both sides hold: HMAC-SHA256(key, label) as the X25519 secret.
pub fn link_keypair(key: &RelayKey) -> StaticKeypair {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(LINK_KEY_LABEL);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&mac.finalize().into_bytes());
    StaticKeypair::from_secret(secret)
}

/// One message on the link (the plaintext of one record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum LinkMessage {
    /// The session's whole permitted duration is now `duration_secs` (an
    /// extension, S1504).
    Extend {
        /// The session.
        session_id: SessionId,
        /// Its whole permitted duration in seconds, from the start.
        duration_secs: u32,
    },
    /// The session ended (a forced end or its record): its allocation ends.
    End {
        /// The session.
        session_id: SessionId,
    },
    /// A session's first valid bind made an allocation.
    Allocated {
        /// The session.
        session_id: SessionId,
    },
    /// An allocation ended, with its byte counts for the session record.
    Ended {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: RelayEndReason,
        /// Bytes forwarded from the connecting side.
        from_requester: u64,
        /// Bytes forwarded from the connected side.
        from_target: u64,
    },
}

/// Why bytes are not a link message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDecodeError {
    /// Not `"TY"` version 1.
    BadHeader,
    /// A type byte that is not a link message's.
    UnknownType(u8),
    /// The header's length or the buffer's is not the type's.
    BadLength,
    /// An end reason byte with no meaning.
    BadReason(u8),
}

impl fmt::Display for LinkDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkDecodeError::BadHeader => f.write_str("not a tryst version 1 message"),
            LinkDecodeError::UnknownType(t) => write!(f, "type {t:#04x} is not a link message"),
            LinkDecodeError::BadLength => f.write_str("link message of the wrong length"),
            LinkDecodeError::BadReason(r) => write!(f, "unknown relay end reason {r}"),
        }
    }
}

fn reason_byte(reason: RelayEndReason) -> u8 {
    match reason {
        RelayEndReason::Expired => 1,
        RelayEndReason::Ended => 2,
        RelayEndReason::ByteLimit => 3,
        RelayEndReason::Idle => 4,
    }
}

fn reason_of(byte: u8) -> Result<RelayEndReason, LinkDecodeError> {
    Ok(match byte {
        1 => RelayEndReason::Expired,
        2 => RelayEndReason::Ended,
        3 => RelayEndReason::ByteLimit,
        4 => RelayEndReason::Idle,
        other => return Err(LinkDecodeError::BadReason(other)),
    })
}

impl LinkMessage {
    /// Its type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            LinkMessage::Extend { .. } => LINK_EXTEND_TYPE,
            LinkMessage::End { .. } => LINK_END_TYPE,
            LinkMessage::Allocated { .. } => LINK_ALLOCATED_TYPE,
            LinkMessage::Ended { .. } => LINK_ENDED_TYPE,
        }
    }

    /// Whether the session server sends it (else the relay does).
    pub fn from_session_server(&self) -> bool {
        matches!(self, LinkMessage::Extend { .. } | LinkMessage::End { .. })
    }

    /// The session it is about.
    pub fn session_id(&self) -> SessionId {
        match *self {
            LinkMessage::Extend { session_id, .. }
            | LinkMessage::End { session_id }
            | LinkMessage::Allocated { session_id }
            | LinkMessage::Ended { session_id, .. } => session_id,
        }
    }

    /// Writes the message, header included, into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8; MAX_LINK_MESSAGE_LEN]) -> usize {
        let mut body = [0u8; MAX_LINK_MESSAGE_LEN - HEADER_LEN];
        body[..SESSION_ID_LEN].copy_from_slice(&self.session_id().0);
        let body_len = match *self {
            LinkMessage::Extend { duration_secs, .. } => {
                body[SESSION_ID_LEN..SESSION_ID_LEN + 4]
                    .copy_from_slice(&duration_secs.to_be_bytes());
                SESSION_ID_LEN + 4
            }
            LinkMessage::End { .. } | LinkMessage::Allocated { .. } => SESSION_ID_LEN,
            LinkMessage::Ended {
                reason,
                from_requester,
                from_target,
                ..
            } => {
                body[SESSION_ID_LEN] = reason_byte(reason);
                body[SESSION_ID_LEN + 1..SESSION_ID_LEN + 9]
                    .copy_from_slice(&from_requester.to_be_bytes());
                body[SESSION_ID_LEN + 9..SESSION_ID_LEN + 17]
                    .copy_from_slice(&from_target.to_be_bytes());
                SESSION_ID_LEN + 17
            }
        };
        out[..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.type_byte();
        // At most 33: fits a u16.
        out[4..6].copy_from_slice(&(body_len as u16).to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + body_len].copy_from_slice(&body[..body_len]);
        HEADER_LEN + body_len
    }

    /// Reads exactly one link message from `buf`. Canonical: every field
    /// has one encoding, so the message re-encodes to the same bytes.
    pub fn decode(buf: &[u8]) -> Result<LinkMessage, LinkDecodeError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(LinkDecodeError::BadLength);
        };
        if head[..2] != MAGIC || head[2] != VERSION {
            return Err(LinkDecodeError::BadHeader);
        }
        let body_len = match head[3] {
            LINK_EXTEND_TYPE => SESSION_ID_LEN + 4,
            LINK_END_TYPE | LINK_ALLOCATED_TYPE => SESSION_ID_LEN,
            LINK_ENDED_TYPE => SESSION_ID_LEN + 17,
            other => return Err(LinkDecodeError::UnknownType(other)),
        };
        let declared = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let body = &buf[HEADER_LEN..];
        if declared != body_len || body.len() != body_len {
            return Err(LinkDecodeError::BadLength);
        }
        let mut session_id = SessionId([0; SESSION_ID_LEN]);
        session_id.0.copy_from_slice(&body[..SESSION_ID_LEN]);
        let rest = &body[SESSION_ID_LEN..];
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(match head[3] {
            LINK_EXTEND_TYPE => LinkMessage::Extend {
                session_id,
                duration_secs: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            },
            LINK_END_TYPE => LinkMessage::End { session_id },
            LINK_ALLOCATED_TYPE => LinkMessage::Allocated { session_id },
            _ => LinkMessage::Ended {
                session_id,
                reason: reason_of(rest[0])?,
                from_requester: u64_at(1),
                from_target: u64_at(9),
            },
        })
    }

    /// The link message that reports a relay event.
    pub fn of_event(event: &RelayEvent) -> LinkMessage {
        match *event {
            RelayEvent::Allocated { session_id } => LinkMessage::Allocated { session_id },
            RelayEvent::Ended {
                session_id,
                reason,
                from_requester,
                from_target,
            } => LinkMessage::Ended {
                session_id,
                reason,
                from_requester,
                from_target,
            },
        }
    }

    /// The relay event a relay's message reports (`None` for the session
    /// server's messages).
    pub fn event(&self) -> Option<RelayEvent> {
        match *self {
            LinkMessage::Allocated { session_id } => Some(RelayEvent::Allocated { session_id }),
            LinkMessage::Ended {
                session_id,
                reason,
                from_requester,
                from_target,
            } => Some(RelayEvent::Ended {
                session_id,
                reason,
                from_requester,
                from_target,
            }),
            LinkMessage::Extend { .. } | LinkMessage::End { .. } => None,
        }
    }
}

/// Why a link ends. Every one closes the connection: a TCP stream neither
/// reorders nor loses, so a record that does not open is an attack or a
/// bug, never a late packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The stream is not tryst messages.
    Stream,
    /// A message this side never takes, or one out of order.
    Unexpected,
    /// The handshake failed (a bad message, a weak key, a late reply).
    Handshake,
    /// The initiator's key is not one the relay was given.
    NotPermitted,
    /// A record did not open, or sealing failed.
    Record,
    /// A record's plaintext is not a link message for this side.
    BadMessage,
    /// Too many messages wait for the handshake.
    QueueFull,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkError::Stream => "the link's stream is not tryst messages",
            LinkError::Unexpected => "an unexpected message on the link",
            LinkError::Handshake => "the link's handshake failed",
            LinkError::NotPermitted => "a session server key the relay was not given",
            LinkError::Record => "a link record did not open or seal",
            LinkError::BadMessage => "a link record that is not a link message",
            LinkError::QueueFull => "too many link messages wait for the handshake",
        })
    }
}

/// The part both ends share: the reassembly of the stream, the channel
/// once open, what to write and what came in.
#[derive(Debug, Default)]
struct Ends {
    frames: FrameBuffer,
    channel: Option<SecureChannel>,
    out: Vec<u8>,
    received: VecDeque<LinkMessage>,
}

impl Ends {
    /// Seals `message` onto the output.
    fn seal(&mut self, message: &LinkMessage) -> Result<(), LinkError> {
        let channel = self.channel.as_mut().ok_or(LinkError::Unexpected)?;
        let mut plain = [0u8; MAX_LINK_MESSAGE_LEN];
        let n = message.encode(&mut plain);
        let mut sealed = [0u8; MAX_LINK_MESSAGE_LEN + SEALED_OVERHEAD];
        let m = channel
            .seal(&plain[..n], &mut sealed)
            .map_err(|_| LinkError::Record)?;
        self.out.extend_from_slice(&sealed[..m]);
        Ok(())
    }

    /// Opens a record and queues its message if this side takes it.
    fn open(&mut self, record: &Sealed<'_>, want_server_messages: bool) -> Result<(), LinkError> {
        let channel = self.channel.as_mut().ok_or(LinkError::Unexpected)?;
        let mut plain = [0u8; MAX_LINK_MESSAGE_LEN];
        let n = channel
            .open(record, &mut plain)
            .map_err(|_| LinkError::Record)?;
        let message = LinkMessage::decode(&plain[..n]).map_err(|_| LinkError::BadMessage)?;
        if message.from_session_server() != want_server_messages {
            return Err(LinkError::BadMessage);
        }
        self.received.push_back(message);
        Ok(())
    }

    /// Feeds stream bytes, handing each whole message to `each`.
    fn feed(
        &mut self,
        mut input: &[u8],
        mut each: impl FnMut(&mut Ends, Message<'_>) -> Result<(), LinkError>,
    ) -> Result<(), LinkError> {
        while !input.is_empty() {
            let mut copy = [0u8; MAX_MESSAGE_LEN];
            let len = match self.frames.push(&mut input) {
                Ok(Some(bytes)) => {
                    copy[..bytes.len()].copy_from_slice(bytes);
                    bytes.len()
                }
                Ok(None) => continue,
                Err(_) => return Err(LinkError::Stream),
            };
            let message = Message::decode(&copy[..len]).map_err(|_| LinkError::Stream)?;
            each(self, message)?;
        }
        Ok(())
    }
}

/// The session server's end of a link: writes the `HandshakeInit` at once,
/// queues messages until the reply, then seals them.
#[derive(Debug)]
pub struct LinkInitiator {
    handshake: Option<Initiator>,
    queue: VecDeque<LinkMessage>,
    ends: Ends,
}

impl LinkInitiator {
    /// Starts a link to the relay whose key is `relay_key`, as `local` (the
    /// session server's identity); the `HandshakeInit` waits in
    /// [`Self::take_output`].
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        now: Instant,
        local: &StaticKeypair,
        relay_key: &RelayKey,
    ) -> Result<LinkInitiator, LinkError> {
        let relay = link_keypair(relay_key).public_key();
        let mut noise = [0u8; INIT_OVERHEAD];
        let (initiator, n) = Initiator::start(rng, now, local, &relay, &[], &mut noise)
            .map_err(|_| LinkError::Handshake)?;
        let mut ends = Ends::default();
        let init = Message::HandshakeInit(HandshakeInit { noise: &noise[..n] });
        let mut buf = [0u8; HEADER_LEN + INIT_OVERHEAD];
        let m = init.encode(&mut buf).map_err(|_| LinkError::Handshake)?;
        ends.out.extend_from_slice(&buf[..m]);
        Ok(LinkInitiator {
            handshake: Some(initiator),
            queue: VecDeque::new(),
            ends,
        })
    }

    /// Sends `message` (an extension or an end) now, or once the link is
    /// open.
    pub fn send(&mut self, message: LinkMessage) -> Result<(), LinkError> {
        if !message.from_session_server() {
            return Err(LinkError::Unexpected);
        }
        if self.ends.channel.is_some() {
            return self.ends.seal(&message);
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(LinkError::QueueFull);
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Takes bytes read from the stream: the reply, then records.
    pub fn receive(&mut self, now: Instant, input: &[u8]) -> Result<(), LinkError> {
        let handshake = &mut self.handshake;
        let queue = &mut self.queue;
        self.ends.feed(input, |ends, message| match message {
            Message::HandshakeReply(reply) => on_reply(now, handshake, queue, ends, &reply),
            Message::Sealed(record) => ends.open(&record, false),
            _ => Err(LinkError::Unexpected),
        })
    }

    /// Whether the handshake has finished.
    pub fn is_open(&self) -> bool {
        self.ends.channel.is_some()
    }

    /// Whether the link should be started again: its handshake is overdue,
    /// or its channel is due for re-keying.
    pub fn is_stale(&self, now: Instant) -> bool {
        match (&self.handshake, &self.ends.channel) {
            (Some(h), _) => h.is_expired(now),
            (None, Some(c)) => c.needs_rekey(now),
            (None, None) => true,
        }
    }

    /// The bytes to write to the stream, if any.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.ends.out)
    }

    /// The next relay event received.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.ends.received.pop_front().and_then(|m| m.event())
    }
}

fn on_reply(
    now: Instant,
    handshake: &mut Option<Initiator>,
    queue: &mut VecDeque<LinkMessage>,
    ends: &mut Ends,
    reply: &HandshakeReply<'_>,
) -> Result<(), LinkError> {
    let initiator = handshake.as_mut().ok_or(LinkError::Unexpected)?;
    let mut payload = [0u8; 1];
    let (channel, n) = initiator
        .finish(now, reply, &mut payload)
        .map_err(|_| LinkError::Handshake)?;
    if n != 0 {
        return Err(LinkError::Handshake);
    }
    *handshake = None;
    ends.channel = Some(channel);
    while let Some(message) = queue.pop_front() {
        ends.seal(&message)?;
    }
    Ok(())
}

/// The relay's end of one link connection: takes one `HandshakeInit` from
/// a listed session server, then its records.
#[derive(Debug)]
pub struct LinkResponder {
    keypair: StaticKeypair,
    allowed: Vec<PublicKey>,
    peer: Option<PublicKey>,
    ends: Ends,
}

impl LinkResponder {
    /// A connection's responder for the relay key `relay_key`, taking only
    /// the session servers whose keys are in `allowed`.
    pub fn new(relay_key: &RelayKey, allowed: &[PublicKey]) -> LinkResponder {
        LinkResponder {
            keypair: link_keypair(relay_key),
            allowed: allowed.to_vec(),
            peer: None,
            ends: Ends::default(),
        }
    }

    /// Takes bytes read from the stream: the handshake, then records. An
    /// error closes the connection; an unlisted session server's gets no
    /// reply at all ([`LinkError::NotPermitted`]).
    pub fn receive<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        now: Instant,
        input: &[u8],
    ) -> Result<(), LinkError> {
        let keypair = &self.keypair;
        let allowed = &self.allowed;
        let peer = &mut self.peer;
        self.ends.feed(input, |ends, message| match message {
            Message::HandshakeInit(init) if peer.is_none() => {
                let mut payload = [0u8; 1];
                let (responder, n) = Responder::accept(rng, now, keypair, &init, &mut payload)
                    .map_err(|_| LinkError::Handshake)?;
                let key = responder.initiator_key();
                if !allowed.contains(&key) {
                    return Err(LinkError::NotPermitted);
                }
                if n != 0 {
                    return Err(LinkError::Handshake);
                }
                let channel = rng.next_u64();
                let mut noise = [0u8; REPLY_OVERHEAD];
                let (secure, m) = responder
                    .reply(channel, &[], &mut noise)
                    .map_err(|_| LinkError::Handshake)?;
                let reply = Message::HandshakeReply(HandshakeReply {
                    channel,
                    noise: &noise[..m],
                });
                let mut buf = [0u8; HEADER_LEN + 8 + REPLY_OVERHEAD];
                let k = reply.encode(&mut buf).map_err(|_| LinkError::Handshake)?;
                ends.out.extend_from_slice(&buf[..k]);
                ends.channel = Some(secure);
                *peer = Some(key);
                Ok(())
            }
            Message::Sealed(record) => ends.open(&record, true),
            _ => Err(LinkError::Unexpected),
        })
    }

    /// The session server's key, once its handshake is in.
    pub fn peer(&self) -> Option<PublicKey> {
        self.peer
    }

    /// Reports a relay event to this session server (once linked; before,
    /// [`LinkError::Unexpected`]).
    pub fn send(&mut self, event: &RelayEvent) -> Result<(), LinkError> {
        self.ends.seal(&LinkMessage::of_event(event))
    }

    /// The bytes to write to the stream, if any.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.ends.out)
    }

    /// The next message received from the session server (an extension
    /// or an end).
    pub fn poll_message(&mut self) -> Option<LinkMessage> {
        self.ends.received.pop_front()
    }
}

/// The static examples of PROTOCOL.md, "The relay link" (session
/// `5e` x 16; checked both ways by the unit tests and against the doc by
/// `tests/protocol_doc.rs`).
pub mod vectors {
    /// `Extend` to 3600 s.
    pub const LINK_EXTEND: &[u8] = &[
        0x54, 0x59, 0x01, 0x38, 0x00, 0x14, //
        0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e,
        0x5e, //
        0x00, 0x00, 0x0e, 0x10,
    ];
    /// `End`.
    pub const LINK_END: &[u8] = &[
        0x54, 0x59, 0x01, 0x39, 0x00, 0x10, //
        0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e,
        0x5e,
    ];
    /// `Allocated`.
    pub const LINK_ALLOCATED: &[u8] = &[
        0x54, 0x59, 0x01, 0x3a, 0x00, 0x10, //
        0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e,
        0x5e,
    ];
    /// `Ended`, reason ended, 65536 and 8192 bytes.
    pub const LINK_ENDED: &[u8] = &[
        0x54, 0x59, 0x01, 0x3b, 0x00, 0x21, //
        0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e,
        0x5e, //
        0x02, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    ];

    /// Every example with its name in the doc.
    pub const ALL: [(&str, &[u8]); 4] = [
        ("LINK_EXTEND", LINK_EXTEND),
        ("LINK_END", LINK_END),
        ("LINK_ALLOCATED", LINK_ALLOCATED),
        ("LINK_ENDED", LINK_ENDED),
    ];
}

#[cfg(test)]
mod tests;
