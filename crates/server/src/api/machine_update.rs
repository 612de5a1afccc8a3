//! MDE's Update machine: `PATCH /api/machines/{id}` with `machineTags` (the machine's
//! whole set of tags: MDE replaces the tags with the ones sent, so a caller keeping
//! existing tags sends them too) and/or `deviceValue` (`Normal`, `Low`, `High`). The
//! body is checked whole before anything changes, and the change is one transaction; a
//! tag change re-evaluates the machine's device group as the tag calls do.

use appfence_core::authz::Api;
use appfence_core::ids::truncate;
use appfence_core::{Error, MachineRef};
use appfence_proto::{ErrorBody, Machine};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::body::{json_kind, JsonObject};
use super::machine_lookups::MAX_TAG_CHARS;
use super::odata_context;
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{ApiError, AppState};

/// MDE's device values.
pub const DEVICE_VALUES: &[&str] = &["Normal", "Low", "High"];

/// The body of Update machine.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = MachineUpdate)]
pub struct MachineUpdate {
    /// The machine's new set of tags (replacing its tags); absent: unchanged.
    #[schema(rename = "machineTags")]
    pub machine_tags: Option<Vec<String>>,
    /// `Normal`, `Low` or `High` (null: `Normal`, the default); absent: unchanged.
    #[schema(rename = "deviceValue", value_type = Option<String>)]
    pub device_value: Option<&'static str>,
}

impl MachineUpdate {
    /// The checked body: only `machineTags` and `deviceValue` (keys matched ASCII
    /// case-insensitively), at least one of them; every problem named.
    pub fn from_body(body: Option<Map<String, Value>>) -> Result<Self, Error> {
        let body = body.ok_or_else(|| {
            Error::InvalidRequestBody(
                "Request body is empty: expected a JSON object with machineTags and/or \
                 deviceValue"
                    .into(),
            )
        })?;
        let mut update = MachineUpdate {
            machine_tags: None,
            device_value: None,
        };
        for (key, value) in &body {
            if key.eq_ignore_ascii_case("machineTags") {
                update.machine_tags = Some(tags(value)?);
            } else if key.eq_ignore_ascii_case("deviceValue") {
                update.device_value = Some(device_value(value)?);
            } else {
                return Err(Error::InvalidRequestBody(format!(
                    "Property '{}' cannot be updated: Update machine takes machineTags and \
                     deviceValue",
                    truncate(key, 80)
                )));
            }
        }
        if update.machine_tags.is_none() && update.device_value.is_none() {
            return Err(Error::InvalidRequestBody(
                "Request body sets nothing: expected machineTags and/or deviceValue".into(),
            ));
        }
        Ok(update)
    }
}

/// A list of tags: trimmed, non-empty, at most [`MAX_TAG_CHARS`] characters, repeats
/// (ASCII case-insensitive) dropped.
fn tags(value: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(list) = value else {
        return Err(Error::InvalidRequestBody(format!(
            "Parameter machineTags must be a list of tags, not {}",
            json_kind(value)
        )));
    };
    let mut tags: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(tag) = item else {
            return Err(Error::InvalidRequestBody(format!(
                "Parameter machineTags must hold strings, not {}",
                json_kind(item)
            )));
        };
        let tag = tag.trim();
        if tag.is_empty() {
            return Err(Error::InvalidRequestBody(
                "Parameter machineTags holds an empty tag".into(),
            ));
        }
        if tag.chars().count() > MAX_TAG_CHARS {
            return Err(Error::InvalidRequestBody(format!(
                "Parameter machineTags: a tag is at most {MAX_TAG_CHARS} characters"
            )));
        }
        if !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
            tags.push(tag.to_string());
        }
    }
    Ok(tags)
}

fn device_value(value: &Value) -> Result<&'static str, Error> {
    match value {
        // MDE types it a nullable enum; appfence machines always have a value.
        Value::Null => Ok("Normal"),
        Value::String(s) => DEVICE_VALUES
            .iter()
            .copied()
            .find(|v| v.eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::InvalidRequestBody(format!(
                    "'{}' is not a valid deviceValue; possible values are: {}",
                    truncate(s, 80),
                    DEVICE_VALUES.join(", ")
                ))
            }),
        other => Err(Error::InvalidRequestBody(format!(
            "Parameter deviceValue must be one of {}, not {}",
            DEVICE_VALUES.join(", "),
            json_kind(other)
        ))),
    }
}

#[utoipa::path(
    patch,
    path = "/machines/{id}",
    tag = "Machines",
    summary = "Update machine",
    description = "Updates machineTags and/or deviceValue (Normal, Low, High). machineTags replaces the machine's tags with the ones sent (include the existing ones to keep them); the machine's device group is re-evaluated, as the tag calls do, and its devices' file policy follows. Any other property, or a bad value, is a 400 and changes nothing. Returns the updated machine. Permission: Machine.ReadWrite.All; users: Machine.ReadWrite and 'Alerts investigation', on devices of their groups.",
    params(("id" = String, Path, description = "Machine id (40 hex), aadDeviceId (GUID) or computerDnsName")),
    request_body = MachineUpdate,
    responses(
        (status = 200, body = Machine),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn update_machine(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<OData<Machine>, ApiError> {
    let scope = state.authorize(&principal, Api::UpdateMachine)?;
    let update = MachineUpdate::from_body(body)?;
    let machine = state
        .store
        .machine(&principal.tenant_id, &MachineRef::parse(&id)?)
        .await?
        .ok_or_else(|| Error::machine_not_found(&truncate(&id, 80)))?;
    scope.check_device(&machine)?;
    let policy = state.access.current();
    let tenant_id = principal.tenant_id.clone();
    let group_of = move |m: &appfence_core::MachineRecord| policy.rbac(&tenant_id).group_of(m);
    let updated = state
        .store
        .update_machine(
            &principal.tenant_id,
            &machine.id,
            update.machine_tags.as_deref(),
            update.device_value,
            &group_of,
        )
        .await?;
    if update.machine_tags.is_some() {
        // Cached groups of this machine are stale now, here and on other replicas.
        state.announce(appfence_store::Change::Groups).await;
    }
    if updated.rbac_group_id != machine.rbac_group_id {
        // Its file policy changed with its group (the store bumped the version).
        state
            .announce(appfence_store::Change::Tenant(principal.tenant_id.clone()))
            .await;
    }
    tracing::info!(
        machine = %updated.id,
        caller = %principal.caller_key(),
        tags = update.machine_tags.as_ref().map(Vec::len),
        device_value = update.device_value,
        "machine updated"
    );
    let ctx = odata_context(&state, "Machines", true);
    Ok(OData(StatusCode::OK, updated.to_wire(Some(ctx))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<MachineUpdate, Error> {
        MachineUpdate::from_body(v.as_object().cloned())
    }

    #[test]
    fn update_bodies_are_read_strictly() {
        let u = parse(json!({"deviceValue": "high", "MachineTags": [" a ", "B", "b"]})).unwrap();
        assert_eq!(u.device_value, Some("High"));
        assert_eq!(u.machine_tags, Some(vec!["a".to_string(), "B".to_string()]));
        assert_eq!(
            parse(json!({"machineTags": []})).unwrap().machine_tags,
            Some(vec![])
        );
        assert_eq!(
            parse(json!({"deviceValue": null})).unwrap().device_value,
            Some("Normal")
        );
        let e = parse(json!({"deviceValue": "Critical"})).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidRequestBody(m) if m.contains("deviceValue")),
            "{e:?}"
        );
        let e = parse(json!({"deviceValue": "Low", "riskScore": "High"})).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidRequestBody(m) if m.starts_with("Property 'riskScore'")),
            "{e:?}"
        );
        for bad in [
            json!({}),
            json!({"machineTags": "a"}),
            json!({"machineTags": [1]}),
            json!({"machineTags": [" "]}),
            json!({"machineTags": ["t".repeat(201)]}),
            json!({"deviceValue": 1}),
        ] {
            assert!(
                matches!(parse(bad.clone()), Err(Error::InvalidRequestBody(_))),
                "{bad}"
            );
        }
        assert!(MachineUpdate::from_body(None).is_err());
    }
}
