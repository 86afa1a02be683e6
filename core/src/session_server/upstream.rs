//! The session server's secure link to the trigger server
//! ([`Destination::Upstream`]): the server is the Noise IK initiator with
//! the configured trigger server key, sends `Poll` in its `HandshakeInit`,
//! and expects `Poll` back. Messages for the trigger server wait in a
//! bounded queue while the link is being set up. After a loss the server
//! handshakes again when it next needs the link, no sooner than a backoff
//! (1 s, doubling to 60 s, reset by a successful handshake).
//!
//! A channel due for re-keying keeps carrying messages while a new
//! handshake runs on the same stream; records on the previous channel are
//! still opened after the switch.

use alloc::collections::VecDeque;

use rand_core::{CryptoRng, RngCore};

use super::tickets::UdpIds;
use super::{SessionEvent, SessionServer, Timer, UPSTREAM_RETRY_MAX, UPSTREAM_RETRY_MIN};
use crate::crypto::channel::INIT_OVERHEAD;
use crate::crypto::{Initiator, SecureChannel};
use crate::machine::{Destination, OwnedTransmit};
use crate::time::Instant;
use crate::wire::{
    AddressInquiry, DeviceId, EndTriggerRequest, HandshakeInit, HandshakeReply, KeyInstall,
    KeyReady, KeyRevoke, Message, Poll, Sealed, TriggerRequest, MAX_PLAIN_MESSAGE_LEN,
};

/// A message for the trigger server (all fixed-size, so the queue holds
/// them by value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpMsg {
    /// Wake a target (S503, 806).
    Trigger(TriggerRequest),
    /// End trigger for a party of a forced end (S1605).
    EndTrigger(EndTriggerRequest),
    /// Both sides' addresses (S507, 809).
    Address(AddressInquiry),
    /// Accept this device's UDP key.
    KeyInstall(KeyInstall),
    /// Forget this device.
    KeyRevoke(KeyRevoke),
}

impl UpMsg {
    /// The message for the trigger server: the channel numbers the server
    /// tables use become the terminals' UDP device IDs.
    fn message(&self, ids: &UdpIds) -> Message<'static> {
        let id = |d: DeviceId| ids.of(d.0);
        match *self {
            UpMsg::Trigger(m) => Message::TriggerRequest(TriggerRequest {
                device_id: id(m.device_id),
                ..m
            }),
            UpMsg::EndTrigger(m) => Message::EndTriggerRequest(EndTriggerRequest {
                device_id: id(m.device_id),
                ..m
            }),
            UpMsg::Address(m) => Message::AddressInquiry(AddressInquiry {
                first: id(m.first),
                second: id(m.second),
                ..m
            }),
            UpMsg::KeyInstall(m) => Message::KeyInstall(KeyInstall {
                device_id: id(m.device_id),
                ..m
            }),
            UpMsg::KeyRevoke(m) => Message::KeyRevoke(KeyRevoke {
                device_id: id(m.device_id),
            }),
        }
    }
}

/// The link's state.
pub(super) struct Upstream {
    /// The established channel, if any.
    current: Option<SecureChannel>,
    /// The channel before a re-key, still opened for late records.
    previous: Option<SecureChannel>,
    /// A handshake in flight.
    handshake: Option<Initiator>,
    handshake_timer: Option<Instant>,
    retry_timer: Option<Instant>,
    /// No handshake starts before this.
    retry_at: Instant,
    /// The wait after the next failure.
    backoff: core::time::Duration,
    /// Messages waiting for the link.
    queue: VecDeque<UpMsg>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            current: None,
            previous: None,
            handshake: None,
            handshake_timer: None,
            retry_timer: None,
            retry_at: Instant::ZERO,
            backoff: UPSTREAM_RETRY_MIN,
            queue: VecDeque::new(),
        }
    }
}

impl Upstream {
    /// Whether a channel is established.
    pub(super) fn is_up(&self) -> bool {
        self.current.is_some()
    }

    /// The wait before the next attempt, doubling the one after.
    fn next_backoff(&mut self) -> core::time::Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(UPSTREAM_RETRY_MAX);
        wait
    }
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// Sends `msg` to the trigger server, or queues it until the link is up.
    pub(super) fn send_upstream(&mut self, now: Instant, msg: UpMsg) {
        if let UpMsg::KeyInstall(m) = msg {
            self.udp_ids.installing(m.device_id.0);
        }
        if let Some(channel) = self.upstream.current.as_mut() {
            let rekey = channel.needs_rekey(now);
            if seal_into(channel, &msg.message(&self.udp_ids), &mut self.out) {
                if rekey {
                    self.ensure_handshake(now);
                }
                return;
            }
            // Nonces exhausted: this channel is finished.
            self.upstream.current = None;
        }
        if self.upstream.queue.len() >= self.config.limits.max_upstream_queue.max(1) {
            self.upstream.queue.pop_front();
            self.out.counters.upstream_queue_dropped += 1;
        }
        self.upstream.queue.push_back(msg);
        self.ensure_handshake(now);
    }

    /// Starts a handshake now if none runs and the backoff allows, else arms
    /// the retry timer.
    fn ensure_handshake(&mut self, now: Instant) {
        if self.upstream.handshake.is_some() {
            return;
        }
        if now >= self.upstream.retry_at {
            self.start_handshake(now);
        } else {
            let at = self.upstream.retry_at;
            self.timers
                .arm(Timer::UpstreamRetry, &mut self.upstream.retry_timer, at);
        }
    }

    /// Writes a `HandshakeInit` carrying `Poll` to the upstream link.
    fn start_handshake(&mut self, now: Instant) {
        self.timers
            .disarm(Timer::UpstreamRetry, &mut self.upstream.retry_timer);
        // At the end of the clock every deadline saturates to `now`: the
        // handshake could never finish and its timer would be due at once,
        // so the timer loop would start handshakes forever. Start none.
        if now + UPSTREAM_RETRY_MIN <= now {
            return;
        }
        let mut poll = [0u8; 8];
        let Ok(poll_len) = Message::Poll(Poll).encode(&mut poll) else {
            return;
        };
        let mut noise = [0u8; INIT_OVERHEAD + 8];
        match Initiator::start(
            &mut self.rng,
            now,
            &self.keypair,
            &self.trigger_server_key,
            poll.get(..poll_len).unwrap_or_default(),
            &mut noise,
        ) {
            Ok((initiator, n)) => {
                self.out.transmit_message(
                    Destination::Upstream,
                    &Message::HandshakeInit(HandshakeInit {
                        noise: noise.get(..n).unwrap_or_default(),
                    }),
                );
                let deadline = initiator.deadline().max(now + UPSTREAM_RETRY_MIN);
                self.upstream.handshake = Some(initiator);
                self.timers.arm(
                    Timer::UpstreamHandshake,
                    &mut self.upstream.handshake_timer,
                    deadline,
                );
            }
            Err(_) => {
                // A weak configured key: try again later, never spin.
                self.out.counters.handshake_failures += 1;
                self.upstream.retry_at = now + self.upstream.next_backoff();
                let at = self.upstream.retry_at;
                self.timers
                    .arm(Timer::UpstreamRetry, &mut self.upstream.retry_timer, at);
            }
        }
    }

    /// Whether the link is needed: messages wait, or the channel wants a re-key.
    fn upstream_needed(&self, now: Instant) -> bool {
        match &self.upstream.current {
            None => !self.upstream.queue.is_empty(),
            Some(channel) => channel.needs_rekey(now),
        }
    }

    /// The handshake got no reply in time.
    pub(super) fn upstream_handshake_expired(&mut self, now: Instant) {
        self.upstream.handshake_timer = None;
        self.upstream.handshake = None;
        self.out.counters.handshake_failures += 1;
        self.upstream.retry_at = now + self.upstream.next_backoff();
        if self.upstream_needed(now) {
            self.ensure_handshake(now);
        }
    }

    /// The backoff passed.
    pub(super) fn upstream_retry(&mut self, now: Instant) {
        self.upstream.retry_timer = None;
        if self.upstream_needed(now) {
            self.ensure_handshake(now);
        }
    }

    /// The stream to the trigger server closed.
    pub(super) fn upstream_lost(&mut self, now: Instant) {
        self.upstream.current = None;
        self.upstream.previous = None;
        if self.upstream.handshake.take().is_some() {
            self.out.counters.handshake_failures += 1;
        }
        self.timers
            .disarm(Timer::UpstreamHandshake, &mut self.upstream.handshake_timer);
        self.upstream.retry_at = now + self.upstream.next_backoff();
        if self.upstream_needed(now) {
            self.ensure_handshake(now);
        }
    }

    /// The trigger server's `HandshakeReply`.
    pub(super) fn on_upstream_reply(&mut self, now: Instant, reply: &HandshakeReply<'_>) {
        let Some(initiator) = self.upstream.handshake.as_mut() else {
            self.out.counters.ignored_messages += 1;
            return;
        };
        let mut payload = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let Ok((channel, n)) = initiator.finish(now, reply, &mut payload) else {
            // A forged reply leaves the initiator able to take the real one.
            self.out.counters.handshake_failures += 1;
            return;
        };
        self.upstream.handshake = None;
        self.timers
            .disarm(Timer::UpstreamHandshake, &mut self.upstream.handshake_timer);
        if !matches!(
            payload.get(..n).map(Message::decode),
            Some(Ok(Message::Poll(_)))
        ) {
            // Not the trigger server's hello: the peer holds the key but
            // speaks something else. Keep the channel anyway; it is proven.
            self.out.counters.ignored_messages += 1;
        }
        self.upstream.previous = self.upstream.current.replace(channel);
        self.upstream.backoff = UPSTREAM_RETRY_MIN;
        self.upstream.retry_at = now;
        self.timers
            .disarm(Timer::UpstreamRetry, &mut self.upstream.retry_timer);
        self.out.event(SessionEvent::UpstreamEstablished);
        self.flush_upstream(now);
    }

    /// Sends every queued message that still matters.
    fn flush_upstream(&mut self, now: Instant) {
        while let Some(msg) = self.upstream.queue.pop_front() {
            if !self.upstream_still_wanted(&msg) {
                continue;
            }
            let Some(channel) = self.upstream.current.as_mut() else {
                self.upstream.queue.push_front(msg);
                return;
            };
            if !seal_into(channel, &msg.message(&self.udp_ids), &mut self.out) {
                self.upstream.current = None;
                self.upstream.queue.push_front(msg);
                self.ensure_handshake(now);
                return;
            }
        }
    }

    /// A queued trigger or address inquiry whose request was decided
    /// meanwhile is not sent.
    fn upstream_still_wanted(&self, msg: &UpMsg) -> bool {
        match msg {
            UpMsg::Trigger(m) => self.requests.wants_operation(m.op_id),
            UpMsg::Address(m) => self.requests.wants_operation(m.op_id),
            _ => true,
        }
    }

    /// A sealed record from the trigger server.
    pub(super) fn on_upstream_sealed(&mut self, now: Instant, record: &Sealed<'_>) {
        let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let mut result = None;
        for channel in [&mut self.upstream.current, &mut self.upstream.previous]
            .into_iter()
            .flatten()
        {
            if channel.channel() == record.channel {
                result = Some(channel.open(record, &mut plain));
                if matches!(result, Some(Ok(_))) {
                    break;
                }
            }
        }
        let n = match result {
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                self.out.counters.open_failures += 1;
                return;
            }
            None => {
                self.out.counters.unknown_channel += 1;
                return;
            }
        };
        match plain.get(..n).map(Message::decode) {
            Some(Ok(Message::TriggerResult(result))) => self.on_trigger_result(now, &result),
            Some(Ok(Message::AddressReply(reply))) => self.on_address_reply(now, &reply),
            Some(Ok(Message::KeyInstallAck(ack))) => self.on_key_installed(ack.device_id),
            _ => self.out.counters.ignored_messages += 1,
        }
    }

    /// The trigger server holds `device`'s key: its terminal may start
    /// keepalives (`KeyReady`, sealed), so its first one is not dropped.
    fn on_key_installed(&mut self, id: DeviceId) {
        match self.udp_ids.acknowledged(id) {
            Some(device) if self.reg.channels.get(&device).is_some_and(|c| c.live) => {
                self.send_to_device(device, &Message::KeyReady(KeyReady));
            }
            _ => self.out.counters.stale_answers += 1,
        }
    }
}

/// Seals `message` on `channel` into a transmit for the upstream link;
/// false if the channel cannot seal any more.
fn seal_into(channel: &mut SecureChannel, message: &Message<'_>, out: &mut super::Outputs) -> bool {
    // The largest message for the trigger server is a `KeyInstall` with an
    // IPv6 local address (65 bytes).
    let mut plain = [0u8; 80];
    let Ok(n) = message.encode(&mut plain) else {
        out.counters.seal_failures += 1;
        return true;
    };
    let mut sealed = [0u8; 80 + crate::crypto::channel::SEALED_OVERHEAD];
    match channel.seal(plain.get(..n).unwrap_or_default(), &mut sealed) {
        Ok(m) => {
            match OwnedTransmit::from_bytes(
                Destination::Upstream,
                sealed.get(..m).unwrap_or_default(),
            ) {
                Some(t) => out.transmit(t),
                None => out.counters.seal_failures += 1,
            }
            true
        }
        Err(_) => {
            out.counters.seal_failures += 1;
            false
        }
    }
}
