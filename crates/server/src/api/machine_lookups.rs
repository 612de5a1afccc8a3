//! Playbook lookups: machines by internal IP at a time (`findbyip(...)`, `find(...)`,
//! path segments in place of a machine id) and by tag (`findbytag`), as MDE serves
//! them: a collection of machines, only those a delegated caller may see.

use appfence_core::authz::{Api, Principal};
use appfence_core::ids::truncate;
use appfence_core::machine_lookup::{IpLookup, LookupKind};
use appfence_core::records::MachineRecord;
use appfence_core::Error;
use appfence_proto::{Collection, ErrorBody, Machine};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;

use super::odata_context;
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{ApiError, AppState};

/// Longest tag accepted in a lookup or a change.
pub const MAX_TAG_CHARS: usize = 200;

/// The machines as MDE returns a lookup: `{"@odata.context": ...#Machines, "value": [...]}`.
fn machines(state: &AppState, items: &[MachineRecord]) -> OData<Collection<Machine>> {
    OData(
        StatusCode::OK,
        Collection {
            odata_context: odata_context(state, "Machines", false),
            odata_count: None,
            value: items.iter().map(|m| m.to_wire(None)).collect(),
            odata_next_link: None,
        },
    )
}

/// `findbyip(ip='...',timestamp=...)` and `find(timestamp=...,key='...')`: the machines
/// seen with the address within 15 minutes either side of the time (which must be
/// within the last 30 days), among those the caller may see.
pub async fn find_by_ip(
    state: &AppState,
    principal: &Principal,
    lookup: &IpLookup,
) -> Result<OData<Collection<Machine>>, ApiError> {
    let api = match lookup.kind {
        LookupKind::FindByIp => Api::FindMachinesByIp,
        LookupKind::FindByKey => Api::FindMachineByIp,
    };
    let scope = state.authorize(principal, api)?;
    lookup.check_age(state.clock.now())?;
    let (from, to) = lookup.window();
    let found: Vec<MachineRecord> = state
        .store
        .machines_seen_with_ip(&principal.tenant_id, &lookup.ip.to_string(), from, to)
        .await?
        .into_iter()
        .filter(|m| scope.allows(m.rbac_group_id))
        .collect();
    // MDE documents 404 for `find` when no machine matches; `findbyip` answers an empty
    // collection.
    if found.is_empty() && lookup.kind == LookupKind::FindByKey {
        return Err(Error::ResourceNotFound(format!(
            "No machine was seen with the address {} between {from} and {to}",
            lookup.ip
        ))
        .into());
    }
    Ok(machines(state, &found))
}

/// The query of `findbytag`: `tag` (required) and `useStartsWithFilter` (default false).
fn tag_query(raw: Option<&str>) -> Result<(String, bool), Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| Error::InvalidInput("The query string is not valid".into()))?;
    let (mut tag, mut prefix) = (None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "tag" if tag.is_none() => tag = Some(v),
            "useStartsWithFilter" if prefix.is_none() => {
                prefix = Some(match v.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "useStartsWithFilter must be true or false, not '{}'",
                            truncate(&v, 40)
                        )))
                    }
                })
            }
            "tag" | "useStartsWithFilter" => {
                return Err(Error::InvalidInput(format!(
                    "The parameter {k} is given twice"
                )))
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "Unknown parameter '{}'; findbytag takes tag and useStartsWithFilter",
                    truncate(other, 40)
                )))
            }
        }
    }
    let tag = tag
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Error::MissingRequiredParameter("tag".into()))?;
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(Error::InvalidInput(format!(
            "A tag is at most {MAX_TAG_CHARS} characters"
        )));
    }
    Ok((tag, prefix.unwrap_or(false)))
}

#[utoipa::path(
    get,
    path = "/machines/findbytag",
    tag = "Machines",
    summary = "Find devices by tag",
    description = "The machines with the tag (ASCII case-insensitive), or with a tag starting with it when useStartsWithFilter=true; at most 10,000. Permission: Machine.Read.All or Machine.ReadWrite.All; users: Machine.Read or Machine.ReadWrite and 'View data', only devices of their groups.",
    params(
        ("tag" = String, Query, description = "The tag"),
        ("useStartsWithFilter" = Option<bool>, Query, description = "Prefix match (default false)")
    ),
    responses(
        (status = 200, body = Collection<Machine>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn find_by_tag(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    RawQuery(raw): RawQuery,
) -> Result<OData<Collection<Machine>>, ApiError> {
    let scope = state.authorize(&principal, Api::FindMachinesByTag)?;
    let (tag, prefix) = tag_query(raw.as_deref())?;
    let found: Vec<MachineRecord> = state
        .store
        .machines_with_tag(&principal.tenant_id, &tag, prefix)
        .await?
        .into_iter()
        .filter(|m| scope.allows(m.rbac_group_id))
        .collect();
    Ok(machines(&state, &found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_query_is_read_strictly() {
        assert_eq!(tag_query(Some("tag=prod")), Ok(("prod".into(), false)));
        assert_eq!(
            tag_query(Some("tag=web%20tier&useStartsWithFilter=True")),
            Ok(("web tier".into(), true))
        );
        assert_eq!(
            tag_query(Some("useStartsWithFilter=false")),
            Err(Error::MissingRequiredParameter("tag".into()))
        );
        assert!(tag_query(Some("tag=a&useStartsWithFilter=maybe")).is_err());
        assert!(tag_query(Some("tag=a&tag=b")).is_err());
        assert!(tag_query(Some("tag=a&x=1")).is_err());
        assert!(tag_query(Some(&format!("tag={}", "x".repeat(201)))).is_err());
    }
}
