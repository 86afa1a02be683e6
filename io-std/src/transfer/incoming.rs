//! What a peer sends on a session's stream, routed by its first two bytes
//! (the core's [`StreamKind::classify`]): a file goes to a [`FileSink`]
//! (when this terminal takes files), a share message to the core's
//! [`MessageReader`]. Bytes that overtake the first two are kept (at most
//! [`MAX_EARLY_BYTES`]) and replayed once the kind is known.

use std::path::{Path, PathBuf};

use tryst_core::peer::share::{MessageReader, ShareError, ShareMessage, StreamKind};
use tryst_core::peer::transfer::receive::MAX_EARLY_BYTES;

use super::{FileSink, PartialLimits, Wake};

/// Where a session's incoming stream goes.
pub enum Incoming {
    /// The first two bytes have not arrived.
    Undecided {
        /// Where files would go (`None`: files are refused).
        recv_dir: Option<PathBuf>,
        /// What wakes the loop when a file's hash is done.
        wake: Wake,
        /// The first bytes, as far as they arrived in order.
        prefix: [u8; 2],
        /// How many of them.
        have: usize,
        /// Copies of what came past them.
        held: Vec<(u64, Vec<u8>)>,
        /// Their bytes.
        held_bytes: usize,
        /// The sender's public key, for a resumable file.
        peer: Option<[u8; 32]>,
        /// What is kept of the sender's cut transfers.
        limits: PartialLimits,
    },
    /// A file.
    File(Box<FileSink>),
    /// A share message.
    Message(Box<MessageReader>),
    /// A file to a terminal that takes none.
    Stray,
    /// Bytes that are neither, or too many before the first two.
    Bad(ShareError),
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incoming::Undecided {
                have, held_bytes, ..
            } => f
                .debug_struct("Undecided")
                .field("have", have)
                .field("held_bytes", held_bytes)
                .finish_non_exhaustive(),
            Incoming::File(sink) => f.debug_tuple("File").field(sink).finish(),
            Incoming::Message(reader) => f.debug_tuple("Message").field(reader).finish(),
            Incoming::Stray => f.write_str("Stray"),
            Incoming::Bad(e) => f.debug_tuple("Bad").field(e).finish(),
        }
    }
}

/// Extends the in-order first bytes with `data` at `offset`, if it continues them.
fn extend_prefix(prefix: &mut [u8; 2], have: &mut usize, offset: u64, data: &[u8]) {
    let end = offset.saturating_add(data.len() as u64);
    let at = *have as u64;
    if offset <= at && end > at {
        let from = (at - offset) as usize;
        let n = (2 - *have).min(data.len() - from);
        prefix[*have..*have + n].copy_from_slice(&data[from..from + n]);
        *have += n;
    }
}

impl Incoming {
    /// A stream not yet started; files go to `recv_dir` (refused without one).
    pub fn new(recv_dir: Option<&Path>, wake: Wake) -> Incoming {
        Incoming::Undecided {
            recv_dir: recv_dir.map(Path::to_path_buf),
            wake,
            prefix: [0; 2],
            have: 0,
            held: Vec::new(),
            held_bytes: 0,
            peer: None,
            limits: PartialLimits::default(),
        }
    }

    /// What a file's receiver keeps of the sender's cut transfers (before
    /// any byte arrived).
    pub fn set_limits(&mut self, value: PartialLimits) {
        if let Incoming::Undecided { limits, .. } = self {
            *limits = value;
        }
    }

    /// The peer's public key: a resumable file from it keeps its partial
    /// when cut and continues one it left (before any byte arrived).
    pub fn set_peer(&mut self, key: [u8; 32]) {
        if let Incoming::Undecided { peer, .. } = self {
            *peer = Some(key);
        }
    }

    /// Stream bytes at `offset`.
    pub fn stream_data(&mut self, offset: u64, data: &[u8]) {
        match self {
            Incoming::File(sink) => sink.stream_data(offset, data),
            Incoming::Message(reader) => {
                let _ = reader.stream_data(offset, data);
            }
            Incoming::Stray | Incoming::Bad(_) => {}
            Incoming::Undecided {
                recv_dir,
                wake,
                prefix,
                have,
                held,
                held_bytes,
                peer,
                limits,
            } => {
                if data.is_empty() {
                    return;
                }
                extend_prefix(prefix, have, offset, data);
                // Kept copies may continue the prefix now.
                let mut grown = true;
                while grown && *have < 2 {
                    let before = *have;
                    for (at, bytes) in held.iter() {
                        extend_prefix(prefix, have, *at, bytes);
                    }
                    grown = *have > before;
                }
                match StreamKind::classify(&prefix[..*have]) {
                    Err(e) => *self = Incoming::Bad(e),
                    Ok(None) => {
                        *held_bytes = held_bytes.saturating_add(data.len());
                        if *held_bytes > MAX_EARLY_BYTES {
                            *self = Incoming::Bad(ShareError::PastEnd);
                        } else {
                            held.push((offset, data.to_vec()));
                        }
                    }
                    Ok(Some(kind)) => {
                        let held = std::mem::take(held);
                        let mut next = match (kind, recv_dir.as_deref()) {
                            (StreamKind::File, Some(dir)) => {
                                let mut sink = FileSink::with_wake(dir, wake.clone());
                                sink.set_limits(*limits);
                                if let Some(key) = peer {
                                    sink.set_peer(*key);
                                }
                                Incoming::File(Box::new(sink))
                            }
                            (StreamKind::File, None) => Incoming::Stray,
                            (StreamKind::Message, _) => {
                                Incoming::Message(Box::new(MessageReader::new()))
                            }
                        };
                        next.stream_data(offset, data);
                        for (at, bytes) in held {
                            next.stream_data(at, &bytes);
                        }
                        *self = next;
                    }
                }
            }
        }
    }

    /// The file being received, once the stream is one.
    pub fn sink(&self) -> Option<&FileSink> {
        match self {
            Incoming::File(sink) => Some(&**sink),
            _ => None,
        }
    }

    /// The file being received, once the stream is one.
    pub fn sink_mut(&mut self) -> Option<&mut FileSink> {
        match self {
            Incoming::File(sink) => Some(&mut **sink),
            _ => None,
        }
    }

    /// The whole share message, once it arrived (or why it is refused).
    pub fn message(&self) -> Option<Result<ShareMessage<'_>, ShareError>> {
        match self {
            Incoming::Message(reader) => reader.message(),
            Incoming::Bad(e) => Some(Err(*e)),
            _ => None,
        }
    }

    /// The share message starting at stream offset `start` (messages come
    /// back to back), with its end, once all of it arrived.
    pub fn message_at(
        &self,
        start: usize,
    ) -> Option<Result<(ShareMessage<'_>, usize), ShareError>> {
        match self {
            Incoming::Message(reader) => reader.message_at(start),
            Incoming::Bad(e) => Some(Err(*e)),
            _ => None,
        }
    }

    /// A file came to a terminal that takes none.
    pub fn is_stray(&self) -> bool {
        matches!(self, Incoming::Stray)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tryst_core::peer::share::vectors;

    #[test]
    fn a_message_whose_first_bytes_come_last_is_read() {
        let mut incoming = Incoming::new(None, Arc::new(|| {}));
        let get = vectors::GET;
        incoming.stream_data(5, &get[5..]);
        incoming.stream_data(1, &get[1..5]);
        assert!(incoming.message().is_none());
        incoming.stream_data(0, &get[..1]);
        assert_eq!(
            incoming.message(),
            Some(Ok(ShareMessage::Get("pics/a.jpg")))
        );
    }

    #[test]
    fn a_file_to_a_terminal_taking_none_is_stray_and_garbage_is_bad() {
        let mut incoming = Incoming::new(None, Arc::new(|| {}));
        incoming.stream_data(0, b"TF\x01");
        assert!(incoming.is_stray());
        let mut incoming = Incoming::new(None, Arc::new(|| {}));
        incoming.stream_data(0, b"GET / HTTP/1.1");
        assert_eq!(incoming.message(), Some(Err(ShareError::BadMagic)));
    }
}
