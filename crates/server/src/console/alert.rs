//! One alert: what it says, the device, its evidence and comments, and the form that
//! changes its status, owner, classification and determination or adds a comment,
//! through the same command as Update alert.

use appfence_core::alerts::{AlertChange, AlertRecord, CLASSIFICATIONS, DETERMINATIONS, STATUSES};
use appfence_core::authz::Api;
use appfence_core::Error;
use appfence_proto::alert::{AlertEvidence, AlertUpdate};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{
    alert_status_badge, page, respond, severity_badge, time, time_opt, Notice, Section,
};
use super::session::{form_urlencoded, Viewer};
use crate::{commands, AppState};

/// The alert `id` with its evidence, if the viewer may read it (an alert outside their
/// device groups is not found, as in the API).
async fn visible(state: &AppState, viewer: &Viewer, id: &str) -> Result<AlertRecord, Error> {
    commands::visible_alert(state, &viewer.principal, Api::GetAlert, id).await
}

/// What the change form sends: each field as the user left it, next to its value when
/// the page was shown (`was_*`), so that only what the user changed is changed.
#[derive(Deserialize, Default, Clone)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    was_status: String,
    #[serde(default)]
    assigned_to: String,
    #[serde(default)]
    was_assigned_to: String,
    #[serde(default)]
    classification: String,
    #[serde(default)]
    was_classification: String,
    #[serde(default)]
    determination: String,
    #[serde(default)]
    was_determination: String,
    #[serde(default)]
    comment: String,
}

impl ChangeForm {
    /// The update the user asked for: the fields they changed, and the comment. A
    /// classification or determination cannot be taken away (as in the API): empty
    /// leaves it; an empty owner unassigns.
    fn update(&self) -> AlertUpdate {
        let changed = |now: &str, was: &str| {
            let now = now.trim();
            (now != was.trim()).then(|| now.to_string())
        };
        let set = |now: &str, was: &str| changed(now, was).filter(|v| !v.is_empty());
        AlertUpdate {
            status: set(&self.status, &self.was_status),
            assigned_to: changed(&self.assigned_to, &self.was_assigned_to),
            classification: set(&self.classification, &self.was_classification),
            determination: set(&self.determination, &self.was_determination),
            comment: Some(self.comment.trim().to_string()).filter(|c| !c.is_empty()),
        }
    }

    fn change(&self) -> Result<AlertChange, Error> {
        let update = self.update();
        if update == AlertUpdate::default() {
            return Err(Error::InvalidInput(
                "Nothing to save: change a field or write a comment.".into(),
            ));
        }
        AlertChange::from_update(update)
    }
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    /// Set after a change was saved.
    #[serde(default)]
    saved: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    q: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = super::admit_view(&state, &viewer, Api::GetAlert).await {
        return super::error_page(Some(&viewer), &e);
    }
    let notice = q
        .ok()
        .and_then(|q| q.0.saved)
        .map(|_| Notice::Ok("Saved.".into()));
    render(&state, &viewer, &id, StatusCode::OK, notice, None).await
}

pub async fn update(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Result<Form<ChangeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let outcome = async {
        viewer.check_csrf(&form.csrf)?;
        state.authorize(&viewer.principal, Api::UpdateAlert)?;
        commands::admit(&state, &viewer.principal, Api::UpdateAlert)
            .await?
            .into_result()?;
        let change = form.change()?;
        commands::update_alerts(
            &state,
            &viewer.principal,
            Api::UpdateAlert,
            std::slice::from_ref(&id),
            &change,
        )
        .await
    }
    .await;
    match outcome {
        Ok(_) => Redirect::to(&format!("/console/alerts/{}?saved=1", form_urlencoded(&id)))
            .into_response(),
        Err(e) => {
            let status = super::status_of(&e);
            let notice = Notice::Error(super::words::in_words(&e));
            render(&state, &viewer, &id, status, Some(notice), Some(&form)).await
        }
    }
}

/// The alert's page; a refused change shows `notice` and keeps what was typed (`draft`).
async fn render(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    status: StatusCode,
    notice: Option<Notice>,
    draft: Option<&ChangeForm>,
) -> Response {
    let a = match visible(state, viewer, id).await {
        Ok(a) => a,
        Err(e) => return super::error_page(Some(viewer), &e),
    };
    let can_change = state.authorize(&viewer.principal, Api::UpdateAlert).is_ok();
    let device = a.computer_dns_name.as_deref().unwrap_or(&a.machine_id);
    let body = html! {
        p { a href="/console/alerts" { "← Alerts" } }
        h1 { (a.title) }
        div.grid {
            section.panel aria-labelledby="h-alert" {
                h2 #h-alert { "Alert" }
                dl.facts {
                    dt { "Severity" } dd { (severity_badge(&a.severity)) }
                    dt { "Status" } dd data-testid="alert-status" { (alert_status_badge(&a.status)) }
                    dt { "Classification" } dd data-testid="alert-classification" { (a.classification.as_deref().unwrap_or("not set")) }
                    dt { "Determination" } dd data-testid="alert-determination" { (a.determination.as_deref().unwrap_or("not set")) }
                    dt { "Assigned to" } dd data-testid="alert-assigned-to" { (a.assigned_to.as_deref().unwrap_or("nobody")) }
                    dt { "Category" } dd { (a.category) }
                    dt { "Detection source" } dd { (a.detection_source) }
                    @if let Some(threat) = &a.threat_name { dt { "Threat" } dd { (threat) } }
                    @if !a.mitre_techniques.is_empty() { dt { "MITRE techniques" } dd { (a.mitre_techniques.join(", ")) } }
                    dt { "Alert id" } dd.mono { (a.id) }
                }
            }
            section.panel aria-labelledby="h-where" {
                h2 #h-where { "Device and times" }
                dl.facts {
                    dt { "Device" } dd { a href={"/console/devices/" (a.machine_id)} data-testid="alert-device" { (device) } }
                    dt { "Device group" } dd { (a.rbac_group_name.as_deref().unwrap_or("—")) }
                    @if let Some(u) = &a.related_user {
                        dt { "User" } dd { (u.user_name) @if let Some(d) = &u.domain_name { " (" (d) ")" } }
                    }
                    dt { "Created" } dd { (time(a.created)) }
                    dt { "First event" } dd { (time(a.first_event)) }
                    dt { "Last event" } dd { (time(a.last_event)) }
                    dt { "Events" } dd { (a.event_count) }
                    dt { "Last update" } dd { (time(a.last_update)) }
                    dt { "Resolved" } dd { (time_opt(a.resolved)) }
                }
            }
        }
        section.panel aria-labelledby="h-description" {
            h2 #h-description { "Description" }
            p data-testid="alert-description" { (a.description) }
        }
        section.panel aria-labelledby="h-evidence" {
            h2 #h-evidence { "Evidence" }
            (evidence_table(&a.evidence))
        }
        section.panel aria-labelledby="h-comments" {
            h2 #h-comments { "Comments (" (a.comments.len()) ")" }
            @if a.comments.is_empty() { p.muted { "No comment yet." } }
            ol.comments #alert-comments {
                @for c in &a.comments {
                    li { span.muted { (time(c.created_time)) ", " (c.created_by) ": " } (c.comment) }
                }
            }
        }
        section.panel aria-labelledby="h-change" {
            h2 #h-change { "Investigate" }
            @if can_change {
                (change_form(viewer, &a, draft))
            } @else {
                p.muted { "Changing an alert needs the 'Alerts investigation' permission." }
            }
        }
    };
    respond(
        status,
        page(
            &a.title,
            Some(viewer),
            Section::Alerts,
            notice.as_ref(),
            body,
        ),
    )
}

/// One `<select>` of `values`, `current` selected; "not set" is offered only while
/// nothing is (a value cannot be taken away).
fn select(name: &str, values: &[&str], current: &str) -> Markup {
    html! {
        select id=(name) name=(name) {
            @if current.is_empty() { option value="" selected { "Not set" } }
            @for v in values { option value=(v) selected[current == *v] { (v) } }
        }
    }
}

fn change_form(viewer: &Viewer, a: &AlertRecord, draft: Option<&ChangeForm>) -> Markup {
    let classification = a.classification.as_deref().unwrap_or("");
    let determination = a.determination.as_deref().unwrap_or("");
    let assigned = a.assigned_to.as_deref().unwrap_or("");
    // What the form shows: what was typed if a change was refused; else the alert, its
    // owner defaulting to the signed-in user.
    let shown = draft.cloned().unwrap_or_else(|| ChangeForm {
        status: a.status.clone(),
        assigned_to: if assigned.is_empty() {
            viewer.upn.clone()
        } else {
            assigned.to_string()
        },
        classification: classification.to_string(),
        determination: determination.to_string(),
        ..Default::default()
    });
    html! {
        form method="post" action={"/console/alerts/" (a.id)} #alert-change {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="was_status" value=(a.status);
            input type="hidden" name="was_assigned_to" value=(assigned);
            input type="hidden" name="was_classification" value=(classification);
            input type="hidden" name="was_determination" value=(determination);
            div.fields {
                label.field { span { "Status" } (select("status", STATUSES, &shown.status)) }
                label.field { span { "Assigned to (empty: nobody)" }
                    input #assigned_to name="assigned_to" value=(shown.assigned_to) maxlength="256"; }
                label.field { span { "Classification" } (select("classification", CLASSIFICATIONS, &shown.classification)) }
                label.field { span { "Determination" } (select("determination", DETERMINATIONS, &shown.determination)) }
            }
            label.field { span { "Comment (optional)" }
                textarea #comment name="comment" maxlength="4000" { (shown.comment) } }
            button type="submit" #save { "Save" }
        }
    }
}

fn evidence_table(evidence: &[AlertEvidence]) -> Markup {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    html! {
        @if evidence.is_empty() {
            p.muted { "No evidence." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Type" } th scope="col" { "Name" } th scope="col" { "Directory" }
                    th scope="col" { "SHA-256" } th scope="col" { "PID" } th scope="col" { "Command line" }
                    th scope="col" { "Account" } th scope="col" { "Detection" }
                } }
                tbody #alert-evidence {
                    @for e in evidence {
                        tr data-entity=(e.entity_type) {
                            td { (e.entity_type) }
                            td.mono { (or_dash(&e.file_name)) }
                            td.mono { (or_dash(&e.file_path)) }
                            td.mono { (or_dash(&e.sha256)) }
                            td { (e.process_id.map(|p| p.to_string()).unwrap_or_else(|| "—".into())) }
                            td.mono { (or_dash(&e.process_command_line)) }
                            td {
                                (or_dash(&e.account_name))
                                @if let Some(d) = &e.domain_name { span.muted { " (" (d) ")" } }
                            }
                            td { (or_dash(&e.detection_status)) }
                        }
                    }
                }
            }
        }
    }
}
