//! Registration tickets at the session server (issue 12, point 4): the
//! ticket key, the per-identity registration bucket, and the admission of a
//! ticketed handshake before any public-key work; and the UDP device IDs,
//! keyed hashes of the channel numbers. See [`crate::crypto::ticket`].

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::time::Duration;

use rand_core::{CryptoRng, RngCore};

use crate::crypto::ticket::{DeviceIdKey, OpenedTicket, TicketError, TicketKey};
use crate::crypto::StaticKeypair;
use crate::ratelimit::{Limit, RateLimited, RateLimiter};
use crate::time::Instant;
use crate::wire::{DeviceId, PublicKey, TicketedHandshakeInit, TICKET_BINDER_LEN};

use super::RATE_LIMIT_TRACKED_KEYS;

/// Registrations per proven identity (ticketed or not), the default of
/// [`super::RateLimits::registrations_per_identity`]: a burst of 10, then
/// one per 2 seconds, so a household's back-to-back `connect`s get through
/// while one key cannot re-register in a loop.
pub const IDENTITY_REGISTRATIONS: Limit = Limit::one_every(10, Duration::from_secs(2));

/// How a registration attempt was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Through the per-source bucket; the identity is charged once proven.
    BySource,
    /// By a valid ticket for this key, already charged to its identity bucket.
    ByTicket(PublicKey),
}

/// Binders of recent valid ticketed handshakes remembered to refuse a
/// verbatim replay (which would otherwise charge the victim's identity).
pub const MAX_RECENT_BINDERS: usize = 4096;

/// The ticket key, the per-identity bucket and the recent binders.
pub(super) struct Tickets {
    key: TicketKey,
    identities: Box<RateLimiter<PublicKey, RATE_LIMIT_TRACKED_KEYS>>,
    recent: BTreeSet<[u8; TICKET_BINDER_LEN]>,
    recent_order: VecDeque<[u8; TICKET_BINDER_LEN]>,
}

impl Tickets {
    /// The tickets of a server with this static key, charging each proven
    /// identity at most `per_identity`.
    pub(super) fn new<R: RngCore + CryptoRng>(
        keypair: &StaticKeypair,
        per_identity: Limit,
        rng: &mut R,
    ) -> Self {
        Tickets {
            key: TicketKey::derive(keypair),
            identities: RateLimiter::boxed(per_identity, rng.next_u64()),
            recent: BTreeSet::new(),
            recent_order: VecDeque::new(),
        }
    }

    /// Opens a presented ticket and checks its binder (one AEAD open, one
    /// HMAC), then that this handshake was not presented before.
    pub(super) fn open(
        &mut self,
        now: Instant,
        init: &TicketedHandshakeInit<'_>,
    ) -> Result<OpenedTicket, TicketError> {
        let opened = self.key.open(now, &init.ticket, &init.binder, init.noise)?;
        if !self.recent.insert(init.binder) {
            return Err(TicketError::Replayed);
        }
        self.recent_order.push_back(init.binder);
        while self.recent_order.len() > MAX_RECENT_BINDERS {
            if let Some(oldest) = self.recent_order.pop_front() {
                self.recent.remove(&oldest);
            }
        }
        Ok(opened)
    }

    /// Charges one registration to `key`; over its limit, when it may try again.
    pub(super) fn charge(&mut self, now: Instant, key: &PublicKey) -> Result<(), RateLimited> {
        self.identities.check(now, key)
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

/// Most `KeyInstall`s awaiting the trigger server's acknowledgement; beyond,
/// the oldest is forgotten (its terminal starts keepalives on its timeout).
pub const MAX_PENDING_KEY_ACKS: usize = 4096;

/// The UDP device IDs (issue 12, point 6): what the trigger server and the
/// keepalives know a terminal by is a keyed hash of its stream's channel
/// number, never the number itself, so the two flows do not link.
pub(super) struct UdpIds {
    key: DeviceIdKey,
    /// Device ID -> channel of each `KeyInstall` not yet acknowledged, in
    /// the order sent (to answer the acknowledgement with `KeyReady`).
    awaiting_ack: BTreeMap<u64, u64>,
    order: VecDeque<u64>,
}

impl UdpIds {
    /// The device IDs of a server with this static key.
    pub(super) fn new(keypair: &StaticKeypair) -> Self {
        UdpIds {
            key: DeviceIdKey::derive(keypair),
            awaiting_ack: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The device ID of `channel`.
    pub(super) fn of(&self, channel: u64) -> DeviceId {
        DeviceId(self.key.device_id(channel))
    }

    /// A `KeyInstall` for `channel` goes out: remember whose it is.
    pub(super) fn installing(&mut self, channel: u64) {
        let id = self.key.device_id(channel);
        if self.awaiting_ack.insert(id, channel).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_PENDING_KEY_ACKS {
            if let Some(oldest) = self.order.pop_front() {
                self.awaiting_ack.remove(&oldest);
            }
        }
    }

    /// The channel whose `KeyInstall` the trigger server acknowledged.
    pub(super) fn acknowledged(&mut self, id: DeviceId) -> Option<u64> {
        let channel = self.awaiting_ack.remove(&id.0)?;
        self.order.retain(|x| *x != id.0);
        Some(channel)
    }
}
