//! The retry delay of a failing watcher: 0.8 s doubling to 30 s, with jitter, back to 0.8 s
//! only after two minutes without a failure.
//!
//! kube's `DefaultBackoff` is reset by every successful item of the watcher's stream, and a
//! failing list starts with a successful `Init` item: a list that keeps failing (a missing
//! RBAC rule, say) would be retried every 0.8 s forever. This one ignores those resets until
//! the failures have stopped for [`QUIET`].

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

/// The first delay.
const MIN: Duration = Duration::from_millis(800);
/// The longest delay.
const MAX: Duration = Duration::from_secs(30);
/// How long without a failure before the delay starts from [`MIN`] again.
const QUIET: Duration = Duration::from_secs(120);

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct WatchBackoff {
    next: Option<Duration>,
    last_failure: Option<Instant>,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self.last_failure.is_some_and(|t| now - t > QUIET) {
            self.next = None;
        }
        self.last_failure = Some(now);
        let delay = self.next.unwrap_or(MIN);
        self.next = Some((delay * 2).min(MAX));
        // Jitter in [0.8, 1.2), so that the four watchers and many routers spread out.
        let r = RandomState::new().hash_one(now) % 1000;
        Some(delay.mul_f64(0.8 + 0.4 * r as f64 / 1000.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        // Called after every successful item: forget the failures only once they have stopped.
        if self.last_failure.is_some_and(|t| t.elapsed() > QUIET) {
            self.next = None;
            self.last_failure = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum_and_ignores_early_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (0..8)
            .map(|_| {
                b.reset();
                b.next().unwrap()
            })
            .collect();
        for (i, d) in delays.iter().enumerate() {
            let nominal = (MIN * 2u32.pow(i as u32)).min(MAX);
            assert!(
                *d >= nominal.mul_f64(0.8) && *d < nominal.mul_f64(1.2),
                "{i}: {d:?}"
            );
        }
    }

    #[test]
    fn starts_again_after_a_quiet_period() {
        let mut b = WatchBackoff::default();
        b.next();
        b.next();
        b.last_failure = Some(Instant::now() - QUIET - Duration::from_secs(1));
        b.reset();
        assert!(b.next().unwrap() < MIN.mul_f64(1.2));
    }
}
