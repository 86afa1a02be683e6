//! Cross-server connection requests: the messages session servers of one
//! cluster pass each other (through the shared store's notifications, the
//! driver's transport), and what the server does with them.
//!
//! A requester's server that has no live registration of a bound target
//! asks the cluster ([`PeerBody::Request`], to every server, with the
//! requester's address it located): the server holding the target runs
//! the seed's flow as for a local requester (trigger, permission check,
//! address inquiry, session ID and key), owns the session and its record,
//! notifies its target and hands the requester's notification back
//! ([`PeerBody::Granted`]). The requester's server keeps its uniform
//! denial armed at the deny time meanwhile: whatever the reason (no server
//! holds the target, the owner refused or died), the requester hears the
//! same `Error{NotPermitted}` at the same time as for a local target. The
//! requester's end and extension messages go to the owner
//! ([`PeerBody::FromTerminal`]); the owner's answers and end triggers for
//! it come back ([`PeerBody::Deliver`], [`PeerBody::EndTrigger`]).

use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::time::Instant;
use crate::wire::{Name, PublicKey, SessionId, MAX_NAME_LEN, MAX_PLAIN_MESSAGE_LEN};

/// The codec's version byte, first in every message.
pub const PEER_VERSION: u8 = 1;
/// Longest encoded peer message (a `FromTerminal` with a 64-byte name and
/// the longest plain message), well under PostgreSQL's 8000-byte
/// notification payload once hex-encoded.
pub const MAX_PEER_MESSAGE_LEN: usize =
    2 + 32 + 33 + 1 + MAX_NAME_LEN + 32 + 2 + MAX_PLAIN_MESSAGE_LEN;

/// One message between session servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMessage {
    /// The sending server's public key.
    pub from: PublicKey,
    /// The server it is for, or `None` for every server of the cluster.
    pub to: Option<PublicKey>,
    /// What it says.
    pub body: PeerBody,
}

/// What a peer message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerBody {
    /// (tag 1) A connection request for a target this server does not
    /// hold: the server holding it decides it.
    Request {
        /// The requester's server's number for it.
        fwd: u64,
        /// The requester's canonical name.
        requester: String,
        /// The requester's identity key.
        requester_key: PublicKey,
        /// The requester's address, as the trigger server sees it.
        requester_addr: SocketAddr,
        /// The target's canonical name.
        target: String,
        /// The granted duration, seconds.
        duration_secs: u32,
    },
    /// (tag 2) The request `fwd` was granted: the requester's plain
    /// `AddressNotification`.
    Granted {
        /// The requester's server's number for the request.
        fwd: u64,
        /// The plain message for the requester.
        notification: Vec<u8>,
    },
    /// (tag 3) A plain message for the live registration `name` (an
    /// extension's answer).
    Deliver {
        /// The terminal's canonical name.
        name: String,
        /// The plain message.
        message: Vec<u8>,
    },
    /// (tag 4) A plain message from a party of a session the receiver
    /// owns (an end notification or extension request).
    FromTerminal {
        /// The terminal's canonical name.
        name: String,
        /// Its identity key.
        key: PublicKey,
        /// The plain message.
        message: Vec<u8>,
    },
    /// (tag 5) The owner forces `session_id` to end: end-trigger `name`.
    EndTrigger {
        /// The session.
        session_id: SessionId,
        /// The party's canonical name.
        name: String,
    },
}

/// A peer message that does not decode (short, long, unknown tag or
/// version, a bad flag, name or length, trailing bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerDecodeError;

impl core::fmt::Display for PeerDecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("not a valid peer message")
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl PeerMessage {
    /// The message's bytes; `None` if a name or message is longer than
    /// the codec carries.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        out.push(PEER_VERSION);
        let tag = match &self.body {
            PeerBody::Request { .. } => 1,
            PeerBody::Granted { .. } => 2,
            PeerBody::Deliver { .. } => 3,
            PeerBody::FromTerminal { .. } => 4,
            PeerBody::EndTrigger { .. } => 5,
        };
        out.push(tag);
        out.extend_from_slice(&self.from.0);
        match &self.to {
            Some(to) => {
                out.push(1);
                out.extend_from_slice(&to.0);
            }
            None => out.push(0),
        }
        let names_ok = |n: &str| Name::new(n).is_ok();
        let bytes_ok = |b: &[u8]| b.len() <= MAX_PLAIN_MESSAGE_LEN;
        match &self.body {
            PeerBody::Request {
                fwd,
                requester,
                requester_key,
                requester_addr,
                target,
                duration_secs,
            } => {
                if !names_ok(requester) || !names_ok(target) {
                    return None;
                }
                out.extend_from_slice(&fwd.to_be_bytes());
                put_name(&mut out, requester);
                out.extend_from_slice(&requester_key.0);
                match requester_addr.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&requester_addr.port().to_be_bytes());
                put_name(&mut out, target);
                out.extend_from_slice(&duration_secs.to_be_bytes());
            }
            PeerBody::Granted { fwd, notification } => {
                if !bytes_ok(notification) {
                    return None;
                }
                out.extend_from_slice(&fwd.to_be_bytes());
                put_bytes(&mut out, notification);
            }
            PeerBody::Deliver { name, message } => {
                if !names_ok(name) || !bytes_ok(message) {
                    return None;
                }
                put_name(&mut out, name);
                put_bytes(&mut out, message);
            }
            PeerBody::FromTerminal { name, key, message } => {
                if !names_ok(name) || !bytes_ok(message) {
                    return None;
                }
                put_name(&mut out, name);
                out.extend_from_slice(&key.0);
                put_bytes(&mut out, message);
            }
            PeerBody::EndTrigger { session_id, name } => {
                if !names_ok(name) {
                    return None;
                }
                out.extend_from_slice(&session_id.0);
                put_name(&mut out, name);
            }
        }
        Some(out)
    }

    /// Decodes `bytes`: canonical (what decodes re-encodes to the same
    /// bytes), every length bounded.
    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, PeerDecodeError> {
        let mut r = Reader(bytes);
        if r.u8()? != PEER_VERSION {
            return Err(PeerDecodeError);
        }
        let tag = r.u8()?;
        let from = PublicKey(r.array()?);
        let to = match r.u8()? {
            0 => None,
            1 => Some(PublicKey(r.array()?)),
            _ => return Err(PeerDecodeError),
        };
        let body = match tag {
            1 => {
                let fwd = u64::from_be_bytes(r.array()?);
                let requester = r.name()?;
                let requester_key = PublicKey(r.array()?);
                let ip = match r.u8()? {
                    4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                    _ => return Err(PeerDecodeError),
                };
                let port = u16::from_be_bytes(r.array()?);
                let target = r.name()?;
                let duration_secs = u32::from_be_bytes(r.array()?);
                PeerBody::Request {
                    fwd,
                    requester,
                    requester_key,
                    requester_addr: SocketAddr::new(ip, port),
                    target,
                    duration_secs,
                }
            }
            2 => PeerBody::Granted {
                fwd: u64::from_be_bytes(r.array()?),
                notification: r.bytes()?,
            },
            3 => PeerBody::Deliver {
                name: r.name()?,
                message: r.bytes()?,
            },
            4 => PeerBody::FromTerminal {
                name: r.name()?,
                key: PublicKey(r.array()?),
                message: r.bytes()?,
            },
            5 => PeerBody::EndTrigger {
                session_id: SessionId(r.array()?),
                name: r.name()?,
            },
            _ => return Err(PeerDecodeError),
        };
        if !r.0.is_empty() {
            return Err(PeerDecodeError);
        }
        Ok(PeerMessage { from, to, body })
    }
}

/// A cursor over the bytes being decoded.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PeerDecodeError> {
        if self.0.len() < n {
            return Err(PeerDecodeError);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, PeerDecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PeerDecodeError> {
        self.take(N)?.try_into().map_err(|_| PeerDecodeError)
    }

    fn name(&mut self) -> Result<String, PeerDecodeError> {
        let n = usize::from(self.u8()?);
        let text = core::str::from_utf8(self.take(n)?).map_err(|_| PeerDecodeError)?;
        let canonical = crate::names::canonical(text).map_err(|_| PeerDecodeError)?;
        if canonical != text {
            return Err(PeerDecodeError);
        }
        Ok(canonical)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, PeerDecodeError> {
        let n = usize::from(u16::from_be_bytes(self.array()?));
        if n > MAX_PLAIN_MESSAGE_LEN {
            return Err(PeerDecodeError);
        }
        Ok(self.take(n)?.to_vec())
    }
}

/// Most requests a server has handed to the cluster and not yet heard
/// back about (each also holds one of its requester's outstanding slots).
pub const MAX_FORWARDED: usize = 4096;

/// A request this server handed to the cluster, waiting for a grant; its
/// uniform denial is armed at its deny time meanwhile.
pub(super) struct Forwarded {
    /// The requester's channel.
    pub requester: u64,
    pub requester_name: String,
    pub requester_key: PublicKey,
    pub request_id: u32,
    pub target: String,
    pub duration_secs: u32,
    /// The key of its armed denial.
    pub denial: u64,
}

/// A session another server owns whose party is registered here.
pub(super) struct RemoteSession {
    /// The owning server.
    pub owner: PublicKey,
    /// The local party's canonical name.
    pub name: String,
}

/// Where a session message came from: a local channel, or a party on
/// another server (through its server).
#[derive(Debug, Clone, Copy)]
pub(super) enum Sender<'a> {
    /// A terminal's channel here.
    Device(u64),
    /// A party registered at `server`.
    Peer {
        server: PublicKey,
        name: &'a str,
        key: PublicKey,
    },
}

/// A requester registered at another server, as its request says.
#[derive(Debug, Clone, Copy)]
pub(super) struct RemoteRequester {
    /// The requester's server.
    pub server: PublicKey,
    /// That server's number for the request.
    pub fwd: u64,
    /// The requester's address.
    pub addr: SocketAddr,
}

/// The device number remote requesters are counted under in the request
/// tables (their fairness share is one, together).
pub(super) const REMOTE_REQUESTER: u64 = u64::MAX;

impl<R: rand_core::RngCore + rand_core::CryptoRng> super::SessionServer<R> {
    /// Routes connection requests for targets registered at other servers
    /// of the cluster (`true`), or denies them as offline (`false`, the
    /// default: a lone server).
    pub fn set_peers(&mut self, enabled: bool) {
        self.peers = enabled;
    }

    /// The next message for another server, and the number of durable
    /// facts that must be stored before it leaves (it may acknowledge
    /// them): the driver sends it once that many of this server's facts
    /// were stored.
    pub fn poll_peer(&mut self) -> Option<(u64, PeerMessage)> {
        self.peer_out.pop_front()
    }

    /// A message from another server (the driver checked nothing: every
    /// field is checked here). Messages from this server itself, and for
    /// another, are ignored.
    pub fn handle_peer(&mut self, now: Instant, message: &PeerMessage) {
        let now = self.begin(now);
        let me = self.keypair.public_key();
        if !self.peers || message.from == me || message.to.is_some_and(|to| to != me) {
            return;
        }
        let from = message.from;
        match &message.body {
            PeerBody::Request {
                fwd,
                requester,
                requester_key,
                requester_addr,
                target,
                duration_secs,
            } => self.on_peer_request(
                now,
                RemoteRequester {
                    server: from,
                    fwd: *fwd,
                    addr: *requester_addr,
                },
                requester,
                *requester_key,
                target,
                *duration_secs,
            ),
            PeerBody::Granted { fwd, notification } => {
                self.on_peer_granted(from, *fwd, notification)
            }
            PeerBody::Deliver { name, message } => self.on_peer_deliver(from, name, message),
            PeerBody::FromTerminal { name, key, message } => {
                let sender = Sender::Peer {
                    server: from,
                    name,
                    key: *key,
                };
                match crate::wire::Message::decode(message) {
                    Ok(crate::wire::Message::EndNotification(note)) => {
                        self.on_end_notification(now, sender, &note)
                    }
                    Ok(crate::wire::Message::ExtensionRequest(req)) => {
                        self.on_extension_request(now, sender, &req)
                    }
                    _ => self.out.counters.ignored_messages += 1,
                }
            }
            PeerBody::EndTrigger { session_id, name } => {
                self.on_peer_end_trigger(now, from, *session_id, name)
            }
        }
    }

    /// Queues `body` for `to` (every server: `None`), after the facts
    /// emitted so far.
    pub(super) fn send_peer(&mut self, to: Option<PublicKey>, body: PeerBody) {
        if self.peer_out.len() >= self.config.limits.max_queued_transmits.max(1) {
            self.peer_out.pop_front();
            self.out.counters.dropped_transmits += 1;
        }
        let message = PeerMessage {
            from: self.keypair.public_key(),
            to,
            body,
        };
        self.peer_out.push_back((self.out.facts_total, message));
    }

    /// The plain bytes of `message` (for a peer to deliver).
    pub(super) fn plain(&mut self, message: &crate::wire::Message<'_>) -> Option<Vec<u8>> {
        let mut buf = [0u8; MAX_PLAIN_MESSAGE_LEN];
        match message.encode(&mut buf) {
            Ok(n) => buf.get(..n).map(<[u8]>::to_vec),
            Err(_) => {
                self.out.counters.seal_failures += 1;
                None
            }
        }
    }

    /// A bound target without a live registration here: the request goes
    /// to the cluster once the requester's address is known (an address
    /// inquiry for it), its uniform denial armed at `deny_at` meanwhile.
    /// `false` if peers are off or the table is full (deny as offline).
    pub(super) fn forward_request(
        &mut self,
        now: Instant,
        deny_at: Instant,
        forwarded: Forwarded,
        denial: super::requests::Denial,
    ) -> bool {
        if !self.peers || self.forwarded.len() >= MAX_FORWARDED {
            return false;
        }
        let device = forwarded.requester;
        let Some(key) = self.schedule_denial_keyed(now, deny_at, denial) else {
            return true;
        };
        let fwd = self.requests.fresh_key();
        self.forwarded.insert(
            fwd,
            Forwarded {
                denial: key,
                ..forwarded
            },
        );
        self.locate_for_forward(now, fwd, device);
        true
    }

    /// A forwarded request's denial went out: it is no longer waited for.
    pub(super) fn forget_forwarded(&mut self, denial: u64) {
        self.forwarded.retain(|_, f| f.denial != denial);
    }

    /// The requester's address for forwarded request `fwd` came back.
    pub(super) fn forward_located(&mut self, fwd: u64, addr: Option<SocketAddr>) {
        let Some(f) = self.forwarded.get(&fwd) else {
            self.out.counters.stale_answers += 1;
            return;
        };
        // No address: its denial goes out at its time.
        let Some(requester_addr) = addr else {
            return;
        };
        let body = PeerBody::Request {
            fwd,
            requester: f.requester_name.clone(),
            requester_key: f.requester_key,
            requester_addr,
            target: f.target.clone(),
            duration_secs: f.duration_secs,
        };
        self.send_peer(None, body);
    }

    /// The owner granted forwarded request `fwd`: the requester gets its
    /// notification (unless its denial already went out), and the session
    /// is noted so its messages go to the owner.
    fn on_peer_granted(&mut self, from: PublicKey, fwd: u64, notification: &[u8]) {
        let Some(f) = self.forwarded.get(&fwd) else {
            self.out.counters.stale_answers += 1;
            return;
        };
        let Ok(crate::wire::Message::AddressNotification(note)) =
            crate::wire::Message::decode(notification)
        else {
            self.out.counters.ignored_messages += 1;
            return;
        };
        let target_ok =
            crate::names::canonical(note.peer_name.as_str()).is_ok_and(|t| t == f.target);
        if note.role != crate::wire::Role::Connecting || !target_ok {
            self.out.counters.ignored_messages += 1;
            return;
        }
        let Some(f) = self.forwarded.remove(&fwd) else {
            return;
        };
        // The owner does not know the requester's request ID.
        let mut note = note;
        note.request_id = f.request_id;
        let Some(mut denial) = self.requests.denials.remove(&f.denial) else {
            return;
        };
        self.timers
            .disarm(super::Timer::Denial(f.denial), &mut denial.timer);
        self.release_outstanding(f.requester);
        while self.remote_order.len() >= self.config.limits.max_sessions.max(1) {
            if let Some(oldest) = self.remote_order.pop_front() {
                self.remote_sessions.remove(&oldest);
            }
        }
        self.remote_sessions.insert(
            note.session_id.0,
            RemoteSession {
                owner: from,
                name: f.requester_name.clone(),
            },
        );
        self.remote_order.push_back(note.session_id.0);
        self.send_to_device(
            f.requester,
            &crate::wire::Message::AddressNotification(note),
        );
    }

    /// The owner's answer for a party here (an extension's grant or
    /// refusal), for a session it owns.
    fn on_peer_deliver(&mut self, from: PublicKey, name: &str, message: &[u8]) {
        let session = match crate::wire::Message::decode(message) {
            Ok(crate::wire::Message::ExtensionGrant(m)) => m.session_id,
            Ok(crate::wire::Message::ExtensionRefusal(m)) => m.session_id,
            _ => {
                self.out.counters.ignored_messages += 1;
                return;
            }
        };
        if !self.remote_party(&session, from, name) {
            self.out.counters.stale_answers += 1;
            return;
        }
        if let Ok(m) = crate::wire::Message::decode(message) {
            self.send_to_name(name, &m);
        }
    }

    /// The owner forces a session to end: end-trigger its party here.
    fn on_peer_end_trigger(&mut self, now: Instant, from: PublicKey, id: SessionId, name: &str) {
        if !self.remote_party(&id, from, name) {
            self.out.counters.stale_answers += 1;
            return;
        }
        let Some(&device) = self.reg.live.get(name) else {
            self.out.counters.undeliverable += 1;
            return;
        };
        // Its result is not waited for here: the owner hears the party's
        // end notification.
        let op = self.fresh_op();
        self.send_upstream(
            now,
            super::upstream::UpMsg::EndTrigger(crate::wire::EndTriggerRequest {
                op_id: op,
                device_id: crate::wire::DeviceId(device),
                session_id: id,
            }),
        );
    }

    /// Whether `name` here is a party of session `id` that `owner` owns.
    fn remote_party(&self, id: &SessionId, owner: PublicKey, name: &str) -> bool {
        self.remote_sessions
            .get(&id.0)
            .is_some_and(|r| r.owner == owner && r.name == name)
    }

    /// A session message from `device` for a session another server owns:
    /// it goes there (`true`), or it is not such a session (`false`).
    pub(super) fn pass_to_owner(
        &mut self,
        device: u64,
        id: &SessionId,
        message: &crate::wire::Message<'_>,
        last: bool,
    ) -> bool {
        let Some(remote) = self.remote_sessions.get(&id.0) else {
            return false;
        };
        let Some(channel) = self.reg.channels.get(&device) else {
            return false;
        };
        if channel.name != remote.name {
            self.out.counters.stale_answers += 1;
            return true;
        }
        let (owner, name, key) = (remote.owner, remote.name.clone(), channel.key);
        if last {
            self.remote_sessions.remove(&id.0);
        }
        if let Some(message) = self.plain(message) {
            self.send_peer(Some(owner), PeerBody::FromTerminal { name, key, message });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PeerMessage {
        PeerMessage {
            from: PublicKey([0xaa; 32]),
            to: None,
            body: PeerBody::Request {
                fwd: 7,
                requester: "phone".into(),
                requester_key: PublicKey([0xbb; 32]),
                requester_addr: "192.0.2.1:4000".parse().unwrap(),
                target: "home".into(),
                duration_secs: 600,
            },
        }
    }

    /// The static vector of PROTOCOL.md's "Peer messages".
    #[test]
    fn peer_request_matches_its_static_vector() {
        let bytes = request().encode().unwrap();
        let mut want = alloc::vec![1u8, 1];
        want.extend_from_slice(&[0xaa; 32]);
        want.push(0);
        want.extend_from_slice(&7u64.to_be_bytes());
        want.push(5);
        want.extend_from_slice(b"phone");
        want.extend_from_slice(&[0xbb; 32]);
        want.extend_from_slice(&[4, 192, 0, 2, 1, 0x0f, 0xa0]);
        want.push(4);
        want.extend_from_slice(b"home");
        want.extend_from_slice(&[0, 0, 2, 0x58]);
        assert_eq!(bytes, want);
        assert_eq!(PeerMessage::decode(&bytes), Ok(request()));
    }

    #[test]
    fn peer_messages_round_trip_and_reject_non_canonical_bytes() {
        let others = [
            PeerBody::Granted {
                fwd: 9,
                notification: alloc::vec![1, 2, 3],
            },
            PeerBody::Deliver {
                name: "home".into(),
                message: alloc::vec![4],
            },
            PeerBody::FromTerminal {
                name: "home".into(),
                key: PublicKey([3; 32]),
                message: alloc::vec![],
            },
            PeerBody::EndTrigger {
                session_id: SessionId([5; 16]),
                name: "phone".into(),
            },
        ];
        for body in others {
            let m = PeerMessage {
                from: PublicKey([1; 32]),
                to: Some(PublicKey([2; 32])),
                body,
            };
            let bytes = m.encode().unwrap();
            assert_eq!(PeerMessage::decode(&bytes), Ok(m));
            // Every truncation and a trailing byte are refused.
            for n in 0..bytes.len() {
                assert_eq!(PeerMessage::decode(&bytes[..n]), Err(PeerDecodeError));
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(PeerMessage::decode(&long), Err(PeerDecodeError));
        }
        let good = request().encode().unwrap();
        // A flag that is not 0/1, an unknown tag or version, a name not in
        // its canonical form.
        for (at, value) in [(34usize, 2u8), (1, 9), (0, 2), (44, b'P')] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(PeerMessage::decode(&bad), Err(PeerDecodeError), "{at}");
        }
    }
}
