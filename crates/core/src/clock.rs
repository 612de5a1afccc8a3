//! Injected time, so timeouts and rate windows can be tested exactly.

use std::sync::atomic::{AtomicI64, Ordering};

use appfence_proto::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc())
    }
}

/// A clock that moves only when told to (tests). Each reading advances it by one tick
/// so that successive events keep a strict order, as on a real clock.
#[derive(Debug)]
pub struct ManualClock {
    ticks: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            ticks: AtomicI64::new(start.ticks()),
        }
    }

    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, d: std::time::Duration) {
        self.ticks
            .fetch_add((d.as_nanos() / 100) as i64, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.ticks.store(t.ticks(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_ticks(self.ticks.fetch_add(1, Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_seconds(1_000));
        let a = c.now();
        let b = c.now();
        assert!(b > a && b.ticks() - a.ticks() == 1);
        c.advance(Duration::from_secs(60));
        assert_eq!(c.now().unix_seconds(), 1_060);
    }
}
