//! The receive-side replay window of a secure channel: a sliding bitmap in
//! the manner of WireGuard (RFC 6479), in a fixed array.
//!
//! Records may arrive reordered (UDP, retransmissions): any nonce newer than
//! the newest seen is fresh; an older one is fresh if it lies less than
//! [`REPLAY_WINDOW`] behind the newest and its bit is not yet set.

use core::fmt;

/// How far behind the newest accepted nonce a record is still accepted.
pub const REPLAY_WINDOW: u64 = 2048;

const WORD_BITS: u64 = 64;
/// One word more than the window, so a whole word can be cleared on advance
/// without forgetting any nonce inside the window.
const WORDS: usize = (REPLAY_WINDOW / WORD_BITS) as usize + 1;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// This nonce was already accepted.
    Replayed,
    /// This nonce lies [`REPLAY_WINDOW`] or more behind the newest accepted one.
    TooOld,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayError::Replayed => "nonce already accepted",
            ReplayError::TooOld => "nonce older than the replay window",
        })
    }
}

impl core::error::Error for ReplayError {}

/// Which nonces have been accepted, up to [`REPLAY_WINDOW`] behind the newest.
/// Check before authenticating, update only after: a forged record must
/// never move the window.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: Option<u64>,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("newest", &self.newest)
            .finish_non_exhaustive()
    }
}

/// Word index and mask of a nonce's bit.
fn slot(nonce: u64) -> (usize, u64) {
    // The remainder is below WORDS, so the cast cannot truncate.
    let word = ((nonce / WORD_BITS) % WORDS as u64) as usize;
    (word, 1u64 << (nonce % WORD_BITS))
}

impl ReplayWindow {
    /// An empty window: every nonce is fresh.
    pub const fn new() -> Self {
        ReplayWindow {
            newest: None,
            bits: [0; WORDS],
        }
    }

    /// The newest accepted nonce, if any.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Whether `nonce` may be accepted; changes nothing.
    pub fn check(&self, nonce: u64) -> Result<(), ReplayError> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if nonce > newest {
            return Ok(());
        }
        if newest - nonce >= REPLAY_WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (word, mask) = slot(nonce);
        if self.bits[word] & mask != 0 {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `nonce` as accepted. Call only after [`Self::check`] passed
    /// and the record authenticated; a nonce outside the window is ignored.
    pub fn update(&mut self, nonce: u64) {
        match self.newest {
            Some(newest) if nonce <= newest => {
                if newest - nonce >= REPLAY_WINDOW {
                    return;
                }
            }
            Some(newest) => {
                // Clear the words the window slides over (all, past a full turn).
                let old_word = newest / WORD_BITS;
                let steps = (nonce / WORD_BITS - old_word).min(WORDS as u64);
                for i in 1..=steps {
                    let (word, _) = slot((old_word + i) * WORD_BITS);
                    self.bits[word] = 0;
                }
                self.newest = Some(nonce);
            }
            None => self.newest = Some(nonce),
        }
        let (word, mask) = slot(nonce);
        self.bits[word] |= mask;
    }

    /// [`Self::check`] then [`Self::update`], for callers that authenticated already.
    pub fn check_and_update(&mut self, nonce: u64) -> Result<(), ReplayError> {
        self.check(nonce)?;
        self.update(nonce);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn each_nonce_is_accepted_once() {
        let mut w = ReplayWindow::new();
        for n in [5, 3, 9, 4, 0] {
            assert_eq!(w.check_and_update(n), Ok(()));
        }
        for n in [5, 3, 9, 4, 0] {
            assert_eq!(w.check_and_update(n), Err(ReplayError::Replayed));
        }
        assert_eq!(w.newest(), Some(9));
    }

    #[test]
    fn window_edge_is_exactly_replay_window_behind_the_newest() {
        let mut w = ReplayWindow::new();
        w.update(10_000);
        assert_eq!(w.check(10_000 - REPLAY_WINDOW + 1), Ok(()));
        assert_eq!(w.check(10_000 - REPLAY_WINDOW), Err(ReplayError::TooOld));
    }

    #[test]
    fn a_long_jump_forgets_everything_behind_the_window() {
        let mut w = ReplayWindow::new();
        for n in 0..100 {
            w.update(n);
        }
        w.update(1_000_000);
        assert_eq!(w.check(99), Err(ReplayError::TooOld));
        // Nonces inside the new window whose words held old bits are fresh.
        assert_eq!(w.check(1_000_000 - 1), Ok(()));
        assert_eq!(w.check(1_000_000 - REPLAY_WINDOW + 1), Ok(()));
    }

    #[test]
    fn nonces_near_u64_max_do_not_overflow() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check_and_update(u64::MAX), Ok(()));
        assert_eq!(w.check_and_update(u64::MAX), Err(ReplayError::Replayed));
        assert_eq!(w.check_and_update(u64::MAX - 1), Ok(()));
    }

    proptest! {
        #![proptest_config(proptest_config!(256, "core-replay.txt"))]

        #[test]
        fn window_agrees_with_a_set_of_every_accepted_nonce(
            start in 0u64..u64::MAX / 2,
            steps in proptest::collection::vec(0u64..6000, 1..400),
        ) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            for step in steps {
                // Wander around a moving point: forwards, backwards, repeats.
                let n = start + step;
                let newest = seen.iter().next_back().copied();
                let expected = match newest {
                    Some(top) if n <= top && top - n >= REPLAY_WINDOW => Err(ReplayError::TooOld),
                    _ if seen.contains(&n) => Err(ReplayError::Replayed),
                    _ => Ok(()),
                };
                prop_assert_eq!(w.check_and_update(n), expected);
                if expected.is_ok() {
                    seen.insert(n);
                }
            }
        }
    }
}
