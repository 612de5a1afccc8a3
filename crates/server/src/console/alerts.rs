//! The alerts page: the alerts of the user's device groups, newest first, filtered by
//! status (open ones unless asked otherwise), severity and device, fifty to a page, each
//! with the file it is about; and the open alerts of one device (for its page).

use appfence_core::alerts::{AlertRecord, SEVERITIES, STATUSES};
use appfence_core::authz::Api;
use appfence_core::odata::{AlertField, CmpOp, Expr, Query as OData, Value};
use appfence_core::Error;
use appfence_proto::alert::AlertEvidence;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::devices::all_of;
use super::layout::{alert_status_badge, page, respond, severity_badge, time, Section};
use super::session::{form_urlencoded, Viewer};
use crate::AppState;

pub const PAGE_SIZE: u32 = 50;
/// Open alerts shown on a device's page, newest first.
const ON_DEVICE_SHOWN: u32 = 10;
/// The statuses of an alert still to be dealt with (the default filter).
const OPEN: [&str; 2] = ["New", "InProgress"];
/// The status filter's value for every status.
const ANY_STATUS: &str = "any";

#[derive(Deserialize, Default, Clone)]
pub struct AlertFilters {
    /// "" (open: New or InProgress), one of [`STATUSES`], or [`ANY_STATUS`].
    #[serde(default)]
    status: String,
    #[serde(default)]
    severity: String,
    /// Device name prefix.
    #[serde(default)]
    device: String,
    /// One device's id (the link from a device's page).
    #[serde(default)]
    machine: String,
    #[serde(default)]
    page: Option<u32>,
}

/// `value` if it is one of `allowed`, else `InvalidInput` naming `what`.
fn one_of(what: &str, value: &str, allowed: &[&'static str]) -> Result<&'static str, Error> {
    allowed
        .iter()
        .find(|a| **a == value)
        .copied()
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "Unknown {what} '{}'",
                appfence_core::ids::truncate(value, 40)
            ))
        })
}

fn on_machine(machine_id: &str) -> Expr<AlertField> {
    Expr::Compare {
        field: AlertField::MachineId,
        op: CmpOp::Eq,
        value: Value::String(machine_id.to_string()),
    }
}

fn status_is(statuses: &[&str]) -> Expr<AlertField> {
    Expr::In {
        field: AlertField::Status,
        values: statuses
            .iter()
            .map(|s| Value::String(s.to_string()))
            .collect(),
    }
}

impl AlertFilters {
    fn query(&self) -> Result<OData<AlertField>, Error> {
        let mut parts = Vec::new();
        match self.status.as_str() {
            "" => parts.push(status_is(&OPEN)),
            ANY_STATUS => {}
            other => parts.push(status_is(&[one_of("status", other, STATUSES)?])),
        }
        if !self.severity.is_empty() {
            parts.push(Expr::Compare {
                field: AlertField::Severity,
                op: CmpOp::Eq,
                value: Value::String(one_of("severity", &self.severity, SEVERITIES)?.into()),
            });
        }
        if !self.device.trim().is_empty() {
            parts.push(Expr::StartsWith {
                field: AlertField::ComputerDnsName,
                prefix: self.device.trim().to_lowercase(),
            });
        }
        if !self.machine.is_empty() {
            parts.push(on_machine(&self.machine));
        }
        Ok(OData {
            filter: all_of(parts),
            top: Some(PAGE_SIZE),
            skip: (self.page.unwrap_or(1).clamp(1, 10_000) - 1) * PAGE_SIZE,
            count: true,
            expand: vec!["evidence"],
            ..Default::default()
        })
    }

    fn link_to_page(&self, page: u32) -> String {
        let pairs = [
            ("status", self.status.as_str()),
            ("severity", &self.severity),
            ("device", &self.device),
            ("machine", &self.machine),
        ];
        super::page_link("/console/alerts", &pairs, page)
    }
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    filters: Result<Query<AlertFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filters = filters.map(|Query(f)| f).unwrap_or_default();
    let scope = match state.authorize(&viewer.principal, Api::ListAlerts) {
        Ok(s) => s,
        Err(e) => return super::error_page(Some(&viewer), &e),
    };
    if let Err(e) = super::admit_view(&state, &viewer, Api::ListAlerts).await {
        return super::error_page(Some(&viewer), &e);
    }
    let found = match filters.query() {
        Ok(q) => {
            state
                .store
                .list_alerts(&viewer.principal.tenant_id, &scope, &q)
                .await
        }
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(p) => p,
        Err(e) => return super::error_page(Some(&viewer), &e),
    };
    let page_no = filters.page.unwrap_or(1).max(1);
    let total = found.total.unwrap_or(found.items.len() as u64);
    let body = html! {
        h1 { "Alerts" }
        form.filters method="get" action="/console/alerts" role="search" {
            label { "Status" select name="status" {
                option value="" { "Open (New or InProgress)" }
                @for s in STATUSES { option value=(s) selected[filters.status == *s] { (s) } }
                option value=(ANY_STATUS) selected[filters.status == ANY_STATUS] { "Any" }
            } }
            label { "Severity" select name="severity" {
                option value="" { "Any" }
                @for s in SEVERITIES.iter().rev() { option value=(s) selected[filters.severity == *s] { (s) } }
            } }
            label { "Device starts with" input name="device" value=(filters.device) size="18"; }
            @if !filters.machine.is_empty() {
                input type="hidden" name="machine" value=(filters.machine);
            }
            button type="submit" { "Filter" }
            a.button.secondary href="/console/alerts" { "Clear" }
        }
        div.panel {
            p.muted { (total) " alert" @if total != 1 { "s" } }
            table {
                thead { tr {
                    th scope="col" { "Created" } th scope="col" { "Severity" } th scope="col" { "Status" }
                    th scope="col" { "Title" } th scope="col" { "Device" } th scope="col" { "File" }
                    th scope="col" { "Assigned to" }
                } }
                tbody #alert-rows {
                    @for a in &found.items { (row(a, true)) }
                    @if found.items.is_empty() { tr { td colspan="7" { "No alert matches." } } }
                }
            }
            div.pager {
                @if page_no > 1 { a href=(filters.link_to_page(page_no - 1)) rel="prev" { "← Newer" } }
                span.muted { "Page " (page_no) }
                @if found.more { a href=(filters.link_to_page(page_no + 1)) rel="next" { "Older →" } }
            }
        }
    };
    respond(
        StatusCode::OK,
        page("Alerts", Some(&viewer), Section::Alerts, None, body),
    )
}

/// The first `File` evidence of an alert: the file it is about.
pub(super) fn first_file(a: &AlertRecord) -> Option<&AlertEvidence> {
    a.evidence.iter().find(|e| e.entity_type == "File")
}

/// A file's name and the start of its SHA-256 (the whole hash is on the alert's page).
fn file_cell(a: &AlertRecord) -> Markup {
    html! {
        @match first_file(a) {
            Some(f) => {
                span.mono { (f.file_name.as_deref().unwrap_or("—")) }
                @if let Some(sha) = &f.sha256 {
                    br; span.mono.muted title=(sha) { (sha.get(..12).unwrap_or(sha)) "…" }
                }
            }
            None => { "—" }
        }
    }
}

fn row(a: &AlertRecord, with_device: bool) -> Markup {
    html! {
        tr data-alert-id=(a.id) {
            td { (time(a.created)) }
            td { (severity_badge(&a.severity)) }
            td data-testid="alert-status" { (alert_status_badge(&a.status)) }
            td { a href={"/console/alerts/" (a.id)} { (a.title) } }
            @if with_device {
                td { a href={"/console/devices/" (a.machine_id)} { (a.computer_dns_name.as_deref().unwrap_or(&a.machine_id)) } }
            }
            td { (file_cell(a)) }
            td { (a.assigned_to.as_deref().unwrap_or("—")) }
        }
    }
}

/// The open alerts (New, InProgress) of device `machine_id`, newest first, at most
/// [`ON_DEVICE_SHOWN`]; a line in words when the viewer may not read alerts.
pub(super) async fn open_on_device(
    state: &AppState,
    viewer: &Viewer,
    machine_id: &str,
) -> Result<Markup, Error> {
    let Ok(scope) = state.authorize(&viewer.principal, Api::ListMachineAlerts) else {
        return Ok(html! { p.muted { "Reading alerts needs the permission to view data." } });
    };
    let found = state
        .store
        .list_alerts(
            &viewer.principal.tenant_id,
            &scope,
            &OData {
                filter: all_of(vec![on_machine(machine_id), status_is(&OPEN)]),
                top: Some(ON_DEVICE_SHOWN),
                expand: vec!["evidence"],
                ..Default::default()
            },
        )
        .await?;
    Ok(html! {
        @if found.items.is_empty() {
            p.muted { "No open alert on this device." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Created" } th scope="col" { "Severity" } th scope="col" { "Status" }
                    th scope="col" { "Title" } th scope="col" { "File" } th scope="col" { "Assigned to" }
                } }
                tbody { @for a in &found.items { (row(a, false)) } }
            }
            @if found.more {
                p { a href={"/console/alerts?machine=" (form_urlencoded(machine_id))} { "All open alerts of this device" } }
            }
        }
    })
}
