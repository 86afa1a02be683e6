//! The send side's files: the core's [`TransferSender`] decides what each
//! stream offset is and how much of the stream is readable; this reads the
//! file by offset (`pread`, through a read-ahead window) and hashes it on a
//! [`PrefixHasher`] thread as the transport first reads its bytes.

use std::fs::File;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tryst_core::peer::transfer::{
    FileRead, SendStep, TransferError, TransferHeader, TransferSender, TRAILER_LEN,
};
use tryst_core::time::Instant;

use super::hasher::{core_result, FileDigest, HashError, PrefixHasher, Wake};

/// The read-ahead of the send side, so most packets need no system call.
pub const READ_AHEAD: usize = 256 * 1024;

/// Why a file cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path has no (UTF-8) file name.
    #[error("{0}: not a file name")]
    NoName(PathBuf),
    /// Opening or inspecting the file failed.
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    /// Not a regular file.
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    /// Its name or size cannot be announced. The path is shown escaped: a
    /// refused name may hold a bidi override that would garble the line.
    #[error("{0:?}: cannot be sent: {1}")]
    Header(PathBuf, TransferError),
    /// The hasher thread could not start.
    #[error("{0}: cannot hash it: {1}")]
    Hasher(PathBuf, io::Error),
}

/// The file's bytes by offset, through a read-ahead window.
#[derive(Debug)]
struct FileReader {
    file: File,
    size: u64,
    cache: Vec<u8>,
    cache_start: u64,
}

impl FileRead for FileReader {
    fn read_file_at(&mut self, offset: u64, out: &mut [u8]) -> usize {
        if offset >= self.size {
            return 0;
        }
        let cached =
            offset >= self.cache_start && offset < self.cache_start + self.cache.len() as u64;
        if !cached {
            let want =
                usize::try_from(self.size - offset).map_or(READ_AHEAD, |n| n.min(READ_AHEAD));
            self.cache.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self
                    .file
                    .read_at(&mut self.cache[filled..], offset + filled as u64)
                {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // A file that shrank since it was opened: zeros, and the hasher
            // finds it short, so no trailer is ever sent for it.
            self.cache[filled..].fill(0);
            self.cache_start = offset;
        }
        let at = (offset - self.cache_start) as usize;
        let rest = &self.cache[at..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        n
    }
}

/// One file to send: the core's [`TransferSender`] with the file, its
/// read-ahead and its hasher thread.
#[derive(Debug)]
pub struct FileSource {
    /// The name it travels under.
    name: String,
    sender: TransferSender,
    reader: FileReader,
    hasher: PrefixHasher,
    /// The header, kept to make the send resumable.
    header: TransferHeader,
    /// The file's modification time, ns since the Unix epoch (0 unknown).
    mtime: u64,
}

impl FileSource {
    /// Opens `path` and prepares the stream under the file's own name; the
    /// hash follows the reads. Blocking (file system calls): call it off
    /// an event loop.
    pub fn open(path: &Path) -> Result<FileSource, OpenError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| OpenError::NoName(path.to_path_buf()))?;
        let file = File::open(path).map_err(|e| OpenError::Io(path.to_path_buf(), e))?;
        FileSource::from_file(path, file, name)
    }

    /// Prepares the stream of an open `file` (found at `path`) under `name`,
    /// a relative path ([`tryst_core::peer::transfer::check_relative_path`]):
    /// a file inside a sent or shared folder travels under its path in it.
    pub fn from_file(path: &Path, file: File, name: &str) -> Result<FileSource, OpenError> {
        let owned = || path.to_path_buf();
        let meta = file.metadata().map_err(|e| OpenError::Io(owned(), e))?;
        if !meta.is_file() {
            return Err(OpenError::NotRegular(owned()));
        }
        let size = meta.len();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let header = TransferHeader::new(name, size).map_err(|e| OpenError::Header(owned(), e))?;
        let hasher = file
            .try_clone()
            .and_then(|clone| PrefixHasher::spawn(clone, size, false, None))
            .map_err(|e| OpenError::Hasher(owned(), e))?;
        Ok(FileSource {
            name: name.to_owned(),
            sender: TransferSender::new(&header, None),
            reader: FileReader {
                file,
                size,
                cache: Vec::new(),
                cache_start: 0,
            },
            hasher,
            header,
            mtime,
        })
    }

    /// The name the file travels under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open file (a daemon's control client hands it on).
    pub fn file(&self) -> &File {
        &self.reader.file
    }

    /// Hashes the whole file now, not as it is sent (the file is sent by
    /// another process, and this side still reports its SHA-256).
    pub fn hash_all(&mut self) {
        self.hasher.advance(self.file_size());
    }

    /// This send as a resumable one (a version 2 header with the file's
    /// mtime): it waits for the receiver's word, then sends from there
    /// ([`FileSource::resume_at`]). Before it is handed to a terminal.
    pub fn resumable(mut self) -> FileSource {
        let header = self.header.clone().resumable(self.mtime);
        self.sender = TransferSender::new(&header, None);
        self.header = header;
        self
    }

    /// The receiver's word on a resumable send: its file bytes start at
    /// `offset`. The start taken (`None` if it was not waiting); the
    /// skipped prefix is hashed too, so the trailer covers the whole file.
    pub fn resume_at(&mut self, offset: u64) -> Option<u64> {
        let start = self.sender.resume_at(offset)?;
        self.hasher.advance(self.sender.hash_target());
        Some(start)
    }

    /// The core's machine of this send.
    pub fn sender(&self) -> &TransferSender {
        &self.sender
    }

    /// Sends at most `rate` bytes a second (`None`: as fast as the path allows).
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.sender.set_rate(rate);
    }

    /// The data channel is up: a throttled send's clock starts.
    pub fn start(&mut self, now: Instant) {
        self.sender.start(now);
    }

    /// Sets what the hasher calls when the digest is ready (the trailer
    /// became readable, or hashing failed).
    pub fn set_wake(&self, wake: Wake) {
        self.hasher.set_wake(wake);
    }

    /// The file's size.
    pub fn file_size(&self) -> u64 {
        self.sender.file_size()
    }

    /// The file's SHA-256, once every byte was read and hashed.
    pub fn digest(&self) -> Option<[u8; TRAILER_LEN]> {
        match self.hasher.result() {
            Some(Ok(digest)) => Some(*digest),
            _ => None,
        }
    }

    /// Why the file could not be hashed (it shrank, a read failed): the
    /// trailer will never be readable and the transfer must be ended.
    pub fn hash_error(&self) -> Option<&HashError> {
        match self.hasher.result() {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// A handle on the digest for the app, which gives the source away.
    pub fn digest_handle(&self) -> FileDigest {
        self.hasher.handle()
    }

    /// How many file bytes the first `stream_bytes` of the stream hold.
    pub fn file_bytes_in(&self, stream_bytes: u64) -> u64 {
        self.sender.file_bytes_in(stream_bytes)
    }

    /// The stream's whole length: header, file, trailer.
    pub fn stream_len(&self) -> u64 {
        self.sender.stream_len()
    }

    /// The stream bytes readable now (the trailer only once hashed).
    pub fn readable_len(&self) -> u64 {
        // The hasher may be done before the machine was told (at the next read or poll).
        if self.digest().is_some() {
            self.sender.stream_len()
        } else {
            self.sender.readable_len()
        }
    }

    /// Gives the hasher's result, once there is one, to the machine.
    fn sync_hash(&mut self) {
        if self.sender.digest().is_none() && self.sender.failure().is_none() {
            if let Some(result) = self.hasher.result() {
                self.sender.hashed(core_result(result));
            }
        }
    }

    /// Fills `buf` with the stream's bytes at `offset`; how many (0 past
    /// the end, or at the trailer while the digest is not ready). New file
    /// bytes go to the hasher.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        self.sync_hash();
        let n = self.sender.read(offset, buf, &mut self.reader);
        self.hasher.advance(self.sender.hash_target());
        n
    }

    /// What the session must be told now (call until `None`), as the
    /// machine decides from `now`, the rate and the hash.
    pub fn poll(&mut self, now: Instant) -> Option<SendStep> {
        self.sync_hash();
        self.sender.poll(now)
    }

    /// When the machine next needs [`FileSource::poll`] for its rate.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sender.poll_timeout()
    }

    #[cfg(test)]
    pub(crate) fn hasher(&self) -> &PrefixHasher {
        &self.hasher
    }
}
