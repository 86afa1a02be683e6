//! The core's sans-IO terminal for C (issue 19): the same shape as the
//! Rust drivers run it (`tryst_std::role::terminal`), behind a C ABI.
//!
//! - **Opaque handle in caller-owned memory.** The caller gives
//!   [`tryst_terminal_size`] bytes aligned to [`tryst_terminal_align`] (a
//!   static array on firmware, or `aligned_alloc`); [`tryst_terminal_init`]
//!   builds the terminal there and [`tryst_terminal_close`] drops it and
//!   marks the memory closed, so a call on a closed handle is refused
//!   ([`TRYST_ERR_CLOSED`]) instead of being undefined. The library never
//!   allocates.
//! - **Inputs** through `tryst_terminal_handle_*`: UDP datagrams (with the
//!   sender's address), bytes of the TCP stream to the session server (the
//!   library reassembles its messages), its loss, and the time (a
//!   monotonic clock in microseconds, given with every call).
//! - **Outputs** through [`tryst_terminal_poll`], called after every input
//!   until it says [`TrystOutputKind::Timeout`]: a UDP datagram to an
//!   address, TCP bytes for the session server (connect first if the
//!   stream is down), an event, or when to call
//!   [`tryst_terminal_handle_timeout`].
//! - **Files** through the caller's callbacks ([`TrystFileIo`]): the core's
//!   transfer machines (`tryst_core::peer::transfer`) decide every byte;
//!   this layer reads and writes through the callbacks and computes the
//!   SHA-256 the core leaves to its driver.
//! - **Errors** are negative `int32_t` codes (`TRYST_ERR_*`) with
//!   [`tryst_error_message`]; null pointers and bad lengths are errors,
//!   and a panic is caught at every entry point ([`TRYST_ERR_PANIC`], the
//!   handle is then closed).
//!
//! A handle is not thread-safe: call it from one thread at a time.

#![deny(unsafe_op_in_unsafe_fn)]

mod files;
mod types;

use core::ffi::{c_char, c_void};
use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{Destination, Output};
use tryst_core::peer::endpoint::{Endpoint, EndpointEvent, ENDPOINT_BUF_LEN};
use tryst_core::peer::session::{PeerConfig, PeerEvent};
use tryst_core::terminal::{
    ConnectError, PermissionError, TerminalConfig, TerminalEvent, UnknownQuery, UnknownSession,
};
use tryst_core::time::Instant;
use tryst_core::wire::{EndReason, FrameBuffer, PublicKey, Role, SessionId, Verdict};

use files::Files;
pub use types::*;

// ----- error codes ------------------------------------------------------------

/// Success.
pub const TRYST_OK: i32 = 0;
/// A pointer that must not be null was null.
pub const TRYST_ERR_NULL: i32 = -1;
/// A length is wrong: a buffer too short, a name too long, a size that
/// does not match.
pub const TRYST_ERR_LENGTH: i32 = -2;
/// The handle is closed (or was never initialised, or a panic closed it).
pub const TRYST_ERR_CLOSED: i32 = -3;
/// The handle's memory is not aligned to [`tryst_terminal_align`].
pub const TRYST_ERR_ALIGN: i32 = -4;
/// A name is not a valid tryst name (or not UTF-8).
pub const TRYST_ERR_NAME: i32 = -5;
/// An argument is out of range (an address family, a reason, a verdict).
pub const TRYST_ERR_ARGUMENT: i32 = -6;
/// Not registered with the session server yet.
pub const TRYST_ERR_NOT_REGISTERED: i32 = -7;
/// Too many pending requests or sessions; try later.
pub const TRYST_ERR_BUSY: i32 = -8;
/// No session has that ID (or it is not running).
pub const TRYST_ERR_NO_SESSION: i32 = -9;
/// No permission inquiry with that ID is waiting.
pub const TRYST_ERR_NO_QUERY: i32 = -10;
/// The permission list is full.
pub const TRYST_ERR_LIST_FULL: i32 = -11;
/// The TCP stream is not tryst traffic: close it (the terminal was told
/// it is lost and reconnects on its next TCP output).
pub const TRYST_ERR_NOT_TRYST: i32 = -12;
/// A file cannot be sent: its name is not a plain file name, or the
/// session already sends one, or no read callback was given.
pub const TRYST_ERR_FILE: i32 = -13;
/// An internal error (a caught panic); the handle is closed.
pub const TRYST_ERR_PANIC: i32 = -14;

/// The largest datagram or TCP message [`tryst_terminal_poll`] writes: a
/// buffer of this size holds any.
pub const TRYST_MAX_TRANSMIT_LEN: usize = 4281;
const _: () = assert!(
    TRYST_MAX_TRANSMIT_LEN == ENDPOINT_BUF_LEN,
    "the header states the size"
);
/// Length of a session ID.
pub const TRYST_SESSION_ID_LEN: usize = 16;
/// Length of keys, seeds and digests.
pub const TRYST_KEY_LEN: usize = 32;

/// What an error code means, as a static NUL-terminated string (never
/// null; unknown codes get a text that says so).
#[no_mangle]
pub extern "C" fn tryst_error_message(code: i32) -> *const c_char {
    let text: &'static core::ffi::CStr = match code {
        TRYST_OK => c"ok",
        TRYST_ERR_NULL => c"a required pointer was null",
        TRYST_ERR_LENGTH => c"a buffer or length is wrong (too short, too long)",
        TRYST_ERR_CLOSED => c"the handle is closed or was never initialised",
        TRYST_ERR_ALIGN => c"the handle's memory is misaligned",
        TRYST_ERR_NAME => c"not a valid name",
        TRYST_ERR_ARGUMENT => c"an argument is out of range",
        TRYST_ERR_NOT_REGISTERED => c"not registered with the session server",
        TRYST_ERR_BUSY => c"too many pending requests or sessions",
        TRYST_ERR_NO_SESSION => c"no such session",
        TRYST_ERR_NO_QUERY => c"no such permission inquiry",
        TRYST_ERR_LIST_FULL => c"the permission list is full",
        TRYST_ERR_NOT_TRYST => c"the stream is not tryst traffic: close it",
        TRYST_ERR_FILE => c"the file cannot be sent",
        TRYST_ERR_PANIC => c"internal error: the handle was closed",
        _ => c"unknown error code",
    };
    text.as_ptr()
}

// ----- the handle ---------------------------------------------------------------

/// Marks a live handle.
const LIVE: u64 = 0x7472_7973_744c_4956;
/// Marks a handle that was closed (or closed by a panic).
const CLOSED: u64 = 0x7472_7973_7443_4c4f;

/// The random generator the core is given: ChaCha20 from the caller's seed.
type Rng = ChaCha20Rng;

/// A terminal: opaque to C, built in the caller's memory.
pub struct TrystTerminal {
    magic: u64,
    inner: MaybeUninit<Inner>,
}

/// What a live handle holds.
struct Inner {
    endpoint: Endpoint<Rng>,
    files: Files,
    frames: FrameBuffer,
}

/// Bytes of memory a terminal handle needs.
#[no_mangle]
pub extern "C" fn tryst_terminal_size() -> usize {
    size_of::<TrystTerminal>()
}

/// Alignment the handle's memory needs.
#[no_mangle]
pub extern "C" fn tryst_terminal_align() -> usize {
    align_of::<TrystTerminal>()
}

/// Runs `f`, turning a panic into [`TRYST_ERR_PANIC`].
fn guard(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(TRYST_ERR_PANIC)
}

/// Runs `f` on a live handle; a panic closes it.
fn with_terminal(t: *mut TrystTerminal, f: impl FnOnce(&mut Inner) -> i32) -> i32 {
    guard(|| {
        if t.is_null() {
            return TRYST_ERR_NULL;
        }
        if !(t as usize).is_multiple_of(align_of::<TrystTerminal>()) {
            return TRYST_ERR_ALIGN;
        }
        // SAFETY: non-null and aligned; the caller gave memory of
        // `tryst_terminal_size()` bytes that `init` or `close` wrote (or
        // zeroed memory), so the magic is initialised.
        let magic = unsafe { ptr::addr_of!((*t).magic).read() };
        if magic != LIVE {
            return TRYST_ERR_CLOSED;
        }
        // SAFETY: LIVE is only written after `inner` was initialised.
        let inner = unsafe { (*t).inner.assume_init_mut() };
        match catch_unwind(AssertUnwindSafe(|| f(inner))) {
            Ok(code) => code,
            Err(_) => {
                // The state may be half-changed: never touched again (its
                // memory is the caller's; nothing in it owns a heap).
                // SAFETY: as above.
                unsafe { ptr::addr_of_mut!((*t).magic).write(CLOSED) };
                TRYST_ERR_PANIC
            }
        }
    })
}

/// Reads `len` bytes at `ptr` as a UTF-8 name of at most `max` bytes.
///
/// # Safety
/// `ptr` must be valid for `len` bytes when non-null.
unsafe fn name_arg<'a>(ptr: *const c_char, len: usize, max: usize) -> Result<&'a str, i32> {
    if ptr.is_null() {
        return Err(TRYST_ERR_NULL);
    }
    if len > max {
        return Err(TRYST_ERR_LENGTH);
    }
    // SAFETY: the caller's contract.
    let bytes = unsafe { core::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    core::str::from_utf8(bytes).map_err(|_| TRYST_ERR_NAME)
}

/// Builds a terminal in `mem` (`mem_len` bytes, at least
/// [`tryst_terminal_size`], aligned to [`tryst_terminal_align`]) and starts
/// registering at `now_us`; `*out` is the handle (the same address). `io`
/// may be null (no files sent or received); it is copied.
///
/// # Safety
/// `mem` must be valid for writes of `mem_len` bytes and not in use by a
/// live handle; `config` and `io` must point to valid structs (or null);
/// the config's name must be valid for `name_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_init(
    mem: *mut c_void,
    mem_len: usize,
    config: *const TrystConfig,
    io: *const TrystFileIo,
    now_us: u64,
    out: *mut *mut TrystTerminal,
) -> i32 {
    guard(|| {
        if mem.is_null() || config.is_null() || out.is_null() {
            return TRYST_ERR_NULL;
        }
        if mem_len < size_of::<TrystTerminal>() {
            return TRYST_ERR_LENGTH;
        }
        let t = mem.cast::<TrystTerminal>();
        if !(t as usize).is_multiple_of(align_of::<TrystTerminal>()) {
            return TRYST_ERR_ALIGN;
        }
        // SAFETY: non-null, the caller's contract.
        let config = unsafe { &*config };
        // SAFETY: null or valid, the caller's contract.
        let io = unsafe { io.as_ref() }.copied();
        // SAFETY: the caller's contract on the name.
        let name =
            match unsafe { name_arg(config.name, config.name_len, tryst_core::wire::MAX_NAME_LEN) }
            {
                Ok(name) => name,
                Err(code) => return code,
            };
        let trigger = match config.trigger_server.to_socket_addr() {
            Some(a) => a,
            None => return TRYST_ERR_ARGUMENT,
        };
        let Ok(mut core_config) = TerminalConfig::new(name, trigger, PublicKey(config.server_key))
        else {
            return TRYST_ERR_NAME;
        };
        if config.keepalive_secs != 0 {
            core_config.keepalive_interval = Duration::from_secs(u64::from(config.keepalive_secs));
        }
        let terminal_rng = Rng::from_seed(config.seed);
        let mut peer_rng = Rng::from_seed(config.seed);
        peer_rng.set_stream(1);
        let keypair = StaticKeypair::from_secret(config.secret_key);
        let accept = config.accept_files != 0;
        // SAFETY: aligned and large enough (checked); written whole before
        // the magic says LIVE.
        unsafe {
            ptr::addr_of_mut!((*t).magic).write(CLOSED);
            let inner = (*t).inner.as_mut_ptr();
            ptr::addr_of_mut!((*inner).endpoint).write(Endpoint::new(
                core_config,
                keypair,
                terminal_rng,
                peer_rng,
                PeerConfig::default(),
            ));
            ptr::addr_of_mut!((*inner).files).write(Files::new(io, accept));
            ptr::addr_of_mut!((*inner).frames).write(FrameBuffer::new());
            (*inner).endpoint.start(Instant::from_micros(now_us));
            ptr::addr_of_mut!((*t).magic).write(LIVE);
            *out = t;
        }
        TRYST_OK
    })
}

/// Closes a terminal: drops its state (nothing is sent: end sessions
/// first if the peers should know) and marks the memory closed, so later
/// calls with it return [`TRYST_ERR_CLOSED`]. Closing a closed handle is
/// [`TRYST_ERR_CLOSED`] too.
///
/// # Safety
/// `t` must be null or memory given to [`tryst_terminal_init`].
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_close(t: *mut TrystTerminal) -> i32 {
    let code = with_terminal(t, |_| TRYST_OK);
    if code != TRYST_OK {
        return code;
    }
    guard(|| {
        // SAFETY: live (checked just above): initialised, dropped once.
        unsafe {
            ptr::addr_of_mut!((*t).magic).write(CLOSED);
            (*t).inner.assume_init_drop();
        }
        TRYST_OK
    })
}

/// The terminal's public key (32 bytes into `out`).
///
/// # Safety
/// `t` as for every call; `out` valid for 32 bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_public_key(t: *mut TrystTerminal, out: *mut u8) -> i32 {
    with_terminal(t, |inner| {
        if out.is_null() {
            return TRYST_ERR_NULL;
        }
        let key = inner.endpoint.terminal().public_key();
        // SAFETY: the caller's contract.
        unsafe { ptr::copy_nonoverlapping(key.0.as_ptr(), out, TRYST_KEY_LEN) };
        TRYST_OK
    })
}

// ----- inputs -----------------------------------------------------------------

/// A UDP datagram of `len` bytes arrived from `from`. It is decrypted in
/// place: `data` is the caller's and changed.
///
/// # Safety
/// `data` valid for `len` bytes of reads and writes; `from` valid.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_handle_udp(
    t: *mut TrystTerminal,
    now_us: u64,
    from: *const TrystAddr,
    data: *mut u8,
    len: usize,
) -> i32 {
    with_terminal(t, |inner| {
        if from.is_null() || data.is_null() {
            return TRYST_ERR_NULL;
        }
        if len > TRYST_MAX_TRANSMIT_LEN.max(u16::MAX as usize) {
            return TRYST_ERR_LENGTH;
        }
        // SAFETY: the caller's contract.
        let Some(from) = (unsafe { &*from }).to_socket_addr() else {
            return TRYST_ERR_ARGUMENT;
        };
        // SAFETY: the caller's contract.
        let datagram = unsafe { core::slice::from_raw_parts_mut(data, len) };
        let now = Instant::from_micros(now_us);
        inner
            .endpoint
            .handle_udp(now, from, datagram, &mut inner.files);
        TRYST_OK
    })
}

/// Bytes read from the TCP stream to the session server (any split).
/// [`TRYST_ERR_NOT_TRYST`]: close the stream; the terminal was told.
///
/// # Safety
/// `data` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_handle_tcp(
    t: *mut TrystTerminal,
    now_us: u64,
    data: *const u8,
    len: usize,
) -> i32 {
    with_terminal(t, |inner| {
        if data.is_null() {
            return TRYST_ERR_NULL;
        }
        // SAFETY: the caller's contract.
        let mut input = unsafe { core::slice::from_raw_parts(data, len) };
        let now = Instant::from_micros(now_us);
        while !input.is_empty() {
            match inner.frames.push(&mut input) {
                Ok(Some(message)) => inner.endpoint.handle_upstream(now, message),
                Ok(None) => {}
                Err(_) => {
                    inner.frames = FrameBuffer::new();
                    inner.endpoint.handle_upstream_closed(now);
                    return TRYST_ERR_NOT_TRYST;
                }
            }
        }
        TRYST_OK
    })
}

/// The TCP stream to the session server was lost (or closed by the
/// caller); the terminal asks for a new one by its next TCP output.
///
/// # Safety
/// `t` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_handle_tcp_closed(
    t: *mut TrystTerminal,
    now_us: u64,
) -> i32 {
    with_terminal(t, |inner| {
        inner.frames = FrameBuffer::new();
        inner
            .endpoint
            .handle_upstream_closed(Instant::from_micros(now_us));
        TRYST_OK
    })
}

/// The time [`tryst_terminal_poll`] asked for came (calling it early or
/// late is harmless).
///
/// # Safety
/// `t` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_handle_timeout(t: *mut TrystTerminal, now_us: u64) -> i32 {
    with_terminal(t, |inner| {
        inner.endpoint.handle_timeout(Instant::from_micros(now_us));
        TRYST_OK
    })
}

// ----- output -----------------------------------------------------------------

/// Most rounds of the file machines in one poll (each changes something,
/// so a few settle it; the bound keeps a poll finite whatever happens).
const MAX_POLL_ROUNDS: usize = 64;

/// The next output into `*out`; a transmit's bytes are the first
/// `out->len` bytes of `buf` (`cap` at least [`TRYST_MAX_TRANSMIT_LEN`]).
/// Call after every input until the kind is [`TrystOutputKind::Timeout`].
///
/// # Safety
/// `buf` valid for `cap` bytes of writes; `out` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_poll(
    t: *mut TrystTerminal,
    now_us: u64,
    buf: *mut u8,
    cap: usize,
    out: *mut TrystOutput,
) -> i32 {
    with_terminal(t, |inner| {
        if buf.is_null() || out.is_null() {
            return TRYST_ERR_NULL;
        }
        if cap < TRYST_MAX_TRANSMIT_LEN {
            return TRYST_ERR_LENGTH;
        }
        // SAFETY: the caller's contract.
        let buf = unsafe { core::slice::from_raw_parts_mut(buf, TRYST_MAX_TRANSMIT_LEN) };
        // SAFETY: the caller's contract.
        let out = unsafe { &mut *out };
        *out = TrystOutput::default();
        inner.poll(Instant::from_micros(now_us), buf, out);
        TRYST_OK
    })
}

impl Inner {
    fn poll(&mut self, now: Instant, buf: &mut [u8], out: &mut TrystOutput) {
        for _ in 0..MAX_POLL_ROUNDS {
            if let Some(event) = self.files.pop_event() {
                out.kind = TrystOutputKind::Event;
                out.event = event;
                return;
            }
            match self.endpoint.poll_output(now, buf, &mut self.files) {
                Output::Event(event) => {
                    self.on_event(now, &event);
                    out.kind = TrystOutputKind::Event;
                    out.event = TrystEvent::from_endpoint(&event);
                    return;
                }
                Output::Transmit(transmit) => {
                    out.len = transmit.len;
                    match transmit.destination {
                        Destination::Udp(to) => {
                            out.kind = TrystOutputKind::Udp;
                            out.addr = TrystAddr::from_socket_addr(to);
                        }
                        Destination::Upstream => out.kind = TrystOutputKind::Tcp,
                        // A terminal accepts no streams; the firmware
                        // terminal opens no relay stream (UDP only).
                        Destination::Connection(_) | Destination::RelayStream(_) => continue,
                    }
                    return;
                }
                Output::Store(never) => match never {},
                Output::Close(_) => continue,
                Output::Timeout(at) => {
                    if self.files.after_drain(now, &mut self.endpoint) {
                        continue;
                    }
                    let at = match (at, self.files.poll_timeout()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    out.kind = TrystOutputKind::Timeout;
                    if let Some(at) = at {
                        out.has_timeout = 1;
                        out.timeout_us = at.as_micros();
                    }
                    return;
                }
            }
        }
        // Still busy after the bound: come back at once.
        out.kind = TrystOutputKind::Timeout;
        out.has_timeout = 1;
        out.timeout_us = now.as_micros();
    }

    /// What the files need to know of an event.
    fn on_event(&mut self, now: Instant, event: &EndpointEvent) {
        match event {
            EndpointEvent::Terminal(TerminalEvent::SessionReady {
                session_id, role, ..
            }) => self.files.open(*session_id, *role == Role::Connected),
            EndpointEvent::Terminal(TerminalEvent::SessionEnded { session_id, .. })
                if self.endpoint.session(session_id).is_none() =>
            {
                self.files.end(session_id);
            }
            EndpointEvent::Peer { session_id, event } => match event {
                PeerEvent::Connected { .. } => self.files.connected(session_id, now),
                PeerEvent::Ended { .. } => self.files.end(session_id),
                _ => {}
            },
            EndpointEvent::Terminal(_) => {}
        }
    }
}

// ----- app calls ------------------------------------------------------------------

/// Adds `name` to the permission list (who may connect to this terminal).
///
/// # Safety
/// `name` valid for `name_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_allow(
    t: *mut TrystTerminal,
    name: *const c_char,
    name_len: usize,
) -> i32 {
    with_terminal(t, |inner| {
        // SAFETY: the caller's contract.
        let name = match unsafe { name_arg(name, name_len, tryst_core::wire::MAX_NAME_LEN) } {
            Ok(n) => n,
            Err(code) => return code,
        };
        match inner.endpoint.allow(name) {
            Ok(()) => TRYST_OK,
            Err(e) => permission_code(e),
        }
    })
}

/// Removes `name` from the permission list; [`TRYST_ERR_NAME`] if it was
/// not there.
///
/// # Safety
/// `name` valid for `name_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_disallow(
    t: *mut TrystTerminal,
    name: *const c_char,
    name_len: usize,
) -> i32 {
    with_terminal(t, |inner| {
        // SAFETY: the caller's contract.
        let name = match unsafe { name_arg(name, name_len, tryst_core::wire::MAX_NAME_LEN) } {
            Ok(n) => n,
            Err(code) => return code,
        };
        if inner.endpoint.disallow(name) {
            TRYST_OK
        } else {
            TRYST_ERR_NAME
        }
    })
}

fn permission_code(e: PermissionError) -> i32 {
    match e {
        PermissionError::InvalidName(_) => TRYST_ERR_NAME,
        PermissionError::ListFull => TRYST_ERR_LIST_FULL,
    }
}

/// Asks the session server for a session with `target` for
/// `duration_secs`; `*request_id` is the ID its outcome event carries.
///
/// # Safety
/// `target` valid for `target_len` bytes; `request_id` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_connect(
    t: *mut TrystTerminal,
    now_us: u64,
    target: *const c_char,
    target_len: usize,
    duration_secs: u32,
    request_id: *mut u32,
) -> i32 {
    with_terminal(t, |inner| {
        if request_id.is_null() {
            return TRYST_ERR_NULL;
        }
        // SAFETY: the caller's contract.
        let target = match unsafe { name_arg(target, target_len, tryst_core::wire::MAX_NAME_LEN) } {
            Ok(n) => n,
            Err(code) => return code,
        };
        match inner
            .endpoint
            .connect(Instant::from_micros(now_us), target, duration_secs)
        {
            Ok(id) => {
                // SAFETY: the caller's contract.
                unsafe { request_id.write(id) };
                TRYST_OK
            }
            Err(ConnectError::InvalidName(_)) => TRYST_ERR_NAME,
            Err(ConnectError::NotRegistered) => TRYST_ERR_NOT_REGISTERED,
            Err(ConnectError::TooManyPendingRequests | ConnectError::TooManySessions) => {
                TRYST_ERR_BUSY
            }
        }
    })
}

/// Answers a permission inquiry (judge policy "ask"): `verdict` 1
/// permits, 0 denies.
///
/// # Safety
/// `t` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_answer(
    t: *mut TrystTerminal,
    now_us: u64,
    query_id: u32,
    verdict: u8,
) -> i32 {
    with_terminal(t, |inner| {
        let Ok(verdict) = Verdict::from_wire(verdict) else {
            return TRYST_ERR_ARGUMENT;
        };
        match inner
            .endpoint
            .answer(Instant::from_micros(now_us), query_id, verdict)
        {
            Ok(()) => TRYST_OK,
            Err(UnknownQuery) => TRYST_ERR_NO_QUERY,
        }
    })
}

/// Ends a session now for `reason` (a `TRYST_REASON_*` value): its peer
/// channel closes, then the end notification goes to the servers.
///
/// # Safety
/// `t` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_end_session(
    t: *mut TrystTerminal,
    now_us: u64,
    session: TrystSessionId,
    reason: u8,
) -> i32 {
    with_terminal(t, |inner| {
        let Ok(reason) = EndReason::from_wire(reason) else {
            return TRYST_ERR_ARGUMENT;
        };
        match inner.endpoint.end_session(
            Instant::from_micros(now_us),
            &SessionId(session.bytes),
            reason,
        ) {
            Ok(()) => TRYST_OK,
            Err(UnknownSession) => TRYST_ERR_NO_SESSION,
        }
    })
}

/// Sends a file on a running session: `name` (a plain file name) and
/// `size` are announced, its bytes are read through the `read` callback,
/// at most `rate` bytes a second (0: as fast as the path allows). The
/// receiver closes the session once it checked the file
/// ([`TrystEventKind::PeerEnded`] with reason completed).
///
/// # Safety
/// `name` valid for `name_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn tryst_terminal_send_file(
    t: *mut TrystTerminal,
    now_us: u64,
    session: TrystSessionId,
    name: *const c_char,
    name_len: usize,
    size: u64,
    rate: u64,
) -> i32 {
    with_terminal(t, |inner| {
        // SAFETY: the caller's contract.
        let name = match unsafe {
            name_arg(
                name,
                name_len,
                tryst_core::peer::transfer::MAX_FILE_NAME_LEN,
            )
        } {
            Ok(n) => n,
            Err(TRYST_ERR_NAME) => return TRYST_ERR_FILE,
            Err(code) => return code,
        };
        let id = SessionId(session.bytes);
        let Some(peer) = inner.endpoint.session(&id) else {
            return TRYST_ERR_NO_SESSION;
        };
        let connected = peer.is_connected();
        let rate = (rate != 0).then_some(rate);
        let now = Instant::from_micros(now_us);
        match inner
            .files
            .send(id, name, size, rate, connected.then_some(now))
        {
            Ok(()) => {
                inner.files.after_drain(now, &mut inner.endpoint);
                TRYST_OK
            }
            Err(code) => code,
        }
    })
}
