//! `tryst-bench memory`: live heap bytes per registered device in the
//! core's trigger server and session server (issue 16's memory target: at
//! most 128 B per device in the trigger server, 1 KiB in the session
//! server, at 1,000,000 devices).
//!
//! Both machines are the ones the binaries run (`TriggerServer`,
//! `SessionServer` of tryst-core), linked to each other in memory (the
//! session server's upstream stream is the trigger server's accepted
//! connection, Noise IK handshake included). Each simulated device opens a
//! stream, registers (a Noise IK handshake carrying its `Register`),
//! confirms with a sealed `Poll`, the session server installs its UDP key
//! at the trigger server, and the device sends its first tagged keepalive
//! and gets the ack: the real inputs on a virtual clock. The terminal side
//! keeps nothing once its keepalive is acknowledged.
//!
//! A counting global allocator charges every allocation to the machine the
//! bench was calling into when it was made (a tag in a per-allocation
//! header, so a free made later, anywhere, is charged back to the same
//! machine). The figures are requested bytes: the allocator's own per-chunk
//! overhead (glibc: 8-16 B per allocation) comes on top, so the allocation
//! count per device is printed beside them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant as WallInstant};

use anyhow::{bail, Result};
use rand_core::OsRng;
use serde_json::json;
use tryst_core::crypto::udp_auth;
use tryst_core::crypto::{Initiator, SecureChannel, StaticKeypair};
use tryst_core::machine::{ConnectionId, Destination, Output};
use tryst_core::names::{NameRegistry, TrustMode};
use tryst_core::session_server::{SessionConfig, SessionServer};
use tryst_core::time::Instant;
use tryst_core::trigger_server::{TriggerConfig, TriggerServer};
use tryst_core::wire::{DecisionMode, HandshakeInit, Message, Name, Poll, Register};

/// Whom an allocation is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Account {
    /// The bench itself (the simulated terminals, buffers).
    Bench = 0,
    /// The trigger server machine.
    Trigger = 1,
    /// The session server machine.
    Session = 2,
}

const ACCOUNTS: usize = 3;
static LIVE: [AtomicI64; ACCOUNTS] = [const { AtomicI64::new(0) }; ACCOUNTS];
static COUNT: [AtomicI64; ACCOUNTS] = [const { AtomicI64::new(0) }; ACCOUNTS];

thread_local! {
    static CURRENT: Cell<u8> = const { Cell::new(Account::Bench as u8) };
}

/// The header before every block: big enough for any alignment up to 16
/// (larger alignments get a header of their own size).
const HEADER: usize = 16;

fn header_for(layout: &Layout) -> usize {
    layout.align().max(HEADER)
}

/// The counting allocator (`#[global_allocator]` of tryst-bench): the
/// system allocator, with each block's account in a header before it.
pub struct Counting;

// SAFETY: every block is the system allocator's, `header` bytes larger
// than asked and aligned as asked; the pointer handed out is `header`
// bytes in (a multiple of the alignment), the account byte sits at the
// block's start, and `dealloc` undoes exactly that with the same layout.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let header = header_for(&layout);
        let Ok(inner) = Layout::from_size_align(layout.size() + header, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `inner` has a non-zero size.
        let base = unsafe { System.alloc(inner) };
        if base.is_null() {
            return base;
        }
        let account = CURRENT.try_with(Cell::get).unwrap_or(0);
        // SAFETY: `base` points at `inner.size() >= header + 1` bytes.
        unsafe { base.write(account) };
        let slot = usize::from(account).min(ACCOUNTS - 1);
        LIVE[slot].fetch_add(layout.size() as i64, Ordering::Relaxed);
        COUNT[slot].fetch_add(1, Ordering::Relaxed);
        // SAFETY: within the block, `header` is a multiple of the alignment.
        unsafe { base.add(header) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let header = header_for(&layout);
        // SAFETY: `ptr` came from `alloc` with this layout: the block
        // starts `header` bytes before it.
        let base = unsafe { ptr.sub(header) };
        // SAFETY: the account byte `alloc` wrote.
        let account = unsafe { base.read() };
        let slot = usize::from(account).min(ACCOUNTS - 1);
        LIVE[slot].fetch_sub(layout.size() as i64, Ordering::Relaxed);
        COUNT[slot].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the same size and alignment `alloc` used.
        unsafe {
            System.dealloc(
                base,
                Layout::from_size_align_unchecked(layout.size() + header, layout.align()),
            )
        };
    }
}

/// Runs `f` with its allocations charged to `account`.
fn charged<T>(account: Account, f: impl FnOnce() -> T) -> T {
    let before = CURRENT.with(|c| c.replace(account as u8));
    let out = f();
    CURRENT.with(|c| c.set(before));
    out
}

/// Live bytes and blocks of `account`.
fn live(account: Account) -> (i64, i64) {
    (
        LIVE[account as usize].load(Ordering::Relaxed),
        COUNT[account as usize].load(Ordering::Relaxed),
    )
}

/// The process's resident set in bytes (`/proc/self/status`), if readable.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The trigger server's end of the session server's link.
const LINK: ConnectionId = ConnectionId(u64::MAX - 1);
/// Start of the virtual clock.
const T0: u64 = 1_000_000_000;

/// The two machines, linked, on a virtual clock.
struct World {
    ts: TriggerServer<OsRng>,
    ss: SessionServer<OsRng>,
    ss_public: tryst_core::wire::PublicKey,
    now: Instant,
    buf: Vec<u8>,
    /// Transmits on their way: (from the session server?, destination, bytes).
    queue: std::collections::VecDeque<(bool, Destination, Vec<u8>)>,
    /// Handshake replies to the device being registered.
    to_device: Vec<Vec<u8>>,
    /// Keepalive acks the trigger server sent.
    acks: u64,
}

impl World {
    fn new(capacity: usize) -> World {
        let ts_key = StaticKeypair::generate(&mut OsRng);
        let ss_key = StaticKeypair::generate(&mut OsRng);
        let ts_public = ts_key.public_key();
        let ss_public = ss_key.public_key();
        let ts = charged(Account::Trigger, || {
            let config = TriggerConfig {
                max_devices: capacity,
                ..TriggerConfig::default()
            };
            TriggerServer::new(config, ts_key, &[ss_public], OsRng)
        });
        let ss = charged(Account::Session, || {
            let mut config = SessionConfig::default();
            config.limits.max_channels = capacity;
            config.limits.max_connections = capacity + 16;
            SessionServer::new(
                config,
                ss_key,
                ts_public,
                NameRegistry::new(TrustMode::TrustOnFirstUse),
                OsRng,
            )
        });
        let mut world = World {
            ts,
            ss,
            ss_public,
            now: Instant::from_micros(T0),
            buf: vec![0u8; tryst_core::machine::MAX_TRANSMIT_LEN],
            queue: std::collections::VecDeque::new(),
            to_device: Vec::new(),
            acks: 0,
        };
        let now = world.now;
        charged(Account::Trigger, || {
            world
                .ts
                .handle_connection_opened(now, LINK, SocketAddr::from(([10, 0, 0, 2], 40000)))
        });
        charged(Account::Session, || world.ss.handle_timeout(now));
        world.pump();
        world
    }

    /// Delivers every transmit between the machines until both are quiet.
    fn pump(&mut self) {
        loop {
            self.collect();
            let Some((from_ss, destination, bytes)) = self.queue.pop_front() else {
                return;
            };
            let now = self.now;
            match (from_ss, destination) {
                (true, Destination::Upstream) => charged(Account::Trigger, || {
                    self.ts.handle_stream(now, LINK, &bytes)
                }),
                (true, Destination::Connection(_)) => self.to_device.push(bytes),
                (false, Destination::Connection(c)) if c == LINK => {
                    charged(Account::Session, || self.ss.handle_upstream(now, &bytes))
                }
                (false, Destination::Udp(_)) => self.acks += 1,
                _ => {}
            }
        }
    }

    /// Polls both machines until quiet, queueing their transmits.
    fn collect(&mut self) {
        loop {
            let out = charged(Account::Session, || {
                match self.ss.poll_output(&mut self.buf) {
                    Output::Transmit(t) => Some(Some((t.destination, t.len))),
                    Output::Timeout(_) => None,
                    // Facts a driver stores, events, closes: dropped here.
                    _ => Some(None),
                }
            });
            match out {
                Some(Some((d, len))) => self.queue.push_back((true, d, self.buf[..len].to_vec())),
                Some(None) => {}
                None => break,
            }
        }
        loop {
            let out = charged(Account::Trigger, || {
                match self.ts.poll_output(&mut self.buf) {
                    Output::Transmit(t) => Some(Some((t.destination, t.len))),
                    Output::Timeout(_) => None,
                    _ => Some(None),
                }
            });
            match out {
                Some(Some((d, len))) => self.queue.push_back((false, d, self.buf[..len].to_vec())),
                Some(None) => {}
                None => break,
            }
        }
    }

    /// Registers device `i` and sends its first keepalive; whether the
    /// trigger server acknowledged it.
    fn add_device(&mut self, i: u64) -> Result<()> {
        // Virtual time: 1 us per device (no timer of either machine comes
        // due while a million register), timers run as a driver would.
        self.now = Instant::from_micros(T0 + i);
        let now = self.now;
        if self.ss.poll_timeout().is_some_and(|at| at <= now) {
            charged(Account::Session, || self.ss.handle_timeout(now));
        }
        if self.ts.poll_timeout().is_some_and(|at| at <= now) {
            charged(Account::Trigger, || self.ts.handle_timeout(now));
        }
        let conn = ConnectionId(i + 1);
        // One source address per device, as behind many NATs.
        let ip = Ipv4Addr::from(0x0a00_0000u32 + 0x0100 + i as u32);
        let remote = SocketAddr::new(IpAddr::V4(ip), 40000);
        charged(Account::Session, || {
            self.ss.handle_connection_opened(now, conn, remote)
        });
        let kp = StaticKeypair::generate(&mut OsRng);
        let name_text = format!("dev{i}");
        let name = Name::new(&name_text).map_err(|e| anyhow::anyhow!("name: {e:?}"))?;
        let register = encode(&Message::Register(Register {
            mode: DecisionMode::PermissionList,
            identity: kp.public_key(),
            name,
            local: None,
        }));
        let mut noise = vec![0u8; 1024];
        let (mut init, n) =
            Initiator::start(&mut OsRng, now, &kp, &self.ss_public, &register, &mut noise)
                .map_err(|e| anyhow::anyhow!("initiator: {e:?}"))?;
        let hello = encode(&Message::HandshakeInit(HandshakeInit {
            noise: &noise[..n],
        }));
        charged(Account::Session, || {
            self.ss.handle_stream(now, conn, &hello)
        });
        self.pump();
        let mut channel: Option<(SecureChannel, tryst_core::wire::RegisterAck)> = None;
        for bytes in std::mem::take(&mut self.to_device) {
            if let Ok(Message::HandshakeReply(reply)) = Message::decode(&bytes) {
                let mut payload = vec![0u8; 1024];
                let (ch, n) = init
                    .finish(now, &reply, &mut payload)
                    .map_err(|e| anyhow::anyhow!("finish: {e:?}"))?;
                if let Ok(Message::RegisterAck(ack)) = Message::decode(&payload[..n]) {
                    channel = Some((ch, ack));
                }
            }
        }
        let Some((mut ch, ack)) = channel else {
            bail!("device {i}: no RegisterAck");
        };
        let poll = encode(&Message::Poll(Poll));
        let mut sealed = vec![0u8; poll.len() + 64];
        let n = ch
            .seal(&poll, &mut sealed)
            .map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
        charged(Account::Session, || {
            self.ss.handle_stream(now, conn, &sealed[..n])
        });
        self.pump();
        self.to_device.clear();
        let acks = self.acks;
        let keepalive = encode(&udp_auth::seal_keepalive(&ack.udp_key, ack.device_id, 1).into());
        let nat = SocketAddr::new(IpAddr::V4(ip), 50000);
        charged(Account::Trigger, || {
            self.ts.handle_udp(now, nat, &keepalive)
        });
        self.pump();
        if self.acks != acks + 1 {
            bail!("device {i}: keepalive not acknowledged");
        }
        Ok(())
    }
}

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// The per-device figures at one checkpoint.
struct Point {
    devices: u64,
    trigger: (i64, i64),
    session: (i64, i64),
}

/// `tryst-bench memory --devices N`: registers N devices, printing the
/// per-device figures at 10k, 100k and 1M (those up to N) and at N.
pub fn run(devices: u64) -> Result<()> {
    let capacity = usize::try_from(devices)?.saturating_add(16);
    let mut world = World::new(capacity);
    let base_trigger = live(Account::Trigger);
    let base_session = live(Account::Session);
    let rss_start = rss_bytes();
    let mut checkpoints: Vec<u64> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&c| c < devices)
        .collect();
    checkpoints.push(devices);
    let started = WallInstant::now();
    let mut points = Vec::new();
    let mut next = 0;
    for i in 0..devices {
        world.add_device(i)?;
        if i + 1 == checkpoints[next] {
            let (tb, tc) = live(Account::Trigger);
            let (sb, sc) = live(Account::Session);
            let p = Point {
                devices: i + 1,
                trigger: (tb - base_trigger.0, tc - base_trigger.1),
                session: (sb - base_session.0, sc - base_session.1),
            };
            report(&p, &world, started.elapsed(), rss_start);
            points.push(p);
            next += 1;
        }
    }
    if !world.ss.upstream_established() {
        bail!("the session server's link to the trigger server is not up");
    }
    if world.ts.device_count() as u64 != devices || world.ss.channel_count() as u64 != devices {
        bail!(
            "expected {devices} devices, the trigger server holds {} and the session server {} channels",
            world.ts.device_count(),
            world.ss.channel_count()
        );
    }
    Ok(())
}

fn report(p: &Point, world: &World, took: Duration, rss_start: Option<u64>) {
    let n = p.devices as f64;
    let per = |(bytes, _): (i64, i64)| bytes as f64 / n;
    let blocks = |(_, count): (i64, i64)| count as f64 / n;
    let rss = rss_bytes();
    let line = json!({
        "devices": p.devices,
        "trigger_bytes_per_device": (per(p.trigger) * 10.0).round() / 10.0,
        "trigger_allocations_per_device": (blocks(p.trigger) * 100.0).round() / 100.0,
        "session_bytes_per_device": (per(p.session) * 10.0).round() / 10.0,
        "session_allocations_per_device": (blocks(p.session) * 100.0).round() / 100.0,
        "trigger_live_bytes": p.trigger.0,
        "session_live_bytes": p.session.0,
        "trigger_devices": world.ts.device_count(),
        "session_channels": world.ss.channel_count(),
        "keepalive_acks": world.acks,
        "process_rss_bytes": rss,
        "process_rss_start_bytes": rss_start,
        "seconds": (took.as_secs_f64() * 10.0).round() / 10.0,
        "target_trigger_bytes": 128,
        "target_session_bytes": 1024,
    });
    println!("{line}");
    eprintln!(
        "{} devices: trigger server {:.1} B/device ({:.2} allocations), session server {:.1} B/device ({:.2} allocations); targets 128 and 1024 B; {:.1} s",
        p.devices,
        per(p.trigger),
        blocks(p.trigger),
        per(p.session),
        blocks(p.session),
        took.as_secs_f64()
    );
}
