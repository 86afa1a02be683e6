//! Property tests of the wire codec: every message survives a round trip,
//! every valid byte string re-encodes to itself, and no byte string makes a
//! decoder panic. Failing cases are kept in `proptest-regressions/` at the
//! repository root.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tryst_core::wire::*;

fn config() -> Config {
    Config {
        cases: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proptest-regressions/codec_props.txt"
        )))),
        ..Config::default()
    }
}

/// Valid names: 1..=64 bytes of UTF-8 without control characters. The
/// strings are leaked so that messages can borrow them for `'static`.
fn name() -> impl Strategy<Value = Name<'static>> {
    "[^\\p{Cc}]{1,24}"
        .prop_filter("at most 64 bytes", |s| s.len() <= MAX_NAME_LEN)
        .prop_map(|s| Name::new(String::leak(s)).expect("strategy makes valid names"))
}

/// Addresses as the codec carries them: IPv6 without flow info or scope.
fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        any::<std::net::SocketAddrV4>().prop_map(SocketAddr::V4),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

fn names() -> impl Strategy<Value = NameSeq<'static>> {
    prop::collection::vec(name(), 0..=MAX_PERMISSION_ENTRIES)
        .prop_map(|v| NameSeq::from_slice(Vec::leak(v)).expect("at most MAX_PERMISSION_ENTRIES"))
}

fn opaque(min: usize, max: usize) -> impl Strategy<Value = &'static [u8]> {
    prop::collection::vec(any::<u8>(), min..=max).prop_map(|v| &*Vec::leak(v))
}

fn session_id() -> impl Strategy<Value = SessionId> {
    any::<[u8; SESSION_ID_LEN]>().prop_map(SessionId)
}

fn tag() -> impl Strategy<Value = Tag> {
    any::<[u8; TAG_LEN]>().prop_map(Tag)
}

fn device() -> impl Strategy<Value = DeviceId> {
    any::<u64>().prop_map(DeviceId)
}

fn mode() -> impl Strategy<Value = DecisionMode> {
    prop_oneof![
        Just(DecisionMode::PermissionList),
        Just(DecisionMode::TerminalJudges)
    ]
}

fn reason() -> impl Strategy<Value = EndReason> {
    (1u8..=6).prop_map(|b| EndReason::from_wire(b).expect("1..=6 are reasons"))
}

fn code() -> impl Strategy<Value = ErrorCode> {
    (1u8..=4).prop_map(|b| ErrorCode::from_wire(b).expect("1..=4 are codes"))
}

fn outcome() -> impl Strategy<Value = TriggerOutcome> {
    (0u8..=2).prop_map(|b| TriggerOutcome::from_wire(b).expect("0..=2 are outcomes"))
}

/// Any message of any type, with every field drawn from its whole range.
fn message() -> impl Strategy<Value = Message<'static>> {
    let registration = prop_oneof![
        (
            mode(),
            any::<[u8; 32]>(),
            name(),
            proptest::option::of(addr())
        )
            .prop_map(|(mode, k, name, local)| Register {
                mode,
                identity: PublicKey(k),
                name,
                local
            }
            .into()),
        (device(), any::<[u8; 32]>()).prop_map(|(device_id, k)| RegisterAck {
            device_id,
            udp_key: UdpKey(k)
        }
        .into()),
        Just(Poll.into()),
        (
            mode(),
            any::<[u8; 32]>(),
            name(),
            proptest::option::of(addr()),
            any::<[u8; 16]>()
        )
            .prop_map(|(mode, k, name, local, code)| {
                EnrolRegister {
                    register: Register {
                        mode,
                        identity: PublicKey(k),
                        name,
                        local,
                    },
                    code,
                }
                .into()
            }),
    ];
    let udp = prop_oneof![
        (device(), any::<u64>(), tag()).prop_map(|(device_id, counter, tag)| Keepalive {
            device_id,
            counter,
            tag
        }
        .into()),
        (any::<u64>(), any::<u16>(), addr(), tag()).prop_map(
            |(counter, interval_secs, observed, tag)| KeepaliveAck {
                counter,
                interval_secs,
                observed,
                tag
            }
            .into()
        ),
        (any::<u64>(), tag()).prop_map(|(counter, tag)| Trigger { counter, tag }.into()),
        (any::<u64>(), session_id(), tag()).prop_map(|(counter, session_id, tag)| EndTrigger {
            counter,
            session_id,
            tag
        }
        .into()),
        (device(), any::<u64>(), tag()).prop_map(|(device_id, counter, tag)| TriggerAck {
            device_id,
            counter,
            tag
        }
        .into()),
    ];
    let setup = prop_oneof![
        (any::<u32>(), any::<u32>(), name(), name()).prop_map(
            |(request_id, duration_secs, requester, target)| ConnectionRequest {
                request_id,
                duration_secs,
                requester,
                target
            }
            .into()
        ),
        any::<u32>().prop_map(|query_id| PermissionListRequest { query_id }.into()),
        (any::<u32>(), names())
            .prop_map(|(query_id, names)| PermissionList { query_id, names }.into()),
        (any::<u32>(), name()).prop_map(|(query_id, requester)| PermissionInquiry {
            query_id,
            requester
        }
        .into()),
        (any::<u32>(), any::<bool>()).prop_map(|(query_id, yes)| PermissionAnswer {
            query_id,
            verdict: if yes { Verdict::Permit } else { Verdict::Deny }
        }
        .into()),
        (
            any::<u32>(),
            session_id(),
            any::<bool>(),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            addr(),
            name()
        )
            .prop_map(
                |(
                    request_id,
                    session_id,
                    connecting,
                    duration_secs,
                    key,
                    peer,
                    peer_addr,
                    peer_name,
                )| {
                    AddressNotification {
                        request_id,
                        session_id,
                        role: if connecting {
                            Role::Connecting
                        } else {
                            Role::Connected
                        },
                        duration_secs,
                        session_key: SessionKey(key),
                        peer_key: PublicKey(peer),
                        peer_addr,
                        peer_name,
                        // Both forms of the relay field, from the other fields.
                        relay: (request_id % 2 == 0).then_some(tryst_core::wire::RelayAllocation {
                            addr: peer_addr,
                            token: [request_id as u8; tryst_core::wire::RELAY_TOKEN_LEN],
                        }),
                    }
                    .into()
                }
            ),
    ];
    let interserver = prop_oneof![
        (any::<u32>(), device())
            .prop_map(|(op_id, device_id)| TriggerRequest { op_id, device_id }.into()),
        (any::<u32>(), device(), session_id()).prop_map(|(op_id, device_id, session_id)| {
            EndTriggerRequest {
                op_id,
                device_id,
                session_id,
            }
            .into()
        }),
        (any::<u32>(), outcome())
            .prop_map(|(op_id, outcome)| TriggerResult { op_id, outcome }.into()),
        (any::<u32>(), device(), device()).prop_map(|(op_id, first, second)| AddressInquiry {
            op_id,
            first,
            second
        }
        .into()),
        (
            any::<u32>(),
            proptest::option::of(addr()),
            proptest::option::of(addr())
        )
            .prop_map(|(op_id, first, second)| AddressReply {
                op_id,
                first,
                second
            }
            .into()),
        (device(), any::<[u8; 32]>(), proptest::option::of(addr())).prop_map(
            |(device_id, k, local)| KeyInstall {
                device_id,
                udp_key: UdpKey(k),
                local
            }
            .into()
        ),
        device().prop_map(|device_id| KeyRevoke { device_id }.into()),
    ];
    let session = prop_oneof![
        (session_id(), any::<u32>()).prop_map(|(session_id, extra_secs)| ExtensionRequest {
            session_id,
            extra_secs
        }
        .into()),
        (session_id(), any::<u32>()).prop_map(|(session_id, duration_secs)| ExtensionGrant {
            session_id,
            duration_secs
        }
        .into()),
        session_id().prop_map(|session_id| ExtensionRefusal { session_id }.into()),
        (
            session_id(),
            reason(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(session_id, reason, bytes_sent, bytes_received, duration_ms)| EndNotification {
                    session_id,
                    reason,
                    bytes_sent,
                    bytes_received,
                    duration_ms
                }
                .into()
            ),
        (any::<u32>(), code())
            .prop_map(|(request_id, code)| ErrorReply { request_id, code }.into()),
    ];
    let envelope =
        prop_oneof![
            opaque(1, MAX_HANDSHAKE_LEN).prop_map(|noise| HandshakeInit { noise }.into()),
            (any::<u64>(), opaque(1, MAX_HANDSHAKE_LEN))
                .prop_map(|(channel, noise)| HandshakeReply { channel, noise }.into()),
            (any::<u64>(), any::<u64>(), opaque(TAG_LEN, MAX_SEALED_LEN)).prop_map(
                |(channel, nonce, sealed)| Sealed {
                    channel,
                    nonce,
                    sealed
                }
                .into()
            ),
        ];
    prop_oneof![registration, udp, setup, interserver, session, envelope]
}

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = m.encode_to(&mut out).expect("a Vec has room");
    assert_eq!(n, out.len());
    out
}

proptest! {
    #![proptest_config(config())]

    /// decode(encode(m)) == m, and both encoders agree byte for byte.
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = encode(&m);
        prop_assert_eq!(bytes.len(), m.encoded_len());
        prop_assert!(bytes.len() <= MAX_MESSAGE_LEN);
        let mut fixed = vec![0u8; MAX_MESSAGE_LEN];
        let n = m.encode(&mut fixed).expect("MAX_MESSAGE_LEN always fits");
        prop_assert_eq!(&fixed[..n], &bytes[..]);
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
        prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    }

    /// encode(decode(b)) == b for every valid b: valid messages with random
    /// byte edits either fail to decode or re-encode to exactly themselves.
    #[test]
    fn every_valid_byte_string_is_canonical(
        m in message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&m);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(decoded) = Message::decode(&bytes) {
            prop_assert_eq!(encode(&decoded), bytes);
        }
    }

    /// Any byte string gives a typed result from every decoder, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
        let _ = frame_len(&bytes);
        let _ = Header::parse(&bytes);
    }

    /// Arbitrary bodies behind a valid header reach each body parser; they
    /// are refused with a typed error or re-encode to themselves.
    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        ty in prop::sample::select(MessageType::ALL),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![b'T', b'Y', VERSION, ty.to_wire()];
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        match Message::decode(&bytes) {
            Ok(m) => {
                prop_assert_eq!(m.message_type(), ty);
                prop_assert_eq!(encode(&m), bytes);
            }
            Err(e) => prop_assert!(!matches!(e, DecodeError::BadMagic | DecodeError::UnknownType(_))),
        }
    }

    /// Every strict prefix of a message is refused (truncated), every
    /// extension is refused (trailing bytes), and too small a buffer is an
    /// error, not a panic.
    #[test]
    fn truncated_extended_and_cramped_messages_are_refused(m in message(), extra in 1usize..8) {
        let bytes = encode(&m);
        for cut in 0..bytes.len() {
            prop_assert_eq!(Message::decode(&bytes[..cut]), Err(DecodeError::Truncated), "cut at {}", cut);
        }
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(Message::decode(&longer), Err(DecodeError::TrailingBytes));
        let mut small = vec![0u8; bytes.len() - 1];
        prop_assert_eq!(
            m.encode(&mut small),
            Err(EncodeError::BufferTooSmall { needed: bytes.len(), available: bytes.len() - 1 })
        );
    }
}
