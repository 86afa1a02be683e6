//! The receive side's files: the core's [`TransferReceiver`] decides where
//! each byte goes, when the prefix may be hashed and whether the file is
//! kept; this writes a fresh partial file in the receive directory (created
//! exclusively, with `O_NOFOLLOW`), batches in-order writes, hashes on a
//! [`PrefixHasher`] thread, keeps bytes that overtook the header when the
//! machine says so, and links the file under its final name (never
//! replacing anything) only after the digest matched.
//!
//! A resumable transfer (version 2 header, [`super::resume`]) keeps its
//! partial file when it is cut, with a record of the prefix it holds; the
//! same file from the same peer later continues it: the partial is
//! re-hashed up to the recorded length on the hasher thread, and only if
//! that matches is the length offered ([`FileSink::take_offer`]: the
//! share `Resume` message); otherwise the partial is overwritten from 0.

use std::fs::{File, OpenOptions};
use std::io;
#[cfg(unix)]
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tryst_core::peer::transfer::{
    ReceiveFailure, ReceivePhase, ReceiveStep, TransferReceiver, MAX_COLLISION_SUFFIX_LEN,
    TRAILER_LEN,
};

use super::hasher::{core_result, PrefixHasher, Wake, WakeSlot};
use super::resume::{
    self, PartialLimits, ResumeRecord, CHECKPOINT_STEP, MAX_RECORDS_SCANNED, RECORD_SUFFIX,
};
use super::PARTIAL_PREFIX;

/// In-order bytes the receive side gathers before it writes them in one
/// call (not one system call per packet).
pub const WRITE_BATCH: usize = 256 * 1024;
/// Most numbered names tried when the file's name is taken.
const MAX_NAME_TRIES: u32 = 1000;
// The longest numbered name (`.999`) stays within the suffix the core's
// name bound leaves room for, so every accepted name fits `NAME_MAX`.
const _: () = assert!(
    (MAX_NAME_TRIES - 1) < 10u32.pow(MAX_COLLISION_SUFFIX_LEN as u32 - 1),
    "the collision suffix outgrows MAX_COLLISION_SUFFIX_LEN"
);

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
    Failed(ReceiveFailure),
}

/// The receive side of one session: the core's [`TransferReceiver`] with
/// the partial file, the write batch, the hasher and the kept early bytes.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    machine: TransferReceiver,
    state: ReceiveState,
    partial: Option<(PathBuf, File)>,
    hasher: Option<PrefixHasher>,
    wake: WakeSlot,
    /// In-order bytes `[pending_start, pending_start + pending.len())` not yet written.
    pending: Vec<u8>,
    pending_start: u64,
    /// Copies of bytes that overtook the header (stream offset, bytes).
    held: Vec<(u64, Vec<u8>)>,
    /// The file system error behind a [`ReceiveFailure::Storage`].
    io_error: Option<Arc<io::Error>>,
    /// The sender's public key: a resumable transfer's partial is kept,
    /// and found again, under it.
    peer: Option<[u8; 32]>,
    /// A resumable transfer's record, written at checkpoints.
    record: Option<ResumeRecord>,
    /// The verified length last written to the record.
    recorded: u64,
    /// A partial being verified: the length and SHA-256 its record claims.
    verifying: Option<(u64, [u8; TRAILER_LEN])>,
    /// Where the sender's bytes start, to tell it, once decided.
    offer: Option<u64>,
    /// The offset a resumed transfer started at (what was already held).
    resumed_from: u64,
    /// What is kept of the peer's cut transfers.
    limits: PartialLimits,
}

impl FileSink {
    /// A sink storing into `dir` (which [`super::check_recv_dir`]
    /// accepted); the owner polls it ([`FileSink::poll`]) or waits
    /// ([`FileSink::wait`]) for the check once every byte arrived.
    pub fn new(dir: &Path) -> FileSink {
        FileSink {
            dir: dir.to_path_buf(),
            machine: TransferReceiver::new(),
            state: ReceiveState::AwaitingHeader,
            partial: None,
            hasher: None,
            wake: WakeSlot(None),
            pending: Vec::new(),
            pending_start: 0,
            held: Vec::new(),
            io_error: None,
            peer: None,
            record: None,
            recorded: 0,
            verifying: None,
            offer: None,
            resumed_from: 0,
            limits: PartialLimits::default(),
        }
    }

    /// What this receiver keeps of one peer's cut transfers (the default:
    /// [`PartialLimits::default`]); past it that peer's oldest partials go.
    pub fn set_limits(&mut self, limits: PartialLimits) {
        self.limits = limits;
    }

    /// The sender's public key (from the session): a resumable transfer
    /// from it keeps its partial when cut, and continues one it left.
    pub fn set_peer(&mut self, peer: [u8; 32]) {
        self.peer = Some(peer);
    }

    /// The offset to tell the sender of a resumable file (the share
    /// `Resume` message), once: what this side holds and verified, or 0.
    pub fn take_offer(&mut self) -> Option<u64> {
        self.offer.take()
    }

    /// The file offset a resumed transfer started at (0 if it was not).
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// A sink that calls `wake` when its hash is ready, so an event loop
    /// knows to [`FileSink::poll`] it.
    pub fn with_wake(dir: &Path, wake: Wake) -> FileSink {
        let mut sink = FileSink::new(dir);
        sink.wake = WakeSlot(Some(wake));
        sink
    }

    /// The core's machine of this transfer.
    pub fn receiver(&self) -> &TransferReceiver {
        &self.machine
    }

    /// Where the transfer stands.
    pub fn state(&self) -> &ReceiveState {
        &self.state
    }

    /// Why the transfer failed, in words (with the file system's error
    /// when there was one).
    pub fn failure_text(&self) -> Option<String> {
        match (&self.state, &self.io_error) {
            (ReceiveState::Failed(ReceiveFailure::Storage), Some(e)) => Some(format!("{e}")),
            (ReceiveState::Failed(why), _) => Some(why.to_string()),
            _ => None,
        }
    }

    /// Whether the file is stored and checked, or the transfer failed.
    pub fn is_done(&self) -> bool {
        self.machine.is_done()
    }

    /// File bytes received in order so far (the contiguous prefix).
    pub fn file_bytes_done(&self) -> u64 {
        self.machine.contiguous()
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
        self.machine.header().map(|h| h.size)
    }

    /// Stream bytes seen (the highest offset reached).
    pub fn stream_bytes(&self) -> u64 {
        self.machine.stream_bytes()
    }

    /// Stream bytes at `offset`.
    pub fn stream_data(&mut self, offset: u64, data: &[u8]) {
        let step = self.machine.stream_data(offset, data);
        let mut replay = self.apply(step, offset, data);
        // Bytes kept before the header: given back until none is taken anew.
        while replay {
            replay = false;
            for (at, bytes) in std::mem::take(&mut self.held) {
                let step = self.machine.stream_data(at, &bytes);
                let hold = step.hold;
                replay |= self.apply(step, at, &[]);
                if hold {
                    self.held.push((at, bytes));
                }
            }
        }
        self.settle();
        self.checkpoint(false);
    }

    /// Applies one step of the machine; whether it asks for a replay.
    /// `data` is the input, kept when the step says `hold` (an input
    /// already kept passes none: it is kept by the caller).
    fn apply(&mut self, step: ReceiveStep<'_>, offset: u64, data: &[u8]) -> bool {
        if let Err(e) = self.apply_io(&step, offset, data) {
            self.io_error = Some(Arc::new(e));
            self.machine.fail(ReceiveFailure::Storage);
            return false;
        }
        step.replay
    }

    fn apply_io(&mut self, step: &ReceiveStep<'_>, offset: u64, data: &[u8]) -> io::Result<()> {
        if step.accepted {
            self.start()?;
        }
        if step.hold && !data.is_empty() {
            self.held.push((offset, data.to_vec()));
        }
        if let Some(write) = step.write {
            let Some((_, file)) = self.partial.as_ref() else {
                return Err(io::Error::other("no partial file"));
            };
            let pending_end = self.pending_start + self.pending.len() as u64;
            if write.in_order && (self.pending.is_empty() || pending_end == write.offset) {
                if self.pending.is_empty() {
                    self.pending_start = write.offset;
                }
                self.pending.extend_from_slice(write.bytes);
                if self.pending.len() >= WRITE_BATCH {
                    self.flush()?;
                }
            } else {
                file.write_all_at(write.bytes, write.offset)?;
            }
        }
        if let Some(upto) = step.hash_to {
            self.flush()?;
            if let Some(hasher) = self.hasher.as_mut() {
                hasher.advance(upto);
            }
        }
        Ok(())
    }

    /// Writes the gathered in-order bytes.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some((_, file)) = self.partial.as_ref() else {
            return Err(io::Error::other("no partial file"));
        };
        file.write_all_at(&self.pending, self.pending_start)?;
        self.pending_start += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// The header was accepted: create the partial file and its hasher (or,
    /// for a resumable transfer this side holds part of, take that partial
    /// and verify its prefix).
    fn start(&mut self) -> io::Result<()> {
        let Some(header) = self.machine.header() else {
            return Err(io::Error::other("no header"));
        };
        let (name, size, mtime) = (header.name().to_owned(), header.size, header.mtime);
        let resumable = mtime.zip(self.peer);
        if let Some((mtime, peer)) = resumable {
            if let Some((path, file, record)) = self.find_partial(&peer, &name, size, mtime) {
                let hashed_file = file.try_clone();
                self.partial = Some((path, file));
                let mut hasher =
                    PrefixHasher::spawn(hashed_file?, size, true, self.wake.0.clone())?;
                hasher.advance_and_tell(record.verified);
                self.hasher = Some(hasher);
                self.verifying = Some((record.verified, record.prefix_sha256));
                self.recorded = record.verified;
                self.record = Some(record);
                self.state = ReceiveState::Receiving { name, size };
                return Ok(());
            }
        }
        let mut nonce = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let tag: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(format!(".tryst-partial-{tag}"));
        let mut options = OpenOptions::new();
        options.write(true).read(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        let file = options.open(&path)?;
        resume::claim(&path);
        // Kept before anything can fail, so a failure removes the file.
        let hashed_file = file.try_clone();
        self.partial = Some((path, file));
        self.hasher = Some(PrefixHasher::spawn(
            hashed_file?,
            size,
            true,
            self.wake.0.clone(),
        )?);
        if let Some((_, file)) = &self.partial {
            file.set_len(size)?;
        }
        if let Some((mtime, peer)) = resumable {
            self.record = Some(ResumeRecord {
                peer,
                name: name.clone(),
                size,
                mtime,
                verified: 0,
                prefix_sha256: [0; TRAILER_LEN],
            });
        }
        if self.machine.needs_offer() {
            let _ = self.machine.start_at(0);
            self.offer = Some(0);
        }
        self.state = ReceiveState::Receiving { name, size };
        Ok(())
    }

    /// A partial file of this transfer (same peer, name, size and mtime)
    /// that no other transfer holds, opened and claimed, with its record.
    fn find_partial(
        &self,
        peer: &[u8; 32],
        name: &str,
        size: u64,
        mtime: u64,
    ) -> Option<(PathBuf, File, ResumeRecord)> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        for entry in entries.flatten().take(MAX_RECORDS_SCANNED * 2) {
            let file_name = entry.file_name();
            let Some(partial_name) = file_name
                .to_str()
                .filter(|n| n.starts_with(PARTIAL_PREFIX))
                .and_then(|n| n.strip_suffix(RECORD_SUFFIX))
            else {
                continue;
            };
            let partial = self.dir.join(partial_name);
            let Some(record) = ResumeRecord::read(&partial) else {
                continue;
            };
            if !record.names(peer, name, size, mtime) || record.verified == 0 {
                continue;
            }
            let mut options = OpenOptions::new();
            options.write(true).read(true);
            #[cfg(unix)]
            options.custom_flags(libc::O_NOFOLLOW);
            let Ok(file) = options.open(&partial) else {
                continue;
            };
            let usable = file
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() == size);
            if usable && resume::claim(&partial) {
                return Some((partial, file, record));
            }
        }
        None
    }

    /// A partial being verified: once the hasher reached the recorded
    /// length, the offer (that length if its SHA-256 matches, else 0 and
    /// the partial is overwritten, hashed from the start again).
    fn verify(&mut self) -> io::Result<()> {
        let Some((verified, digest)) = self.verifying else {
            return Ok(());
        };
        let Some(hasher) = self.hasher.as_ref() else {
            return Ok(());
        };
        let (hashed, at) = hasher.checkpoint();
        let failed = matches!(hasher.result(), Some(Err(_)));
        if hashed < verified && !failed {
            return Ok(());
        }
        hasher.quiet();
        self.verifying = None;
        if hashed == verified && at == digest && !failed {
            let _ = self.machine.start_at(verified);
            self.offer = Some(verified);
            self.resumed_from = verified;
            tracing::info!(
                offset = verified,
                "resuming a cut transfer from the partial file"
            );
            return Ok(());
        }
        tracing::warn!("a partial file no longer matches its record: receiving it whole");
        self.hasher = None;
        let size = self.machine.header().map_or(0, |h| h.size);
        let Some((path, file)) = self.partial.as_ref() else {
            return Err(io::Error::other("no partial file"));
        };
        resume::remove_record(path);
        self.hasher = Some(PrefixHasher::spawn(
            file.try_clone()?,
            size,
            true,
            self.wake.0.clone(),
        )?);
        self.recorded = 0;
        if let Some(record) = self.record.as_mut() {
            record.verified = 0;
        }
        let _ = self.machine.start_at(0);
        self.offer = Some(0);
        Ok(())
    }

    /// Writes the record of a resumable transfer when the hashed prefix
    /// grew by [`CHECKPOINT_STEP`] (or at all, with `force`).
    fn checkpoint(&mut self, force: bool) {
        if self.verifying.is_some() {
            return;
        }
        let (Some(record), Some(hasher), Some((path, _))) = (
            self.record.as_mut(),
            self.hasher.as_ref(),
            self.partial.as_ref(),
        ) else {
            return;
        };
        let hashed = hasher.hashed();
        if hashed <= self.recorded || (!force && hashed < self.recorded + CHECKPOINT_STEP) {
            return;
        }
        let (verified, digest) = hasher.checkpoint();
        record.verified = verified;
        record.prefix_sha256 = digest;
        match record.write(path) {
            Ok(()) => self.recorded = verified,
            Err(e) => tracing::debug!(error = %e, "resume record not written"),
        }
    }

    /// Lets go of the partial file: kept with its record when the transfer
    /// was cut and is resumable (a verified prefix recorded), else removed.
    fn drop_partial(&mut self, cut: bool) {
        if cut {
            self.checkpoint(true);
        }
        let keep = cut && self.record.is_some() && self.verifying.is_none() && self.recorded > 0;
        if let Some((path, file)) = self.partial.take() {
            drop(file);
            // Within the peer's cap: its oldest kept partials make room.
            let keep = keep
                && self
                    .record
                    .as_ref()
                    .is_some_and(|r| resume::make_room(&self.dir, &r.peer, &path, self.limits));
            if !keep {
                let _ = std::fs::remove_file(&path);
                resume::remove_record(&path);
            }
            resume::release(&path);
        }
    }

    /// Finishes the transfer if every byte arrived and the hash is ready:
    /// checked, then stored or thrown away. Cheap; call it on every wake.
    pub fn poll(&mut self) {
        if let Err(e) = self.verify() {
            self.io_error = Some(Arc::new(e));
            self.machine.fail(ReceiveFailure::Storage);
        }
        if self.machine.phase() == ReceivePhase::Checking {
            if let Some(result) = self.hasher.as_ref().and_then(PrefixHasher::result) {
                let result = core_result(result);
                self.machine.digest(result);
            }
        }
        if self.machine.phase() == ReceivePhase::Verified {
            match self.store() {
                Ok(path) => {
                    self.machine.stored();
                    if let (Some(header), Some(digest)) =
                        (self.machine.header(), self.machine.trailer())
                    {
                        self.state = ReceiveState::Complete {
                            path,
                            digest,
                            size: header.size,
                        };
                    }
                }
                Err(e) => {
                    self.io_error = Some(Arc::new(e));
                    self.machine.fail(ReceiveFailure::Storage);
                }
            }
        }
        self.settle();
    }

    /// Like [`FileSink::poll`], but once every byte arrived it blocks until
    /// the hash is ready, so the transfer is then done.
    pub fn wait(&mut self) {
        if self.machine.phase() != ReceivePhase::Checking {
            return;
        }
        if let Some(hasher) = &self.hasher {
            hasher.wait();
        }
        self.poll();
    }

    /// The transfer was cut (session ended, peer lost): removes the partial file.
    pub fn abort(&mut self) {
        self.machine.abort();
        self.settle();
    }

    /// Follows the machine: a failed transfer keeps nothing; a finished
    /// check is stored.
    fn settle(&mut self) {
        match self.machine.phase() {
            ReceivePhase::Failed(why) if !matches!(self.state, ReceiveState::Failed(_)) => {
                // What arrived in order is kept for a resume when cut.
                let cut = why == ReceiveFailure::Cut;
                if cut && self.flush().is_ok() {
                    if let Some(hasher) = self.hasher.as_mut() {
                        hasher.advance(self.machine.contiguous());
                    }
                }
                self.drop_partial(cut);
                self.hasher = None;
                self.pending = Vec::new();
                self.held = Vec::new();
                self.state = ReceiveState::Failed(why);
            }
            // Every byte is in (and, by the machine's last `hash_to`, on
            // disk): the hash may already be done (an empty file).
            ReceivePhase::Checking
                if self.hasher.as_ref().is_some_and(|h| h.result().is_some()) =>
            {
                self.poll();
            }
            _ => {}
        }
    }

    /// Links the verified partial file under its name and removes the
    /// partial name.
    fn store(&mut self) -> io::Result<PathBuf> {
        self.hasher = None;
        let Some((partial, file)) = self.partial.take() else {
            return Err(io::Error::other("no partial file"));
        };
        drop(file);
        let name = match self.machine.header() {
            Some(header) => header.name().to_owned(),
            None => return Err(io::Error::other("no header")),
        };
        let stored = (|| {
            let (folder, leaf) = make_folders(&self.dir, &name)?;
            let path = link_no_clobber(&partial, &folder, leaf)?;
            std::fs::remove_file(&partial)?;
            resume::remove_record(&partial);
            resume::release(&partial);
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            Ok::<_, io::Error>(path)
        })();
        if stored.is_err() {
            let _ = std::fs::remove_file(&partial);
            resume::remove_record(&partial);
            resume::release(&partial);
        }
        stored
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // A transfer still running when its terminal stops (Ctrl-C of the
        // daemon) counts as cut: a resumable one keeps what it holds.
        let cut = !self.machine.is_done();
        if cut && self.flush().is_ok() {
            if let Some(hasher) = self.hasher.as_mut() {
                hasher.advance(self.machine.contiguous());
            }
        }
        self.drop_partial(cut);
    }
}

/// The folder a file called `name` (a relative path, checked by the core)
/// goes in under `dir`, created (mode 0700) component by component where
/// missing, and its leaf name. A component that exists must be a real
/// folder: a symlink or a file there refuses the file (nothing is followed
/// out of `dir`).
fn make_folders<'n>(dir: &Path, name: &'n str) -> io::Result<(PathBuf, &'n str)> {
    let (folders, leaf) = match name.rsplit_once('/') {
        Some((folders, leaf)) => (Some(folders), leaf),
        None => (None, name),
    };
    let mut at = dir.to_path_buf();
    for component in folders.into_iter().flat_map(|f| f.split('/')) {
        at.push(component);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(&at)?;
        if !meta.file_type().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{component}: exists and is not a folder"),
            ));
        }
    }
    Ok((at, leaf))
}

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
