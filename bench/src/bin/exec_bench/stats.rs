//! Per-execution latencies and their summary (mean, nearest-rank percentiles).

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

/// Summarises latencies in nanoseconds; `None` when there are none.
pub fn summarise(latencies_ns: &[u64]) -> Option<Summary> {
    if latencies_ns.is_empty() {
        return None;
    }
    let mut sorted = latencies_ns.to_vec();
    sorted.sort_unstable();
    let total: u128 = sorted.iter().map(|&n| n as u128).sum();
    Some(Summary {
        count: sorted.len(),
        mean: Duration::from_nanos((total / sorted.len() as u128) as u64),
        p50: Duration::from_nanos(nearest_rank(&sorted, 50.0)),
        p99: Duration::from_nanos(nearest_rank(&sorted, 99.0)),
    })
}

/// The smallest value with at least `percent`% of the values at or below it.
fn nearest_rank(sorted: &[u64], percent: f64) -> u64 {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        let s = summarise(&values).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.mean, Duration::from_nanos(50));
        assert_eq!(s.p50, Duration::from_nanos(50));
        assert_eq!(s.p99, Duration::from_nanos(99));
        let one = summarise(&[7]).unwrap();
        assert_eq!(
            (one.p50, one.p99),
            (Duration::from_nanos(7), Duration::from_nanos(7))
        );
        assert_eq!(summarise(&[]), None);
    }
}
