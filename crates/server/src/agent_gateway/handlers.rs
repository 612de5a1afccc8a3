//! Heartbeat, command long-poll, acknowledgement and result report.

use std::time::Duration;

use appfence_core::records::{
    desired_state, offboards, MachineRecord, StatusChange, TransitionOutcome,
};
use appfence_core::Error;
use appfence_proto::agent::{
    ActionUpdateResponse, Command, CommandsResponse, DesiredState, EnforcementState,
    HeartbeatRequest, HeartbeatResponse, Outcome, ResultRequest,
};
use appfence_proto::ActionStatus;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::Device;
use crate::{ApiError, AppState};
use appfence_store::Change;

/// JSON body of the agent protocol; malformed bodies get the error envelope.
pub struct AgentJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AgentJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge("Request body is too large".into())
                } else {
                    Error::InvalidRequestBody(format!("Request body could not be read: {e}"))
                }
            })?;
        serde_json::from_slice(&bytes).map(AgentJson).map_err(|e| {
            Error::InvalidRequestBody(format!("Request body is incorrect: {e}")).into()
        })
    }
}

/// The state the server wants for a device: restricted or not, the server's enforcement
/// mode, and the tenant's allowlist version.
pub(crate) async fn desired(
    state: &AppState,
    machine: &MachineRecord,
) -> Result<DesiredState, Error> {
    let last = state
        .store
        .last_succeeded_restrict_family(&machine.id)
        .await?;
    let version = state.store.allowlist_version(&machine.tenant_id).await?;
    Ok(desired_state(last.as_ref(), state.agent_mode(), version))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Device(machine): Device,
    AgentJson(req): AgentJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    // Before the report is stored: were the store to fail in between, the next
    // heartbeat would still see the gap as new (the alert is raised once per gap).
    raise_protection_gap(&state, &machine, &req.enforcement).await?;
    state
        .store
        .record_heartbeat(&machine.id, &req.info, &req.enforcement, state.clock.now())
        .await?;
    if machine.enforcement != req.enforcement {
        state.announce(Change::Observed(machine.id.clone())).await;
    }
    Ok(Json(HeartbeatResponse {
        desired: desired(&state, &machine).await?,
    }))
}

/// A period the agent newly reports unprotected (stopped, killed, or the host restarted
/// while restricted) becomes an alert, once per period.
async fn raise_protection_gap(
    state: &AppState,
    machine: &MachineRecord,
    reported: &EnforcementState,
) -> Result<(), ApiError> {
    let Some(gap) = &reported.last_unprotected else {
        return Ok(());
    };
    if machine.enforcement.last_unprotected.as_ref() == Some(gap) {
        return Ok(());
    }
    let now = state.clock.now();
    let current = MachineRecord {
        enforcement: reported.clone(),
        ..machine.clone()
    };
    let alert =
        appfence_core::alerts::detectors::protection_gap_alert(&current, gap.from, gap.to, now);
    let raised = state
        .store
        .raise_alerts(&machine.tenant_id, &[alert], now)
        .await?;
    if raised > 0 {
        tracing::warn!(machine = %machine.id, from = %gap.from, to = %gap.to, "a restricted device reported time unprotected: alert raised");
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitParams {
    #[serde(default)]
    wait_seconds: Option<u64>,
}

/// Long-poll: answers as soon as the device has an open action, or after the wait.
pub async fn commands(
    State(state): State<AppState>,
    Device(machine): Device,
    Query(params): Query<WaitParams>,
) -> Result<Json<CommandsResponse>, ApiError> {
    let wait =
        Duration::from_secs(params.wait_seconds.unwrap_or(30)).min(state.config.long_poll_max);
    let deadline = tokio::time::Instant::now() + wait;
    let notify = state.dispatch.subscribe(&machine.id);
    let _waiting = crate::telemetry::LongPolling::start();
    let result = async {
        // Register interest before reading, so a change in between is not missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let open = state.store.open_actions(&machine.id).await?;
        if !open.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok::<_, Error>(open);
        }
        // Woken or not, answer with the state now: a wake means something changed for
        // this device (an action, or its desired state such as the allowlist version).
        let _ = tokio::time::timeout_at(deadline, notified).await;
        state.store.open_actions(&machine.id).await
    }
    .await;
    state.dispatch.release(&machine.id, notify);
    let open = result?;
    Ok(Json(CommandsResponse {
        commands: open
            .into_iter()
            .map(|a| Command {
                action_id: a.id,
                action_type: a.action_type,
                status: a.status,
                created: a.created,
            })
            .collect(),
        desired: desired(&state, &machine).await?,
    }))
}

/// The action, if it belongs to this device (otherwise "not found").
async fn own_action(state: &AppState, machine: &MachineRecord, id: &str) -> Result<(), Error> {
    match state.store.action(&machine.tenant_id, id).await? {
        Some(a) if a.machine_id == machine.id => Ok(()),
        _ => Err(Error::action_not_found(id)),
    }
}

pub async fn ack(
    State(state): State<AppState>,
    Device(machine): Device,
    Path(id): Path<String>,
) -> Result<Json<ActionUpdateResponse>, ApiError> {
    own_action(&state, &machine, &id).await?;
    let change = StatusChange {
        to: ActionStatus::InProgress,
        at: state.clock.now(),
        actor: format!("agent:{}", machine.id),
        reason: Some("acknowledged by the device".into()),
        error_h_result: None,
        troubleshoot_info: None,
        cancellation_comment: None,
    };
    let (action, applied) = match state.store.transition(&id, &change).await? {
        TransitionOutcome::Applied(a) => {
            crate::telemetry::action_delivered(&a, change.at);
            state.announce(Change::Observed(machine.id.clone())).await;
            (a, true)
        }
        // A repeated acknowledgement (e.g. after an agent restart) is still a go.
        TransitionOutcome::Refused(a) => {
            let go = a.status == ActionStatus::InProgress;
            (a, go)
        }
    };
    Ok(Json(ActionUpdateResponse {
        action_id: action.id,
        status: action.status,
        applied,
        desired: desired(&state, &machine).await?,
    }))
}

pub async fn result(
    State(state): State<AppState>,
    Device(machine): Device,
    Path(id): Path<String>,
    AgentJson(req): AgentJson<ResultRequest>,
) -> Result<Json<ActionUpdateResponse>, ApiError> {
    own_action(&state, &machine, &id).await?;
    let to = match req.outcome {
        Outcome::Succeeded => ActionStatus::Succeeded,
        Outcome::Failed => ActionStatus::Failed,
    };
    let change = StatusChange {
        to,
        at: state.clock.now(),
        actor: format!("agent:{}", machine.id),
        reason: Some("reported by the device".into()),
        error_h_result: (to == ActionStatus::Failed).then_some(req.error_h_result),
        troubleshoot_info: req.troubleshoot_info,
        cancellation_comment: None,
    };
    let (action, applied) = match state.store.transition(&id, &change).await? {
        TransitionOutcome::Applied(a) => (a, true),
        // Idempotent: the same report again is accepted; anything else lost the race.
        TransitionOutcome::Refused(a) => {
            let same = a.status == to;
            (a, same)
        }
    };
    if applied {
        state.announce(Change::Observed(machine.id.clone())).await;
        crate::telemetry::action_changed(&action);
        tracing::info!(action = %action.id, machine = %machine.id, status = action.status.as_str(), "action completed");
        if offboards(action.action_type, action.status) {
            tracing::info!(action = %action.id, machine = %machine.id, host = %machine.computer_dns_name, status = action.status.as_str(), "device offboarded: its credential is refused from now on");
        }
    }
    Ok(Json(ActionUpdateResponse {
        action_id: action.id,
        status: action.status,
        applied,
        desired: desired(&state, &machine).await?,
    }))
}
