//! One device: its details and enforcement state (reported and desired), its open
//! action, its open alerts, every action with its audit trail, its denied executions,
//! and the restrict and unrestrict forms. The regions that change are re-rendered by the
//! live view too.

use appfence_core::authz::Api;
use appfence_core::odata::{ActionField, CmpOp, EventField, Expr, Query as OData, Value};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{ActionRecord, DenialRecord, MachineRecord};
use appfence_core::{Error, MachineRef};
use appfence_proto::agent::{DesiredState, RuleOutcome};
use appfence_proto::ActionType;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::devices::{enforcement_badge, health_badge};
use super::layout::{
    badge, duration, page, respond, status_badge, time, time_opt, Notice, Section,
};
use super::session::{form_urlencoded, Viewer};
use crate::api::ActionRequest;
use crate::{commands, AppState};

/// Actions shown (newest first), each with its audit trail.
const ACTIONS_SHOWN: u32 = 25;
/// Denials shown, newest first.
const DENIALS_SHOWN: u32 = 50;

/// The machine `id`, if the viewer may read it.
pub(super) async fn visible(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<MachineRecord, Error> {
    let scope = state.authorize(&viewer.principal, Api::GetMachine)?;
    let machine = state
        .store
        .machine(&viewer.principal.tenant_id, &MachineRef::parse(id)?)
        .await?
        .ok_or_else(|| Error::machine_not_found(&appfence_core::ids::truncate(id, 80)))?;
    scope.check_device(&machine)?;
    Ok(machine)
}

/// The parts of the page that change as the device works.
pub(super) struct Regions {
    pub state: Markup,
    pub open: Markup,
    pub alerts: Markup,
    pub actions: Markup,
    pub denials: Markup,
}

impl Regions {
    pub fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "device-state": self.state.0,
            "device-open": self.open.0,
            "device-alerts": self.alerts.0,
            "device-actions": self.actions.0,
            "device-denials": self.denials.0,
        })
    }
}

pub(super) async fn regions(
    state: &AppState,
    viewer: &Viewer,
    machine: &MachineRecord,
) -> Result<Regions, Error> {
    let desired = crate::agent_gateway::desired(state, machine).await?;
    let open = state.store.open_actions(&machine.id).await?;
    let on_machine = Expr::Compare {
        field: ActionField::MachineId,
        op: CmpOp::Eq,
        value: Value::String(machine.id.clone()),
    };
    let actions = state
        .store
        .list_actions(
            &viewer.principal.tenant_id,
            &DeviceScope::All,
            &OData {
                filter: Some(on_machine),
                top: Some(ACTIONS_SHOWN),
                ..Default::default()
            },
        )
        .await?;
    let mut trails = Vec::with_capacity(actions.items.len());
    for a in &actions.items {
        trails.push(state.store.audit_trail(&a.id).await?);
    }
    let denials = state
        .store
        .list_denials(
            &viewer.principal.tenant_id,
            &DeviceScope::All,
            &OData {
                filter: Some(Expr::Compare {
                    field: EventField::MachineId,
                    op: CmpOp::Eq,
                    value: Value::String(machine.id.clone()),
                }),
                top: Some(DENIALS_SHOWN),
                ..Default::default()
            },
        )
        .await?;
    let alerts = super::alerts::open_on_device(state, viewer, &machine.id).await?;
    let can_cancel = state
        .authorize(&viewer.principal, Api::CancelMachineAction)
        .is_ok();
    let can_allow = state
        .authorize(&viewer.principal, Api::SubmitIndicator)
        .is_ok();
    Ok(Regions {
        state: state_region(machine, &desired),
        open: open_region(&open, can_cancel.then_some(viewer.csrf.as_str())),
        alerts,
        actions: html! {
            @for (a, trail) in actions.items.iter().zip(&trails) { (action_row(a, trail)) }
            @if actions.items.is_empty() { tr { td colspan="6" { "No action on this device yet." } } }
        },
        denials: denials_region(&denials.items, can_allow),
    })
}

fn state_region(m: &MachineRecord, desired: &DesiredState) -> Markup {
    let e = &m.enforcement;
    let agrees = e.restricted == desired.restricted;
    html! {
        dl.facts {
            dt { "Reported" } dd data-testid="reported-state" {
                (enforcement_badge(m))
                @if let Some(since) = e.since.filter(|_| e.restricted) { " since " (time(since)) }
            }
            dt { "Wanted by the server" } dd data-testid="desired-state" {
                @if desired.restricted { (badge("warn", "Restricted")) } @else { (badge("muted", "Not restricted")) }
                " "
                @if agrees { span.muted { "(the device agrees)" } } @else { (badge("info", "Not applied yet")) }
            }
            dt { "Mode" } dd { (format!("{:?}", e.mode)) }
            dt { "Filesystems covered" } dd { @if e.coverage.is_empty() { "none" } @else { (e.coverage.join(", ")) } }
            dt { "Allowlist version" } dd { (e.allowlist_version) " (server: " (desired.allowlist_version) ")" }
            dt { "Unprotected time" } dd {
                @if e.unprotected_seconds == 0 { "none" } @else {
                    (badge("warn", &duration(e.unprotected_seconds)))
                    @if let Some(p) = &e.last_unprotected { " latest " (time(p.from)) " to " (time(p.to)) }
                }
            }
            @if let Some(fault) = &e.state_fault {
                dt { "Agent state" } dd { (badge("bad", "Cannot save its state")) " " (fault.path) ": " (fault.error) }
            }
            dt { "Health" } dd { (health_badge(&m.health_status)) }
            @if let Some(at) = m.offboarded {
                dt { "Onboarding" } dd data-testid="offboarded" {
                    (badge("bad", "Offboarded")) " at " (time(at)) ": its credential is refused"
                }
            }
            dt { "Last seen" } dd { (time_opt(m.last_seen)) }
        }
    }
}

fn open_region(open: &[ActionRecord], cancel_csrf: Option<&str>) -> Markup {
    html! {
        @if open.is_empty() {
            p.muted { "No action is open on this device." }
        }
        @for a in open {
            p {
                (status_badge(a.status)) " "
                strong { (kind(a.action_type)) } " requested by " (a.requestor) " at " (time(a.created))
                @if !a.requestor_comment.is_empty() { ": “" (a.requestor_comment) "”" }
            }
            @if let Some(csrf) = cancel_csrf {
                form method="post" action={"/console/actions/" (a.id) "/cancel"} {
                    input type="hidden" name="csrf" value=(csrf);
                    label.field { span { "Cancellation comment (optional)" } input name="comment" maxlength="1000"; }
                    button.secondary type="submit" { "Cancel this action" }
                }
            }
        }
    }
}

pub(super) fn kind(t: ActionType) -> &'static str {
    match t {
        ActionType::RestrictCodeExecution => "Restrict app execution",
        ActionType::UnrestrictCodeExecution => "Remove app restriction",
        ActionType::Offboard => "Offboard machine",
        _ => t.as_str(),
    }
}

fn action_row(a: &ActionRecord, trail: &[appfence_core::records::AuditRecord]) -> Markup {
    html! {
        tr data-action-id=(a.id) {
            td { (kind(a.action_type)) }
            td data-testid="action-status" { (status_badge(a.status)) }
            td { (a.requestor) }
            td { (a.requestor_comment) }
            td { (time(a.created)) }
            td {
                details {
                    summary { "Trail (" (trail.len()) ")" }
                    ol.trail {
                        @for t in trail {
                            li {
                                (time(t.at)) ": " (t.actor) " — "
                                @match t.from { Some(f) => { (f.as_str()) " → " }, None => { "created as " } }
                                (t.to.as_str())
                                @if let Some(r) = &t.reason { " (" (r) ")" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn denials_region(denials: &[DenialRecord], can_allow: bool) -> Markup {
    html! {
        @if denials.is_empty() { tr { td colspan="8" { "Nothing denied on this device." } } }
        @for d in denials {
            @let e = &d.event;
            tr {
                td { (time(e.time)) }
                td.mono { (e.path) }
                td.mono { (e.sha256.as_deref().unwrap_or("not hashed")) }
                td { (e.uid.map(|u| u.to_string()).unwrap_or_else(|| "—".into())) }
                td.mono { (e.parent.as_deref().unwrap_or("—")) }
                td { (format!("{:?}", e.kind)) }
                td {
                    @match e.rule {
                        Some(RuleOutcome::Blocked) => (badge("bad", "Blocked by an indicator")),
                        Some(RuleOutcome::Audited) => (badge("info", "Audited (allowed)")),
                        None if e.monitor => (badge("info", "Would deny (monitor)")),
                        None => (badge("bad", "Denied")),
                    }
                    @if e.alert { " " (badge("warn", "Alert")) }
                }
                td {
                    @if let (true, Some(sha)) = (can_allow, e.sha256.as_deref()) {
                        a.button.secondary.small href={
                            "/console/allowlist?sha256=" (sha) "&title=" (form_urlencoded(&format!("Allow {}", file_name(&e.path))))
                        } { "Allow this file" }
                    }
                }
            }
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What a failed form keeps: the comments typed.
#[derive(Default)]
pub(super) struct Draft {
    restrict: String,
    unrestrict: String,
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    /// Set after a restrict or unrestrict was accepted.
    #[serde(default)]
    requested: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = super::admit_view(&state, &viewer, Api::GetMachine).await {
        return super::error_page(Some(&viewer), &e);
    }
    let notice = q.ok().and_then(|q| q.0.requested).map(|_| {
        Notice::Ok("Request sent. Its status below follows the device as it works.".into())
    });
    render(
        &state,
        &viewer,
        &id,
        StatusCode::OK,
        notice,
        Draft::default(),
    )
    .await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    status: StatusCode,
    notice: Option<Notice>,
    draft: Draft,
) -> Response {
    let machine = match visible(state, viewer, id).await {
        Ok(m) => m,
        Err(e) => return super::error_page(Some(viewer), &e),
    };
    let regions = match regions(state, viewer, &machine).await {
        Ok(r) => r,
        Err(e) => return super::error_page(Some(viewer), &e),
    };
    let can_restrict = state
        .authorize(&viewer.principal, Api::RestrictCodeExecution)
        .is_ok();
    let m = &machine;
    let body = html! {
        p { a href="/console/devices" { "← Devices" } }
        h1 { (m.computer_dns_name) }
        div data-live={"/console/live/devices/" (m.id)} {
            p.live data-live-status { "" }
        }
        div.grid {
            section.panel aria-labelledby="h-state" {
                h2 #h-state { "Enforcement" }
                div #device-state { (regions.state) }
            }
            section.panel aria-labelledby="h-details" {
                h2 #h-details { "Details" }
                dl.facts {
                    dt { "Machine id" } dd.mono { (m.id) }
                    dt { "OS" } dd { (m.os_platform) " " (m.os_version) " (" (m.os_architecture) ")" }
                    dt { "Kernel" } dd { (m.kernel_version) }
                    dt { "Agent" } dd { (m.agent_version) @if m.capabilities.simulated { " " (badge("muted", "simulated")) } }
                    dt { "Device group" } dd { (m.rbac_group_name.as_deref().unwrap_or("—")) }
                    dt { "Tags" } dd { @if m.machine_tags.is_empty() { "none" } @else { (m.machine_tags.join(", ")) } }
                    dt { "Last IP address" } dd { (m.last_ip_address.as_deref().unwrap_or("—")) }
                    dt { "First seen" } dd { (time(m.first_seen)) }
                }
            }
        }
        section.panel aria-labelledby="h-open" {
            h2 #h-open { "Open action" }
            div #device-open { (regions.open) }
        }
        section.panel aria-labelledby="h-alerts" {
            h2 #h-alerts { "Open alerts" }
            div #device-alerts { (regions.alerts) }
        }
        @if can_restrict {
            section.panel aria-labelledby="h-respond" {
                h2 #h-respond { "Respond" }
                div.actions-row {
                    form method="post" action={"/console/devices/" (m.id) "/restrict"} {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label.field { span { "Why restrict app execution? (required)" }
                            textarea #restrict-comment name="comment" required maxlength="1000" { (draft.restrict) } }
                        button.danger type="submit" #restrict { "Restrict app execution" }
                    }
                    form method="post" action={"/console/devices/" (m.id) "/unrestrict"} {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label.field { span { "Why remove the restriction? (required)" }
                            textarea #unrestrict-comment name="comment" required maxlength="1000" { (draft.unrestrict) } }
                        button type="submit" #unrestrict { "Remove app restriction" }
                    }
                }
            }
        }
        section.panel aria-labelledby="h-actions" {
            h2 #h-actions { "Actions" }
            table {
                thead { tr { th { "Action" } th { "Status" } th { "Requestor" } th { "Comment" } th { "Created" } th { "Audit trail" } } }
                tbody #device-actions { (regions.actions) }
            }
        }
        section.panel aria-labelledby="h-denials" {
            h2 #h-denials { "Denied executions" }
            table {
                thead { tr { th { "Time" } th { "Path" } th { "SHA-256" } th { "User (uid)" } th { "Parent" } th { "Kind" } th { "Result" } th {} } }
                tbody #device-denials { (regions.denials) }
            }
        }
    };
    respond(
        status,
        page(
            &m.computer_dns_name,
            Some(viewer),
            Section::Devices,
            notice.as_ref(),
            body,
        ),
    )
}

#[derive(Deserialize, Default)]
pub struct CommentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

pub async fn restrict(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<CommentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    act(state, viewer, id, form, ActionType::RestrictCodeExecution).await
}

pub async fn unrestrict(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<CommentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    act(state, viewer, id, form, ActionType::UnrestrictCodeExecution).await
}

async fn act(
    state: AppState,
    viewer: Viewer,
    id: String,
    form: Result<Form<CommentForm>, axum::extract::rejection::FormRejection>,
    action_type: ActionType,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let api = match action_type {
        ActionType::RestrictCodeExecution => Api::RestrictCodeExecution,
        _ => Api::UnrestrictCodeExecution,
    };
    let outcome = async {
        viewer.check_csrf(&form.csrf)?;
        state.authorize(&viewer.principal, api)?;
        commands::admit(&state, &viewer.principal, api)
            .await?
            .into_result()?;
        let mut body = serde_json::Map::new();
        body.insert("Comment".into(), form.comment.clone().into());
        let request = ActionRequest::from_body(Some(body))?;
        commands::create_action(&state, &viewer.principal, &id, request, action_type).await
    }
    .await;
    match outcome {
        Ok(action) => Redirect::to(&format!(
            "/console/devices/{}?requested={}",
            action.machine_id, action.id
        ))
        .into_response(),
        Err(e) if matches!(e, Error::Forbidden(_)) => super::error_page(Some(&viewer), &e),
        Err(e) => {
            let mut draft = Draft::default();
            match action_type {
                ActionType::RestrictCodeExecution => draft.restrict = form.comment,
                _ => draft.unrestrict = form.comment,
            }
            let status = super::status_of(&e);
            render(
                &state,
                &viewer,
                &id,
                status,
                Some(Notice::Error(super::words::in_words(&e))),
                draft,
            )
            .await
        }
    }
}
