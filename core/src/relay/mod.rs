//! The relay: what keeps a permitted session working when the two peers
//! cannot punch a hole to each other (symmetric NAT on both sides, CGNAT).
//!
//! The relay forwards the peers' own packets ([`crate::peer::packet`])
//! unchanged, so the KKpsk0 session between them runs through it end to
//! end encrypted; it can neither read nor forge them. It learns only what an
//! allocation token ([`RelayToken`]) tells it: the session ID, which side
//! the sender is, how long the session may last and until when the token
//! may bind. The session server mints one token per side with a key it
//! shares with the relay ([`RelayKey`]) and hands it to the peer in its
//! address notification ([`crate::wire::RelayAllocation`]).
//!
//! # Packets
//! A peer binds its address to its side of the session with a
//! [`RELAY_BIND_TYPE`] packet: the common 6-byte header, the session's
//! 8-byte channel number, then the 41-byte token. The relay answers nothing.
//! Once both sides are bound, every peer packet (`0x80..=0x83`) for that
//! channel from one side's address goes to the other side's address, the
//! same bytes: the relay never sends more than it received.
//!
//! The token check is stateless (an HMAC-SHA256 tag, truncated to 128 bits,
//! and an expiry in Unix seconds): a packet without a valid token costs the
//! relay no state and gets no answer. The machine that keeps the
//! allocations is [`server::Relay`] (feature `alloc`).
//!
//! Where UDP is blocked, a peer reaches the relay over TCP instead: the
//! same packets, each framed with its length ([`framing`]);
//! [`tcp::RelayFront`] (feature `alloc`) is the relay behind both.

pub mod framing;
#[cfg(feature = "alloc")]
pub mod link;
#[cfg(feature = "alloc")]
pub mod queue;
#[cfg(feature = "alloc")]
pub mod server;
#[cfg(feature = "alloc")]
pub mod tcp;

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use hmac::{KeyInit, Mac};

use crate::time::Instant;
use crate::wire::{RelayAllocation, Role, SessionId, HEADER_LEN, MAGIC, SESSION_ID_LEN, VERSION};

/// Type byte of a relay bind packet (next to the peer packets' `0x80..=0x83`).
pub const RELAY_BIND_TYPE: u8 = 0x84;
/// Length of the relay key the session server and the relay share.
pub const RELAY_KEY_LEN: usize = 32;
/// Length of a token's tag (HMAC-SHA256 truncated to its first 16 bytes).
pub const RELAY_TAG_LEN: usize = 16;
pub use crate::wire::RELAY_TOKEN_LEN;
/// Length of a whole bind packet: header, channel, token.
pub const RELAY_BIND_LEN: usize = HEADER_LEN + 8 + RELAY_TOKEN_LEN;
/// Domain separation of the token tag.
const TOKEN_LABEL: &[u8] = b"tryst relay token v1";

type HmacSha256 = hmac::Hmac<sha2_v11::Sha256>;

/// The secret the session server and the relay share to mint and check
/// allocation tokens. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayKey(pub [u8; RELAY_KEY_LEN]);

impl fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelayKey(..)")
    }
}

impl Drop for RelayKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A relay allocation token: one side's permission to use the relay for one
/// session, bound to it by the session server's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RelayToken {
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Which side holds it.
    pub role: Role,
    /// Unix seconds after which it binds nothing.
    pub not_after: u32,
    /// The permitted duration in seconds, counted by the relay from the
    /// session's first bind.
    pub duration_secs: u32,
    /// HMAC-SHA256 over the label and the fields above, first 16 bytes.
    pub tag: [u8; RELAY_TAG_LEN],
}

/// Why bytes are not a usable relay bind packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// Not the length of a bind packet, or its header declares another.
    BadLength,
    /// Not `"TY"` version 1 with the bind type.
    NotBind,
    /// The role byte is not a role.
    BadRole,
    /// The channel is not the token's session's.
    WrongChannel,
    /// The tag does not verify under the relay key.
    BadTag,
    /// The token's `not_after` has passed.
    Expired,
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayError::BadLength => "relay bind of the wrong length",
            RelayError::NotBind => "not a relay bind packet",
            RelayError::BadRole => "relay token with an unknown role",
            RelayError::WrongChannel => "relay bind for another channel",
            RelayError::BadTag => "relay token tag does not verify",
            RelayError::Expired => "relay token expired",
        })
    }
}

impl RelayToken {
    /// Mints a token under `key` (the session server's side).
    pub fn mint(
        key: &RelayKey,
        session_id: SessionId,
        role: Role,
        not_after: u32,
        duration_secs: u32,
    ) -> RelayToken {
        let mut token = RelayToken {
            session_id,
            role,
            not_after,
            duration_secs,
            tag: [0; RELAY_TAG_LEN],
        };
        token.tag = token.compute_tag(key);
        token
    }

    fn mac(&self, key: &RelayKey) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&key.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        let bytes = self.to_bytes();
        mac.update(TOKEN_LABEL);
        mac.update(&bytes[..RELAY_TOKEN_LEN - RELAY_TAG_LEN]);
        mac
    }

    fn compute_tag(&self, key: &RelayKey) -> [u8; RELAY_TAG_LEN] {
        let full = self.mac(key).finalize().into_bytes();
        let mut tag = [0u8; RELAY_TAG_LEN];
        tag.copy_from_slice(&full[..RELAY_TAG_LEN]);
        tag
    }

    /// Whether the tag verifies under `key` (in constant time).
    pub fn verify(&self, key: &RelayKey) -> bool {
        self.mac(key).verify_truncated_left(&self.tag).is_ok()
    }

    /// The token's bytes on the wire.
    pub fn to_bytes(&self) -> [u8; RELAY_TOKEN_LEN] {
        let mut b = [0u8; RELAY_TOKEN_LEN];
        b[..SESSION_ID_LEN].copy_from_slice(&self.session_id.0);
        b[SESSION_ID_LEN] = self.role.to_wire();
        b[SESSION_ID_LEN + 1..SESSION_ID_LEN + 5].copy_from_slice(&self.not_after.to_be_bytes());
        b[SESSION_ID_LEN + 5..SESSION_ID_LEN + 9]
            .copy_from_slice(&self.duration_secs.to_be_bytes());
        b[SESSION_ID_LEN + 9..].copy_from_slice(&self.tag);
        b
    }

    /// Reads a token's bytes (the tag is not checked here).
    pub fn from_bytes(b: &[u8; RELAY_TOKEN_LEN]) -> Result<RelayToken, RelayError> {
        let mut session_id = [0u8; SESSION_ID_LEN];
        session_id.copy_from_slice(&b[..SESSION_ID_LEN]);
        let role = Role::from_wire(b[SESSION_ID_LEN]).map_err(|_| RelayError::BadRole)?;
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut tag = [0u8; RELAY_TAG_LEN];
        tag.copy_from_slice(&b[SESSION_ID_LEN + 9..]);
        Ok(RelayToken {
            session_id: SessionId(session_id),
            role,
            not_after: word(SESSION_ID_LEN + 1),
            duration_secs: word(SESSION_ID_LEN + 5),
            tag,
        })
    }

    /// The channel number of the token's session (what its peer packets carry).
    pub fn channel(&self) -> u64 {
        crate::peer::handshake::channel_id(&self.session_id)
    }
}

/// What the session server needs to hand out allocations on one relay: its
/// address, the shared key, and the Unix time at the server's clock origin
/// (the tokens' expiry is wall-clock time, as the relay runs its own clock).
#[derive(Debug, Clone)]
pub struct RelayIssuer {
    /// The relay's UDP address, as the peers reach it.
    pub addr: SocketAddr,
    /// The key shared with the relay.
    pub key: RelayKey,
    /// Unix seconds at the session server's [`Instant::ZERO`].
    pub unix_at_zero: u64,
}

/// Slack on a token's `not_after` for clock differences between the
/// session server and the relay.
pub const TOKEN_CLOCK_SLACK_SECS: u64 = 60;

impl RelayIssuer {
    /// The allocation for one side of a session started at `now`: a token
    /// that binds until the longest total the session may reach
    /// (`max_total`, extensions included) has passed.
    pub fn allocation(
        &self,
        now: Instant,
        session_id: SessionId,
        role: Role,
        duration_secs: u32,
        max_total: Duration,
    ) -> RelayAllocation {
        let unix = self.unix_at_zero + now.saturating_duration_since(Instant::ZERO).as_secs();
        let not_after = unix
            .saturating_add(max_total.as_secs().max(u64::from(duration_secs)))
            .saturating_add(TOKEN_CLOCK_SLACK_SECS);
        let not_after = u32::try_from(not_after).unwrap_or(u32::MAX);
        let token = RelayToken::mint(&self.key, session_id, role, not_after, duration_secs);
        RelayAllocation {
            addr: self.addr,
            token: token.to_bytes(),
        }
    }
}

/// Writes the bind packet for `token` into the first [`RELAY_BIND_LEN`]
/// bytes of `out`; `None` if `out` is shorter.
pub fn encode_bind(token: &RelayToken, out: &mut [u8]) -> Option<usize> {
    encode_bind_raw(token.channel(), &token.to_bytes(), out)
}

/// Writes a bind packet for `channel` with a token's raw bytes (what a peer
/// holds; it never reads the token) into `out`; `None` if `out` is shorter
/// than [`RELAY_BIND_LEN`].
pub fn encode_bind_raw(
    channel: u64,
    token: &[u8; RELAY_TOKEN_LEN],
    out: &mut [u8],
) -> Option<usize> {
    let out = out.get_mut(..RELAY_BIND_LEN)?;
    out[..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = RELAY_BIND_TYPE;
    // The body is 8 + 41 bytes: fits a u16.
    out[4..6].copy_from_slice(&((RELAY_BIND_LEN - HEADER_LEN) as u16).to_be_bytes());
    out[6..14].copy_from_slice(&channel.to_be_bytes());
    out[14..].copy_from_slice(token);
    Some(RELAY_BIND_LEN)
}

/// Whether a datagram claims to be a bind packet (magic, version, type),
/// before any check of its contents.
pub fn is_bind(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[..2] == MAGIC
        && datagram[2] == VERSION
        && datagram[3] == RELAY_BIND_TYPE
}

/// Reads a bind packet and checks its token under `key` against the Unix
/// time `unix_secs`: any bytes give a token or a typed error, and nothing is
/// kept.
pub fn decode_bind(
    datagram: &[u8],
    key: &RelayKey,
    unix_secs: u64,
) -> Result<RelayToken, RelayError> {
    if !is_bind(datagram) {
        return Err(RelayError::NotBind);
    }
    let declared = usize::from(u16::from_be_bytes([datagram[4], datagram[5]]));
    if datagram.len() != RELAY_BIND_LEN || declared != RELAY_BIND_LEN - HEADER_LEN {
        return Err(RelayError::BadLength);
    }
    let mut channel = [0u8; 8];
    channel.copy_from_slice(&datagram[6..14]);
    let mut raw = [0u8; RELAY_TOKEN_LEN];
    raw.copy_from_slice(&datagram[14..]);
    let token = RelayToken::from_bytes(&raw)?;
    if !token.verify(key) {
        return Err(RelayError::BadTag);
    }
    if u64::from_be_bytes(channel) != token.channel() {
        return Err(RelayError::WrongChannel);
    }
    if u64::from(token.not_after) < unix_secs {
        return Err(RelayError::Expired);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RelayKey {
        RelayKey([7; RELAY_KEY_LEN])
    }

    fn token() -> RelayToken {
        RelayToken::mint(&key(), SessionId([3; 16]), Role::Connecting, 1_000, 60)
    }

    #[test]
    fn relay_bind_round_trips_and_verifies() {
        let mut buf = [0u8; RELAY_BIND_LEN];
        assert_eq!(encode_bind(&token(), &mut buf), Some(RELAY_BIND_LEN));
        assert_eq!(decode_bind(&buf, &key(), 999), Ok(token()));
        assert_eq!(decode_bind(&buf, &key(), 1_000), Ok(token()));
    }

    #[test]
    fn relay_bind_refuses_other_key_expiry_channel_and_length() {
        let mut buf = [0u8; RELAY_BIND_LEN];
        let _ = encode_bind(&token(), &mut buf);
        assert_eq!(
            decode_bind(&buf, &RelayKey([8; 32]), 0),
            Err(RelayError::BadTag)
        );
        assert_eq!(decode_bind(&buf, &key(), 1_001), Err(RelayError::Expired));
        assert_eq!(
            decode_bind(&buf[..RELAY_BIND_LEN - 1], &key(), 0),
            Err(RelayError::BadLength)
        );
        let mut other = buf;
        other[6] ^= 1;
        assert_eq!(
            decode_bind(&other, &key(), 0),
            Err(RelayError::WrongChannel)
        );
        // Every single-bit change of the token is caught by the tag.
        for i in 14..RELAY_BIND_LEN {
            let mut flipped = buf;
            flipped[i] ^= 0x10;
            assert!(decode_bind(&flipped, &key(), 0).is_err(), "byte {i}");
        }
        let mut probe = buf;
        probe[3] = 0x80;
        assert_eq!(decode_bind(&probe, &key(), 0), Err(RelayError::NotBind));
    }

    #[test]
    fn relay_key_debug_hides_the_secret() {
        let text = std::format!("{:?}", key());
        assert!(!text.contains('7'));
    }
}
