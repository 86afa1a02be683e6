//! The tryst wire format: one common header, then a typed body.
//!
//! Every message starts with the 6-byte [`Header`]: magic `"TY"`, version,
//! message type and body length. A receiver rejects foreign traffic (wrong
//! magic), future traffic (other version) and unknown types with a typed
//! [`DecodeError`] before it reads any body field. `PROTOCOL.md` at the
//! repository root describes every byte; [`vectors`] holds one example of
//! every message, checked against that document by a test.
//!
//! Decoding is zero-copy: names borrow from the input buffer. Encoding writes
//! into a caller's `&mut [u8]` ([`Message::encode`]) or, with the `bytes`
//! feature, any `bytes::BufMut` (`Message::encode_to`). The codec itself
//! needs no allocator.

mod envelope;
mod error;
mod fields;
mod header;
mod interserver;
mod message;
mod put;
mod reader;
mod registration;
mod session;
mod setup;
mod stream;
mod udp;
pub mod vectors;

pub use envelope::{
    HandshakeInit, HandshakeReply, Sealed, TicketedHandshakeInit, MAX_HANDSHAKE_LEN,
    MAX_SEALED_LEN, MAX_TICKETED_NOISE_LEN, NOISE_IK_OVERHEAD,
};
pub use error::{DecodeError, EncodeError, NameError};
pub use fields::{
    DecisionMode, DeviceId, EndReason, ErrorCode, Name, PublicKey, RelayAllocation, Role,
    SessionId, SessionKey, Tag, TriggerOutcome, UdpKey, Verdict, MAX_NAME_LEN, PUBLIC_KEY_LEN,
    RELAY_TOKEN_LEN, SESSION_ID_LEN, SESSION_KEY_LEN, TAG_LEN, UDP_KEY_LEN,
};
pub use header::{frame_len, Header, HeaderType, HEADER_LEN, MAGIC, VERSION};
pub use interserver::{
    AddressInquiry, AddressReply, EndTriggerRequest, KeyInstall, KeyInstallAck, KeyRevoke,
    TriggerRequest, TriggerResult,
};
pub use message::{
    Family, Message, MessageType, MAX_BODY_LEN, MAX_MESSAGE_LEN, MAX_PLAIN_BODY_LEN,
    MAX_PLAIN_MESSAGE_LEN,
};
pub(crate) use reader::{Reader, Truncated};
pub use registration::{
    EnrolRegister, KeyReady, Poll, Register, RegisterAck, RegistrationTicket, RetryLater,
    TriggerAssignment, ENROL_CODE_LEN, MAX_RETRY_AFTER_SECS, TICKET_BINDER_LEN, TICKET_LEN,
    TICKET_SECRET_LEN,
};
pub use session::{
    EndNotification, ErrorReply, ExtensionGrant, ExtensionRefusal, ExtensionRequest,
};
pub use setup::{
    AddressNotification, ConnectionRequest, NameIter, NameSeq, PermissionAnswer, PermissionInquiry,
    PermissionList, PermissionListRequest, MAX_PERMISSION_ENTRIES,
};
pub use stream::FrameBuffer;
pub use udp::{
    AddressEcho, AddressProbe, EndTrigger, Keepalive, KeepaliveAck, NatProbe, NatProbeAnswer,
    Trigger, TriggerAck, ADDRESS_PROBE_PADDING, DEFAULT_KEEPALIVE_INTERVAL, MAX_KEEPALIVE_INTERVAL,
    MAX_NAT_PROBE_DELAY_SECS, MIN_KEEPALIVE_INTERVAL,
};

#[cfg(test)]
mod samples;
