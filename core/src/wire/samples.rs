//! The messages behind [`super::vectors`]: what each vector must decode to.

use std::vec::Vec;

use super::*;
use core::net::SocketAddr;

const TERM1: &str = "TERM1";
const TERM3: &str = "TERM3";

fn name(s: &'static str) -> Name<'static> {
    Name::new(s).expect("sample names are valid")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("sample addresses are valid")
}

/// Stands in for Noise output in the envelope vectors (real bytes are random).
static NOISE_SAMPLE: [u8; 96] = [0xe7; 96];

static PERMITTED: [&str; 2] = [TERM3, "phone-of-anna"];

/// (vector name, message) for every message type, in type order.
pub(crate) fn samples() -> Vec<(&'static str, Message<'static>)> {
    let permitted: &'static [Name<'static>] =
        Vec::leak(PERMITTED.iter().map(|s| name(s)).collect());
    let session_id = SessionId([0x5e; SESSION_ID_LEN]);
    let tag = Tag([0xa9; TAG_LEN]);
    std::vec![
        (
            "REGISTER",
            Register {
                mode: DecisionMode::PermissionList,
                identity: PublicKey([0x11; 32]),
                name: name(TERM1),
                local: Some(addr("192.168.1.2:40000"))
            }
            .into()
        ),
        (
            "REGISTER_ACK",
            RegisterAck {
                device_id: DeviceId(0x0102_0304_0506_0708),
                udp_key: UdpKey([0x77; 32])
            }
            .into()
        ),
        ("POLL", Poll.into()),
        (
            "REGISTRATION_TICKET",
            RegistrationTicket {
                ticket: [0x7c; TICKET_LEN],
                secret: [0x5b; TICKET_SECRET_LEN]
            }
            .into()
        ),
        ("KEY_READY", KeyReady.into()),
        (
            "ENROL_REGISTER",
            EnrolRegister {
                register: Register {
                    mode: DecisionMode::PermissionList,
                    identity: PublicKey([0x11; 32]),
                    name: name(TERM1),
                    local: None
                },
                code: [0xc0; ENROL_CODE_LEN]
            }
            .into()
        ),
        (
            "RETRY_LATER",
            RetryLater {
                retry_after_secs: 8
            }
            .into()
        ),
        (
            "TRIGGER_ASSIGNMENT",
            TriggerAssignment {
                trigger: addr("198.51.100.7:7401")
            }
            .into()
        ),
        (
            "KEEPALIVE",
            Keepalive {
                device_id: DeviceId(0x0102_0304_0506_0708),
                counter: 42,
                tag
            }
            .into()
        ),
        (
            "KEEPALIVE_ACK",
            KeepaliveAck {
                counter: 42,
                interval_secs: 25,
                observed: addr("203.0.113.7:40001"),
                tag
            }
            .into()
        ),
        ("TRIGGER", Trigger { counter: 7, tag }.into()),
        (
            "END_TRIGGER",
            EndTrigger {
                counter: 8,
                session_id,
                tag
            }
            .into()
        ),
        (
            "TRIGGER_ACK",
            TriggerAck {
                device_id: DeviceId(0x0102_0304_0506_0708),
                counter: 7,
                tag
            }
            .into()
        ),
        (
            "NAT_PROBE",
            NatProbe {
                device_id: DeviceId(0x0102_0304_0506_0708),
                counter: 3,
                delay_secs: 20,
                tag
            }
            .into()
        ),
        (
            "NAT_PROBE_ANSWER",
            NatProbeAnswer {
                counter: 3,
                delay_secs: 20,
                probe_port: 7403,
                observed: addr("203.0.113.7:40001"),
                tag
            }
            .into()
        ),
        (
            "ADDRESS_PROBE",
            AddressProbe {
                txid: 0x0a0b_0c0d_0e0f_1011,
                other_port: true
            }
            .into()
        ),
        (
            "ADDRESS_ECHO",
            AddressEcho {
                txid: 0x0a0b_0c0d_0e0f_1011,
                observed: addr("203.0.113.7:40002")
            }
            .into()
        ),
        (
            "CONNECTION_REQUEST",
            ConnectionRequest {
                request_id: 1,
                duration_secs: 600,
                requester: name(TERM3),
                target: name(TERM1)
            }
            .into()
        ),
        (
            "PERMISSION_LIST_REQUEST",
            PermissionListRequest { query_id: 9 }.into()
        ),
        (
            "PERMISSION_LIST",
            PermissionList {
                query_id: 9,
                names: NameSeq::from_slice(permitted).expect("two names")
            }
            .into()
        ),
        (
            "PERMISSION_INQUIRY",
            PermissionInquiry {
                query_id: 10,
                requester: name(TERM3)
            }
            .into()
        ),
        (
            "PERMISSION_ANSWER",
            PermissionAnswer {
                query_id: 10,
                verdict: Verdict::Permit
            }
            .into()
        ),
        (
            "ADDRESS_NOTIFICATION",
            AddressNotification {
                request_id: 1,
                session_id,
                role: Role::Connecting,
                duration_secs: 600,
                session_key: SessionKey([0x4b; 32]),
                peer_key: PublicKey([0x11; 32]),
                peer_addr: addr("[2001:db8::1]:40001"),
                peer_name: name(TERM1),
                relay: None,
            }
            .into()
        ),
        (
            "TRIGGER_REQUEST",
            TriggerRequest {
                op_id: 3,
                device_id: DeviceId(0x0102_0304_0506_0708)
            }
            .into()
        ),
        (
            "END_TRIGGER_REQUEST",
            EndTriggerRequest {
                op_id: 4,
                device_id: DeviceId(0x0102_0304_0506_0708),
                session_id
            }
            .into()
        ),
        (
            "TRIGGER_RESULT",
            TriggerResult {
                op_id: 3,
                outcome: TriggerOutcome::Delivered
            }
            .into()
        ),
        (
            "ADDRESS_INQUIRY",
            AddressInquiry {
                op_id: 5,
                first: DeviceId(0x0a),
                second: DeviceId(0x0b)
            }
            .into()
        ),
        (
            "ADDRESS_REPLY",
            AddressReply {
                op_id: 5,
                first: Some(addr("198.51.100.3:50000")),
                second: None
            }
            .into()
        ),
        (
            "KEY_INSTALL",
            KeyInstall {
                device_id: DeviceId(0x0102_0304_0506_0708),
                udp_key: UdpKey([0x77; 32]),
                local: Some(addr("192.168.1.2:40000"))
            }
            .into()
        ),
        (
            "KEY_REVOKE",
            KeyRevoke {
                device_id: DeviceId(0x0102_0304_0506_0708)
            }
            .into()
        ),
        (
            "KEY_INSTALL_ACK",
            KeyInstallAck {
                device_id: DeviceId(0x0102_0304_0506_0708)
            }
            .into()
        ),
        (
            "EXTENSION_REQUEST",
            ExtensionRequest {
                session_id,
                extra_secs: 300
            }
            .into()
        ),
        (
            "EXTENSION_GRANT",
            ExtensionGrant {
                session_id,
                duration_secs: 900
            }
            .into()
        ),
        ("EXTENSION_REFUSAL", ExtensionRefusal { session_id }.into()),
        (
            "END_NOTIFICATION",
            EndNotification {
                session_id,
                reason: EndReason::Completed,
                bytes_sent: 1_048_576,
                bytes_received: 2048,
                duration_ms: 12_500
            }
            .into()
        ),
        (
            "ERROR",
            ErrorReply {
                request_id: 1,
                code: ErrorCode::NotPermitted
            }
            .into()
        ),
        (
            "HANDSHAKE_INIT",
            HandshakeInit {
                noise: &NOISE_SAMPLE
            }
            .into()
        ),
        (
            "HANDSHAKE_REPLY",
            HandshakeReply {
                channel: 0x0102_0304_0506_0708,
                noise: &NOISE_SAMPLE[..48]
            }
            .into()
        ),
        (
            "SEALED",
            Sealed {
                channel: 0x0102_0304_0506_0708,
                nonce: 1,
                sealed: &NOISE_SAMPLE[..22]
            }
            .into()
        ),
        (
            "TICKETED_HANDSHAKE_INIT",
            TicketedHandshakeInit {
                ticket: [0x7c; TICKET_LEN],
                binder: [0xb1; TICKET_BINDER_LEN],
                noise: &NOISE_SAMPLE
            }
            .into()
        ),
    ]
}

/// Prints the Rust source of `vectors.rs` from the samples:
/// `cargo test -p tryst-core print_vectors -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_vectors() {
    for (label, message) in samples() {
        let mut buf = [0u8; MAX_MESSAGE_LEN];
        let n = message.encode(&mut buf).expect("fits");
        std::println!("/// {:?}", message.message_type());
        std::print!("pub static {label}: [u8; {n}] = [");
        for (i, b) in buf[..n].iter().enumerate() {
            if i % 12 == 0 {
                std::print!("\n    ");
            } else {
                std::print!(" ");
            }
            std::print!("0x{b:02x},");
        }
        std::println!("\n];\n");
    }
}
