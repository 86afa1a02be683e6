//! The `udp_auth` harness: the AES-GCM tags of the authenticated UDP
//! messages and the [`ReplayGuard`], under a key from the input.
//! - Any message into [`udp_auth::verify_message`]: no panic, and it
//!   verifies exactly when its tag is the one [`udp_auth::seal`] computes
//!   (the non-UDP types never verify); a tag never verifies under another key.
//! - A correctly tagged message of each UDP type, built from the input's
//!   fields, verifies; the same bytes with any single byte changed (every
//!   position, with the input's xor value) either fail to decode or fail to
//!   verify.
//! - A [`ReplayGuard`] fed genuine and forged keepalives with any counters
//!   accepts exactly those that are genuine and newer than the last it
//!   accepted, and `check` never changes it.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tryst_core::crypto::udp_auth::{self, AuthError, ReplayGuard, UdpMessage};
use tryst_core::wire::{
    DeviceId, EndTrigger, Keepalive, KeepaliveAck, Message, SessionId, Tag, Trigger, TriggerAck,
    UdpKey,
};

use crate::fuzz_ops;
use crate::ops::{encode, read_input};

fuzz_ops! {
    /// The key every operation uses.
    pub struct UdpSetup {
        pub key: [u8; 32],
    }
}

fuzz_ops! {
    /// An authenticated UDP message from its fields.
    pub enum UdpKind {
        Keepalive { device: u64, counter: u64 },
        KeepaliveAck { counter: u64, interval: u16, v6: bool, ip: [u8; 16], port: u16 },
        Trigger { counter: u64 },
        EndTrigger { counter: u64, session: [u8; 16] },
        TriggerAck { device: u64, counter: u64 },
    }
}

fuzz_ops! {
    /// One check.
    pub enum UdpOp<'a> {
        /// Any message verified under the key (and under `other`).
        Verify { message: Message<'a>, other: [u8; 32] },
        /// A correctly tagged message, then every single-byte change of it.
        Tamper { kind: UdpKind, xor: u8 },
        /// A keepalive with this counter to the guard, genuine or not.
        Guard { counter: u64, genuine: bool },
        /// The guard asked about a counter without accepting it.
        GuardCheck { counter: u64 },
    }
}

/// What a run reached, for the seed corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpSummary {
    /// Messages sealed and tampered with.
    pub tampered: u32,
    /// Counters the guard accepted.
    pub guard_accepted: u32,
    /// Counters the guard refused as replays.
    pub guard_replayed: u32,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> UdpSummary {
    let Some((setup, ops)) = read_input::<UdpSetup, UdpOp<'_>>(data) else {
        return UdpSummary::default();
    };
    let key = UdpKey(setup.key);
    let mut guard = ReplayGuard::new();
    let mut last: Option<u64> = None;
    let mut summary = UdpSummary::default();
    for op in &ops {
        match op {
            UdpOp::Verify { message, other } => {
                check_verify(&key, message);
                if *other != key.0 {
                    check_verify(&UdpKey(*other), message);
                    let ok = |k: &UdpKey| udp_auth::verify_message(k, message).is_ok();
                    // A tag verifies under at most one of two keys (a
                    // collision of 128-bit tags is not a thing to expect).
                    assert!(!(ok(&key) && ok(&UdpKey(*other))), "{message:?}");
                }
            }
            UdpOp::Tamper { kind, xor } => {
                tamper(&key, kind, *xor);
                summary.tampered += 1;
            }
            UdpOp::Guard { counter, genuine } => {
                let sealed = udp_auth::seal_keepalive(&key, DeviceId(7), *counter);
                let message = if *genuine {
                    sealed
                } else {
                    let mut tag = sealed.tag;
                    tag.0[0] ^= 1;
                    sealed.with_tag(tag)
                };
                let newer = last.is_none_or(|l| *counter > l);
                let result = guard.accept(&key, &message);
                match (genuine, newer) {
                    (true, true) => {
                        assert_eq!(result, Ok(()));
                        last = Some(*counter);
                        summary.guard_accepted += 1;
                    }
                    (_, false) => {
                        assert!(matches!(result, Err(AuthError::Replayed(_))), "{result:?}");
                        summary.guard_replayed += 1;
                    }
                    (false, true) => assert_eq!(result, Err(AuthError::BadTag)),
                }
                assert_eq!(guard.last_accepted(), last);
            }
            UdpOp::GuardCheck { counter } => {
                let before = guard;
                let newer = last.is_none_or(|l| *counter > l);
                assert_eq!(guard.check(*counter).is_ok(), newer);
                assert_eq!(guard, before, "check changed the guard");
            }
        }
    }
    summary
}

/// `verify_message` agrees with `seal`: a UDP message verifies exactly when
/// it carries the tag `seal` gives it; other types never verify.
fn check_verify(key: &UdpKey, message: &Message<'_>) {
    let verified = udp_auth::verify_message(key, message);
    let expected = match message {
        Message::Keepalive(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        Message::KeepaliveAck(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        Message::Trigger(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        Message::EndTrigger(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        Message::TriggerAck(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        Message::NatProbe(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        Message::NatProbeAnswer(m) => Some(udp_auth::seal(key, *m).tag() == m.tag()),
        _ => None,
    };
    match expected {
        Some(ok) => assert_eq!(verified.is_ok(), ok, "{message:?}: {verified:?}"),
        None => assert!(
            matches!(verified, Err(AuthError::NotAuthenticated(_))),
            "{message:?}: {verified:?}"
        ),
    }
}

fn sealed_message(key: &UdpKey, kind: &UdpKind) -> Message<'static> {
    let tag = Tag([0; 16]);
    match *kind {
        UdpKind::Keepalive { device, counter } => udp_auth::seal(
            key,
            Keepalive {
                device_id: DeviceId(device),
                counter,
                tag,
            },
        )
        .into(),
        UdpKind::KeepaliveAck {
            counter,
            interval,
            v6,
            ip,
            port,
        } => {
            let observed = if v6 {
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
            } else {
                let v4 = [ip[0], ip[1], ip[2], ip[3]];
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(v4), port))
            };
            udp_auth::seal(
                key,
                KeepaliveAck {
                    counter,
                    interval_secs: interval,
                    observed,
                    tag,
                },
            )
            .into()
        }
        UdpKind::Trigger { counter } => udp_auth::seal(key, Trigger { counter, tag }).into(),
        UdpKind::EndTrigger { counter, session } => udp_auth::seal(
            key,
            EndTrigger {
                counter,
                session_id: SessionId(session),
                tag,
            },
        )
        .into(),
        UdpKind::TriggerAck { device, counter } => udp_auth::seal(
            key,
            TriggerAck {
                device_id: DeviceId(device),
                counter,
                tag,
            },
        )
        .into(),
    }
}

/// A sealed message verifies; every single-byte change of its bytes either
/// does not decode or does not verify.
fn tamper(key: &UdpKey, kind: &UdpKind, xor: u8) {
    let message = sealed_message(key, kind);
    assert_eq!(udp_auth::verify_message(key, &message), Ok(()));
    let bytes = encode(&message).expect("a UDP message encodes");
    let decoded = Message::decode(&bytes).expect("and decodes");
    assert_eq!(udp_auth::verify_message(key, &decoded), Ok(()));
    let xor = xor.max(1);
    for pos in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[pos] ^= xor;
        if let Ok(m) = Message::decode(&changed) {
            assert!(
                udp_auth::verify_message(key, &m).is_err(),
                "byte {pos} ^ {xor:#04x} of {message:?} still verifies"
            );
        }
    }
}
