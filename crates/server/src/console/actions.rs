//! The action center: every action the user may see, filtered, newest first, with
//! statuses that update live; and cancelling an open action.

use appfence_core::authz::Api;
use appfence_core::odata::{ActionField, CmpOp, Expr, Query as OData, Value};
use appfence_core::records::ActionRecord;
use appfence_core::Error;
use appfence_proto::{ActionStatus, ActionType, Timestamp};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::device::kind;
use super::devices::{all_of, text};
use super::layout::{page, respond, status_badge, time, Section};
use super::session::{form_urlencoded, Viewer};
use crate::{commands, AppState};

pub const PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default, Clone, PartialEq, Eq)]
pub struct ActionFilters {
    #[serde(default)]
    pub status: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Device name prefix.
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub requestor: String,
    /// Created within this many hours.
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub page: Option<u32>,
}

impl ActionFilters {
    pub fn query(&self, now: Timestamp) -> Result<OData<ActionField>, Error> {
        let mut parts = Vec::new();
        if !self.status.is_empty() {
            let status = ActionStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == self.status)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "Unknown status '{}'",
                        appfence_core::ids::truncate(&self.status, 40)
                    ))
                })?;
            parts.push(Expr::Compare {
                field: ActionField::Status,
                op: CmpOp::Eq,
                value: Value::String(status.as_str().into()),
            });
        }
        if !self.kind.is_empty() {
            parts.push(Expr::Compare {
                field: ActionField::Type,
                op: CmpOp::Eq,
                value: text(&self.kind),
            });
        }
        if !self.device.trim().is_empty() {
            parts.push(Expr::StartsWith {
                field: ActionField::ComputerDnsName,
                prefix: self.device.trim().to_lowercase(),
            });
        }
        if !self.requestor.trim().is_empty() {
            parts.push(Expr::Compare {
                field: ActionField::Requestor,
                op: CmpOp::Eq,
                value: text(&self.requestor),
            });
        }
        if let Ok(hours) = self.since.trim().parse::<u64>() {
            parts.push(Expr::Compare {
                field: ActionField::CreationDateTimeUtc,
                op: CmpOp::Ge,
                value: Value::Timestamp(
                    now.minus(std::time::Duration::from_secs(hours.min(24 * 366) * 3600)),
                ),
            });
        }
        Ok(OData {
            filter: all_of(parts),
            top: Some(PAGE_SIZE),
            skip: (self.page.unwrap_or(1).clamp(1, 10_000) - 1) * PAGE_SIZE,
            ..Default::default()
        })
    }

    /// The query string of these filters (without the page).
    pub fn query_string(&self) -> String {
        [
            ("status", &self.status),
            ("type", &self.kind),
            ("device", &self.device),
            ("requestor", &self.requestor),
            ("since", &self.since),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", form_urlencoded(v)))
        .collect::<Vec<_>>()
        .join("&")
    }

    fn link_to_page(&self, page: u32) -> String {
        format!("/console/actions?{}&page={page}", self.query_string())
    }
}

/// The rows of the action center for `filters`, as the viewer may see them.
pub(super) async fn rows(
    state: &AppState,
    viewer: &Viewer,
    filters: &ActionFilters,
) -> Result<(Markup, bool), Error> {
    let scope = state.authorize(&viewer.principal, Api::ListMachineActions)?;
    let query = filters.query(state.clock.now())?;
    let found = state
        .store
        .list_actions(&viewer.principal.tenant_id, &scope, &query)
        .await?;
    let markup = html! {
        @for a in &found.items { (row(a)) }
        @if found.items.is_empty() { tr { td colspan="7" { "No action matches." } } }
    };
    Ok((markup, found.more))
}

fn row(a: &ActionRecord) -> Markup {
    html! {
        tr data-action-id=(a.id) {
            td data-testid="action-status" { (status_badge(a.status)) }
            td { (kind(a.action_type)) }
            td { a href={"/console/devices/" (a.machine_id)} { (a.computer_dns_name) } }
            td { (a.requestor) }
            td { (a.requestor_comment) }
            td { (time(a.created)) }
            td { (time(a.last_update)) }
        }
    }
}

pub async fn center(
    State(state): State<AppState>,
    viewer: Viewer,
    filters: Result<Query<ActionFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filters = filters.map(|Query(f)| f).unwrap_or_default();
    if let Err(e) = super::admit_view(&state, &viewer, Api::ListMachineActions).await {
        return super::error_page(Some(&viewer), &e);
    }
    let (rows, more) = match rows(&state, &viewer, &filters).await {
        Ok(r) => r,
        Err(e) => return super::error_page(Some(&viewer), &e),
    };
    let page_no = filters.page.unwrap_or(1).max(1);
    // Only the first page changes as actions arrive (newest first); later pages are
    // read as they are.
    let live = (page_no == 1).then(|| format!("/console/live/actions?{}", filters.query_string()));
    let body = html! {
        h1 { "Action center" }
        form.filters method="get" action="/console/actions" role="search" {
            label { "Status" select name="status" {
                option value="" { "Any" }
                @for s in ActionStatus::ALL { option value=(s.as_str()) selected[filters.status == s.as_str()] { (s.as_str()) } }
            } }
            label { "Type" select name="type" {
                option value="" { "Any" }
                @for t in [ActionType::RestrictCodeExecution, ActionType::UnrestrictCodeExecution] {
                    option value=(t.as_str()) selected[filters.kind == t.as_str()] { (kind(t)) }
                }
            } }
            label { "Device starts with" input name="device" value=(filters.device) size="16"; }
            label { "Requestor" input name="requestor" value=(filters.requestor) size="22"; }
            label { "Created" select name="since" {
                option value="" { "Any time" }
                @for (h, label) in [("1", "Last hour"), ("24", "Last day"), ("168", "Last 7 days"), ("720", "Last 30 days")] {
                    option value=(h) selected[filters.since == h] { (label) }
                }
            } }
            button type="submit" { "Filter" }
            a.button.secondary href="/console/actions" { "Clear" }
        }
        div.panel {
            @if let Some(url) = &live {
                div data-live=(url) { p.live data-live-status { "" } }
            }
            table {
                thead { tr {
                    th { "Status" } th { "Action" } th { "Device" } th { "Requestor" } th { "Comment" } th { "Created" } th { "Last update" }
                } }
                tbody #action-rows { (rows) }
            }
            div.pager {
                @if page_no > 1 { a href=(filters.link_to_page(page_no - 1)) rel="prev" { "← Newer" } }
                span.muted { "Page " (page_no) }
                @if more { a href=(filters.link_to_page(page_no + 1)) rel="next" { "Older →" } }
            }
        }
    };
    respond(
        StatusCode::OK,
        page("Action center", Some(&viewer), Section::Actions, None, body),
    )
}

#[derive(Deserialize, Default)]
pub struct CancelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

pub async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<CancelForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let outcome = async {
        viewer.check_csrf(&form.csrf)?;
        state.authorize(&viewer.principal, Api::CancelMachineAction)?;
        commands::admit(&state, &viewer.principal, Api::CancelMachineAction)
            .await?
            .into_result()?;
        let comment = Some(form.comment.trim().to_string()).filter(|c| !c.is_empty());
        commands::cancel_action(&state, &viewer.principal, &id, comment, "the console").await
    }
    .await;
    match outcome {
        Ok(action) => {
            Redirect::to(&format!("/console/devices/{}", action.machine_id)).into_response()
        }
        Err(e) => super::error_page(Some(&viewer), &e),
    }
}
