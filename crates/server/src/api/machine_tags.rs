//! Machine tags as MDE serves them: `POST /api/machines/{id}/tags` and
//! `POST /api/machines/AddOrRemoveTagForMultipleMachines`. A change re-evaluates the
//! device groups of the machines it touches in the same transaction, so the next call
//! (a restrict by a user scoped to groups, say) sees the new group.

use appfence_core::authz::{Api, Principal};
use appfence_core::ids::truncate;
use appfence_core::records::MachineRecord;
use appfence_core::{Error, MachineRef};
use appfence_proto::{Collection, ErrorBody, Machine};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::body::JsonObject;
use super::machine_lookups::MAX_TAG_CHARS;
use super::odata_context;
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{ApiError, AppState};

/// At most this many machines per call, as in MDE.
pub const MAX_MACHINE_IDS: usize = 500;

/// `{"Value": "...", "Action": "Add" | "Remove"}` (and `MachineIds` for several).
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = TagRequest)]
pub struct TagRequest {
    #[schema(rename = "Value")]
    pub value: String,
    /// `Add` or `Remove`.
    #[schema(rename = "Action")]
    pub action: String,
}

/// `TagRequest` with `MachineIds` (at most 500).
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = MultipleTagRequest)]
pub struct MultipleTagRequest {
    #[schema(rename = "Value")]
    pub value: String,
    #[schema(rename = "Action")]
    pub action: String,
    #[schema(rename = "MachineIds")]
    pub machine_ids: Vec<String>,
}

/// The tag and whether to add it, from `Value` and `Action`.
fn tag_change(body: &Map<String, Value>) -> Result<(String, bool), Error> {
    let value = match body.get("Value") {
        None | Some(Value::Null) => return Err(Error::MissingRequiredParameter("Value".into())),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => {
            return Err(Error::InvalidRequestBody(
                "Request body is incorrect: Value must be a string".into(),
            ))
        }
    };
    if value.is_empty() {
        return Err(Error::MissingRequiredParameter("Value".into()));
    }
    if value.chars().count() > MAX_TAG_CHARS {
        return Err(Error::InvalidRequestBody(format!(
            "Request body is incorrect: a tag is at most {MAX_TAG_CHARS} characters"
        )));
    }
    let add = match body.get("Action") {
        None | Some(Value::Null) => return Err(Error::MissingRequiredParameter("Action".into())),
        Some(Value::String(a)) if a.eq_ignore_ascii_case("Add") => true,
        Some(Value::String(a)) if a.eq_ignore_ascii_case("Remove") => false,
        Some(other) => {
            return Err(Error::InvalidRequestBody(format!(
                "Request body is incorrect: Action must be 'Add' or 'Remove', not {}",
                truncate(&other.to_string(), 60)
            )))
        }
    };
    Ok((value, add))
}

fn require_body(body: Option<Map<String, Value>>) -> Result<Map<String, Value>, Error> {
    body.ok_or_else(|| {
        Error::InvalidRequestBody(
            "Request body is empty: expected a JSON object with Value and Action".into(),
        )
    })
}

/// Changes the tag on the machines (already checked to be visible to the caller), with
/// their device groups re-evaluated under the access policy in force.
async fn change(
    state: &AppState,
    principal: &Principal,
    before: &[MachineRecord],
    tag: &str,
    add: bool,
) -> Result<Vec<MachineRecord>, Error> {
    let ids: Vec<String> = before.iter().map(|m| m.id.clone()).collect();
    let policy = state.access.current();
    let tenant_id = principal.tenant_id.clone();
    let group_of = move |m: &MachineRecord| policy.rbac(&tenant_id).group_of(m);
    let changed = state
        .store
        .change_machine_tag(&principal.tenant_id, &ids, tag, add, &group_of)
        .await?;
    // Cached groups of these machines are stale now, here and on other replicas.
    state.announce(appfence_store::Change::Groups).await;
    let moved = changed
        .iter()
        .zip(before)
        .any(|(after, before)| after.rbac_group_id != before.rbac_group_id);
    if moved {
        // Their file policy changed with their group (the store bumped the version).
        state
            .announce(appfence_store::Change::Tenant(principal.tenant_id.clone()))
            .await;
    }
    tracing::info!(
        tenant_id = %principal.tenant_id,
        caller = %principal.caller_key(),
        machines = changed.len(),
        tag = %truncate(tag, 80),
        action = if add { "Add" } else { "Remove" },
        "machine tags changed"
    );
    Ok(changed)
}

#[utoipa::path(
    post,
    path = "/machines/{id}/tags",
    tag = "Machines",
    summary = "Add or remove a machine tag",
    description = "Adds or removes one tag (ASCII case-insensitive; at most 200 characters; adding one the machine has, or removing one it lacks, changes nothing); the machine's device group is re-evaluated. Returns the machine. Permission: Machine.ReadWrite.All; users: Machine.ReadWrite and 'Manage security settings', on devices of their groups.",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName")),
    request_body = TagRequest,
    responses(
        (status = 200, body = Machine),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn tag_machine(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<OData<Machine>, ApiError> {
    let scope = state.authorize(&principal, Api::TagMachine)?;
    let machine = state
        .store
        .machine(&principal.tenant_id, &MachineRef::parse(&id)?)
        .await?
        .ok_or_else(|| Error::machine_not_found(&truncate(&id, 80)))?;
    scope.check_device(&machine)?;
    let (tag, add) = tag_change(&require_body(body)?)?;
    let mut changed = change(&state, &principal, &[machine], &tag, add).await?;
    let machine = changed
        .pop()
        .ok_or_else(|| Error::internal("a tag change returned no machine"))?;
    let ctx = odata_context(&state, "Machines", true);
    Ok(OData(StatusCode::OK, machine.to_wire(Some(ctx))))
}

#[utoipa::path(
    post,
    path = "/machines/AddOrRemoveTagForMultipleMachines",
    tag = "Machines",
    summary = "Add or remove a tag on several machines",
    description = "One tag on up to 500 machines (by machine id), all or none; their device groups are re-evaluated. Returns the machines. Permission: Machine.ReadWrite.All; users: Machine.ReadWrite and 'Manage security settings', on devices of their groups.",
    request_body = MultipleTagRequest,
    responses(
        (status = 200, body = Collection<Machine>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn tag_machines(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonObject(body): JsonObject,
) -> Result<OData<Collection<Machine>>, ApiError> {
    let scope = state.authorize(&principal, Api::TagMachines)?;
    let body = require_body(body)?;
    let (tag, add) = tag_change(&body)?;
    let ids = machine_ids(&body)?;
    let mut machines = Vec::with_capacity(ids.len());
    for id in &ids {
        let machine = state
            .store
            .machine(&principal.tenant_id, &MachineRef::Id(id.clone()))
            .await?
            .ok_or_else(|| Error::machine_not_found(id))?;
        scope.check_device(&machine)?;
        machines.push(machine);
    }
    let changed = change(&state, &principal, &machines, &tag, add).await?;
    Ok(OData(
        StatusCode::OK,
        Collection {
            odata_context: odata_context(&state, "Machines", false),
            odata_count: None,
            value: changed.iter().map(|m| m.to_wire(None)).collect(),
            odata_next_link: None,
        },
    ))
}

/// `MachineIds`: 1 to 500 machine ids (40 hex), repeats dropped.
fn machine_ids(body: &Map<String, Value>) -> Result<Vec<String>, Error> {
    let list = match body.get("MachineIds") {
        None | Some(Value::Null) => {
            return Err(Error::MissingRequiredParameter("MachineIds".into()))
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(Error::InvalidRequestBody(
                "Request body is incorrect: MachineIds must be a list of machine ids".into(),
            ))
        }
    };
    if list.is_empty() {
        return Err(Error::MissingRequiredParameter("MachineIds".into()));
    }
    if list.len() > MAX_MACHINE_IDS {
        return Err(Error::InvalidRequestBody(format!(
            "Request body is incorrect: at most {MAX_MACHINE_IDS} MachineIds per call, not {}",
            list.len()
        )));
    }
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        let id = v.as_str().ok_or_else(|| {
            Error::InvalidRequestBody(
                "Request body is incorrect: MachineIds must be strings".into(),
            )
        })?;
        match MachineRef::parse(&id.trim().to_ascii_lowercase()) {
            Ok(MachineRef::Id(id)) => {
                if !ids.contains(&id) {
                    ids.push(id)
                }
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "'{}' in MachineIds is not a machine id (40 hexadecimal characters)",
                    truncate(id, 80)
                )))
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn tag_bodies_are_read_strictly() {
        assert_eq!(
            tag_change(&body(
                serde_json::json!({"Value": " soar ", "Action": "add"})
            )),
            Ok(("soar".into(), true))
        );
        assert_eq!(
            tag_change(&body(serde_json::json!({"Value": "x", "Action": "Remove"}))),
            Ok(("x".into(), false))
        );
        assert_eq!(
            tag_change(&body(serde_json::json!({"Action": "Add"}))),
            Err(Error::MissingRequiredParameter("Value".into()))
        );
        assert_eq!(
            tag_change(&body(serde_json::json!({"Value": "x"}))),
            Err(Error::MissingRequiredParameter("Action".into()))
        );
        let e =
            tag_change(&body(serde_json::json!({"Value": "x", "Action": "Toggle"}))).unwrap_err();
        assert!(e.to_string().contains("'Add' or 'Remove'"), "{e}");
        assert!(tag_change(&body(serde_json::json!({"Value": 3, "Action": "Add"}))).is_err());
        let long = "t".repeat(201);
        assert!(tag_change(&body(serde_json::json!({"Value": long, "Action": "Add"}))).is_err());
    }

    #[test]
    fn machine_ids_are_bounded_and_checked() {
        let id = "0a3250e0693a109f1affc9217be9459028aa8426";
        assert_eq!(
            machine_ids(&body(
                serde_json::json!({"MachineIds": [id, id.to_uppercase()]})
            )),
            Ok(vec![id.to_string()])
        );
        let many: Vec<String> = (0..501).map(|i| format!("{i:040x}")).collect();
        let e = machine_ids(&body(serde_json::json!({ "MachineIds": many }))).unwrap_err();
        assert!(e.to_string().contains("at most 500"), "{e}");
        assert!(machine_ids(&body(serde_json::json!({"MachineIds": ["srv-01"]}))).is_err());
        assert!(machine_ids(&body(serde_json::json!({"MachineIds": []}))).is_err());
        assert!(machine_ids(&body(serde_json::json!({"MachineIds": "x"}))).is_err());
    }
}
