//! Files over the peer stream, for every std driver: the send side reads
//! the file by offset, the receive side writes what a peer sends into a
//! receive directory and keeps it only if its SHA-256 matches. The
//! decisions (what each stream offset is, throttling, where bytes go, when
//! to hash, the verdict, when the session ends) are the core's
//! (`tryst_core::peer::transfer`); this layer holds the files and threads.
//!
//! A file from a peer is untrusted input even from a permitted peer:
//! - its name can never leave the receive directory (the core's
//!   [`check_file_name`]);
//! - it is written under a fresh partial name (created exclusively, with
//!   `O_NOFOLLOW`, so no symlink is ever followed), flushed to disk, and
//!   only then linked under its final name; an existing file is never
//!   replaced (a numbered name is taken instead);
//! - the partial file is removed on any failure, so nothing is left under
//!   the final name that was not checked; only a resumable transfer that
//!   was cut keeps its hidden partial, with a record of what it holds
//!   ([`resume`]), for the same file from the same peer to continue.
//!
//! SHA-256 never runs on the event loop: on each side a [`PrefixHasher`]
//! thread reads back, from the file (the page cache), the prefix the
//! machine says is in place, each byte once and in order.

use std::path::{Path, PathBuf};

mod hasher;
mod incoming;
pub mod live;
pub mod resume;
pub mod share;
mod sink;
mod source;

pub use hasher::{
    file_sha256, FileDigest, HashError, PrefixHasher, Wake, HASH_CHUNK, HASH_WAKE_STEP,
};
pub use incoming::Incoming;
pub use resume::{PartialLimits, DEFAULT_MAX_PARTIALS, DEFAULT_MAX_PARTIAL_BYTES};
pub use sink::{FileSink, ReceiveState, WRITE_BATCH};
pub use source::{FileSource, OpenError, READ_AHEAD};
pub use tryst_core::peer::transfer::{
    check_file_name, ReceiveFailure, MAX_FILE_NAME_LEN, MAX_HEADER_LEN, TRAILER_LEN,
};

/// Why a receive directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecvDirError {
    /// It was missing and could not be created.
    #[error("cannot create receive dir {0}: {1}")]
    Create(PathBuf, std::io::Error),
    /// It is not a directory.
    #[error("receive dir {0} is not a directory")]
    NotADirectory(PathBuf),
    /// No file can be created in it (permissions, a read-only mount).
    #[error("receive dir {0} is not writable: {1}")]
    NotWritable(PathBuf, std::io::Error),
}

/// The receive directory: created (mode 0700) if missing, and a directory.
pub fn check_recv_dir(dir: &Path) -> Result<(), RecvDirError> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| RecvDirError::Create(dir.to_path_buf(), e))?;
    }
    if !dir.is_dir() {
        return Err(RecvDirError::NotADirectory(dir.to_path_buf()));
    }
    // Refused at start, not at the first file: a file is created (and
    // removed at once) the way a transfer's partial file would be, so a
    // read-only mount or a folder of another user is caught too.
    tempfile::Builder::new()
        .prefix(PROBE_PREFIX)
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| RecvDirError::NotWritable(dir.to_path_buf(), e))
}

/// The prefix of the file [`check_recv_dir`] creates and removes at once.
const PROBE_PREFIX: &str = ".tryst-probe-";

/// The prefix of every partial file a receiving terminal writes.
pub const PARTIAL_PREFIX: &str = ".tryst-partial-";

/// Removes the partial files of transfers that cannot resume from `dir`,
/// as a terminal starts; how many partial files (their records not counted). A terminal killed mid-transfer (a
/// `kill -9`, a power cut) runs no cleanup, so this is where they go:
/// - a partial with a record ([`resume::ResumeRecord`]) that parses, whose
///   file has the recorded size, and that was written within
///   [`resume::PARTIAL_MAX_AGE`], stays: the same file from the same peer
///   continues it;
/// - every other `.tryst-partial-*` regular file goes (no record, a torn or
///   changed one, too old, a version 1 transfer's), and so does a record
///   or a half-written record whose partial is gone.
///
/// Partials a transfer of this process holds are left alone; only regular
/// files are touched (never a symlink's target).
pub fn sweep_partials(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(PARTIAL_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if let Some(partial) = name
            .strip_suffix(resume::RECORD_TMP_SUFFIX)
            .or_else(|| name.strip_suffix(resume::RECORD_SUFFIX))
        {
            // A record: it goes with its partial, or when that is gone.
            if !dir.join(partial).is_file() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if resume::in_use(&path) || resumable(&path) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            swept += 1;
        }
        resume::remove_record(&path);
    }
    swept
}

/// Whether the partial file `partial` can still resume: its record parses,
/// its size is the recorded one, and the record is recent enough.
fn resumable(partial: &Path) -> bool {
    let Some(record) = resume::ResumeRecord::read(partial) else {
        return false;
    };
    let fresh = std::fs::metadata(resume::record_path(partial))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age <= resume::PARTIAL_MAX_AGE);
    let sized =
        std::fs::symlink_metadata(partial).is_ok_and(|m| m.is_file() && m.len() == record.size);
    fresh && sized && record.verified > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::fs::OpenOptions;
    use std::sync::{Arc, Mutex};
    use tryst_core::peer::transfer::TransferHeader;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn encode_header(name: &str, size: u64) -> Option<Vec<u8>> {
        let header = TransferHeader::new(name, size).ok()?;
        let mut out = vec![0u8; header.encoded_len()];
        header.encode(&mut out).ok()?;
        Some(out)
    }

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
                source.hasher().wait();
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

    /// The version 2 stream of `data` from file offset `from`.
    fn resumable_stream(name: &str, data: &[u8], mtime: u64, from: usize) -> (Vec<u8>, usize) {
        let header = TransferHeader::new(name, data.len() as u64)
            .unwrap()
            .resumable(mtime);
        let mut s = vec![0u8; header.encoded_len()];
        header.encode(&mut s).unwrap();
        let hl = s.len();
        s.extend_from_slice(&data[from..]);
        s.extend_from_slice(&Sha256::digest(data));
        (s, hl)
    }

    /// Polls `sink` until it has an offer for the sender.
    fn offer_of(sink: &mut FileSink) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            sink.poll();
            if let Some(offset) = sink.take_offer() {
                return offset;
            }
            assert!(std::time::Instant::now() < deadline, "no offer");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Receives `data` up to about `cut` bytes from `peer` and cuts it:
    /// the partial and its record stay.
    fn cut_transfer(dir: &Path, peer: [u8; 32], data: &[u8], cut: usize) {
        let past_checkpoint = resume::CHECKPOINT_STEP + 1;
        let limits = PartialLimits::default();
        cut_named(dir, peer, "big.bin", data, cut, limits, past_checkpoint);
    }

    /// Receives about `cut` bytes of `name` from `peer` under `limits`, once
    /// `hashed` bytes are hashed, and cuts it.
    fn cut_named(
        dir: &Path,
        peer: [u8; 32],
        name: &str,
        data: &[u8],
        cut: usize,
        limits: PartialLimits,
        hashed: u64,
    ) {
        let (s, hl) = resumable_stream(name, data, 42, 0);
        let mut sink = FileSink::new(dir);
        sink.set_peer(peer);
        sink.set_limits(limits);
        sink.stream_data(0, &s[..hl]);
        assert_eq!(offer_of(&mut sink), 0);
        for (i, c) in s[hl..hl + cut].chunks(1200).enumerate() {
            sink.stream_data((hl + i * 1200) as u64, c);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sink.file_bytes_hashed() < hashed {
            assert!(std::time::Instant::now() < deadline, "not hashed");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        sink.abort();
        // Distinct record times, so "oldest" is well defined.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    /// The partials kept in `dir` for `peer`, by name as sent.
    fn kept_of(dir: &Path, peer: [u8; 32]) -> Vec<String> {
        let mut names: Vec<String> = entries(dir)
            .iter()
            .filter_map(|n| n.strip_suffix(resume::RECORD_SUFFIX))
            .map(|p| dir.join(p))
            .filter(|p| p.is_file())
            .filter_map(|p| resume::ResumeRecord::read(&p))
            .filter(|r| r.peer == peer)
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_peers_kept_partials_are_capped_its_oldest_go_and_another_peers_stay() {
        let dir = tempdir("cap");
        let data = pattern(1 << 20, 13);
        let two = PartialLimits {
            files: 2,
            bytes: u64::MAX,
        };
        cut_named(&dir, [2; 32], "b-first.bin", &data, 600_000, two, 300_000);
        for name in ["a1.bin", "a2.bin", "a3.bin"] {
            cut_named(&dir, [1; 32], name, &data, 600_000, two, 300_000);
        }
        // Peer 1's oldest went; peer 2's one partial (older than all) stayed.
        assert_eq!(kept_of(&dir, [1; 32]), ["a2.bin", "a3.bin"]);
        assert_eq!(kept_of(&dir, [2; 32]), ["b-first.bin"]);
        assert_eq!(entries(&dir).len(), 6, "{:?}", entries(&dir));
        // Every remaining partial still resumes (the sweep keeps them).
        assert_eq!(sweep_partials(&dir), 0);

        // A byte cap: room for one and a half partials keeps the newest.
        let dir = tempdir("cap-bytes");
        cut_named(
            &dir,
            [1; 32],
            "a1.bin",
            &data,
            600_000,
            PartialLimits::default(),
            300_000,
        );
        let one = entries(&dir)
            .iter()
            .find(|n| !n.ends_with(resume::RECORD_SUFFIX))
            .map(|n| {
                std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(dir.join(n)).unwrap())
                    * 512
            })
            .unwrap();
        assert!(one > 0);
        let bytes = PartialLimits {
            files: 16,
            bytes: one + one / 2,
        };
        cut_named(&dir, [1; 32], "a2.bin", &data, 600_000, bytes, 300_000);
        assert_eq!(kept_of(&dir, [1; 32]), ["a2.bin"]);
        // A partial larger than the whole cap is not kept, and takes nothing.
        let tiny = PartialLimits {
            files: 16,
            bytes: one / 2,
        };
        cut_named(&dir, [1; 32], "a3.bin", &data, 600_000, tiny, 300_000);
        assert_eq!(kept_of(&dir, [1; 32]), ["a2.bin"]);
        assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
    }

    #[test]
    fn a_cut_resumable_transfer_keeps_its_partial_and_the_next_one_resumes_from_it() {
        let dir = tempdir("resume");
        let data = pattern(3 * resume::CHECKPOINT_STEP as usize + 5000, 11);
        cut_transfer(
            &dir,
            [1; 32],
            &data,
            2 * resume::CHECKPOINT_STEP as usize + 777,
        );
        assert_eq!(
            entries(&dir).len(),
            2,
            "the partial and its record: {:?}",
            entries(&dir)
        );
        // The sweep at a terminal's start keeps a resumable partial.
        assert_eq!(sweep_partials(&dir), 0);
        assert_eq!(entries(&dir).len(), 2);
        // The same file from the same peer: offered from what is held.
        let mut sink = FileSink::new(&dir);
        sink.set_peer([1; 32]);
        let (head, hl) = resumable_stream("big.bin", &data, 42, 0);
        sink.stream_data(0, &head[..hl]);
        let offset = offer_of(&mut sink) as usize;
        assert!(offset > resume::CHECKPOINT_STEP as usize, "{offset}");
        assert!(offset <= 2 * resume::CHECKPOINT_STEP as usize + 777);
        assert_eq!(sink.resumed_from(), offset as u64);
        let (s, _) = resumable_stream("big.bin", &data, 42, offset);
        for (i, c) in s[hl..].chunks(1200).enumerate() {
            sink.stream_data((hl + i * 1200) as u64, c);
        }
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { .. }),
            "{:?}",
            sink.failure_text()
        );
        assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), data);
        assert_eq!(entries(&dir), ["big.bin"], "partial and record are gone");
    }

    #[test]
    fn a_tampered_partial_or_another_peer_or_file_is_not_resumed() {
        let dir = tempdir("resume-no");
        let data = pattern(3 * resume::CHECKPOINT_STEP as usize, 12);
        cut_transfer(
            &dir,
            [1; 32],
            &data,
            2 * resume::CHECKPOINT_STEP as usize + 10,
        );
        let (head, hl) = resumable_stream("big.bin", &data, 42, 0);
        // Another peer, or another mtime: offered 0, the partial untouched.
        for (peer, mtime) in [([2; 32], 42), ([1; 32], 43)] {
            let mut sink = FileSink::new(&dir);
            sink.set_peer(peer);
            let (h, _) = resumable_stream("big.bin", &data, mtime, 0);
            sink.stream_data(0, &h[..hl]);
            assert_eq!(offer_of(&mut sink), 0);
            drop(sink);
        }
        assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));
        // A byte of the partial changed on disk: offered 0, and the file
        // still arrives whole and right.
        let partial = entries(&dir)
            .into_iter()
            .find(|n| !n.ends_with(resume::RECORD_SUFFIX))
            .unwrap();
        let file = OpenOptions::new()
            .write(true)
            .open(dir.join(&partial))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"X", 1000).unwrap();
        drop(file);
        let mut sink = FileSink::new(&dir);
        sink.set_peer([1; 32]);
        sink.stream_data(0, &head[..hl]);
        assert_eq!(offer_of(&mut sink), 0);
        for (i, c) in head[hl..].chunks(1200).enumerate() {
            sink.stream_data((hl + i * 1200) as u64, c);
        }
        sink.wait();
        assert!(
            matches!(sink.state(), ReceiveState::Complete { .. }),
            "{:?}",
            sink.failure_text()
        );
        assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), data);
        assert_eq!(entries(&dir), ["big.bin"]);
    }

    #[test]
    fn the_sweep_removes_partials_that_cannot_resume_and_keeps_the_rest() {
        let dir = tempdir("sweep");
        let data = pattern(3 * resume::CHECKPOINT_STEP as usize, 13);
        cut_transfer(
            &dir,
            [1; 32],
            &data,
            2 * resume::CHECKPOINT_STEP as usize + 10,
        );
        // A partial without a record (a version 1 transfer, a kill before
        // the first checkpoint), a record whose partial is gone, a torn one.
        std::fs::write(dir.join(".tryst-partial-0000"), b"x").unwrap();
        std::fs::write(dir.join(".tryst-partial-1111.resume"), b"y").unwrap();
        std::fs::write(dir.join(".tryst-partial-2222"), b"z").unwrap();
        std::fs::write(dir.join(".tryst-partial-2222.resume"), b"torn").unwrap();
        std::fs::write(dir.join("kept.txt"), b"mine").unwrap();
        assert_eq!(sweep_partials(&dir), 2, "{:?}", entries(&dir));
        let left = entries(&dir);
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&"kept.txt".to_owned()));
        // A record older than the limit: its partial goes too.
        let record = left
            .iter()
            .find(|n| n.ends_with(resume::RECORD_SUFFIX))
            .unwrap();
        let old = std::time::SystemTime::now()
            - resume::PARTIAL_MAX_AGE
            - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(dir.join(record))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(sweep_partials(&dir), 1, "{:?}", entries(&dir));
        assert_eq!(entries(&dir), ["kept.txt"]);
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
            "invoice\u{202e}txt.exe",
            "zero\u{200b}width",
            &"x".repeat(252),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["photo.jpg", "a b c.txt", "résumé.pdf", "x..y"] {
            assert!(check_file_name(good).is_ok(), "{good:?} refused");
        }
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
        sink.abort();
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
    fn the_longest_accepted_name_is_stored_even_when_taken() {
        use tryst_core::peer::transfer::{MAX_STORED_FILE_NAME_LEN, NAME_MAX};
        let dir = tempdir("namemax");
        let name = "n".repeat(MAX_STORED_FILE_NAME_LEN);
        for round in 1..=3u8 {
            let mut sink = FileSink::new(&dir);
            sink.stream_data(0, &stream_of(&name, &[round; 10]));
            sink.wait();
            assert!(
                matches!(sink.state(), ReceiveState::Complete { .. }),
                "round {round}: {:?}",
                sink.failure_text()
            );
        }
        let stored = entries(&dir);
        assert_eq!(
            stored,
            [name.clone(), format!("{name}.1"), format!("{name}.2")]
        );
        assert!(stored.iter().all(|n| n.len() <= NAME_MAX));
        // One byte more is refused at the offer, before any file exists.
        let too_long = "n".repeat(MAX_STORED_FILE_NAME_LEN + 1);
        let mut header = b"TF\x01".to_vec();
        header.push(u8::try_from(too_long.len()).unwrap());
        header.extend_from_slice(too_long.as_bytes());
        header.extend_from_slice(&10u64.to_be_bytes());
        let mut sink = FileSink::new(&dir);
        sink.stream_data(0, &header);
        sink.wait();
        assert!(matches!(sink.state(), ReceiveState::Failed(_)));
        assert_eq!(entries(&dir).len(), 3);
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
        let digest = *source.hasher().wait().unwrap().as_ref().unwrap();
        assert_eq!(digest, <[u8; TRAILER_LEN]>::from(Sha256::digest(&data)));
        assert_eq!(source.hasher().hashed(), data.len() as u64);
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
        sink.abort();
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
