//! Files over the peer stream: the send side reads the file by offset, the
//! receive side writes what a peer sends into `--recv-dir` and keeps it
//! only if its SHA-256 matches.
//!
//! A file from a peer is untrusted input even from a permitted peer:
//! - its name can never leave the receive directory: names with `/`, `\`,
//!   NUL or control characters, `.` and `..`, names starting with `.`, and
//!   names longer than [`MAX_FILE_NAME_LEN`] are refused;
//! - it is written under a fresh partial name (created exclusively, with
//!   `O_NOFOLLOW`, so no symlink is ever followed), flushed to disk, and
//!   only then linked under its final name; an existing file is never
//!   replaced (a numbered name is taken instead);
//! - the partial file is removed on any failure, so nothing is left under
//!   the final name that was not checked.
//!
//! SHA-256 never runs on the event loop: on each side a [`PrefixHasher`]
//! thread reads back, from the file (the page cache), the prefix the loop
//! says is in place, each byte once and in order. The sender's hash follows
//! the data as the transport first reads it (retransmissions re-read old
//! offsets and hash nothing again), and its trailer is readable only once
//! the hash is complete; the receiver's follows the contiguous prefix
//! written to the partial file, which is never written again below it.
//!
//! The stream's layout is the core's (`tryst_core::peer::transfer`): the
//! transfer header (name and size), then the file's bytes, then their
//! 32-byte SHA-256.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
#[cfg(unix)]
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};

use super::CliError;

use tryst_core::peer::transfer::{is_plain_file_name, TransferHeader};
pub use tryst_core::peer::transfer::{MAX_FILE_NAME_LEN, MAX_HEADER_LEN, TRAILER_LEN};

/// Most stream bytes held in memory while the header has not arrived
/// (data that overtook it); a peer that sends more is cut off.
pub const MAX_EARLY_BYTES: usize = 32 * 1024 * 1024;
/// Most separate received ranges tracked past the contiguous prefix; a
/// peer whose data is scattered wider is cut off.
pub const MAX_RANGES: usize = 16 * 1024;
/// The read-ahead of the send side, so most packets need no system call.
pub const READ_AHEAD: usize = 256 * 1024;
/// In-order bytes the receive side gathers before it writes them in one
/// call (not one system call per packet).
pub const WRITE_BATCH: usize = 256 * 1024;
/// Most bytes a hasher thread reads back from the file at once.
pub const HASH_CHUNK: usize = 1024 * 1024;
/// A hasher thread is woken each time this many more bytes are in place
/// (and at the end), not on every packet.
pub const HASH_WAKE_STEP: u64 = 256 * 1024;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The sent file name is not a plain name inside the receive directory.
    #[error("refused file name {0:?}")]
    BadName(String),
    /// The header is malformed.
    #[error("malformed transfer header")]
    BadHeader,
    /// The peer sent bytes past the end it announced, or scattered too widely.
    #[error("the peer sent data outside the announced file")]
    OutOfBounds,
    /// The file's SHA-256 does not match the one the sender computed.
    #[error("checksum mismatch: the file was not kept")]
    ChecksumMismatch,
    /// Hashing the received bytes failed.
    #[error("{0}")]
    Hash(#[from] HashError),
    /// A file system operation failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Why a [`PrefixHasher`] gave no digest.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HashError {
    /// The file ended before its announced length: it changed while it was read.
    #[error("the file is shorter than announced: it changed while it was read")]
    Truncated,
    /// Reading the file back (or flushing it) failed.
    #[error("hashing the file failed: {0}")]
    Io(Arc<io::Error>),
    /// The hasher was dropped before it finished.
    #[error("hashing was cancelled")]
    Cancelled,
}

/// Wakes the event loop (a hasher thread finished); it must not block.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// An optional [`Wake`], printable.
#[derive(Clone)]
struct WakeSlot(Option<Wake>);

impl std::fmt::Debug for WakeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(wake)"
        } else {
            "None"
        })
    }
}

/// What a hasher thread and its owner share.
struct HashShared {
    /// The owner's word: file bytes `[0, target)` are in place to be hashed.
    target: AtomicU64,
    /// File bytes hashed so far.
    hashed: AtomicU64,
    cancelled: AtomicBool,
    result: OnceLock<Result<[u8; TRAILER_LEN], HashError>>,
    /// Signalled when `result` is set, for [`PrefixHasher::wait`].
    done: (Mutex<()>, Condvar),
    wake: Mutex<Option<Wake>>,
}

impl std::fmt::Debug for HashShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashShared")
            .field("target", &self.target)
            .field("hashed", &self.hashed)
            .field("result", &self.result.get())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a file's first `len` bytes on its own thread: the owner says
/// how far the bytes are in place ([`PrefixHasher::advance`], which only
/// grows), and the thread reads them back from the file by offset and
/// hashes each byte once, in order. When it is done it calls the wake.
/// Dropping the hasher stops the thread.
#[derive(Debug)]
pub struct PrefixHasher {
    shared: Arc<HashShared>,
    thread: std::thread::Thread,
    len: u64,
    /// The last target given to the thread.
    target: u64,
    /// The target the thread was last woken for.
    woken_at: u64,
}

impl PrefixHasher {
    /// Starts hashing `file`'s first `len` bytes (none in place yet); with
    /// `sync`, the file is also flushed to disk before the digest is given.
    pub fn spawn(file: File, len: u64, sync: bool, wake: Option<Wake>) -> io::Result<Self> {
        let shared = Arc::new(HashShared {
            target: AtomicU64::new(0),
            hashed: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            result: OnceLock::new(),
            done: (Mutex::new(()), Condvar::new()),
            wake: Mutex::new(wake),
        });
        let theirs = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tryst-sha256".to_owned())
            .spawn(move || {
                let result = hash_prefix(&file, len, sync, &theirs);
                let cancelled = matches!(result, Err(HashError::Cancelled));
                let _ = theirs.result.set(result);
                {
                    let _guard = theirs.done.0.lock().unwrap_or_else(PoisonError::into_inner);
                    theirs.done.1.notify_all();
                }
                if !cancelled {
                    let wake = theirs.wake.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(wake) = wake.as_ref() {
                        wake();
                    }
                }
            })?;
        Ok(PrefixHasher {
            thread: handle.thread().clone(),
            shared,
            len,
            target: 0,
            woken_at: 0,
        })
    }

    /// File bytes `[0, upto)` are in place and will not change; they may be
    /// hashed. Smaller values than before change nothing.
    pub fn advance(&mut self, upto: u64) {
        let upto = upto.min(self.len);
        if upto <= self.target {
            return;
        }
        self.target = upto;
        self.shared.target.store(upto, Ordering::Release);
        if upto - self.woken_at >= HASH_WAKE_STEP || upto == self.len {
            self.woken_at = upto;
            self.thread.unpark();
        }
    }

    /// Sets the wake called when the digest is ready (replacing any).
    pub fn set_wake(&self, wake: Wake) {
        *self
            .shared
            .wake
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(wake);
    }

    /// The digest, once every byte was given and hashed; or why there is none.
    pub fn result(&self) -> Option<&Result<[u8; TRAILER_LEN], HashError>> {
        self.shared.result.get()
    }

    /// File bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.shared.hashed.load(Ordering::Acquire)
    }

    /// Blocks until the digest is ready; `None` at once when not every
    /// byte was given yet (it would never be).
    pub fn wait(&self) -> Option<&Result<[u8; TRAILER_LEN], HashError>> {
        if self.target < self.len {
            return self.result();
        }
        let (lock, cvar) = &self.shared.done;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.shared.result.get().is_none() {
            guard = cvar.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        drop(guard);
        self.result()
    }

    /// A handle on the digest that outlives the hasher's owner.
    pub fn handle(&self) -> FileDigest {
        FileDigest(Arc::clone(&self.shared))
    }
}

impl Drop for PrefixHasher {
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// The body of a hasher thread: hashes `[0, len)` of `file` as the target
/// allows, parking while it waits.
fn hash_prefix(
    file: &File,
    len: u64,
    sync: bool,
    shared: &HashShared,
) -> Result<[u8; TRAILER_LEN], HashError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK.min(usize::try_from(len).unwrap_or(HASH_CHUNK))];
    let mut hashed = 0u64;
    while hashed < len {
        if shared.cancelled.load(Ordering::Acquire) {
            return Err(HashError::Cancelled);
        }
        let target = shared.target.load(Ordering::Acquire).min(len);
        if hashed >= target {
            std::thread::park();
            continue;
        }
        let want = buf
            .len()
            .min(usize::try_from(target - hashed).unwrap_or(buf.len()));
        match file.read_at(&mut buf[..want], hashed) {
            Ok(0) => return Err(HashError::Truncated),
            Ok(n) => {
                hasher.update(&buf[..n]);
                hashed += n as u64;
                shared.hashed.store(hashed, Ordering::Release);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HashError::Io(Arc::new(e))),
        }
    }
    if sync {
        file.sync_all().map_err(|e| HashError::Io(Arc::new(e)))?;
    }
    Ok(hasher.finalize().into())
}

/// A file's SHA-256 as its [`PrefixHasher`] computes it, readable from
/// anywhere (the app keeps one while the loop owns the source).
#[derive(Debug, Clone)]
pub struct FileDigest(Arc<HashShared>);

impl FileDigest {
    /// The digest once it is complete, or why there is none.
    pub fn get(&self) -> Option<Result<[u8; TRAILER_LEN], HashError>> {
        self.0.result.get().cloned()
    }
}

/// SHA-256 of a whole file (blocking; for callers that want it up front).
pub fn file_sha256(path: &Path) -> io::Result<[u8; TRAILER_LEN]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Checks a file name sent by a peer; `Ok` only for a plain name that stays
/// inside the directory it is joined to: the core's rule (no separators,
/// NUL or control characters, not `.` or `..`) and no leading `.` (no
/// hidden files, and never the name of a partial file).
pub fn check_file_name(name: &str) -> Result<&str, TransferError> {
    if is_plain_file_name(name) && !name.starts_with('.') {
        Ok(name)
    } else {
        Err(TransferError::BadName(name.chars().take(64).collect()))
    }
}

/// The receive directory: created (mode 0700) if missing, and a directory.
pub fn check_recv_dir(dir: &Path) -> Result<(), CliError> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| {
            CliError::usage(format!("cannot create receive dir {}: {e}", dir.display()))
        })?;
    }
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "receive dir {} is not a directory",
            dir.display()
        )));
    }
    Ok(())
}

/// Encodes the transfer header of a file called `name` of `size` bytes.
pub fn encode_header(name: &str, size: u64) -> Result<Vec<u8>, TransferError> {
    let name = check_file_name(name)?;
    let header =
        TransferHeader::new(name, size).map_err(|_| TransferError::BadName(name.into()))?;
    let mut out = vec![0u8; header.encoded_len()];
    let n = header
        .encode(&mut out)
        .map_err(|_| TransferError::BadHeader)?;
    out.truncate(n);
    Ok(out)
}

/// A decoded header: the name (checked) and the size, and its encoded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The file name, checked with [`check_file_name`].
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// How many stream bytes the header took.
    pub len: usize,
}

/// Decodes a header from the stream's first bytes: `Ok(None)` if more bytes
/// are needed.
pub fn decode_header(bytes: &[u8]) -> Result<Option<Header>, TransferError> {
    match TransferHeader::decode(bytes) {
        Ok(None) => Ok(None),
        Ok(Some((header, len))) => {
            let name = check_file_name(header.name())?;
            Ok(Some(Header {
                name: name.to_owned(),
                size: header.size,
                len,
            }))
        }
        Err(tryst_core::peer::transfer::TransferError::BadName) => {
            Err(TransferError::BadName(String::new()))
        }
        Err(_) => Err(TransferError::BadHeader),
    }
}

/// The send side: the whole stream (header, file, SHA-256) read by offset
/// from the file, so nothing is copied into memory but a read-ahead window.
/// The file is hashed on a [`PrefixHasher`] thread as the transport first
/// reads its bytes; the trailer is readable only once the hash is complete.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    header: Vec<u8>,
    size: u64,
    /// File bytes `[0, frontier)` were read at least once: the hasher's target.
    frontier: u64,
    hasher: PrefixHasher,
    cache: Vec<u8>,
    cache_start: u64,
}

impl FileSource {
    /// Opens `path` and prepares the stream under the file's own name; the
    /// hash follows the reads. Blocking (file system calls): call it off the loop.
    pub fn open(path: &Path) -> Result<FileSource, CliError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CliError::usage(format!("{}: not a file name", path.display())))?;
        let file =
            File::open(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(CliError::usage(format!(
                "{}: not a regular file",
                path.display()
            )));
        }
        let header = encode_header(name, meta.len())
            .map_err(|e| CliError::usage(format!("{}: cannot be sent: {e}", path.display())))?;
        let size = meta.len();
        let hasher = file
            .try_clone()
            .and_then(|clone| PrefixHasher::spawn(clone, size, false, None))
            .map_err(|e| CliError::failed(format!("{}: cannot hash it: {e}", path.display())))?;
        Ok(FileSource {
            file,
            header,
            size,
            frontier: 0,
            hasher,
            cache: Vec::new(),
            cache_start: 0,
        })
    }

    /// Sets what the hasher calls when the digest is ready (the trailer
    /// became readable, or hashing failed).
    pub fn set_wake(&self, wake: Wake) {
        self.hasher.set_wake(wake);
    }

    /// The file's size.
    pub fn file_size(&self) -> u64 {
        self.size
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
        stream_bytes
            .saturating_sub(self.header.len() as u64)
            .min(self.size)
    }

    /// The stream's whole length: header, file, trailer.
    pub fn stream_len(&self) -> u64 {
        self.header.len() as u64 + self.size + TRAILER_LEN as u64
    }

    /// The stream bytes readable now: all of them once the digest is
    /// ready, the header and the file before.
    pub fn readable_len(&self) -> u64 {
        if self.digest().is_some() {
            self.stream_len()
        } else {
            self.header.len() as u64 + self.size
        }
    }

    /// Fills `buf` with the stream's bytes at `offset`; how many (0 past
    /// the end, or at the trailer while the digest is not ready).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let header_len = self.header.len() as u64;
        let data_end = header_len + self.size;
        let mut done = 0;
        let mut at = offset;
        while done < buf.len() && at < self.stream_len() {
            let out = &mut buf[done..];
            let n = if at < header_len {
                copy_from(&self.header, at, out)
            } else if at < data_end {
                let want = out.len().min((data_end - at) as usize);
                let n = self.read_data(at - header_len, &mut out[..want]);
                // New bytes (not a retransmission): the hasher may take them.
                let end = at - header_len + n as u64;
                if end > self.frontier {
                    self.frontier = end;
                    self.hasher.advance(end);
                }
                n
            } else {
                match self.digest() {
                    Some(digest) => copy_from(&digest, at - data_end, out),
                    None => 0,
                }
            };
            if n == 0 {
                break;
            }
            done += n;
            at += n as u64;
        }
        done
    }

    /// File bytes at `offset`, from the read-ahead window (refilled as needed).
    fn read_data(&mut self, offset: u64, out: &mut [u8]) -> usize {
        let cached =
            offset >= self.cache_start && offset < self.cache_start + self.cache.len() as u64;
        if !cached {
            let want = READ_AHEAD.min((self.size - offset) as usize);
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
        copy_from(&self.cache, offset - self.cache_start, out)
    }
}

/// Copies `src[at..]` into `out`; how many bytes.
fn copy_from(src: &[u8], at: u64, out: &mut [u8]) -> usize {
    let Some(rest) = usize::try_from(at).ok().and_then(|at| src.get(at..)) else {
        return 0;
    };
    let n = rest.len().min(out.len());
    out[..n].copy_from_slice(&rest[..n]);
    n
}

/// What the receive side has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveState {
    /// Waiting for the header.
    AwaitingHeader,
    /// Receiving `name` of `size` bytes.
    Receiving {
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
    },
    /// Stored and checked.
    Complete {
        /// Where it was stored.
        path: PathBuf,
        /// Its SHA-256.
        digest: [u8; TRAILER_LEN],
        /// Its size.
        size: u64,
    },
    /// Failed; nothing was kept.
    Failed(String),
}

/// The receive side: stream bytes by offset (in any order, possibly twice)
/// into a partial file in the receive directory. The contiguous prefix is
/// never written again once in place, and a [`PrefixHasher`] thread reads
/// it back and hashes it as it grows; the file is flushed, checked against
/// the trailer and named only when that thread is done.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    state: ReceiveState,
    /// The contiguous stream prefix while the header is incomplete.
    prefix: Vec<u8>,
    /// Bytes that overtook the header (stream offset → bytes).
    early: BTreeMap<u64, Vec<u8>>,
    early_len: usize,
    header_len: u64,
    size: u64,
    partial: Option<(PathBuf, File)>,
    /// Received data ranges past `contiguous` (file offsets, start → end).
    ranges: BTreeMap<u64, u64>,
    /// File bytes [0, contiguous) arrived; never written again.
    contiguous: u64,
    /// The last in-order bytes, `[contiguous - pending.len(), contiguous)`,
    /// not yet written; everything before them is on disk.
    pending: Vec<u8>,
    hasher: Option<PrefixHasher>,
    wake: WakeSlot,
    trailer: [u8; TRAILER_LEN],
    trailer_have: [bool; TRAILER_LEN],
    /// Highest stream offset seen + 1: bytes received, for progress.
    received: u64,
}

impl FileSink {
    /// A sink storing into `dir` (which [`check_recv_dir`] accepted); the
    /// owner polls it ([`FileSink::poll`]) or waits ([`FileSink::wait`])
    /// for the check once every byte arrived.
    pub fn new(dir: &Path) -> FileSink {
        FileSink {
            dir: dir.to_path_buf(),
            state: ReceiveState::AwaitingHeader,
            prefix: Vec::new(),
            early: BTreeMap::new(),
            early_len: 0,
            header_len: 0,
            size: 0,
            partial: None,
            ranges: BTreeMap::new(),
            contiguous: 0,
            pending: Vec::new(),
            hasher: None,
            wake: WakeSlot(None),
            trailer: [0; TRAILER_LEN],
            trailer_have: [false; TRAILER_LEN],
            received: 0,
        }
    }

    /// A sink that calls `wake` when its hash is ready, so an event loop
    /// knows to [`FileSink::poll`] it.
    pub fn with_wake(dir: &Path, wake: Wake) -> FileSink {
        let mut sink = FileSink::new(dir);
        sink.wake = WakeSlot(Some(wake));
        sink
    }

    /// Where the transfer stands.
    pub fn state(&self) -> &ReceiveState {
        &self.state
    }

    /// Whether the file is stored and checked, or the transfer failed.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            ReceiveState::Complete { .. } | ReceiveState::Failed(_)
        )
    }

    /// File bytes received in order so far (the contiguous prefix).
    pub fn file_bytes_done(&self) -> u64 {
        self.contiguous
    }

    /// File bytes hashed so far (the hasher thread trails the prefix).
    pub fn file_bytes_hashed(&self) -> u64 {
        match (&self.hasher, &self.state) {
            (Some(hasher), _) => hasher.hashed(),
            (None, ReceiveState::Complete { size, .. }) => *size,
            (None, _) => 0,
        }
    }

    /// The file's announced size, once the header arrived.
    pub fn file_size(&self) -> Option<u64> {
        match self.state {
            ReceiveState::AwaitingHeader => None,
            _ => Some(self.size),
        }
    }

    /// Stream bytes seen (the highest offset reached).
    pub fn stream_bytes(&self) -> u64 {
        self.received
    }

    /// Stream bytes at `offset`.
    pub fn stream_data(&mut self, offset: u64, data: &[u8]) {
        if self.is_done() || data.is_empty() {
            return;
        }
        self.received = self.received.max(offset.saturating_add(data.len() as u64));
        if let Err(e) = self.take(offset, data) {
            self.fail(e);
        }
    }

    /// Finishes the transfer if every byte arrived and the hash is ready:
    /// checked, then stored or thrown away. Cheap; call it on every wake.
    pub fn poll(&mut self) {
        if self.is_done() {
            return;
        }
        if let Err(e) = self.check_complete() {
            self.fail(e);
        }
    }

    /// Like [`FileSink::poll`], but once every byte arrived it blocks until
    /// the hash is ready, so the transfer is then done.
    pub fn wait(&mut self) {
        if self.is_done() || !self.all_arrived() {
            return;
        }
        if let Some(hasher) = &self.hasher {
            hasher.wait();
        }
        self.poll();
    }

    /// The transfer was cut (session ended, peer lost): removes the partial file.
    pub fn abort(&mut self, why: &str) {
        if !self.is_done() {
            self.fail(TransferError::Io(io::Error::other(why.to_owned())));
        }
    }

    fn fail(&mut self, e: TransferError) {
        self.hasher = None;
        self.pending = Vec::new();
        if let Some((path, _)) = self.partial.take() {
            let _ = std::fs::remove_file(path);
        }
        self.early.clear();
        self.ranges.clear();
        self.state = ReceiveState::Failed(e.to_string());
    }

    fn take(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        if matches!(self.state, ReceiveState::AwaitingHeader) {
            return self.take_early(offset, data);
        }
        let data_start = self.header_len;
        let data_end = data_start + self.size;
        let end = offset.saturating_add(data.len() as u64);
        if end > data_end + TRAILER_LEN as u64 {
            return Err(TransferError::OutOfBounds);
        }
        // The part inside the file's bytes.
        let lo = offset.max(data_start);
        let hi = end.min(data_end);
        if lo < hi {
            let part = &data[(lo - offset) as usize..(hi - offset) as usize];
            self.take_data(lo - data_start, part)?;
        }
        // The part inside the trailer.
        let lo = offset.max(data_end);
        if lo < end {
            for (i, b) in data[(lo - offset) as usize..].iter().enumerate() {
                let at = (lo - data_end) as usize + i;
                if let (Some(slot), Some(have)) =
                    (self.trailer.get_mut(at), self.trailer_have.get_mut(at))
                {
                    *slot = *b;
                    *have = true;
                }
            }
        }
        self.check_complete()
    }

    /// Before the header: grow the contiguous prefix, keep what overtook it.
    fn take_early(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        let have = self.prefix.len() as u64;
        let end = offset.saturating_add(data.len() as u64);
        if end <= have {
            return Ok(());
        }
        if offset > have {
            self.early_len += data.len();
            if self.early_len > MAX_EARLY_BYTES {
                return Err(TransferError::OutOfBounds);
            }
            self.early.insert(offset, data.to_vec());
            return Ok(());
        }
        self.prefix
            .extend_from_slice(&data[(have - offset) as usize..]);
        // Whatever was waiting and now touches the prefix joins it.
        while let Some((&at, _)) = self.early.first_key_value() {
            if at > self.prefix.len() as u64 {
                break;
            }
            if let Some((at, bytes)) = self.early.pop_first() {
                self.early_len -= bytes.len();
                let have = self.prefix.len() as u64;
                let end = at + bytes.len() as u64;
                if end > have {
                    self.prefix
                        .extend_from_slice(&bytes[(have - at) as usize..]);
                }
            }
        }
        let Some(header) = decode_header(&self.prefix)? else {
            if self.prefix.len() > MAX_HEADER_LEN {
                return Err(TransferError::BadHeader);
            }
            return Ok(());
        };
        self.start(&header)?;
        let prefix = std::mem::take(&mut self.prefix);
        let early = std::mem::take(&mut self.early);
        self.early_len = 0;
        self.take(0, &prefix)?;
        for (at, bytes) in early {
            self.take(at, &bytes)?;
        }
        Ok(())
    }

    /// The header arrived: create the partial file.
    fn start(&mut self, header: &Header) -> Result<(), TransferError> {
        let mut nonce = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let tag: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(format!(".tryst-partial-{tag}"));
        let mut options = OpenOptions::new();
        options.write(true).read(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        let file = options.open(&path)?;
        // Kept before anything can fail, so a failure removes the file.
        let hashed_file = file.try_clone();
        self.partial = Some((path, file));
        self.hasher = Some(PrefixHasher::spawn(
            hashed_file?,
            header.size,
            true,
            self.wake.0.clone(),
        )?);
        if let Some((_, file)) = &self.partial {
            file.set_len(header.size)?;
        }
        self.header_len = header.len as u64;
        self.size = header.size;
        self.state = ReceiveState::Receiving {
            name: header.name.clone(),
            size: header.size,
        };
        Ok(())
    }

    /// File bytes at `offset`: the part past the contiguous prefix only
    /// (bytes the hasher may be reading never change). In-order bytes are
    /// gathered and written in batches, out-of-order ones at once; the
    /// hasher is given the prefix as it reaches the disk.
    fn take_data(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        let end = offset + data.len() as u64;
        if end <= self.contiguous {
            return Ok(());
        }
        let skip = self.contiguous.saturating_sub(offset);
        let (offset, data) = (offset + skip, &data[skip as usize..]);
        if offset > self.contiguous {
            let Some((_, file)) = self.partial.as_ref() else {
                return Err(TransferError::OutOfBounds);
            };
            file.write_all_at(data, offset)?;
            return self.add_range(offset, end);
        }
        self.pending.extend_from_slice(data);
        self.contiguous = end;
        let reaches_range = self
            .ranges
            .first_key_value()
            .is_some_and(|(&s, _)| s <= self.contiguous);
        if reaches_range || self.pending.len() >= WRITE_BATCH || self.contiguous >= self.size {
            self.flush()?;
        }
        if reaches_range {
            // Ranges already on disk that the prefix now reaches join it.
            while let Some((&s, &e)) = self.ranges.first_key_value() {
                if s > self.contiguous {
                    break;
                }
                self.ranges.remove(&s);
                self.contiguous = self.contiguous.max(e);
            }
            if let Some(hasher) = self.hasher.as_mut() {
                hasher.advance(self.contiguous);
            }
        }
        Ok(())
    }

    /// Writes the gathered in-order bytes: the whole prefix is then on
    /// disk, and the hasher may read it.
    fn flush(&mut self) -> Result<(), TransferError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some((_, file)) = self.partial.as_ref() else {
            return Err(TransferError::OutOfBounds);
        };
        let start = self.contiguous - self.pending.len() as u64;
        file.write_all_at(&self.pending, start)?;
        self.pending.clear();
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.advance(self.contiguous);
        }
        Ok(())
    }

    fn add_range(&mut self, mut start: u64, mut end: u64) -> Result<(), TransferError> {
        // Merge with every range it touches.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        while let Some((&s, &e)) = self.ranges.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
        if self.ranges.len() > MAX_RANGES {
            return Err(TransferError::OutOfBounds);
        }
        Ok(())
    }

    /// Every file byte and the whole trailer arrived.
    fn all_arrived(&self) -> bool {
        matches!(self.state, ReceiveState::Receiving { .. })
            && self.contiguous >= self.size
            && self.trailer_have.iter().all(|h| *h)
    }

    /// Every byte and the trailer arrived and the hasher is done (it also
    /// flushed the file): check, store, or throw away.
    fn check_complete(&mut self) -> Result<(), TransferError> {
        if !self.all_arrived() {
            return Ok(());
        }
        let digest = match self.hasher.as_ref().map(PrefixHasher::result) {
            None => return Err(TransferError::OutOfBounds),
            Some(None) => return Ok(()),
            Some(Some(Err(e))) => return Err(e.clone().into()),
            Some(Some(Ok(digest))) => *digest,
        };
        self.hasher = None;
        if digest != self.trailer {
            return Err(TransferError::ChecksumMismatch);
        }
        let Some((partial, file)) = self.partial.take() else {
            return Err(TransferError::OutOfBounds);
        };
        let name = match &self.state {
            ReceiveState::Receiving { name, .. } => name.clone(),
            _ => return Err(TransferError::OutOfBounds),
        };
        drop(file);
        let stored = (|| {
            let path = link_no_clobber(&partial, &self.dir, &name)?;
            std::fs::remove_file(&partial)?;
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            Ok::<_, io::Error>(path)
        })();
        match stored {
            Ok(path) => {
                self.state = ReceiveState::Complete {
                    path,
                    digest,
                    size: self.size,
                };
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e.into())
            }
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Some((path, _)) = self.partial.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Most numbered names tried when the file's name is taken.
const MAX_NAME_TRIES: u32 = 1000;

/// Gives `partial` the name `name` in `dir` (or `name.1`, `name.2`, ...
/// when taken) without ever replacing a file or following a symlink: a hard
/// link fails if anything, a dangling symlink included, has that name.
fn link_no_clobber(partial: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..MAX_NAME_TRIES {
        let candidate = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{name}.{n}"))
        };
        match std::fs::hard_link(partial, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{name}: every numbered name is taken"),
    ))
}

/// A transfer's progress on stdout: an indicatif bar on a terminal, plain
/// lines at every tenth otherwise (logs and pipes stay readable).
#[derive(Debug)]
pub enum Progress {
    /// Stdout is a terminal.
    Bar(indicatif::ProgressBar),
    /// Stdout is a file or a pipe.
    Plain {
        /// What moves.
        label: String,
        /// Its size.
        size: u64,
        /// The last tenth printed.
        tenths: u64,
    },
}

impl Progress {
    /// Progress of `size` bytes called `label`.
    pub fn new(label: &str, size: u64) -> Progress {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            let bar = indicatif::ProgressBar::new(size);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            Progress::Bar(bar)
        } else {
            Progress::Plain {
                label: label.to_owned(),
                size,
                tenths: 0,
            }
        }
    }

    /// `done` bytes have moved.
    pub fn set(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Plain {
                label,
                size,
                tenths,
            } => {
                let now = if *size == 0 {
                    10
                } else {
                    (u128::from(done) * 10 / u128::from(*size)).min(10) as u64
                };
                if now > *tenths {
                    *tenths = now;
                    println!(
                        "{label}: {}% ({} of {})",
                        now * 10,
                        human_bytes(done.min(*size)),
                        human_bytes(*size)
                    );
                }
            }
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.println(line),
            Progress::Plain { .. } => println!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Bytes for people: `512 B`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a rate in bytes a second: `500000`, `500K`, `2M`, `1G` (binary units).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a rate: {text:?} (e.g. 500K, 2M)"))?;
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!("not a usable rate: {text:?}")),
        Some(rate) => Ok(rate),
    }
}

/// Hex of a digest, for output.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let mut nonce = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let dir = std::env::temp_dir().join(format!("tryst-transfer-{tag}-{}", hex(&nonce)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn stream_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut s = encode_header(name, data.len() as u64).unwrap();
        s.extend_from_slice(data);
        s.extend_from_slice(&Sha256::digest(data));
        s
    }

    /// Reads the whole stream from `source` in `mtu`-byte reads, as a
    /// transport would, into `sink`; waits for the sender's hash when the
    /// trailer is not readable yet. The stream bytes read.
    fn pump(source: &mut FileSource, sink: &mut FileSink, mtu: usize) -> u64 {
        let mut offset = 0;
        let mut buf = vec![0u8; mtu];
        loop {
            let mut n = source.read_at(offset, &mut buf);
            if n == 0 && offset < source.stream_len() {
                source.hasher.wait();
                n = source.read_at(offset, &mut buf);
            }
            if n == 0 {
                return offset;
            }
            sink.stream_data(offset, &buf[..n]);
            offset += n as u64;
        }
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    fn wake_channel() -> (Wake, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let wake: Wake = Arc::new(move || {
            let _ = tx.lock().unwrap().send(());
        });
        (wake, rx)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_that_could_escape_the_receive_dir_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "nul\0byte",
            "bell\x07",
            "new\nline",
            ".hidden",
            &"x".repeat(256),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["photo.jpg", "a b c.txt", "résumé.pdf", "x..y"] {
            assert!(check_file_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = encode_header("song.ogg", 1234).unwrap();
        let d = decode_header(&h).unwrap().unwrap();
        assert_eq!(
            (d.name.as_str(), d.size, d.len),
            ("song.ogg", 1234, h.len())
        );
        for cut in 0..h.len() {
            assert_eq!(decode_header(&h[..cut]).unwrap(), None);
        }
        assert!(decode_header(b"XXXXXXXXXXXXXXXXXXXX").is_err());
        let mut evil = b"TF\x01\x02..".to_vec();
        evil.extend_from_slice(&1u64.to_be_bytes());
        assert!(matches!(
            decode_header(&evil),
            Err(TransferError::BadName(_))
        ));
    }

    #[test]
    fn s207_transfer_in_order_is_stored_with_matching_checksum() {
        let src_dir = tempdir("src");
        let dir = tempdir("recv");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = src_dir.join("data.bin");
        std::fs::write(&path, &data).unwrap();
        let mut source = FileSource::open(&path).unwrap();
        let mut sink = FileSink::new(&dir);
        let offset = pump(&mut source, &mut sink, 1300);
        assert_eq!(offset, source.stream_len());
        sink.wait();
        match sink.state() {
            ReceiveState::Complete { path, digest, size } => {
                assert_eq!(*size, data.len() as u64);
                assert_eq!(Some(*digest), source.digest());
                assert_eq!(std::fs::read(path).unwrap(), data);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(entries(&dir), ["data.bin"]);
    }

    #[test]
    fn out_of_order_and_duplicated_chunks_still_check() {
        let dir = tempdir("ooo");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let stream = stream_of("f.bin", &data);
        let mut chunks: Vec<(u64, &[u8])> = stream
            .chunks(977)
            .enumerate()
            .map(|(i, c)| ((i * 977) as u64, c))
            .collect();
        // Reverse order (the header last), plus every chunk twice.
        chunks.reverse();
        let again = chunks.clone();
        let mut sink = FileSink::new(&dir);
        for (at, c) in chunks.into_iter().chain(again) {
            sink.stream_data(at, c);
        }
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { .. }),
            "{:?}",
            sink.state()
        );
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), data);
    }

    #[test]
    fn checksum_mismatch_keeps_nothing() {
        let dir = tempdir("bad");
        let mut stream = stream_of("f.bin", &[1u8; 5000]);
        let last = stream.len() - 1;
        stream[last] ^= 1;
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream);
        sink.wait();
        assert!(matches!(sink.state(), ReceiveState::Failed(_)));
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    }

    #[test]
    fn an_aborted_transfer_leaves_no_partial_file() {
        let dir = tempdir("abort");
        let stream = stream_of("f.bin", &[1u8; 5000]);
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream[..3000]);
        assert_eq!(entries(&dir).len(), 1);
        sink.abort("peer lost");
        assert!(entries(&dir).is_empty());
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream[..3000]);
        drop(sink);
        assert!(entries(&dir).is_empty());
    }

    #[test]
    fn an_existing_file_or_symlink_is_never_replaced_or_followed() {
        let dir = tempdir("clobber");
        let outside = tempdir("outside");
        std::fs::write(dir.join("f.bin"), b"mine").unwrap();
        std::os::unix::fs::symlink(outside.join("target"), dir.join("f.bin.1")).unwrap();
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream_of("f.bin", b"theirs"));
        sink.wait();
        assert!(matches!(sink.state(), ReceiveState::Complete { .. }));
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), b"mine");
        assert_eq!(std::fs::read(dir.join("f.bin.2")).unwrap(), b"theirs");
        assert!(!outside.join("target").exists());
    }

    #[test]
    fn data_past_the_announced_end_fails_the_transfer() {
        let dir = tempdir("oob");
        let mut stream = stream_of("f.bin", &[1u8; 100]);
        stream.extend_from_slice(&[0; 10]);
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream);
        assert!(matches!(sink.state(), ReceiveState::Failed(_)));
        let mut sink2 = FileSink::new(&dir);
        sink2.stream_data(0, &stream[..50]);
        sink2.stream_data(10_000, &[0; 10]);
        assert!(matches!(sink2.state(), ReceiveState::Failed(_)));
        assert!(entries(&dir).is_empty());
    }

    #[test]
    fn the_trailer_is_not_readable_before_every_byte_was_read_and_hashed() {
        let dir = tempdir("notready");
        let data = pattern(3 * READ_AHEAD + 123, 1);
        let path = dir.join("f.bin");
        std::fs::write(&path, &data).unwrap();
        let mut source = FileSource::open(&path).unwrap();
        let (wake, woken) = wake_channel();
        source.set_wake(wake);
        let header_len = source.stream_len() - data.len() as u64 - TRAILER_LEN as u64;
        let data_end = header_len + data.len() as u64;
        assert_eq!(source.readable_len(), data_end);
        // Nothing was read: the trailer reads as "not available yet".
        let mut trailer = [0u8; TRAILER_LEN];
        assert_eq!(source.read_at(data_end, &mut trailer), 0);
        // The header and the first half, in order: the hash is not
        // complete, so the trailer still reads as "not available yet".
        let mut buf = vec![0u8; 1300];
        let half = header_len + data.len() as u64 / 2;
        let mut at = 0;
        while at < half {
            let n = source.read_at(at, &mut buf[..(half - at).min(1300) as usize]);
            assert!(n > 0);
            at += n as u64;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(source.digest(), None);
        assert_eq!(source.read_at(data_end, &mut trailer), 0);
        assert_eq!(source.readable_len(), data_end);
        assert!(woken.try_recv().is_err());
        // Read the rest in order, the last read across the end: it gives
        // the file's last bytes (and the trailer only if the hasher was
        // quick enough in between), then the hash completes and wakes the owner.
        while at < data_end {
            let n = source.read_at(at, &mut buf);
            let file_part = n.min((data_end - at) as usize);
            assert!(file_part > 0);
            assert_eq!(
                &buf[..file_part],
                &data[(at - header_len) as usize..][..file_part]
            );
            if n > file_part {
                let sent: [u8; TRAILER_LEN] = Sha256::digest(&data).into();
                assert_eq!(&buf[file_part..n], &sent[..n - file_part]);
            }
            at += file_part as u64;
        }
        assert_eq!(at, data_end);
        woken
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the hasher wakes its owner");
        let expected: [u8; TRAILER_LEN] = Sha256::digest(&data).into();
        assert_eq!(source.digest(), Some(expected));
        assert_eq!(source.readable_len(), source.stream_len());
        assert_eq!(source.read_at(data_end, &mut trailer), TRAILER_LEN);
        assert_eq!(trailer, expected);
        assert_eq!(source.digest_handle().get().unwrap().unwrap(), expected);
    }

    #[test]
    fn retransmitted_reads_are_not_hashed_again() {
        let dir = tempdir("retx");
        let data = pattern(5 * READ_AHEAD + 777, 2);
        let path = dir.join("f.bin");
        std::fs::write(&path, &data).unwrap();
        let mut source = FileSource::open(&path).unwrap();
        let total = source.stream_len();
        let data_end = total - TRAILER_LEN as u64;
        let mut buf = [0u8; 1300];
        let mut at = 0;
        let mut packets = 0u64;
        while at < data_end {
            let n = source.read_at(at, &mut buf[..(data_end - at).min(1300) as usize]);
            at += n as u64;
            packets += 1;
            // Every seventh packet, an old one is "lost" and read again,
            // some far behind (another read-ahead window).
            if packets.is_multiple_of(7) {
                let back = (packets * 104_729) % at;
                let mut again = [0u8; 1300];
                let m = source.read_at(back, &mut again);
                assert!(m > 0);
            }
        }
        let digest = *source.hasher.wait().unwrap().as_ref().unwrap();
        assert_eq!(digest, <[u8; TRAILER_LEN]>::from(Sha256::digest(&data)));
        assert_eq!(source.hasher.hashed(), data.len() as u64);
        // And the receiver checks it.
        let recv = tempdir("retx-recv");
        let mut sink = FileSink::new(&recv);
        assert_eq!(pump(&mut source, &mut sink, 1200), total);
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { .. }),
            "{:?}",
            sink.state()
        );
        assert_eq!(std::fs::read(recv.join("f.bin")).unwrap(), data);
    }

    #[test]
    fn a_file_that_shrinks_while_it_is_sent_never_gets_a_trailer() {
        let dir = tempdir("shrink");
        let data = pattern(2 * READ_AHEAD, 3);
        let path = dir.join("f.bin");
        std::fs::write(&path, &data).unwrap();
        let mut source = FileSource::open(&path).unwrap();
        let (wake, woken) = wake_channel();
        source.set_wake(wake);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let data_end = source.stream_len() - TRAILER_LEN as u64;
        let mut buf = [0u8; 1300];
        let mut at = 0;
        while at < data_end {
            let n = source.read_at(at, &mut buf[..(data_end - at).min(1300) as usize]);
            assert!(n > 0);
            at += n as u64;
        }
        woken
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the hasher wakes its owner");
        assert!(matches!(source.hash_error(), Some(HashError::Truncated)));
        assert_eq!(source.digest(), None);
        assert_eq!(source.read_at(data_end, &mut buf), 0);
        assert!(matches!(
            source.digest_handle().get(),
            Some(Err(HashError::Truncated))
        ));
    }

    #[test]
    fn the_receivers_hash_follows_the_contiguous_prefix_and_wakes_its_owner() {
        let dir = tempdir("prefix");
        let data = pattern(4 * HASH_WAKE_STEP as usize + 5, 4);
        let stream = stream_of("f.bin", &data);
        let header_len = stream.len() - data.len() - TRAILER_LEN;
        let half = header_len + data.len() / 2;
        let (wake, woken) = wake_channel();
        let mut sink = FileSink::with_wake(&dir, wake);
        // The trailer and the second half first: nothing is contiguous.
        sink.stream_data(
            (stream.len() - TRAILER_LEN) as u64,
            &stream[stream.len() - TRAILER_LEN..],
        );
        for (i, c) in stream[half..stream.len() - TRAILER_LEN]
            .chunks(1400)
            .enumerate()
        {
            sink.stream_data((half + i * 1400) as u64, c);
        }
        sink.stream_data(0, &stream[..header_len]);
        assert_eq!(sink.file_bytes_done(), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(sink.file_bytes_hashed(), 0);
        assert!(matches!(sink.state(), ReceiveState::Receiving { .. }));
        // The first half, in order but for one packet that comes last
        // (and, before it, a copy of a packet already in place).
        let first: Vec<(usize, &[u8])> = stream[header_len..half]
            .chunks(1400)
            .enumerate()
            .map(|(i, c)| (header_len + i * 1400, c))
            .collect();
        let (late, rest) = first.split_at(1);
        for (at, c) in rest {
            sink.stream_data(*at as u64, c);
        }
        assert_eq!(sink.file_bytes_done(), 0);
        sink.stream_data(rest[0].0 as u64, rest[0].1);
        sink.stream_data(late[0].0 as u64, late[0].1);
        assert_eq!(sink.file_bytes_done(), data.len() as u64);
        // Everything is in: the sink finishes once the hasher is done, and
        // the hasher wakes the owner so it polls.
        woken
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the hasher wakes its owner");
        sink.poll();
        match sink.state() {
            ReceiveState::Complete { digest, .. } => {
                assert_eq!(digest, &<[u8; TRAILER_LEN]>::from(Sha256::digest(&data)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.file_bytes_hashed(), data.len() as u64);
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), data);
        assert_eq!(entries(&dir), ["f.bin"]);
    }

    #[test]
    fn bytes_below_the_contiguous_prefix_are_never_written_again() {
        let dir = tempdir("rewrite");
        let data = pattern(50_000, 5);
        let stream = stream_of("f.bin", &data);
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream[..20_000]);
        // A copy overlapping the prefix whose old part differs (a confused
        // or hostile sender): only its new part is taken.
        let mut overlap = stream[19_900..20_100].to_vec();
        overlap[..100].fill(0xee);
        sink.stream_data(19_900, &overlap);
        sink.stream_data(20_100, &stream[20_100..]);
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { .. }),
            "{:?}",
            sink.state()
        );
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), data);
    }

    #[test]
    fn an_abort_after_every_byte_arrived_but_before_the_check_keeps_nothing() {
        let dir = tempdir("abort-late");
        let data = pattern(3 * HASH_CHUNK, 6);
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &stream_of("f.bin", &data));
        sink.abort("session ended");
        assert!(matches!(sink.state(), ReceiveState::Failed(_)));
        sink.wait();
        sink.poll();
        assert!(matches!(sink.state(), ReceiveState::Failed(_)));
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    }

    #[test]
    fn an_empty_file_is_sent_and_checked() {
        let src = tempdir("empty-src");
        let dir = tempdir("empty");
        let path = src.join("empty.txt");
        std::fs::write(&path, b"").unwrap();
        let mut source = FileSource::open(&path).unwrap();
        let mut sink = FileSink::new(&dir);
        assert_eq!(pump(&mut source, &mut sink, 1300), source.stream_len());
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { size: 0, .. }),
            "{:?}",
            sink.state()
        );
        assert_eq!(std::fs::read(dir.join("empty.txt")).unwrap(), b"");
    }

    #[test]
    fn in_order_bytes_are_written_in_batches_and_late_packets_still_join() {
        let dir = tempdir("batch");
        let data = pattern(3 * WRITE_BATCH + 999, 7);
        let stream = stream_of("f.bin", &data);
        let header_len = stream.len() - data.len() - TRAILER_LEN;
        let mut sink = FileSink::new(&dir);
        // Less than a batch in order: received, not yet written nor hashed.
        sink.stream_data(0, &stream[..header_len + 1000]);
        assert_eq!(sink.file_bytes_done(), 1000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(sink.file_bytes_hashed(), 0);
        // The rest in 1200-byte packets, every 37th held back to the end.
        let mut late = Vec::new();
        for (i, c) in stream[header_len + 1000..].chunks(1200).enumerate() {
            let at = (header_len + 1000 + i * 1200) as u64;
            if i % 37 == 5 {
                late.push((at, c));
            } else {
                sink.stream_data(at, c);
            }
        }
        assert!(sink.file_bytes_done() < data.len() as u64);
        for (at, c) in late {
            sink.stream_data(at, c);
        }
        assert_eq!(sink.file_bytes_done(), data.len() as u64);
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { .. }),
            "{:?}",
            sink.state()
        );
        assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), data);
    }
}
