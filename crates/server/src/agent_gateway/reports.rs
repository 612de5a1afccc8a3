//! What agents fetch and report about enforcement: the tenant's allowlist, and batches
//! of denied executions.

use std::collections::HashMap;

use appfence_core::alerts::detectors::denial_alerts;
use appfence_core::alerts::IndicatorInfo;
use appfence_core::odata::{Expr, IndicatorField, Query, Value, MAX_TOP};
use appfence_core::Error;
use appfence_proto::agent::{
    AllowlistResponse, DenialEvent, EventBatch, EventBatchResponse, MAX_COMMAND_LINE_BYTES,
    MAX_EVENTS_PER_BATCH,
};
use axum::extract::State;
use axum::Json;

use super::handlers::AgentJson;
use super::Device;
use crate::{ApiError, AppState};

/// Longest accepted `path` and `parent` (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest accepted user name.
pub const MAX_USER_BYTES: usize = 256;

/// The largest accepted event batch: [`MAX_EVENTS_PER_BATCH`] events whose path, parent
/// and command line are each at most 4 KiB, with room for the JSON around them.
pub const MAX_EVENT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// `GET /agent/v1/allowlist`: the device's file policy: the allowed, blocked and
/// audited SHA-256 hashes of the indicators that apply to its device group.
pub async fn allowlist(
    State(state): State<AppState>,
    Device(machine): Device,
) -> Result<Json<AllowlistResponse>, ApiError> {
    let list = state
        .store
        .allowlist(&machine.tenant_id, machine.rbac_group_id, state.clock.now())
        .await?;
    Ok(Json(list))
}

/// `POST /agent/v1/events`: stores the whole batch, and the alerts it raises, in one
/// transaction, or nothing.
pub async fn events(
    State(state): State<AppState>,
    Device(machine): Device,
    AgentJson(batch): AgentJson<EventBatch>,
) -> Result<Json<EventBatchResponse>, ApiError> {
    let events = check_batch(batch)?;
    let now = state.clock.now();
    let indicators = alerting_indicators(&state, &machine.tenant_id, &events).await?;
    let alerts = denial_alerts(&machine, &events, &indicators, &state.config.alerts, now);
    state
        .store
        .record_denials(&machine, &events, &alerts, now)
        .await?;
    if !events.is_empty() {
        state
            .announce(appfence_store::Change::Observed(machine.id.clone()))
            .await;
        tracing::info!(machine = %machine.id, count = events.len(), "denial events received");
    }
    Ok(Json(EventBatchResponse {
        accepted: events.len(),
    }))
}

/// The title, description and severity of the indicators behind the batch's rule hits,
/// by indicator id: their alerts take these, as MDE's custom indicator alerts do. One
/// query for the whole batch (at most its distinct hashes).
async fn alerting_indicators(
    state: &AppState,
    tenant_id: &str,
    events: &[DenialEvent],
) -> Result<HashMap<String, IndicatorInfo>, Error> {
    let mut hashes: Vec<Value> = Vec::new();
    for e in events.iter().filter(|e| e.rule.is_some()) {
        if let Some(h) = &e.sha256 {
            let v = Value::String(h.clone());
            if !hashes.contains(&v) {
                hashes.push(v);
            }
        }
    }
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let query = Query {
        filter: Some(Expr::In {
            field: IndicatorField::IndicatorValue,
            values: hashes,
        }),
        top: Some(MAX_TOP),
        ..Query::default()
    };
    let page = state.store.list_indicators(tenant_id, &query).await?;
    Ok(page
        .items
        .into_iter()
        .map(|i| {
            let id = i.id.to_string();
            let info = IndicatorInfo {
                id: id.clone(),
                title: i.title,
                description: i.description,
                severity: i.severity,
            };
            (id, info)
        })
        .collect())
}

/// The batch's events with their hashes in lower case, or `InvalidRequestBody` naming
/// the first problem.
fn check_batch(batch: EventBatch) -> Result<Vec<DenialEvent>, Error> {
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(Error::InvalidRequestBody(format!(
            "A batch holds at most {MAX_EVENTS_PER_BATCH} events, not {}",
            batch.events.len()
        )));
    }
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            let bad = |what: String| Error::InvalidRequestBody(format!("events[{i}]: {what}"));
            if e.path.is_empty() || e.path.len() > MAX_PATH_BYTES {
                return Err(bad(format!("path must have 1 to {MAX_PATH_BYTES} bytes")));
            }
            if e.parent.as_ref().is_some_and(|p| p.len() > MAX_PATH_BYTES) {
                return Err(bad(format!("parent is longer than {MAX_PATH_BYTES} bytes")));
            }
            if e.command_line
                .as_ref()
                .is_some_and(|c| c.len() > MAX_COMMAND_LINE_BYTES)
            {
                return Err(bad(format!(
                    "commandLine is longer than {MAX_COMMAND_LINE_BYTES} bytes"
                )));
            }
            if e.user
                .as_ref()
                .is_some_and(|u| u.is_empty() || u.len() > MAX_USER_BYTES)
            {
                return Err(bad(format!("user must have 1 to {MAX_USER_BYTES} bytes")));
            }
            if let Some(h) = &e.sha256 {
                let h = appfence_core::indicators::sha256_value(h)
                    .map_err(|_| bad("sha256 is not 64 hexadecimal characters".into()))?;
                e.sha256 = Some(h);
            }
            Ok(e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_proto::agent::DenialKind;
    use appfence_proto::Timestamp;

    fn event(path: &str) -> DenialEvent {
        DenialEvent {
            time: Timestamp::from_unix_seconds(1),
            path: path.into(),
            sha256: Some("AB".repeat(32)),
            pid: 1,
            uid: Some(0),
            parent: None,
            kind: DenialKind::Exec,
            monitor: false,
            rule: None,
            indicator_id: None,
            alert: false,
            command_line: None,
            user: None,
        }
    }

    #[test]
    fn batches_are_checked_whole() {
        let ok = check_batch(EventBatch {
            events: vec![event("/tmp/x")],
        })
        .unwrap();
        assert_eq!(ok[0].sha256.as_deref(), Some("ab".repeat(32).as_str()));
        let too_many = EventBatch {
            events: vec![event("/x"); MAX_EVENTS_PER_BATCH + 1],
        };
        assert!(matches!(
            check_batch(too_many),
            Err(Error::InvalidRequestBody(m)) if m.contains("at most 500 events, not 501")
        ));
        let mut bad_hash = event("/x");
        bad_hash.sha256 = Some("nope".into());
        assert_eq!(
            check_batch(EventBatch {
                events: vec![event("/ok"), bad_hash]
            }),
            Err(Error::InvalidRequestBody(
                "events[1]: sha256 is not 64 hexadecimal characters".into()
            ))
        );
        assert!(check_batch(EventBatch {
            events: vec![event("")]
        })
        .is_err());
    }
}
