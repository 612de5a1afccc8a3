//! appfence's enforcer as the agent runs it, limited to the bench's tmpfs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appfence_agent::linux::{EnforcerStats, FanotifyConfig, FanotifyEnforcer, Sha256Hash};
use appfence_agent::Enforcer;
use appfence_core::SystemClock;

/// Where the package database is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageDb {
    /// A directory with no database: nothing trusted from packages, nothing loaded.
    None,
    /// This host's dpkg database (`/var/lib/dpkg/info`), loaded in full.
    Host,
}

pub fn enforcer(tmpfs: &Path, allowlist: Vec<Sha256Hash>, packages: PackageDb) -> FanotifyEnforcer {
    let package_db_root = match packages {
        PackageDb::None => tmpfs.join("no-package-database"),
        PackageDb::Host => PathBuf::from("/"),
    };
    let config = FanotifyConfig {
        // Only the private tmpfs: never `/` or any system filesystem.
        only_mounts: Some(vec![tmpfs.to_path_buf()]),
        package_db_root,
        allowlist,
        ..FanotifyConfig::default()
    };
    FanotifyEnforcer::new(config, Arc::new(SystemClock))
}

pub fn restrict(enforcer: &FanotifyEnforcer) -> Result<String, String> {
    let report = enforcer
        .apply_blocking(true)
        .map_err(|e| format!("appfence restrict failed: {e:?}"))?;
    if !enforcer.is_restricted() {
        return Err("appfence reports not restricted after apply(true)".into());
    }
    Ok(report.detail.unwrap_or_default())
}

/// Lifts enforcement and returns what the decision loop counted.
pub fn lift(enforcer: &FanotifyEnforcer) -> Result<EnforcerStats, String> {
    let stats = enforcer.stats();
    enforcer
        .apply_blocking(false)
        .map_err(|e| format!("appfence unrestrict failed: {e:?}"))?;
    Ok(stats)
}

/// One "command received → enforcement active" measurement: the whole
/// `apply_blocking(true)` of a fresh enforcer (fanotify group, marks, package database,
/// the agent's own hash, decision loop, sysctl), then the lift, timed apart.
pub struct ApplyTiming {
    pub apply: Duration,
    pub lift: Duration,
    pub detail: String,
}

pub fn time_apply(tmpfs: &Path, packages: PackageDb) -> Result<ApplyTiming, String> {
    let enforcer = enforcer(tmpfs, Vec::new(), packages);
    let started = Instant::now();
    let detail = restrict(&enforcer)?;
    let apply = started.elapsed();
    let started = Instant::now();
    lift(&enforcer)?;
    let lift = started.elapsed();
    Ok(ApplyTiming {
        apply,
        lift,
        detail,
    })
}

/// Adds up the counters of several sessions.
pub fn add_stats(total: &mut EnforcerStats, more: &EnforcerStats) {
    total.events += more.events;
    total.allowed += more.allowed;
    total.denied += more.denied;
    total.deadline_expired += more.deadline_expired;
    total.queue_full += more.queue_full;
    total.cache_hits += more.cache_hits;
    total.cache_misses += more.cache_misses;
    total.ignore_marks += more.ignore_marks;
    total.overflows += more.overflows;
}
