//! The devices page: every device the user may see, searchable, fifty to a page, each
//! with its enforcement state at a glance.

use appfence_core::authz::Api;
use appfence_core::odata::{CmpOp, Direction, Expr, MachineField, Query as OData, Value};
use appfence_core::records::MachineRecord;
use appfence_proto::agent::EnforcementMode;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{badge, duration, page, respond, time_opt, Section};
use super::session::Viewer;
use crate::AppState;

pub const PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default, Clone)]
pub struct DeviceFilters {
    /// Host name prefix.
    #[serde(default)]
    q: String,
    #[serde(default)]
    os: String,
    /// A device group id.
    #[serde(default)]
    group: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    health: String,
    /// "yes", "no" or "" (either), as the agent reports.
    #[serde(default)]
    restricted: String,
    /// Seen within this many hours ("" for any time).
    #[serde(default)]
    seen: String,
    #[serde(default)]
    page: Option<u32>,
}

/// All of `parts` (none: no filter).
pub(super) fn all_of<F>(parts: Vec<Expr<F>>) -> Option<Expr<F>> {
    parts
        .into_iter()
        .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
}

pub(super) fn text(s: &str) -> Value {
    Value::String(s.trim().to_string())
}

impl DeviceFilters {
    fn query(&self, viewer_now: appfence_proto::Timestamp) -> OData<MachineField> {
        let mut parts = Vec::new();
        if !self.q.trim().is_empty() {
            parts.push(Expr::StartsWith {
                field: MachineField::ComputerDnsName,
                prefix: self.q.trim().to_lowercase(),
            });
        }
        if !self.os.trim().is_empty() {
            parts.push(Expr::Compare {
                field: MachineField::OsPlatform,
                op: CmpOp::Eq,
                value: text(&self.os),
            });
        }
        if let Ok(id) = self.group.trim().parse::<i64>() {
            parts.push(Expr::Compare {
                field: MachineField::RbacGroupId,
                op: CmpOp::Eq,
                value: Value::Integer(id),
            });
        }
        if !self.tag.trim().is_empty() {
            parts.push(Expr::Contains {
                field: MachineField::MachineTags,
                value: self.tag.trim().to_string(),
            });
        }
        if !self.health.trim().is_empty() {
            parts.push(Expr::Compare {
                field: MachineField::HealthStatus,
                op: CmpOp::Eq,
                value: text(&self.health),
            });
        }
        if let Some(flag) = match self.restricted.as_str() {
            "yes" => Some(1),
            "no" => Some(0),
            _ => None,
        } {
            parts.push(Expr::Compare {
                field: MachineField::Restricted,
                op: CmpOp::Eq,
                value: Value::Integer(flag),
            });
        }
        if let Ok(hours) = self.seen.trim().parse::<u64>() {
            parts.push(Expr::Compare {
                field: MachineField::LastSeen,
                op: CmpOp::Ge,
                value: Value::Timestamp(
                    viewer_now.minus(std::time::Duration::from_secs(hours * 3600)),
                ),
            });
        }
        OData {
            filter: all_of(parts),
            top: Some(PAGE_SIZE),
            skip: (self.page.unwrap_or(1).clamp(1, 10_000) - 1) * PAGE_SIZE,
            order_by: vec![(MachineField::ComputerDnsName, Direction::Asc)],
            count: true,
            after: None,
            expand: Vec::new(),
        }
    }

    fn link_to_page(&self, page: u32) -> String {
        let pairs = [
            ("q", self.q.as_str()),
            ("os", &self.os),
            ("group", &self.group),
            ("tag", &self.tag),
            ("health", &self.health),
            ("restricted", &self.restricted),
            ("seen", &self.seen),
        ];
        super::page_link("/console/devices", &pairs, page)
    }
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    filters: Result<Query<DeviceFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filters = filters.map(|Query(f)| f).unwrap_or_default();
    let scope = match state.authorize(&viewer.principal, Api::ListMachines) {
        Ok(s) => s,
        Err(e) => return super::error_page(Some(&viewer), &e),
    };
    if let Err(e) = super::admit_view(&state, &viewer, Api::ListMachines).await {
        return super::error_page(Some(&viewer), &e);
    }
    let query = filters.query(state.clock.now());
    let page_no = filters.page.unwrap_or(1).max(1);
    let found = match state
        .store
        .list_machines(&viewer.principal.tenant_id, &scope, &query)
        .await
    {
        Ok(p) => p,
        Err(e) => return super::error_page(Some(&viewer), &e),
    };
    let groups: Vec<(i64, String)> = state
        .access
        .current()
        .rbac(&viewer.principal.tenant_id)
        .device_groups()
        .iter()
        .map(|g| (g.id, g.name.clone()))
        .collect();
    let total = found.total.unwrap_or(found.items.len() as u64);
    let body = html! {
        h1 { "Devices" }
        form.filters method="get" action="/console/devices" role="search" {
            label { "Name starts with" input name="q" value=(filters.q) placeholder="demo-linux"; }
            label { "OS" select name="os" {
                option value="" { "Any" }
                @for os in ["Linux", "Windows10", "Windows11", "macOS"] {
                    option value=(os) selected[filters.os == os] { (os) }
                }
            } }
            label { "Device group" select name="group" {
                option value="" { "Any" }
                @for (id, name) in &groups {
                    option value=(id) selected[filters.group == id.to_string()] { (name) }
                }
            } }
            label { "Tag" input name="tag" value=(filters.tag) size="12"; }
            label { "Health" select name="health" {
                option value="" { "Any" }
                @for h in ["Active", "Inactive"] { option value=(h) selected[filters.health == h] { (h) } }
            } }
            label { "Restricted" select name="restricted" {
                option value="" { "Either" }
                option value="yes" selected[filters.restricted == "yes"] { "Restricted" }
                option value="no" selected[filters.restricted == "no"] { "Not restricted" }
            } }
            label { "Last seen" select name="seen" {
                option value="" { "Any time" }
                @for (h, label) in [("1", "Last hour"), ("24", "Last day"), ("168", "Last 7 days")] {
                    option value=(h) selected[filters.seen == h] { (label) }
                }
            } }
            button type="submit" { "Search" }
            a.button.secondary href="/console/devices" { "Clear" }
        }
        div.panel {
            p.muted { (total) " device" @if total != 1 { "s" } }
            table {
                thead { tr {
                    th scope="col" { "Device" } th scope="col" { "OS" } th scope="col" { "Group" }
                    th scope="col" { "Tags" } th scope="col" { "Enforcement" } th scope="col" { "Unprotected" }
                    th scope="col" { "Agent" } th scope="col" { "Health" } th scope="col" { "Last seen" }
                } }
                tbody #device-rows {
                    @for m in &found.items { (row(m)) }
                    @if found.items.is_empty() { tr { td colspan="9" { "No device matches." } } }
                }
            }
            div.pager {
                @if page_no > 1 { a href=(filters.link_to_page(page_no - 1)) rel="prev" { "← Previous" } }
                span.muted { "Page " (page_no) }
                @if found.more { a href=(filters.link_to_page(page_no + 1)) rel="next" { "Next →" } }
            }
        }
    };
    respond(
        StatusCode::OK,
        page("Devices", Some(&viewer), Section::Devices, None, body),
    )
}

/// The device's reported enforcement, in words and colour.
pub(super) fn enforcement_badge(m: &MachineRecord) -> Markup {
    let e = &m.enforcement;
    match (e.restricted, e.mode) {
        (true, EnforcementMode::Enforce) => badge("warn", "Restricted"),
        (true, EnforcementMode::Monitor) => badge("info", "Restricted (monitor only)"),
        (false, _) => badge("muted", "Not restricted"),
    }
}

pub(super) fn health_badge(health: &str) -> Markup {
    match health {
        "Active" => badge("ok", "Active"),
        "Inactive" => badge("bad", "Inactive"),
        other => badge("muted", other),
    }
}

fn row(m: &MachineRecord) -> Markup {
    let e = &m.enforcement;
    html! {
        tr {
            td { a href={"/console/devices/" (m.id)} { (m.computer_dns_name) } }
            td { (m.os_platform) " " (m.os_version) }
            td { (m.rbac_group_name.as_deref().unwrap_or("—")) }
            td { (m.machine_tags.join(", ")) }
            td {
                (enforcement_badge(m))
                @if let Some(since) = e.since.filter(|_| e.restricted) { br; span.muted { "since " (super::layout::time(since)) } }
            }
            td { @if e.unprotected_seconds > 0 { (badge("warn", &duration(e.unprotected_seconds))) } @else { "none" } }
            td { (m.agent_version) }
            td { (health_badge(&m.health_status)) }
            td { (time_opt(m.last_seen)) }
        }
    }
}
