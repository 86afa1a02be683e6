//! SHA-256 of a file's prefix on a thread of its own: the owner says how far
//! the bytes are in place, the thread reads them back by offset (from the
//! page cache) and hashes each byte once, in order.

use std::fs::File;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};
use tryst_core::peer::transfer::{HashFailure, TRAILER_LEN};

/// Most bytes a hasher thread reads back from the file at once.
pub const HASH_CHUNK: usize = 1024 * 1024;
/// A hasher thread is woken each time this many more bytes are in place
/// (and at the end), not on every packet.
pub const HASH_WAKE_STEP: u64 = 256 * 1024;

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
pub(crate) struct WakeSlot(pub(crate) Option<Wake>);

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
    /// The digest of the prefix hashed so far (its length and SHA-256),
    /// after every chunk: what a resumable receiver records.
    checkpoint: Mutex<(u64, [u8; TRAILER_LEN])>,
    /// Call the wake at every checkpoint, not only at the end.
    wake_on_checkpoint: AtomicBool,
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
            checkpoint: Mutex::new((0, Sha256::new().finalize().into())),
            wake_on_checkpoint: AtomicBool::new(false),
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

    /// File bytes `[0, upto)` are in place: as [`PrefixHasher::advance`],
    /// and the thread is woken now, and wakes the owner at every
    /// checkpoint until [`PrefixHasher::quiet`] (a receiver verifying a
    /// partial file's prefix waits for the checkpoint at `upto`).
    pub fn advance_and_tell(&mut self, upto: u64) {
        self.shared
            .wake_on_checkpoint
            .store(true, Ordering::Release);
        self.advance(upto);
        self.woken_at = self.target;
        self.thread.unpark();
    }

    /// The owner is woken at the end only again.
    pub fn quiet(&self) {
        self.shared
            .wake_on_checkpoint
            .store(false, Ordering::Release);
    }

    /// The last checkpoint: the length of the prefix hashed and its SHA-256.
    pub fn checkpoint(&self) -> (u64, [u8; TRAILER_LEN]) {
        *self
            .shared
            .checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
                let digest: [u8; TRAILER_LEN] = hasher.clone().finalize().into();
                *shared
                    .checkpoint
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = (hashed, digest);
                shared.hashed.store(hashed, Ordering::Release);
                if shared.wake_on_checkpoint.load(Ordering::Acquire) {
                    let wake = shared.wake.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(wake) = wake.as_ref() {
                        wake();
                    }
                }
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

impl HashError {
    /// The core's view of the failure.
    pub fn failure(&self) -> HashFailure {
        match self {
            HashError::Truncated => HashFailure::Truncated,
            HashError::Io(_) | HashError::Cancelled => HashFailure::Unreadable,
        }
    }
}

/// A hasher's result as the core machines take it.
pub fn core_result(
    result: &Result<[u8; TRAILER_LEN], HashError>,
) -> Result<[u8; TRAILER_LEN], HashFailure> {
    result.as_ref().map(|d| *d).map_err(HashError::failure)
}
