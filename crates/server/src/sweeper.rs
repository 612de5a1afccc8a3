//! Moves actions that waited too long to `TimeOut`: `Pending` ones older than
//! `action_pending_timeout`, `InProgress` ones without an update for
//! `action_inprogress_timeout`; and deletes expired indicators, which raises the
//! allowlist version agents compare with theirs. Time comes from the injected clock; the
//! interval at which it looks is real time.

use tokio::sync::watch;

use crate::AppState;

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
        tracing::info!(action = %action.id, machine = %action.machine_id, "action timed out");
        state.dispatch.notify(&action.machine_id);
    }
    let expired = state.store.delete_expired_indicators(now).await?;
    if expired > 0 {
        tracing::info!(count = expired, "expired indicators deleted");
        state.dispatch.notify_all();
    }
    Ok(timed_out.len())
}

pub fn spawn(state: AppState, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = sweep_once(&state).await {
                        tracing::error!(error = %e, "sweep failed; retrying at the next interval");
                    }
                }
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            }
        }
    });
}
