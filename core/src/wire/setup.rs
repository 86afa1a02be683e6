//! Connection set-up: the request (FIG. 3), the target's permission list
//! (first embodiment, FIG. 5) or verdict (second embodiment, FIG. 12), and
//! the address notifications (FIG. 4A/4B).

use core::fmt;
use core::net::SocketAddr;

use super::put::Put;

use super::error::DecodeError;
use super::fields::{
    self, Name, PublicKey, RelayAllocation, Role, SessionId, SessionKey, Verdict, PUBLIC_KEY_LEN,
    RELAY_TOKEN_LEN, SESSION_ID_LEN, SESSION_KEY_LEN,
};
use super::message::Body;
use super::reader::Reader;

/// Most names a permission list may hold.
pub const MAX_PERMISSION_ENTRIES: usize = 64;

/// A sequence of at most [`MAX_PERMISSION_ENTRIES`] names: either a checked
/// view over the wire bytes of a decoded list (no copy), or a caller's slice
/// to encode. Two sequences are equal when they hold the same names in order.
#[derive(Clone, Copy)]
pub struct NameSeq<'a>(NameSource<'a>);

#[derive(Clone, Copy)]
enum NameSource<'a> {
    /// `count` names, each a length byte and UTF-8, already validated.
    Wire { count: u8, raw: &'a [u8] },
    /// Names supplied by the caller.
    Slice(&'a [Name<'a>]),
}

impl<'a> NameSeq<'a> {
    /// Wraps a caller's names; `None` if there are more than [`MAX_PERMISSION_ENTRIES`].
    pub fn from_slice(names: &'a [Name<'a>]) -> Option<Self> {
        (names.len() <= MAX_PERMISSION_ENTRIES).then_some(NameSeq(NameSource::Slice(names)))
    }

    /// The empty sequence.
    pub fn empty() -> Self {
        NameSeq(NameSource::Slice(&[]))
    }

    /// How many names.
    pub fn len(&self) -> usize {
        match self.0 {
            NameSource::Wire { count, .. } => usize::from(count),
            NameSource::Slice(s) => s.len(),
        }
    }

    /// True when there are no names.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names in order.
    pub fn iter(&self) -> NameIter<'a> {
        NameIter(match self.0 {
            NameSource::Wire { raw, .. } => IterSource::Wire(raw),
            NameSource::Slice(s) => IterSource::Slice(s.iter()),
        })
    }

    /// True when `name` is in the sequence (seed S505: the name search).
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n.as_str() == name)
    }

    /// Reads `count` names that fill `raw` exactly, as they stand on the wire.
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let count = r.u8()?;
        if usize::from(count) > MAX_PERMISSION_ENTRIES {
            return Err(DecodeError::TooManyNames(count));
        }
        let start = r.rest();
        for _ in 0..count {
            r.name()?;
        }
        let consumed = start.len() - r.rest().len();
        Ok(NameSeq(NameSource::Wire {
            count,
            raw: &start[..consumed],
        }))
    }

    fn wire_len(&self) -> usize {
        1 + match self.0 {
            NameSource::Wire { raw, .. } => raw.len(),
            NameSource::Slice(s) => s.iter().map(Name::wire_len).sum(),
        }
    }

    fn emit<B: Put>(&self, b: &mut B) {
        // Both sources hold at most 64 names: no truncation.
        b.put_u8(self.len() as u8);
        match self.0 {
            NameSource::Wire { raw, .. } => b.put_slice(raw),
            NameSource::Slice(s) => s.iter().for_each(|n| n.emit(b)),
        }
    }
}

impl PartialEq for NameSeq<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for NameSeq<'_> {}

impl fmt::Debug for NameSeq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for NameSeq<'a> {
    type Item = Name<'a>;
    type IntoIter = NameIter<'a>;
    fn into_iter(self) -> NameIter<'a> {
        self.iter()
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for NameSeq<'a> {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Take raw bytes and keep the longest prefix of valid wire names, so
        // the sequence borrows from the fuzz input like a decoded one does.
        let raw: &'a [u8] = u.arbitrary()?;
        let mut r = Reader::new(raw);
        let (mut count, mut consumed) = (0u8, 0usize);
        while usize::from(count) < MAX_PERMISSION_ENTRIES && r.name().is_ok() {
            count += 1;
            consumed = raw.len() - r.rest().len();
        }
        Ok(NameSeq(NameSource::Wire {
            count,
            raw: &raw[..consumed],
        }))
    }
}

/// Iterator over the names of a [`NameSeq`].
pub struct NameIter<'a>(IterSource<'a>);

enum IterSource<'a> {
    Wire(&'a [u8]),
    Slice(core::slice::Iter<'a, Name<'a>>),
}

impl<'a> Iterator for NameIter<'a> {
    type Item = Name<'a>;
    fn next(&mut self) -> Option<Name<'a>> {
        match &mut self.0 {
            IterSource::Wire(raw) => {
                if raw.is_empty() {
                    return None;
                }
                let mut r = Reader::new(raw);
                // The bytes were validated when the sequence was made.
                let name = r.name().ok()?;
                *raw = r.rest();
                Some(name)
            }
            IterSource::Slice(it) => it.next().copied(),
        }
    }
}

/// Requester -> session server: connect me to `target` (FIG. 3, S204, 805).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ConnectionRequest<'a> {
    /// Chosen by the requester; echoed in the answer.
    pub request_id: u32,
    /// The duration the requester asks for, in seconds; the server may grant less.
    pub duration_secs: u32,
    /// The requester's own name (FIG. 3, self-device name 300).
    pub requester: Name<'a>,
    /// The name it wants to reach (FIG. 3, partner-device name 301).
    pub target: Name<'a>,
}

impl<'a> Body<'a> for ConnectionRequest<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(ConnectionRequest {
            request_id: r.u32()?,
            duration_secs: r.u32()?,
            requester: r.name()?,
            target: r.name()?,
        })
    }
    fn body_len(&self) -> usize {
        4 + 4 + self.requester.wire_len() + self.target.wire_len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.request_id);
        b.put_u32(self.duration_secs);
        self.requester.emit(b);
        self.target.emit(b);
    }
}

/// Session server -> target: send your permission list (S503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PermissionListRequest {
    /// Chosen by the server; echoed in the list.
    pub query_id: u32,
}

impl<'a> Body<'a> for PermissionListRequest {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(PermissionListRequest { query_id: r.u32()? })
    }
    fn body_len(&self) -> usize {
        4
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.query_id);
    }
}

/// Target -> session server: the permission list L (S704, 808).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PermissionList<'a> {
    /// The query this answers.
    pub query_id: u32,
    /// Names that may connect, at most [`MAX_PERMISSION_ENTRIES`].
    pub names: NameSeq<'a>,
}

impl<'a> Body<'a> for PermissionList<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(PermissionList {
            query_id: r.u32()?,
            names: NameSeq::parse(r)?,
        })
    }
    fn body_len(&self) -> usize {
        4 + self.names.wire_len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.query_id);
        self.names.emit(b);
    }
}

/// Session server -> target: may `requester` connect? (S1202).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PermissionInquiry<'a> {
    /// Chosen by the server; echoed in the answer.
    pub query_id: u32,
    /// The requester's name.
    pub requester: Name<'a>,
}

impl<'a> Body<'a> for PermissionInquiry<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(PermissionInquiry {
            query_id: r.u32()?,
            requester: r.name()?,
        })
    }
    fn body_len(&self) -> usize {
        4 + self.requester.wire_len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.query_id);
        self.requester.emit(b);
    }
}

/// Target -> session server: its verdict on the requester (S1203/S1204, S1101).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PermissionAnswer {
    /// The inquiry this answers.
    pub query_id: u32,
    /// Permit or deny.
    pub verdict: Verdict,
}

impl<'a> Body<'a> for PermissionAnswer {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(PermissionAnswer {
            query_id: r.u32()?,
            verdict: Verdict::from_wire(r.u8()?)?,
        })
    }
    fn body_len(&self) -> usize {
        4 + 1
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.query_id);
        b.put_u8(self.verdict.to_wire());
    }
}

/// Session server -> each side: the session and the *other* side's address,
/// name and key (FIG. 4A to the requester, FIG. 4B to the target; S509/S510).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AddressNotification<'a> {
    /// The requester's request ID in its notification; 0 in the target's.
    pub request_id: u32,
    /// Unique per session (401/411).
    pub session_id: SessionId,
    /// Which side the receiver is.
    pub role: Role,
    /// Permitted duration in seconds (404/414).
    pub duration_secs: u32,
    /// The session key (403/413): the pre-shared key of the peer handshake.
    pub session_key: SessionKey,
    /// The peer's long-term public key.
    pub peer_key: PublicKey,
    /// The peer's address as the trigger server observed it (402/412).
    pub peer_addr: SocketAddr,
    /// The peer's name.
    pub peer_name: Name<'a>,
    /// Where and how to reach the peer through the operator's relay when
    /// punching fails (`None`: no relay is configured).
    pub relay: Option<RelayAllocation>,
}

impl<'a> Body<'a> for AddressNotification<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(AddressNotification {
            request_id: r.u32()?,
            session_id: SessionId(r.array()?),
            role: Role::from_wire(r.u8()?)?,
            duration_secs: r.u32()?,
            session_key: SessionKey(r.array()?),
            peer_key: PublicKey(r.array()?),
            peer_addr: r.addr()?,
            peer_name: r.name()?,
            relay: match r.opt_addr()? {
                None => None,
                Some(addr) => Some(RelayAllocation {
                    addr,
                    token: r.array()?,
                }),
            },
        })
    }
    fn body_len(&self) -> usize {
        4 + SESSION_ID_LEN
            + 1
            + 4
            + SESSION_KEY_LEN
            + PUBLIC_KEY_LEN
            + fields::addr_wire_len(&self.peer_addr)
            + self.peer_name.wire_len()
            + self
                .relay
                .as_ref()
                .map_or(1, |a| fields::addr_wire_len(&a.addr) + RELAY_TOKEN_LEN)
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u32(self.request_id);
        b.put_slice(&self.session_id.0);
        b.put_u8(self.role.to_wire());
        b.put_u32(self.duration_secs);
        b.put_slice(&self.session_key.0);
        b.put_slice(&self.peer_key.0);
        fields::emit_addr(&self.peer_addr, b);
        self.peer_name.emit(b);
        match &self.relay {
            None => b.put_u8(0),
            Some(a) => {
                fields::emit_addr(&a.addr, b);
                b.put_slice(&a.token);
            }
        }
    }
}
