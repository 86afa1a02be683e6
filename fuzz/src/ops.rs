//! What the operation-sequence targets share: the [`fuzz_ops!`] macro that
//! declares an `arbitrary`-derived operation type together with a
//! [`SeedEncode`] writer of the same bytes (so the `write_seed_corpus`
//! example can write seeds as operation lists), the virtual clock the
//! harnesses drive ([`TimeStep`], [`FuzzClock`]), the fixed addresses and
//! the byte helpers.
//!
//! # How seeds are written
//! `arbitrary` 1.x reads a derived enum's variant as a little-endian `u32`
//! `x` mapped to `(x * variants) >> 32`, integers as little-endian bytes, a
//! `bool` as one byte (`& 1`) and an `Option` as a `bool` then the value.
//! [`SeedWriter`] writes exactly that; [`SeedEncode`] is implemented for the
//! field types the seeds use. Byte slices and [`Message`]s take their
//! lengths from the end of the input, so they are never written into seeds
//! (their `encode` panics); the fuzzer mutates its way to them. The example
//! checks that every seed reads back as the operations it was written from.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use tryst_core::crypto::{OpenError, SecureChannel};
use tryst_core::time::Instant;
use tryst_core::wire::{
    DecisionMode, EndReason, ErrorCode, Message, Role, TriggerOutcome, Verdict, MAX_MESSAGE_LEN,
    MAX_PLAIN_MESSAGE_LEN,
};

/// Writes bytes that `arbitrary` reads back as chosen values (see the
/// [module](self) docs).
#[derive(Debug, Default, Clone)]
pub struct SeedWriter {
    bytes: Vec<u8>,
}

impl SeedWriter {
    /// An empty seed.
    pub fn new() -> SeedWriter {
        SeedWriter::default()
    }

    /// The variant `index` of an enum of `count` variants: the smallest `u32`
    /// that the derive maps to it.
    pub fn variant(&mut self, index: usize, count: usize) {
        assert!(index < count, "variant {index} of {count}");
        let choice = ((index as u64) << 32).div_ceil(count as u64);
        let choice = u32::try_from(choice).expect("index < count keeps the choice below 2^32");
        self.bytes.extend_from_slice(&choice.to_le_bytes());
    }

    /// Raw bytes, taken as they are (integers, arrays).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The seed written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Writes a value as the bytes `arbitrary` reads it back from.
pub trait SeedEncode {
    /// Appends this value's bytes.
    fn encode(&self, w: &mut SeedWriter);
}

macro_rules! seed_ints {
    ($($ty:ty),*) => {$(
        impl SeedEncode for $ty {
            fn encode(&self, w: &mut SeedWriter) {
                w.raw(&self.to_le_bytes());
            }
        }
    )*};
}
seed_ints!(u8, u16, u32, u64);

impl SeedEncode for bool {
    fn encode(&self, w: &mut SeedWriter) {
        w.raw(&[u8::from(*self)]);
    }
}

impl<const N: usize> SeedEncode for [u8; N] {
    fn encode(&self, w: &mut SeedWriter) {
        w.raw(self);
    }
}

impl<T: SeedEncode> SeedEncode for Option<T> {
    fn encode(&self, w: &mut SeedWriter) {
        self.is_some().encode(w);
        if let Some(value) = self {
            value.encode(w);
        }
    }
}

impl SeedEncode for &[u8] {
    fn encode(&self, _: &mut SeedWriter) {
        panic!("byte slices take their length from the end of the input: not used in seeds");
    }
}

impl SeedEncode for &str {
    fn encode(&self, _: &mut SeedWriter) {
        panic!("strings take their length from the end of the input: not used in seeds");
    }
}

impl SeedEncode for Message<'_> {
    fn encode(&self, _: &mut SeedWriter) {
        panic!("messages hold length-prefixed parts: not used in seeds");
    }
}

/// [`SeedEncode`] for the core's one-byte wire enums, whose derived
/// `Arbitrary` picks variants in declaration order.
macro_rules! seed_wire_enum {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl SeedEncode for $ty {
            fn encode(&self, w: &mut SeedWriter) {
                let all = [$($ty::$variant),+];
                let index = all.iter().position(|v| v == self).expect("listed");
                w.variant(index, all.len());
            }
        }
    };
}
seed_wire_enum!(DecisionMode {
    PermissionList,
    TerminalJudges
});
seed_wire_enum!(Role {
    Connecting,
    Connected
});
seed_wire_enum!(Verdict { Deny, Permit });
seed_wire_enum!(EndReason {
    Completed,
    DurationExpired,
    Forced,
    PeerLost,
    Cancelled,
    Failed
});
seed_wire_enum!(ErrorCode {
    NotPermitted,
    RegistrationRefused,
    BadRequest,
    Busy
});
seed_wire_enum!(TriggerOutcome {
    Offline,
    Delivered,
    Unacknowledged
});

/// Declares an `arbitrary`-derived enum of braced variants (`Start {}`,
/// `Send { term: u8 }`) or a struct, and implements [`SeedEncode`] for it
/// with the same layout. Derives `Debug`, `Clone`, `PartialEq`.
#[macro_export]
macro_rules! fuzz_ops {
    (
        $(#[$meta:meta])*
        pub enum $name:ident $(<$lt:lifetime>)? {
            $(
                $(#[$vmeta:meta])*
                $variant:ident { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? }
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, arbitrary::Arbitrary)]
        // Fuzz inputs, built one at a time: their size does not matter.
        #[allow(clippy::large_enum_variant)]
        pub enum $name $(<$lt>)? {
            $(
                $(#[$vmeta])*
                $variant { $( $(#[$fmeta])* $field : $fty ),* },
            )+
        }

        impl $(<$lt>)? $crate::ops::SeedEncode for $name $(<$lt>)? {
            #[allow(unused_variables)]
            fn encode(&self, w: &mut $crate::ops::SeedWriter) {
                const NAMES: &[&str] = &[$(stringify!($variant)),+];
                let position = |name: &str| {
                    NAMES.iter().position(|n| *n == name).expect("a declared variant")
                };
                match self {
                    $(
                        $name::$variant { $($field),* } => {
                            w.variant(position(stringify!($variant)), NAMES.len());
                            $( $crate::ops::SeedEncode::encode($field, w); )*
                        }
                    )+
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, arbitrary::Arbitrary)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field : $fty ),*
        }

        impl $crate::ops::SeedEncode for $name {
            fn encode(&self, w: &mut $crate::ops::SeedWriter) {
                $( $crate::ops::SeedEncode::encode(&self.$field, w); )*
            }
        }
    };
}

/// The most operations one input runs; the rest of the input is ignored.
pub const MAX_OPS: usize = 256;

/// Reads a setup value, then operations until the input is used up (at most
/// [`MAX_OPS`]). An operation cut short by the end of the input is dropped.
pub fn read_input<'a, S: Arbitrary<'a>, O: Arbitrary<'a>>(data: &'a [u8]) -> Option<(S, Vec<O>)> {
    let mut u = Unstructured::new(data);
    let setup = S::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match O::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some((setup, ops))
}

/// The bytes of a seed: a setup value, then operations.
pub fn write_input<S: SeedEncode, O: SeedEncode>(setup: &S, ops: &[O]) -> Vec<u8> {
    let mut w = SeedWriter::new();
    setup.encode(&mut w);
    for op in ops {
        op.encode(&mut w);
    }
    w.into_bytes()
}

fuzz_ops! {
    /// How an operation moves the virtual clock; every machine is then
    /// given `handle_timeout(now)`.
    pub enum TimeStep {
        /// Forward by any number of microseconds: huge values saturate at
        /// the end of time.
        Micros { micros: u64 },
        /// Forward by a realistic number of milliseconds.
        Millis { millis: u16 },
        /// Forward by seconds.
        Secs { secs: u16 },
        /// Back by any number of microseconds: the machine must clamp.
        Back { micros: u64 },
        /// To the machine's next timer, as a driver following the contract does.
        NextTimer {},
        /// Straight to this absolute time.
        Set { micros: u64 },
    }
}

/// The start of every harness clock: not zero, so going back has room.
pub const T0: Instant = Instant::from_micros(1_000_000_000);

/// The time a harness hands its machine, and the latest time it certainly
/// saw (the latest `now` of a `handle_timeout` call).
#[derive(Debug, Clone, Copy)]
pub struct FuzzClock {
    /// What the next input is stamped with.
    pub now: Instant,
    /// The latest `now` passed to `handle_timeout`: the machine's clock
    /// never runs behind it.
    pub latest: Instant,
    /// The latest `now` there ever was: the machine's clock never runs
    /// ahead of it.
    pub high: Instant,
}

impl Default for FuzzClock {
    fn default() -> Self {
        FuzzClock {
            now: T0,
            latest: Instant::ZERO,
            high: T0,
        }
    }
}

impl FuzzClock {
    /// Applies `step`; `next_timer` is the machine's `poll_timeout()`.
    pub fn step(&mut self, step: &TimeStep, next_timer: Option<Instant>) {
        self.now = match *step {
            TimeStep::Micros { micros } => self.now + Duration::from_micros(micros),
            TimeStep::Millis { millis } => self.now + Duration::from_millis(u64::from(millis)),
            TimeStep::Secs { secs } => self.now + Duration::from_secs(u64::from(secs)),
            TimeStep::Back { micros } => self.now.saturating_sub(Duration::from_micros(micros)),
            TimeStep::NextTimer {} => next_timer.map_or(self.now, |t| t.max(self.now)),
            TimeStep::Set { micros } => Instant::from_micros(micros),
        };
        self.high = self.high.max(self.now);
    }

    /// Forward by `d` from the latest time there ever was (for the final
    /// drain of a run).
    pub fn forward(&mut self, d: Duration) {
        self.now = self.high + d;
        self.high = self.now;
    }

    /// The driver contract, checked right after `handle_timeout(self.now)`:
    /// the next timer is later than every time `handle_timeout` was given.
    pub fn check_timeout(&mut self, machine: &str, next: Option<Instant>) {
        self.latest = self.latest.max(self.now);
        if let Some(next) = next {
            assert!(
                next > self.latest,
                "{machine}: poll_timeout {next:?} is not after {:?} following handle_timeout",
                self.latest
            );
        }
    }
}

/// One of a few fixed public addresses (IPv4 and IPv6) by index.
pub fn addr(index: u8) -> SocketAddr {
    match index % 8 {
        i @ 0..=4 => SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(203, 0, 113, i + 1),
            40_000 + u16::from(i),
        )),
        5 => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40_005)),
        6 => SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 6),
            40_006,
            0,
            0,
        )),
        _ => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 7)),
    }
}

/// `message` encoded, or `None` when it breaks the encoder's bounds (an
/// `arbitrary` envelope payload may).
pub fn encode(message: &Message<'_>) -> Option<Vec<u8>> {
    if !crate::within_codec_bounds(message) {
        return None;
    }
    let mut buffer = vec![0u8; message.encoded_len()];
    let n = message.encode(&mut buffer).ok()?;
    buffer.truncate(n);
    Some(buffer)
}

/// `message` encoded as a plaintext a secure channel can carry, if it is one.
pub fn encode_plain(message: &Message<'_>) -> Option<Vec<u8>> {
    encode(message).filter(|bytes| bytes.len() <= MAX_PLAIN_MESSAGE_LEN)
}

/// Seals `plain` (cut to the longest plaintext) into a whole `Sealed` message.
pub fn seal(channel: &mut SecureChannel, plain: &[u8]) -> Option<Vec<u8>> {
    let plain = &plain[..plain.len().min(MAX_PLAIN_MESSAGE_LEN)];
    let mut out = vec![0u8; MAX_MESSAGE_LEN];
    let n = channel.seal(plain, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// Decodes `bytes` as a `Sealed` message and opens it on `channel`.
pub fn open(channel: &mut SecureChannel, bytes: &[u8]) -> Result<Vec<u8>, OpenError> {
    let Ok(Message::Sealed(record)) = Message::decode(bytes) else {
        return Err(OpenError::BadLength(bytes.len()));
    };
    let mut out = vec![0u8; MAX_PLAIN_MESSAGE_LEN];
    let n = channel.open(&record, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// The index `pick` selects among `len` items, if there are any.
pub fn pick(pick: u8, len: usize) -> Option<usize> {
    (len > 0).then(|| usize::from(pick) % len)
}

/// Keeps a history vector at most `max` long, dropping the oldest.
pub fn push_bounded<T>(history: &mut Vec<T>, max: usize, item: T) {
    if history.len() >= max {
        history.remove(0);
    }
    history.push(item);
}
