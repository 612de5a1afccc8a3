//! Machine actions: restrict, unrestrict, get, list, cancel.

use appfence_core::authz::{Api, Principal};
use appfence_core::ids::{new_guid, parse_guid, truncate};
use appfence_core::odata::ActionField;
use appfence_core::records::{ActionRecord, StatusChange, TransitionOutcome};
use appfence_core::{Error, MachineRef};
use appfence_proto::{ActionStatus, ActionType, Collection, ErrorBody, MachineAction};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;

use super::body::{cancel_comment, ActionRequest, JsonObject};
use super::{odata_context, query};
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{ApiError, AppState};
use appfence_store::Change;

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(
    post,
    path = "/machines/{id}/restrictCodeExecution",
    tag = "Machine actions",
    summary = "Restrict app execution",
    description = "Restricts execution of all applications on the device except a predefined set. Permission: Machine.RestrictExecution.",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName")),
    request_body = ActionRequest,
    responses(
        (status = 201, description = "The action was created", body = MachineAction),
        (status = 400, description = "Bad request, or ActiveRequestAlreadyExists", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn restrict(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<OData<MachineAction>> {
    create(
        state,
        principal,
        id,
        body,
        ActionType::RestrictCodeExecution,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/machines/{id}/unrestrictCodeExecution",
    tag = "Machine actions",
    summary = "Remove app restriction",
    description = "Enables execution of any application on the device. Permission: Machine.RestrictExecution.",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName")),
    request_body = ActionRequest,
    responses(
        (status = 201, description = "The action was created", body = MachineAction),
        (status = 400, description = "Bad request, or ActiveRequestAlreadyExists", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn unrestrict(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<OData<MachineAction>> {
    create(
        state,
        principal,
        id,
        body,
        ActionType::UnrestrictCodeExecution,
    )
    .await
}

async fn create(
    state: AppState,
    principal: Principal,
    machine: String,
    body: Option<serde_json::Map<String, serde_json::Value>>,
    action_type: ActionType,
) -> ApiResult<OData<MachineAction>> {
    let api = match action_type {
        ActionType::RestrictCodeExecution => Api::RestrictCodeExecution,
        _ => Api::UnrestrictCodeExecution,
    };
    let scope = state.authorize(&principal, api)?;
    let request = ActionRequest::from_body(body)?;
    let machine_ref = MachineRef::parse(&machine)?;
    let machine = state
        .store
        .machine(&principal.tenant_id, &machine_ref)
        .await?
        .ok_or_else(|| Error::machine_not_found(&truncate(&machine, 80)))?;
    scope.check_device(&machine)?;
    appfence_core::capability::check_can_restrict(&machine, &state.config.min_agent_version)?;
    let now = state.clock.now();
    let action = ActionRecord {
        tenant_id: principal.tenant_id.clone(),
        id: new_guid(),
        action_type,
        title: request.title,
        requestor: principal.requestor().to_string(),
        requestor_comment: request.comment,
        status: ActionStatus::Pending,
        machine_id: machine.id.clone(),
        computer_dns_name: machine.computer_dns_name.clone(),
        created: now,
        last_update: now,
        cancellation_requestor: None,
        cancellation_comment: None,
        cancellation_time: None,
        error_h_result: 0,
        external_id: request.external_id,
        request_source: "PublicApi".into(),
        troubleshoot_info: None,
    };
    state.store.create_action(&action).await?;
    crate::telemetry::action_created(&action);
    state.announce(Change::Machine(machine.id.clone())).await;
    tracing::info!(action = %action.id, machine = %machine.id, kind = action_type.as_str(), requestor = %action.requestor, "action created");
    let ctx = odata_context(&state, "MachineActions", true);
    Ok(OData(StatusCode::CREATED, action.to_wire(Some(ctx))))
}

/// An action id from the path: a GUID, else `InvalidInput`.
fn action_id(raw: &str) -> Result<String, Error> {
    parse_guid(raw).ok_or_else(|| {
        Error::InvalidInput(format!(
            "MachineAction id '{}' is not a GUID",
            truncate(raw, 80)
        ))
    })
}

#[utoipa::path(
    get,
    path = "/machineactions/{id}",
    tag = "Machine actions",
    summary = "Get a machine action",
    description = "Permission: Machine.Read.All or Machine.ReadWrite.All.",
    params(("id" = String, Path, description = "MachineAction id (GUID)")),
    responses(
        (status = 200, body = MachineAction),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_action(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<OData<MachineAction>> {
    let scope = state.authorize(&principal, Api::GetMachineAction)?;
    let id = action_id(&id)?;
    let action = state
        .store
        .action(&principal.tenant_id, &id)
        .await?
        .ok_or_else(|| Error::action_not_found(&id))?;
    state.check_action_device(&scope, &action).await?;
    let ctx = odata_context(&state, "MachineActions", true);
    Ok(OData(StatusCode::OK, action.to_wire(Some(ctx))))
}

#[utoipa::path(
    get,
    path = "/machineactions",
    tag = "Machine actions",
    summary = "List machine actions",
    description = "OData: $filter on id, status, machineId, type, requestor, creationDateTimeUtc, lastUpdateDateTimeUtc, computerDnsName, externalId; $top (at most 10000), $skip, $orderby, $count. Newest first by default. Permission: Machine.Read.All or Machine.ReadWrite.All.",
    params(
        ("$filter" = Option<String>, Query, description = "e.g. status eq 'Pending' and type in ('RestrictCodeExecution','UnrestrictCodeExecution')"),
        ("$top" = Option<u32>, Query), ("$skip" = Option<u32>, Query),
        ("$orderby" = Option<String>, Query), ("$count" = Option<bool>, Query)
    ),
    responses(
        (status = 200, body = Collection<MachineAction>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_actions(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw): RawQuery,
) -> ApiResult<OData<Collection<MachineAction>>> {
    let scope = state.authorize(&principal, Api::ListMachineActions)?;
    let (q, pairs) = query::parse::<ActionField>(raw.as_deref())?;
    let page = state
        .store
        .list_actions(&principal.tenant_id, &scope, &q)
        .await?;
    Ok(super::collection(
        &state,
        &uri,
        "MachineActions",
        &pairs,
        page,
        |a| a.to_wire(None),
    ))
}

#[utoipa::path(
    post,
    path = "/machineactions/{id}/cancel",
    tag = "Machine actions",
    summary = "Cancel a machine action",
    description = "Cancels a Pending or InProgress action. An action that is already final cannot be cancelled (400). Permission: Machine.RestrictExecution.",
    params(("id" = String, Path, description = "MachineAction id (GUID)")),
    request_body(content = Option<ActionRequest>, description = "Optional: {\"Comment\": \"...\"}"),
    responses(
        (status = 200, description = "The cancelled action", body = MachineAction),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn cancel_action(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<OData<MachineAction>> {
    let scope = state.authorize(&principal, Api::CancelMachineAction)?;
    let id = action_id(&id)?;
    let comment = cancel_comment(body)?;
    // Tenant scoping: an action of another tenant is "not found".
    let action = state
        .store
        .action(&principal.tenant_id, &id)
        .await?
        .ok_or_else(|| Error::action_not_found(&id))?;
    state.check_action_device(&scope, &action).await?;
    let change = StatusChange {
        to: ActionStatus::Cancelled,
        at: state.clock.now(),
        actor: principal.requestor().to_string(),
        reason: Some("cancelled through the API".into()),
        error_h_result: None,
        troubleshoot_info: None,
        cancellation_comment: comment,
    };
    match state.store.transition(&id, &change).await? {
        TransitionOutcome::Applied(action) => {
            crate::telemetry::action_changed(&action);
            state
                .announce(Change::Machine(action.machine_id.clone()))
                .await;
            tracing::info!(action = %action.id, requestor = %change.actor, "action cancelled");
            let ctx = odata_context(&state, "MachineActions", true);
            Ok(OData(StatusCode::OK, action.to_wire(Some(ctx))))
        }
        TransitionOutcome::Refused(current) => Err(Error::ActionAlreadyFinal(format!(
            "MachineAction {} is already {} and cannot be cancelled",
            current.id,
            current.status.as_str()
        ))
        .into()),
    }
}
