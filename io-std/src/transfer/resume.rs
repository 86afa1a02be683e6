//! What a receiver keeps of a cut resumable transfer: beside each partial
//! file `.tryst-partial-TAG` a small record `.tryst-partial-TAG.resume`
//! that names the transfer (the sender's public key, the file's relative
//! path, size and mtime, as the version 2 header gave them) and the prefix
//! the receiver holds: its length and SHA-256 as the receiver's own hasher
//! computed them (so the bytes are the ones that arrived, read back from
//! the file).
//!
//! ```text
//! "TRSM" · version 1 · peer key (32) · size u64 BE · mtime u64 BE
//! · verified u64 BE · prefix SHA-256 (32) · name length u8 · name
//! · SHA-256 of every byte before it (32)
//! ```
//!
//! The record is rewritten whole (a temporary name, then a rename) every
//! [`CHECKPOINT_STEP`] bytes hashed and when the transfer is cut, so a
//! `kill -9` leaves the last one whole. Before a partial is offered it is
//! re-hashed up to `verified` and compared ([`super::FileSink`]); a record
//! that does not parse, or whose own checksum fails, is no record, and
//! [`super::sweep_partials`] removes its partial at the next start. A
//! partial older than [`PARTIAL_MAX_AGE`] is removed too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tryst_core::peer::transfer::{check_relative_path, MAX_FILE_NAME_LEN, TRAILER_LEN};

/// The record's first bytes.
pub const RECORD_MAGIC: [u8; 4] = *b"TRSM";
/// The record's format version.
pub const RECORD_VERSION: u8 = 1;
/// Bytes of a record around the name.
pub const RECORD_FIXED_LEN: usize = 4 + 1 + 32 + 8 + 8 + 8 + 32 + 1 + 32;
/// Longest record.
pub const MAX_RECORD_LEN: usize = RECORD_FIXED_LEN + MAX_FILE_NAME_LEN;
/// The suffix of a partial file's record.
pub const RECORD_SUFFIX: &str = ".resume";
/// The suffix of a record being written.
pub const RECORD_TMP_SUFFIX: &str = ".resume.tmp";
/// A receiver records its verified prefix each time this many more bytes
/// were hashed (and when the transfer is cut).
pub const CHECKPOINT_STEP: u64 = 4 * 1024 * 1024;
/// A partial file whose record was last written longer ago than this is
/// swept at the terminal's start: nobody is coming back for it.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most records a receiver reads when it looks for a partial to resume
/// (a folder full of them costs no more).
pub const MAX_RECORDS_SCANNED: usize = 256;

/// The most partial files of cut transfers a receiver keeps for one peer
/// key (`--max-partials`): past it, that peer's oldest go first.
pub const DEFAULT_MAX_PARTIALS: usize = 16;
/// The most bytes (on disk) of partial files a receiver keeps for one peer
/// key (`--max-partial-bytes`): past it, that peer's oldest go first.
pub const DEFAULT_MAX_PARTIAL_BYTES: u64 = 4 << 30;

/// What a receiver keeps of one peer's cut transfers: a permitted peer
/// that cuts many sends to new names cannot fill the disk with partials,
/// and cannot take another peer's room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLimits {
    /// Partial files kept per peer key (0: none is kept, nothing resumes).
    pub files: usize,
    /// Bytes of kept partial files per peer key, as the file system
    /// counts them (allocated blocks).
    pub bytes: u64,
}

impl Default for PartialLimits {
    fn default() -> Self {
        PartialLimits {
            files: DEFAULT_MAX_PARTIALS,
            bytes: DEFAULT_MAX_PARTIAL_BYTES,
        }
    }
}

/// Bytes a file takes on disk (its allocated blocks on unix: a partial is
/// sparse past what arrived).
fn disk_bytes(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::blocks(meta).saturating_mul(512)
    }
    #[cfg(not(unix))]
    {
        meta.len()
    }
}

/// Makes room in `dir` for keeping `keep`, a cut transfer's partial file
/// of `peer` (its record written): removes `peer`'s oldest kept partials
/// (by when their record was last written), never another peer's and
/// never one a transfer holds, until `peer` keeps at most `limits.files`
/// partials of at most `limits.bytes` with `keep` counted. Whether `keep`
/// fits at all (when not, the caller removes it; nothing else went).
pub fn make_room(dir: &Path, peer: &[u8; 32], keep: &Path, limits: PartialLimits) -> bool {
    let keep_bytes = std::fs::symlink_metadata(keep).map_or(0, |m| disk_bytes(&m));
    if limits.files == 0 || keep_bytes > limits.bytes {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    // This peer's other kept partials: (record written, path, bytes). At
    // most the cap's worth plus the transfers running, as the cap holds.
    let mut kept: Vec<(std::time::SystemTime, PathBuf, u64)> = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(partial_name) = file_name
            .to_str()
            .filter(|n| n.starts_with(super::PARTIAL_PREFIX))
            .and_then(|n| n.strip_suffix(RECORD_SUFFIX))
        else {
            continue;
        };
        let partial = dir.join(partial_name);
        if partial == keep || in_use(&partial) {
            continue;
        }
        match ResumeRecord::read(&partial) {
            Some(record) if record.peer == *peer => {}
            _ => continue,
        }
        let Ok(meta) = std::fs::symlink_metadata(&partial) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let written = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        kept.push((written, partial, disk_bytes(&meta)));
    }
    kept.sort();
    let mut files = kept.len() + 1;
    let mut bytes = kept
        .iter()
        .fold(keep_bytes, |sum, (_, _, b)| sum.saturating_add(*b));
    for (_, partial, size) in kept {
        if files <= limits.files && bytes <= limits.bytes {
            break;
        }
        let _ = std::fs::remove_file(&partial);
        remove_record(&partial);
        tracing::info!("a kept partial file of this peer removed: its cap is reached");
        files -= 1;
        bytes = bytes.saturating_sub(size);
    }
    true
}

/// Why a record is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its fields, or longer than [`MAX_RECORD_LEN`].
    #[error("resume record has the wrong length")]
    BadLength,
    /// Not a record, or another version.
    #[error("not a resume record (magic or version)")]
    BadMagic,
    /// Its checksum does not match: torn or changed.
    #[error("resume record checksum mismatch")]
    Checksum,
    /// The name is not a relative path of plain names.
    #[error("resume record names no plain path")]
    BadName,
    /// It claims more bytes than the file has.
    #[error("resume record claims more than the file's size")]
    BadPrefix,
}

/// One cut transfer, as its record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    /// The sender's public key.
    pub peer: [u8; 32],
    /// The file's relative path as sent.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its modification time (ns since the Unix epoch), from the header.
    pub mtime: u64,
    /// File bytes `[0, verified)` are in the partial file ...
    pub verified: u64,
    /// ... and this is their SHA-256.
    pub prefix_sha256: [u8; TRAILER_LEN],
}

impl ResumeRecord {
    /// Whether this record names the transfer of `name` (`size` bytes,
    /// `mtime`) from `peer`.
    pub fn names(&self, peer: &[u8; 32], name: &str, size: u64, mtime: u64) -> bool {
        self.peer == *peer && self.name == name && self.size == size && self.mtime == mtime
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_FIXED_LEN + self.name.len());
        out.extend_from_slice(&RECORD_MAGIC);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.peer);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.mtime.to_be_bytes());
        out.extend_from_slice(&self.verified.to_be_bytes());
        out.extend_from_slice(&self.prefix_sha256);
        // A checked name is at most 255 bytes.
        out.push(u8::try_from(self.name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.name.as_bytes());
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Reads a record; any other bytes are refused with the reason.
    pub fn decode(bytes: &[u8]) -> Result<ResumeRecord, RecordError> {
        if bytes.len() < RECORD_FIXED_LEN || bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::BadLength);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if body[..4] != RECORD_MAGIC || body[4] != RECORD_VERSION {
            return Err(RecordError::BadMagic);
        }
        if Sha256::digest(body).as_slice() != sum {
            return Err(RecordError::Checksum);
        }
        let u64_at = |at: usize| -> Result<u64, RecordError> {
            body.get(at..at + 8)
                .and_then(|b| b.first_chunk::<8>())
                .map(|b| u64::from_be_bytes(*b))
                .ok_or(RecordError::BadLength)
        };
        let mut peer = [0u8; 32];
        peer.copy_from_slice(&body[5..37]);
        let size = u64_at(37)?;
        let mtime = u64_at(45)?;
        let verified = u64_at(53)?;
        let mut prefix_sha256 = [0u8; TRAILER_LEN];
        prefix_sha256.copy_from_slice(&body[61..93]);
        let name_len = usize::from(body[93]);
        let name = body.get(94..).ok_or(RecordError::BadLength)?;
        if name.len() != name_len {
            return Err(RecordError::BadLength);
        }
        let name = std::str::from_utf8(name).map_err(|_| RecordError::BadName)?;
        check_relative_path(name).map_err(|_| RecordError::BadName)?;
        if verified > size {
            return Err(RecordError::BadPrefix);
        }
        Ok(ResumeRecord {
            peer,
            name: name.to_owned(),
            size,
            mtime,
            verified,
            prefix_sha256,
        })
    }

    /// Writes the record for the partial file `partial` whole: a temporary
    /// name, then a rename over the last one.
    pub fn write(&self, partial: &Path) -> std::io::Result<()> {
        let tmp = suffixed(partial, RECORD_TMP_SUFFIX);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(&tmp)?;
        std::io::Write::write_all(&mut file, &self.encode())?;
        drop(file);
        std::fs::rename(&tmp, record_path(partial))
    }

    /// Reads the record of the partial file `partial` (never through a symlink).
    pub fn read(partial: &Path) -> Option<ResumeRecord> {
        let path = record_path(partial);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_RECORD_LEN as u64 {
            return None;
        }
        ResumeRecord::decode(&std::fs::read(path).ok()?).ok()
    }
}

/// `path` with `suffix` added to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The record beside the partial file `partial`.
pub fn record_path(partial: &Path) -> PathBuf {
    suffixed(partial, RECORD_SUFFIX)
}

/// Removes a partial file's record (and a half-written one).
pub fn remove_record(partial: &Path) {
    let _ = std::fs::remove_file(record_path(partial));
    let _ = std::fs::remove_file(suffixed(partial, RECORD_TMP_SUFFIX));
}

/// The partial files this process's transfers hold: another transfer
/// never claims one of them, and the sweep leaves them alone. (Two
/// processes receiving the same file from the same peer into one folder at
/// once are not told apart: the second's whole-file check still keeps any
/// wrong file out.)
static IN_USE: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Claims `partial` for one transfer: whether it was free.
pub fn claim(partial: &Path) -> bool {
    IN_USE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(partial.to_path_buf())
}

/// Gives a claimed partial back.
pub fn release(partial: &Path) {
    IN_USE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(partial);
}

/// Whether a transfer of this process holds `partial`.
pub fn in_use(partial: &Path) -> bool {
    IN_USE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ResumeRecord {
        ResumeRecord {
            peer: [7; 32],
            name: "pics/a.jpg".to_owned(),
            size: 50_000_000,
            mtime: 1_700_000_000_000_000_000,
            verified: 8 << 20,
            prefix_sha256: [9; 32],
        }
    }

    #[test]
    fn a_record_round_trips_and_any_changed_byte_is_refused() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(bytes.len(), RECORD_FIXED_LEN + r.name.len());
        assert_eq!(ResumeRecord::decode(&bytes), Ok(r.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(ResumeRecord::decode(&bad).is_err(), "byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(ResumeRecord::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        assert!(r.names(
            &[7; 32],
            "pics/a.jpg",
            50_000_000,
            1_700_000_000_000_000_000
        ));
        assert!(!r.names(
            &[8; 32],
            "pics/a.jpg",
            50_000_000,
            1_700_000_000_000_000_000
        ));
        assert!(!r.names(
            &[7; 32],
            "pics/b.jpg",
            50_000_000,
            1_700_000_000_000_000_000
        ));
        assert!(!r.names(
            &[7; 32],
            "pics/a.jpg",
            50_000_001,
            1_700_000_000_000_000_000
        ));
        assert!(!r.names(&[7; 32], "pics/a.jpg", 50_000_000, 1));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = ResumeRecord::decode(&bytes);
        }
        // A record that claims more than the file, with a valid checksum.
        let mut r = record();
        r.verified = r.size + 1;
        assert_eq!(
            ResumeRecord::decode(&r.encode()),
            Err(RecordError::BadPrefix)
        );
        let mut r = record();
        r.name = "../x".to_owned();
        assert_eq!(ResumeRecord::decode(&r.encode()), Err(RecordError::BadName));
    }
}
