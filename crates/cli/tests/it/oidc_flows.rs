//! Sign-in without passwords, driven by an independent, well-kept OpenID Connect client
//! (the `openidconnect` crate) over real HTTP: it reads our discovery documents with
//! its own metadata parser, takes every endpoint from them (no path is written here
//! but the issuer's), runs authorization code + PKCE through the console's sign-in and
//! the device authorization grant through the console's device page, verifies the ID
//! token with the published keys, refreshes, and meets reuse detection.

use std::time::Duration;

use appfence_server::oauth::flows::CLI_CLIENT_ID;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreProviderMetadata,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::console::{analyst_server, Browser, ANALYST, PASSWORD};
use crate::harness::{TestServer, MDE_AUDIENCE};

/// RFC 8628's endpoint, which OpenID Connect Discovery does not name: read as the
/// library's documentation shows, as additional metadata.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    device_authorization_endpoint: DeviceAuthorizationUrl,
}
impl AdditionalProviderMetadata for DeviceEndpoint {}

type Metadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// An HTTP client as the library's documentation asks for: no redirects followed.
fn library_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn v2_issuer(server: &TestServer) -> IssuerUrl {
    IssuerUrl::new(server.url(&format!("/{}/v2.0", server.tenant_id))).unwrap()
}

async fn discover(server: &TestServer) -> Metadata {
    Metadata::discover_async(v2_issuer(server), &library_http())
        .await
        .expect("the v2 discovery document and its keys parse")
}

/// What the MDE API is asked for: its `.default` scope, and a refresh token.
fn api_scopes() -> [Scope; 3] {
    [
        Scope::new(format!("{MDE_AUDIENCE}/.default")),
        Scope::new("offline_access".into()),
        Scope::new("profile".into()),
    ]
}

#[tokio::test]
async fn discovery_documents_parse_and_name_only_what_is_served() {
    let server = TestServer::start().await;
    let http = library_http();
    let metadata = discover(&server).await;
    let base = server.url("");
    let tenant = &server.tenant_id;
    assert_eq!(metadata.issuer().as_str(), format!("{base}/{tenant}/v2.0"));
    assert_eq!(
        metadata.authorization_endpoint().as_str(),
        format!("{base}/{tenant}/oauth2/v2.0/authorize")
    );
    let token_endpoint = metadata.token_endpoint().unwrap().as_str().to_string();
    assert_eq!(token_endpoint, format!("{base}/{tenant}/oauth2/v2.0/token"));
    let device_endpoint = metadata
        .additional_metadata()
        .device_authorization_endpoint
        .as_str()
        .to_string();
    assert_eq!(
        device_endpoint,
        format!("{base}/{tenant}/oauth2/v2.0/devicecode")
    );
    assert!(
        !metadata.jwks().keys().is_empty(),
        "the signing keys are published"
    );
    // RFC 8414's field, which the OpenID Connect parser does not model: read raw.
    let raw: serde_json::Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            metadata.issuer().as_str()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        raw["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    // The end-session endpoint is served: without a session, a page that says so (and
    // never a redirect, whatever post_logout_redirect_uri says).
    let logout = raw["end_session_endpoint"].as_str().unwrap().to_string();
    assert_eq!(logout, format!("{base}/{tenant}/oauth2/v2.0/logout"));
    let r = http
        .get(format!(
            "{logout}?post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.text().await.unwrap().contains("not signed in"));
    let grants = metadata.grant_types_supported().unwrap();
    for g in [
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
        CoreGrantType::ClientCredentials,
        CoreGrantType::DeviceCode,
    ] {
        assert!(grants.contains(&g), "{g:?} in {grants:?}");
    }

    // The v1 document and the one without a tenant parse with the same parser.
    for path in [
        format!("/{tenant}/.well-known/openid-configuration"),
        "/.well-known/openid-configuration".to_string(),
    ] {
        let text = http
            .get(server.url(&path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let doc: CoreProviderMetadata =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert!(doc.token_endpoint().is_some(), "{path}");
    }

    // Every endpoint it names is served: bare requests get OAuth errors, never a 404.
    for url in [&token_endpoint, &device_endpoint] {
        let r = http
            .post(url.as_str())
            .form(&[("x", "y")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{url}: {body}");
    }
    let r = http
        .get(metadata.authorization_endpoint().as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "the authorization endpoint answers a bare request"
    );
    // ...with a page a person can read, not an API envelope.
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("names no client"), "{page}");
    let r = http.get(metadata.jwks_uri().as_str()).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The path and query of `url`, for the console `Browser`.
fn path_of(url: &openidconnect::url::Url) -> String {
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// `name` in the query of the redirect `location`.
fn returned(location: &str, name: &str) -> String {
    let target = openidconnect::url::Url::parse(location).unwrap();
    assert_eq!(
        target.origin().ascii_serialization(),
        "http://127.0.0.1:53682",
        "back to the registered loopback redirect"
    );
    target
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no {name} in {location}"))
}

/// The code the authorization endpoint sends the browser back with, after the person
/// signs in to the console; `state` as it came back.
async fn authorize_in_browser(
    browser: &mut Browser,
    url: &openidconnect::url::Url,
) -> (String, String) {
    let path = path_of(url);
    let first = browser.get(&path).await;
    assert_eq!(first.status, 303, "{}", first.body);
    assert!(
        first.location().starts_with("/console/sign-in?next="),
        "{}",
        first.location()
    );
    let signed_in = browser
        .sign_in_at(first.location(), ANALYST, PASSWORD)
        .await;
    let back = browser.get(&signed_in.next_location()).await;
    assert_eq!(back.status, 303, "{}", back.body);
    (
        returned(back.location(), "code"),
        returned(back.location(), "state"),
    )
}

/// The OAuth error code of a refused token request.
fn oauth_error<E: std::error::Error + 'static>(
    e: RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().as_ref().to_string(),
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

#[tokio::test]
async fn authorization_code_with_pkce_refresh_and_reuse_detection() {
    let server = analyst_server(|_| {}).await;
    let device = server.enroll("web-01.corp.local").await;
    let http = library_http();
    let client = CoreClient::from_provider_metadata(
        discover(&server).await,
        ClientId::new(CLI_CLIENT_ID.into()),
        None,
    )
    // A loopback redirect: any port matches for the built-in public client (RFC 8252).
    // (Nothing listens there: the test reads the redirect the browser is sent.)
    .set_redirect_uri(RedirectUrl::new("http://127.0.0.1:53682/callback".into()).unwrap());
    // A sign-in request as the library makes it: PKCE S256, state, nonce, the API's scopes.
    let sign_in_request = || {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in api_scopes() {
            request = request.add_scope(s);
        }
        let (url, csrf, nonce) = request.set_pkce_challenge(challenge).url();
        (url, csrf, nonce, verifier)
    };
    let (url, csrf, nonce, verifier) = sign_in_request();
    let mut browser = Browser::new(&server.url(""));
    let (code, state) = authorize_in_browser(&mut browser, &url).await;
    assert_eq!(&state, csrf.secret(), "state comes back unchanged");

    // A wrong verifier: refused, nothing issued, and the code is spent.
    let wrong = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(PkceCodeVerifier::new("x".repeat(43)))
        .request_async(&http)
        .await;
    assert_eq!(oauth_error(wrong.unwrap_err()), "invalid_grant");

    // A fresh sign-in (the console session stands), redeemed properly.
    drop(verifier);
    let (url, csrf, nonce2, verifier2) = sign_in_request();
    drop(nonce);
    // Signed in already: straight back with a code.
    let back = browser.get(&path_of(&url)).await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert_eq!(&returned(back.location(), "state"), csrf.secret());
    let code = returned(back.location(), "code");
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier2)
        .request_async(&http)
        .await
        .expect("the code and its verifier get tokens");
    // The ID token verifies with the published keys, for this client, with the nonce.
    let id_token = tokens.id_token().expect("an ID token for scope openid");
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce2)
        .expect("the ID token verifies");
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some(ANALYST)
    );
    // The access token is the API's.
    let api = server
        .anonymous()
        .with_token(tokens.access_token().secret());
    let machines = api.get("/api/machines").await;
    assert_eq!(machines.status, 200, "{}", machines.text);
    assert_eq!(machines.json()["value"][0]["id"], device.machine_id);

    // The code is one-time: a replay is refused and revokes what it issued.
    let replay = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(PkceCodeVerifier::new("y".repeat(43)))
        .request_async(&http)
        .await;
    assert_eq!(oauth_error(replay.unwrap_err()), "invalid_grant");
    let first_refresh = tokens.refresh_token().expect("offline_access").clone();
    let revoked = client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request_async(&http)
        .await;
    assert_eq!(oauth_error(revoked.unwrap_err()), "invalid_grant");

    // A new sign-in: refresh rotates; an old refresh token revokes the family.
    let (url, _, _, verifier3) = sign_in_request();
    let back = browser.get(&path_of(&url)).await;
    let code = returned(back.location(), "code");
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier3)
        .request_async(&http)
        .await
        .unwrap();
    let old: RefreshToken = tokens.refresh_token().unwrap().clone();
    let rotated = client
        .exchange_refresh_token(&old)
        .unwrap()
        .request_async(&http)
        .await
        .expect("a refresh token gets new tokens");
    let new = rotated.refresh_token().expect("rotated").clone();
    assert_ne!(new.secret(), old.secret());
    let api = server
        .anonymous()
        .with_token(rotated.access_token().secret());
    assert_eq!(api.get("/api/machines").await.status, 200);
    let reused = client
        .exchange_refresh_token(&old)
        .unwrap()
        .request_async(&http)
        .await;
    assert_eq!(oauth_error(reused.unwrap_err()), "invalid_grant");
    let after = client
        .exchange_refresh_token(&new)
        .unwrap()
        .request_async(&http)
        .await;
    assert_eq!(
        oauth_error(after.unwrap_err()),
        "invalid_grant",
        "the reuse revoked the whole family"
    );
}

#[tokio::test]
async fn device_code_approved_and_denied_in_the_console() {
    let server = analyst_server(|_| {}).await;
    let metadata = discover(&server).await;
    let device_url = metadata
        .additional_metadata()
        .device_authorization_endpoint
        .clone();
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(CLI_CLIENT_ID.into()), None)
            .set_device_authorization_url(device_url);
    let http = library_http();
    let start = || async {
        let mut request = client.exchange_device_code();
        for s in api_scopes() {
            request = request.add_scope(s);
        }
        let details: CoreDeviceAuthorizationResponse =
            request.request_async(&http).await.expect("a device code");
        details
    };
    let mut browser = Browser::new(&server.url(""));
    let signed_in = browser
        .sign_in_at(
            "/console/sign-in?next=%2Fconsole%2Fdevice",
            ANALYST,
            PASSWORD,
        )
        .await;
    assert_eq!(signed_in.next_location(), "/console/device");

    // Approved: the library's polling (interval, slow_down) ends with tokens.
    let details = start().await;
    assert!(details
        .verification_uri()
        .as_str()
        .ends_with("/console/device"));
    let approved = browser
        .decide_device_code(details.user_code().secret(), "approve")
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(&http, tokio::time::sleep, Some(Duration::from_secs(120)))
        .await
        .expect("tokens once approved");
    let api = server
        .anonymous()
        .with_token(tokens.access_token().secret());
    let machines = api.get("/api/machines").await;
    assert_eq!(machines.status, 200, "{}", machines.text);
    assert!(tokens.refresh_token().is_some());

    // The discovery's end-session endpoint signs the person out of the console, through
    // the console's own form (a POST with the CSRF token).
    let raw: serde_json::Value = http
        .get(server.url(&format!(
            "/{}/v2.0/.well-known/openid-configuration",
            server.tenant_id
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logout =
        openidconnect::url::Url::parse(raw["end_session_endpoint"].as_str().unwrap()).unwrap();
    let confirm = browser.get(logout.path()).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains("action=\"/console/sign-out\""),
        "{}",
        confirm.body
    );
    let csrf = confirm.hidden("csrf");

    // Denied: the library stops with access_denied, and nothing is issued.
    let details = start().await;
    browser
        .decide_device_code(details.user_code().secret(), "deny")
        .await;
    let denied = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(&http, tokio::time::sleep, Some(Duration::from_secs(120)))
        .await;
    match denied.unwrap_err() {
        RequestTokenError::ServerResponse(r) => {
            assert_eq!(r.error().as_ref(), "access_denied")
        }
        other => panic!("expected access_denied, got {other:?}"),
    }
    let out = browser
        .post("/console/sign-out", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert!(browser
        .get("/console/devices")
        .await
        .location()
        .starts_with("/console/sign-in"));
    assert!(browser
        .get(logout.path())
        .await
        .body
        .contains("not signed in"));
}
