//! Machines: list (OData) and get.

use appfence_core::authz::{Api, Principal};
use appfence_core::ids::truncate;
use appfence_core::odata::MachineField;
use appfence_core::records::MachineRecord;
use appfence_core::{Error, MachineRef};
use appfence_proto::{Collection, ErrorBody, Machine};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{odata_context, query};
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{ApiError, AppState};

#[utoipa::path(
    get,
    path = "/machines",
    tag = "Machines",
    summary = "List machines",
    description = "OData: $filter on computerDnsName, id, aadDeviceId, version, healthStatus, osPlatform, onboardingStatus, lastSeen, firstSeen, machineTags, rbacGroupId, lastIpAddress, riskScore, exposureLevel, deviceValue, agentVersion; startswith(computerDnsName,'x'); $top (at most 10000), $skip, $orderby, $count. Permission: Machine.Read.All or Machine.ReadWrite.All.",
    params(
        ("$filter" = Option<String>, Query, description = "e.g. startswith(computerDnsName,'srv-')"),
        ("$top" = Option<u32>, Query), ("$skip" = Option<u32>, Query),
        ("$orderby" = Option<String>, Query), ("$count" = Option<bool>, Query)
    ),
    responses(
        (status = 200, body = Collection<Machine>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_machines(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw): RawQuery,
) -> Result<OData<Collection<Machine>>, ApiError> {
    let scope = state.authorize(&principal, Api::ListMachines)?;
    let (q, pairs) = query::parse::<MachineField>(raw.as_deref())?;
    let page = state
        .store
        .list_machines(&principal.tenant_id, &scope, &q)
        .await?;
    Ok(super::collection(
        &state,
        &uri,
        "Machines",
        &pairs,
        page,
        |m| m.to_wire(None),
    ))
}

#[utoipa::path(
    get,
    path = "/machines/{id}",
    tag = "Machines",
    summary = "Get a machine; or find machines by internal IP",
    description = "Permission: Machine.Read.All or Machine.ReadWrite.All. In place of the id, MDE's lookups by internal IP: `findbyip(ip='10.1.2.3',timestamp=2024-01-31T08:44:05Z)` (the machines seen with the address within 15 minutes either side of the time, which must be within the last 30 days; a collection, empty if none) and `find(timestamp=...,key='10.1.2.3')` (the same, 404 if none).",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName; or findbyip(...) / find(...)")),
    responses(
        (status = 200, body = Machine),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_machine(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(lookup) = appfence_core::machine_lookup::parse(&id) {
        let found = super::machine_lookups::find_by_ip(&state, &principal, &lookup?).await?;
        return Ok(found.into_response());
    }
    let machine = visible_machine(&state, &principal, Api::GetMachine, &id).await?;
    let ctx = odata_context(&state, "Machines", true);
    Ok(OData(StatusCode::OK, machine.to_wire(Some(ctx))).into_response())
}

/// The machine named by `id`, if `principal` may call `api` on it.
pub(super) async fn visible_machine(
    state: &AppState,
    principal: &Principal,
    api: Api,
    id: &str,
) -> Result<MachineRecord, Error> {
    let scope = state.authorize(principal, api)?;
    let machine = state
        .store
        .machine(&principal.tenant_id, &MachineRef::parse(id)?)
        .await?
        .ok_or_else(|| Error::machine_not_found(&truncate(id, 80)))?;
    scope.check_device(&machine)?;
    Ok(machine)
}
