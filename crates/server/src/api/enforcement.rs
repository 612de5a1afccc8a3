//! appfence extensions on machines: what the agent denied (`/machines/{id}/events`) and
//! its enforcement state next to the state the server wants (`/machines/{id}/enforcement`).

use appfence_core::authz::Api;
use appfence_core::odata::{CmpOp, EventField, Expr, Value};
use appfence_proto::{Collection, ErrorBody, MachineEnforcement, MachineEvent};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;

use super::{odata_context, query};
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{ApiError, AppState};

#[utoipa::path(
    get,
    path = "/machines/{id}/events",
    tag = "Machines",
    summary = "List a machine's denied executions (appfence extension)",
    description = "What the agent denied, or in monitor mode would have denied, newest first. The newest 10,000 events per machine are kept. OData: $filter on time, path, sha256, pid, uid, parent, kind ('exec' or 'elfOpen'); $top (at most 10000), $skip, $orderby, $count. Permission: Machine.Read.All or Machine.ReadWrite.All.",
    params(
        ("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName"),
        ("$filter" = Option<String>, Query), ("$top" = Option<u32>, Query),
        ("$skip" = Option<u32>, Query), ("$orderby" = Option<String>, Query),
        ("$count" = Option<bool>, Query)
    ),
    responses(
        (status = 200, body = Collection<MachineEvent>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_machine_events(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw): RawQuery,
) -> Result<OData<Collection<MachineEvent>>, ApiError> {
    let machine =
        super::machines::visible_machine(&state, &principal, Api::ListMachineEvents, &id).await?;
    let (mut q, pairs) = query::parse::<EventField>(raw.as_deref())?;
    let this_machine = Expr::Compare {
        field: EventField::MachineId,
        op: CmpOp::Eq,
        value: Value::String(machine.id.clone()),
    };
    query::narrow(&mut q.filter, this_machine);
    let page = state
        .store
        .list_denials(
            &principal.tenant_id,
            &appfence_core::rbac::DeviceScope::All,
            &q,
        )
        .await?;
    Ok(super::collection(
        &state,
        &uri,
        "MachineEvents",
        &pairs,
        page,
        |e| e.to_wire(),
    ))
}

#[utoipa::path(
    get,
    path = "/machines/{id}/enforcement",
    tag = "Machines",
    summary = "Get a machine's enforcement state (appfence extension)",
    description = "The agent's last report (restricted, since, mode, coverage, allowlist version, time spent unprotected) next to the state the server wants (restricted, the action that decided it, mode, allowlist version). Permission: Machine.Read.All or Machine.ReadWrite.All.",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName")),
    responses(
        (status = 200, body = MachineEnforcement),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_machine_enforcement(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<OData<MachineEnforcement>, ApiError> {
    let machine =
        super::machines::visible_machine(&state, &principal, Api::GetMachineEnforcement, &id)
            .await?;
    let desired = crate::agent_gateway::desired(&state, &machine).await?;
    Ok(OData(
        StatusCode::OK,
        MachineEnforcement {
            odata_context: Some(odata_context(&state, "MachineEnforcement", true)),
            machine_id: machine.id,
            computer_dns_name: machine.computer_dns_name,
            last_seen: machine.last_seen,
            reported: machine.enforcement,
            desired,
        },
    ))
}
