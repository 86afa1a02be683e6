//! Registration tickets, in the manner of TLS session tickets: after a
//! registration the session server hands the terminal (sealed on its
//! channel) an opaque ticket that only the server can open, binding the
//! terminal's identity key, an issue time and a fresh binder secret. The
//! terminal presents it in clear before its next handshakes, with a binder
//! (HMAC-SHA-256 of the Noise bytes under the secret). One AEAD open and
//! one HMAC, before any Diffie-Hellman, tell the server which identity the
//! attempt claims, so it can charge that identity instead of the shared
//! per-source bucket.
//!
//! The ticket key is derived (HKDF-SHA-256) from the server's static
//! secret, so tickets survive a restart; tickets are sealed with
//! AES-256-GCM under a random 96-bit nonce.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use clatter::crypto::hash::Sha256;
use clatter::traits::Hash;
use core::fmt;
use core::time::Duration;
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::StaticKeypair;
use crate::time::Instant;
use crate::wire::{PublicKey, PUBLIC_KEY_LEN, TICKET_BINDER_LEN, TICKET_LEN, TICKET_SECRET_LEN};

/// How long a ticket opens after its issue.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How far in the future an issue time may lie (a server clock stepped back
/// after a restart) before the ticket is refused.
pub const TICKET_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The salt of the ticket key's HKDF: names the purpose and the version.
const TICKET_KDF_SALT: &[u8] = b"tryst registration ticket key v1";
/// Associated data of every sealed ticket.
const TICKET_AAD: &[u8] = b"tryst ticket v1";
const NONCE_LEN: usize = 12;
const PLAIN_LEN: usize = PUBLIC_KEY_LEN + 8 + TICKET_SECRET_LEN;

/// Why a presented ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// It did not open under the server's key: forged, altered or from another server.
    Forged,
    /// Issued more than [`TICKET_LIFETIME`] ago.
    Expired,
    /// Issued more than [`TICKET_CLOCK_SKEW`] in the future.
    FromTheFuture,
    /// The binder is not the HMAC of these Noise bytes under the ticket's secret.
    BadBinder,
    /// This very handshake (same binder) was presented before: a replay.
    Replayed,
}

impl fmt::Display for TicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TicketError::Forged => "ticket does not open",
            TicketError::Expired => "ticket expired",
            TicketError::FromTheFuture => "ticket issued in the future",
            TicketError::BadBinder => "ticket binder does not match",
            TicketError::Replayed => "ticketed handshake replayed",
        })
    }
}

impl core::error::Error for TicketError {}

/// What an opened ticket says.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedTicket {
    /// The identity key it was issued to.
    pub key: PublicKey,
    /// When it was issued, on the server's clock.
    pub issued: Instant,
}

impl fmt::Debug for OpenedTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedTicket")
            .field("key", &self.key)
            .field("issued", &self.issued)
            .finish()
    }
}

/// The session server's ticket key. `Debug` never shows it.
pub struct TicketKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

impl TicketKey {
    /// The ticket key of a server: HKDF-SHA-256 of its static secret.
    pub fn derive(keypair: &StaticKeypair) -> Self {
        let (okm, _) = Sha256::hkdf(TICKET_KDF_SALT, keypair.secret_bytes());
        let cipher = Aes256Gcm::new(okm.as_slice().into());
        TicketKey { cipher }
    }

    /// A ticket for `key` issued at `now`, and its binder secret.
    pub fn issue<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        now: Instant,
        key: &PublicKey,
    ) -> Option<([u8; TICKET_LEN], [u8; TICKET_SECRET_LEN])> {
        let mut secret = [0u8; TICKET_SECRET_LEN];
        rng.fill_bytes(&mut secret);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut plain = [0u8; PLAIN_LEN];
        let (k, rest) = plain.split_at_mut(PUBLIC_KEY_LEN);
        let (t, s) = rest.split_at_mut(8);
        k.copy_from_slice(&key.0);
        t.copy_from_slice(&now.as_micros().to_be_bytes());
        s.copy_from_slice(&secret);
        let sealed = self.cipher.encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            TICKET_AAD,
            &mut plain,
        );
        let Ok(tag) = sealed else {
            plain.zeroize();
            secret.zeroize();
            return None;
        };
        let mut ticket = [0u8; TICKET_LEN];
        let (n, rest) = ticket.split_at_mut(NONCE_LEN);
        let (c, g) = rest.split_at_mut(PLAIN_LEN);
        n.copy_from_slice(&nonce);
        c.copy_from_slice(&plain);
        g.copy_from_slice(tag.as_slice());
        Some((ticket, secret))
    }

    /// Opens `ticket` at `now` and checks `binder` over `noise`: the
    /// identity it claims, or why it is refused. One AEAD open and one HMAC.
    pub fn open(
        &self,
        now: Instant,
        ticket: &[u8; TICKET_LEN],
        binder: &[u8; TICKET_BINDER_LEN],
        noise: &[u8],
    ) -> Result<OpenedTicket, TicketError> {
        let (nonce, rest) = ticket.split_at(NONCE_LEN);
        let (sealed, tag) = rest.split_at(PLAIN_LEN);
        let mut plain = [0u8; PLAIN_LEN];
        plain.copy_from_slice(sealed);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                TICKET_AAD,
                &mut plain,
                Tag::from_slice(tag),
            )
            .map_err(|_| TicketError::Forged)?;
        let (key, rest) = plain.split_at(PUBLIC_KEY_LEN);
        let (issued, secret) = rest.split_at(8);
        let mut key_bytes = [0u8; PUBLIC_KEY_LEN];
        key_bytes.copy_from_slice(key);
        let mut issued_bytes = [0u8; 8];
        issued_bytes.copy_from_slice(issued);
        let issued = Instant::from_micros(u64::from_be_bytes(issued_bytes));
        let good_binder = binder_of(secret, noise);
        plain.zeroize();
        if issued > now.saturating_add(TICKET_CLOCK_SKEW) {
            return Err(TicketError::FromTheFuture);
        }
        if now.saturating_duration_since(issued) > TICKET_LIFETIME {
            return Err(TicketError::Expired);
        }
        if !bool::from(good_binder.ct_eq(binder)) {
            return Err(TicketError::BadBinder);
        }
        Ok(OpenedTicket {
            key: PublicKey(key_bytes),
            issued,
        })
    }
}

/// The salt of the device-ID key's HKDF.
const DEVICE_ID_KDF_SALT: &[u8] = b"tryst udp device id key v1";

/// The session server's key for the UDP device IDs: a terminal's device ID
/// (in clear in its keepalives) is HMAC-SHA-256 of its stream's channel
/// number under this key, so an observer cannot link the two flows, and
/// the server needs no table to compute it. `Debug` never shows it.
pub struct DeviceIdKey([u8; 32]);

impl fmt::Debug for DeviceIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceIdKey(<redacted>)")
    }
}

impl Drop for DeviceIdKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl DeviceIdKey {
    /// The device-ID key of a server: HKDF-SHA-256 of its static secret.
    pub fn derive(keypair: &StaticKeypair) -> Self {
        let (okm, _) = Sha256::hkdf(DEVICE_ID_KDF_SALT, keypair.secret_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(okm.as_slice());
        DeviceIdKey(key)
    }

    /// The nonzero device ID of the channel numbered `channel`.
    pub fn device_id(&self, channel: u64) -> u64 {
        let mac = Sha256::hmac(&self.0, &channel.to_be_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(mac.as_slice().get(..8).unwrap_or(&[1; 8]));
        u64::from_be_bytes(id).max(1)
    }
}

/// The binder of a ticketed handshake: HMAC-SHA-256 of the Noise bytes
/// under the ticket's secret.
pub fn binder_of(secret: &[u8], noise: &[u8]) -> [u8; TICKET_BINDER_LEN] {
    let mac = Sha256::hmac(secret, noise);
    let mut out = [0u8; TICKET_BINDER_LEN];
    out.copy_from_slice(mac.as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn server() -> (TicketKey, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        (TicketKey::derive(&StaticKeypair::generate(&mut rng)), rng)
    }

    const NOISE: &[u8] = b"the noise bytes of one handshake init";

    #[test]
    fn ticket_opens_for_its_key_with_its_binder() {
        let (k, mut rng) = server();
        let key = PublicKey([3; 32]);
        let t0 = Instant::from_micros(1_000_000);
        let (ticket, secret) = k.issue(&mut rng, t0, &key).expect("issues");
        let binder = binder_of(&secret, NOISE);
        let opened = k
            .open(t0 + Duration::from_secs(3600), &ticket, &binder, NOISE)
            .expect("opens");
        assert_eq!(opened.key, key);
        assert_eq!(opened.issued, t0);
        // The secret and key are not in clear in the ticket.
        assert!(!ticket.windows(32).any(|w| w == secret || w == key.0));
    }

    #[test]
    fn forged_or_altered_ticket_is_refused() {
        let (k, mut rng) = server();
        let now = Instant::from_micros(5);
        let (mut ticket, secret) = k.issue(&mut rng, now, &PublicKey([3; 32])).expect("issues");
        let binder = binder_of(&secret, NOISE);
        assert_eq!(
            k.open(now, &[0x7c; TICKET_LEN], &binder, NOISE),
            Err(TicketError::Forged)
        );
        ticket[20] ^= 1;
        assert_eq!(
            k.open(now, &ticket, &binder, NOISE),
            Err(TicketError::Forged)
        );
    }

    #[test]
    fn ticket_of_another_server_is_refused_and_a_restart_keeps_tickets() {
        let (k, mut rng) = server();
        let now = Instant::from_micros(5);
        let (ticket, secret) = k.issue(&mut rng, now, &PublicKey([3; 32])).expect("issues");
        let binder = binder_of(&secret, NOISE);
        let other = TicketKey::derive(&StaticKeypair::generate(&mut rng));
        assert_eq!(
            other.open(now, &ticket, &binder, NOISE),
            Err(TicketError::Forged)
        );
        // The same static key after a restart derives the same ticket key.
        let (restarted, _) = server();
        assert!(restarted.open(now, &ticket, &binder, NOISE).is_ok());
    }

    #[test]
    fn expired_or_future_ticket_is_refused() {
        let (k, mut rng) = server();
        let t0 = Instant::from_micros(10_000_000_000);
        let (ticket, secret) = k.issue(&mut rng, t0, &PublicKey([3; 32])).expect("issues");
        let binder = binder_of(&secret, NOISE);
        let late = t0 + TICKET_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            k.open(late, &ticket, &binder, NOISE),
            Err(TicketError::Expired)
        );
        assert!(k
            .open(t0 + TICKET_LIFETIME, &ticket, &binder, NOISE)
            .is_ok());
        let early = Instant::from_micros(1);
        assert_eq!(
            k.open(early, &ticket, &binder, NOISE),
            Err(TicketError::FromTheFuture)
        );
    }

    #[test]
    fn copied_ticket_on_other_noise_bytes_is_refused() {
        let (k, mut rng) = server();
        let now = Instant::from_micros(5);
        let (ticket, secret) = k.issue(&mut rng, now, &PublicKey([3; 32])).expect("issues");
        let binder = binder_of(&secret, NOISE);
        assert_eq!(
            k.open(now, &ticket, &binder, b"an attacker's garbage"),
            Err(TicketError::BadBinder)
        );
        assert_eq!(
            k.open(now, &ticket, &[0; TICKET_BINDER_LEN], NOISE),
            Err(TicketError::BadBinder)
        );
    }
}
