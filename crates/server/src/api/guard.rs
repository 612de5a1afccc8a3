//! The gate in front of every public API route: authenticate the bearer token, count the
//! call against the caller's rate limit for that API, and only then run the handler.
//! A bad token or an exhausted quota never reaches a handler.

use appfence_core::authz::Api;
use appfence_core::ratelimit::Decision;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::oauth::extract::{authenticate, Authenticated};
use crate::{ApiError, AppState};

/// Which API a matched route is (the prefix `/api` or `/api/v1.0` aside). `path` is
/// the request's own path: MDE's lookups by IP come as a machine id
/// (`/machines/findbyip(...)`) and are APIs of their own, with their own limits.
pub fn api_of(method: &Method, route: &str, path: &str) -> Option<Api> {
    let route = route
        .strip_prefix("/api/v1.0")
        .or_else(|| route.strip_prefix("/api"))
        .unwrap_or(route);
    if method == Method::GET && route == "/machines/{id}" {
        let segment = path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if segment.starts_with("findbyip(") || segment.starts_with("findbyip%28") {
            return Some(Api::FindMachinesByIp);
        }
        if segment.starts_with("find(") || segment.starts_with("find%28") {
            return Some(Api::FindMachineByIp);
        }
    }
    let path = route;
    Some(match (method.as_str(), path) {
        ("POST", "/machines/{id}/restrictCodeExecution") => Api::RestrictCodeExecution,
        ("POST", "/machines/{id}/unrestrictCodeExecution") => Api::UnrestrictCodeExecution,
        ("POST", "/machines/{id}/offboard") => Api::OffboardMachine,
        ("GET", "/machineactions/{id}") => Api::GetMachineAction,
        ("GET", "/machineactions") => Api::ListMachineActions,
        ("POST", "/machineactions/{id}/cancel") => Api::CancelMachineAction,
        ("GET", "/machines") => Api::ListMachines,
        ("GET", "/machines/{id}") => Api::GetMachine,
        ("GET", "/machines/{id}/events") => Api::ListMachineEvents,
        ("GET", "/machines/{id}/enforcement") => Api::GetMachineEnforcement,
        ("POST", "/indicators") => Api::SubmitIndicator,
        ("POST", "/indicators/import") => Api::ImportIndicators,
        ("PATCH", "/machines/{id}") => Api::UpdateMachine,
        ("GET", "/indicators") => Api::ListIndicators,
        ("DELETE", "/indicators/{id}") => Api::DeleteIndicator,
        ("GET", "/machines/findbytag") => Api::FindMachinesByTag,
        ("POST", "/machines/{id}/tags") => Api::TagMachine,
        ("POST", "/machines/AddOrRemoveTagForMultipleMachines") => Api::TagMachines,
        ("GET", "/alerts") => Api::ListAlerts,
        ("GET", "/alerts/{id}") => Api::GetAlert,
        ("PATCH", "/alerts/{id}") => Api::UpdateAlert,
        ("POST", "/alerts/batchUpdate") => Api::BatchUpdateAlerts,
        ("GET", "/alerts/{id}/machine") => Api::GetAlertMachine,
        ("GET", "/machines/{id}/alerts") => Api::ListMachineAlerts,
        _ => return None,
    })
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut decision = None;
    let api = api_of(req.method(), &route, req.uri().path());
    if let Some(api) = api {
        match crate::commands::admit(&state, &principal, api).await {
            Ok(d) if d.admitted => decision = Some(d),
            Ok(d) => {
                let headers = rate_headers(&state, api, &d);
                let mut resp = ApiError(d.into_result().unwrap_err()).into_response();
                resp.headers_mut().extend(headers);
                return resp;
            }
            Err(e) => return ApiError(e).into_response(),
        }
    }
    req.extensions_mut().insert(Authenticated(principal));
    let mut resp = next.run(req).await;
    if let (Some(d), Some(api)) = (decision, api) {
        resp.headers_mut().extend(rate_headers(&state, api, &d));
    }
    resp
}

fn rate_headers(state: &AppState, api: Api, d: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(2);
    let policy = api.rate_limits(state.limiter.policy());
    if let Ok(v) = HeaderValue::from_str(&policy.header()) {
        out.push((HeaderName::from_static("ratelimit-policy"), v));
    }
    if let Ok(v) = HeaderValue::from_str(&d.header()) {
        out.push((HeaderName::from_static("ratelimit"), v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_apis_under_both_prefixes() {
        assert_eq!(
            api_of(
                &Method::POST,
                "/api/machines/{id}/restrictCodeExecution",
                "/api/machines/{id}/restrictCodeExecution"
            ),
            Some(Api::RestrictCodeExecution)
        );
        assert_eq!(
            api_of(
                &Method::GET,
                "/api/v1.0/machineactions",
                "/api/v1.0/machineactions"
            ),
            Some(Api::ListMachineActions)
        );
        assert_eq!(
            api_of(&Method::GET, "/api/openapi.json", "/api/openapi.json"),
            None
        );
        assert_eq!(
            api_of(
                &Method::POST,
                "/api/v1.0/machines/{id}/offboard",
                "/api/v1.0/machines/srv-01/offboard"
            ),
            Some(Api::OffboardMachine)
        );
        assert_eq!(
            api_of(
                &Method::DELETE,
                "/api/v1.0/indicators/{id}",
                "/api/v1.0/indicators/{id}"
            ),
            Some(Api::DeleteIndicator)
        );
        assert_eq!(
            api_of(&Method::POST, "/api/indicators", "/api/indicators"),
            Some(Api::SubmitIndicator)
        );
        assert_eq!(
            api_of(
                &Method::POST,
                "/api/indicators/import",
                "/api/indicators/import"
            ),
            Some(Api::ImportIndicators)
        );
        assert_eq!(
            api_of(
                &Method::PATCH,
                "/api/v1.0/machines/{id}",
                "/api/v1.0/machines/x"
            ),
            Some(Api::UpdateMachine)
        );
        assert_eq!(
            api_of(
                &Method::GET,
                "/api/machines/{id}/events",
                "/api/machines/{id}/events"
            ),
            Some(Api::ListMachineEvents)
        );
        assert_eq!(
            api_of(&Method::DELETE, "/api/machines/{id}", "/api/machines/{id}"),
            None
        );
        // The lookups by IP come as a machine id but are APIs of their own.
        let by_ip = "/api/machines/findbyip(ip='10.0.0.1',timestamp=2024-01-01T00:00:00Z)";
        assert_eq!(
            api_of(&Method::GET, "/api/machines/{id}", by_ip),
            Some(Api::FindMachinesByIp)
        );
        let find = "/api/v1.0/machines/find(timestamp=2024-01-01T00:00:00Z,key='10.0.0.1')";
        assert_eq!(
            api_of(&Method::GET, "/api/v1.0/machines/{id}", find),
            Some(Api::FindMachineByIp)
        );
        let encoded = "/api/machines/findbyip%28ip=%2710.0.0.1%27%29";
        assert_eq!(
            api_of(&Method::GET, "/api/machines/{id}", encoded),
            Some(Api::FindMachinesByIp)
        );
        assert_eq!(
            api_of(&Method::GET, "/api/machines/{id}", "/api/machines/srv-01"),
            Some(Api::GetMachine)
        );
        assert_eq!(
            api_of(
                &Method::POST,
                "/api/machines/AddOrRemoveTagForMultipleMachines",
                ""
            ),
            Some(Api::TagMachines)
        );
    }
}
