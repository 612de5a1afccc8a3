//! Background work of every replica:
//!
//! - the sweep: moves actions that waited too long to `TimeOut` (`Pending` ones older
//!   than `action_pending_timeout`, `InProgress` ones without an update for
//!   `action_inprogress_timeout`); deletes expired indicators, which raises the
//!   allowlist version agents compare with theirs; rotates the signing key on its
//!   schedule and retires keys that verify nothing any more (the store makes each of
//!   these happen once, whichever replica comes first); records the end of sign-in
//!   lockouts; removes final actions and denial events older than the retention
//!   (`retention`, MDE's 180 days by default) in bounded batches, the audit trail of
//!   removed actions staying;
//! - the key refresh: re-reads the signing keys every `key_refresh_interval`.
//!
//! Time comes from the injected clock; the intervals at which they look are real time.

use appfence_core::audit::ACTOR_SERVER;
use appfence_core::signing_keys::{expired, needs_immediate_key, rotation_due};
use tokio::sync::watch;

use appfence_store::Change;

use crate::oauth::keyring;
use crate::AppState;

/// How often the store's planner statistics are refreshed. They follow the data's
/// shape, which changes slowly, and refreshing them takes SQLite's single writer (it was
/// every sweep, every 5 s, and a suspect in the waits of a burst; BENCHMARKS.md).
const STATISTICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether the statistics are due at `now` (the first sweep refreshes them); records
/// `now` when they are.
fn statistics_due(
    last: &mut Option<appfence_proto::Timestamp>,
    now: appfence_proto::Timestamp,
) -> bool {
    match *last {
        Some(at) if now.minus(STATISTICS_INTERVAL) < at => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

/// Runs one sweep now; returns how many actions timed out.
pub async fn sweep_once(state: &AppState) -> appfence_core::Result<usize> {
    let now = state.clock.now();
    let pending_before = now.minus(state.config.action_pending_timeout);
    let in_progress_before = now.minus(state.config.action_inprogress_timeout);
    let timed_out = state
        .store
        .time_out_actions(pending_before, in_progress_before, now)
        .await?;
    for action in &timed_out {
        crate::telemetry::action_changed(action);
        tracing::info!(action = %action.id, machine = %action.machine_id, "action timed out");
        if appfence_core::records::offboards(action.action_type, action.status) {
            tracing::warn!(action = %action.id, machine = %action.machine_id, host = %action.computer_dns_name, "offboard timed out: the device never came for it; offboarded anyway, its credential is refused from now on");
        }
        state
            .announce(Change::Machine(action.machine_id.clone()))
            .await;
    }
    let expired = state.store.delete_expired_indicators(now).await?;
    if expired > 0 {
        tracing::info!(count = expired, "expired indicators deleted");
        state.announce(Change::Everything).await;
    }
    maintain_signing_keys(state).await?;
    apply_retention(state, now).await?;
    prune_alerts(state, now).await?;
    raise_silence_alerts(state, now).await?;
    let refresh = statistics_due(
        &mut state
            .statistics_refreshed
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
        now,
    );
    if refresh {
        state.store.refresh_statistics().await?;
    }
    // Rate-limit windows that are over (the longest is an hour).
    state
        .store
        .prune_rate_windows(now.minus(std::time::Duration::from_secs(3600)))
        .await?;
    // Console sessions that expired or went idle (they are refused already; this
    // keeps the table to the open ones).
    state
        .store
        .prune_console_sessions(now, crate::console::SESSION_IDLE)
        .await?;
    // Sign-in grants (codes, device codes, refresh tokens) a day after they expired:
    // the day keeps a replayed code recognised (and its family revoked) meanwhile.
    state
        .store
        .prune_oauth_grants(now.minus(std::time::Duration::from_secs(24 * 3600)))
        .await?;
    // MDE looks devices up by address for the last 30 days: older history goes.
    state
        .store
        .prune_address_history(now.minus(appfence_core::machine_lookup::MAX_AGE))
        .await?;
    for account in state
        .store
        .sweep_sign_in_throttle(&state.config.sign_in_throttle, now)
        .await?
    {
        tracing::info!(tenant_id = %account.tenant_id, user = %account.name, "sign-in lockout ended");
        metrics::counter!("appfence_sign_in_lockout_ends_total").increment(1);
    }
    Ok(timed_out.len())
}

/// Rows deleted per retention statement: each is a short transaction, so the API's
/// writes wait at most one batch.
pub const RETENTION_BATCH: u32 = 1_000;
/// Batches per sweep: a large backlog (retention turned on over years of data) is worked
/// off over successive sweeps rather than in one long one.
const RETENTION_BATCHES_PER_SWEEP: u32 = 50;

/// Retention: deletes final actions and denial events older than `config.retention`,
/// a bounded batch at a time, yielding between batches. Returns how many actions and
/// events went.
pub async fn apply_retention(
    state: &AppState,
    now: appfence_proto::Timestamp,
) -> appfence_core::Result<(u64, u64)> {
    let Some(retention) = state.config.retention else {
        return Ok((0, 0));
    };
    let before = now.minus(retention);
    let (mut actions, mut events) = (0u64, 0u64);
    for _ in 0..RETENTION_BATCHES_PER_SWEEP {
        let n = state
            .store
            .delete_old_actions(before, RETENTION_BATCH)
            .await?;
        actions += n;
        if n < u64::from(RETENTION_BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..RETENTION_BATCHES_PER_SWEEP {
        let n = state
            .store
            .delete_old_denials(before, RETENTION_BATCH)
            .await?;
        events += n;
        if n < u64::from(RETENTION_BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    if actions > 0 || events > 0 {
        tracing::info!(
            actions,
            events,
            "retention: old final actions and denial events deleted"
        );
        metrics::counter!("appfence_retention_deleted_total", "kind" => "actions")
            .increment(actions);
        metrics::counter!("appfence_retention_deleted_total", "kind" => "denial_events")
            .increment(events);
    }
    Ok((actions, events))
}

/// Retention of alerts: those last updated longer ago than `config.retention` go (a
/// bounded batch at a time, as actions and events). Resolving keeps an alert; only
/// retention removes it.
pub async fn prune_alerts(
    state: &AppState,
    now: appfence_proto::Timestamp,
) -> appfence_core::Result<u64> {
    let Some(retention) = state.config.retention else {
        return Ok(0);
    };
    let before = now.minus(retention);
    let mut alerts = 0u64;
    for _ in 0..RETENTION_BATCHES_PER_SWEEP {
        let n = state
            .store
            .delete_old_alerts(before, RETENTION_BATCH)
            .await?;
        alerts += n;
        if n < u64::from(RETENTION_BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    if alerts > 0 {
        tracing::info!(alerts, "retention: old alerts deleted");
        metrics::counter!("appfence_retention_deleted_total", "kind" => "alerts").increment(alerts);
    }
    Ok(alerts)
}

/// Most silent devices alerted on per sweep; the rest wait for the next sweep.
const SILENCE_ALERTS_PER_SWEEP: u32 = 500;

/// A restricted device that has not checked in for `silence_alert_after` raises an
/// alert, once per silence (the store only returns devices without one). Every replica
/// may look; the store's per-tenant alert lock and the once-per-key rule keep it one.
pub async fn raise_silence_alerts(
    state: &AppState,
    now: appfence_proto::Timestamp,
) -> appfence_core::Result<usize> {
    let Some(after) = state.config.silence_alert_after else {
        return Ok(0);
    };
    let silent = state
        .store
        .silent_restricted_machines(now.minus(after), SILENCE_ALERTS_PER_SWEEP)
        .await?;
    let mut raised = 0;
    for machine in &silent {
        let Some(last_seen) = machine.last_seen else {
            continue;
        };
        let alert = appfence_core::alerts::detectors::silence_alert(machine, last_seen, now);
        raised += state
            .store
            .raise_alerts(&machine.tenant_id, &[alert], now)
            .await?;
        tracing::warn!(machine = %machine.id, host = %machine.computer_dns_name, %last_seen, "a restricted device stopped checking in: alert raised");
    }
    Ok(raised)
}

/// The fleet gauges (devices seen lately, devices restricted), from the store.
async fn count_fleet(state: &AppState) {
    let since = state.clock.now().minus(crate::telemetry::SEEN_WITHIN);
    match state.store.fleet_summary(since).await {
        Ok(summary) => crate::telemetry::fleet(summary),
        Err(e) => {
            crate::storage_health::report(&e);
        }
    }
}

/// While a storage fault lasts, whether writes work again (the store's probe write), so
/// that its end is noticed without waiting for a request; and, for a store on this
/// machine, the free space of the data directory.
async fn check_storage(state: &AppState) {
    if crate::storage_health::global().current().is_some() {
        let _ = crate::storage_health::probe(state.store.as_ref()).await;
    }
    if !state.store.is_shared() {
        state.disk_space.check(&state.config.data_dir);
    }
}

/// The scheduled rotation, the retirement of keys past their end, and a key that signs
/// at once if none would.
async fn maintain_signing_keys(state: &AppState) -> appfence_core::Result<()> {
    let now = state.clock.now();
    let keys = state.keys.current();
    let records = keys.records();
    let timing = state.keys.timing();
    let mut changed = false;
    for key in expired(records, now) {
        if state
            .store
            .retire_signing_key(&key.kid, now, ACTOR_SERVER)
            .await?
        {
            tracing::info!(kid = %key.kid, "retired a signing key past its last token's expiry");
            changed = true;
        }
    }
    let immediate = needs_immediate_key(records, now);
    let due = state
        .config
        .signing_key_rotation
        .is_some_and(|period| rotation_due(records, now, period));
    if immediate || due {
        if let Some(key) = keyring::rotate(
            state.store.as_ref(),
            state.keys.kek(),
            timing,
            now,
            immediate,
        )
        .await?
        {
            tracing::info!(kid = %key.kid, activates = %key.activates, "rotated the token signing key");
        }
        changed = true;
    }
    if changed {
        refresh_keys(state).await?;
    }
    Ok(())
}

/// Re-reads the signing keys; cached verifications go when they changed.
pub async fn refresh_keys(state: &AppState) -> appfence_core::Result<()> {
    if state.keys.refresh(state.store.as_ref()).await? {
        state.verified_tokens.clear();
        tracing::info!("signing keys changed");
    }
    Ok(())
}

pub fn spawn_key_refresh(state: AppState, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.key_refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = refresh_keys(&state).await {
                        if !crate::storage_health::report(&e) {
                            tracing::error!(error = %e, "cannot re-read the signing keys; the keys in force stay");
                        }
                    }
                }
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            }
        }
    });
}

pub fn spawn(state: AppState, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match sweep_once(&state).await {
                        Ok(_) => metrics::counter!("appfence_sweeps_total", "outcome" => "ok").increment(1),
                        Err(e) => {
                            metrics::counter!("appfence_sweeps_total", "outcome" => "failed").increment(1);
                            if !crate::storage_health::report(&e) {
                                tracing::error!(error = %e, "sweep failed; retrying at the next interval");
                            }
                        }
                    }
                    check_storage(&state).await;
                    count_fleet(&state).await;
                }
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use appfence_proto::Timestamp;

    use super::*;

    #[test]
    fn statistics_are_refreshed_at_the_first_sweep_then_hourly() {
        let at = |s: i64| Timestamp::from_ticks(s * 10_000_000);
        let mut last = None;
        assert!(statistics_due(&mut last, at(1_000)));
        assert!(!statistics_due(&mut last, at(1_005)));
        assert!(!statistics_due(&mut last, at(1_000 + 3_599)));
        assert!(statistics_due(&mut last, at(1_000 + 3_600)));
        assert_eq!(last, Some(at(4_600)));
        assert!(!statistics_due(&mut last, at(4_601)));
    }
}
