//! Which trigger server (shard) keeps a device alive: rendezvous hashing
//! (highest random weight) over the shard map the store holds.
//!
//! Every shard scores each device with SHA-256 of the shard's name and the
//! device ID; the live shard with the highest score is the device's. So
//! every session server that reads the same map picks the same shard with
//! no coordination, adding a shard moves only the devices it now wins
//! (about `1/n` of them), and when a shard dies only its own devices move,
//! each to the next shard in its own order (the runner-up), spread over
//! all the others. The score is a hash, not a secret: it only spreads load.
//!
//! Pure functions over borrowed names, no allocation: a session server
//! calls [`pick`] with what it knows to be alive.

use sha2::{Digest, Sha256};

use crate::wire::DeviceId;

/// The score of `shard` for `device`: the first 8 bytes of
/// SHA-256(`len(shard)` as one `u32` big-endian, `shard`, `device` as `u64`
/// big-endian). The length prefix keeps two names that run into the ID
/// apart.
pub fn score(shard: &[u8], device: DeviceId) -> u64 {
    let mut h = Sha256::new();
    let len = u32::try_from(shard.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(shard);
    h.update(device.0.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    for (out, byte) in first.iter_mut().zip(digest.iter()) {
        *out = *byte;
    }
    u64::from_be_bytes(first)
}

/// The index, among `shards` (their names), of the shard that keeps
/// `device`: the highest [`score`] among those `alive` says may take it.
/// A tie (two equal 64-bit scores) goes to the smaller name, so the answer
/// never depends on the order of the list. `None` when no shard is alive.
pub fn pick<'a, I>(
    device: DeviceId,
    shards: I,
    mut alive: impl FnMut(usize) -> bool,
) -> Option<usize>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut best: Option<(u64, &'a [u8], usize)> = None;
    for (i, name) in shards.into_iter().enumerate() {
        if !alive(i) {
            continue;
        }
        let s = score(name, device);
        let better = match best {
            None => true,
            Some((bs, bn, _)) => s > bs || (s == bs && name < bn),
        };
        if better {
            best = Some((s, name, i));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const NAMES: [&[u8]; 4] = [b"ts-a", b"ts-b", b"ts-c", b"ts-d"];

    fn owner(device: u64, alive: &[bool]) -> Option<usize> {
        pick(DeviceId(device), NAMES.iter().copied(), |i| alive[i])
    }

    #[test]
    fn the_score_is_sha256_of_the_length_prefixed_name_and_the_id() {
        // SHA-256(00 00 00 01 'a' 00 00 00 00 00 00 00 01), first 8 bytes.
        let mut h = Sha256::new();
        h.update([0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1]);
        let d = h.finalize();
        let want = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        assert_eq!(score(b"a", DeviceId(1)), want);
        // The length prefix: "a" + id differs from "" + another id.
        assert_ne!(score(b"ab", DeviceId(1)), score(b"a", DeviceId(1)));
    }

    #[test]
    fn no_live_shard_picks_none() {
        assert_eq!(owner(7, &[false; 4]), None);
        assert_eq!(pick(DeviceId(7), core::iter::empty(), |_| true), None);
    }

    #[test]
    fn devices_spread_over_every_shard() {
        let mut counts = [0u32; 4];
        for d in 0..4000u64 {
            counts[owner(d, &[true; 4]).unwrap()] += 1;
        }
        // 1000 each on average; a fair hash stays well within 20%.
        assert!(
            counts.iter().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_dead_shards_devices_spread_over_all_the_others() {
        let mut moved_to = [0u32; 4];
        for d in 0..4000u64 {
            if owner(d, &[true; 4]) == Some(1) {
                moved_to[owner(d, &[true, false, true, true]).unwrap()] += 1;
            }
        }
        assert_eq!(moved_to[1], 0);
        assert!(
            moved_to.iter().enumerate().all(|(i, &c)| i == 1 || c > 200),
            "{moved_to:?}"
        );
    }

    proptest! {
        #![proptest_config(proptest_config!(256, "shard.txt"))]

        /// Only the dead shard's devices move; a device of a live shard
        /// stays where it is.
        #[test]
        fn only_the_dead_shards_devices_move(device: u64, dead in 0usize..4) {
            let before = owner(device, &[true; 4]).unwrap();
            let mut alive = [true; 4];
            alive[dead] = false;
            let after = owner(device, &alive).unwrap();
            prop_assert_ne!(after, dead);
            if before != dead {
                prop_assert_eq!(after, before);
            }
        }

        /// The list's order does not matter: the same name wins.
        #[test]
        fn the_order_of_the_map_does_not_matter(device: u64, rotate in 0usize..4) {
            let mut names: Vec<&[u8]> = NAMES.to_vec();
            names.rotate_left(rotate);
            let a = owner(device, &[true; 4]).map(|i| NAMES[i]);
            let b = pick(DeviceId(device), names.iter().copied(), |_| true).map(|i| names[i]);
            prop_assert_eq!(a, b);
        }
    }
}
