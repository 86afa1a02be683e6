//! Session server <-> trigger server: triggers (S503/S603, S1605), address
//! inquiries (S507, S604-S606, 809/810) and the per-terminal UDP keys.

use core::net::SocketAddr;

use super::put::Put;

use super::error::DecodeError;
use super::fields::{
    self, DeviceId, SessionId, TriggerOutcome, UdpKey, SESSION_ID_LEN, UDP_KEY_LEN,
};
use super::message::Body;
use super::reader::Reader;

/// Session server -> trigger server: send `device_id` a trigger (806).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TriggerRequest {
    /// Chosen by the session server; echoed in the result.
    pub op_id: u32,
    /// The device to trigger.
    pub device_id: DeviceId,
}

impl<'a> Body<'a> for TriggerRequest {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(TriggerRequest {
            op_id: r.u32()?,
            device_id: DeviceId(r.u64()?),
        })
    }
    fn body_len(&self) -> usize {
        4 + 8
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.op_id);
        b.put_u64(self.device_id.0);
    }
}

/// Session server -> trigger server: send `device_id` an end trigger for
/// `session_id` (S1605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EndTriggerRequest {
    /// Chosen by the session server; echoed in the result.
    pub op_id: u32,
    /// The device to tell.
    pub device_id: DeviceId,
    /// The session to end.
    pub session_id: SessionId,
}

impl<'a> Body<'a> for EndTriggerRequest {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(EndTriggerRequest {
            op_id: r.u32()?,
            device_id: DeviceId(r.u64()?),
            session_id: SessionId(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        4 + 8 + SESSION_ID_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.op_id);
        b.put_u64(self.device_id.0);
        b.put_slice(&self.session_id.0);
    }
}

/// Trigger server -> session server: what became of a trigger or end trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TriggerResult {
    /// The request this answers.
    pub op_id: u32,
    /// Offline, delivered or unacknowledged.
    pub outcome: TriggerOutcome,
}

impl<'a> Body<'a> for TriggerResult {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(TriggerResult {
            op_id: r.u32()?,
            outcome: TriggerOutcome::from_wire(r.u8()?)?,
        })
    }
    fn body_len(&self) -> usize {
        4 + 1
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.op_id);
        b.put_u8(self.outcome.to_wire());
    }
}

/// Session server -> trigger server: the observed addresses of two devices,
/// the requester and the target (S507, S604, 809).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AddressInquiry {
    /// Chosen by the session server; echoed in the reply.
    pub op_id: u32,
    /// The first device (the requester).
    pub first: DeviceId,
    /// The second device (the target).
    pub second: DeviceId,
}

impl<'a> Body<'a> for AddressInquiry {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(AddressInquiry {
            op_id: r.u32()?,
            first: DeviceId(r.u64()?),
            second: DeviceId(r.u64()?),
        })
    }
    fn body_len(&self) -> usize {
        4 + 8 + 8
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.op_id);
        b.put_u64(self.first.0);
        b.put_u64(self.second.0);
    }
}

/// Trigger server -> session server: the addresses, each absent when the
/// device has no live entry (S605/S606, 810).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AddressReply {
    /// The inquiry this answers.
    pub op_id: u32,
    /// The first device's observed address.
    pub first: Option<SocketAddr>,
    /// The second device's observed address.
    pub second: Option<SocketAddr>,
}

impl<'a> Body<'a> for AddressReply {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(AddressReply {
            op_id: r.u32()?,
            first: r.opt_addr()?,
            second: r.opt_addr()?,
        })
    }
    fn body_len(&self) -> usize {
        4 + fields::opt_addr_wire_len(&self.first) + fields::opt_addr_wire_len(&self.second)
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.op_id);
        fields::emit_opt_addr(&self.first, b);
        fields::emit_opt_addr(&self.second, b);
    }
}

/// Session server -> trigger server: accept authenticated UDP from
/// `device_id` under `udp_key` (issued at registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyInstall {
    /// The device.
    pub device_id: DeviceId,
    /// Its UDP key.
    pub udp_key: UdpKey,
    /// The local address of its UDP socket, as its `Register` said
    /// (`None`: unknown): beside the address its keepalives are observed
    /// from, the trigger server's NAT type guess
    /// ([`crate::trigger_server::NatGuess`]).
    pub local: Option<SocketAddr>,
}

impl<'a> Body<'a> for KeyInstall {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(KeyInstall {
            device_id: DeviceId(r.u64()?),
            udp_key: UdpKey(r.array()?),
            local: r.opt_addr()?,
        })
    }
    fn body_len(&self) -> usize {
        8 + UDP_KEY_LEN + fields::opt_addr_wire_len(&self.local)
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
        b.put_slice(&self.udp_key.0);
        fields::emit_opt_addr(&self.local, b);
    }
}

/// Session server -> trigger server: forget `device_id` (re-registered or removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyRevoke {
    /// The device.
    pub device_id: DeviceId,
}

impl<'a> Body<'a> for KeyRevoke {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(KeyRevoke {
            device_id: DeviceId(r.u64()?),
        })
    }
    fn body_len(&self) -> usize {
        8
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
    }
}

/// Trigger server -> session server: `device_id`'s key is installed; its
/// keepalives are accepted from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyInstallAck {
    /// The device of the `KeyInstall` this answers.
    pub device_id: DeviceId,
}

impl<'a> Body<'a> for KeyInstallAck {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(KeyInstallAck {
            device_id: DeviceId(r.u64()?),
        })
    }
    fn body_len(&self) -> usize {
        8
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
    }
}
