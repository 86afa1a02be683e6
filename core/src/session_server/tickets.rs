//! Registration tickets at the session server (issue 12, point 4): the
//! ticket key, the per-identity registration bucket, and the admission of a
//! ticketed handshake before any public-key work. See [`crate::crypto::ticket`].

use alloc::boxed::Box;
use core::time::Duration;

use rand_core::{CryptoRng, RngCore};

use crate::crypto::ticket::{OpenedTicket, TicketError, TicketKey};
use crate::crypto::StaticKeypair;
use crate::ratelimit::{Limit, RateLimiter};
use crate::time::Instant;
use crate::wire::{PublicKey, TicketedHandshakeInit};

use super::RATE_LIMIT_TRACKED_KEYS;

/// Registrations per proven identity (ticketed or not): a burst of 5, then
/// one per 10 seconds, so one key cannot re-register in a loop.
pub const IDENTITY_REGISTRATIONS: Limit = Limit::one_every(5, Duration::from_secs(10));

/// How a registration attempt was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Through the per-source bucket; the identity is charged once proven.
    BySource,
    /// By a valid ticket for this key, already charged to its identity bucket.
    ByTicket(PublicKey),
}

/// The ticket key and the per-identity bucket.
pub(super) struct Tickets {
    key: TicketKey,
    identities: Box<RateLimiter<PublicKey, RATE_LIMIT_TRACKED_KEYS>>,
}

impl Tickets {
    /// The tickets of a server with this static key.
    pub(super) fn new<R: RngCore + CryptoRng>(keypair: &StaticKeypair, rng: &mut R) -> Self {
        Tickets {
            key: TicketKey::derive(keypair),
            identities: Box::new(RateLimiter::with_seed(
                IDENTITY_REGISTRATIONS,
                rng.next_u64(),
            )),
        }
    }

    /// Opens a presented ticket and checks its binder (one AEAD open, one HMAC).
    pub(super) fn open(
        &self,
        now: Instant,
        init: &TicketedHandshakeInit<'_>,
    ) -> Result<OpenedTicket, TicketError> {
        self.key.open(now, &init.ticket, &init.binder, init.noise)
    }

    /// Charges one registration to `key`; `false` if it is over its limit.
    pub(super) fn charge(&mut self, now: Instant, key: &PublicKey) -> bool {
        self.identities.check(now, key).is_ok()
    }

    /// A fresh ticket for `key` and its binder secret.
    pub(super) fn issue<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        now: Instant,
        key: &PublicKey,
    ) -> Option<crate::wire::RegistrationTicket> {
        let (ticket, secret) = self.key.issue(rng, now, key)?;
        Some(crate::wire::RegistrationTicket { ticket, secret })
    }
}
