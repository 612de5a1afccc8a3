//! Indicators (MDE's Submit or Update, Import, List and Delete Indicator APIs). appfence
//! acts on `FileSha256` indicators: `Allowed` ones form the allowlist restricted devices
//! let run; `Block`, `AlertAndBlock` and `BlockAndRemediate` ones are denied on every
//! device in scope, restricted or not; `Audit` and `Alert` ones are allowed and reported.
//! `rbacGroupNames` narrows an indicator to device groups.

use appfence_core::authz::{Api, IndicatorScope};
use appfence_core::odata::{CmpOp, Expr, IndicatorField, Query, Value};
use appfence_proto::{
    Collection, ErrorBody, Indicator, IndicatorImportResponse, IndicatorImportResult, Timestamp,
};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Map, Value as Json};

use super::body::JsonObject;
use super::indicator_body::IndicatorRequest;
use super::{odata_context, query};
use crate::oauth::extract::Authenticated;
use crate::response::OData;
use crate::{commands, ApiError, AppState};

const ENTITY_SET: &str = "Indicators";

#[utoipa::path(
    post,
    path = "/indicators",
    tag = "Indicators",
    summary = "Submit or update an indicator",
    description = "Creates an indicator, or updates the one with the same indicatorValue and indicatorType. appfence supports indicatorType FileSha256 (FileSha1, FileMd5 and network types are refused with 400: the agent hashes files with SHA-256) with action Block, AlertAndBlock or BlockAndRemediate (every device in scope denies executing the file, restricted or not; BlockAndRemediate blocks and does not quarantine the file), Audit (needs generateAlert true) or Alert (executions allowed and reported), or Allowed (restricted devices let the file run). Block beats allow for the same file. rbacGroupNames (a list or a comma-separated string) scopes it to device groups; an unknown group is a 400. A block of a file some device reported as protected (the agent, the dynamic loader, PID 1's executable) is refused with 400. Every change raises the tenant's policy version, which agents fetch. Permission: Ti.ReadWrite.All, or Ti.ReadWrite for an application's own indicators; users need the delegated scope Ti.ReadWrite, the portal permission 'Manage security settings', and access to every device group the indicator applies to (all of them when it names none).",
    request_body = IndicatorRequest,
    responses(
        (status = 200, description = "The created or updated indicator", body = Indicator),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn submit_indicator(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonObject(body): JsonObject,
) -> Result<OData<Indicator>, ApiError> {
    state.authorize(&principal, Api::SubmitIndicator)?;
    let request = IndicatorRequest::from_body(body, state.clock.now())?;
    let stored = commands::submit_indicator(&state, &principal, request).await?;
    let ctx = odata_context(&state, ENTITY_SET, true);
    Ok(OData(StatusCode::OK, stored.to_wire(Some(ctx))))
}

/// Most indicators in one import, as in MDE.
pub const MAX_IMPORT: usize = appfence_core::indicators::MAX_IMPORT_ITEMS;

/// The body limit of an import: room for [`MAX_IMPORT`] indicators of a few KiB each.
pub const MAX_IMPORT_BODY_BYTES: usize = 4 * 1024 * 1024;

#[utoipa::path(
    post,
    path = "/indicators/import",
    tag = "Indicators",
    summary = "Import indicators",
    description = "Submits or updates up to 500 indicators ({\"Indicators\": [...]}, each as in Submit or Update Indicator). As MDE answers, the result lists each indicator in request order with its id, isFailed and failureReason: an indicator refused (a malformed hash, an unknown action or group, a past expiration, a protected file, another application's indicator) is reported and the others are stored, together, in one transaction. A body that is not such a list, or with more than 500, is a 400 and stores nothing. MDE's limit: 30 calls a minute. Permission as Submit or Update Indicator.",
    request_body = Object,
    responses(
        (status = 200, body = IndicatorImportResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn import_indicators(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonObject(body): JsonObject,
) -> Result<OData<IndicatorImportResponse>, ApiError> {
    state.authorize(&principal, Api::ImportIndicators)?;
    let items = import_items(body)?;
    let now = state.clock.now();
    let values: Vec<String> = items.iter().map(submitted_value).collect();
    let requests = items
        .into_iter()
        .map(|item| match item {
            Json::Object(map) => IndicatorRequest::from_body(Some(map), now),
            _ => Err(appfence_core::Error::InvalidRequestBody(
                "an indicator must be a JSON object".into(),
            )),
        })
        .collect();
    let outcomes = commands::import_indicators(&state, &principal, requests).await?;
    let value = outcomes
        .into_iter()
        .zip(values)
        .map(|(outcome, indicator)| match outcome {
            Ok(stored) => IndicatorImportResult {
                id: Some(stored.id.to_string()),
                indicator,
                is_failed: false,
                failure_reason: None,
            },
            Err(e) => IndicatorImportResult {
                id: None,
                indicator,
                is_failed: true,
                failure_reason: Some(e.to_string()),
            },
        })
        .collect();
    Ok(OData(StatusCode::OK, IndicatorImportResponse { value }))
}

/// `Indicators`: a list of 1 to [`MAX_IMPORT`] items, else a 400 naming the problem.
fn import_items(body: Option<Map<String, Json>>) -> Result<Vec<Json>, appfence_core::Error> {
    use appfence_core::Error;
    let mut body = body.ok_or_else(|| {
        Error::InvalidRequestBody("Request body is empty: expected {\"Indicators\": [...]}".into())
    })?;
    let items = match body.remove("Indicators") {
        None | Some(Json::Null) => {
            return Err(Error::MissingRequiredParameter("Indicators".into()))
        }
        Some(Json::Array(items)) => items,
        Some(_) => {
            return Err(Error::InvalidRequestBody(
                "Parameter Indicators must be a list of indicators".into(),
            ))
        }
    };
    if items.is_empty() {
        return Err(Error::MissingRequiredParameter("Indicators".into()));
    }
    if items.len() > MAX_IMPORT {
        return Err(Error::BadRequest(format!(
            "Indicators: at most {MAX_IMPORT} indicators per import, not {}",
            items.len()
        )));
    }
    Ok(items)
}

/// The `indicatorValue` an item carries, as sent (empty when it has none).
fn submitted_value(item: &Json) -> String {
    match item.get("indicatorValue") {
        Some(Json::String(s)) => appfence_core::ids::truncate(s, 200).to_string(),
        _ => String::new(),
    }
}

#[utoipa::path(
    get,
    path = "/indicators",
    tag = "Indicators",
    summary = "List indicators",
    description = "The active (unexpired) indicators. OData: $filter on id, indicatorValue, indicatorType, action, application, title, severity, createdBy, createdByDisplayName, creationTimeDateTimeUtc, expirationTime, lastUpdateTime; $top (at most 10000), $skip, $orderby, $count. Newest first by default. Permission: Ti.ReadWrite.All (every indicator) or Ti.ReadWrite (the application's own); users: scope Ti.ReadWrite and 'Manage security settings'.",
    params(
        ("$filter" = Option<String>, Query, description = "e.g. indicatorType eq 'FileSha256'"),
        ("$top" = Option<u32>, Query), ("$skip" = Option<u32>, Query),
        ("$orderby" = Option<String>, Query), ("$count" = Option<bool>, Query)
    ),
    responses(
        (status = 200, body = Collection<Indicator>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list_indicators(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    OriginalUri(uri): OriginalUri,
    RawQuery(raw): RawQuery,
) -> Result<OData<Collection<Indicator>>, ApiError> {
    state.authorize(&principal, Api::ListIndicators)?;
    let (q, pairs) = query::parse::<IndicatorField>(raw.as_deref())?;
    let q = visible(q, &principal.indicator_scope(), state.clock.now());
    let page = state
        .store
        .list_indicators(&principal.tenant_id, &q)
        .await?;
    Ok(super::collection(
        &state,
        &uri,
        ENTITY_SET,
        &pairs,
        page,
        |i| i.to_wire(None),
    ))
}

/// Narrows the caller's query to the indicators MDE would list: active ones, and only
/// the caller's own when its scope says so.
fn visible(
    mut q: Query<IndicatorField>,
    scope: &IndicatorScope,
    now: Timestamp,
) -> Query<IndicatorField> {
    let expires = |op, value| Expr::Compare {
        field: IndicatorField::ExpirationTime,
        op,
        value,
    };
    let mut narrow = Expr::Or(
        Box::new(expires(CmpOp::Eq, Value::Null)),
        Box::new(expires(CmpOp::Gt, Value::Timestamp(now))),
    );
    if let IndicatorScope::CreatedBy(who) = scope {
        narrow = Expr::And(
            Box::new(narrow),
            Box::new(Expr::Compare {
                field: IndicatorField::CreatedBy,
                op: CmpOp::Eq,
                value: Value::String(who.clone()),
            }),
        );
    }
    q.filter = Some(match q.filter.take() {
        Some(f) => Expr::And(Box::new(f), Box::new(narrow)),
        None => narrow,
    });
    q
}

#[utoipa::path(
    delete,
    path = "/indicators/{id}",
    tag = "Indicators",
    summary = "Delete an indicator",
    description = "Removes the indicator; devices stop applying it (a blocked file runs again, an allowed one no longer runs on restricted devices) once they fetch the new policy, which they are woken to do. Permission: Ti.ReadWrite.All, or Ti.ReadWrite for an application's own indicators; users: scope Ti.ReadWrite, 'Manage security settings' and access to the indicator's device groups.",
    params(("id" = String, Path, description = "Indicator id (a number)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn delete_indicator(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.authorize(&principal, Api::DeleteIndicator)?;
    let number = commands::indicator_id(&id)?;
    commands::delete_indicator(&state, &principal, number).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_hold_one_to_five_hundred_indicators() {
        use appfence_core::Error;
        let body = |v: serde_json::Value| v.as_object().cloned();
        let many =
            |n: usize| body(serde_json::json!({ "Indicators": vec![serde_json::json!({}); n] }));
        assert_eq!(import_items(many(500)).unwrap().len(), 500);
        assert_eq!(
            import_items(many(501)),
            Err(Error::BadRequest(
                "Indicators: at most 500 indicators per import, not 501".into()
            ))
        );
        assert_eq!(
            import_items(many(0)),
            Err(Error::MissingRequiredParameter("Indicators".into()))
        );
        assert_eq!(
            import_items(body(serde_json::json!({"indicators": []}))),
            Err(Error::MissingRequiredParameter("Indicators".into()))
        );
        assert!(matches!(
            import_items(body(serde_json::json!({"Indicators": "x"}))),
            Err(Error::InvalidRequestBody(_))
        ));
        assert!(import_items(None).is_err());
    }

    #[test]
    fn lists_are_narrowed_to_active_and_own_indicators() {
        let now = Timestamp::from_unix_seconds(100);
        let q = visible(Query::default(), &IndicatorScope::All, now);
        let Some(Expr::Or(..)) = q.filter else {
            panic!("{:?}", q.filter)
        };
        let mine = IndicatorScope::CreatedBy("app".into());
        let asked = Query {
            filter: Some(Expr::Compare {
                field: IndicatorField::Title,
                op: CmpOp::Eq,
                value: Value::String("t".into()),
            }),
            skip: 3,
            ..Query::default()
        };
        let q = visible(asked, &mine, now);
        assert_eq!(q.skip, 3);
        let Some(Expr::And(theirs, ours)) = q.filter else {
            panic!()
        };
        assert!(matches!(
            *theirs,
            Expr::Compare {
                field: IndicatorField::Title,
                ..
            }
        ));
        let Expr::And(_, own) = *ours else { panic!() };
        assert_eq!(
            *own,
            Expr::Compare {
                field: IndicatorField::CreatedBy,
                op: CmpOp::Eq,
                value: Value::String("app".into())
            }
        );
    }
}
