//! Each session's files, as `tryst_std::role::terminal` keeps them but with
//! the caller's callbacks as storage: the core's [`TransferSender`] and
//! [`TransferReceiver`] decide every byte; this layer applies their steps,
//! computes the SHA-256 they leave to the driver (in order, reading back
//! through the callback what arrived out of order), and applies
//! [`session_end`]. Fixed size: no allocation.

use core::ffi::c_char;

use heapless::{Deque, Vec};
use sha2::{Digest, Sha256};
use tryst_core::peer::endpoint::{Endpoint, SessionIo};
use tryst_core::peer::transfer::{
    session_end, FileRead, HashFailure, ReceiveFailure, ReceivePhase, ReceiveStep, SendStep,
    TransferHeader, TransferReceiver, TransferSender, TRAILER_LEN,
};
use tryst_core::terminal::MAX_SESSIONS;
use tryst_core::time::Instant;
use tryst_core::wire::SessionId;

use crate::types::{TrystEvent, TrystEventKind, TrystFileIo, TrystSessionId};
use crate::{TRYST_ERR_FILE, TRYST_ERR_NO_SESSION};

/// Stream bytes a receiver keeps that overtook the transfer header (the
/// core asks its driver to hold them; past this the transfer fails, as the
/// core's own bound `MAX_EARLY_BYTES` would, only sooner).
const HOLD_BYTES: usize = 8 * 1024;
/// Most separate pieces held.
const HOLD_PIECES: usize = 16;
/// Our own events waiting (file events); beyond it the oldest is dropped.
const MAX_FILE_EVENTS: usize = 8;
/// Chunk in which bytes are read back to be hashed.
const HASH_CHUNK: usize = 1024;

type Rng = rand_chacha::ChaCha20Rng;

/// Stream bytes held before the header.
struct Hold {
    bytes: [u8; HOLD_BYTES],
    used: usize,
    /// (stream offset, start in `bytes`, length).
    pieces: Vec<(u64, usize, usize), HOLD_PIECES>,
}

impl Hold {
    const fn new() -> Hold {
        Hold {
            bytes: [0; HOLD_BYTES],
            used: 0,
            pieces: Vec::new(),
        }
    }

    /// Keeps a copy; false when there is no room.
    fn push(&mut self, offset: u64, data: &[u8]) -> bool {
        let end = self.used + data.len();
        if end > HOLD_BYTES || self.pieces.push((offset, self.used, data.len())).is_err() {
            return false;
        }
        self.bytes[self.used..end].copy_from_slice(data);
        self.used = end;
        true
    }
}

/// A file being received.
struct Incoming {
    rx: TransferReceiver,
    sha: Sha256,
    hashed: u64,
    begun: bool,
    /// `end` was called.
    ended: bool,
    hold: Hold,
    /// A resumable (version 2) file's answer, `Resume(0)` (this side keeps
    /// no partial files), and whether the stream's end was told.
    offer: Option<(ResumeMessage, bool)>,
}

/// The bytes of a share `Resume` message.
type ResumeMessage = [u8; tryst_core::peer::share::SHARE_HEADER_LEN + 8];

/// A file being sent.
struct Outgoing {
    tx: TransferSender,
    sha: Sha256,
    hashed: u64,
}

/// One session's files.
struct Slot {
    id: SessionId,
    incoming: Option<Incoming>,
    outgoing: Option<Outgoing>,
    /// The peer sent stream bytes nothing here takes.
    stray: bool,
    /// The transfer ended the session.
    reported: bool,
}

/// Every session's files, and the file events for the app.
pub(crate) struct Files {
    io: Option<TrystFileIo>,
    accept: bool,
    slots: [Option<Slot>; MAX_SESSIONS],
    events: Deque<TrystEvent, MAX_FILE_EVENTS>,
}

/// Reads through the callback, hashing what extends the hashed prefix.
struct Reader<'a> {
    io: &'a TrystFileIo,
    session: TrystSessionId,
    incoming: u8,
    sha: &'a mut Sha256,
    hashed: &'a mut u64,
    short: bool,
}

impl Reader<'_> {
    /// The callback's read, at most `buf.len()`.
    fn raw(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let Some(read) = self.io.read else {
            return 0;
        };
        // SAFETY: `buf` is valid for its length; the callback's contract.
        let n = unsafe {
            read(
                self.io.user,
                self.session,
                self.incoming,
                offset,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        n.min(buf.len())
    }

    /// Hashes file bytes `[hashed, upto)`, read back; false if a read fell short.
    fn catch_up(&mut self, upto: u64) -> bool {
        let mut chunk = [0u8; HASH_CHUNK];
        while *self.hashed < upto {
            let want =
                usize::try_from(upto - *self.hashed).map_or(HASH_CHUNK, |w| w.min(HASH_CHUNK));
            let n = self.raw(*self.hashed, &mut chunk[..want]);
            if n < want {
                return false;
            }
            self.sha.update(&chunk[..n]);
            *self.hashed += n as u64;
        }
        true
    }
}

impl FileRead for Reader<'_> {
    fn read_file_at(&mut self, offset: u64, out: &mut [u8]) -> usize {
        let n = self.raw(offset, out);
        if n < out.len() {
            self.short = true;
        }
        if offset == *self.hashed {
            self.sha.update(&out[..n]);
            *self.hashed += n as u64;
        }
        n
    }
}

/// The receiver's failure as the event's code.
fn failure_code(why: ReceiveFailure) -> u8 {
    match why {
        ReceiveFailure::BadHeader(_) => 1,
        ReceiveFailure::PastEnd => 2,
        ReceiveFailure::TooScattered => 3,
        ReceiveFailure::TooManyEarlyBytes => 4,
        ReceiveFailure::ChecksumMismatch => 5,
        ReceiveFailure::Hash(_) => 6,
        ReceiveFailure::Storage => 7,
        ReceiveFailure::Cut => 8,
        ReceiveFailure::BeforeOffer => 9,
    }
}

fn digest_of(sha: &Sha256) -> [u8; TRAILER_LEN] {
    sha.clone().finalize().into()
}

impl Files {
    pub(crate) fn new(io: Option<TrystFileIo>, accept: bool) -> Files {
        let complete = io.is_some_and(|io| {
            io.read.is_some() && io.begin.is_some() && io.write.is_some() && io.end.is_some()
        });
        Files {
            io,
            accept: accept && complete,
            slots: Default::default(),
            events: Deque::new(),
        }
    }

    pub(crate) fn pop_event(&mut self) -> Option<TrystEvent> {
        self.events.pop_front()
    }

    fn slot_mut(&mut self, id: &SessionId) -> Option<&mut Slot> {
        self.slots.iter_mut().flatten().find(|s| s.id == *id)
    }

    /// A session is ready: a receiver if this side was asked for and takes files.
    pub(crate) fn open(&mut self, id: SessionId, connected: bool) {
        let incoming = (connected && self.accept).then(|| Incoming {
            rx: TransferReceiver::new(),
            sha: Sha256::new(),
            hashed: 0,
            begun: false,
            ended: false,
            hold: Hold::new(),
            offer: None,
        });
        let slot = Slot {
            id,
            incoming,
            outgoing: None,
            stray: false,
            reported: false,
        };
        if let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) {
            *free = Some(slot);
        }
    }

    /// The peer channel is up: a throttled send's clock starts.
    pub(crate) fn connected(&mut self, id: &SessionId, now: Instant) {
        if let Some(out) = self.slot_mut(id).and_then(|s| s.outgoing.as_mut()) {
            out.tx.start(now);
        }
    }

    /// The session is over: an unfinished incoming file is thrown away.
    pub(crate) fn end(&mut self, id: &SessionId) {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.id == *id))
        else {
            return;
        };
        let Some(mut slot) = slot.take() else {
            return;
        };
        if let (Some(inc), false) = (slot.incoming.as_mut(), slot.reported) {
            if inc.begun {
                inc.rx.abort();
                settle(self.io.as_ref(), slot.id, inc);
                let event = outcome_event(slot.id, inc);
                push_event(&mut self.events, event);
            }
        }
    }

    /// Starts sending a file on a session.
    pub(crate) fn send(
        &mut self,
        id: SessionId,
        name: &str,
        size: u64,
        rate: Option<u64>,
        started: Option<Instant>,
    ) -> Result<(), i32> {
        if self.io.and_then(|io| io.read).is_none() {
            return Err(TRYST_ERR_FILE);
        }
        let header = TransferHeader::new(name, size).map_err(|_| TRYST_ERR_FILE)?;
        let Some(slot) = self.slot_mut(&id) else {
            return Err(TRYST_ERR_NO_SESSION);
        };
        if slot.outgoing.is_some() {
            return Err(TRYST_ERR_FILE);
        }
        let mut tx = TransferSender::new(&header, rate);
        if let Some(now) = started {
            tx.start(now);
        }
        let mut out = Outgoing {
            tx,
            sha: Sha256::new(),
            hashed: 0,
        };
        if size == 0 {
            out.tx.hashed(Ok(digest_of(&out.sha)));
        }
        slot.outgoing = Some(out);
        Ok(())
    }

    /// When a throttled send next needs a poll.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| s.outgoing.as_ref())
            .filter_map(|o| o.tx.poll_timeout())
            .min()
    }

    /// After the endpoint drained: the senders' steps, and the sessions
    /// the transfers end ([`session_end`]). Whether anything changed.
    pub(crate) fn after_drain(&mut self, now: Instant, endpoint: &mut Endpoint<Rng>) -> bool {
        let mut any = false;
        let mut closes: Vec<(SessionId, tryst_core::wire::EndReason), MAX_SESSIONS> = Vec::new();
        let mut done: Vec<usize, MAX_SESSIONS> = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if let Some(out) = slot.outgoing.as_mut() {
                if endpoint.session(&slot.id).is_some() {
                    while let Some(step) = out.tx.poll(now) {
                        any = true;
                        match step {
                            SendStep::Extend(n) => {
                                let _ = endpoint.stream_extend(&slot.id, n);
                            }
                            SendStep::Finish(total) => {
                                let _ = endpoint.stream_finish(&slot.id, total);
                            }
                            SendStep::Fail(_) => {}
                        }
                    }
                }
            }
            if let Some((message, told @ false)) =
                slot.incoming.as_mut().and_then(|i| i.offer.as_mut())
            {
                *told = true;
                any = true;
                let _ = endpoint.stream_finish(&slot.id, message.len() as u64);
            }
            if slot.reported {
                continue;
            }
            if let Some(reason) = session_end(
                slot.outgoing.as_ref().map(|o| &o.tx),
                slot.incoming.as_ref().map(|i| &i.rx),
                slot.stray,
            ) {
                slot.reported = true;
                let _ = closes.push((slot.id, reason));
                if slot.incoming.is_some() {
                    let _ = done.push(i);
                }
            }
        }
        for i in done {
            if let Some(slot) = self.slots[i].as_mut() {
                let id = slot.id;
                if let Some(inc) = slot.incoming.as_ref() {
                    let event = outcome_event(id, inc);
                    push_event(&mut self.events, event);
                }
            }
        }
        for (id, reason) in &closes {
            let _ = endpoint.end_session(now, id, *reason);
        }
        any || !closes.is_empty()
    }
}

fn push_event(events: &mut Deque<TrystEvent, MAX_FILE_EVENTS>, event: TrystEvent) {
    if events.is_full() {
        let _ = events.pop_front();
    }
    let _ = events.push_back(event);
}

/// The event that says how a received file ended.
fn outcome_event(id: SessionId, inc: &Incoming) -> TrystEvent {
    let mut e = TrystEvent::about(TrystEventKind::FileFailed, id.0);
    if let Some(h) = inc.rx.header() {
        e.set_name(h.name());
        e.value = h.size;
    }
    match inc.rx.phase() {
        ReceivePhase::Completed => {
            e.kind = TrystEventKind::FileReceived;
            e.key = inc.rx.trailer().unwrap_or([0; TRAILER_LEN]);
        }
        ReceivePhase::Failed(why) => e.code = failure_code(why),
        _ => {}
    }
    e
}

fn sid(id: SessionId) -> TrystSessionId {
    TrystSessionId { bytes: id.0 }
}

/// Applies one step of the receiver (in field order); whether it asks
/// for a replay. `data` is the input, kept when the step says `hold` (a
/// held input passes none: its piece is kept by the caller).
fn apply(
    io: &TrystFileIo,
    id: SessionId,
    inc: &mut Incoming,
    events: &mut Deque<TrystEvent, MAX_FILE_EVENTS>,
    step: ReceiveStep<'_>,
    offset: u64,
    data: &[u8],
) -> bool {
    if step.accepted {
        let Some(header) = inc.rx.header() else {
            inc.rx.fail(ReceiveFailure::Storage);
            return false;
        };
        let mut name = [0 as c_char; crate::types::TRYST_EVENT_NAME_LEN];
        for (dst, src) in name.iter_mut().zip(header.name().as_bytes()) {
            *dst = *src as c_char;
        }
        let size = header.size;
        let mut started = TrystEvent::about(TrystEventKind::FileStarted, id.0);
        started.set_name(header.name());
        started.value = size;
        inc.begun = true;
        let code = match io.begin {
            // SAFETY: `name` is NUL-terminated (a name has at most 255 bytes).
            Some(begin) => unsafe { begin(io.user, sid(id), name.as_ptr(), size) },
            None => -1,
        };
        if code != 0 {
            // Nothing was prepared: nothing to delete.
            inc.ended = true;
            inc.rx.fail(ReceiveFailure::Storage);
            return false;
        }
        push_event(events, started);
        // A resumable sender waits for word of where to start: here, 0.
        if inc.rx.needs_offer() {
            let _ = inc.rx.start_at(0);
            let mut message: ResumeMessage = [0; tryst_core::peer::share::SHARE_HEADER_LEN + 8];
            if tryst_core::peer::share::ShareMessage::Resume(0)
                .encode(&mut message)
                .is_ok()
            {
                inc.offer = Some((message, false));
            }
        }
    }
    if step.hold && !data.is_empty() && !inc.hold.push(offset, data) {
        inc.rx.fail(ReceiveFailure::TooManyEarlyBytes);
        return false;
    }
    if let Some(write) = step.write {
        let code = match io.write {
            // SAFETY: `bytes` is valid for its length.
            Some(w) => unsafe {
                w(
                    io.user,
                    sid(id),
                    write.offset,
                    write.bytes.as_ptr(),
                    write.bytes.len(),
                )
            },
            None => -1,
        };
        if code != 0 {
            inc.rx.fail(ReceiveFailure::Storage);
            return false;
        }
        if write.in_order && write.offset == inc.hashed {
            inc.sha.update(write.bytes);
            inc.hashed += write.bytes.len() as u64;
        }
    }
    if let Some(upto) = step.hash_to {
        let mut reader = Reader {
            io,
            session: sid(id),
            incoming: 1,
            sha: &mut inc.sha,
            hashed: &mut inc.hashed,
            short: false,
        };
        if !reader.catch_up(upto) {
            inc.rx.digest(Err(HashFailure::Unreadable));
            return false;
        }
    }
    step.replay
}

/// Follows the receiver: every byte in and hashed, the digest; verified,
/// stored; failed, deleted.
fn settle(io: Option<&TrystFileIo>, id: SessionId, inc: &mut Incoming) {
    if inc.rx.phase() == ReceivePhase::Checking {
        let size = inc.rx.header().map_or(0, |h| h.size);
        if inc.hashed == size {
            inc.rx.digest(Ok(digest_of(&inc.sha)));
        } else {
            inc.rx.digest(Err(HashFailure::Unreadable));
        }
    }
    let keep = match inc.rx.phase() {
        ReceivePhase::Verified => true,
        ReceivePhase::Failed(_) => false,
        _ => return,
    };
    if inc.ended || !inc.begun {
        return;
    }
    inc.ended = true;
    let code = match io.and_then(|io| io.end.map(|end| (io.user, end))) {
        // SAFETY: the callback's contract.
        Some((user, end)) => unsafe { end(user, sid(id), u8::from(keep)) },
        None => -1,
    };
    if keep {
        if code == 0 {
            inc.rx.stored();
        } else {
            inc.rx.fail(ReceiveFailure::Storage);
        }
    }
}

impl SessionIo for Files {
    fn read_at(&mut self, session: &SessionId, offset: u64, buf: &mut [u8]) -> usize {
        let Some(io) = self.io.as_ref() else {
            return 0;
        };
        let Some(slot) = self.slots.iter_mut().flatten().find(|s| s.id == *session) else {
            return 0;
        };
        if let Some((message, _)) = slot.incoming.as_ref().and_then(|i| i.offer.as_ref()) {
            let rest = usize::try_from(offset)
                .ok()
                .and_then(|at| message.get(at..))
                .unwrap_or(&[]);
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            return n;
        }
        let Some(out) = slot.outgoing.as_mut() else {
            return 0;
        };
        let mut reader = Reader {
            io,
            session: sid(*session),
            incoming: 0,
            sha: &mut out.sha,
            hashed: &mut out.hashed,
            short: false,
        };
        let n = out.tx.read(offset, buf, &mut reader);
        let target = out.tx.hash_target();
        let caught = reader.catch_up(target);
        let short = reader.short || !caught;
        if out.tx.digest().is_none() && out.tx.failure().is_none() {
            if short {
                out.tx.hashed(Err(HashFailure::Truncated));
            } else if out.hashed == out.tx.file_size() {
                out.tx.hashed(Ok(digest_of(&out.sha)));
            }
        }
        n
    }

    fn stream_data(&mut self, session: &SessionId, offset: u64, data: &[u8]) {
        let Some(slot) = self.slots.iter_mut().flatten().find(|s| s.id == *session) else {
            return;
        };
        let (Some(inc), Some(io)) = (slot.incoming.as_mut(), self.io.as_ref()) else {
            slot.stray = true;
            return;
        };
        let id = slot.id;
        let step = inc.rx.stream_data(offset, data);
        let mut replay = apply(io, id, inc, &mut self.events, step, offset, data);
        // Held bytes: given back until none is taken anew.
        let mut rounds = 0;
        while replay && rounds <= HOLD_PIECES {
            rounds += 1;
            replay = false;
            let held = core::mem::replace(&mut inc.hold, Hold::new());
            for &(at, start, len) in &held.pieces {
                let bytes = &held.bytes[start..start + len];
                let step = inc.rx.stream_data(at, bytes);
                let again = step.hold;
                replay |= apply(io, id, inc, &mut self.events, step, at, &[]);
                if again && !inc.hold.push(at, bytes) {
                    inc.rx.fail(ReceiveFailure::TooManyEarlyBytes);
                }
            }
        }
        settle(Some(io), id, inc);
    }

    fn datagram(&mut self, _session: &SessionId, _data: &[u8]) {
        // Real-time datagrams have no consumer here yet.
    }
}

#[cfg(test)]
mod tests {
    //! The C device keeps no partial files (its storage is the caller's
    //! callbacks, with no way to find a cut file again): every resumable
    //! file is answered `Resume(0)`, a cut one is deleted (`end`, keep 0)
    //! and the same file sent again starts over from byte 0.
    use super::*;
    use core::ffi::c_void;
    use std::vec::Vec as StdVec;
    use tryst_core::peer::share::ShareMessage;

    /// What the callbacks saw.
    #[derive(Default)]
    struct Store {
        begun: StdVec<u64>,
        data: StdVec<u8>,
        lowest_write: Option<u64>,
        ended: StdVec<u8>,
    }

    fn store(user: *mut c_void) -> &'static mut Store {
        // SAFETY: `user` is the test's `Store`, alive for the whole test.
        unsafe { &mut *user.cast::<Store>() }
    }

    unsafe extern "C" fn read(
        user: *mut c_void,
        _: TrystSessionId,
        _: u8,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) -> usize {
        let s = store(user);
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(s.data.len());
        let n = len.min(s.data.len() - at);
        // SAFETY: the library gives a buffer of `len` bytes.
        unsafe { core::ptr::copy_nonoverlapping(s.data[at..].as_ptr(), buf, n) };
        n
    }

    unsafe extern "C" fn begin(
        user: *mut c_void,
        _: TrystSessionId,
        _: *const c_char,
        size: u64,
    ) -> i32 {
        let s = store(user);
        s.begun.push(size);
        s.data.clear();
        s.lowest_write = None;
        0
    }

    unsafe extern "C" fn write(
        user: *mut c_void,
        _: TrystSessionId,
        offset: u64,
        data: *const u8,
        len: usize,
    ) -> i32 {
        let s = store(user);
        s.lowest_write = Some(s.lowest_write.map_or(offset, |w| w.min(offset)));
        // SAFETY: the library gives `len` bytes at `data`.
        let bytes = unsafe { core::slice::from_raw_parts(data, len) };
        let end = offset as usize + len;
        if s.data.len() < end {
            s.data.resize(end, 0);
        }
        s.data[offset as usize..end].copy_from_slice(bytes);
        0
    }

    unsafe extern "C" fn end(user: *mut c_void, _: TrystSessionId, keep: u8) -> i32 {
        store(user).ended.push(keep);
        0
    }

    /// The stream a resumable sender starts with: its version 2 header.
    fn header() -> StdVec<u8> {
        let header = TransferHeader::new("picture.bin", 100_000)
            .unwrap()
            .resumable(1_700_000_000_000_000_000);
        let mut bytes = std::vec![0u8; header.encoded_len()];
        header.encode(&mut bytes).unwrap();
        bytes
    }

    /// The share message this side's stream carries for `id`.
    fn offer(files: &mut Files, id: &SessionId) -> StdVec<u8> {
        let mut buf = [0u8; 64];
        let n = files.read_at(id, 0, &mut buf);
        buf[..n].to_vec()
    }

    #[test]
    fn a_cut_resumable_file_is_deleted_and_the_same_file_again_is_offered_byte_0() {
        let mut seen = Store::default();
        let io = TrystFileIo {
            user: (&mut seen as *mut Store).cast(),
            read: Some(read),
            begin: Some(begin),
            write: Some(write),
            end: Some(end),
        };
        let mut files = Files::new(Some(io), true);
        let mut resume_0 = [0u8; 16];
        let n = ShareMessage::Resume(0).encode(&mut resume_0).unwrap();
        let header = header();
        let body = std::vec![7u8; 40_000];

        // The first send: offered 0, cut after 40 000 bytes.
        let first = SessionId([1; 16]);
        files.open(first, true);
        files.stream_data(&first, 0, &header);
        assert_eq!(offer(&mut files, &first), resume_0[..n]);
        files.stream_data(&first, header.len() as u64, &body);
        files.end(&first);
        // What was written is deleted (end with keep 0).
        assert_eq!(store(io.user).ended, [0]);

        // The same file again: begun anew and offered 0, never the 40 000
        // bytes the cut left (nothing of them is kept).
        let again = SessionId([2; 16]);
        files.open(again, true);
        files.stream_data(&again, 0, &header);
        assert_eq!(offer(&mut files, &again), resume_0[..n]);
        assert_eq!(store(io.user).begun, [100_000, 100_000]);
        files.stream_data(&again, header.len() as u64, &body[..1000]);
        assert_eq!(store(io.user).lowest_write, Some(0));
    }
}
