//! What one load run counts: completed operations, their latencies, errors.

use std::time::Duration;

/// Latency samples one task keeps; beyond it operations are still counted,
/// their latencies not (a task doing more than this in one run is rare).
pub const MAX_SAMPLES_PER_TASK: usize = 1 << 20;

/// The tally of one task, merged into the run's at the end.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Latencies of the completed operations, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Operations that completed inside the measured window.
    pub completed: u64,
    /// Operations that failed: refused, timed out, or a socket error.
    pub errors: u64,
    /// Operations that first waited for the local mirror of a server's
    /// per-identity rate limit: more terminals would offer more load.
    pub throttled: u64,
}

impl Tally {
    /// Counts one completed operation that took `latency`.
    pub fn complete(&mut self, latency: Duration) {
        self.completed += 1;
        if self.latencies_us.len() < MAX_SAMPLES_PER_TASK {
            let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
            self.latencies_us.push(us);
        }
    }

    /// Counts one failed operation.
    pub fn error(&mut self) {
        self.errors += 1;
    }

    /// Adds another task's tally to this one.
    pub fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.errors += other.errors;
        self.throttled += other.throttled;
        let room = (MAX_SAMPLES_PER_TASK * 64).saturating_sub(self.latencies_us.len());
        self.latencies_us
            .extend(other.latencies_us.into_iter().take(room));
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The percentiles of `samples` (sorted in place); zeros when empty.
pub fn percentiles(samples: &mut [u32]) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((samples.len() as f64) * q).ceil() as usize;
        let index = rank.saturating_sub(1).min(samples.len() - 1);
        samples.get(index).map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    Percentiles {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let p = percentiles(&mut samples);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        assert_eq!(percentiles(&mut []).p99_ms, 0.0);
    }

    #[test]
    fn merge_adds_counts_and_samples() {
        let mut a = Tally::default();
        a.complete(Duration::from_millis(2));
        let mut b = Tally::default();
        b.complete(Duration::from_millis(4));
        b.error();
        b.throttled = 3;
        a.merge(b);
        assert_eq!((a.completed, a.errors, a.throttled), (2, 1, 3));
        assert_eq!(a.latencies_us, vec![2000, 4000]);
    }
}
