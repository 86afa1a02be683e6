//! The terminal driven through its C API (`tryst-ffi`'s `extern "C"`
//! functions, called from Rust through the rlib), for the `ffi_terminal`
//! target: datagrams from the trigger server and from anyone, TCP bytes in
//! any split, lost streams, clock moves both ways, every app call with any
//! argument (names, session IDs seen in events, reasons, verdicts, files),
//! short buffers, and close then use after close.
//!
//! Checked: no call ever answers [`TRYST_ERR_PANIC`] (a caught panic), a
//! poll settles, transmits fit the buffer, events carry a known kind and a
//! NUL-terminated name, and after close every call answers
//! [`TRYST_ERR_CLOSED`].
//!
//! Input: operations one after another, each an opcode byte and its
//! arguments (see [`Op`]); [`encode`] writes them (the seed corpus uses it).

use core::ffi::c_void;
use core::mem::MaybeUninit;
use std::collections::BTreeMap;

use tryst_ffi::*;

/// One operation of the input.
#[derive(Debug, Clone)]
pub enum Op {
    /// A datagram from the trigger server.
    UdpTrigger(Vec<u8>),
    /// A datagram from another address.
    UdpOther(Vec<u8>),
    /// Bytes of the TCP stream.
    Tcp(Vec<u8>),
    /// The TCP stream was lost.
    TcpClosed,
    /// The clock moves forward by this many microseconds; timers run.
    Advance(u32),
    /// The clock goes back.
    Back(u16),
    /// Allow a name.
    Allow(Vec<u8>),
    /// Ask for a session.
    Connect(Vec<u8>, u8),
    /// Answer an inquiry.
    Answer(u8, u8),
    /// End the nth session seen (or an unknown one) with this reason byte.
    End(u8, u8),
    /// Send a file (name, size, rate) on the nth session seen.
    Send(u8, Vec<u8>, u16, u16),
    /// Poll with a buffer one byte short.
    ShortPoll,
    /// Close, check use after close, build a new terminal.
    Reopen,
}

const OPCODES: u8 = 13;

/// The input bytes of `ops`.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&b[..usize::from(len)]);
    }
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::UdpTrigger(b) => {
                out.push(0);
                bytes(&mut out, b);
            }
            Op::UdpOther(b) => {
                out.push(1);
                bytes(&mut out, b);
            }
            Op::Tcp(b) => {
                out.push(2);
                bytes(&mut out, b);
            }
            Op::TcpClosed => out.push(3),
            Op::Advance(us) => {
                out.push(4);
                out.extend_from_slice(&us.to_le_bytes());
            }
            Op::Back(us) => {
                out.push(5);
                out.extend_from_slice(&us.to_le_bytes());
            }
            Op::Allow(name) => {
                out.push(6);
                bytes(&mut out, name);
            }
            Op::Connect(name, secs) => {
                out.push(7);
                bytes(&mut out, name);
                out.push(*secs);
            }
            Op::Answer(q, v) => out.extend_from_slice(&[8, *q, *v]),
            Op::End(i, r) => out.extend_from_slice(&[9, *i, *r]),
            Op::Send(i, name, size, rate) => {
                out.extend_from_slice(&[10, *i]);
                bytes(&mut out, name);
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&rate.to_le_bytes());
            }
            Op::ShortPoll => out.push(11),
            Op::Reopen => out.push(12),
        }
    }
    out
}

/// Reads ops back from input bytes (a short tail ends the list).
pub fn decode(mut data: &[u8]) -> Vec<Op> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if data.len() < n {
            return None;
        }
        let (head, rest) = data.split_at(n);
        *data = rest;
        Some(head)
    }
    fn bytes(data: &mut &[u8]) -> Option<Vec<u8>> {
        let len = take(data, 2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let n = len.min(data.len());
        take(data, n).map(<[u8]>::to_vec)
    }
    fn byte(data: &mut &[u8]) -> Option<u8> {
        take(data, 1).map(|b| b[0])
    }
    fn u16_(data: &mut &[u8]) -> Option<u16> {
        take(data, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    let mut ops = Vec::new();
    while let Some(code) = byte(&mut data) {
        let op = match code % OPCODES {
            0 => bytes(&mut data).map(Op::UdpTrigger),
            1 => bytes(&mut data).map(Op::UdpOther),
            2 => bytes(&mut data).map(Op::Tcp),
            3 => Some(Op::TcpClosed),
            4 => take(&mut data, 4)
                .map(|b| Op::Advance(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            5 => u16_(&mut data).map(Op::Back),
            6 => bytes(&mut data).map(Op::Allow),
            7 => bytes(&mut data).and_then(|n| byte(&mut data).map(|s| Op::Connect(n, s))),
            8 => take(&mut data, 2).map(|b| Op::Answer(b[0], b[1])),
            9 => take(&mut data, 2).map(|b| Op::End(b[0], b[1])),
            10 => byte(&mut data).and_then(|i| {
                let name = bytes(&mut data)?;
                let size = u16_(&mut data)?;
                let rate = u16_(&mut data)?;
                Some(Op::Send(i, name, size, rate))
            }),
            11 => Some(Op::ShortPoll),
            _ => Some(Op::Reopen),
        };
        match op {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    ops
}

/// The trigger server's address in the harness.
pub const TRIGGER: TrystAddr = TrystAddr {
    family: TRYST_AF_INET,
    ip: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    port: 9000,
};

/// Files received, by session (the callbacks' storage).
#[derive(Default)]
struct Store {
    incoming: BTreeMap<[u8; 16], Vec<u8>>,
}

unsafe extern "C" fn read(
    user: *mut c_void,
    session: TrystSessionId,
    incoming: u8,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> usize {
    // SAFETY: the library gives a buffer valid for `len` bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    if incoming == 0 {
        for (i, b) in out.iter_mut().enumerate() {
            *b = (offset as usize + i) as u8;
        }
        return len;
    }
    // SAFETY: `user` is the harness's store.
    let store = unsafe { &*(user as *const Store) };
    let Some(file) = store.incoming.get(&session.bytes) else {
        return 0;
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(file.len());
    let n = (file.len() - start).min(len);
    out[..n].copy_from_slice(&file[start..start + n]);
    n
}

unsafe extern "C" fn begin(
    user: *mut c_void,
    session: TrystSessionId,
    name: *const core::ffi::c_char,
    size: u64,
) -> i32 {
    // SAFETY: the library gives a NUL-terminated name.
    let name = unsafe { core::ffi::CStr::from_ptr(name) };
    assert!(!name.to_bytes().is_empty() && name.to_bytes().len() <= 255);
    // SAFETY: `user` is the harness's store.
    let store = unsafe { &mut *(user as *mut Store) };
    let size = usize::try_from(size).unwrap_or(usize::MAX).min(1 << 20);
    store.incoming.insert(session.bytes, vec![0; size]);
    0
}

unsafe extern "C" fn write(
    user: *mut c_void,
    session: TrystSessionId,
    offset: u64,
    data: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the library gives bytes valid for `len`.
    let data = unsafe { core::slice::from_raw_parts(data, len) };
    // SAFETY: `user` is the harness's store.
    let store = unsafe { &mut *(user as *mut Store) };
    let Some(file) = store.incoming.get_mut(&session.bytes) else {
        return -1;
    };
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    match file.get_mut(start..start.saturating_add(len)) {
        Some(dst) => {
            dst.copy_from_slice(data);
            0
        }
        None => -1,
    }
}

unsafe extern "C" fn end(user: *mut c_void, session: TrystSessionId, _keep: u8) -> i32 {
    // SAFETY: `user` is the harness's store.
    let store = unsafe { &mut *(user as *mut Store) };
    store.incoming.remove(&session.bytes);
    0
}

/// Memory for one handle, aligned for any.
#[repr(C, align(64))]
struct Slab([MaybeUninit<u8>; 1 << 20]);

fn check(code: i32) -> i32 {
    assert_ne!(code, TRYST_ERR_PANIC, "a call panicked inside the library");
    assert!(code <= 0, "codes are 0 or negative: {code}");
    code
}

/// The harness's terminal and what it saw.
struct Harness {
    t: *mut TrystTerminal,
    now: u64,
    sessions: Vec<TrystSessionId>,
    buf: Vec<u8>,
}

impl Harness {
    fn init(
        mem: *mut c_void,
        len: usize,
        io: &TrystFileIo,
        now: u64,
        seed: u8,
    ) -> *mut TrystTerminal {
        let name = b"cam1";
        let config = TrystConfig {
            name: name.as_ptr().cast(),
            name_len: name.len(),
            secret_key: [seed; 32],
            server_key: [9; 32],
            trigger_server: TRIGGER,
            seed: [seed.wrapping_add(1); 32],
            keepalive_secs: 0,
            accept_files: 1,
        };
        let mut t = core::ptr::null_mut();
        // SAFETY: `mem` is the harness's slab of `len` bytes; the rest are locals.
        let code = unsafe { tryst_terminal_init(mem, len, &config, io, now, &mut t) };
        assert_eq!(code, TRYST_OK);
        t
    }

    /// Polls until the terminal says when to come back.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let mut out = TrystOutput::default();
            // SAFETY: a live handle; the buffer and output are ours.
            let code = unsafe {
                tryst_terminal_poll(
                    self.t,
                    self.now,
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                    &mut out,
                )
            };
            assert_eq!(check(code), TRYST_OK);
            match out.kind {
                TrystOutputKind::Timeout => return,
                TrystOutputKind::Udp | TrystOutputKind::Tcp => {
                    assert!(out.len > 0 && out.len <= TRYST_MAX_TRANSMIT_LEN);
                    if out.kind == TrystOutputKind::Udp {
                        assert!(
                            out.addr.family == TRYST_AF_INET || out.addr.family == TRYST_AF_INET6
                        );
                    }
                }
                TrystOutputKind::Event => {
                    let e = &out.event;
                    assert!(e.kind != TrystEventKind::None);
                    assert!(e.name.contains(&0), "the name is NUL-terminated");
                    if e.kind == TrystEventKind::SessionReady && self.sessions.len() < 16 {
                        self.sessions.push(e.session);
                    }
                }
            }
        }
        panic!("poll never settled");
    }

    fn session(&self, i: u8) -> TrystSessionId {
        self.sessions
            .get(usize::from(i))
            .copied()
            .unwrap_or(TrystSessionId { bytes: [i; 16] })
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let store: *mut Store = Box::into_raw(Box::default());
    let io = TrystFileIo {
        user: store.cast(),
        read: Some(read),
        begin: Some(begin),
        write: Some(write),
        end: Some(end),
    };
    // Allocated uninitialised on the heap (never built on the stack).
    let mut slab: Box<MaybeUninit<Slab>> = Box::new_uninit();
    let size = tryst_terminal_size();
    assert!(size <= core::mem::size_of::<Slab>() && tryst_terminal_align() <= 64);
    let mem: *mut c_void = slab.as_mut_ptr().cast();
    let mut h = Harness {
        t: Harness::init(mem, size, &io, 1, seed),
        now: 1,
        sessions: Vec::new(),
        buf: vec![0; TRYST_MAX_TRANSMIT_LEN],
    };
    h.drain();
    for op in decode(rest) {
        let t = h.t;
        let now = h.now;
        // SAFETY (every call below): a live handle; pointers to locals
        // with their true lengths.
        match op {
            Op::UdpTrigger(mut d) => {
                check(unsafe {
                    tryst_terminal_handle_udp(t, now, &TRIGGER, d.as_mut_ptr(), d.len())
                });
            }
            Op::UdpOther(mut d) => {
                let from = TrystAddr {
                    port: 40000,
                    ..TRIGGER
                };
                check(unsafe { tryst_terminal_handle_udp(t, now, &from, d.as_mut_ptr(), d.len()) });
            }
            Op::Tcp(d) => {
                let code = check(unsafe { tryst_terminal_handle_tcp(t, now, d.as_ptr(), d.len()) });
                assert!(code == TRYST_OK || code == TRYST_ERR_NOT_TRYST);
            }
            Op::TcpClosed => {
                check(unsafe { tryst_terminal_handle_tcp_closed(t, now) });
            }
            Op::Advance(us) => {
                h.now = h.now.saturating_add(u64::from(us));
                check(unsafe { tryst_terminal_handle_timeout(t, h.now) });
            }
            Op::Back(us) => h.now = h.now.saturating_sub(u64::from(us)),
            Op::Allow(name) => {
                check(unsafe { tryst_terminal_allow(t, name.as_ptr().cast(), name.len()) });
            }
            Op::Connect(name, secs) => {
                let mut id = 0;
                check(unsafe {
                    tryst_terminal_connect(
                        t,
                        now,
                        name.as_ptr().cast(),
                        name.len(),
                        u32::from(secs),
                        &mut id,
                    )
                });
            }
            Op::Answer(q, v) => {
                check(unsafe { tryst_terminal_answer(t, now, u32::from(q), v) });
            }
            Op::End(i, r) => {
                check(unsafe { tryst_terminal_end_session(t, now, h.session(i), r) });
            }
            Op::Send(i, name, size, rate) => {
                check(unsafe {
                    tryst_terminal_send_file(
                        t,
                        now,
                        h.session(i),
                        name.as_ptr().cast(),
                        name.len(),
                        u64::from(size),
                        u64::from(rate),
                    )
                });
            }
            Op::ShortPoll => {
                let mut out = TrystOutput::default();
                let code = unsafe {
                    tryst_terminal_poll(
                        t,
                        now,
                        h.buf.as_mut_ptr(),
                        TRYST_MAX_TRANSMIT_LEN - 1,
                        &mut out,
                    )
                };
                assert_eq!(code, TRYST_ERR_LENGTH);
            }
            Op::Reopen => {
                assert_eq!(unsafe { tryst_terminal_close(t) }, TRYST_OK);
                let mut out = TrystOutput::default();
                let mut d = [0u8; 8];
                assert_eq!(unsafe { tryst_terminal_close(t) }, TRYST_ERR_CLOSED);
                assert_eq!(
                    unsafe {
                        tryst_terminal_poll(t, now, h.buf.as_mut_ptr(), h.buf.len(), &mut out)
                    },
                    TRYST_ERR_CLOSED
                );
                assert_eq!(
                    unsafe { tryst_terminal_handle_udp(t, now, &TRIGGER, d.as_mut_ptr(), d.len()) },
                    TRYST_ERR_CLOSED
                );
                assert_eq!(
                    unsafe { tryst_terminal_handle_timeout(t, now) },
                    TRYST_ERR_CLOSED
                );
                h.sessions.clear();
                // SAFETY: the store outlives the handles; no callback runs now.
                unsafe { (*store).incoming.clear() };
                h.t = Harness::init(mem, size, &io, h.now, seed.wrapping_add(1));
            }
        }
        h.drain();
    }
    // SAFETY: a live handle.
    assert_eq!(unsafe { tryst_terminal_close(h.t) }, TRYST_OK);
    // SAFETY: made by `Box::into_raw` above; the handle is closed.
    drop(unsafe { Box::from_raw(store) });
}

/// Seeds of the `ffi_terminal` corpus (written by the `write_seed_corpus`
/// example): the codec's vectors on the TCP stream and as datagrams, the
/// peer packets' vectors from a peer, and every app call once.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use tryst_core::wire::vectors;
    let with_seed = |ops: &[Op]| [&[7u8][..], &encode(ops)].concat();
    let tcp: Vec<Op> = vectors::ALL
        .iter()
        .map(|(_, wire)| Op::Tcp(wire.to_vec()))
        .collect();
    let udp: Vec<Op> = vectors::ALL
        .iter()
        .map(|(_, wire)| Op::UdpTrigger(wire.to_vec()))
        .collect();
    let peer: Vec<Op> = tryst_core::peer::packet::vectors::ALL
        .iter()
        .map(|(_, wire)| Op::UdpOther(wire.to_vec()))
        .collect();
    let calls = vec![
        Op::Allow(b"phone".to_vec()),
        Op::Connect(b"phone".to_vec(), 60),
        Op::Answer(1, 1),
        Op::End(0, 5),
        Op::Send(0, b"a.bin".to_vec(), 100, 0),
        Op::ShortPoll,
        Op::Advance(2_000_000),
        Op::Back(1000),
        Op::TcpClosed,
        Op::Advance(30_000_000),
        Op::Tcp(b"GET / HTTP/1.1\r\n".to_vec()),
        Op::Reopen,
        Op::Advance(1_000_000),
    ];
    vec![
        ("vectors_on_tcp", with_seed(&tcp)),
        ("vectors_as_datagrams", with_seed(&udp)),
        ("peer_packets", with_seed(&peer)),
        ("every_call", with_seed(&calls)),
    ]
}
