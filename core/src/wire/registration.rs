//! Registration of a terminal with the session server (seed S702, 801/802)
//! and the terminal's poll after a trigger (S703, S1202).

use super::put::Put;

use super::error::DecodeError;
use super::fields::{DecisionMode, DeviceId, Name, PublicKey, UdpKey, PUBLIC_KEY_LEN, UDP_KEY_LEN};
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
}

impl<'a> Body<'a> for Register<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Register {
            mode: DecisionMode::from_wire(r.u8()?)?,
            identity: PublicKey(r.array()?),
            name: r.name()?,
        })
    }
    fn body_len(&self) -> usize {
        1 + PUBLIC_KEY_LEN + self.name.wire_len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u8(self.mode.to_wire());
        b.put_slice(&self.identity.0);
        self.name.emit(b);
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
