//! The store's health as this process finds it. A storage fault is logged once when it
//! begins, with its cause; while it lasts, once a minute, how many requests it refused;
//! and its end, with what it cost: never a line per request, which on a full disk would
//! only make things worse. Every storage error is counted by kind
//! (`appfence_storage_errors_total{kind}`), and `appfence_storage_fault` says which
//! fault is current (0 for none).
//!
//! Per process by nature (what holds for the whole service is what the store answers);
//! an episode ends when a write is seen to succeed again (readiness probe, sweeper).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use appfence_core::StorageFault;

/// How often a lasting fault is summarized.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

struct Episode {
    fault: StorageFault,
    began: Instant,
    refused: u64,
    refused_since_summary: u64,
    last_summary: Instant,
}

#[derive(Default)]
pub struct StorageHealth {
    episode: Mutex<Option<Episode>>,
    /// What the store is (the data directory, or PostgreSQL), for the log.
    location: Mutex<String>,
}

static PROCESS: std::sync::OnceLock<StorageHealth> = std::sync::OnceLock::new();

/// This process's view.
pub fn global() -> &'static StorageHealth {
    PROCESS.get_or_init(StorageHealth::default)
}

fn gauge_value(fault: Option<StorageFault>) -> f64 {
    match fault {
        None => 0.0,
        Some(StorageFault::Full) => 1.0,
        Some(StorageFault::ReadOnly) => 2.0,
        Some(StorageFault::Unavailable) => 3.0,
        Some(StorageFault::Corrupt) => 4.0,
        Some(StorageFault::Unreachable) => 5.0,
    }
}

/// Tries the store with its probe write: a success ends the episode, a storage fault
/// is reported. The readiness endpoint and the sweeper both ask this way.
pub async fn probe(store: &dyn appfence_store::Store) -> Result<(), appfence_core::Error> {
    match store.check().await {
        Ok(()) => {
            global().recovered();
            Ok(())
        }
        Err(e) => {
            report(&e);
            Err(e)
        }
    }
}

/// Reports `e` if it is a storage fault; says whether it was.
pub fn report(e: &appfence_core::Error) -> bool {
    match e {
        appfence_core::Error::Storage { fault, detail } => {
            global().failed(*fault, detail);
            true
        }
        _ => false,
    }
}

impl StorageHealth {
    /// A request (or background work) met `fault`; `detail` says where and why.
    pub fn failed(&self, fault: StorageFault, detail: &str) {
        metrics::counter!("appfence_storage_errors_total", "kind" => fault.as_str()).increment(1);
        let mut episode = self
            .episode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match episode.as_mut() {
            Some(e) if e.fault == fault => {
                e.refused += 1;
                e.refused_since_summary += 1;
                if e.last_summary.elapsed() >= SUMMARY_EVERY {
                    tracing::warn!(
                        fault = %fault,
                        since = ?e.began.elapsed(),
                        refused = e.refused_since_summary,
                        "{fault} continues: {} requests refused in the last minute",
                        e.refused_since_summary
                    );
                    e.refused_since_summary = 0;
                    e.last_summary = Instant::now();
                }
            }
            _ => {
                if fault.is_transient() {
                    tracing::error!(fault = %fault, store = %self.location(), cause = %detail, "{fault}: requests that need it get 503 until it clears ({})", fault.public_message());
                } else {
                    tracing::error!(fault = %fault, store = %self.location(), cause = %detail, "{fault}: the database is damaged; restore it from a backup (requests that need it get 500)");
                }
                *episode = Some(Episode {
                    fault,
                    began: Instant::now(),
                    refused: 1,
                    refused_since_summary: 1,
                    last_summary: Instant::now(),
                });
                metrics::gauge!("appfence_storage_fault").set(gauge_value(Some(fault)));
            }
        }
    }

    /// Names the store in the episode's log lines.
    pub fn set_location(&self, location: String) {
        *self
            .location
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = location;
    }

    fn location(&self) -> String {
        self.location
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A write succeeded: the fault, if any, is over.
    pub fn recovered(&self) {
        let mut episode = self
            .episode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = episode.take() {
            tracing::info!(
                fault = %e.fault,
                lasted = ?e.began.elapsed(),
                refused = e.refused,
                "{} is over after {:.0?}: {} requests were refused",
                e.fault,
                e.began.elapsed(),
                e.refused
            );
            metrics::gauge!("appfence_storage_fault").set(gauge_value(None));
        }
    }

    /// The fault now, if any.
    pub fn current(&self) -> Option<StorageFault> {
        self.episode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|e| e.fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_begins_once_counts_and_ends() {
        let h = StorageHealth::default();
        assert_eq!(h.current(), None);
        h.failed(
            StorageFault::Full,
            "cannot commit: database or disk is full",
        );
        h.failed(StorageFault::Full, "again");
        assert_eq!(h.current(), Some(StorageFault::Full));
        assert_eq!(h.episode.lock().unwrap().as_ref().unwrap().refused, 2);
        // Another kind starts another episode.
        h.failed(
            StorageFault::ReadOnly,
            "attempt to write a readonly database",
        );
        assert_eq!(h.current(), Some(StorageFault::ReadOnly));
        assert_eq!(h.episode.lock().unwrap().as_ref().unwrap().refused, 1);
        h.recovered();
        assert_eq!(h.current(), None);
        h.recovered();
    }
}
