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
//! The stream's layout is the core's (`tryst_core::peer::transfer`): the
//! transfer header (name and size), then the file's bytes, then their
//! 32-byte SHA-256.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
#[cfg(unix)]
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
/// Chunk used to hash data that reached the disk before the bytes in front of it.
const REHASH_CHUNK: usize = 64 * 1024;

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
    /// A file system operation failed.
    #[error("{0}")]
    Io(#[from] io::Error),
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
#[derive(Debug)]
pub struct FileSource {
    file: File,
    header: Vec<u8>,
    size: u64,
    digest: [u8; TRAILER_LEN],
    cache: Vec<u8>,
    cache_start: u64,
}

impl FileSource {
    /// Opens `path`, hashes it (one read of the whole file), and prepares
    /// the stream under the file's own name. Blocking: call it off the loop.
    pub fn open(path: &Path) -> Result<FileSource, CliError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CliError::usage(format!("{}: not a file name", path.display())))?;
        let mut file =
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
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CliError::failed(format!("{}: {e}", path.display()))),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        if size != meta.len() {
            return Err(CliError::failed(format!(
                "{}: changed while it was read",
                path.display()
            )));
        }
        Ok(FileSource {
            file,
            header,
            size,
            digest: hasher.finalize().into(),
            cache: Vec::new(),
            cache_start: 0,
        })
    }

    /// The file's size.
    pub fn file_size(&self) -> u64 {
        self.size
    }

    /// The file's SHA-256.
    pub fn digest(&self) -> [u8; TRAILER_LEN] {
        self.digest
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

    /// Fills `buf` with the stream's bytes at `offset`; how many (0 past the end).
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
                self.read_data(at - header_len, &mut out[..want])
            } else {
                copy_from(&self.digest, at - data_end, out)
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
            // A file that shrank since it was hashed: zeros, which the
            // receiver's checksum then refuses.
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
/// into a partial file in the receive directory; the contiguous prefix is
/// hashed as it grows.
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
    /// Received data ranges past `hashed` (file offsets, start → end).
    ranges: BTreeMap<u64, u64>,
    /// File bytes [0, hashed) are on disk and hashed.
    hashed: u64,
    hasher: Sha256,
    trailer: [u8; TRAILER_LEN],
    trailer_have: [bool; TRAILER_LEN],
    /// Highest stream offset seen + 1: bytes received, for progress.
    received: u64,
}

impl FileSink {
    /// A sink storing into `dir` (which [`check_recv_dir`] accepted).
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
            hashed: 0,
            hasher: Sha256::new(),
            trailer: [0; TRAILER_LEN],
            trailer_have: [false; TRAILER_LEN],
            received: 0,
        }
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

    /// File bytes hashed so far (the contiguous prefix on disk).
    pub fn file_bytes_done(&self) -> u64 {
        self.hashed
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

    /// The transfer was cut (session ended, peer lost): removes the partial file.
    pub fn abort(&mut self, why: &str) {
        if !self.is_done() {
            self.fail(TransferError::Io(io::Error::other(why.to_owned())));
        }
    }

    fn fail(&mut self, e: TransferError) {
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
        file.set_len(header.size)?;
        self.partial = Some((path, file));
        self.header_len = header.len as u64;
        self.size = header.size;
        self.state = ReceiveState::Receiving {
            name: header.name.clone(),
            size: header.size,
        };
        Ok(())
    }

    /// File bytes at `offset`: written, and hashed once contiguous.
    fn take_data(&mut self, offset: u64, data: &[u8]) -> Result<(), TransferError> {
        let end = offset + data.len() as u64;
        if end <= self.hashed {
            return Ok(());
        }
        let Some((_, file)) = self.partial.as_ref() else {
            return Err(TransferError::OutOfBounds);
        };
        file.write_all_at(data, offset)?;
        if offset <= self.hashed {
            let skip = (self.hashed - offset) as usize;
            self.hasher.update(&data[skip..]);
            self.hashed = end;
            self.catch_up()?;
        } else {
            self.add_range(offset, end)?;
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

    /// Hashes ranges already on disk that the prefix now reaches.
    fn catch_up(&mut self) -> Result<(), TransferError> {
        while let Some((&s, &e)) = self.ranges.first_key_value() {
            if s > self.hashed {
                break;
            }
            self.ranges.remove(&s);
            if e <= self.hashed {
                continue;
            }
            let Some((_, file)) = self.partial.as_ref() else {
                return Err(TransferError::OutOfBounds);
            };
            let mut buf = vec![0u8; REHASH_CHUNK];
            while self.hashed < e {
                let n = REHASH_CHUNK.min((e - self.hashed) as usize);
                file.read_exact_at(&mut buf[..n], self.hashed)?;
                self.hasher.update(&buf[..n]);
                self.hashed += n as u64;
            }
        }
        Ok(())
    }

    /// Every byte and the trailer arrived: check, store, or throw away.
    fn check_complete(&mut self) -> Result<(), TransferError> {
        if self.hashed < self.size || self.trailer_have.iter().any(|h| !h) {
            return Ok(());
        }
        let digest: [u8; TRAILER_LEN] = std::mem::take(&mut self.hasher).finalize().into();
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
        let stored = (|| {
            file.sync_all()?;
            drop(file);
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
        let mut offset = 0;
        let mut buf = [0u8; 1300];
        loop {
            let n = source.read_at(offset, &mut buf);
            if n == 0 {
                break;
            }
            sink.stream_data(offset, &buf[..n]);
            offset += n as u64;
        }
        assert_eq!(offset, source.stream_len());
        match sink.state() {
            ReceiveState::Complete { path, digest, size } => {
                assert_eq!(*size, data.len() as u64);
                assert_eq!(digest, &source.digest());
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
}
