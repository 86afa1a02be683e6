//! A bounded set of disjoint half-open `u64` ranges, in a fixed array.
//!
//! The transport keeps several of these: the packet numbers received (for
//! ACK frames), the stream bytes received above the delivered prefix, the
//! stream bytes acknowledged above the acked prefix, and the stream bytes to
//! retransmit. Each has a named capacity; a set never allocates and an insert
//! that would need one range too many is refused (or, where extra coverage is
//! harmless, merged into a neighbour).

/// One range `[start, end)`; `start < end` for every stored range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// First value in the range.
    pub start: u64,
    /// One past the last value in the range.
    pub end: u64,
}

/// An insert needed a new range but the set is at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangesFull;

/// Disjoint, non-adjacent ranges sorted ascending, at most `N` of them.
#[derive(Debug, Clone)]
pub struct RangeSet<const N: usize> {
    ranges: [Range; N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RangeSet<N> {
    /// An empty set.
    pub const fn new() -> Self {
        RangeSet {
            ranges: [Range { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// The stored ranges, ascending.
    pub fn as_slice(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    /// How many ranges are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is in the set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every range.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The lowest range.
    pub fn first(&self) -> Option<Range> {
        self.as_slice().first().copied()
    }

    /// The highest range.
    pub fn last(&self) -> Option<Range> {
        self.as_slice().last().copied()
    }

    /// Whether `value` is in the set.
    pub fn contains(&self, value: u64) -> bool {
        let slice = self.as_slice();
        // First range that ends after `value`.
        let i = slice.partition_point(|r| r.end <= value);
        slice.get(i).is_some_and(|r| r.start <= value)
    }

    /// The index range `[lo, hi)` of stored ranges that overlap or touch
    /// `[start, end)` (so they would merge with it).
    fn touching(&self, start: u64, end: u64) -> (usize, usize) {
        let slice = self.as_slice();
        let lo = slice.partition_point(|r| r.end < start);
        let hi = slice.partition_point(|r| r.start <= end);
        (lo, hi.max(lo))
    }

    /// Whether inserting `[start, end)` would succeed.
    pub fn can_insert(&self, start: u64, end: u64) -> bool {
        if start >= end || self.len < N {
            return true;
        }
        let (lo, hi) = self.touching(start, end);
        hi > lo
    }

    /// Adds `[start, end)`, merging with overlapping or adjacent ranges.
    /// An empty range is a no-op. Fails, changing nothing, when the range
    /// touches no stored range and the set is full.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), RangesFull> {
        if start >= end {
            return Ok(());
        }
        // Fast path: extends the last range (in-order arrival).
        if let Some(last) = self.len.checked_sub(1) {
            let r = &mut self.ranges[last];
            if start >= r.start && start <= r.end {
                r.end = r.end.max(end);
                return Ok(());
            }
        }
        let (lo, hi) = self.touching(start, end);
        if hi == lo {
            if self.len == N {
                return Err(RangesFull);
            }
            self.ranges.copy_within(lo..self.len, lo + 1);
            self.ranges[lo] = Range { start, end };
            self.len += 1;
            return Ok(());
        }
        let merged = Range {
            start: start.min(self.ranges[lo].start),
            end: end.max(self.ranges[hi - 1].end),
        };
        self.ranges[lo] = merged;
        let removed = hi - lo - 1;
        if removed > 0 {
            self.ranges.copy_within(hi..self.len, lo + 1);
            self.len -= removed;
        }
        Ok(())
    }

    /// Adds `[start, end)`; when the set is full, merges it with its nearest
    /// neighbour instead (covering the gap between them too). For sets where
    /// covering more than asked is harmless (bytes to retransmit).
    pub fn insert_covering(&mut self, start: u64, end: u64) {
        if self.insert(start, end).is_ok() {
            return;
        }
        // Full and touching nothing: pick the neighbour with the smaller gap.
        let slice = self.as_slice();
        let i = slice.partition_point(|r| r.end < start);
        let below = i.checked_sub(1).map(|j| (j, start - slice[j].end));
        let above = slice.get(i).map(|r| (i, r.start - end));
        let target = match (below, above) {
            (Some(b), Some(a)) => {
                if b.1 <= a.1 {
                    b.0
                } else {
                    a.0
                }
            }
            (Some(b), None) => b.0,
            (None, Some(a)) => a.0,
            (None, None) => return, // N == 0: nothing can be stored
        };
        let r = &mut self.ranges[target];
        r.start = r.start.min(start);
        r.end = r.end.max(end);
    }

    /// Removes `[start, end)` from the set. Splitting a range in two needs
    /// a free slot; when the set is full the lower piece is kept and the
    /// upper is dropped (callers use this only where forgetting is safe) —
    /// returns whether everything outside `[start, end)` was kept.
    pub fn remove(&mut self, start: u64, end: u64) -> bool {
        if start >= end || self.len == 0 {
            return true;
        }
        let slice = self.as_slice();
        let lo = slice.partition_point(|r| r.end <= start);
        let hi = slice.partition_point(|r| r.start < end);
        if lo >= hi {
            return true;
        }
        let first = self.ranges[lo];
        let last = self.ranges[hi - 1];
        let mut keep = [Range::default(); 2];
        let mut kept = 0;
        if first.start < start {
            keep[kept] = Range {
                start: first.start,
                end: start,
            };
            kept += 1;
        }
        if last.end > end {
            keep[kept] = Range {
                start: end,
                end: last.end,
            };
            kept += 1;
        }
        let removed = hi - lo;
        let mut complete = true;
        if kept > removed && self.len == N {
            // Needs one more slot than we have: drop the upper piece.
            kept = removed;
            complete = false;
        }
        // Replace ranges[lo..hi] with keep[..kept].
        let new_len = self.len - removed + kept;
        self.ranges.copy_within(hi..self.len, lo + kept);
        self.ranges[lo..lo + kept].copy_from_slice(&keep[..kept]);
        self.len = new_len;
        complete
    }

    /// Removes and returns the lowest range.
    pub fn pop_first(&mut self) -> Option<Range> {
        let first = self.first()?;
        self.ranges.copy_within(1..self.len, 0);
        self.len -= 1;
        Some(first)
    }

    /// Removes the lowest range (to make room), returning it.
    pub fn evict_first(&mut self) -> Option<Range> {
        self.pop_first()
    }

    /// The first sub-range of `[start, end)` not covered by the set, if any.
    pub fn first_gap_in(&self, start: u64, end: u64) -> Option<Range> {
        if start >= end {
            return None;
        }
        let slice = self.as_slice();
        let mut cursor = start;
        let mut i = slice.partition_point(|r| r.end <= cursor);
        while let Some(r) = slice.get(i) {
            if r.start > cursor {
                return Some(Range {
                    start: cursor,
                    end: r.start.min(end),
                });
            }
            cursor = r.end;
            if cursor >= end {
                return None;
            }
            i += 1;
        }
        Some(Range { start: cursor, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn ranges<const N: usize>(set: &RangeSet<N>) -> Vec<(u64, u64)> {
        set.as_slice().iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn adjacent_and_overlapping_inserts_merge() {
        let mut set = RangeSet::<4>::new();
        set.insert(10, 20).unwrap();
        set.insert(30, 40).unwrap();
        set.insert(20, 30).unwrap();
        assert_eq!(ranges(&set), [(10, 40)]);
        set.insert(5, 12).unwrap();
        set.insert(39, 50).unwrap();
        assert_eq!(ranges(&set), [(5, 50)]);
    }

    #[test]
    fn full_set_refuses_a_new_range_but_merges() {
        let mut set = RangeSet::<2>::new();
        set.insert(0, 1).unwrap();
        set.insert(10, 11).unwrap();
        assert_eq!(set.insert(5, 6), Err(RangesFull));
        assert!(!set.can_insert(5, 6));
        assert!(set.can_insert(1, 3));
        set.insert(1, 3).unwrap();
        assert_eq!(ranges(&set), [(0, 3), (10, 11)]);
    }

    #[test]
    fn insert_covering_merges_into_nearest_neighbour_when_full() {
        let mut set = RangeSet::<2>::new();
        set.insert(0, 1).unwrap();
        set.insert(100, 101).unwrap();
        set.insert_covering(90, 91);
        assert_eq!(ranges(&set), [(0, 1), (90, 101)]);
    }

    #[test]
    fn remove_splits_and_trims() {
        let mut set = RangeSet::<4>::new();
        set.insert(0, 100).unwrap();
        assert!(set.remove(10, 20));
        assert_eq!(ranges(&set), [(0, 10), (20, 100)]);
        assert!(set.remove(5, 25));
        assert_eq!(ranges(&set), [(0, 5), (25, 100)]);
        assert!(set.remove(0, 1000));
        assert!(set.is_empty());
    }

    #[test]
    fn first_gap_skips_covered_parts() {
        let mut set = RangeSet::<4>::new();
        set.insert(0, 10).unwrap();
        set.insert(15, 20).unwrap();
        assert_eq!(set.first_gap_in(0, 30), Some(Range { start: 10, end: 15 }));
        assert_eq!(set.first_gap_in(15, 30), Some(Range { start: 20, end: 30 }));
        assert_eq!(set.first_gap_in(2, 8), None);
    }

    proptest! {
        #![proptest_config(proptest_config!(256, "core-peer-transport.txt"))]

        /// The set agrees with a model set of values for inserts and removes.
        #[test]
        fn range_set_matches_a_model(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..8), 0..64)) {
            let mut set = RangeSet::<8>::new();
            let mut model = BTreeSet::new();
            for (add, start, len) in ops {
                let end = start + len;
                if add {
                    if set.insert(start, end).is_ok() {
                        model.extend(start..end);
                    }
                } else if set.remove(start, end) {
                    for v in start..end { model.remove(&v); }
                } else {
                    // Upper piece forgotten: resync the model from the set.
                    model = (0..80).filter(|v| set.contains(*v)).collect();
                }
                for v in 0..80 {
                    prop_assert_eq!(set.contains(v), model.contains(&v), "value {}", v);
                }
                let s = set.as_slice();
                for w in s.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                for r in s {
                    prop_assert!(r.start < r.end);
                }
            }
        }
    }
}
