//! The frame every console page shares, the small pieces pages are built from (times,
//! status and severity badges, notices), and the security headers every console answer
//! carries.

use appfence_proto::{ActionStatus, Timestamp};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::Viewer;

/// Which section a page belongs to (highlighted in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Devices,
    Alerts,
    Actions,
    Allowlist,
    None,
}

/// A message at the top of a page.
pub enum Notice {
    Ok(String),
    Error(String),
    Info(String),
}

pub fn page(
    title: &str,
    viewer: Option<&Viewer>,
    section: Section,
    notice: Option<&Notice>,
    body: Markup,
) -> Markup {
    let current = |s: Section| (s == section).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · appfence" }
                link rel="stylesheet" href=(super::assets::stylesheet());
                script src=(super::assets::script()) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/devices" { "appfence" }
                    @if viewer.is_some() {
                        nav aria-label="Sections" {
                            a href="/console/devices" aria-current=[current(Section::Devices)] { "Devices" }
                            a href="/console/alerts" aria-current=[current(Section::Alerts)] { "Alerts" }
                            a href="/console/actions" aria-current=[current(Section::Actions)] { "Action center" }
                            a href="/console/allowlist" aria-current=[current(Section::Allowlist)] { "Allowlist" }
                        }
                    }
                    @if let Some(v) = viewer {
                        div.who {
                            span data-testid="signed-in-as" { (v.upn) }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button.small type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    @if let Some(n) = notice { (notice_box(n)) }
                    (body)
                }
            }
        }
    }
}

pub fn notice_box(n: &Notice) -> Markup {
    match n {
        Notice::Ok(m) => html! { div.notice.ok role="status" { (m) } },
        Notice::Error(m) => html! { div.notice.error role="alert" { (m) } },
        Notice::Info(m) => html! { div.notice.info role="status" { (m) } },
    }
}

/// `2026-12-07 16:48:45 UTC`.
pub fn time(t: Timestamp) -> String {
    let t = t.to_offset_date_time();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn time_opt(t: Option<Timestamp>) -> String {
    t.map(time).unwrap_or_else(|| "never".to_string())
}

/// `3 h 12 min`, `45 s`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} d {} h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// A status with its colour and, always, its name.
pub fn status_badge(s: ActionStatus) -> Markup {
    let class = match s {
        ActionStatus::Succeeded => "ok",
        ActionStatus::Failed | ActionStatus::TimeOut => "bad",
        ActionStatus::Cancelled => "muted",
        ActionStatus::Pending | ActionStatus::InProgress => "info",
    };
    badge(class, s.as_str())
}

/// An alert's severity (MDE's values) with its colour.
pub fn severity_badge(severity: &str) -> Markup {
    let class = match severity {
        "High" => "bad",
        "Medium" => "warn",
        "Low" => "info",
        _ => "muted",
    };
    badge(class, severity)
}

/// An alert's status (`New`, `InProgress`, `Resolved`) with its colour.
pub fn alert_status_badge(status: &str) -> Markup {
    let class = match status {
        "New" => "warn",
        "InProgress" => "info",
        "Resolved" => "ok",
        _ => "muted",
    };
    badge(class, status)
}

pub fn badge(class: &str, text: &str) -> Markup {
    html! { span class={"badge " (class)} { (text) } }
}

/// An HTML page with `status`: the envelope guard passes HTML through.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

pub fn not_found() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            None,
            Section::None,
            None,
            html! { h1 { "Not found" } p { "There is no such page. " a href="/console/devices" { "Go to the devices" } "." } },
        ),
    )
}

/// Headers on every console answer: no inline script or style (the CSP allows only the
/// server's own files), no framing, no referrer beyond this origin, no sniffing, and
/// pages never cached (they show who is signed in and what they may see).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    add_security_headers(resp.headers_mut());
    resp
}

pub fn add_security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}
