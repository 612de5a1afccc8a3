//! Latency samples and their summary: throughput over wall time, nearest-rank percentiles.

use std::time::Duration;

/// The operations of one measurement, possibly gathered over several rounds.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Latency of each operation, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Wall time during which the operations ran, summed over rounds.
    pub elapsed: Duration,
}

/// What the report shows of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub per_second: f64,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Sample {
    /// Adds another round of the same measurement.
    pub fn merge(&mut self, other: Sample) {
        self.latencies_ns.extend(other.latencies_ns);
        self.elapsed += other.elapsed;
    }

    pub fn count(&self) -> usize {
        self.latencies_ns.len()
    }

    /// Operations per second of wall time (not per operation latency: with concurrency
    /// the two differ).
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.count() as f64 / secs
        }
    }

    /// Mean latency of one operation; zero when empty.
    pub fn mean(&self) -> Duration {
        match self.latencies_ns.len() {
            0 => Duration::ZERO,
            n => Duration::from_nanos(self.latencies_ns.iter().sum::<u64>() / n as u64),
        }
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies_ns.clone();
        sorted.sort_unstable();
        Summary {
            count: sorted.len(),
            per_second: self.per_second(),
            mean: self.mean(),
            p50: nearest_rank(&sorted, 50.0),
            p99: nearest_rank(&sorted, 99.0),
        }
    }
}

/// Nearest-rank percentile `p` in (0, 100] of sorted latencies; zero when empty.
fn nearest_rank(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latencies_ms: &[u64], elapsed_ms: u64) -> Sample {
        Sample {
            latencies_ns: latencies_ms.iter().map(|ms| ms * 1_000_000).collect(),
            elapsed: Duration::from_millis(elapsed_ms),
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = sample(&(1..=100).rev().collect::<Vec<_>>(), 1000).summary();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&sorted, 100.0), Duration::from_nanos(100));
        let small = sample(&[7, 3], 10).summary();
        assert_eq!(small.p50, Duration::from_millis(3));
        assert_eq!(small.p99, Duration::from_millis(7));
        assert_eq!(Sample::default().summary().p50, Duration::ZERO);
    }

    #[test]
    fn rates_are_over_the_summed_wall_time_of_all_rounds() {
        let mut s = sample(&[1; 300], 1000);
        s.merge(sample(&[2; 100], 1000));
        let summary = s.summary();
        assert_eq!(summary.count, 400);
        assert!((summary.per_second - 200.0).abs() < 1e-9, "{summary:?}");
        assert_eq!(summary.p50, Duration::from_millis(1));
        assert_eq!(summary.p99, Duration::from_millis(2));
        assert_eq!(summary.mean, Duration::from_micros(1250));
        assert_eq!(Sample::default().per_second(), 0.0);
        assert_eq!(Sample::default().mean(), Duration::ZERO);
    }
}
