//! Registration over Noise IK (S702, 801/802): per-source rate limit before
//! any public-key work, name binding (TOFU or closed), a channel that stays
//! pending until the terminal proves it holds the keys, then key installation
//! at the trigger server.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use core::net::SocketAddr;

use rand_core::{CryptoRng, RngCore};

use super::{SessionEvent, SessionFact, SessionServer, Timer};
use crate::crypto::channel::{Responder, REPLY_OVERHEAD, SEALED_OVERHEAD};
use crate::crypto::{SecureChannel, MAX_HANDSHAKE_PAYLOAD};
use crate::machine::{ConnectionId, Destination, OwnedTransmit};
use crate::names::{RefusalReason, Registration, TrustMode};
use crate::ratelimit::{RateLimited, SourceKey};
use crate::time::Instant;
use crate::wire::{
    DecisionMode, DeviceId, ErrorCode, ErrorReply, HandshakeInit, HandshakeReply, KeyInstall,
    KeyRevoke, Message, Name, PublicKey, Register, RegisterAck, RetryLater, TicketedHandshakeInit,
    UdpKey, ENROL_CODE_LEN, HEADER_LEN, MAX_RETRY_AFTER_SECS, TICKET_LEN, TICKET_SECRET_LEN,
};

use super::events::RegistrationRefusal;
use super::tickets::Admission;
use super::upstream::UpMsg;
use super::{CHANNEL_ORPHAN_GRACE, REGISTRATION_CONFIRM_TIMEOUT, RETRY_LATER_LINGER};

/// Room for a handshake reply around the longest payload the server puts
/// in one (a `RegisterAck`, 46 bytes).
const REPLY_BUF_LEN: usize = REPLY_OVERHEAD + 64;
/// Bytes of an encoded `RegistrationTicket` message.
const TICKET_MESSAGE_LEN: usize = HEADER_LEN + TICKET_LEN + TICKET_SECRET_LEN;
/// Attempts at drawing an unused device ID before giving up (a collision of
/// random 64-bit numbers is already astronomically unlikely).
const DEVICE_ID_ATTEMPTS: usize = 8;

/// One terminal's channel, numbered by its device ID.
pub(super) struct Channel {
    /// The name it registered.
    pub name: String,
    /// The identity key its handshake proved.
    pub key: PublicKey,
    /// Who judges requests aimed at it.
    pub mode: DecisionMode,
    /// The key of its authenticated UDP, installed at the trigger server.
    pub udp_key: UdpKey,
    /// Its UDP socket's local address, as its `Register` said: passed on in
    /// the `KeyInstall` for the trigger server's NAT type guess.
    pub local: Option<core::net::SocketAddr>,
    /// The sealed-record channel.
    pub secure: SecureChannel,
    /// The connection it was last heard on.
    pub conn: Option<ConnectionId>,
    /// Confirmed: the name's live registration (or a replaced one, dropped at once).
    pub live: bool,
    /// When the handshake arrived.
    pub created: Instant,
    /// The unconfirmed-expiry timer.
    pub timer: Option<Instant>,
    /// Requests from it pending or waiting for their deny.
    pub outstanding: u32,
    /// It counts in [`Registrations::unconfirmed`] for its name.
    pub holds_binding: bool,
    /// A decoy: the name is another key's, yet the registration was
    /// answered like any other (so a registration does not tell whether a
    /// name exists). It never becomes the name's live registration, its
    /// requests are denied, and it ends with its stream.
    pub decoy: bool,
    /// Its stream closed: the channel goes at this deadline unless it is
    /// heard on another stream first.
    pub orphan_timer: Option<Instant>,
}

/// The channel tables.
#[derive(Default)]
pub(super) struct Registrations {
    /// Every channel, live and pending, by device ID.
    pub channels: BTreeMap<u64, Channel>,
    /// Name -> device ID of its live registration.
    pub live: BTreeMap<String, u64>,
    /// Pending registrations by age, to evict the oldest.
    pub pending_by_age: BTreeSet<(Instant, u64)>,
    /// Names bound in the registry by a registration not yet confirmed, with
    /// the number of pending channels for each; unbound again if none confirms.
    pub unconfirmed: BTreeMap<String, u32>,
    /// (connection, device): the channels last heard on each stream.
    pub by_conn: BTreeSet<(ConnectionId, u64)>,
    /// Decoy channels by age, the first to make way for an owner at the cap.
    pub decoys_by_age: BTreeSet<(Instant, u64)>,
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// A `HandshakeInit` on a terminal stream: a registration attempt.
    pub(super) fn on_handshake_init(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        remote: SocketAddr,
        init: &HandshakeInit<'_>,
        ticket: Option<&TicketedHandshakeInit<'_>>,
    ) {
        let Some(admission) = self.admit_registration(now, conn, remote, ticket) else {
            return;
        };
        let mut payload = [0u8; MAX_HANDSHAKE_PAYLOAD];
        let Some((responder, register, code)) =
            self.accept_registration(now, conn, init, &mut payload, admission)
        else {
            return;
        };
        let key = responder.initiator_key();
        // Every name is bound and compared in its canonical form (NFKC and
        // case folding): `HOME` registers as `home`.
        let canonical = match crate::names::canonical(register.name.as_str()) {
            Ok(canonical) => canonical,
            Err(e) => {
                let reason = RegistrationRefusal::Registry(RefusalReason::BadName(e));
                self.refuse_registration(conn, responder, register.name.as_str(), key, reason);
                return;
            }
        };
        let Ok(name) = Name::new(&canonical) else {
            return;
        };
        let register = Register { name, ..register };
        if let Some(code) = &code {
            if register.identity == key {
                self.redeem_enrol_code(now, name, key, code);
            }
        }
        let bound = match self.check_registration(&register, key) {
            Ok(device) => self
                .bind_name(name, key, device)
                .map(|holds| (device, holds)),
            Err(reason) => Err((None, reason)),
        };
        let (device, holds_binding, decoy) = match bound {
            Ok((device, holds)) => (device, holds, false),
            Err((Some(device), _)) => (device, false, true),
            Err((None, reason)) => {
                self.refuse_registration(conn, responder, name.as_str(), key, reason);
                return;
            }
        };
        let Some((secure, udp_key)) = self.answer_registration(now, conn, responder, device) else {
            if holds_binding {
                self.release_unconfirmed(name.as_str(), key);
            }
            return;
        };
        let channel = Channel {
            name: name.as_str().to_string(),
            key,
            mode: register.mode,
            udp_key,
            local: register.local,
            secure,
            conn: Some(conn),
            live: false,
            created: now,
            timer: None,
            outstanding: 0,
            holds_binding,
            decoy,
            orphan_timer: None,
        };
        self.keep_pending(now, conn, device, channel);
    }

    /// Admit, before any public-key work: a valid ticket (one AEAD open, one
    /// HMAC) is charged to its identity's bucket and skips the per-source
    /// one; a refused ticket is counted and the attempt falls back to the
    /// source's registration rate. Over either limit: closed.
    fn admit_registration(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        remote: SocketAddr,
        ticket: Option<&TicketedHandshakeInit<'_>>,
    ) -> Option<Admission> {
        if let Some(ticketed) = ticket {
            match self.tickets.open(now, ticketed) {
                Ok(opened) => match self.tickets.charge(now, &opened.key) {
                    Ok(()) => return Some(Admission::ByTicket(opened.key)),
                    Err(limited) => {
                        self.out.counters.identity_rate_limited += 1;
                        self.retry_later(now, conn, limited);
                        return None;
                    }
                },
                Err(_) => self.out.counters.tickets_refused += 1,
            }
        }
        match self
            .registration_limiter
            .check(now, &SourceKey::from_addr(&remote))
        {
            Ok(()) => Some(Admission::BySource),
            Err(limited) => {
                self.out.counters.registrations_rate_limited += 1;
                self.retry_later(now, conn, limited);
                None
            }
        }
    }

    /// Answers a registration attempt a rate limit refused with `RetryLater`
    /// in clear (no cryptography spent on it) and closes its stream
    /// [`RETRY_LATER_LINGER`] later, so that the answer leaves first. Until
    /// then a new attempt on the stream is taken like any other (charged
    /// again); one that registers keeps the stream.
    fn retry_later(&mut self, now: Instant, conn: ConnectionId, limited: RateLimited) {
        let secs = limited.retry_after.as_micros().div_ceil(1_000_000);
        let retry_after_secs = u16::try_from(secs)
            .unwrap_or(u16::MAX)
            .clamp(1, MAX_RETRY_AFTER_SECS);
        self.out.transmit_message(
            Destination::Connection(conn),
            &Message::RetryLater(RetryLater { retry_after_secs }),
        );
        self.guard.linger(now, conn, RETRY_LATER_LINGER);
    }

    /// Closes the stream of a registration attempt refused before its answer.
    fn close_registration(&mut self, conn: ConnectionId) {
        self.conns.remove(&conn);
        self.out.close(conn);
    }

    /// Accept: the Noise IK handshake and its `Register` payload, counting
    /// what fails. The proven key must be the ticket's (else closed and
    /// counted); without a ticket it is charged to its identity's bucket now.
    fn accept_registration<'p>(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        init: &HandshakeInit<'_>,
        payload: &'p mut [u8],
        admission: Admission,
    ) -> Option<(Responder, Register<'p>, Option<[u8; ENROL_CODE_LEN]>)> {
        let (responder, n) =
            match Responder::accept(&mut self.rng, now, &self.keypair, init, payload) {
                Ok(accepted) => accepted,
                Err(_) => {
                    self.out.counters.handshake_failures += 1;
                    return None;
                }
            };
        let key = responder.initiator_key();
        match admission {
            Admission::ByTicket(ticket_key) if ticket_key != key => {
                self.out.counters.ticket_key_mismatches += 1;
                self.close_registration(conn);
                return None;
            }
            Admission::ByTicket(_) => {}
            Admission::BySource => {
                if let Err(limited) = self.tickets.charge(now, &key) {
                    self.out.counters.identity_rate_limited += 1;
                    self.retry_later(now, conn, limited);
                    return None;
                }
            }
        }
        let payload: &'p [u8] = payload;
        match payload.get(..n).map(Message::decode) {
            Some(Ok(Message::Register(register))) => Some((responder, register, None)),
            Some(Ok(Message::EnrolRegister(enrol))) => {
                Some((responder, enrol.register, Some(enrol.code)))
            }
            _ => {
                self.out.counters.ignored_messages += 1;
                None
            }
        }
    }

    /// Check: the identity is the handshake's key, and there is room and a
    /// device ID. At the cap, the key a name is bound to still gets in
    /// (a decoy or the oldest unconfirmed registration makes way): a
    /// flood of fresh registrations never locks an owner out.
    fn check_registration(
        &mut self,
        register: &Register<'_>,
        key: PublicKey,
    ) -> Result<u64, RegistrationRefusal> {
        if register.identity != key {
            return Err(RegistrationRefusal::IdentityMismatch);
        }
        self.make_room_for_pending();
        if self.reg.channels.len() >= self.config.limits.max_channels
            && !(self.registry.key_of(register.name) == Some(key)
                && self.make_room_for_owner(register.name.as_str()))
        {
            return Err(RegistrationRefusal::ServerFull);
        }
        self.fresh_device_id()
            .ok_or(RegistrationRefusal::ServerFull)
    }

    /// Room at the cap for the owner of `name`: the oldest decoy goes, or
    /// else the oldest unconfirmed registration, or else the owner's own
    /// live channel (which its new one replaces anyway). `false` if every
    /// channel is another owner's live one.
    fn make_room_for_owner(&mut self, name: &str) -> bool {
        let victim = self
            .reg
            .decoys_by_age
            .first()
            .or_else(|| self.reg.pending_by_age.first())
            .map(|&(_, device)| device)
            .or_else(|| self.reg.live.get(name).copied());
        match victim {
            Some(device) => {
                self.end_channel(device);
                true
            }
            None => false,
        }
    }

    /// Room for one more pending channel: the oldest unconfirmed one makes way.
    fn make_room_for_pending(&mut self) {
        if self.reg.pending_by_age.len() >= self.config.limits.max_pending_registrations.max(1) {
            if let Some(&(_, oldest)) = self.reg.pending_by_age.first() {
                self.forget_pending(oldest);
            }
        }
    }

    /// Bind: `name` to `key` in the registry; `true` if the channel holds
    /// an unconfirmed binding. A refusal that would tell a fresh key that
    /// the name exists (first key wins: bound to another key, or no room
    /// for new names) carries the device ID of a decoy to answer with.
    fn bind_name(
        &mut self,
        name: Name<'_>,
        key: PublicKey,
        device: u64,
    ) -> Result<bool, (Option<u64>, RegistrationRefusal)> {
        match self.registry.register(name, key) {
            Err(refused) => {
                if let Some(attempt) = refused.impersonation() {
                    self.out
                        .event(SessionEvent::ImpersonationAttempt(attempt.clone()));
                }
                let decoy = self.registry.mode() == TrustMode::TrustOnFirstUse
                    && matches!(
                        refused.reason,
                        RefusalReason::Impersonation(_) | RefusalReason::RegistryFull
                    );
                Err((
                    decoy.then_some(device),
                    RegistrationRefusal::Registry(refused.reason),
                ))
            }
            Ok(Registration::NewBinding) => {
                *self
                    .reg
                    .unconfirmed
                    .entry(name.as_str().to_string())
                    .or_insert(0) += 1;
                Ok(true)
            }
            Ok(Registration::AlreadyBound) => match self.reg.unconfirmed.get_mut(name.as_str()) {
                Some(count) => {
                    *count += 1;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }

    /// Answer: a fresh UDP key in a `RegisterAck` in the handshake reply,
    /// then a fresh `RegistrationTicket` sealed on the new channel; `None`
    /// if sealing failed.
    fn answer_registration(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        responder: Responder,
        device: u64,
    ) -> Option<(SecureChannel, UdpKey)> {
        let key = responder.initiator_key();
        let mut udp_key = UdpKey([0; 32]);
        self.rng.fill_bytes(&mut udp_key.0);
        // The UDP device ID is a keyed hash of the channel number in the
        // reply, so the keepalives do not name the stream's channel.
        let ack = Message::RegisterAck(RegisterAck {
            device_id: self.udp_ids.of(device),
            udp_key,
        });
        let mut ack_bytes = [0u8; 64];
        let mut reply = [0u8; REPLY_BUF_LEN];
        let sent = ack
            .encode(&mut ack_bytes)
            .ok()
            .and_then(|len| ack_bytes.get(..len))
            .and_then(|p| responder.reply(device, p, &mut reply).ok());
        let Some((mut secure, len)) = sent else {
            self.out.counters.seal_failures += 1;
            return None;
        };
        self.out.transmit_message(
            Destination::Connection(conn),
            &Message::HandshakeReply(HandshakeReply {
                channel: device,
                noise: reply.get(..len).unwrap_or_default(),
            }),
        );
        self.send_ticket(now, conn, &mut secure, &key);
        Some((secure, udp_key))
    }

    /// Seals a fresh ticket for `key` on `secure` and sends it on `conn`.
    fn send_ticket(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        secure: &mut SecureChannel,
        key: &PublicKey,
    ) {
        let Some(ticket) = self.tickets.issue(&mut self.rng, now, key) else {
            self.out.counters.seal_failures += 1;
            return;
        };
        let mut plain = [0u8; TICKET_MESSAGE_LEN];
        let mut sealed = [0u8; TICKET_MESSAGE_LEN + SEALED_OVERHEAD];
        let sent = Message::RegistrationTicket(ticket)
            .encode(&mut plain)
            .ok()
            .and_then(|n| plain.get(..n))
            .and_then(|p| secure.seal(p, &mut sealed).ok())
            .and_then(|m| sealed.get(..m))
            .and_then(|bytes| OwnedTransmit::from_bytes(Destination::Connection(conn), bytes));
        match sent {
            Some(t) => self.out.transmit(t),
            None => self.out.counters.seal_failures += 1,
        }
    }

    /// Keep: the channel stays pending until its first record confirms it or its timer fires.
    fn keep_pending(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        device: u64,
        mut channel: Channel,
    ) {
        self.timers.arm(
            Timer::PendingRegistration(device),
            &mut channel.timer,
            now + REGISTRATION_CONFIRM_TIMEOUT,
        );
        self.reg.pending_by_age.insert((now, device));
        if channel.decoy {
            self.reg.decoys_by_age.insert((now, device));
        }
        self.reg.by_conn.insert((conn, device));
        self.guard.attach(conn);
        self.reg.channels.insert(device, channel);
    }

    /// A record of `device`'s channel opened on `conn`: answers go there,
    /// and a channel whose stream had closed is no longer orphaned.
    pub(super) fn channel_heard_on(&mut self, now: Instant, device: u64, conn: ConnectionId) {
        let Some(channel) = self.reg.channels.get_mut(&device) else {
            return;
        };
        let from = channel.conn.replace(conn);
        if let Some(old) = from {
            self.reg.by_conn.remove(&(old, device));
        }
        self.reg.by_conn.insert((conn, device));
        self.guard.moved(now, from, conn);
        self.timers
            .disarm(Timer::ChannelOrphaned(device), &mut channel.orphan_timer);
    }

    /// Stream `conn` closed: each channel last heard on it goes after
    /// [`CHANNEL_ORPHAN_GRACE`] unless it is heard on another stream first
    /// (a terminal whose stream is lost registers again anyway).
    pub(super) fn channels_lost_connection(&mut self, now: Instant, conn: ConnectionId) {
        let devices: alloc::vec::Vec<u64> = self
            .reg
            .by_conn
            .range((conn, 0)..=(conn, u64::MAX))
            .map(|&(_, d)| d)
            .collect();
        for device in devices {
            if let Some(channel) = self.reg.channels.get_mut(&device) {
                self.timers.arm(
                    Timer::ChannelOrphaned(device),
                    &mut channel.orphan_timer,
                    now + CHANNEL_ORPHAN_GRACE,
                );
            }
        }
    }

    /// An orphaned channel's grace ended.
    pub(super) fn orphan_expired(&mut self, device: u64) {
        if let Some(channel) = self.reg.channels.get_mut(&device) {
            // The timer already left the index.
            channel.orphan_timer = None;
        }
        self.out.counters.channels_orphaned += 1;
        self.end_channel(device);
    }

    /// Ends a channel for good: an unconfirmed one is forgotten, a
    /// confirmed one's UDP key is revoked at the trigger server.
    pub(super) fn end_channel(&mut self, device: u64) {
        let Some(channel) = self.reg.channels.get(&device) else {
            return;
        };
        if !channel.live {
            self.forget_pending(device);
            return;
        }
        let now = self.clock.latest();
        self.send_upstream(
            now,
            UpMsg::KeyRevoke(KeyRevoke {
                device_id: DeviceId(device),
            }),
        );
        self.drop_channel(device);
    }

    /// Answers a refused registration with `Error{0, RegistrationRefused}`
    /// (or `Busy` when full) in the handshake reply; no channel is kept.
    fn refuse_registration(
        &mut self,
        conn: ConnectionId,
        responder: Responder,
        name: &str,
        key: PublicKey,
        reason: RegistrationRefusal,
    ) {
        let code = match reason {
            RegistrationRefusal::ServerFull => ErrorCode::Busy,
            _ => ErrorCode::RegistrationRefused,
        };
        let error = Message::Error(ErrorReply {
            request_id: 0,
            code,
        });
        let mut error_bytes = [0u8; 16];
        let mut reply = [0u8; REPLY_BUF_LEN];
        let sent = error
            .encode(&mut error_bytes)
            .ok()
            .and_then(|len| error_bytes.get(..len))
            .and_then(|p| responder.reply(0, p, &mut reply).ok());
        match sent {
            Some((_, len)) => self.out.transmit_message(
                Destination::Connection(conn),
                &Message::HandshakeReply(HandshakeReply {
                    channel: 0,
                    noise: reply.get(..len).unwrap_or_default(),
                }),
            ),
            None => self.out.counters.seal_failures += 1,
        }
        self.out.event(SessionEvent::RegistrationRefused {
            name: name.to_string(),
            key,
            reason,
        });
    }

    /// A fresh random nonzero device ID not in use.
    fn fresh_device_id(&mut self) -> Option<u64> {
        (0..DEVICE_ID_ATTEMPTS)
            .map(|_| self.rng.next_u64())
            .find(|id| *id != 0 && !self.reg.channels.contains_key(id))
    }

    /// The first record from a pending channel opened: the terminal holds the
    /// keys, so its registration becomes the name's live one.
    pub(super) fn confirm_registration(&mut self, now: Instant, device: u64) {
        let Some(channel) = self.reg.channels.get_mut(&device) else {
            return;
        };
        channel.live = true;
        self.timers
            .disarm(Timer::PendingRegistration(device), &mut channel.timer);
        self.reg.pending_by_age.remove(&(channel.created, device));
        let name = channel.name.clone();
        let key = channel.key;
        let mode = channel.mode;
        let udp_key = channel.udp_key;
        let local = channel.local;
        let channel_holds_binding = channel.holds_binding;
        channel.holds_binding = false;
        if channel.decoy {
            // Reachable over UDP like any terminal, by no name.
            self.send_upstream(
                now,
                UpMsg::KeyInstall(KeyInstall {
                    device_id: DeviceId(device),
                    udp_key,
                    local,
                }),
            );
            return;
        }
        let Ok(wire_name) = crate::wire::Name::new(&name) else {
            self.drop_channel(device);
            return;
        };
        // The binding may have moved since the handshake (an operator unbind,
        // or the binding expired with another pending channel): check again.
        let mut new_binding = channel_holds_binding && self.reg.unconfirmed.remove(&name).is_some();
        match self.registry.key_of(wire_name) {
            Some(bound) if bound == key => {}
            Some(_) => {
                self.drop_channel(device);
                return;
            }
            None => match self.registry.register(wire_name, key) {
                Ok(Registration::NewBinding) => new_binding = true,
                Ok(Registration::AlreadyBound) => {}
                Err(_) => {
                    self.drop_channel(device);
                    return;
                }
            },
        }
        if new_binding {
            self.out.fact(SessionFact::NameBound {
                name: name.clone(),
                key,
            });
        }
        self.binding_seen(now, &name);
        if let Some(old) = self.reg.live.insert(name.clone(), device) {
            if old != device {
                self.send_upstream(
                    now,
                    UpMsg::KeyRevoke(KeyRevoke {
                        device_id: DeviceId(old),
                    }),
                );
                self.drop_channel(old);
            }
        }
        self.send_upstream(
            now,
            UpMsg::KeyInstall(KeyInstall {
                device_id: DeviceId(device),
                udp_key,
                local,
            }),
        );
        self.out.event(SessionEvent::Registered {
            name,
            key,
            device_id: DeviceId(device),
            udp_device_id: self.udp_ids.of(device),
            mode,
        });
    }

    /// An unconfirmed registration reached its deadline.
    pub(super) fn pending_registration_expired(&mut self, device: u64) {
        if let Some(channel) = self.reg.channels.get_mut(&device) {
            // The timer already left the index.
            channel.timer = None;
        }
        self.forget_pending(device);
    }

    /// Forgets an unconfirmed registration (expired or evicted).
    fn forget_pending(&mut self, device: u64) {
        let Some(channel) = self.reg.channels.get(&device) else {
            return;
        };
        if channel.live {
            return;
        }
        let name = channel.name.clone();
        let (key, holds_binding) = (channel.key, channel.holds_binding);
        self.out.counters.registrations_unconfirmed += 1;
        self.drop_channel(device);
        if holds_binding {
            self.release_unconfirmed(&name, key);
        }
    }

    /// One pending channel of `name` went away unconfirmed: if it was the
    /// last one holding a binding it made, the binding goes too.
    fn release_unconfirmed(&mut self, name: &str, key: PublicKey) {
        let Some(count) = self.reg.unconfirmed.get_mut(name) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.reg.unconfirmed.remove(name);
            if let Ok(n) = crate::wire::Name::new(name) {
                if !self.reg.live.contains_key(name) && self.registry.key_of(n) == Some(key) {
                    self.registry.unbind(n);
                }
            }
        }
    }

    /// Removes a channel (replaced, expired or evicted). Requests aimed at
    /// it fail; messages to it are dropped from now on.
    pub(super) fn drop_channel(&mut self, device: u64) {
        let Some(mut channel) = self.reg.channels.remove(&device) else {
            return;
        };
        channel
            .conn
            .inspect(|&c| self.guard.detach(self.clock.latest(), c));
        self.timers
            .disarm(Timer::PendingRegistration(device), &mut channel.timer);
        self.timers
            .disarm(Timer::ChannelOrphaned(device), &mut channel.orphan_timer);
        self.reg.pending_by_age.remove(&(channel.created, device));
        self.reg.decoys_by_age.remove(&(channel.created, device));
        if let Some(conn) = channel.conn {
            self.reg.by_conn.remove(&(conn, device));
        }
        if self.reg.live.get(&channel.name) == Some(&device) {
            self.reg.live.remove(&channel.name);
        }
        self.fail_requests_aimed_at(device);
    }
}
