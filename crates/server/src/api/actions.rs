//! Machine actions: restrict, unrestrict, offboard, get, list, cancel.

use appfence_core::authz::{Api, Principal};
use appfence_core::odata::ActionField;
use appfence_core::Error;
use appfence_proto::{ActionType, Collection, ErrorBody, MachineAction};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;

use super::body::{cancel_comment, ActionRequest, JsonObject};
use super::{odata_context, query};
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{commands, ApiError, AppState};

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

#[utoipa::path(
    post,
    path = "/machines/{id}/offboard",
    tag = "Machine actions",
    summary = "Offboard machine",
    description = "Offboards the device: a MachineAction of type Offboard that the device's agent picks up like any action. \
The agent lifts its enforcement (as an unrestrict would), reports, forgets its credential and state, and stops. \
Once the action is final other than Cancelled (Succeeded; Failed; or TimeOut, for a device that never came for it), \
the machine is offboarded: its credential is refused by the agent gateway, it takes no more actions (400), \
and it shows onboardingStatus Offboarded and healthStatus Inactive. \
While an offboard is open, a second one is refused with ActiveRequestAlreadyExists and restrict or unrestrict with 400. \
Permission: Machine.Offboard (application or delegated; users also need the role permission \
'Manage security settings' and access to the device's device group). Rate limits: 100 calls a minute, 1,500 an hour.",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName")),
    request_body = ActionRequest,
    responses(
        (status = 201, description = "The action was created", body = MachineAction),
        (status = 400, description = "Bad request (Comment missing, machine offboarded), or ActiveRequestAlreadyExists", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn offboard(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<OData<MachineAction>> {
    create(state, principal, id, body, ActionType::Offboard).await
}

async fn create(
    state: AppState,
    principal: Principal,
    machine: String,
    body: Option<serde_json::Map<String, serde_json::Value>>,
    action_type: ActionType,
) -> ApiResult<OData<MachineAction>> {
    let api = commands::action_api(action_type)?;
    // Permission before the body: a caller without it learns nothing from validation.
    state.authorize(&principal, api)?;
    let request = ActionRequest::from_body(body)?;
    let action =
        commands::create_action(&state, &principal, &machine, request, action_type).await?;
    let ctx = odata_context(&state, "MachineActions", true);
    Ok(OData(StatusCode::CREATED, action.to_wire(Some(ctx))))
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
    let id = commands::action_id(&id)?;
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
    state.authorize(&principal, Api::CancelMachineAction)?;
    let comment = cancel_comment(body)?;
    let action = commands::cancel_action(&state, &principal, &id, comment, "the API").await?;
    let ctx = odata_context(&state, "MachineActions", true);
    Ok(OData(StatusCode::OK, action.to_wire(Some(ctx))))
}
