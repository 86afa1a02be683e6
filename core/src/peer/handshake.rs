//! The peer handshake: `Noise_KKpsk0_25519_AESGCM_SHA256` between the two
//! terminals of a session, on the direct path.
//!
//! Each side knows the other's static public key from its address
//! notification (`peer_key`), and both hold the session key the session
//! server issued (S508), used as the pre-shared key. The prologue is
//! `"tryst peer v1"` followed by the 16-byte session ID, so a handshake
//! recorded in one session fails in any other. Only the two permitted
//! terminals can complete it (static keys), and an operator who knows the
//! session key but not a terminal's secret cannot read or forge the traffic.
//!
//! The connecting side ([`Role::Connecting`]) initiates. Both sides end with
//! a [`PacketCipher`] whose channel number is [`channel_id`] of the session.

use core::fmt;

use clatter::handshakepattern::noise_kk_psk0;
use clatter::traits::Handshaker;
use rand_core::{CryptoRng, RngCore};

use super::cipher::{PacketCipher, PacketKey};
use crate::crypto::noise::{self, fresh_keypair, Hs, PendingInitiator, DH_LEN};
use crate::crypto::{HandshakeError, StaticKeypair};
use crate::time::Instant;
use crate::wire::{PublicKey, Role, SessionId, SessionKey, SESSION_ID_LEN, TAG_LEN};

/// The Noise protocol of the peer channel.
pub const PEER_PROTOCOL_NAME: &str = "Noise_KKpsk0_25519_AESGCM_SHA256";
/// The start of the peer prologue; the session ID follows.
pub const PROLOGUE_PREFIX: &[u8] = b"tryst peer v1";
/// Length of the peer prologue: prefix and session ID.
pub const PROLOGUE_LEN: usize = 13 + SESSION_ID_LEN;
/// Bytes either KKpsk0 message adds to its payload: `e` (32) and the tag (16).
pub const MESSAGE_OVERHEAD: usize = DH_LEN + TAG_LEN;

/// What a terminal knows about a session when it starts the peer handshake.
#[derive(Clone, Copy)]
pub struct PeerParams<'a> {
    /// This terminal's long-term key pair.
    pub local: &'a StaticKeypair,
    /// The other terminal's public key, from the address notification.
    pub peer_key: PublicKey,
    /// The session, from the address notification.
    pub session_id: SessionId,
    /// The session key, from the address notification: the pre-shared key.
    pub session_key: &'a SessionKey,
}

impl fmt::Debug for PeerParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerParams")
            .field("local", &self.local.public_key())
            .field("peer_key", &self.peer_key)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Whether the side with this role sends the first handshake message.
pub fn initiates(role: Role) -> bool {
    role == Role::Connecting
}

/// The channel number of a session's peer records: the first 8 bytes of the
/// session ID, big-endian. Both sides compute it; nothing is negotiated.
pub fn channel_id(session_id: &SessionId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&session_id.0[..8]);
    u64::from_be_bytes(first)
}

/// `"tryst peer v1" || session_id`.
pub fn prologue(session_id: &SessionId) -> [u8; PROLOGUE_LEN] {
    let mut p = [0u8; PROLOGUE_LEN];
    p[..PROLOGUE_PREFIX.len()].copy_from_slice(PROLOGUE_PREFIX);
    p[PROLOGUE_PREFIX.len()..].copy_from_slice(&session_id.0);
    p
}

/// A KKpsk0 handshake state with a fresh ephemeral key and the PSK queued.
fn kk_state<R: RngCore + CryptoRng>(
    rng: &mut R,
    initiator: bool,
    params: &PeerParams<'_>,
) -> Result<Hs, HandshakeError> {
    if noise::is_low_order(&params.peer_key.0) {
        return Err(HandshakeError::WeakKey);
    }
    let e = fresh_keypair(rng);
    let mut hs = Hs::new(
        noise_kk_psk0(),
        &prologue(&params.session_id),
        initiator,
        Some(params.local.0.clone()),
        Some(e),
        Some(params.peer_key.0),
        None,
    )?;
    // One 32-byte PSK: within clatter's limits (32 bytes, at most 4 keys).
    hs.push_psk(&params.session_key.0);
    Ok(hs)
}

/// The keys of a finished KKpsk0 handshake as the peer path's
/// [`PacketCipher`]: `k1` (initiator to responder) and `k2` from the Noise
/// `Split()`, oriented for this side, and the handshake hash.
fn packet_cipher(hs: Hs, channel: u64) -> Result<PacketCipher, HandshakeError> {
    let (send, recv, handshake_hash) = noise::split_keys(hs, PacketKey::new)?;
    Ok(PacketCipher::new(channel, send, recv, handshake_hash))
}

/// The connecting terminal, between its first message and the reply.
pub struct PeerInitiator {
    /// The state after message 1; a reply is tried on a copy, so a forged
    /// reply cannot spoil it.
    pending: PendingInitiator,
    channel: u64,
}

impl fmt::Debug for PeerInitiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerInitiator")
            .field("channel", &self.channel)
            .field("started", &self.pending.started())
            .finish_non_exhaustive()
    }
}

impl PeerInitiator {
    /// Writes the first message ([`MESSAGE_OVERHEAD`] + `payload.len()`
    /// bytes) into `out` and returns the state and the message length.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        now: Instant,
        params: &PeerParams<'_>,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(PeerInitiator, usize), HandshakeError> {
        let hs = kk_state(rng, true, params)?;
        let (pending, n) = PendingInitiator::start(hs, now, payload, out)?;
        Ok((
            PeerInitiator {
                pending,
                channel: channel_id(&params.session_id),
            },
            n,
        ))
    }

    /// When the first message was written.
    pub fn started(&self) -> Instant {
        self.pending.started()
    }

    /// When the handshake expires: [`crate::crypto::HANDSHAKE_TIMEOUT`] after the start.
    pub fn deadline(&self) -> Instant {
        self.pending.deadline()
    }

    /// Whether the reply is overdue.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.pending.is_expired(now)
    }

    /// Reads the reply, writes its payload into `payload_out` and yields
    /// the peer path's [`PacketCipher`] (raw split keys, in-place packets)
    /// and the payload length. No expiry check: the peer session bounds
    /// the handshake by its own punch window. A reply that fails leaves
    /// this state as it was; a second good reply gives
    /// [`HandshakeError::AlreadyFinished`].
    pub fn finish_packets(
        &mut self,
        message: &[u8],
        payload_out: &mut [u8],
    ) -> Result<(PacketCipher, usize), HandshakeError> {
        let channel = self.channel;
        self.pending
            .complete(message, payload_out, |hs| packet_cipher(hs, channel))
    }
}

/// The connected terminal, after reading the first message.
pub struct PeerResponder {
    hs: Hs,
    channel: u64,
    received: Instant,
}

impl fmt::Debug for PeerResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerResponder")
            .field("channel", &self.channel)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl PeerResponder {
    /// Reads the first message, writes its payload into `payload_out` and
    /// returns the state and the payload length. Fails with
    /// [`HandshakeError::AuthenticationFailed`] unless the sender holds the
    /// expected key, the same session key and the same session ID.
    pub fn accept<R: RngCore + CryptoRng>(
        rng: &mut R,
        now: Instant,
        params: &PeerParams<'_>,
        message: &[u8],
        payload_out: &mut [u8],
    ) -> Result<(PeerResponder, usize), HandshakeError> {
        let mut hs = kk_state(rng, false, params)?;
        let n = noise::read_message(&mut hs, message, payload_out)?;
        Ok((
            PeerResponder {
                hs,
                channel: channel_id(&params.session_id),
                received: now,
            },
            n,
        ))
    }

    /// Writes the reply ([`MESSAGE_OVERHEAD`] + `payload.len()` bytes) into
    /// `out` and returns the peer path's [`PacketCipher`] and the reply's
    /// length.
    pub fn reply_packets(
        mut self,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(PacketCipher, usize), HandshakeError> {
        let n = noise::write_message(&mut self.hs, payload, out)?;
        let cipher = packet_cipher(self.hs, self.channel)?;
        Ok((cipher, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::packet::DATA_HEADER_LEN;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const T0: Instant = Instant::from_micros(5);
    const SESSION: SessionId = SessionId([0x5e; SESSION_ID_LEN]);
    const KEY: SessionKey = SessionKey([0x4b; 32]);

    struct Terminals {
        rng: ChaCha20Rng,
        connecting: StaticKeypair,
        connected: StaticKeypair,
    }

    fn terminals(seed: u64) -> Terminals {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let connecting = StaticKeypair::generate(&mut rng);
        let connected = StaticKeypair::generate(&mut rng);
        Terminals {
            rng,
            connecting,
            connected,
        }
    }

    /// Runs the handshake with what each side believes; returns both packet
    /// ciphers or the first error.
    fn run(
        t: &mut Terminals,
        initiator_view: PeerParams<'_>,
        responder_view: PeerParams<'_>,
    ) -> Result<(PacketCipher, PacketCipher), HandshakeError> {
        let mut m1 = [0u8; 128];
        let (mut init, n1) = PeerInitiator::start(&mut t.rng, T0, &initiator_view, b"hi", &mut m1)?;
        assert_eq!(n1, MESSAGE_OVERHEAD + 2);
        let mut p = [0u8; 128];
        let (resp, pn) = PeerResponder::accept(&mut t.rng, T0, &responder_view, &m1[..n1], &mut p)?;
        assert_eq!(&p[..pn], b"hi");
        let mut m2 = [0u8; 128];
        let (b, n2) = resp.reply_packets(b"hello", &mut m2)?;
        let (a, pn) = init.finish_packets(&m2[..n2], &mut p)?;
        assert_eq!(&p[..pn], b"hello");
        Ok((a, b))
    }

    fn views<'a>(t: &'a Terminals) -> (PeerParams<'a>, PeerParams<'a>) {
        let a = PeerParams {
            local: &t.connecting,
            peer_key: t.connected.public_key(),
            session_id: SESSION,
            session_key: &KEY,
        };
        let b = PeerParams {
            local: &t.connected,
            peer_key: t.connecting.public_key(),
            session_id: SESSION,
            session_key: &KEY,
        };
        (a, b)
    }

    #[test]
    fn permitted_pair_completes_the_handshake_and_exchanges_records() {
        let mut t = terminals(1);
        let (a_view, b_view) = owned_views(&t);
        let (mut a, mut b) = run(&mut t, a_view.get(), b_view.get()).unwrap();
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert_eq!(a.channel(), channel_id(&SESSION));
        let mut buf = [0u8; 128];
        let picture = b"picture bytes";
        buf[DATA_HEADER_LEN..][..picture.len()].copy_from_slice(picture);
        let n = a.seal_in_place(0, &mut buf, picture.len()).unwrap();
        assert_eq!(b.open_in_place(&mut buf[..n]).unwrap(), (0, &picture[..]));
        let audio = b"audio frame";
        buf[DATA_HEADER_LEN..][..audio.len()].copy_from_slice(audio);
        let n = b.seal_in_place(0, &mut buf, audio.len()).unwrap();
        assert_eq!(a.open_in_place(&mut buf[..n]).unwrap(), (0, &audio[..]));
    }

    /// Owned copies of the views (keys cloned), so `t.rng` can be lent while they live.
    struct OwnedView {
        local: StaticKeypair,
        peer_key: PublicKey,
        session_id: SessionId,
        session_key: SessionKey,
    }

    impl OwnedView {
        fn get(&self) -> PeerParams<'_> {
            PeerParams {
                local: &self.local,
                peer_key: self.peer_key,
                session_id: self.session_id,
                session_key: &self.session_key,
            }
        }
    }

    fn own(v: PeerParams<'_>) -> OwnedView {
        OwnedView {
            local: v.local.clone(),
            peer_key: v.peer_key,
            session_id: v.session_id,
            session_key: *v.session_key,
        }
    }

    fn owned_views(t: &Terminals) -> (OwnedView, OwnedView) {
        let (a, b) = views(t);
        (own(a), own(b))
    }

    #[test]
    fn wrong_psk_fails_the_handshake() {
        let mut t = terminals(2);
        let (a, mut b) = owned_views(&t);
        b.session_key = SessionKey([0x4c; 32]);
        let r = run(&mut t, a.get(), b.get());
        assert_eq!(r.err(), Some(HandshakeError::AuthenticationFailed));
    }

    #[test]
    fn wrong_peer_key_fails_the_handshake() {
        let mut t = terminals(3);
        let (mut a, b) = owned_views(&t);
        // The connecting side believes the peer is someone else.
        a.peer_key = StaticKeypair::generate(&mut t.rng).public_key();
        let r = run(&mut t, a.get(), b.get());
        assert_eq!(r.err(), Some(HandshakeError::AuthenticationFailed));
    }

    #[test]
    fn initiator_other_than_the_notified_peer_fails_the_handshake() {
        let mut t = terminals(4);
        let (mut a, b) = owned_views(&t);
        // An impostor with its own key pair but the right session key and ID.
        a.local = StaticKeypair::generate(&mut t.rng);
        let r = run(&mut t, a.get(), b.get());
        assert_eq!(r.err(), Some(HandshakeError::AuthenticationFailed));
    }

    #[test]
    fn different_session_id_fails_the_handshake() {
        let mut t = terminals(5);
        let (a, mut b) = owned_views(&t);
        b.session_id = SessionId([0x5f; SESSION_ID_LEN]);
        let r = run(&mut t, a.get(), b.get());
        assert_eq!(r.err(), Some(HandshakeError::AuthenticationFailed));
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        let mut t = terminals(6);
        let (mut a, b) = owned_views(&t);
        a.peer_key = PublicKey([0; 32]);
        let r = run(&mut t, a.get(), b.get());
        assert_eq!(r.err(), Some(HandshakeError::WeakKey));
    }

    #[test]
    fn packet_ciphers_of_both_sides_match_and_a_forged_reply_is_harmless() {
        let mut t = terminals(7);
        let (a_view, b_view) = owned_views(&t);
        let mut m1 = [0u8; 128];
        let (mut init, n1) =
            PeerInitiator::start(&mut t.rng, T0, &a_view.get(), &[], &mut m1).unwrap();
        let mut p = [0u8; 16];
        let (resp, _) =
            PeerResponder::accept(&mut t.rng, T0, &b_view.get(), &m1[..n1], &mut p).unwrap();
        let mut m2 = [0u8; 128];
        let (mut b, n2) = resp.reply_packets(&[], &mut m2).unwrap();
        let mut forged = m2;
        forged[n2 - 1] ^= 1;
        assert_eq!(
            init.finish_packets(&forged[..n2], &mut p).err(),
            Some(HandshakeError::AuthenticationFailed)
        );
        let (mut a, _) = init.finish_packets(&m2[..n2], &mut p).unwrap();
        assert_eq!(
            init.finish_packets(&m2[..n2], &mut p).err(),
            Some(HandshakeError::AlreadyFinished)
        );
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert_eq!(a.channel(), channel_id(&SESSION));
        let mut buf = [0u8; 64];
        buf[DATA_HEADER_LEN..][..5].copy_from_slice(b"hello");
        let n = a.seal_in_place(0, &mut buf, 5).unwrap();
        assert_eq!(b.open_in_place(&mut buf[..n]).unwrap(), (0, &b"hello"[..]));
        let n = b.seal_in_place(0, &mut buf, 0).unwrap();
        assert_eq!(a.open_in_place(&mut buf[..n]).unwrap().0, 0);
    }

    #[test]
    fn protocol_name_is_the_one_clatter_runs() {
        assert_eq!(
            Hs::build_name(&noise_kk_psk0()).as_str(),
            PEER_PROTOCOL_NAME
        );
    }

    #[test]
    fn connecting_role_initiates() {
        assert!(initiates(Role::Connecting));
        assert!(!initiates(Role::Connected));
    }

    #[test]
    fn prologue_is_the_prefix_then_the_session_id() {
        let p = prologue(&SESSION);
        assert_eq!(&p[..13], b"tryst peer v1");
        assert_eq!(&p[13..], &SESSION.0);
        assert_eq!(channel_id(&SESSION), 0x5e5e_5e5e_5e5e_5e5e);
    }
}
