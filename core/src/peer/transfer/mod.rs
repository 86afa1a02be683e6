//! The file-transfer framing on a peer session's stream: a header (name
//! and size), the file's bytes, then a trailer (the SHA-256 of the file,
//! which the driver computes: the core holds no hash state for payload).
//!
//! ```text
//! "TF" · version 1 · name length u8 (1..=255) · name (UTF-8) · size u64 BE
//! file bytes (size)
//! SHA-256 of the file bytes (32)
//! ```
//!
//! A **resumable** transfer (version 2, [`TransferHeader::resumable`])
//! adds the file's modification time to the header and waits for the
//! receiver's word before the first file byte:
//!
//! ```text
//! "TF" · version 2 · name length u8 · name · size u64 BE · mtime u64 BE (ns)
//!     (the receiver answers with a share Resume message: an offset)
//! file bytes [offset, size)
//! SHA-256 of the whole file [0, size) (32)
//! ```
//!
//! The receiver keeps the partial file of a cut transfer with what names
//! it (the peer's key, the name, size and mtime) and the SHA-256 of the
//! prefix it holds; when the same peer sends the same file again it
//! re-hashes that prefix, and offers its length only when it still
//! matches (else 0). Why the mtime and not the whole file's SHA-256 in the
//! header: the sender would have to read the whole file before its first
//! byte leaves, on every send. A file changed in place within the same
//! nanosecond still cannot end up wrong: the trailer covers the whole
//! file, so a mismatch discards the partial. Why a new version and not a
//! flag: a version 1 receiver takes the bytes after the header as the
//! file's first bytes, so a sender that skips some must know that the
//! receiver knows; a version 1 receiver refuses a version 2 header before
//! any file byte crosses.
//!
//! The receiver reads the header from the stream's contiguous prefix
//! ([`TransferHeader::decode`] says when it needs more bytes), and knows the
//! whole stream's length from it ([`TransferHeader::stream_len`]). A name is
//! refused unless it is a plain file name ([`check_file_name`]): no path
//! separators, no NUL or control characters, no Unicode format (bidi,
//! invisible) characters, not `.` or `..`, no leading `.`, and at most
//! [`MAX_STORED_FILE_NAME_LEN`] bytes (so that it can be stored under
//! `NAME_MAX`, collision suffix included); the receiving driver still
//! decides where (and whether) to write it.
//!
//! The two sides of a transfer are sans-IO machines, like every machine of
//! the crate, and need no allocator:
//! - [`send::TransferSender`]: maps stream offsets to header, file bytes
//!   and trailer, offers the trailer only once the file is hashed, and
//!   throttles by rate on the caller's clock;
//! - [`receive::TransferReceiver`]: stream bytes in (any order, possibly
//!   twice), file writes (slices of the input) and hashing points out, and
//!   the verdict once the driver reports the digest;
//! - [`session_end`]: when a session's transfer ends it, and how.
//!
//! The driver keeps the file, the hash thread and the write batching.

use core::fmt;

use crate::wire::EndReason;

pub mod receive;
pub mod send;

pub use receive::{ReceiveFailure, ReceivePhase, ReceiveStep, TransferReceiver, Write};
pub use send::{FileRead, SendStep, TransferSender};

/// The two bytes a transfer header starts with.
pub const TRANSFER_MAGIC: [u8; 2] = *b"TF";
/// The transfer framing version.
pub const TRANSFER_VERSION: u8 = 1;
/// The framing version of a resumable transfer (the header carries the
/// file's mtime; the file bytes start where the receiver says).
pub const TRANSFER_VERSION_RESUMABLE: u8 = 2;
/// Bytes a resumable header adds: the mtime.
pub const RESUMABLE_EXTRA_LEN: usize = 8;
/// Longest file name the framing can carry, in bytes of UTF-8 (its length
/// is one byte); names are accepted only up to [`MAX_STORED_FILE_NAME_LEN`].
pub const MAX_FILE_NAME_LEN: usize = 255;
/// Longest file name a file system takes, in bytes: `NAME_MAX` of the Linux
/// file systems (ext4, xfs, btrfs, tmpfs) and of APFS.
pub const NAME_MAX: usize = 255;
/// Longest suffix a receiving driver may add to a taken name to keep both
/// files (`.1` to `.999`); the drivers' collision rule stays within it.
pub const MAX_COLLISION_SUFFIX_LEN: usize = 4;
/// Longest file name accepted by both sides, in bytes of UTF-8: the
/// longest collision-suffixed name still fits [`NAME_MAX`], so a long name
/// is refused before a transfer starts, not after the file crossed. (The
/// drivers' partial-file names are short and fixed, well within it.)
pub const MAX_STORED_FILE_NAME_LEN: usize = NAME_MAX - MAX_COLLISION_SUFFIX_LEN;
/// Bytes of the header around the name: magic, version, name length, size.
pub const HEADER_FIXED_LEN: usize = 2 + 1 + 1 + 8;
/// Longest header.
pub const MAX_HEADER_LEN: usize = HEADER_FIXED_LEN + MAX_FILE_NAME_LEN + RESUMABLE_EXTRA_LEN;
/// Length of the trailer: a SHA-256 digest.
pub const TRAILER_LEN: usize = 32;

/// Why a transfer header is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferError {
    /// The stream does not start with [`TRANSFER_MAGIC`].
    BadMagic,
    /// A framing version this implementation does not read.
    UnsupportedVersion(u8),
    /// The name is empty, not UTF-8, or not a plain file name.
    BadName,
    /// The name is longer than [`MAX_STORED_FILE_NAME_LEN`] bytes.
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name holds a Unicode format character ([`FORMAT_CHARACTERS`]):
    /// a bidi override or an invisible character that makes a name show as
    /// another (`invoice\u{202e}txt.exe` shows as "invoiceexe.txt").
    FormatCharacter(char),
    /// The size plus framing does not fit a u64.
    TooLarge,
    /// The caller's buffer cannot hold the header.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::BadMagic => f.write_str("not a tryst transfer (bad magic)"),
            TransferError::UnsupportedVersion(v) => write!(f, "unsupported transfer version {v}"),
            TransferError::BadName => f.write_str("file name is not a plain file name"),
            TransferError::NameTooLong { len } => write!(
                f,
                "file name of {len} bytes is longer than {MAX_STORED_FILE_NAME_LEN} bytes"
            ),
            TransferError::FormatCharacter(c) => write!(
                f,
                "file name holds an invisible format character (U+{:04X})",
                u32::from(*c)
            ),
            TransferError::TooLarge => f.write_str("file size out of range"),
            TransferError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
        }
    }
}

impl core::error::Error for TransferError {}

/// Every code point of Unicode general category Cf (format), as inclusive
/// ranges in ascending order: bidi embeddings, overrides and isolates, zero
/// width characters, the soft hyphen, tags, and other invisible marks. A
/// file name holding one can show as another name.
pub static FORMAT_CHARACTERS: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` is a Unicode format character ([`FORMAT_CHARACTERS`]).
pub fn is_format_character(c: char) -> bool {
    let c = u32::from(c);
    FORMAT_CHARACTERS
        .binary_search_by(|&(low, high)| {
            if high < c {
                core::cmp::Ordering::Less
            } else if low > c {
                core::cmp::Ordering::Greater
            } else {
                core::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The one file-name policy, for both sides: `Ok` only for a plain name
/// that stays inside the directory it is joined to and shows as what it
/// is: not empty, at most [`MAX_STORED_FILE_NAME_LEN`] bytes, no `/`, `\`,
/// NUL or control characters, no format characters
/// ([`FORMAT_CHARACTERS`]), not `.` or `..`, and no leading `.` (no hidden
/// files, and never the name of a driver's partial file).
pub fn check_file_name(name: &str) -> Result<(), TransferError> {
    if name.len() > MAX_STORED_FILE_NAME_LEN {
        return Err(TransferError::NameTooLong { len: name.len() });
    }
    if let Some(c) = name.chars().find(|&c| is_format_character(c)) {
        return Err(TransferError::FormatCharacter(c));
    }
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control());
    if plain {
        Ok(())
    } else {
        Err(TransferError::BadName)
    }
}

/// The one relative-path policy, for both sides: `Ok` only for 1 to
/// [`crate::peer::share::MAX_PATH_DEPTH`] components joined by `/`, each a
/// plain file name ([`check_file_name`]: so no `..`, no empty or hidden
/// component, no leading `/`), at most [`MAX_FILE_NAME_LEN`] bytes in all.
/// A file inside a sent folder, or inside a shared folder, travels under
/// such a path; the receiver recreates the folders under its own.
pub fn check_relative_path(path: &str) -> Result<(), TransferError> {
    if path.len() > MAX_FILE_NAME_LEN {
        return Err(TransferError::NameTooLong { len: path.len() });
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        if depth > crate::peer::share::MAX_PATH_DEPTH {
            return Err(TransferError::BadName);
        }
        check_file_name(component)?;
    }
    Ok(())
}

/// Whether `name` passes [`check_file_name`].
pub fn is_plain_file_name(name: &str) -> bool {
    check_file_name(name).is_ok()
}

/// Why a file could not be hashed (either side): the driver's hash of the
/// file's bytes gave no digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFailure {
    /// The file ended before its announced length: it changed while it was read.
    Truncated,
    /// Reading the file back (or flushing it) failed.
    Unreadable,
}

impl fmt::Display for HashFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashFailure::Truncated => {
                "the file is shorter than announced: it changed while it was read"
            }
            HashFailure::Unreadable => "hashing the file failed (read or flush error)",
        })
    }
}

impl core::error::Error for HashFailure {}

/// How a session's transfer ends it, if it does now: the policy every
/// driver applies after each step.
///
/// - the receiver closes `Completed` once the file matched its digest and
///   was stored, `Failed` when the transfer failed;
/// - a peer that sends stream bytes to a session with no receiver
///   (`stray_bytes`) is closed `Failed`;
/// - a sender whose file could not be hashed closes `Failed`; otherwise
///   the sender waits for the receiver's close (`None`).
pub fn session_end(
    sender: Option<&TransferSender>,
    receiver: Option<&TransferReceiver>,
    stray_bytes: bool,
) -> Option<EndReason> {
    if let Some(receiver) = receiver {
        match receiver.phase() {
            ReceivePhase::Completed => return Some(EndReason::Completed),
            ReceivePhase::Failed(_) => return Some(EndReason::Failed),
            _ => {}
        }
    } else if stray_bytes {
        return Some(EndReason::Failed);
    }
    sender
        .and_then(TransferSender::failure)
        .map(|_| EndReason::Failed)
}

/// What is being sent: the file's name (a relative path,
/// [`check_relative_path`]) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferHeader {
    name: heapless::String<MAX_FILE_NAME_LEN>,
    /// The file's size in bytes.
    pub size: u64,
    /// A resumable (version 2) header's file modification time, in
    /// nanoseconds since the Unix epoch; `None` for version 1.
    pub mtime: Option<u64>,
}

impl TransferHeader {
    /// A header for a file called `name` of `size` bytes.
    pub fn new(name: &str, size: u64) -> Result<TransferHeader, TransferError> {
        check_relative_path(name)?;
        let mut owned = heapless::String::new();
        owned.push_str(name).map_err(|_| TransferError::BadName)?;
        let header = TransferHeader {
            name: owned,
            size,
            mtime: None,
        };
        header.stream_len_checked().ok_or(TransferError::TooLarge)?;
        Ok(header)
    }

    /// This header as a resumable (version 2) one, for a file last
    /// modified at `mtime` (nanoseconds since the Unix epoch).
    pub fn resumable(mut self, mtime: u64) -> TransferHeader {
        self.mtime = Some(mtime);
        self
    }

    /// Whether this is a resumable (version 2) header.
    pub fn is_resumable(&self) -> bool {
        self.mtime.is_some()
    }

    /// The file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        let extra = if self.is_resumable() {
            RESUMABLE_EXTRA_LEN
        } else {
            0
        };
        HEADER_FIXED_LEN + self.name.len() + extra
    }

    fn stream_len_checked(&self) -> Option<u64> {
        let framing = u64::try_from(self.encoded_len() + TRAILER_LEN).ok()?;
        self.size.checked_add(framing)
    }

    /// Offset of the file's first byte in the stream.
    pub fn data_offset(&self) -> u64 {
        self.encoded_len() as u64
    }

    /// Length of the whole stream: header, file and trailer.
    pub fn stream_len(&self) -> u64 {
        // `new` and `decode` check that this does not overflow.
        self.stream_len_checked().unwrap_or(u64::MAX)
    }

    /// Writes the header into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, TransferError> {
        let len = self.encoded_len();
        let available = out.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(TransferError::BufferTooSmall {
                needed: len,
                available,
            });
        };
        out[..2].copy_from_slice(&TRANSFER_MAGIC);
        out[2] = if self.is_resumable() {
            TRANSFER_VERSION_RESUMABLE
        } else {
            TRANSFER_VERSION
        };
        // A name is at most 255 bytes.
        out[3] = u8::try_from(self.name.len()).unwrap_or(u8::MAX);
        let name_end = 4 + self.name.len();
        out[4..name_end].copy_from_slice(self.name.as_bytes());
        out[name_end..name_end + 8].copy_from_slice(&self.size.to_be_bytes());
        if let Some(mtime) = self.mtime {
            out[name_end + 8..].copy_from_slice(&mtime.to_be_bytes());
        }
        Ok(len)
    }

    /// Reads a header from the start of a stream. `Ok(None)`: more bytes are
    /// needed; `Ok(Some((header, len)))`: the header and its length.
    pub fn decode(prefix: &[u8]) -> Result<Option<(TransferHeader, usize)>, TransferError> {
        let n = prefix.len().min(2);
        if prefix[..n] != TRANSFER_MAGIC[..n] {
            return Err(TransferError::BadMagic);
        }
        let Some(&version) = prefix.get(2) else {
            return Ok(None);
        };
        if version != TRANSFER_VERSION && version != TRANSFER_VERSION_RESUMABLE {
            return Err(TransferError::UnsupportedVersion(version));
        }
        let Some(&name_len) = prefix.get(3) else {
            return Ok(None);
        };
        let name_end = 4 + usize::from(name_len);
        let Some(size) = prefix
            .get(name_end..name_end + 8)
            .and_then(|b| b.first_chunk::<8>())
        else {
            return Ok(None);
        };
        let mut end = name_end + 8;
        let mtime = if version == TRANSFER_VERSION_RESUMABLE {
            let Some(mtime) = prefix.get(end..end + 8).and_then(|b| b.first_chunk::<8>()) else {
                return Ok(None);
            };
            end += 8;
            Some(u64::from_be_bytes(*mtime))
        } else {
            None
        };
        let name =
            core::str::from_utf8(&prefix[4..name_end]).map_err(|_| TransferError::BadName)?;
        let mut header = TransferHeader::new(name, u64::from_be_bytes(*size))?;
        header.mtime = mtime;
        Ok(Some((header, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    /// The header of `photo.jpg`, 1000 bytes.
    static PHOTO: [u8; 21] = [
        0x54, 0x46, 0x01, 0x09, 0x70, 0x68, 0x6f, 0x74, 0x6f, 0x2e, 0x6a, 0x70, 0x67, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x03, 0xe8,
    ];

    #[test]
    fn header_vector_round_trips() {
        let h = TransferHeader::new("photo.jpg", 1000).unwrap();
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &PHOTO);
        assert_eq!(TransferHeader::decode(&PHOTO), Ok(Some((h.clone(), 21))));
        assert_eq!(h.data_offset(), 21);
        assert_eq!(h.stream_len(), 21 + 1000 + 32);
    }

    /// The resumable header of `photo.jpg`, 1000 bytes, mtime 1.7e18 ns.
    static PHOTO_RESUMABLE: [u8; 29] = [
        0x54, 0x46, 0x02, 0x09, 0x70, 0x68, 0x6f, 0x74, 0x6f, 0x2e, 0x6a, 0x70, 0x67, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, 0x17, 0x97, 0x9c, 0xfe, 0x36, 0x2a, 0x00, 0x00,
    ];

    #[test]
    fn resumable_header_vector_round_trips() {
        let h = TransferHeader::new("photo.jpg", 1000)
            .unwrap()
            .resumable(1_700_000_000_000_000_000);
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &PHOTO_RESUMABLE);
        assert_eq!(
            TransferHeader::decode(&PHOTO_RESUMABLE),
            Ok(Some((h.clone(), 29)))
        );
        assert_eq!(h.data_offset(), 29);
        for n in 0..PHOTO_RESUMABLE.len() {
            assert_eq!(
                TransferHeader::decode(&PHOTO_RESUMABLE[..n]),
                Ok(None),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn every_prefix_asks_for_more_bytes() {
        for n in 0..PHOTO.len() {
            assert_eq!(TransferHeader::decode(&PHOTO[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn path_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/../b",
            "a//b",
            "a/",
            "a/.git",
            "..\\x",
            "nul\0",
            "line\nbreak",
            "/etc/passwd",
            ".hidden",
            "bell\x07",
        ] {
            assert_eq!(
                TransferHeader::new(bad, 1),
                Err(TransferError::BadName),
                "{bad:?}"
            );
        }
        for good in ["photo.jpg", "a b c.txt", "résumé.pdf", "x..y"] {
            assert!(check_file_name(good).is_ok(), "{good:?}");
            assert!(TransferHeader::new(good, 1).is_ok(), "{good:?}");
        }
        for good in ["pics/a.jpg", "a/b/c/d.txt"] {
            assert!(check_file_name(good).is_err(), "{good:?}");
            assert!(TransferHeader::new(good, 1).is_ok(), "{good:?}");
        }
        assert_eq!(
            TransferHeader::new("a/b/c/d/e/f/g/h/i", 1),
            Err(TransferError::BadName)
        );
    }

    #[test]
    fn names_longer_than_the_stored_bound_are_refused() {
        let at_bound = "x".repeat(MAX_STORED_FILE_NAME_LEN);
        assert!(TransferHeader::new(&at_bound, 1).is_ok());
        for len in [MAX_STORED_FILE_NAME_LEN + 1, NAME_MAX, NAME_MAX + 1] {
            assert_eq!(
                TransferHeader::new(&"x".repeat(len), 1),
                Err(TransferError::NameTooLong { len }),
                "{len}"
            );
        }
        // The longest suffixed name still fits NAME_MAX.
        assert!(format!("{at_bound}.999").len() <= NAME_MAX);
        // A received header over the bound is refused at the offer.
        let mut evil = b"TF\x01\xfc".to_vec();
        evil.extend_from_slice(&[b'x'; 252]);
        evil.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(
            TransferHeader::decode(&evil),
            Err(TransferError::NameTooLong { len: 252 })
        );
    }

    #[test]
    fn bidi_and_format_characters_in_names_are_refused() {
        assert_eq!(
            check_file_name("invoice\u{202e}txt.exe"),
            Err(TransferError::FormatCharacter('\u{202e}'))
        );
        // Every code point of every range, and its ends, is refused.
        for &(low, high) in &FORMAT_CHARACTERS {
            for cp in low..=high {
                let c = char::from_u32(cp).expect("a scalar value");
                let name = format!("a{c}b.txt");
                assert_eq!(
                    check_file_name(&name),
                    Err(TransferError::FormatCharacter(c)),
                    "U+{cp:04X}"
                );
            }
            // The neighbours outside a range are not format characters
            // (unless another range starts there).
            for cp in [low - 1, high + 1] {
                let inside = FORMAT_CHARACTERS
                    .iter()
                    .any(|&(l, h)| (l..=h).contains(&cp));
                if let Some(c) = char::from_u32(cp) {
                    assert_eq!(is_format_character(c), inside, "U+{cp:04X}");
                }
            }
        }
        // The table is sorted and disjoint (the binary search needs it).
        assert!(FORMAT_CHARACTERS.windows(2).all(|w| w[0].1 < w[1].0));
        // A received header with a bidi override is refused at the offer.
        let name = "a\u{202e}b".as_bytes();
        let mut evil = b"TF\x01".to_vec();
        evil.push(u8::try_from(name.len()).expect("short"));
        evil.extend_from_slice(name);
        evil.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(
            TransferHeader::decode(&evil),
            Err(TransferError::FormatCharacter('\u{202e}'))
        );
        for good in ["résumé.pdf", "日本語.txt", "emoji😀.png", "ملف.txt"] {
            assert_eq!(check_file_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn foreign_bytes_and_versions_are_refused() {
        assert_eq!(TransferHeader::decode(b"XX"), Err(TransferError::BadMagic));
        assert_eq!(
            TransferHeader::decode(b"TF\x03"),
            Err(TransferError::UnsupportedVersion(3))
        );
    }

    #[test]
    fn sizes_near_the_top_are_refused() {
        assert_eq!(
            TransferHeader::new("x", u64::MAX),
            Err(TransferError::TooLarge)
        );
    }

    proptest! {
        #![proptest_config(proptest_config!(256, "core-peer-transfer.txt"))]

        #[test]
        fn arbitrary_prefixes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((h, n))) = TransferHeader::decode(&bytes) {
                let mut out = [0u8; MAX_HEADER_LEN];
                prop_assert_eq!(h.encode(&mut out), Ok(n));
                prop_assert_eq!(&out[..n], &bytes[..n]);
            }
        }

        #[test]
        fn plain_names_round_trip(name in "[a-zA-Z0-9._-]{1,60}", size in 0u64..u64::MAX / 2) {
            prop_assume!(!name.starts_with('.'));
            let h = TransferHeader::new(&name, size).unwrap();
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out).unwrap();
            prop_assert_eq!(TransferHeader::decode(&out[..n]), Ok(Some((h, n))));
        }
    }
}
