//! The replay window: which counters of one receive key have been accepted.
//!
//! A bitmap of [`REPLAY_WINDOW`] bits covers the counters `highest - REPLAY_WINDOW + 1 ..=
//! highest`, where `highest` is the largest counter accepted so far. A counter above `highest`
//! slides the window up; one inside it is accepted once; one below it is refused as too old.
//! The bit of counter `c` is bit `c % REPLAY_WINDOW`, so sliding only clears the bits the window
//! moves over and never shifts the map.
//!
//! The [`Opener`](super::Opener) consults the window only after a datagram's tag has verified, so
//! forged datagrams can neither slide it nor mark counters.

use super::CryptoError;
use core::fmt;

/// Counters a receive key tolerates out of order: any datagram at most this many counters behind
/// the newest one accepted still opens, once. 4096 datagrams is about 45 ms at 1 Gbit/s or 4.5
/// ms at 10 Gbit/s of 1400-byte datagrams, far more reordering than one UDP path produces.
pub const REPLAY_WINDOW: u64 = 4096;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// A sliding bitmap of accepted counters, [`REPLAY_WINDOW`] wide (512 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest counter accepted, if any.
    highest: Option<u64>,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub fn new() -> Self {
        ReplayWindow {
            highest: None,
            bits: [0; WORDS],
        }
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `counter` would be accepted, without recording it.
    pub fn check(&self, counter: u64) -> Result<(), CryptoError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if counter > highest {
            return Ok(());
        }
        if highest - counter >= REPLAY_WINDOW {
            return Err(CryptoError::TooOld);
        }
        if self.bits[word(counter)] & bit(counter) != 0 {
            return Err(CryptoError::Replayed);
        }
        Ok(())
    }

    /// Records `counter` if it is new and not below the window: `Err(Replayed)` for a counter
    /// already accepted, `Err(TooOld)` for one more than [`REPLAY_WINDOW`] - 1 below the highest.
    pub fn accept(&mut self, counter: u64) -> Result<(), CryptoError> {
        self.check(counter)?;
        match self.highest {
            Some(highest) if counter <= highest => {}
            Some(highest) => {
                self.clear(highest + 1, counter);
                self.highest = Some(counter);
            }
            None => {
                self.highest = Some(counter);
            }
        }
        self.bits[word(counter)] |= bit(counter);
        Ok(())
    }

    /// Clears the bits of counters `from ..= to` (`from <= to`): they are entering the window and
    /// their bits still hold counters a whole window older.
    fn clear(&mut self, from: u64, to: u64) {
        let span = to - from;
        if span >= REPLAY_WINDOW - 1 {
            self.bits = [0; WORDS];
            return;
        }
        // At most REPLAY_WINDOW counters: walk them a word at a time.
        let mut at = from;
        let mut left = span + 1;
        while left > 0 {
            let offset = at % 64;
            let n = (64 - offset).min(left);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << offset
            };
            self.bits[word(at)] &= !mask;
            at = at.wrapping_add(n);
            left -= n;
        }
    }
}

fn word(counter: u64) -> usize {
    ((counter % REPLAY_WINDOW) / 64) as usize
}

fn bit(counter: u64) -> u64 {
    1 << (counter % 64)
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let marked: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .field("marked", &marked)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn accepts_in_order_once() {
        let mut w = ReplayWindow::new();
        for c in 0..10_000 {
            assert_eq!(w.accept(c), Ok(()));
            assert_eq!(w.accept(c), Err(CryptoError::Replayed));
        }
        assert_eq!(w.highest(), Some(9_999));
    }

    #[test]
    fn edges_of_the_window() {
        let mut w = ReplayWindow::new();
        w.accept(REPLAY_WINDOW * 3).unwrap();
        let low = REPLAY_WINDOW * 2 + 1;
        assert_eq!(w.check(low - 1), Err(CryptoError::TooOld));
        assert_eq!(w.accept(low), Ok(()));
        assert_eq!(w.accept(low), Err(CryptoError::Replayed));
        // The lowest counter leaves the window as soon as the window slides by one.
        w.accept(REPLAY_WINDOW * 3 + 1).unwrap();
        assert_eq!(w.accept(low), Err(CryptoError::TooOld));
        assert_eq!(w.accept(low + 1), Ok(()));
    }

    #[test]
    fn a_big_jump_forgets_everything_below() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            w.accept(c).unwrap();
        }
        w.accept(1_000_000).unwrap();
        assert_eq!(w.accept(99), Err(CryptoError::TooOld));
        assert_eq!(w.accept(1_000_000 - REPLAY_WINDOW + 1), Ok(()));
        // Bits set before the jump do not alias counters after it.
        let alias = 1_000_000 - 1_000_000 % REPLAY_WINDOW + 5;
        assert!(alias < 1_000_000);
        assert_eq!(w.accept(alias), Ok(()));
    }

    #[test]
    fn slides_without_aliasing() {
        // Slide by less than a window: bits of counters that left must not reject their aliases.
        let mut w = ReplayWindow::new();
        for c in 0..REPLAY_WINDOW {
            w.accept(c).unwrap();
        }
        w.accept(REPLAY_WINDOW + 100).unwrap();
        for c in REPLAY_WINDOW..REPLAY_WINDOW + 100 {
            assert_eq!(w.accept(c), Ok(()), "{c}");
        }
        for c in 101..REPLAY_WINDOW {
            assert_eq!(w.accept(c), Err(CryptoError::Replayed), "{c}");
        }
        assert_eq!(w.accept(100), Err(CryptoError::TooOld));
    }

    #[test]
    fn the_top_counters_do_not_overflow() {
        let mut w = ReplayWindow::new();
        w.accept(u64::MAX - 1).unwrap();
        w.accept(u64::MAX).unwrap();
        assert_eq!(w.accept(u64::MAX), Err(CryptoError::Replayed));
        assert_eq!(w.accept(u64::MAX - 2), Ok(()));
        assert_eq!(w.accept(0), Err(CryptoError::TooOld));
    }

    /// The window against a model: a set of everything accepted and the highest counter.
    fn model(ops: &[u64]) -> Vec<Result<(), CryptoError>> {
        let mut seen = BTreeSet::new();
        let mut highest: Option<u64> = None;
        ops.iter()
            .map(|&c| {
                if highest.is_some_and(|h| c < h && h - c >= REPLAY_WINDOW) {
                    Err(CryptoError::TooOld)
                } else if !seen.insert(c) {
                    Err(CryptoError::Replayed)
                } else {
                    highest = Some(highest.map_or(c, |h| h.max(c)));
                    Ok(())
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any order of a window's worth of counters is accepted, each exactly once.
        #[test]
        fn any_permutation_within_the_window_is_accepted_once(
            base in 0u64..1 << 40,
            order in Just((0..REPLAY_WINDOW).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let mut w = ReplayWindow::new();
            for &c in &order {
                prop_assert_eq!(w.accept(base + c), Ok(()));
            }
            for &c in order.iter().take(64) {
                prop_assert_eq!(w.accept(base + c), Err(CryptoError::Replayed));
            }
        }

        /// Duplicates are always refused, whatever came between.
        #[test]
        fn duplicates_are_always_rejected(
            ops in proptest::collection::vec(0u64..3 * REPLAY_WINDOW, 1..300),
            dup in any::<prop::sample::Index>(),
        ) {
            let mut w = ReplayWindow::new();
            for &c in &ops {
                let _ = w.accept(c);
            }
            let c = ops[dup.index(ops.len())];
            prop_assert!(w.accept(c).is_err());
        }

        /// Counters below the window are refused as too old.
        #[test]
        fn counters_below_the_window_are_rejected(
            highest in REPLAY_WINDOW..u64::MAX,
            below in 0u64..1 << 32,
        ) {
            let mut w = ReplayWindow::new();
            w.accept(highest).unwrap();
            let c = (highest - REPLAY_WINDOW).saturating_sub(below);
            prop_assert_eq!(w.accept(c), Err(CryptoError::TooOld));
        }

        /// Arbitrary sequences agree with the model, including slides of every size.
        #[test]
        fn matches_the_model(
            start in 0u64..1 << 60,
            steps in proptest::collection::vec(-5000i64..6000, 1..400),
        ) {
            let ops: Vec<u64> = steps
                .iter()
                .scan(start, |at, s| {
                    *at = at.saturating_add_signed(*s);
                    Some(*at)
                })
                .collect();
            let mut w = ReplayWindow::new();
            let got: Vec<_> = ops.iter().map(|&c| w.accept(c)).collect();
            prop_assert_eq!(got, model(&ops));
        }
    }
}
