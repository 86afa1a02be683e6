//! Registration of a terminal with the session server (seed S702, 801/802)
//! and the terminal's poll after a trigger (S703, S1202).

use core::net::SocketAddr;

use super::put::Put;

use super::error::DecodeError;
use super::fields::{
    self, DecisionMode, DeviceId, Name, PublicKey, UdpKey, PUBLIC_KEY_LEN, UDP_KEY_LEN,
};
use super::message::Body;
use super::reader::Reader;

/// Terminal -> session server: bind `name` to `identity` and say who judges
/// requests aimed at this terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Register<'a> {
    /// First or second embodiment.
    pub mode: DecisionMode,
    /// The terminal's long-term public key: its identity.
    pub identity: PublicKey,
    /// The device name (seed: "device name").
    pub name: Name<'a>,
    /// The local address of the terminal's UDP socket, as the terminal
    /// knows it (`None`: unknown). Sent only here, inside the Noise
    /// handshake (never in clear), and used only for the operator's NAT
    /// type guess ([`crate::trigger_server::NatGuess`]).
    pub local: Option<SocketAddr>,
}

impl<'a> Body<'a> for Register<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Register {
            mode: DecisionMode::from_wire(r.u8()?)?,
            identity: PublicKey(r.array()?),
            name: r.name()?,
            local: r.opt_addr()?,
        })
    }
    fn body_len(&self) -> usize {
        1 + PUBLIC_KEY_LEN + self.name.wire_len() + fields::opt_addr_wire_len(&self.local)
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u8(self.mode.to_wire());
        b.put_slice(&self.identity.0);
        self.name.emit(b);
        fields::emit_opt_addr(&self.local, b);
    }
}

/// Bytes of a one-time enrolment code (an invite's, for a `--closed` server).
pub const ENROL_CODE_LEN: usize = 16;

/// Terminal -> session server, as the handshake payload instead of a
/// [`Register`]: the same registration, plus the one-time enrolment code of
/// an invite. A closed server that holds an unused, unexpired code for this
/// name (by its SHA-256) enrols the handshake's key for the name, once.
/// Inside the Noise channel like `Register`, so the code is never in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EnrolRegister<'a> {
    /// The registration.
    pub register: Register<'a>,
    /// The invite's one-time code.
    pub code: [u8; ENROL_CODE_LEN],
}

impl<'a> Body<'a> for EnrolRegister<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(EnrolRegister {
            register: Register::parse(r)?,
            code: r.array()?,
        })
    }
    fn body_len(&self) -> usize {
        self.register.body_len() + ENROL_CODE_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        self.register.emit(b);
        b.put_slice(&self.code);
    }
}

/// Session server -> terminal: registered. The device ID keys the trigger
/// server's address table; the UDP key authenticates keepalives and triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RegisterAck {
    /// The device ID assigned to this registration.
    pub device_id: DeviceId,
    /// The per-terminal key for authenticated UDP.
    pub udp_key: UdpKey,
}

impl<'a> Body<'a> for RegisterAck {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(RegisterAck {
            device_id: DeviceId(r.u64()?),
            udp_key: UdpKey(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + UDP_KEY_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
        b.put_slice(&self.udp_key.0);
    }
}

/// Terminal -> session server: "I was triggered; what do you want?". The
/// channel already says who is asking, so the body is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Poll;

impl<'a> Body<'a> for Poll {
    fn parse(_r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Poll)
    }
    fn body_len(&self) -> usize {
        0
    }
    fn emit<B: Put>(&self, _b: &mut B) {}
}

/// Bytes of a registration ticket: a 12-byte nonce, the sealed identity key
/// (32), issue time (8) and binder secret (32), and the 16-byte AEAD tag.
pub const TICKET_LEN: usize = 12 + PUBLIC_KEY_LEN + 8 + TICKET_SECRET_LEN + 16;
/// Bytes of the secret a ticket's holder proves it knows (the binder key).
pub const TICKET_SECRET_LEN: usize = 32;
/// Bytes of a binder: HMAC-SHA-256 of the Noise bytes under the ticket secret.
pub const TICKET_BINDER_LEN: usize = 32;

/// Session server -> terminal, sealed on its channel: a ticket to present on
/// its next registrations, so that they skip the per-source rate limit
/// (the server alone can open it), and the secret that binds a ticket to
/// one handshake (see [`super::TicketedHandshakeInit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RegistrationTicket {
    /// Opaque to the terminal: sealed under a key only the server derives.
    pub ticket: [u8; TICKET_LEN],
    /// The binder key; never sent again in clear.
    pub secret: [u8; TICKET_SECRET_LEN],
}

impl<'a> Body<'a> for RegistrationTicket {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(RegistrationTicket {
            ticket: r.array()?,
            secret: r.array()?,
        })
    }
    fn body_len(&self) -> usize {
        TICKET_LEN + TICKET_SECRET_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(&self.ticket);
        b.put_slice(&self.secret);
    }
}

/// Session server -> terminal, sealed: the trigger server holds this
/// registration's UDP key, so keepalives may start (none is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyReady;

impl<'a> Body<'a> for KeyReady {
    fn parse(_r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(KeyReady)
    }
    fn body_len(&self) -> usize {
        0
    }
    fn emit<B: Put>(&self, _b: &mut B) {}
}

/// Session server -> terminal, sealed: keep alive with the trigger server
/// at `trigger` (a sharded deployment spreads devices over several trigger
/// servers by device ID). Sent after `RegisterAck`, before `KeyReady`,
/// once that trigger server holds the key; sent again on the same channel
/// when the server moves the device to another shard (its trigger server
/// died). Without one, the terminal keeps alive with the trigger server it
/// was configured with (an unsharded server never sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TriggerAssignment {
    /// The UDP address of the trigger server this registration's keepalives go to.
    pub trigger: SocketAddr,
}

impl<'a> Body<'a> for TriggerAssignment {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(TriggerAssignment { trigger: r.addr()? })
    }
    fn body_len(&self) -> usize {
        fields::addr_wire_len(&self.trigger)
    }
    fn emit<B: Put>(&self, b: &mut B) {
        fields::emit_addr(&self.trigger, b);
    }
}

/// The longest wait a [`RetryLater`] may ask for; a terminal waits at most
/// this long on one answer, whatever the field says.
pub const MAX_RETRY_AFTER_SECS: u16 = 600;

/// Session server -> terminal, **in clear** on the control stream instead of
/// a `HandshakeReply`, then the stream is closed: the registration was
/// refused by a rate limit (of its source address, before any public-key
/// work, or of its identity once the handshake proved it) and may be tried
/// again in `retry_after_secs`. It is a hint, never trusted for anything
/// else: a terminal waits `min(retry_after_secs, MAX_RETRY_AFTER_SECS)` (at
/// least its own backoff), which an attacker on the path could force anyway
/// by dropping the stream. Sending it costs the server no cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RetryLater {
    /// Seconds until the same registration would be let in (at least 1).
    pub retry_after_secs: u16,
}

impl<'a> Body<'a> for RetryLater {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(RetryLater {
            retry_after_secs: r.u16()?,
        })
    }
    fn body_len(&self) -> usize {
        2
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u16(self.retry_after_secs);
    }
}
