//! The message type space and the [`Message`] enum that dispatches on it.

use super::envelope::*;
use super::error::{DecodeError, EncodeError};
use super::header::{Header, HEADER_LEN, MAGIC, VERSION};
use super::interserver::*;
use super::put::{Put, SliceWriter};
use super::reader::Reader;
use super::registration::*;
use super::session::*;
use super::setup::*;
use super::udp::*;

/// Longest body of a plain (not envelope) message: a full permission list
/// (query ID, count, 64 names of 64 bytes with their length bytes).
pub const MAX_PLAIN_BODY_LEN: usize = 4 + 1 + MAX_PERMISSION_ENTRIES * (1 + super::MAX_NAME_LEN);
/// Longest plain message: what an envelope may have to carry.
pub const MAX_PLAIN_MESSAGE_LEN: usize = HEADER_LEN + MAX_PLAIN_BODY_LEN;
/// Longest body of any message: a handshake reply around the longest
/// handshake message (the envelopes are the largest messages).
pub const MAX_BODY_LEN: usize = 8 + MAX_HANDSHAKE_LEN;
/// Longest message: header plus [`MAX_BODY_LEN`].
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + MAX_BODY_LEN;

/// The families of the type space, by high nibble of the type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// 0x0_: terminal registration with the session server (S701/S702).
    Registration,
    /// 0x1_: authenticated UDP between terminal and trigger server.
    Udp,
    /// 0x2_: connection set-up (FIG. 3, FIG. 4, FIG. 5, FIG. 12).
    Setup,
    /// 0x3_: session server to trigger server.
    Interserver,
    /// 0x4_ and 0x50: session life (third embodiment) and the error reply.
    SessionLife,
    /// 0x6_: secure-channel envelopes (Noise handshake, sealed records).
    Envelope,
}

/// A message body: how to read it from a [`Reader`] and write it back.
pub(crate) trait Body<'a>: Sized {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError>;
    fn body_len(&self) -> usize;
    fn emit<B: Put>(&self, b: &mut B);
    /// Refuses field values the decoder would refuse (only envelopes have any).
    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }
}

macro_rules! messages {
    ($lt:lifetime; $( $(#[$doc:meta])* $variant:ident($ty:ty) = $code:literal, $family:ident; )+) => {
        /// Every message type of this version, by its type byte.
        /// 0x80..=0x8F is reserved for the peer data channel (handshake, data, ack, close).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[repr(u8)]
        pub enum MessageType {
            $($(#[$doc])* $variant = $code,)+
        }

        impl MessageType {
            /// Every defined type, in type-byte order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant,)+];

            /// The type a byte stands for, if any.
            pub fn from_wire(value: u8) -> Option<Self> {
                match value {
                    $($code => Some(MessageType::$variant),)+
                    _ => None,
                }
            }

            /// The byte that stands for this type.
            pub fn to_wire(self) -> u8 {
                self as u8
            }

            /// The family this type belongs to.
            pub fn family(self) -> Family {
                match self {
                    $(MessageType::$variant => Family::$family,)+
                }
            }
        }

        /// One decoded message, borrowing its names from the input buffer.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub enum Message<$lt> {
            $($(#[$doc])* $variant($ty),)+
        }

        impl<$lt> Message<$lt> {
            /// The type byte's meaning for this message.
            pub fn message_type(&self) -> MessageType {
                match self {
                    $(Message::$variant(_) => MessageType::$variant,)+
                }
            }

            fn body_len(&self) -> usize {
                match self {
                    $(Message::$variant(m) => m.body_len(),)+
                }
            }

            fn check_body(&self) -> Result<(), EncodeError> {
                match self {
                    $(Message::$variant(m) => m.check(),)+
                }
            }

            fn emit_body<B: Put>(&self, b: &mut B) {
                match self {
                    $(Message::$variant(m) => m.emit(b),)+
                }
            }

            fn parse_body(ty: MessageType, r: &mut Reader<$lt>) -> Result<Self, DecodeError> {
                Ok(match ty {
                    $(MessageType::$variant => Message::$variant(<$ty as Body>::parse(r)?),)+
                })
            }
        }

        $(
            impl<$lt> From<$ty> for Message<$lt> {
                fn from(m: $ty) -> Self {
                    Message::$variant(m)
                }
            }
        )+
    };
}

messages! { 'a;
    /// Terminal -> session server: register name, key and decision mode (S702, 801/802).
    Register(Register<'a>) = 0x01, Registration;
    /// Session server -> terminal: accepted; device ID and UDP key.
    RegisterAck(RegisterAck) = 0x02, Registration;
    /// Terminal -> session server: "you triggered me" (S703 polling, S1202).
    Poll(Poll) = 0x03, Registration;
    /// Session server -> terminal (sealed): a ticket for its next registrations.
    RegistrationTicket(RegistrationTicket) = 0x04, Registration;
    /// Session server -> terminal (sealed): the UDP key is installed; keepalives may start.
    KeyReady(KeyReady) = 0x05, Registration;
    /// Terminal -> session server: a registration with an invite's one-time enrolment code.
    EnrolRegister(EnrolRegister<'a>) = 0x06, Registration;
    /// Session server -> terminal, in clear: rate limited, retry later.
    RetryLater(RetryLater) = 0x07, Registration;
    /// Session server -> terminal (sealed): keep alive with this trigger server (a shard).
    TriggerAssignment(TriggerAssignment) = 0x08, Registration;
    /// Terminal -> trigger server: keep the NAT mapping alive and register the address (S701, 803/804).
    Keepalive(Keepalive) = 0x10, Udp;
    /// Trigger server -> terminal: the observed address and the wanted interval.
    KeepaliveAck(KeepaliveAck) = 0x11, Udp;
    /// Trigger server -> terminal: contact the session server (S603, 807).
    Trigger(Trigger) = 0x12, Udp;
    /// Trigger server -> terminal: end this session now (S1604/S1605).
    EndTrigger(EndTrigger) = 0x13, Udp;
    /// Terminal -> trigger server: a trigger or end trigger arrived.
    TriggerAck(TriggerAck) = 0x14, Udp;
    /// Terminal -> trigger server: answer me after a delay (`tryst netcheck`).
    NatProbe(NatProbe) = 0x15, Udp;
    /// Trigger server -> terminal: a probe's answer, with the observed address.
    NatProbeAnswer(NatProbeAnswer) = 0x16, Udp;
    /// Anyone -> trigger server's probe port, unauthenticated: echo my address.
    AddressProbe(AddressProbe) = 0x17, Udp;
    /// Trigger server's probe port -> the prober: the observed address.
    AddressEcho(AddressEcho) = 0x18, Udp;
    /// Requester -> session server: connect me to a name (FIG. 3, S204, 805).
    ConnectionRequest(ConnectionRequest<'a>) = 0x20, Setup;
    /// Session server -> target: send your permission list (S503, first embodiment).
    PermissionListRequest(PermissionListRequest) = 0x21, Setup;
    /// Target -> session server: the permission list L (S704, 808).
    PermissionList(PermissionList<'a>) = 0x22, Setup;
    /// Session server -> target: may this requester connect? (S1202, second embodiment).
    PermissionInquiry(PermissionInquiry<'a>) = 0x23, Setup;
    /// Target -> session server: its verdict (S1203/S1204).
    PermissionAnswer(PermissionAnswer) = 0x24, Setup;
    /// Session server -> each side: the other side's address and the session (FIG. 4A/4B, S509/S510).
    AddressNotification(AddressNotification<'a>) = 0x25, Setup;
    /// Session server -> trigger server: trigger this device (S503, 806).
    TriggerRequest(TriggerRequest) = 0x30, Interserver;
    /// Session server -> trigger server: send this device an end trigger (S1605).
    EndTriggerRequest(EndTriggerRequest) = 0x31, Interserver;
    /// Trigger server -> session server: what became of a trigger.
    TriggerResult(TriggerResult) = 0x32, Interserver;
    /// Session server -> trigger server: addresses of two devices (S507/S604, 809).
    AddressInquiry(AddressInquiry) = 0x33, Interserver;
    /// Trigger server -> session server: the observed addresses (S605/S606, 810).
    AddressReply(AddressReply) = 0x34, Interserver;
    /// Session server -> trigger server: accept keepalives from this device under this key.
    KeyInstall(KeyInstall) = 0x35, Interserver;
    /// Session server -> trigger server: forget this device and its key.
    KeyRevoke(KeyRevoke) = 0x36, Interserver;
    /// Trigger server -> session server: the key of this device is installed.
    KeyInstallAck(KeyInstallAck) = 0x37, Interserver;
    /// Terminal -> session server: extend this session (S1505).
    ExtensionRequest(ExtensionRequest) = 0x40, SessionLife;
    /// Session server -> terminal: the new permitted duration (S1603).
    ExtensionGrant(ExtensionGrant) = 0x41, SessionLife;
    /// Session server -> terminal: no extension.
    ExtensionRefusal(ExtensionRefusal) = 0x42, SessionLife;
    /// Terminal -> session server: the session ended (814/815, S1508, S1601).
    EndNotification(EndNotification) = 0x43, SessionLife;
    /// Server -> terminal: the request failed (S511).
    Error(ErrorReply) = 0x50, SessionLife;
    /// Initiator -> responder: first Noise handshake message (registration, server link).
    HandshakeInit(HandshakeInit<'a>) = 0x60, Envelope;
    /// Responder -> initiator: channel number and second Noise handshake message.
    HandshakeReply(HandshakeReply<'a>) = 0x61, Envelope;
    /// Either direction: one message sealed under the channel's symmetric key.
    Sealed(Sealed<'a>) = 0x62, Envelope;
    /// Terminal -> session server: a `HandshakeInit` with a registration ticket and its binder.
    TicketedHandshakeInit(TicketedHandshakeInit<'a>) = 0x63, Envelope;
}

impl<'a> Message<'a> {
    /// Decodes exactly one message that fills `buf`; trailing bytes are an error.
    pub fn decode(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let (header, body) = Header::split(buf)?;
        let mut r = Reader::new(body);
        let message = Message::parse_body(header.message_type, &mut r)?;
        r.finish()?;
        Ok(message)
    }

    /// Bytes the encoded message takes, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Encodes into the front of `out` and returns how many bytes were written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check_body()?;
        let needed = self.encoded_len();
        let Some(window) = out.get_mut(..needed) else {
            return Err(EncodeError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let mut writer = SliceWriter::new(window);
        self.emit(&mut writer);
        debug_assert!(!writer.overflowed, "encoded_len agrees with emit");
        Ok(needed)
    }

    /// Encodes into any [`bytes::BufMut`] with room for it; returns the bytes
    /// written. Needs the `bytes` feature (and so an allocator).
    #[cfg(feature = "bytes")]
    pub fn encode_to<B: bytes::BufMut>(&self, buf: &mut B) -> Result<usize, EncodeError> {
        self.check_body()?;
        let needed = self.encoded_len();
        if buf.remaining_mut() < needed {
            return Err(EncodeError::BufferTooSmall {
                needed,
                available: buf.remaining_mut(),
            });
        }
        self.emit(&mut super::put::BufMutWriter(buf));
        Ok(needed)
    }

    fn emit<B: Put>(&self, b: &mut B) {
        let body_len = self.body_len();
        debug_assert!(body_len <= MAX_BODY_LEN);
        b.put_slice(&MAGIC);
        b.put_u8(VERSION);
        b.put_u8(self.message_type().to_wire());
        // Every body type is bounded by MAX_BODY_LEN (< u16::MAX): no truncation.
        b.put_u16(body_len as u16);
        self.emit_body(b);
    }
}
