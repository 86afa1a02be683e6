//! Token-bucket rate limits driven by the caller's clock, in bounded memory.
//!
//! A [`TokenBucket`] holds at most [`Limit::capacity`] tokens (the burst) and
//! earns one more every [`Limit::interval`]. It is kept in integer form (the
//! GCRA formulation of a token bucket): the state is the time, in
//! microseconds, that the bucket still needs to refill to full (its *debt*).
//! Spending a token adds one interval of debt; elapsed time pays it back one
//! microsecond per microsecond; a request is allowed while the debt after it
//! stays within `capacity × interval`. No floats, no fractional tokens lost,
//! no overflow (the constructors bound `capacity × interval` to a `u64`).
//!
//! Time comes only from the caller's `now`. Time going back never adds
//! tokens: the bucket treats an earlier `now` as no time having passed.
//!
//! A [`RateLimiter`] keeps one bucket per key (a requester, a source address,
//! a device) in a table of fixed capacity `N`: its memory is the same whatever
//! keys an attacker sends. When the table is full, a new key makes room by
//!
//! 1. dropping entries whose bucket has refilled to full: a full bucket is
//!    exactly what a new key starts with, so dropping one loses nothing;
//! 2. only if none is full, evicting the least recently used entry.
//!
//! The trade-off: step 2 forgets a key that was still being limited, so a
//! flood of fresh keys (more than `N` within one refill time) can push out a
//! real one and hand it a fresh burst. Two things keep that harmless:
//! unauthenticated traffic never gets a table entry at all (it is dropped
//! before any limiter keyed by identity), and the per-source limiter
//! ([`REGISTRATIONS`], keyed by [`SourceKey`]) sits in front of the handshake,
//! so the per-requester and per-device tables ([`CONNECTION_REQUESTS`],
//! [`KEEPALIVES`]) only ever see keys that proved who they are, whose number
//! the name registry bounds.
//!
//! Cost: a lookup walks one hash chain (`N` chains for `N` slots, so about
//! one entry on average; the hash is seeded FNV, not a keyed PRF, so keys
//! chosen to collide can lengthen a chain, but never beyond `N`). Making room
//! is O(1), except for a sweep over the table that runs only when some entry
//! may have refilled to full, and then frees every such entry at once.
//!
//! A table of `N` entries takes about `N × (size_of::<K>() + 48)` bytes
//! inline and never allocates; a server with a large `N` keeps it in a `Box`.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use crate::time::{Clock, Instant};

/// Connection requests, per authenticated requester: a burst of 10, then one
/// per second.
pub const CONNECTION_REQUESTS: Limit = Limit::one_every(10, Duration::from_secs(1));
/// Registrations (Noise handshakes), per source ([`SourceKey`]), charged
/// before any public-key work: a burst of 64, then one per 50 ms (20 a
/// second), room for a NAT full of devices coming back at once, while one
/// address gets a small share of a core's handshakes. The identity, once
/// proven, has its own tighter bucket (`session_server::IDENTITY_REGISTRATIONS`).
pub const REGISTRATIONS: Limit = Limit::one_every(64, Duration::from_millis(50));
/// Keepalives, per authenticated device: a burst of 4, then one per 5
/// seconds (far above any sane keepalive interval, far below a flood).
pub const KEEPALIVES: Limit = Limit::one_every(4, Duration::from_secs(5));

/// Default number of keys a server's [`RateLimiter`] tracks.
pub const DEFAULT_TRACKED_KEYS: usize = 4096;

/// How much a bucket holds and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    capacity: u32,
    interval_micros: u64,
}

impl Limit {
    /// At most `capacity` tokens (the burst), and one more every `interval`.
    ///
    /// A capacity of 0 is taken as 1 (a limit that never allows anything is
    /// a missing feature, not a limit). `interval` is cut to whole
    /// microseconds and bounded so that `capacity × interval` fits a `u64`
    /// (about 584,000 years); a zero interval means no limit.
    pub const fn one_every(capacity: u32, interval: Duration) -> Limit {
        let capacity = if capacity == 0 { 1 } else { capacity };
        let micros = interval.as_micros();
        let max = (u64::MAX / capacity as u64) as u128;
        let interval_micros = if micros > max {
            max as u64
        } else {
            micros as u64
        };
        Limit {
            capacity,
            interval_micros,
        }
    }

    /// At most `capacity` tokens, refilling `tokens_per_second` each second
    /// (rounded to a whole number of microseconds per token). Zero tokens per
    /// second means the bucket never refills in practice.
    pub const fn per_second(capacity: u32, tokens_per_second: u32) -> Limit {
        if tokens_per_second == 0 {
            return Limit::one_every(capacity, Duration::MAX);
        }
        Limit::one_every(
            capacity,
            Duration::from_micros(1_000_000 / tokens_per_second as u64),
        )
    }

    /// The most tokens a bucket holds: the burst.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The time to earn one token.
    pub const fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_micros)
    }

    /// Debt (in microseconds) of an empty bucket: `capacity × interval`.
    const fn tolerance(&self) -> u64 {
        // Cannot overflow: `one_every` bounds the interval by `u64::MAX / capacity`.
        self.capacity as u64 * self.interval_micros
    }
}

/// A request was refused by a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimited {
    /// How long until the same request would be allowed.
    pub retry_after: Duration,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited; retry after {} µs",
            self.retry_after.as_micros()
        )
    }
}

impl core::error::Error for RateLimited {}

/// The state of one bucket without its [`Limit`], as the keyed table stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// Microseconds still needed, at `at`, to refill to full.
    debt: u64,
    /// When `debt` was last brought up to date.
    at: Instant,
}

impl Bucket {
    const FULL: Bucket = Bucket {
        debt: 0,
        at: Instant::ZERO,
    };

    /// The debt left at `now`; an earlier `now` counts as no time passed.
    fn debt_at(&self, now: Instant) -> u64 {
        let elapsed = now.as_micros().saturating_sub(self.at.as_micros());
        self.debt.saturating_sub(elapsed)
    }

    fn check(&mut self, limit: &Limit, now: Instant) -> Result<(), RateLimited> {
        let tolerance = u128::from(limit.tolerance());
        let needed = u128::from(self.debt_at(now)) + u128::from(limit.interval_micros);
        if needed <= tolerance {
            // `needed <= tolerance <= u64::MAX`, so the conversion cannot fail.
            self.debt = u64::try_from(needed).unwrap_or(u64::MAX);
            self.at = self.at.max(now);
            Ok(())
        } else {
            let wait = u64::try_from(needed - tolerance).unwrap_or(u64::MAX);
            Err(RateLimited {
                retry_after: Duration::from_micros(wait),
            })
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        self.debt_at(now) == 0
    }

    /// When the bucket will be full if nothing more is spent.
    fn full_at(&self) -> Instant {
        self.at.saturating_add(Duration::from_micros(self.debt))
    }

    fn tokens(&self, limit: &Limit, now: Instant) -> u32 {
        if limit.interval_micros == 0 {
            return limit.capacity;
        }
        let spent = self.debt_at(now).div_ceil(limit.interval_micros);
        limit
            .capacity
            .saturating_sub(u32::try_from(spent).unwrap_or(u32::MAX))
    }
}

/// One token bucket, driven by the caller's clock. It starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    limit: Limit,
    bucket: Bucket,
}

impl TokenBucket {
    /// A full bucket with this limit.
    pub const fn new(limit: Limit) -> TokenBucket {
        TokenBucket {
            limit,
            bucket: Bucket::FULL,
        }
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn check(&mut self, now: Instant) -> Result<(), RateLimited> {
        self.bucket.check(&self.limit, now)
    }

    /// Whole tokens available at `now`.
    pub fn available(&self, now: Instant) -> u32 {
        self.bucket.tokens(&self.limit, now)
    }

    /// True if the bucket has refilled to full at `now` (it then says
    /// nothing a fresh bucket would not).
    pub fn is_full(&self, now: Instant) -> bool {
        self.bucket.is_full(now)
    }

    /// The limit this bucket applies.
    pub const fn limit(&self) -> Limit {
        self.limit
    }
}

/// What a per-source limiter is keyed by: an IPv4 address, or the /64
/// prefix of an IPv6 address (one subscriber usually holds a whole /64, so
/// keying by full IPv6 address would give an attacker 2^64 fresh buckets).
/// The port is never part of the key, since a sender picks it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix([u8; 8]),
}

impl SourceKey {
    /// The key of the host that sent from `addr`.
    pub fn from_addr(addr: &SocketAddr) -> SourceKey {
        SourceKey::from_ip(&addr.ip())
    }

    /// The key of the host at `ip`.
    pub fn from_ip(ip: &IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    SourceKey::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// "No slot": the end of a list.
const NIL: u32 = u32::MAX;

/// FNV-1a (64-bit) from a seed, with a final avalanche so that every bit of
/// the key moves the bucket number. Not a keyed PRF: a chosen-key flood can
/// still lengthen one chain, but never beyond the table's `N` entries.
#[derive(Debug, Clone, Copy)]
struct SeededFnv(u64);

impl Hasher for SeededFnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        // MurmurHash3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The FNV-1a offset basis: the seed of [`RateLimiter::new`].
const DEFAULT_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// One tracked key: its bucket, its place in the recency list and its hash chain.
#[derive(Debug, Clone)]
struct Slot<K> {
    key: K,
    bucket: Bucket,
    /// The next more recently used slot, or [`NIL`].
    newer: u32,
    /// The next less recently used slot, or [`NIL`].
    older: u32,
    /// The hash chain this slot is on.
    chain: u32,
    /// The next slot on the same hash chain, or [`NIL`].
    next_in_chain: u32,
}

/// A token bucket per key, for at most `N` keys at once. See the
/// [module](self) docs for what happens when the table is full.
///
/// The table is a fixed array of `N` slots with `N` hash chains (chained
/// hashing keeps lookups short even when every slot is in use, which an
/// open-addressed map at 100% load would not) and a recency list through
/// the slots. It never allocates.
#[derive(Debug, Clone)]
pub struct RateLimiter<K, const N: usize> {
    limit: Limit,
    clock: Clock,
    seed: u64,
    /// Slots, `None` when free. Grows to `N` and never beyond.
    slots: heapless::Vec<Option<Slot<K>>, N>,
    /// First slot of each hash chain, or [`NIL`].
    chains: [u32; N],
    /// Free slot numbers below `slots.len()`.
    free: heapless::Vec<u32, N>,
    /// Number of keys tracked.
    len: usize,
    /// Most recently used slot, or [`NIL`].
    newest: u32,
    /// Least recently used slot, or [`NIL`].
    oldest: u32,
    /// No entry is full before this instant (a lower bound: touching an entry
    /// only delays the moment it is full). Gates the sweep.
    earliest_full: Instant,
    #[cfg(test)]
    swept_slots: u64,
}

impl<K: Eq + Hash + Clone, const N: usize> RateLimiter<K, N> {
    /// An empty table applying `limit` to every key, with a fixed hash seed.
    pub fn new(limit: Limit) -> Self {
        Self::with_seed(limit, DEFAULT_SEED)
    }

    /// [`with_seed`](Self::with_seed), on the heap. A limiter tracking
    /// thousands of keys is hundreds of KiB: it is built in a frame of its
    /// own (never inlined), so that a constructor holding several never has
    /// them all on its stack at once (in a debug build a session server's
    /// `new` overflowed a 2 MiB thread stack).
    #[cfg(feature = "alloc")]
    #[inline(never)]
    pub fn boxed(limit: Limit, seed: u64) -> alloc::boxed::Box<Self> {
        alloc::boxed::Box::new(Self::with_seed(limit, seed))
    }

    /// An empty table whose hash chains depend on `seed`; a server passes a
    /// value from its random generator so that colliding keys are harder to
    /// choose from outside.
    pub fn with_seed(limit: Limit, seed: u64) -> Self {
        const { assert!(N >= 1 && N < NIL as usize, "N must be in 1..u32::MAX") };
        RateLimiter {
            limit,
            clock: Clock::default(),
            seed,
            slots: heapless::Vec::new(),
            chains: [NIL; N],
            free: heapless::Vec::new(),
            len: 0,
            newest: NIL,
            oldest: NIL,
            earliest_full: Instant::MAX,
            #[cfg(test)]
            swept_slots: 0,
        }
    }

    /// Takes one token from `key`'s bucket at `now`, or says how long until
    /// one is available. An unknown key starts with a full bucket.
    pub fn check(&mut self, now: Instant, key: &K) -> Result<(), RateLimited> {
        // One clock for the whole table: time going back is time standing still.
        let now = self.clock.observe(now);
        let limit = self.limit;
        let chain = self.chain_of(key);
        if let Some(i) = self.find(chain, key) {
            if let Some(slot) = self.slot_mut(i) {
                let result = slot.bucket.check(&limit, now);
                // Refused requests count as use too: an abusive key stays tracked.
                self.make_newest(i);
                return result;
            }
        }
        let mut bucket = Bucket::FULL;
        let result = bucket.check(&limit, now);
        if bucket.is_full(now) {
            // Nothing to remember (a limit with a zero interval).
            return result;
        }
        if self.len >= N {
            self.make_room(now);
        }
        self.insert(chain, key.clone(), bucket);
        result
    }

    /// True if `key` currently has a bucket in the table.
    pub fn is_tracked(&self, key: &K) -> bool {
        self.find(self.chain_of(key), key).is_some()
    }

    /// Number of keys tracked now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most keys this table tracks at once.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The limit applied to every key.
    pub const fn limit(&self) -> Limit {
        self.limit
    }

    /// The hash chain `key` belongs on.
    fn chain_of(&self, key: &K) -> u32 {
        let mut hasher = SeededFnv(self.seed);
        key.hash(&mut hasher);
        // Multiply-shift maps the 64-bit hash evenly onto 0..N without a division.
        let chain = (u128::from(hasher.finish()) * N as u128) >> 64;
        // `chain < N < u32::MAX`.
        chain as u32
    }

    fn find(&self, chain: u32, key: &K) -> Option<u32> {
        let mut i = self.chains.get(chain as usize).copied().unwrap_or(NIL);
        while let Some(slot) = self.slot(i) {
            if slot.key == *key {
                return Some(i);
            }
            i = slot.next_in_chain;
        }
        None
    }

    fn slot(&self, i: u32) -> Option<&Slot<K>> {
        self.slots.get(i as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, i: u32) -> Option<&mut Slot<K>> {
        self.slots.get_mut(i as usize).and_then(Option::as_mut)
    }

    /// Frees one slot or more in a full table.
    fn make_room(&mut self, now: Instant) {
        // The least recently used entry is the likeliest to be full.
        let oldest = self.oldest;
        if self.slot(oldest).is_some_and(|s| s.bucket.is_full(now)) {
            self.remove(oldest);
            return;
        }
        if now >= self.earliest_full {
            self.sweep(now);
            if self.len < N {
                return;
            }
        }
        let oldest = self.oldest;
        self.remove(oldest);
    }

    /// Drops every entry whose bucket is full and recomputes `earliest_full`.
    fn sweep(&mut self, now: Instant) {
        let mut earliest = Instant::MAX;
        for i in 0..self.slots.len() {
            // `i < N < u32::MAX`, checked in `with_seed`.
            let i = i as u32;
            #[cfg(test)]
            {
                self.swept_slots += 1;
            }
            let Some(slot) = self.slot(i) else { continue };
            if slot.bucket.is_full(now) {
                self.remove(i);
            } else {
                earliest = earliest.min(slot.bucket.full_at());
            }
        }
        self.earliest_full = earliest;
    }

    fn insert(&mut self, chain: u32, key: K, bucket: Bucket) {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                // `slots.len() < N < u32::MAX`.
                let i = self.slots.len() as u32;
                if self.slots.push(None).is_err() {
                    return; // Unreachable: fewer than N keys are tracked here.
                }
                i
            }
        };
        let Some(head) = self.chains.get_mut(chain as usize) else {
            let _ = self.free.push(i);
            return; // Unreachable: `chain_of` is below N.
        };
        let next_in_chain = *head;
        *head = i;
        if let Some(place) = self.slots.get_mut(i as usize) {
            *place = Some(Slot {
                key,
                bucket,
                newer: NIL,
                older: NIL,
                chain,
                next_in_chain,
            });
        }
        self.len += 1;
        self.earliest_full = self.earliest_full.min(bucket.full_at());
        self.link_newest(i);
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let Some(slot) = self.slots.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        // Take the slot off its hash chain.
        let head = self.chains.get(slot.chain as usize).copied().unwrap_or(NIL);
        if head == i {
            if let Some(head) = self.chains.get_mut(slot.chain as usize) {
                *head = slot.next_in_chain;
            }
        } else {
            let mut j = head;
            while let Some(s) = self.slot_mut(j) {
                if s.next_in_chain == i {
                    s.next_in_chain = slot.next_in_chain;
                    break;
                }
                j = s.next_in_chain;
            }
        }
        self.len -= 1;
        let _ = self.free.push(i);
    }

    fn make_newest(&mut self, i: u32) {
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
    }

    /// Takes slot `i` out of the recency list.
    fn unlink(&mut self, i: u32) {
        let Some(slot) = self.slot_mut(i) else { return };
        let (newer, older) = (slot.newer, slot.older);
        slot.newer = NIL;
        slot.older = NIL;
        match self.slot_mut(newer) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.slot_mut(older) {
            Some(o) => o.newer = newer,
            None => self.oldest = newer,
        }
    }

    /// Puts the unlinked slot `i` at the newest end of the recency list.
    fn link_newest(&mut self, i: u32) {
        let previous = self.newest;
        let Some(slot) = self.slot_mut(i) else { return };
        slot.older = previous;
        slot.newer = NIL;
        match self.slot_mut(previous) {
            Some(p) => p.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    fn at_ms(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn bucket_allows_its_burst_then_refuses() {
        let mut b = TokenBucket::new(Limit::one_every(3, Duration::from_secs(1)));
        let now = at_ms(5_000);
        for _ in 0..3 {
            assert_eq!(b.check(now), Ok(()));
        }
        assert_eq!(
            b.check(now),
            Err(RateLimited {
                retry_after: Duration::from_secs(1)
            })
        );
        assert_eq!(b.available(now), 0);
    }

    #[test]
    fn bucket_refills_one_token_per_interval_up_to_capacity() {
        let mut b = TokenBucket::new(Limit::one_every(2, Duration::from_secs(10)));
        let t0 = at_ms(0);
        b.check(t0).unwrap();
        b.check(t0).unwrap();
        let refused = b.check(at_ms(4_000)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert_eq!(b.check(at_ms(10_000)), Ok(()));
        assert!(b.check(at_ms(10_000)).is_err());
        // A long pause refills to capacity, never beyond.
        assert_eq!(b.available(at_ms(1_000_000)), 2);
        assert!(b.is_full(at_ms(1_000_000)));
    }

    #[test]
    fn partial_refills_are_not_lost_between_calls() {
        // One token per 10 s, polled every millisecond: the elapsed time still
        // adds up to a token after exactly 10 s.
        let mut b = TokenBucket::new(Limit::one_every(1, Duration::from_secs(10)));
        b.check(at_ms(0)).unwrap();
        for ms in 1..10_000 {
            assert!(b.check(at_ms(ms)).is_err(), "allowed early at {ms} ms");
        }
        assert_eq!(b.check(at_ms(10_000)), Ok(()));
    }

    #[test]
    fn time_going_back_never_adds_tokens_or_panics() {
        let mut b = TokenBucket::new(Limit::one_every(2, Duration::from_secs(1)));
        let late = at_ms(100_000);
        b.check(late).unwrap();
        b.check(late).unwrap();
        for now in [at_ms(0), at_ms(99_999), Instant::ZERO] {
            assert!(b.check(now).is_err());
            assert_eq!(b.available(now), 0);
        }
        // Far in the future the bucket is full again: two tokens, no more,
        // even if the clock then jumps back to zero.
        assert!(b.check(Instant::MAX).is_ok());
        assert!(b.check(Instant::ZERO).is_ok());
        assert!(b.check(Instant::ZERO).is_err());
    }

    #[test]
    fn extreme_limits_neither_panic_nor_overflow() {
        let mut never = TokenBucket::new(Limit::per_second(3, 0));
        for _ in 0..3 {
            assert!(never.check(Instant::MAX).is_ok());
        }
        assert!(never.check(Instant::MAX).is_err());
        let mut unlimited = TokenBucket::new(Limit::one_every(1, Duration::ZERO));
        for _ in 0..1000 {
            assert!(unlimited.check(Instant::ZERO).is_ok());
        }
        let mut zero = TokenBucket::new(Limit::one_every(0, Duration::from_secs(1)));
        assert_eq!(zero.limit().capacity(), 1);
        assert!(zero.check(Instant::ZERO).is_ok());
        let huge = Limit::one_every(u32::MAX, Duration::MAX);
        assert!(huge.interval() > Duration::ZERO);
        let mut h = TokenBucket::new(huge);
        assert!(h.check(Instant::MAX).is_ok());
    }

    #[test]
    fn per_second_matches_one_every() {
        assert_eq!(
            Limit::per_second(10, 1),
            Limit::one_every(10, Duration::from_secs(1))
        );
        assert_eq!(
            Limit::per_second(4, 4).interval(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn named_defaults_have_the_documented_burst_and_rate() {
        assert_eq!(CONNECTION_REQUESTS.capacity(), 10);
        assert_eq!(CONNECTION_REQUESTS.interval(), Duration::from_secs(1));
        assert_eq!(REGISTRATIONS.capacity(), 64);
        assert_eq!(REGISTRATIONS.interval(), Duration::from_millis(50));
        assert_eq!(KEEPALIVES.capacity(), 4);
        assert_eq!(KEEPALIVES.interval(), Duration::from_secs(5));
    }

    #[test]
    fn limiter_keeps_one_bucket_per_key() {
        let mut l: RateLimiter<u32, 8> =
            RateLimiter::new(Limit::one_every(2, Duration::from_secs(1)));
        let now = at_ms(0);
        assert!(l.check(now, &1).is_ok());
        assert!(l.check(now, &1).is_ok());
        assert!(l.check(now, &1).is_err());
        // Another key is unaffected.
        assert!(l.check(now, &2).is_ok());
        assert_eq!(l.len(), 2);
        // Key 1 refills over time.
        assert!(l.check(at_ms(1_000), &1).is_ok());
        assert!(l.check(at_ms(1_000), &1).is_err());
    }

    #[test]
    fn limiter_ignores_time_going_back() {
        let mut l: RateLimiter<u32, 8> =
            RateLimiter::new(Limit::one_every(1, Duration::from_secs(1)));
        assert!(l.check(at_ms(10_000), &7).is_ok());
        // A clock that jumps back 10 s neither refills nor panics...
        assert!(l.check(at_ms(0), &7).is_err());
        // ...and a new key seen "in the past" is charged at the latest time.
        assert!(l.check(at_ms(0), &8).is_ok());
        assert!(l.check(at_ms(10_999), &8).is_err());
        assert!(l.check(at_ms(11_000), &8).is_ok());
    }

    #[test]
    fn full_table_drops_refilled_entries_before_the_least_recently_used() {
        let limit = Limit::one_every(2, Duration::from_secs(1));
        let mut l: RateLimiter<u32, 4> = RateLimiter::new(limit);
        // Key 1 is the least recently used and still owes 2 s of refill.
        l.check(at_ms(0), &1).unwrap();
        l.check(at_ms(0), &1).unwrap();
        l.check(at_ms(100), &2).unwrap(); // full again at 1.1 s
        l.check(at_ms(200), &3).unwrap(); // full at 1.2 s
        l.check(at_ms(300), &4).unwrap(); // full at 1.3 s
        l.check(at_ms(1_150), &5).unwrap();
        assert_eq!(l.len(), 4);
        assert!(!l.is_tracked(&2), "the refilled entry made room");
        assert!(l.is_tracked(&1), "the limited key is remembered");
        assert!(l.check(at_ms(1_150), &1).is_ok());
        assert!(l.check(at_ms(1_150), &1).is_err());
    }

    #[test]
    fn full_table_evicts_the_least_recently_used_when_nothing_has_refilled() {
        let mut l: RateLimiter<u32, 4> =
            RateLimiter::new(Limit::one_every(1, Duration::from_secs(60)));
        for k in 1..=4 {
            l.check(at_ms(u64::from(k)), &k).unwrap();
        }
        // Key 1 is refused (still tracked) and so becomes the most recently used.
        assert!(l.check(at_ms(10), &1).is_err());
        l.check(at_ms(20), &5).unwrap();
        assert_eq!(l.len(), 4);
        assert!(!l.is_tracked(&2), "key 2 was the least recently used");
        for k in [1, 3, 4, 5] {
            assert!(l.is_tracked(&k));
        }
        l.check(at_ms(30), &6).unwrap();
        assert!(!l.is_tracked(&3));
    }

    #[test]
    fn full_table_stays_bounded_and_consistent_under_churn() {
        let mut l: RateLimiter<u32, 16> =
            RateLimiter::new(Limit::one_every(3, Duration::from_millis(50)));
        let mut now = 0;
        for round in 0u32..20_000 {
            now += u64::from(round % 7);
            let key = round.wrapping_mul(2_654_435_761) % 64;
            let _ = l.check(Instant::from_micros(now * 1000), &key);
            assert!(l.len() <= 16);
            assert_eq!(l.len() + l.free.len(), l.slots.len());
        }
        // The recency list holds exactly the tracked keys.
        let mut seen = 0;
        let mut i = l.oldest;
        while let Some(slot) = l.slot(i) {
            assert!(l.is_tracked(&slot.key));
            seen += 1;
            i = slot.newer;
        }
        assert_eq!(seen, l.len());
    }

    #[test]
    fn flood_of_a_million_distinct_keys_never_grows_the_table_and_stays_fast() {
        type Table = RateLimiter<u64, 1024>;
        let size = core::mem::size_of::<Table>();
        let mut l: Table = RateLimiter::new(CONNECTION_REQUESTS);
        let started = std::time::Instant::now();
        // A slow clock (1 µs per packet): no entry refills during the flood.
        for k in 0..1_000_000u64 {
            assert!(l.check(Instant::from_micros(k), &k).is_ok());
        }
        assert_eq!(l.len(), 1024);
        // A faster clock: entries refill while the flood goes on, and sweeps
        // free them in bulk rather than once per packet.
        for k in 0..1_000_000u64 {
            let _ = l.check(
                Instant::from_micros(1_000_000 + k * 2_000),
                &(k + 1_000_000),
            );
        }
        assert!(l.len() <= 1024);
        assert!(
            l.swept_slots <= 100_000,
            "sweeps visited {} slots",
            l.swept_slots
        );
        assert_eq!(core::mem::size_of::<Table>(), size);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "flood took {:?}",
            started.elapsed()
        );
    }

    /// Steps of a random workload: a key and a clock move (possibly back).
    fn workload(keys: u32) -> impl proptest::strategy::Strategy<Value = std::vec::Vec<(u32, i64)>> {
        proptest::collection::vec((0..keys, -500i64..3_000), 1..400)
    }

    /// Runs `steps` through `limiter` and an unbounded per-key model that
    /// clamps time the same way, returning (limiter, model) answers.
    fn run<const N: usize>(limit: Limit, steps: &[(u32, i64)]) -> std::vec::Vec<(bool, bool)> {
        let mut limiter: RateLimiter<u32, N> = RateLimiter::with_seed(limit, 7);
        let mut model = std::collections::HashMap::new();
        let (mut clock, mut ms) = (Clock::default(), 10_000i64);
        let mut answers = std::vec::Vec::new();
        for &(key, dt) in steps {
            ms = (ms + dt).max(0);
            let now = Instant::from_micros(ms as u64 * 1000);
            let got = limiter.check(now, &key).is_ok();
            let clamped = clock.observe(now);
            let want = model
                .entry(key)
                .or_insert_with(|| TokenBucket::new(limit))
                .check(clamped)
                .is_ok();
            assert!(limiter.len() <= N);
            answers.push((got, want));
        }
        answers
    }

    proptest::proptest! {
        #![proptest_config(proptest_config!(256, "core-ratelimit.txt"))]

        #[test]
        fn table_with_room_for_every_key_matches_one_bucket_per_key(steps in workload(8)) {
            for (got, want) in run::<8>(Limit::one_every(3, Duration::from_secs(2)), &steps) {
                proptest::prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn full_table_is_never_stricter_than_an_unbounded_one(steps in workload(32)) {
            for (got, want) in run::<4>(Limit::one_every(2, Duration::from_secs(1)), &steps) {
                // Eviction can only forget a debt, never invent one.
                proptest::prop_assert!(got || !want);
            }
        }
    }

    #[test]
    fn source_key_ignores_ports_and_the_ipv6_interface_id() {
        let a = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1000));
        let b = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 2000));
        assert_eq!(SourceKey::from_addr(&a), SourceKey::from_addr(&b));
        let p = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1);
        let q = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 1, 2, 3);
        let r = Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1);
        let key = |ip| SourceKey::from_addr(&SocketAddr::V6(SocketAddrV6::new(ip, 9, 0, 0)));
        assert_eq!(key(p), key(q));
        assert_ne!(key(p), key(r));
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        assert_eq!(key(mapped), SourceKey::from_addr(&a));
    }
}
