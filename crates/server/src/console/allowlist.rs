//! The allowlist: the tenant's `FileSha256` indicators with action `Allowed`, which
//! restricted devices let run; adding one (a denial on a device page pre-fills the
//! form) and deleting one.

use appfence_core::authz::Api;
use appfence_core::odata::{CmpOp, Expr, IndicatorField, Query as OData, Value};
use appfence_core::records::IndicatorRecord;
use appfence_core::Error;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{page, respond, time, time_opt, Notice, Section};
use super::session::Viewer;
use crate::api::IndicatorRequest;
use crate::{commands, AppState};

/// Indicators listed (newest first).
const SHOWN: u32 = 500;

#[derive(Deserialize, Default, Clone)]
pub struct Draft {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    /// A date (`2027-01-31`) or a date and time.
    #[serde(default)]
    expires: String,
    /// Set after a change was made.
    #[serde(default)]
    done: String,
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    draft: Result<Query<Draft>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let draft = draft.map(|Query(d)| d).unwrap_or_default();
    if let Err(e) = super::admit_view(&state, &viewer, Api::ListIndicators).await {
        return super::error_page(Some(&viewer), &e);
    }
    let notice = match draft.done.as_str() {
        "added" => Some(Notice::Ok("Added. Restricted devices fetch the new allowlist within a second or two.".into())),
        "deleted" => Some(Notice::Ok("Deleted. Restricted devices stop letting that file run once they fetch the new allowlist.".into())),
        _ => None,
    };
    render(&state, &viewer, StatusCode::OK, notice, &draft).await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<Notice>,
    draft: &Draft,
) -> Response {
    if let Err(e) = state.authorize(&viewer.principal, Api::ListIndicators) {
        return super::error_page(Some(viewer), &e);
    }
    let now = state.clock.now();
    let allowed = Expr::And(
        Box::new(Expr::Compare {
            field: IndicatorField::IndicatorType,
            op: CmpOp::Eq,
            value: Value::String("FileSha256".into()),
        }),
        Box::new(Expr::Compare {
            field: IndicatorField::Action,
            op: CmpOp::Eq,
            value: Value::String("Allowed".into()),
        }),
    );
    let found = match state
        .store
        .list_indicators(
            &viewer.principal.tenant_id,
            &OData {
                filter: Some(allowed),
                top: Some(SHOWN),
                ..Default::default()
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return super::error_page(Some(viewer), &e),
    };
    let active: Vec<&IndicatorRecord> = found.items.iter().filter(|i| i.is_active(now)).collect();
    let can_change = state
        .authorize(&viewer.principal, Api::SubmitIndicator)
        .is_ok();
    let body = html! {
        h1 { "Allowlist" }
        p.muted { "Files allowed to run on restricted devices, by SHA-256, in addition to the files of installed packages." }
        @if can_change {
            section.panel aria-labelledby="h-add" {
                h2 #h-add { "Allow a file" }
                form method="post" action="/console/allowlist" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label.field { span { "SHA-256 (64 hexadecimal characters)" }
                        input #sha256 name="sha256" value=(draft.sha256) required pattern="[0-9A-Fa-f]{64}" maxlength="64" spellcheck="false"; }
                    label.field { span { "Title" } input #title name="title" value=(draft.title) required maxlength="1000"; }
                    label.field { span { "Description" } input #description name="description" value=(draft.description) required maxlength="1000"; }
                    label.field { span { "Expires (optional; a date such as 2027-01-31, UTC)" } input #expires name="expires" value=(draft.expires) placeholder="never"; }
                    button type="submit" #add { "Allow this file" }
                }
            }
        }
        section.panel aria-labelledby="h-list" {
            h2 #h-list { "Allowed files (" (active.len()) ")" }
            table {
                thead { tr { th { "SHA-256" } th { "Title" } th { "Description" } th { "Added by" } th { "Added" } th { "Expires" } th {} } }
                tbody #allowlist-rows {
                    @if active.is_empty() { tr { td colspan="7" { "No file is allowed yet." } } }
                    @for i in &active {
                        tr data-sha256=(i.indicator_value) {
                            td.mono { (i.indicator_value) }
                            td { (i.title) }
                            td { (i.description) }
                            td { (i.source) }
                            td { (time(i.created)) }
                            td { @if i.expiration_time.is_some() { (time_opt(i.expiration_time)) } @else { "never" } }
                            td {
                                @if can_change {
                                    form method="post" action={"/console/allowlist/" (i.id) "/delete"} {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button.secondary.small type="submit" aria-label={"Delete " (i.title)} { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(
        status,
        page(
            "Allowlist",
            Some(viewer),
            Section::Allowlist,
            notice.as_ref(),
            body,
        ),
    )
}

/// The expiry as the API takes it: a date means its start (UTC).
fn expiration(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        None
    } else if raw.len() == 10 {
        Some(format!("{raw}T00:00:00Z"))
    } else {
        Some(raw.to_string())
    }
}

fn words(e: &Error) -> String {
    match e {
        Error::MissingRequiredParameter(p) => {
            let field = match p.as_str() {
                "indicatorValue" => "The SHA-256",
                "title" => "The title",
                "description" => "The description",
                other => other,
            };
            format!("{field} is required.")
        }
        other => super::words::in_words(other),
    }
}

pub async fn add(
    State(state): State<AppState>,
    viewer: Viewer,
    form: Result<Form<Draft>, axum::extract::rejection::FormRejection>,
) -> Response {
    let draft = form.map(|Form(f)| f).unwrap_or_default();
    let outcome = async {
        viewer.check_csrf(&draft.csrf)?;
        state.authorize(&viewer.principal, Api::SubmitIndicator)?;
        commands::admit(&state, &viewer.principal, Api::SubmitIndicator)
            .await?
            .into_result()?;
        let mut body = serde_json::Map::new();
        body.insert("indicatorValue".into(), draft.sha256.trim().into());
        body.insert("indicatorType".into(), "FileSha256".into());
        body.insert("action".into(), "Allowed".into());
        body.insert("title".into(), draft.title.clone().into());
        body.insert("description".into(), draft.description.clone().into());
        if let Some(at) = expiration(&draft.expires) {
            body.insert("expirationTime".into(), at.into());
        }
        let request = IndicatorRequest::from_body(Some(body), state.clock.now())?;
        commands::submit_indicator(&state, &viewer.principal, request).await
    }
    .await;
    match outcome {
        Ok(_) => Redirect::to("/console/allowlist?done=added").into_response(),
        Err(e @ Error::Forbidden(_)) => super::error_page(Some(&viewer), &e),
        Err(e) => {
            let status = super::status_of(&e);
            render(
                &state,
                &viewer,
                status,
                Some(Notice::Error(words(&e))),
                &draft,
            )
            .await
        }
    }
}

#[derive(Deserialize, Default)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
}

pub async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<DeleteForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    let outcome = async {
        viewer.check_csrf(&csrf)?;
        state.authorize(&viewer.principal, Api::DeleteIndicator)?;
        commands::admit(&state, &viewer.principal, Api::DeleteIndicator)
            .await?
            .into_result()?;
        let number = commands::indicator_id(&id)?;
        commands::delete_indicator(&state, &viewer.principal, number).await
    }
    .await;
    match outcome {
        Ok(()) => Redirect::to("/console/allowlist?done=deleted").into_response(),
        Err(e) => super::error_page(Some(&viewer), &e),
    }
}
