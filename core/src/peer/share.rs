//! The share protocol on a peer session's stream: a permitted peer asks a
//! terminal that shares a folder for its listing or for one of its files,
//! and a receiver tells a sender the name a file was stored under.
//!
//! A stream carries one item: a file transfer ([`super::transfer`], it
//! starts with `"TF"`) or one share message (it starts with `"TS"`);
//! [`StreamKind::classify`] tells which from the first two bytes.
//!
//! ```text
//! "TS" · version 1 · kind u8 · body length u32 BE · body
//! kind 1 List        body empty                           requester -> sharer
//! kind 2 Get         body: path (UTF-8)                   requester -> sharer
//! kind 3 Listing     body: count u16 BE · count entries   sharer -> requester
//!                    entry: path length u8 · path · size u64 BE · mtime u64 BE
//! kind 4 NoSuchFile  body empty                           sharer -> requester
//! kind 5 Stored      body: path (UTF-8)                   receiver -> sender
//! kind 6 Live        body empty                           requester -> sharer
//! kind 7 Resume      body: offset u64 BE                  receiver -> sender
//! kind 8 NotKept     body: reason u8                      receiver -> sender
//! ```
//!
//! A `Live` request asks the sharer for its live stream: real-time
//! datagrams on the session (never retransmitted, never behind the
//! stream), sent until the session ends; the requester may send its own
//! the same way. A sharer with no live source answers the one
//! `NoSuchFile`.
//!
//! A stream may carry several messages back to back: the receiver of a
//! resumable file (a version 2 transfer header) answers its header with
//! `Resume` (where the file's bytes start: what it already holds and
//! verified, or 0), and a receiver that tells the stored name sends
//! `Stored` after it on the same stream. [`MessageReader::message_at`]
//! reads the message that starts at an offset.
//!
//! A path is relative: 1 to [`MAX_PATH_DEPTH`] components joined by `/`,
//! each a plain file name ([`super::transfer::check_file_name`]: no `..`,
//! no hidden names), at most [`MAX_PATH_LEN`] bytes in all
//! ([`super::transfer::check_relative_path`]). Every size is bounded by a
//! named constant, and [`ShareMessage::decode`] refuses anything else with
//! a typed [`ShareError`]. The answer to a Get of a file the sharer does not
//! share (missing, hidden, outside the folder, behind a symlink) is always
//! the one `NoSuchFile`; the answer to a Get of a shared file is its
//! transfer.
//!
//! [`MessageReader`] collects one message from stream bytes that arrive in
//! any order, possibly twice, in a fixed buffer: sans-IO and no allocator.

use core::fmt;

use super::transfer::{check_relative_path, TransferError, TRANSFER_MAGIC};
use crate::peer::transport::ranges::RangeSet;

/// The two bytes a share message starts with.
pub const SHARE_MAGIC: [u8; 2] = *b"TS";
/// The share protocol's version.
pub const SHARE_VERSION: u8 = 1;
/// Bytes of a message's header: magic, version, kind, body length.
pub const SHARE_HEADER_LEN: usize = 2 + 1 + 1 + 4;
/// Longest relative path, in bytes of UTF-8 (its length is one byte).
pub const MAX_PATH_LEN: usize = 255;
/// Most components of a relative path (folders inside the shared folder, and the file).
pub const MAX_PATH_DEPTH: usize = 8;
/// Most entries in one listing; a larger share lists its first entries in
/// path order.
pub const MAX_LISTING_ENTRIES: usize = 256;
/// Bytes of a listing entry around its path: path length, size, mtime.
pub const LISTING_ENTRY_FIXED_LEN: usize = 1 + 8 + 8;
/// Longest body: a full listing of the longest paths.
pub const MAX_SHARE_BODY_LEN: usize =
    2 + MAX_LISTING_ENTRIES * (LISTING_ENTRY_FIXED_LEN + MAX_PATH_LEN);
/// Longest message.
pub const MAX_SHARE_MESSAGE_LEN: usize = SHARE_HEADER_LEN + MAX_SHARE_BODY_LEN;
/// Most separate ranges a [`MessageReader`] tracks (a message crosses in a
/// few dozen packets at most).
pub const MAX_MESSAGE_RANGES: usize = 64;

/// What a stream carries, from its first two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A file transfer (`"TF"`).
    File,
    /// A share message (`"TS"`).
    Message,
}

impl StreamKind {
    /// The kind of a stream starting with `prefix`: `Ok(None)` until two
    /// bytes are known (a wrong first byte fails at once).
    pub fn classify(prefix: &[u8]) -> Result<Option<StreamKind>, ShareError> {
        let n = prefix.len().min(2);
        if prefix[..n] == TRANSFER_MAGIC[..n] && n == 2 {
            return Ok(Some(StreamKind::File));
        }
        if prefix[..n] == SHARE_MAGIC[..n] && n == 2 {
            return Ok(Some(StreamKind::Message));
        }
        if prefix[..n] == TRANSFER_MAGIC[..n] || prefix[..n] == SHARE_MAGIC[..n] {
            return Ok(None);
        }
        Err(ShareError::BadMagic)
    }
}

/// Why share bytes are not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareError {
    /// The stream starts with neither `"TF"` nor `"TS"`.
    BadMagic,
    /// A version this implementation does not read.
    UnsupportedVersion(u8),
    /// A message kind this implementation does not know.
    UnknownKind(u8),
    /// The body is longer than [`MAX_SHARE_BODY_LEN`], or longer than its kind allows.
    TooLong,
    /// The body ends inside a field, or has bytes after its last field.
    BadLength,
    /// A path is not a relative path of plain names.
    BadPath(TransferError),
    /// A listing of more than [`MAX_LISTING_ENTRIES`] entries.
    TooManyEntries,
    /// Bytes past the message's end, or more scattered than [`MAX_MESSAGE_RANGES`].
    PastEnd,
    /// The caller's buffer cannot hold the message.
    BufferTooSmall,
    /// A `NotKept` reason byte with no meaning.
    UnknownReason(u8),
}

impl fmt::Display for ShareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareError::BadMagic => f.write_str("not a tryst transfer or share message"),
            ShareError::UnsupportedVersion(v) => write!(f, "unsupported share version {v}"),
            ShareError::UnknownKind(k) => write!(f, "unknown share message kind {k}"),
            ShareError::TooLong => f.write_str("share message too long"),
            ShareError::BadLength => f.write_str("share message body malformed"),
            ShareError::BadPath(e) => write!(f, "refused path: {e}"),
            ShareError::TooManyEntries => f.write_str("listing has too many entries"),
            ShareError::PastEnd => f.write_str("bytes past the share message"),
            ShareError::BufferTooSmall => f.write_str("buffer too small for the share message"),
            ShareError::UnknownReason(r) => write!(f, "unknown not-kept reason {r}"),
        }
    }
}

impl core::error::Error for ShareError {}

/// Message kind bytes.
mod kind {
    pub const LIST: u8 = 1;
    pub const GET: u8 = 2;
    pub const LISTING: u8 = 3;
    pub const NO_SUCH_FILE: u8 = 4;
    pub const STORED: u8 = 5;
    pub const LIVE: u8 = 6;
    pub const RESUME: u8 = 7;
    pub const NOT_KEPT: u8 = 8;
}

/// Length of a `Resume` body: the offset.
pub const RESUME_BODY_LEN: usize = 8;
/// Length of a `NotKept` body: the reason.
pub const NOT_KEPT_BODY_LEN: usize = 1;

/// Why a receiver did not keep a file it was sent, as it tells the sender
/// (`NotKept`), so that the sender's message says what happened: a write
/// error is never reported as a checksum mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotKeptReason {
    /// The receiver takes no files (it has no receive folder).
    TakesNoFiles = 1,
    /// The receiver could not write or store the file (permissions, a full
    /// or read-only disk).
    CouldNotWrite = 2,
    /// The bytes did not match the sender's SHA-256.
    ChecksumMismatch = 3,
    /// The receiver refused the file's name.
    RefusedName = 4,
    /// The transfer broke the protocol (a malformed header, data past the
    /// announced end, too scattered).
    Malformed = 5,
}

impl NotKeptReason {
    /// The reason of a wire byte.
    pub fn from_wire(byte: u8) -> Result<NotKeptReason, ShareError> {
        Ok(match byte {
            1 => NotKeptReason::TakesNoFiles,
            2 => NotKeptReason::CouldNotWrite,
            3 => NotKeptReason::ChecksumMismatch,
            4 => NotKeptReason::RefusedName,
            5 => NotKeptReason::Malformed,
            other => return Err(ShareError::UnknownReason(other)),
        })
    }

    /// Why a receive failed, as the sender is told it; `None` for a cut
    /// transfer (the session ended: there is no one to tell).
    pub fn of(failure: &super::transfer::ReceiveFailure) -> Option<NotKeptReason> {
        use super::transfer::ReceiveFailure as F;
        Some(match failure {
            F::Cut => return None,
            F::Storage | F::Hash(_) => NotKeptReason::CouldNotWrite,
            F::ChecksumMismatch => NotKeptReason::ChecksumMismatch,
            F::BadHeader(TransferError::BadName)
            | F::BadHeader(TransferError::NameTooLong { .. })
            | F::BadHeader(TransferError::FormatCharacter(_)) => NotKeptReason::RefusedName,
            _ => NotKeptReason::Malformed,
        })
    }
}

/// One file of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry<'a> {
    /// Its path relative to the shared folder.
    pub path: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// A decoded listing: its entries, checked, read from the body on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing<'a> {
    count: u16,
    entries: &'a [u8],
}

impl<'a> Listing<'a> {
    /// How many entries.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries, in the sharer's order.
    pub fn entries(&self) -> ListingEntries<'a> {
        ListingEntries {
            rest: self.entries,
            left: self.count,
        }
    }
}

/// The entries of a [`Listing`].
#[derive(Debug, Clone)]
pub struct ListingEntries<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for ListingEntries<'a> {
    type Item = ListEntry<'a>;

    fn next(&mut self) -> Option<ListEntry<'a>> {
        if self.left == 0 {
            return None;
        }
        // Checked when decoded: this cannot fail.
        let (entry, used) = read_entry(self.rest).ok()?;
        self.rest = &self.rest[used..];
        self.left -= 1;
        Some(entry)
    }
}

/// Reads one listing entry; the entry and its length.
fn read_entry(bytes: &[u8]) -> Result<(ListEntry<'_>, usize), ShareError> {
    let (&len, rest) = bytes.split_first().ok_or(ShareError::BadLength)?;
    let len = usize::from(len);
    let path = rest.get(..len).ok_or(ShareError::BadLength)?;
    let path =
        core::str::from_utf8(path).map_err(|_| ShareError::BadPath(TransferError::BadName))?;
    check_relative_path(path).map_err(ShareError::BadPath)?;
    let size = rest
        .get(len..len + 8)
        .and_then(|b| b.first_chunk::<8>())
        .ok_or(ShareError::BadLength)?;
    let mtime = rest
        .get(len + 8..len + 16)
        .and_then(|b| b.first_chunk::<8>())
        .ok_or(ShareError::BadLength)?;
    Ok((
        ListEntry {
            path,
            size: u64::from_be_bytes(*size),
            mtime: u64::from_be_bytes(*mtime),
        },
        1 + len + 16,
    ))
}

/// One share message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareMessage<'a> {
    /// Requester: list the share.
    List,
    /// Requester: send me this file. Any UTF-8 of 1 to [`MAX_PATH_LEN`]
    /// bytes decodes: the sharer checks the path itself
    /// ([`super::transfer::check_relative_path`]) and answers a path it
    /// refuses with the same `NoSuchFile` as a missing file.
    Get(&'a str),
    /// Sharer: the share's files.
    Listing(Listing<'a>),
    /// Sharer: the one answer for a name it does not share, whatever the reason.
    NoSuchFile,
    /// Receiver: the file was stored under this path (relative to its folder).
    Stored(&'a str),
    /// Requester: send me your live stream as datagrams until the session ends.
    Live,
    /// Receiver of a resumable file: its bytes start at this offset (what
    /// it already holds and verified; 0 for nothing).
    Resume(u64),
    /// Receiver: the file was not kept, and why.
    NotKept(NotKeptReason),
}

/// The length a message announces, from its first bytes: `Ok(None)` until
/// the header is complete.
pub fn message_len(prefix: &[u8]) -> Result<Option<usize>, ShareError> {
    let n = prefix.len().min(2);
    if prefix[..n] != SHARE_MAGIC[..n] {
        return Err(ShareError::BadMagic);
    }
    let Some(&version) = prefix.get(2) else {
        return Ok(None);
    };
    if version != SHARE_VERSION {
        return Err(ShareError::UnsupportedVersion(version));
    }
    let Some(&kind) = prefix.get(3) else {
        return Ok(None);
    };
    let max = match kind {
        kind::LIST | kind::NO_SUCH_FILE | kind::LIVE => 0,
        kind::RESUME => RESUME_BODY_LEN,
        kind::NOT_KEPT => NOT_KEPT_BODY_LEN,
        kind::GET | kind::STORED => MAX_PATH_LEN,
        kind::LISTING => MAX_SHARE_BODY_LEN,
        other => return Err(ShareError::UnknownKind(other)),
    };
    let Some(len) = prefix.get(4..8).and_then(|b| b.first_chunk::<4>()) else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| ShareError::TooLong)?;
    if len > max {
        return Err(ShareError::TooLong);
    }
    Ok(Some(SHARE_HEADER_LEN + len))
}

fn path_of(body: &[u8]) -> Result<&str, ShareError> {
    let path =
        core::str::from_utf8(body).map_err(|_| ShareError::BadPath(TransferError::BadName))?;
    check_relative_path(path).map_err(ShareError::BadPath)?;
    Ok(path)
}

impl<'a> ShareMessage<'a> {
    /// Reads a whole message from `bytes`: `Ok(None)` while more bytes are
    /// needed, the message and its length once complete (bytes after it are
    /// not looked at).
    pub fn decode(bytes: &'a [u8]) -> Result<Option<(ShareMessage<'a>, usize)>, ShareError> {
        let Some(total) = message_len(bytes)? else {
            return Ok(None);
        };
        let Some(body) = bytes.get(SHARE_HEADER_LEN..total) else {
            return Ok(None);
        };
        let message = match bytes[3] {
            kind::LIST => ShareMessage::List,
            kind::NO_SUCH_FILE => ShareMessage::NoSuchFile,
            kind::LIVE => ShareMessage::Live,
            kind::GET => ShareMessage::Get(
                core::str::from_utf8(body)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .ok_or(ShareError::BadPath(TransferError::BadName))?,
            ),
            kind::STORED => ShareMessage::Stored(path_of(body)?),
            kind::RESUME => ShareMessage::Resume(u64::from_be_bytes(
                *body
                    .first_chunk::<RESUME_BODY_LEN>()
                    .filter(|_| body.len() == RESUME_BODY_LEN)
                    .ok_or(ShareError::BadLength)?,
            )),
            kind::NOT_KEPT => match body {
                [reason] => ShareMessage::NotKept(NotKeptReason::from_wire(*reason)?),
                _ => return Err(ShareError::BadLength),
            },
            kind::LISTING => {
                let (count, entries) =
                    body.split_first_chunk::<2>().ok_or(ShareError::BadLength)?;
                let count = u16::from_be_bytes(*count);
                if usize::from(count) > MAX_LISTING_ENTRIES {
                    return Err(ShareError::TooManyEntries);
                }
                let mut rest = entries;
                for _ in 0..count {
                    let (_, used) = read_entry(rest)?;
                    rest = &rest[used..];
                }
                if !rest.is_empty() {
                    return Err(ShareError::BadLength);
                }
                ShareMessage::Listing(Listing { count, entries })
            }
            other => return Err(ShareError::UnknownKind(other)),
        };
        Ok(Some((message, total)))
    }

    /// Writes this message into `out`; its length. A listing is written
    /// with [`ListingWriter`] (this copies a decoded one).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ShareError> {
        let offset_bytes;
        let reason_byte;
        let (kind, body): (u8, &[u8]) = match self {
            ShareMessage::Resume(offset) => {
                offset_bytes = offset.to_be_bytes();
                (kind::RESUME, &offset_bytes)
            }
            ShareMessage::NotKept(reason) => {
                reason_byte = [*reason as u8];
                (kind::NOT_KEPT, &reason_byte)
            }
            ShareMessage::List => (kind::LIST, &[]),
            ShareMessage::NoSuchFile => (kind::NO_SUCH_FILE, &[]),
            ShareMessage::Live => (kind::LIVE, &[]),
            ShareMessage::Get(path) => {
                if path.is_empty() || path.len() > MAX_PATH_LEN {
                    return Err(ShareError::BadPath(TransferError::BadName));
                }
                (kind::GET, path.as_bytes())
            }
            ShareMessage::Stored(path) => {
                check_relative_path(path).map_err(ShareError::BadPath)?;
                (kind::STORED, path.as_bytes())
            }
            ShareMessage::Listing(listing) => {
                let mut writer = ListingWriter::new(out)?;
                for entry in listing.entries() {
                    writer.push(&entry)?;
                }
                return Ok(writer.finish());
            }
        };
        let total = SHARE_HEADER_LEN + body.len();
        let out = out.get_mut(..total).ok_or(ShareError::BufferTooSmall)?;
        write_header(out, kind, body.len());
        out[SHARE_HEADER_LEN..].copy_from_slice(body);
        Ok(total)
    }
}

fn write_header(out: &mut [u8], kind: u8, body_len: usize) {
    out[..2].copy_from_slice(&SHARE_MAGIC);
    out[2] = SHARE_VERSION;
    out[3] = kind;
    // Bodies are bounded far below u32::MAX.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&len.to_be_bytes());
}

/// Writes a listing into a caller's buffer, one entry at a time.
#[derive(Debug)]
pub struct ListingWriter<'o> {
    out: &'o mut [u8],
    len: usize,
    count: u16,
}

impl<'o> ListingWriter<'o> {
    /// A listing in `out` (at least the header and the count must fit).
    pub fn new(out: &'o mut [u8]) -> Result<ListingWriter<'o>, ShareError> {
        if out.len() < SHARE_HEADER_LEN + 2 {
            return Err(ShareError::BufferTooSmall);
        }
        Ok(ListingWriter {
            out,
            len: SHARE_HEADER_LEN + 2,
            count: 0,
        })
    }

    /// Adds an entry; fails, adding nothing, on a bad path, a full listing
    /// ([`MAX_LISTING_ENTRIES`]) or a full buffer.
    pub fn push(&mut self, entry: &ListEntry<'_>) -> Result<(), ShareError> {
        check_relative_path(entry.path).map_err(ShareError::BadPath)?;
        if usize::from(self.count) >= MAX_LISTING_ENTRIES {
            return Err(ShareError::TooManyEntries);
        }
        let need = LISTING_ENTRY_FIXED_LEN + entry.path.len();
        let out = self
            .out
            .get_mut(self.len..self.len + need)
            .ok_or(ShareError::BufferTooSmall)?;
        let path_len = entry.path.len();
        out[0] = u8::try_from(path_len).map_err(|_| ShareError::TooLong)?;
        out[1..=path_len].copy_from_slice(entry.path.as_bytes());
        out[1 + path_len..9 + path_len].copy_from_slice(&entry.size.to_be_bytes());
        out[9 + path_len..].copy_from_slice(&entry.mtime.to_be_bytes());
        self.len += need;
        self.count += 1;
        Ok(())
    }

    /// How many entries so far.
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// Writes the header and the count; the message's length.
    pub fn finish(self) -> usize {
        write_header(self.out, kind::LISTING, self.len - SHARE_HEADER_LEN);
        self.out[SHARE_HEADER_LEN..SHARE_HEADER_LEN + 2].copy_from_slice(&self.count.to_be_bytes());
        self.len
    }
}

/// Collects one share message from stream bytes in any order (possibly
/// twice), in a fixed buffer.
#[derive(Clone)]
pub struct MessageReader {
    buf: [u8; MAX_SHARE_MESSAGE_LEN],
    ranges: RangeSet<MAX_MESSAGE_RANGES>,
    total: Option<usize>,
    failed: Option<ShareError>,
}

impl fmt::Debug for MessageReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageReader")
            .field("total", &self.total)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Default for MessageReader {
    fn default() -> Self {
        MessageReader::new()
    }
}

impl MessageReader {
    /// A reader waiting for a message.
    pub const fn new() -> MessageReader {
        MessageReader {
            buf: [0; MAX_SHARE_MESSAGE_LEN],
            ranges: RangeSet::new(),
            total: None,
            failed: None,
        }
    }

    /// Why the bytes were refused, if they were.
    pub fn failure(&self) -> Option<ShareError> {
        self.failed
    }

    /// Stream bytes at `offset`. `Ok(true)` once the whole message arrived.
    pub fn stream_data(&mut self, offset: u64, data: &[u8]) -> Result<bool, ShareError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.take(offset, data);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn take(&mut self, offset: u64, data: &[u8]) -> Result<bool, ShareError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(ShareError::PastEnd)?;
        // A stream's messages together fit the buffer; a listing, the one
        // long message, comes alone.
        if end > MAX_SHARE_MESSAGE_LEN as u64 {
            return Err(ShareError::PastEnd);
        }
        if !data.is_empty() {
            self.ranges
                .insert(offset, end)
                .map_err(|_| ShareError::PastEnd)?;
            // `end <= MAX_SHARE_MESSAGE_LEN`: these fit.
            let (lo, hi) = (offset as usize, end as usize);
            self.buf[lo..hi].copy_from_slice(data);
        }
        let contiguous = match self.ranges.first() {
            Some(r) if r.start == 0 => r.end as usize,
            _ => 0,
        };
        if self.total.is_none() {
            self.total = message_len(&self.buf[..contiguous.min(SHARE_HEADER_LEN)])?;
        }
        // Every message whose header arrived must be one this side reads.
        let mut at = 0;
        while at < contiguous {
            match message_len(&self.buf[at..contiguous])? {
                Some(len) => at += len,
                None => break,
            }
        }
        Ok(self.total.is_some_and(|t| contiguous >= t))
    }

    /// The message starting at stream offset `start` (0 for the first; the
    /// end of one for the next), once all of it arrived, with its end.
    pub fn message_at(
        &self,
        start: usize,
    ) -> Option<Result<(ShareMessage<'_>, usize), ShareError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let contiguous = match self.ranges.first() {
            Some(r) if r.start == 0 => r.end as usize,
            _ => 0,
        };
        let bytes = self.buf.get(start..contiguous)?;
        match ShareMessage::decode(bytes) {
            Ok(Some((message, len))) => Some(Ok((message, start + len))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The whole message, once it arrived (decoded and checked).
    pub fn message(&self) -> Option<Result<ShareMessage<'_>, ShareError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let total = self.total?;
        let contiguous = match self.ranges.first() {
            Some(r) if r.start == 0 => r.end as usize,
            _ => 0,
        };
        if contiguous < total {
            return None;
        }
        Some(
            ShareMessage::decode(&self.buf[..total])
                .and_then(|m| m.map(|(m, _)| m).ok_or(ShareError::BadLength)),
        )
    }
}

/// The share messages as bytes, for PROTOCOL.md, the tests and the fuzz seeds.
pub mod vectors {
    /// A List request.
    pub const LIST: [u8; 8] = [0x54, 0x53, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00];
    /// A Get request for `pics/a.jpg`.
    pub const GET: [u8; 18] = [
        0x54, 0x53, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x70, 0x69, 0x63, 0x73, 0x2f, 0x61, 0x2e,
        0x6a, 0x70, 0x67,
    ];
    /// The one answer for a name not shared.
    pub const NO_SUCH_FILE: [u8; 8] = [0x54, 0x53, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00];
    /// A listing of `a.jpg` (1000 bytes, mtime 1700000000).
    pub const LISTING: [u8; 32] = [
        0x54, 0x53, 0x01, 0x03, 0x00, 0x00, 0x00, 0x18, 0x00, 0x01, 0x05, 0x61, 0x2e, 0x6a, 0x70,
        0x67, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x65, 0x53,
        0xf1, 0x00,
    ];
    /// The receipt for a file stored as `a.jpg.1`.
    pub const STORED: [u8; 15] = [
        0x54, 0x53, 0x01, 0x05, 0x00, 0x00, 0x00, 0x07, 0x61, 0x2e, 0x6a, 0x70, 0x67, 0x2e, 0x31,
    ];
    /// A Live request.
    pub const LIVE: [u8; 8] = [0x54, 0x53, 0x01, 0x06, 0x00, 0x00, 0x00, 0x00];
    /// A resumable file's receiver: start at offset 1 048 576.
    pub const RESUME: [u8; 16] = [
        0x54, 0x53, 0x01, 0x07, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
        0x00,
    ];
    /// A receiver that could not write the file.
    pub const NOT_KEPT: [u8; 9] = [0x54, 0x53, 0x01, 0x08, 0x00, 0x00, 0x00, 0x01, 0x02];
    /// Every vector with its name in PROTOCOL.md.
    pub const ALL: [(&str, &[u8]); 8] = [
        ("ShareList", &LIST),
        ("ShareGet", &GET),
        ("ShareListing", &LISTING),
        ("ShareNoSuchFile", &NO_SUCH_FILE),
        ("ShareStored", &STORED),
        ("ShareLive", &LIVE),
        ("ShareResume", &RESUME),
        ("ShareNotKept", &NOT_KEPT),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn encoded(m: &ShareMessage<'_>) -> Vec<u8> {
        let mut out = std::vec![0u8; MAX_SHARE_MESSAGE_LEN];
        let n = m.encode(&mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn the_vectors_are_what_the_encoder_writes_and_decode_back() {
        assert_eq!(encoded(&ShareMessage::List), vectors::LIST);
        assert_eq!(encoded(&ShareMessage::Get("pics/a.jpg")), vectors::GET);
        assert_eq!(encoded(&ShareMessage::NoSuchFile), vectors::NO_SUCH_FILE);
        assert_eq!(encoded(&ShareMessage::Stored("a.jpg.1")), vectors::STORED);
        assert_eq!(encoded(&ShareMessage::Live), vectors::LIVE);
        assert_eq!(encoded(&ShareMessage::Resume(1 << 20)), vectors::RESUME);
        assert_eq!(
            encoded(&ShareMessage::NotKept(NotKeptReason::CouldNotWrite)),
            vectors::NOT_KEPT
        );
        let mut out = [0u8; 64];
        let mut w = ListingWriter::new(&mut out).unwrap();
        w.push(&ListEntry {
            path: "a.jpg",
            size: 1000,
            mtime: 1_700_000_000,
        })
        .unwrap();
        let n = w.finish();
        assert_eq!(&out[..n], &vectors::LISTING);
        for (name, bytes) in vectors::ALL {
            let (m, len) = ShareMessage::decode(bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len(), "{name}");
            assert_eq!(encoded(&m), bytes, "{name}");
        }
        let Some((ShareMessage::Listing(l), _)) = ShareMessage::decode(&vectors::LISTING).unwrap()
        else {
            panic!("a listing");
        };
        let e: Vec<_> = l.entries().collect();
        assert_eq!(
            e,
            [ListEntry {
                path: "a.jpg",
                size: 1000,
                mtime: 1_700_000_000
            }]
        );
    }

    #[test]
    fn every_prefix_asks_for_more() {
        for (_, bytes) in vectors::ALL {
            for n in 0..bytes.len() {
                assert_eq!(ShareMessage::decode(&bytes[..n]), Ok(None));
            }
        }
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        assert_eq!(ShareMessage::decode(b"XX"), Err(ShareError::BadMagic));
        assert_eq!(
            ShareMessage::decode(b"TS\x02"),
            Err(ShareError::UnsupportedVersion(2))
        );
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x09"),
            Err(ShareError::UnknownKind(9))
        );
        // A List with a body, a Get longer than a path, a listing too long.
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x01\x00\x00\x00\x01x"),
            Err(ShareError::TooLong)
        );
        // A Live request with a body.
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x06\x00\x00\x00\x01x"),
            Err(ShareError::TooLong)
        );
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x02\x00\x00\x01\x00"),
            Err(ShareError::TooLong)
        );
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x03\xff\xff\xff\xff"),
            Err(ShareError::TooLong)
        );
        for bad in [
            "../etc/passwd",
            "/abs",
            "a//b",
            ".hidden",
            "a/.git/x",
            "a/",
            "",
        ] {
            let mut m = b"TS\x01\x05".to_vec();
            m.extend_from_slice(&(bad.len() as u32).to_be_bytes());
            m.extend_from_slice(bad.as_bytes());
            assert!(
                matches!(ShareMessage::decode(&m), Err(ShareError::BadPath(_))),
                "{bad:?}"
            );
            assert!(ShareMessage::Stored(bad).encode(&mut [0; 300]).is_err());
        }
        // A Get carries any name: the sharer answers a bad one NoSuchFile.
        let mut out = [0u8; 300];
        let n = ShareMessage::Get("../etc/passwd").encode(&mut out).unwrap();
        assert_eq!(
            ShareMessage::decode(&out[..n]),
            Ok(Some((ShareMessage::Get("../etc/passwd"), n)))
        );
        assert!(ShareMessage::Get("").encode(&mut out).is_err());
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x02\x00\x00\x00\x01\xff"),
            Err(ShareError::BadPath(TransferError::BadName))
        );
        // A listing whose count says more entries than it has, or fewer.
        let mut short = vectors::LISTING;
        short[9] = 2;
        assert_eq!(ShareMessage::decode(&short), Err(ShareError::BadLength));
        let mut long = vectors::LISTING;
        long[9] = 0;
        assert_eq!(ShareMessage::decode(&long), Err(ShareError::BadLength));
        let mut many = b"TS\x01\x03\x00\x00\x00\x02".to_vec();
        many.extend_from_slice(&((MAX_LISTING_ENTRIES + 1) as u16).to_be_bytes());
        assert_eq!(ShareMessage::decode(&many), Err(ShareError::TooManyEntries));
    }

    #[test]
    fn a_resume_then_a_stored_receipt_on_one_stream_are_read_in_turn() {
        let mut stream = vectors::RESUME.to_vec();
        stream.extend_from_slice(&vectors::STORED);
        let mut r = std::boxed::Box::new(MessageReader::new());
        // The receipt's bytes first, then the offer's.
        assert_eq!(r.stream_data(16, &stream[16..]), Ok(false));
        assert_eq!(r.message_at(0), None);
        assert_eq!(r.stream_data(0, &stream[..16]), Ok(true));
        assert_eq!(
            r.message_at(0),
            Some(Ok((ShareMessage::Resume(1 << 20), 16)))
        );
        assert_eq!(
            r.message_at(16),
            Some(Ok((ShareMessage::Stored("a.jpg.1"), stream.len())))
        );
        assert_eq!(r.message_at(stream.len()), None);
        // A Resume body of another length is refused.
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x07\x00\x00\x00\x04\x00\x00\x00\x01"),
            Err(ShareError::BadLength)
        );
        assert_eq!(
            ShareMessage::decode(b"TS\x01\x07\x00\x00\x00\x09"),
            Err(ShareError::TooLong)
        );
    }

    #[test]
    fn classify_tells_files_from_messages() {
        assert_eq!(StreamKind::classify(b""), Ok(None));
        assert_eq!(StreamKind::classify(b"T"), Ok(None));
        assert_eq!(StreamKind::classify(b"TF\x01"), Ok(Some(StreamKind::File)));
        assert_eq!(StreamKind::classify(b"TS"), Ok(Some(StreamKind::Message)));
        assert_eq!(StreamKind::classify(b"TX"), Err(ShareError::BadMagic));
        assert_eq!(StreamKind::classify(b"Q"), Err(ShareError::BadMagic));
    }

    #[test]
    fn a_full_listing_fits_the_bounds() {
        let path = "p".repeat(200) + "/" + &"q".repeat(54);
        assert_eq!(path.len(), MAX_PATH_LEN);
        let mut out = std::vec![0u8; MAX_SHARE_MESSAGE_LEN];
        let mut w = ListingWriter::new(&mut out).unwrap();
        for _ in 0..MAX_LISTING_ENTRIES {
            w.push(&ListEntry {
                path: &path,
                size: 1,
                mtime: 2,
            })
            .unwrap();
        }
        assert_eq!(
            w.push(&ListEntry {
                path: "x",
                size: 1,
                mtime: 2
            }),
            Err(ShareError::TooManyEntries)
        );
        let n = w.finish();
        assert_eq!(n, MAX_SHARE_MESSAGE_LEN);
        let mut r = std::boxed::Box::new(MessageReader::new());
        assert_eq!(r.stream_data(0, &out[..n]), Ok(true));
        assert!(
            matches!(r.message(), Some(Ok(ShareMessage::Listing(l))) if l.len() == MAX_LISTING_ENTRIES)
        );
    }

    #[test]
    fn the_reader_refuses_bytes_past_the_message() {
        // Bytes after a message are the next message's: garbage is refused.
        let mut r = std::boxed::Box::new(MessageReader::new());
        assert_eq!(r.stream_data(8, b"x"), Ok(false));
        assert_eq!(r.stream_data(0, &vectors::LIST), Err(ShareError::BadMagic));
        let mut r = std::boxed::Box::new(MessageReader::new());
        assert_eq!(
            r.stream_data(MAX_SHARE_MESSAGE_LEN as u64, b"x"),
            Err(ShareError::PastEnd)
        );
        assert_eq!(r.stream_data(0, &vectors::LIST), Err(ShareError::PastEnd));
    }

    proptest! {
        #![proptest_config(proptest_config!(64, "core-peer-share.txt"))]

        /// Any split, order and duplication of a message gives it back.
        #[test]
        fn any_split_or_order_reads_the_message(
            which in 0usize..vectors::ALL.len(),
            cuts in proptest::collection::vec(any::<u8>(), 0..8),
            order in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let bytes = vectors::ALL[which].1;
            let mut bounds: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % bytes.len()).collect();
            bounds.push(0);
            bounds.push(bytes.len());
            bounds.sort_unstable();
            bounds.dedup();
            let mut pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
            for (i, o) in order.iter().enumerate() {
                let n = pieces.len();
                pieces.swap(i % n, usize::from(*o) % n);
            }
            pieces.push(pieces[0]);
            let mut r = std::boxed::Box::new(MessageReader::new());
            let mut done = false;
            for (lo, hi) in pieces {
                done = r.stream_data(lo as u64, &bytes[lo..hi]).unwrap();
            }
            prop_assert!(done);
            let m = r.message().unwrap().unwrap();
            prop_assert_eq!(encoded(&m), bytes);
        }

        /// Arbitrary bytes never panic the decoder, and what decodes re-encodes to itself.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((m, len))) = ShareMessage::decode(&bytes) {
                prop_assert_eq!(encoded(&m), &bytes[..len]);
            }
            let mut r = std::boxed::Box::new(MessageReader::new());
            let _ = r.stream_data(0, &bytes);
            let _ = r.message();
        }
    }
}
