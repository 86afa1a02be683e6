//! Session life (third embodiment): extension (S1505, S1602/S1603), end
//! notification (814/815, S1508, S1601) and the one error reply (S511).

use super::put::Put;

use super::error::DecodeError;
use super::fields::{EndReason, ErrorCode, SessionId, SESSION_ID_LEN};
use super::message::Body;
use super::reader::Reader;

/// Terminal -> session server: the transfer still runs at the threshold
/// (70% by default) of the permitted duration; extend it (S1504/S1505).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ExtensionRequest {
    /// The session.
    pub session_id: SessionId,
    /// Seconds more that the terminal asks for.
    pub extra_secs: u32,
}

impl<'a> Body<'a> for ExtensionRequest {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ExtensionRequest {
            session_id: SessionId(r.array()?),
            extra_secs: r.u32()?,
        })
    }
    fn body_len(&self) -> usize {
        SESSION_ID_LEN + 4
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(&self.session_id.0);
        b.put_u32(self.extra_secs);
    }
}

/// Session server -> terminal: the new permitted duration, counted from the
/// session's start (S1603, S1506/S1507).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ExtensionGrant {
    /// The session.
    pub session_id: SessionId,
    /// The whole permitted duration now, in seconds.
    pub duration_secs: u32,
}

impl<'a> Body<'a> for ExtensionGrant {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ExtensionGrant {
            session_id: SessionId(r.array()?),
            duration_secs: r.u32()?,
        })
    }
    fn body_len(&self) -> usize {
        SESSION_ID_LEN + 4
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(&self.session_id.0);
        b.put_u32(self.duration_secs);
    }
}

/// Session server -> terminal: no extension; the duration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ExtensionRefusal {
    /// The session.
    pub session_id: SessionId,
}

impl<'a> Body<'a> for ExtensionRefusal {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ExtensionRefusal {
            session_id: SessionId(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        SESSION_ID_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(&self.session_id.0);
    }
}

/// Terminal -> session server: the session ended; what it moved and for how
/// long (814/815). The server logs it (S1606).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EndNotification {
    /// The session.
    pub session_id: SessionId,
    /// Why it ended.
    pub reason: EndReason,
    /// Payload bytes this side sent.
    pub bytes_sent: u64,
    /// Payload bytes this side received.
    pub bytes_received: u64,
    /// How long the session ran on this side, in milliseconds.
    pub duration_ms: u64,
}

impl<'a> Body<'a> for EndNotification {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(EndNotification {
            session_id: SessionId(r.array()?),
            reason: EndReason::from_wire(r.u8()?)?,
            bytes_sent: r.u64()?,
            bytes_received: r.u64()?,
            duration_ms: r.u64()?,
        })
    }
    fn body_len(&self) -> usize {
        SESSION_ID_LEN + 1 + 8 + 8 + 8
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(&self.session_id.0);
        b.put_u8(self.reason.to_wire());
        b.put_u64(self.bytes_sent);
        b.put_u64(self.bytes_received);
        b.put_u64(self.duration_ms);
    }
}

/// Server -> terminal: the request with this ID failed (S511). A connection
/// request that does not succeed always gets [`ErrorCode::NotPermitted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ErrorReply {
    /// The request this answers (0 when it had none, e.g. a registration).
    pub request_id: u32,
    /// What went wrong, as much as may be said.
    pub code: ErrorCode,
}

impl<'a> Body<'a> for ErrorReply {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ErrorReply {
            request_id: r.u32()?,
            code: ErrorCode::from_wire(r.u8()?)?,
        })
    }
    fn body_len(&self) -> usize {
        4 + 1
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.request_id);
        b.put_u8(self.code.to_wire());
    }
}
