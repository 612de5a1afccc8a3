//! MDE's alert calls: List alerts (OData, `$expand=evidence`), Get alert, Update alert,
//! Batch update alerts, a machine's alerts and an alert's machine. Device groups apply
//! to users: an alert on a device outside the caller's groups is not found.

use appfence_core::alerts::{AlertChange, MAX_BATCH_UPDATE};
use appfence_core::authz::Api;
use appfence_core::ids::truncate;
use appfence_core::odata::{AlertField, CmpOp, Expr, Value as ODataValue};
use appfence_core::rbac::DeviceScope;
use appfence_core::{Error, MachineRef};
use appfence_proto::alert::AlertUpdate;
use appfence_proto::{Alert, Collection, ErrorBody, Machine};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::body::{json_kind, JsonObject};
use super::{odata_context, query};
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{commands, ApiError, AppState};

const ENTITY_SET: &str = "Alerts";

const LIST_DESCRIPTION: &str = "Alerts raised from what agents report: a restricted device refusing a program outside its trusted set, a file blocked by an indicator with generateAlert, a file an audit indicator watches, a restricted device unprotected for a while or silent. Newest alertCreationTime first. OData: $filter on id, alertCreationTime, lastUpdateTime, lastEventTime, firstEventTime, resolvedTime, status, severity, machineId, computerDnsName, category, detectionSource, detectorId, assignedTo, classification, determination, title, incidentId, investigationId (with eq, ne, gt, ge, lt, le, in, and, or, not, startswith); $orderby; $top (at most 10000); $skip; $count; $expand=evidence (the evidence list is empty without it). alertCreationTime is unique within the tenant and grows in the order alerts are stored, so polling with `alertCreationTime gt <newest seen>` misses and repeats nothing. Permission: Alert.Read.All or Alert.ReadWrite.All; users: Alert.Read or Alert.ReadWrite, 'View data', and only alerts of devices in their groups.";

#[utoipa::path(
    get,
    path = "/alerts",
    tag = "Alerts",
    summary = "List alerts",
    description = LIST_DESCRIPTION,
    params(
        ("$filter" = Option<String>, Query, description = "e.g. alertCreationTime gt 2026-12-01T00:00:00Z and status in ('New','InProgress')"),
        ("$top" = Option<u32>, Query), ("$skip" = Option<u32>, Query),
        ("$orderby" = Option<String>, Query), ("$count" = Option<bool>, Query),
        ("$expand" = Option<String>, Query, description = "evidence")
    ),
    responses(
        (status = 200, body = Collection<Alert>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_alerts(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw): RawQuery,
) -> Result<OData<Collection<Alert>>, ApiError> {
    let scope = state.authorize(&principal, Api::ListAlerts)?;
    let (q, pairs) = query::parse::<AlertField>(raw.as_deref())?;
    let page = state
        .store
        .list_alerts(&principal.tenant_id, &scope, &q)
        .await?;
    Ok(super::collection(
        &state,
        &uri,
        ENTITY_SET,
        &pairs,
        page,
        |a| a.to_wire(None),
    ))
}

#[utoipa::path(
    get,
    path = "/machines/{id}/alerts",
    tag = "Alerts",
    summary = "List a machine's alerts",
    description = "The alerts of one machine, newest first, with the OData options of List alerts. Permission: Alert.Read.All or Alert.ReadWrite.All; users: Alert.Read or Alert.ReadWrite, 'View data', and the device in their groups.",
    params(
        ("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName"),
        ("$filter" = Option<String>, Query), ("$top" = Option<u32>, Query),
        ("$skip" = Option<u32>, Query), ("$orderby" = Option<String>, Query),
        ("$count" = Option<bool>, Query), ("$expand" = Option<String>, Query)
    ),
    responses(
        (status = 200, body = Collection<Alert>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_machine_alerts(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw): RawQuery,
) -> Result<OData<Collection<Alert>>, ApiError> {
    let machine =
        super::machines::visible_machine(&state, &principal, Api::ListMachineAlerts, &id).await?;
    let (mut q, pairs) = query::parse::<AlertField>(raw.as_deref())?;
    let this_machine = Expr::Compare {
        field: AlertField::MachineId,
        op: CmpOp::Eq,
        value: ODataValue::String(machine.id.clone()),
    };
    query::narrow(&mut q.filter, this_machine);
    // The machine is within the caller's groups, so are its alerts.
    let page = state
        .store
        .list_alerts(&principal.tenant_id, &DeviceScope::All, &q)
        .await?;
    Ok(super::collection(
        &state,
        &uri,
        ENTITY_SET,
        &pairs,
        page,
        |a| a.to_wire(None),
    ))
}

#[utoipa::path(
    get,
    path = "/alerts/{id}",
    tag = "Alerts",
    summary = "Get alert",
    description = "One alert with its comments and evidence. 404 if the tenant has no such alert, or its device is outside the caller's device groups. Permission: as List alerts.",
    params(("id" = String, Path, description = "Alert id")),
    responses(
        (status = 200, body = Alert),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_alert(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<OData<Alert>, ApiError> {
    let alert = commands::visible_alert(&state, &principal, Api::GetAlert, &id).await?;
    let ctx = odata_context(&state, ENTITY_SET, true);
    Ok(OData(StatusCode::OK, alert.to_wire(Some(ctx))))
}

#[utoipa::path(
    get,
    path = "/alerts/{id}/machine",
    tag = "Alerts",
    summary = "Get an alert's machine",
    description = "The machine the alert is about. Permission: Machine.Read.All or Machine.ReadWrite.All; users: Machine.Read or Machine.ReadWrite, 'View data', and the device in their groups.",
    params(("id" = String, Path, description = "Alert id")),
    responses(
        (status = 200, body = Machine),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_alert_machine(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<OData<Machine>, ApiError> {
    let alert = commands::visible_alert(&state, &principal, Api::GetAlertMachine, &id).await?;
    let machine = state
        .store
        .machine(
            &principal.tenant_id,
            &MachineRef::Id(alert.machine_id.clone()),
        )
        .await?
        .ok_or_else(|| Error::machine_not_found(&alert.machine_id))?;
    let ctx = odata_context(&state, "Machines", true);
    Ok(OData(StatusCode::OK, machine.to_wire(Some(ctx))))
}

/// The updatable properties of a body (keys matched ASCII case-insensitively, as MDE's
/// pages spell them `Status` and `status`), each a string; any other key is named in a
/// 400. `alertIds` is taken out first for a batch.
fn update_of(body: &Map<String, Value>, batch: bool) -> Result<AlertUpdate, Error> {
    let mut update = AlertUpdate::default();
    for (key, value) in body {
        if batch && key.eq_ignore_ascii_case("alertIds") {
            continue;
        }
        let slot = match key.to_ascii_lowercase().as_str() {
            "status" => &mut update.status,
            "assignedto" => &mut update.assigned_to,
            "classification" => &mut update.classification,
            "determination" => &mut update.determination,
            "comment" => &mut update.comment,
            _ => {
                return Err(Error::InvalidRequestBody(format!(
                    "Property '{}' cannot be updated: an alert's updatable properties are status, assignedTo, classification, determination and comment",
                    truncate(key, 80)
                )))
            }
        };
        *slot = match value {
            Value::String(s) => Some(s.clone()),
            // An owner can be taken away; the other properties cannot be emptied.
            Value::Null if key.eq_ignore_ascii_case("assignedTo") => Some(String::new()),
            other => {
                return Err(Error::InvalidRequestBody(format!(
                    "Property '{}' must be a string, not {}",
                    truncate(key, 80),
                    json_kind(other)
                )))
            }
        };
    }
    Ok(update)
}

fn object(body: Option<Map<String, Value>>, what: &str) -> Result<Map<String, Value>, Error> {
    body.ok_or_else(|| Error::InvalidRequestBody(format!("Request body is empty: expected {what}")))
}

#[utoipa::path(
    patch,
    path = "/alerts/{id}",
    tag = "Alerts",
    summary = "Update alert",
    description = "Changes status (New, InProgress, Resolved), assignedTo, classification (TruePositive, InformationalExpectedActivity, FalsePositive), determination, and/or adds a comment; other properties are read-only (400). Resolved sets resolvedTime; moving away from Resolved clears it. A resolved alert stays until retention removes it. Every change is in the audit log (AlertUpdated) with who made it. Permission: Alert.ReadWrite.All; users: Alert.ReadWrite, 'Alerts investigation', and the device in their groups.",
    params(("id" = String, Path, description = "Alert id")),
    request_body = AlertUpdate,
    responses(
        (status = 200, body = Alert),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn update_alert(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<OData<Alert>, ApiError> {
    state.authorize(&principal, Api::UpdateAlert)?;
    let body = object(body, "a JSON object with the properties to update")?;
    let change = AlertChange::from_update(update_of(&body, false)?)?;
    let mut updated =
        commands::update_alerts(&state, &principal, Api::UpdateAlert, &[id], &change).await?;
    let alert = updated
        .pop()
        .ok_or_else(|| Error::internal("an update returned no alert"))?;
    let ctx = odata_context(&state, ENTITY_SET, true);
    Ok(OData(StatusCode::OK, alert.to_wire(Some(ctx))))
}

#[utoipa::path(
    post,
    path = "/alerts/batchUpdate",
    tag = "Alerts",
    summary = "Batch update alerts",
    description = "Applies one change (as Update alert) to every alert in alertIds (1 to 1000 ids), all or nothing: an id that is not found (or outside the caller's device groups) is a 404 naming it and nothing changes. Answers 200 with an empty body. MDE's limits: 10 calls a minute, 500 an hour. Permission: as Update alert.",
    request_body = appfence_proto::alert::AlertBatchUpdate,
    responses(
        (status = 200, description = "Updated (empty body)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn batch_update_alerts(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    state.authorize(&principal, Api::BatchUpdateAlerts)?;
    let body = object(
        body,
        "a JSON object with alertIds and the properties to update",
    )?;
    let ids = alert_ids(&body)?;
    let change = AlertChange::from_update(update_of(&body, true)?)?;
    commands::update_alerts(&state, &principal, Api::BatchUpdateAlerts, &ids, &change).await?;
    Ok(StatusCode::OK.into_response())
}

/// `alertIds`: 1 to [`MAX_BATCH_UPDATE`] alert ids, repeats dropped.
fn alert_ids(body: &Map<String, Value>) -> Result<Vec<String>, Error> {
    let value = body
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("alertIds"))
        .map(|(_, v)| v)
        .ok_or_else(|| {
            Error::InvalidRequestBody("alertIds is required: a list of alert ids".into())
        })?;
    let Value::Array(list) = value else {
        return Err(Error::InvalidRequestBody(format!(
            "alertIds must be a list of alert ids, not {}",
            json_kind(value)
        )));
    };
    if list.is_empty() || list.len() > MAX_BATCH_UPDATE {
        return Err(Error::InvalidRequestBody(format!(
            "alertIds must hold 1 to {MAX_BATCH_UPDATE} alert ids, not {}",
            list.len()
        )));
    }
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(id) = item else {
            return Err(Error::InvalidRequestBody(format!(
                "alertIds must hold strings, not {}",
                json_kind(item)
            )));
        };
        if !appfence_core::alerts::is_alert_id(id) {
            return Err(Error::alert_not_found(id));
        }
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    Ok(ids)
}
