//! Indicators (MDE's Submit or Update, List and Delete Indicator APIs). appfence acts on
//! `FileSha256` indicators with action `Allowed`: they form the tenant's allowlist,
//! which restricted devices let run. Indicators are tenant-wide, not device-group scoped.

use appfence_core::authz::{Api, IndicatorScope};
use appfence_core::odata::{CmpOp, Expr, IndicatorField, Query, Value};
use appfence_proto::{Collection, ErrorBody, Indicator, Timestamp};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::StatusCode;

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
    description = "Creates an indicator, or updates the one with the same indicatorValue and indicatorType. appfence supports indicatorType FileSha256 with action Allowed: the file may run on restricted devices of the tenant. Every change raises the tenant's allowlist version, which agents fetch. Permission: Ti.ReadWrite.All, or Ti.ReadWrite for an application's own indicators; users need the delegated scope Ti.ReadWrite and the portal permission 'Manage security settings'.",
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
    description = "Removes the indicator; for an allowed file, restricted devices stop letting it run once they fetch the new allowlist. Permission: Ti.ReadWrite.All, or Ti.ReadWrite for an application's own indicators; users: scope Ti.ReadWrite and 'Manage security settings'.",
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
