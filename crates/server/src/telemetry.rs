//! The service's metrics, named in one place. Labels are bounded sets (route templates,
//! action types and statuses, reasons), never ids or addresses.
//!
//! - `appfence_http_requests_total{route,method,status}` and
//!   `appfence_http_request_duration_seconds{route}` (histogram), per matched route;
//! - `appfence_actions_created_total{type}`, `appfence_actions_finished_total{type,status}`
//!   and `appfence_action_delivery_seconds` (creation to the device's acknowledgement);
//! - `appfence_devices_long_polling`, and at each sweep `appfence_devices_seen`
//!   (a heartbeat within five minutes) and `appfence_devices_restricted`;
//! - `appfence_rate_limited_total{api}`; token refusals, storage errors, TLS handshakes
//!   and lost log lines are counted where they happen.

use std::time::{Duration, Instant};

use appfence_core::records::ActionRecord;
use appfence_proto::{ActionStatus, Timestamp};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// A device is "seen" if it sent a heartbeat this recently.
pub const SEEN_WITHIN: Duration = Duration::from_secs(300);

/// Histogram buckets of request durations and delivery times, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Route layer: counts and times every request that matched a route.
pub async fn record_request(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!("appfence_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("appfence_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    resp
}

/// Requests no route matched (one label, whatever the path).
pub fn unmatched_request(method: &str, status: u16) {
    metrics::counter!(
        "appfence_http_requests_total",
        "route" => "unmatched",
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
}

pub fn action_created(action: &ActionRecord) {
    metrics::counter!("appfence_actions_created_total", "type" => action.action_type.as_str())
        .increment(1);
}

/// Counts `action` if its status is final.
pub fn action_changed(action: &ActionRecord) {
    if matches!(
        action.status,
        ActionStatus::Succeeded
            | ActionStatus::Failed
            | ActionStatus::Cancelled
            | ActionStatus::TimeOut
    ) {
        metrics::counter!(
            "appfence_actions_finished_total",
            "type" => action.action_type.as_str(),
            "status" => action.status.as_str()
        )
        .increment(1);
    }
}

/// The device acknowledged `action` at `now`: the time from its creation.
pub fn action_delivered(action: &ActionRecord, now: Timestamp) {
    let seconds = (now.ticks() - action.created.ticks()).max(0) as f64 / 10_000_000.0;
    metrics::histogram!("appfence_action_delivery_seconds").record(seconds);
}

pub fn rate_limited(api: &'static str) {
    metrics::counter!("appfence_rate_limited_total", "api" => api).increment(1);
}

pub fn fleet(summary: appfence_store::FleetSummary) {
    metrics::gauge!("appfence_devices_seen").set(summary.seen as f64);
    metrics::gauge!("appfence_devices_restricted").set(summary.restricted as f64);
}

/// Counts occurrences of a recurring problem (refused connections, accept errors) and
/// says when one is worth a log line: the first, then at most one a minute, each with
/// the count so far. A flood costs one line a minute, not one per occurrence.
#[derive(Default)]
pub struct Occurrences {
    count: std::sync::atomic::AtomicU64,
    logged: std::sync::Mutex<Option<Instant>>,
}

impl Occurrences {
    const LOG_EVERY: Duration = Duration::from_secs(60);

    /// Counts one; `Some(count so far)` when a log line is due.
    pub fn record(&self) -> Option<u64> {
        let count = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.is_none_or(|at| at.elapsed() >= Self::LOG_EVERY) {
            *logged = Some(Instant::now());
            Some(count)
        } else {
            None
        }
    }
}

/// Held while a device waits on a long-poll.
pub struct LongPolling(());

impl LongPolling {
    pub fn start() -> Self {
        metrics::gauge!("appfence_devices_long_polling").increment(1.0);
        LongPolling(())
    }
}

impl Drop for LongPolling {
    fn drop(&mut self) {
        metrics::gauge!("appfence_devices_long_polling").decrement(1.0);
    }
}

/// This request's id: in its log span and in the `x-request-id` response header, so
/// a caller's report can be found in the log.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Outermost layer: gives every request a fresh id (a caller's own is not trusted).
pub async fn assign_request_id(mut req: Request, next: Next) -> Response {
    let id = appfence_core::ids::new_guid();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    resp
}
