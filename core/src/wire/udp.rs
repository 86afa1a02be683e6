//! Authenticated UDP between a terminal and the trigger server: keepalives
//! (S701, 803/804), triggers (S603, 807), end triggers (S1605) and their acks.
//!
//! Each message carries a counter that must strictly increase per sender and
//! a 16-byte AES-GCM tag over the header and every field before the tag.

use core::net::SocketAddr;
use core::time::Duration;

use super::put::Put;

use super::error::DecodeError;
use super::fields::{self, DeviceId, SessionId, Tag, SESSION_ID_LEN, TAG_LEN};
use super::message::Body;
use super::reader::Reader;

/// The keepalive interval a terminal uses until the trigger server says
/// otherwise, and the one the server asks for by default: below the 30 s
/// after which common NATs drop an idle UDP mapping.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// The shortest keepalive interval a [`KeepaliveAck`] asks for: the trigger
/// server asks for no less, and a terminal clamps a shorter one to it.
pub const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// The longest keepalive interval a [`KeepaliveAck`] asks for: the trigger
/// server asks for no more, and a terminal clamps a longer one to it.
pub const MAX_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);

/// Terminal -> trigger server: keep my NAT mapping alive; record the address
/// you observe this packet coming from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Keepalive {
    /// Whose key to check the tag with.
    pub device_id: DeviceId,
    /// Strictly increasing per terminal: a replay is refused.
    pub counter: u64,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for Keepalive {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Keepalive {
            device_id: DeviceId(r.u64()?),
            counter: r.u64()?,
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + 8 + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
        b.put_u64(self.counter);
        b.put_slice(&self.tag.0);
    }
}

/// Trigger server -> terminal: the keepalive with this counter arrived from
/// `observed`; send the next one within `interval_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeepaliveAck {
    /// The acknowledged keepalive's counter.
    pub counter: u64,
    /// The keepalive interval the server wants, in seconds
    /// ([`MIN_KEEPALIVE_INTERVAL`]..=[`MAX_KEEPALIVE_INTERVAL`]; a terminal
    /// clamps anything else into that range).
    pub interval_secs: u16,
    /// The source address the server observed (the NAT's public side).
    pub observed: SocketAddr,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for KeepaliveAck {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(KeepaliveAck {
            counter: r.u64()?,
            interval_secs: r.u16()?,
            observed: r.addr()?,
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + 2 + fields::addr_wire_len(&self.observed) + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.counter);
        b.put_u16(self.interval_secs);
        fields::emit_addr(&self.observed, b);
        b.put_slice(&self.tag.0);
    }
}

/// Trigger server -> terminal: contact the session server (S603, 807).
/// It says nothing else, so an observer learns nothing but that it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Trigger {
    /// Strictly increasing per terminal.
    pub counter: u64,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for Trigger {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Trigger {
            counter: r.u64()?,
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.counter);
        b.put_slice(&self.tag.0);
    }
}

/// Trigger server -> terminal: end this session now (S1604/S1605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EndTrigger {
    /// Strictly increasing per terminal (shared with [`Trigger`]).
    pub counter: u64,
    /// The session to end.
    pub session_id: SessionId,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for EndTrigger {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(EndTrigger {
            counter: r.u64()?,
            session_id: SessionId(r.array()?),
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + SESSION_ID_LEN + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.counter);
        b.put_slice(&self.session_id.0);
        b.put_slice(&self.tag.0);
    }
}

/// Terminal -> trigger server: the trigger with this counter arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TriggerAck {
    /// Whose key to check the tag with.
    pub device_id: DeviceId,
    /// The acknowledged trigger's counter.
    pub counter: u64,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for TriggerAck {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(TriggerAck {
            device_id: DeviceId(r.u64()?),
            counter: r.u64()?,
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + 8 + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
        b.put_u64(self.counter);
        b.put_slice(&self.tag.0);
    }
}

/// The longest delay a [`NatProbe`] may ask for its answer (`tryst
/// netcheck --max-idle`); the trigger server clamps a longer one to it.
pub const MAX_NAT_PROBE_DELAY_SECS: u16 = 600;

/// Terminal -> trigger server (`tryst netcheck`): answer this probe with a
/// [`NatProbeAnswer`] after `delay_secs` seconds (0: at once), to the
/// address it came from. An answer after a delay tells whether the NAT kept
/// the mapping that long without traffic. Authenticated like a keepalive,
/// with a counter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NatProbe {
    /// Whose key to check the tag with.
    pub device_id: DeviceId,
    /// Strictly increasing per terminal and key (probes only).
    pub counter: u64,
    /// Seconds to wait before answering
    /// (`0..=`[`MAX_NAT_PROBE_DELAY_SECS`]).
    pub delay_secs: u16,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for NatProbe {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(NatProbe {
            device_id: DeviceId(r.u64()?),
            counter: r.u64()?,
            delay_secs: r.u16()?,
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + 8 + 2 + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.device_id.0);
        b.put_u64(self.counter);
        b.put_u16(self.delay_secs);
        b.put_slice(&self.tag.0);
    }
}

/// Trigger server -> terminal: the [`NatProbe`] with this counter arrived
/// from `observed`, and was held `delay_secs`; the server's probe port
/// ([`AddressProbe`]) is `probe_port` on the same host (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NatProbeAnswer {
    /// The answered probe's counter.
    pub counter: u64,
    /// How long the answer was held, as the probe asked (after clamping).
    pub delay_secs: u16,
    /// The trigger server's probe port (same IP), 0 when it has none.
    pub probe_port: u16,
    /// The source address the server observed the probe from.
    pub observed: SocketAddr,
    /// AES-GCM tag.
    pub tag: Tag,
}

impl<'a> Body<'a> for NatProbeAnswer {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(NatProbeAnswer {
            counter: r.u64()?,
            delay_secs: r.u16()?,
            probe_port: r.u16()?,
            observed: r.addr()?,
            tag: Tag(r.array()?),
        })
    }
    fn body_len(&self) -> usize {
        8 + 2 + 2 + fields::addr_wire_len(&self.observed) + TAG_LEN
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.counter);
        b.put_u16(self.delay_secs);
        b.put_u16(self.probe_port);
        fields::emit_addr(&self.observed, b);
        b.put_slice(&self.tag.0);
    }
}

/// Bytes of padding in an [`AddressProbe`]: enough that the probe is never
/// shorter than the [`AddressEcho`] it draws, IPv6 included (no amplification).
pub const ADDRESS_PROBE_PADDING: usize = 18;

/// Anyone -> the trigger server's probe port (unauthenticated, like a STUN
/// binding request): echo the address you see this from, from this port,
/// or, with `other_port`, from another port of yours I never sent to (a
/// filtering test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AddressProbe {
    /// Chosen by the sender, echoed back.
    pub txid: u64,
    /// Answer from another port (1) or from the probe port itself (0);
    /// any other value decodes as an error.
    pub other_port: bool,
}

impl<'a> Body<'a> for AddressProbe {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let txid = r.u64()?;
        let other_port = match r.u8()? {
            0 => false,
            1 => true,
            value => {
                return Err(DecodeError::BadEnum {
                    field: "other_port",
                    value,
                })
            }
        };
        let padding: [u8; ADDRESS_PROBE_PADDING] = r.array()?;
        if padding != [0u8; ADDRESS_PROBE_PADDING] {
            return Err(DecodeError::NonZeroPadding);
        }
        Ok(AddressProbe { txid, other_port })
    }
    fn body_len(&self) -> usize {
        8 + 1 + ADDRESS_PROBE_PADDING
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.txid);
        b.put_u8(u8::from(self.other_port));
        b.put_slice(&[0u8; ADDRESS_PROBE_PADDING]);
    }
}

/// The trigger server's probe port -> the sender of an [`AddressProbe`]:
/// its `txid` and the source address it was observed from. Never longer
/// than the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AddressEcho {
    /// The probe's `txid`.
    pub txid: u64,
    /// The source address the probe came from.
    pub observed: SocketAddr,
}

impl<'a> Body<'a> for AddressEcho {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(AddressEcho {
            txid: r.u64()?,
            observed: r.addr()?,
        })
    }
    fn body_len(&self) -> usize {
        8 + fields::addr_wire_len(&self.observed)
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.txid);
        fields::emit_addr(&self.observed, b);
    }
}
