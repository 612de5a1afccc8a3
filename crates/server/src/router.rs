//! All routes of the control plane in one place.

use appfence_core::Error;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

use crate::{agent_gateway, api, console, oauth, ApiError, AppState};

pub fn build(state: AppState) -> Router {
    let (api_routes, openapi) = api::router().split_for_parts();
    // The versioned prefix serves the same handlers; the document describes `/api`.
    let (api_v1_routes, _) = api::router().split_for_parts();
    let gate = axum::middleware::from_fn_with_state(state.clone(), api::guard::guard);
    let api_routes = api_routes.route_layer(gate.clone());
    let api_v1_routes = api_v1_routes.route_layer(gate);
    let openapi = std::sync::Arc::new(prefix_paths(openapi, "/api"));
    let max_body = state.config.max_body_bytes;

    Router::new()
        // Liveness: the process answers. Readiness: it can serve (its store answers);
        // a load balancer takes a replica that is not ready out.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .nest("/api", api_routes)
        .nest("/api/v1.0", api_v1_routes)
        .nest("/agent/v1", agent_gateway::routes(&state))
        .merge(oauth::routes::routes())
        .merge(console::routes())
        .route_layer(axum::middleware::from_fn(crate::telemetry::record_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(max_body, crate::envelope_guard::refuse_oversized))
        // Inside the request span, so that its log lines carry the request id.
        .layer(axum::middleware::from_fn(crate::envelope_guard::ensure_envelope))
        // The path only: a query string may carry a client secret (the v1 token
        // endpoint accepts GET), and no secret is ever logged, at any level.
        .layer(TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                let id = req
                    .extensions()
                    .get::<crate::telemetry::RequestId>()
                    .map(|r| r.0.as_str())
                    .unwrap_or("");
                // The path, never the query string (it may carry secrets).
                tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
            },
        ))
        .layer(axum::middleware::from_fn(crate::telemetry::assign_request_id))
        .with_state(state)
}

fn prefix_paths(mut doc: utoipa::openapi::OpenApi, prefix: &str) -> utoipa::openapi::OpenApi {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(p, item)| (format!("{prefix}{p}"), item))
        .collect();
    doc
}

/// At most one probe (a write on SQLite) per this interval, whoever asks: `/readyz`
/// is unauthenticated, and a flood of it must not become a flood of disk flushes.
const READINESS_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn readiness(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let mut last = state.readiness.lock().await;
    let fresh = last
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < READINESS_PROBE_EVERY);
    if !fresh {
        let verdict = crate::storage_health::probe(state.store.as_ref())
            .await
            .map_err(|e| match &e {
                Error::Storage { fault, .. } => fault.as_str().to_string(),
                _ => {
                    tracing::warn!(error = %e, "not ready");
                    "storage error".to_string()
                }
            });
        *last = Some((std::time::Instant::now(), verdict));
    }
    match last.as_ref().map(|(_, v)| v) {
        Some(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Some(Err(why)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not checked yet",
        )
            .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> axum::response::Response {
    crate::telemetry::unmatched_request(method.as_str(), 404);
    if uri.path().starts_with("/console/") {
        return console::not_found();
    }
    ApiError(Error::NotFound(format!(
        "No route matches {method} {}",
        uri.path()
    )))
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> impl IntoResponse {
    ApiError(Error::MethodNotAllowed(format!(
        "{} does not support the method {method}",
        uri.path()
    )))
}
