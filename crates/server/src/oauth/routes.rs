//! HTTP endpoints of the built-in authorization server: the v1 and v2 token endpoints
//! (client credentials and password grants), OpenID discovery documents and the JWKS, at
//! the paths Entra ID uses, so that clients only change the host.

use appfence_core::ids::truncate;
use appfence_core::Tenant;
use appfence_proto::oauth::TokenResponse;
use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::audience::{TokenPolicy, TokenVersion};
use super::failure::{json_bytes, no_store, OAuthFailure};
use super::keys::ALGORITHM;
use super::request::{parse_params, token_request};
use super::sign_in::{sign_in, SignedIn};
use super::tenants::resolve_tenant;
use super::tokens::{issue_app_token, issue_user_token};
use crate::client_address::client_ip;
use crate::AppState;

/// The routes of the authorization server. All tenant-scoped paths use the parameter
/// name `{tenant}`; static first segments (`/api`, `/agent`, `/healthz`, ...) win over
/// it in axum's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        // Some clients send the v1 request as a GET with a form body.
        .route("/{tenant}/oauth2/token", get(token_v1).post(token_v1))
        .route("/{tenant}/oauth2/v2.0/token", get(token_v2).post(token_v2))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(super::flows::authorize::authorize_v2),
        )
        .route(
            "/{tenant}/oauth2/authorize",
            get(super::flows::authorize::authorize_v1),
        )
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            axum::routing::post(super::flows::device::devicecode_v2),
        )
        .route(
            "/{tenant}/oauth2/devicecode",
            axum::routing::post(super::flows::device::devicecode_v1),
        )
        .route(
            "/{tenant}/oauth2/v2.0/logout",
            get(super::flows::end_session::end_session),
        )
        .route(
            "/{tenant}/oauth2/logout",
            get(super::flows::end_session::end_session),
        )
        .route("/.well-known/openid-configuration", get(discovery_default))
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(discovery_v1),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery_v2),
        )
        .route("/discovery/keys", get(jwks))
        .route("/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/discovery/keys", get(tenant_jwks))
        .route("/{tenant}/discovery/v2.0/keys", get(tenant_jwks))
}

/// What a token request arrived with.
struct Arrived {
    tenant: String,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    body: Bytes,
}

impl FromRequest<AppState> for Arrived {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Path(tenant) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let peer = crate::client_address::peer_of(&parts);
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let query = parts.uri.query().map(str::to_string);
        // Through the `Bytes` extractor, so the body limit applies.
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Arrived {
            tenant,
            method,
            query,
            headers,
            peer,
            body,
        })
    }
}

async fn token_v1(State(state): State<AppState>, arrived: Arrived) -> Response {
    token(&state, arrived, TokenVersion::V1).await
}

async fn token_v2(State(state): State<AppState>, arrived: Arrived) -> Response {
    token(&state, arrived, TokenVersion::V2).await
}

async fn token(state: &AppState, arrived: Arrived, version: TokenVersion) -> Response {
    match issue(state, arrived, version).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn issue(
    state: &AppState,
    arrived: Arrived,
    version: TokenVersion,
) -> Result<Response, OAuthFailure> {
    let Arrived {
        tenant,
        method,
        query,
        headers,
        peer,
        body,
    } = arrived;
    let tenant = tenant_of(state, &tenant).await?;
    // Parameters belong in the body; the query string is read only for GET, the
    // compatibility case, so that secrets in POST URLs are not encouraged.
    let query = if method == Method::GET { query } else { None };
    let params = parse_params(&body, query.as_deref())?;
    if super::flows::grants::handles(params.get("grant_type").map(String::as_str)) {
        let address = client_ip(peer, &headers, &state.config.trusted_proxies);
        let authorization = headers.get(AUTHORIZATION);
        let resp =
            super::flows::grants::redeem(state, &tenant, &params, authorization, version, address)
                .await?;
        state.tenants.remember(&tenant.id);
        return Ok(resp);
    }
    let policy = TokenPolicy::new(&state.public_url());
    let request = token_request(&params, headers.get(AUTHORIZATION), version, &policy)?;
    let address = client_ip(peer, &headers, &state.config.trusted_proxies);
    let SignedIn { app, user } = sign_in(state, &tenant, address, &request).await?;
    let access_token = match &user {
        None => {
            let token = issue_app_token(state, &app, &request.audience, version)?;
            tracing::info!(tenant_id = %tenant.id, client_id = %app.client_id, audience = %request.audience, "issued an application token");
            token
        }
        Some(user) => {
            let token = issue_user_token(state, &app, user, &request.audience, version)?;
            tracing::info!(tenant_id = %tenant.id, client_id = %app.client_id, user_id = %user.object_id, audience = %request.audience, "issued a user token");
            token
        }
    };
    // Tokens of this tenant will be verified soon: spare that first lookup.
    state.tenants.remember(&tenant.id);
    // The application and user were just read from the store and found enabled: this
    // replica knows it now (an application enabled again gets working tokens at once).
    state
        .principals
        .remember_active(&app, user.as_ref(), state.clock.now());
    let lifetime = state.config.token_lifetime.as_secs();
    let body = TokenResponse {
        token_type: "Bearer".into(),
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token,
    };
    let mut resp = (StatusCode::OK, json_bytes(&body)).into_response();
    no_store(resp.headers_mut());
    Ok(resp)
}

async fn tenant_of(state: &AppState, segment: &str) -> Result<Tenant, OAuthFailure> {
    resolve_tenant(state.store.as_ref(), segment)
        .await?
        .ok_or_else(|| {
            OAuthFailure::invalid_request(format!("Tenant '{}' not found", truncate(segment, 100)))
        })
}

/// The OpenID Provider metadata (OpenID Connect Discovery 1.0 §3, RFC 8414 §2) of one
/// tenant, with the fields Entra ID publishes that apply. It lists only what is served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub device_authorization_endpoint: String,
    pub end_session_endpoint: String,
    pub jwks_uri: String,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub claims_supported: Vec<String>,
    pub request_uri_parameter_supported: bool,
    pub tenant_id: String,
}

/// The grant types the token endpoints answer.
pub const GRANT_TYPES: [&str; 5] = [
    "authorization_code",
    "refresh_token",
    "urn:ietf:params:oauth:grant-type:device_code",
    "client_credentials",
    "password",
];

/// The discovery document of `tenant_id` for the v1 or v2 endpoints, with the same
/// paths as Entra ID; `password` when the tenant accepts the password grant.
pub fn openid_configuration(
    public_url: &str,
    tenant_id: &str,
    version: TokenVersion,
    password_grant: bool,
) -> OpenIdConfiguration {
    let policy = TokenPolicy::new(public_url);
    let base = policy.public_url();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (authorization_endpoint, token_endpoint, device_authorization_endpoint, jwks_uri) =
        match version {
            TokenVersion::V1 => (
                format!("{base}/{tenant_id}/oauth2/authorize"),
                format!("{base}/{tenant_id}/oauth2/token"),
                format!("{base}/{tenant_id}/oauth2/devicecode"),
                format!("{base}/discovery/keys"),
            ),
            TokenVersion::V2 => (
                format!("{base}/{tenant_id}/oauth2/v2.0/authorize"),
                format!("{base}/{tenant_id}/oauth2/v2.0/token"),
                format!("{base}/{tenant_id}/oauth2/v2.0/devicecode"),
                format!("{base}/{tenant_id}/discovery/v2.0/keys"),
            ),
        };
    let end_session_endpoint = match version {
        TokenVersion::V1 => format!("{base}/{tenant_id}/oauth2/logout"),
        TokenVersion::V2 => format!("{base}/{tenant_id}/oauth2/v2.0/logout"),
    };
    OpenIdConfiguration {
        issuer: policy.issuer(tenant_id, version),
        authorization_endpoint,
        token_endpoint,
        device_authorization_endpoint,
        end_session_endpoint,
        jwks_uri,
        response_types_supported: strings(&["code"]),
        response_modes_supported: strings(&["query"]),
        // `sub` is the user's `oid`, the same for every client.
        subject_types_supported: strings(&["public"]),
        id_token_signing_alg_values_supported: strings(&[ALGORITHM]),
        scopes_supported: strings(&super::flows::OIDC_SCOPES),
        code_challenge_methods_supported: strings(&["S256"]),
        token_endpoint_auth_methods_supported: strings(&[
            "client_secret_post",
            "client_secret_basic",
            "none",
        ]),
        grant_types_supported: GRANT_TYPES
            .iter()
            .filter(|g| password_grant || **g != "password")
            .map(|g| g.to_string())
            .collect(),
        claims_supported: strings(&[
            "aud",
            "iss",
            "iat",
            "nbf",
            "exp",
            "azp",
            "app_displayname",
            "appid",
            "groups",
            "idtyp",
            "nonce",
            "oid",
            "preferred_username",
            "roles",
            "scp",
            "sub",
            "tid",
            "unique_name",
            "upn",
            "ver",
            "jti",
        ]),
        request_uri_parameter_supported: false,
        tenant_id: tenant_id.to_string(),
    }
}

async fn password_grant_of(state: &AppState, tenant_id: &str) -> Result<bool, OAuthFailure> {
    Ok(state.store.password_grant(tenant_id).await? == Some(true))
}

/// Without a tenant in the path: the default (oldest) tenant's v2 document.
async fn discovery_default(
    State(state): State<AppState>,
) -> Result<Json<OpenIdConfiguration>, OAuthFailure> {
    let tenant = state
        .store
        .tenants()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| OAuthFailure::not_found("No tenant exists yet"))?;
    Ok(Json(openid_configuration(
        &state.public_url(),
        &tenant.id,
        TokenVersion::V2,
        password_grant_of(&state, &tenant.id).await?,
    )))
}

async fn discovery_v1(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<OpenIdConfiguration>, OAuthFailure> {
    let tenant = tenant_of(&state, &tenant).await?;
    Ok(Json(openid_configuration(
        &state.public_url(),
        &tenant.id,
        TokenVersion::V1,
        password_grant_of(&state, &tenant.id).await?,
    )))
}

async fn discovery_v2(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<OpenIdConfiguration>, OAuthFailure> {
    let tenant = tenant_of(&state, &tenant).await?;
    Ok(Json(openid_configuration(
        &state.public_url(),
        &tenant.id,
        TokenVersion::V2,
        password_grant_of(&state, &tenant.id).await?,
    )))
}

/// Exactly the keys that verify now (a key about to sign is published ahead).
async fn jwks(State(state): State<AppState>) -> Json<super::keys::Jwks> {
    Json(state.keys.current().jwks(state.clock.now()))
}

async fn tenant_jwks(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<super::keys::Jwks>, OAuthFailure> {
    tenant_of(&state, &tenant).await?;
    Ok(Json(state.keys.current().jwks(state.clock.now())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::apps::create_app;
    use crate::oauth::verify::verify_access_token;
    use crate::test_support::{test_state, TestState, TENANT};
    use appfence_core::authz::ROLE_RESTRICT;
    use appfence_core::AppRegistration;
    use axum::body::Body;
    use axum::http::Request;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use tower::ServiceExt;

    const MDE: &str = "https://api.securitycenter.microsoft.com";

    async fn call(
        router: &Router,
        req: Request<Body>,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| String::from_utf8_lossy(&body).into())
        };
        (status, headers, json)
    }

    fn form(method: &str, uri: &str, body: String) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    }

    async fn setup() -> (AppState, Router, AppRegistration, String, TestState) {
        let t = test_state().await;
        let state = t.state.clone();
        let (app, secret) = create_app(
            state.store.as_ref(),
            state.clock.as_ref(),
            TENANT,
            "SOAR",
            &[ROLE_RESTRICT.to_string()],
        )
        .await
        .unwrap();
        let router = routes().with_state(state.clone());
        (state, router, app, secret, t)
    }

    #[tokio::test]
    async fn v1_v2_get_and_basic_requests_get_tokens() {
        let (state, router, app, secret, _t) = setup().await;
        let id = &app.client_id;
        let v1 = format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}&resource={MDE}"
        );
        let v2 = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&scope={MDE}/.default");
        let basic = Request::builder()
            .method("POST")
            .uri(format!("/{TENANT}/oauth2/v2.0/token"))
            .header(
                AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
            )
            .body(Body::from(format!(
                "grant_type=client_credentials&scope={MDE}/.default"
            )))
            .unwrap();
        let requests = [
            (
                form("POST", &format!("/{TENANT}/oauth2/token"), v1.clone()),
                TokenVersion::V1,
            ),
            (
                form("GET", &format!("/{TENANT}/oauth2/token"), v1.clone()),
                TokenVersion::V1,
            ),
            (
                form(
                    "GET",
                    &format!("/{TENANT}/oauth2/token?{v1}"),
                    String::new(),
                ),
                TokenVersion::V1,
            ),
            (form("POST", "/default/oauth2/token", v1), TokenVersion::V1),
            (
                form("POST", &format!("/{TENANT}/oauth2/v2.0/token"), v2),
                TokenVersion::V2,
            ),
            (basic, TokenVersion::V2),
        ];
        for (req, version) in requests {
            let uri = req.uri().to_string();
            let (status, headers, body) = call(&router, req).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert_eq!(headers["cache-control"], "no-store");
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], serde_json::json!(3599), "a JSON number");
            assert_eq!(body["ext_expires_in"], serde_json::json!(3599));
            let token = body["access_token"].as_str().unwrap();
            let policy = TokenPolicy::new(&state.public_url());
            let p = verify_access_token(&state.keys.current(), &policy, token, state.clock.now())
                .unwrap();
            assert_eq!(p.tenant_id, TENANT);
            assert_eq!(p.roles, vec![ROLE_RESTRICT.to_string()]);
            let claims: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(claims["aud"], MDE);
            assert_eq!(claims["ver"], version.claim());
            assert_eq!(claims["iss"], policy.issuer(TENANT, version));
        }
    }

    #[tokio::test]
    async fn token_errors_use_the_oauth_body() {
        let (_state, router, app, secret, _t) = setup().await;
        let id = &app.client_id;
        let cases = [
            (
                format!("/{TENANT}/oauth2/token"),
                format!("grant_type=client_credentials&client_id={id}&client_secret=wrong&resource={MDE}"),
                401,
                "invalid_client",
            ),
            (
                format!("/{TENANT}/oauth2/token"),
                format!("grant_type=client_credentials&client_id=00000000-0000-0000-0000-000000000000&client_secret={secret}&resource={MDE}"),
                400,
                "unauthorized_client",
            ),
            (
                format!("/{TENANT}/oauth2/token"),
                format!("grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&client_id={id}&client_secret={secret}&resource={MDE}"),
                400,
                "unsupported_grant_type",
            ),
            (
                format!("/{TENANT}/oauth2/token"),
                format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
                400,
                "invalid_request",
            ),
            (
                format!("/{TENANT}/oauth2/token"),
                format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&resource=https://graph.microsoft.com"),
                400,
                "invalid_resource",
            ),
            (
                format!("/{TENANT}/oauth2/v2.0/token"),
                format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=openid"),
                400,
                "invalid_scope",
            ),
            (
                "/nope/oauth2/token".to_string(),
                format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&resource={MDE}"),
                400,
                "invalid_request",
            ),
        ];
        for (uri, body, status, error) in cases {
            let (s, headers, json) = call(&router, form("POST", &uri, body.clone())).await;
            assert_eq!(
                (s.as_u16(), json["error"].as_str().unwrap()),
                (status, error),
                "{uri} {body}: {json}"
            );
            assert!(json["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()));
            assert_eq!(headers["cache-control"], "no-store");
            assert!(json.get("access_token").is_none());
        }
        let (_, _, json) = call(&router, form("POST", "/nope/oauth2/token", String::new())).await;
        assert_eq!(json["error_description"], "Tenant 'nope' not found");
        // Query parameters of a POST are ignored: the body is where they belong.
        let q = format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}&resource={MDE}"
        );
        let (s, _, json) = call(
            &router,
            form(
                "POST",
                &format!("/{TENANT}/oauth2/token?{q}"),
                String::new(),
            ),
        )
        .await;
        assert_eq!(
            (s.as_u16(), json["error_description"].as_str().unwrap()),
            (400, "Parameter 'grant_type' is missing")
        );
    }

    #[tokio::test]
    async fn discovery_and_jwks_are_served() {
        let (state, router, _, _, _t) = setup().await;
        let base = state.public_url();
        let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
        for uri in [
            "/.well-known/openid-configuration".to_string(),
            format!("/{TENANT}/v2.0/.well-known/openid-configuration"),
        ] {
            let (s, _, json) = call(&router, get(&uri)).await;
            assert_eq!(s, StatusCode::OK, "{uri}");
            assert_eq!(json["issuer"], format!("{base}/{TENANT}/v2.0"));
            assert_eq!(
                json["token_endpoint"],
                format!("{base}/{TENANT}/oauth2/v2.0/token")
            );
            assert_eq!(
                json["jwks_uri"],
                format!("{base}/{TENANT}/discovery/v2.0/keys")
            );
            assert_eq!(
                json["id_token_signing_alg_values_supported"],
                serde_json::json!(["EdDSA"])
            );
            // A new tenant refuses the password grant, and says so.
            assert_eq!(
                json["grant_types_supported"],
                serde_json::json!(GRANT_TYPES[..4])
            );
            assert_eq!(
                json["authorization_endpoint"],
                format!("{base}/{TENANT}/oauth2/v2.0/authorize")
            );
            assert_eq!(
                json["device_authorization_endpoint"],
                format!("{base}/{TENANT}/oauth2/v2.0/devicecode")
            );
            assert_eq!(
                json["end_session_endpoint"],
                format!("{base}/{TENANT}/oauth2/v2.0/logout")
            );
            assert_eq!(
                json["response_types_supported"],
                serde_json::json!(["code"])
            );
            assert_eq!(
                json["subject_types_supported"],
                serde_json::json!(["public"])
            );
            assert_eq!(
                json["code_challenge_methods_supported"],
                serde_json::json!(["S256"])
            );
        }
        let (_, _, json) = call(
            &router,
            get(&format!("/{TENANT}/.well-known/openid-configuration")),
        )
        .await;
        assert_eq!(json["issuer"], format!("{base}/{TENANT}/"));
        assert_eq!(
            json["token_endpoint"],
            format!("{base}/{TENANT}/oauth2/token")
        );
        assert_eq!(
            json["authorization_endpoint"],
            format!("{base}/{TENANT}/oauth2/authorize")
        );
        assert_eq!(
            json["grant_types_supported"],
            serde_json::json!(GRANT_TYPES[..4])
        );
        let (s, _, json) = call(
            &router,
            get("/unknown/v2.0/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(
            (s.as_u16(), json["error"].as_str().unwrap()),
            (400, "invalid_request")
        );

        let expected = serde_json::to_value(state.keys.current().jwks(state.clock.now())).unwrap();
        for uri in [
            "/discovery/keys".to_string(),
            "/discovery/v2.0/keys".to_string(),
            format!("/{TENANT}/discovery/v2.0/keys"),
        ] {
            let (s, _, json) = call(&router, get(&uri)).await;
            assert_eq!(s, StatusCode::OK, "{uri}");
            assert_eq!(json, expected);
            assert_eq!(
                json["keys"][0]["kid"],
                state.keys.current().signer(state.clock.now()).unwrap().0
            );
        }
    }

    #[tokio::test]
    async fn tenant_routes_do_not_shadow_static_routes() {
        let (state, _, _, _, _t) = setup().await;
        // Shaped like router::build: nested API and agent routers, a fallback.
        let api = || {
            Router::<AppState>::new()
                .route("/machines", get(|| async { "machines" }))
                .route("/machines/{id}", get(|| async { "machine" }))
                .route(
                    "/machines/{id}/restrictCodeExecution",
                    axum::routing::post(|| async { "restrict" }),
                )
                .route("/machineactions/{id}", get(|| async { "action" }))
        };
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .nest("/api", api())
            .nest("/api/v1.0", api())
            .nest(
                "/agent/v1",
                Router::new().route(
                    "/commands",
                    get(|| async { "agent" }).post(|| async { "agent" }),
                ),
            )
            .merge(routes())
            .fallback(|| async { (StatusCode::NOT_FOUND, "fallback") })
            .with_state(state);
        for (method, uri, expected) in [
            ("GET", "/api/machines", "machines"),
            ("GET", "/api/machines/abc", "machine"),
            (
                "POST",
                "/api/machines/abc/restrictCodeExecution",
                "restrict",
            ),
            ("GET", "/api/machineactions/abc", "action"),
            ("GET", "/api/v1.0/machines", "machines"),
            ("GET", "/api/v1.0/machines/abc", "machine"),
            (
                "POST",
                "/api/v1.0/machines/abc/restrictCodeExecution",
                "restrict",
            ),
            ("GET", "/agent/v1/commands", "agent"),
            ("POST", "/agent/v1/commands", "agent"),
            ("GET", "/healthz", "ok"),
            ("GET", "/api/unknown", "fallback"),
            ("GET", "/nothing/here/at/all", "fallback"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let (_, _, body) = call(&router, req).await;
            assert_eq!(body, serde_json::Value::from(expected), "{method} {uri}");
        }
        // And the tenant routes still work next to them.
        for uri in [
            format!("/{TENANT}/discovery/v2.0/keys"),
            format!("/{TENANT}/v2.0/.well-known/openid-configuration"),
            "/discovery/keys".to_string(),
        ] {
            let req = Request::builder().uri(&uri).body(Body::empty()).unwrap();
            assert_eq!(call(&router, req).await.0, StatusCode::OK, "{uri}");
        }
    }

    /// A server state with a tenant, the application "SOAR" and the user
    /// ana@example.com in the group "tier2".
    struct PasswordSetup {
        _t: TestState,
        state: AppState,
        router: Router,
        app: AppRegistration,
        secret: String,
    }

    const ANA: &str = "ana@example.com";
    const ANA_PASSWORD: &str = "correct horse battery";

    async fn password_setup() -> PasswordSetup {
        let (state, router, app, secret, t) = setup().await;
        crate::oauth::users::create_user(
            state.store.as_ref(),
            state.clock.as_ref(),
            TENANT,
            ANA,
            ANA_PASSWORD,
            &["tier2".to_string()],
        )
        .await
        .unwrap();
        state
            .store
            .set_password_grant(TENANT, true, "test", state.clock.now())
            .await
            .unwrap();
        PasswordSetup {
            _t: t,
            state,
            router,
            app,
            secret,
        }
    }

    fn urlencode(value: &str) -> String {
        serde_urlencoded::to_string([("v", value)]).unwrap()[2..].to_string()
    }

    #[tokio::test]
    async fn password_grants_get_user_tokens() {
        let s = password_setup().await;
        let id = &s.app.client_id;
        let password = urlencode(ANA_PASSWORD);
        let v1_public = format!(
            "resource={MDE}&client_id={id}&grant_type=password&username=Ana%40Example.com&password={password}"
        );
        let v2_confidential = format!(
            "grant_type=password&client_id={id}&client_secret={}&username={ANA}&password={password}&scope={MDE}/.default",
            s.secret
        );
        for (uri, body, version) in [
            (
                format!("/{TENANT}/oauth2/token"),
                v1_public,
                TokenVersion::V1,
            ),
            (
                format!("/{TENANT}/oauth2/v2.0/token"),
                v2_confidential,
                TokenVersion::V2,
            ),
        ] {
            let (status, headers, json) = call(&s.router, form("POST", &uri, body)).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {json}");
            assert_eq!(headers["cache-control"], "no-store");
            assert_eq!(json["token_type"], "Bearer");
            assert_eq!(json["expires_in"], serde_json::json!(3599));
            let token = json["access_token"].as_str().unwrap();
            let policy = TokenPolicy::new(&s.state.public_url());
            let p =
                verify_access_token(&s.state.keys.current(), &policy, token, s.state.clock.now())
                    .unwrap();
            assert_eq!(p.tenant_id, TENANT);
            assert!(p.is_user());
            assert_eq!(p.requestor(), ANA);
            assert_eq!(p.groups, ["tier2"]);
            assert_eq!(p.scopes, appfence_core::authz::DELEGATED_SCOPES);
            assert!(p.roles.is_empty(), "the app's roles are not the user's");
            let claims: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(claims["idtyp"], "user");
            assert_eq!(claims["appid"], id.as_str());
            assert_eq!(claims["app_displayname"], "SOAR");
            assert_eq!(claims["upn"], ANA);
            assert_eq!(claims["unique_name"], ANA);
            assert_eq!(claims["ver"], version.claim());
            assert_eq!(claims["aud"], MDE);
        }
    }

    /// Off for a new tenant: refused before anything is checked (AADSTS70003, naming
    /// both ways forward), and absent from discovery; the switch turns both on and off.
    #[tokio::test]
    async fn the_password_grant_follows_the_tenant_switch() {
        let s = password_setup().await;
        let id = &s.app.client_id;
        let body = format!(
            "resource={MDE}&client_id={id}&grant_type=password&username={ANA}&password={}",
            urlencode(ANA_PASSWORD)
        );
        let uri = format!("/{TENANT}/oauth2/token");
        let discovery = format!("/{TENANT}/v2.0/.well-known/openid-configuration");
        let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
        for on in [false, true, false] {
            s.state
                .store
                .set_password_grant(TENANT, on, "test", s.state.clock.now())
                .await
                .unwrap();
            let (status, _, json) = call(&s.router, form("POST", &uri, body.clone())).await;
            let (_, _, doc) = call(&s.router, get(&discovery)).await;
            let listed = doc["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("password"));
            assert_eq!(listed, on, "{doc}");
            if on {
                assert_eq!(status, StatusCode::OK, "{json}");
                assert!(json["access_token"].is_string(), "{json}");
            } else {
                assert_eq!(
                    (status.as_u16(), json["error"].as_str().unwrap()),
                    (400, "unsupported_grant_type"),
                    "{json}"
                );
                assert_eq!(json["error_codes"], serde_json::json!([70003]));
                let d = json["error_description"].as_str().unwrap();
                assert!(d.contains("appfence login"), "{d}");
                assert!(d.contains("appfence tenant set --password-grant on"), "{d}");
                assert!(json.get("access_token").is_none(), "{json}");
            }
        }
    }

    #[tokio::test]
    async fn password_grant_errors() {
        let s = password_setup().await;
        let id = &s.app.client_id;
        let password = urlencode(ANA_PASSWORD);
        let uri = format!("/{TENANT}/oauth2/token");
        let wrong_credentials = "The user name or password is incorrect";
        let cases = [
            (
                format!("resource={MDE}&client_id={id}&grant_type=password&username={ANA}&password=wrong-password"),
                400,
                "invalid_grant",
                Some(wrong_credentials),
            ),
            (
                format!("resource={MDE}&client_id={id}&grant_type=password&username=bob%40example.com&password={password}"),
                400,
                "invalid_grant",
                Some(wrong_credentials),
            ),
            (
                format!("resource={MDE}&client_id=00000000-0000-0000-0000-000000000000&grant_type=password&username={ANA}&password={password}"),
                400,
                "unauthorized_client",
                None,
            ),
            (
                format!("resource={MDE}&client_id={id}&client_secret=wrong&grant_type=password&username={ANA}&password={password}"),
                401,
                "invalid_client",
                None,
            ),
            (
                format!("resource={MDE}&client_id={id}&grant_type=password&password={password}"),
                400,
                "invalid_request",
                Some("Parameter 'username' is missing"),
            ),
            (
                format!("resource={MDE}&client_id={id}&grant_type=password&username={ANA}"),
                400,
                "invalid_request",
                Some("Parameter 'password' is missing"),
            ),
            (
                format!("resource=https://graph.microsoft.com&client_id={id}&grant_type=password&username={ANA}&password={password}"),
                400,
                "invalid_resource",
                None,
            ),
        ];
        for (body, status, error, description) in cases {
            let (st, headers, json) = call(&s.router, form("POST", &uri, body.clone())).await;
            assert_eq!(
                (st.as_u16(), json["error"].as_str().unwrap()),
                (status, error),
                "{body}: {json}"
            );
            if let Some(d) = description {
                assert_eq!(json["error_description"], d, "{body}");
            }
            assert_eq!(headers["cache-control"], "no-store");
            assert!(json.get("access_token").is_none());
        }
    }
}
