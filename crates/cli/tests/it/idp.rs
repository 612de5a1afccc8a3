//! A stand-in OpenID Connect provider (Keycloak- or Entra-like) served by the test on
//! loopback: a discovery document and a JWKS built from the test-only keys in
//! crates/server/src/oauth/external/testdata, and tokens signed with them.
//!
//! For the console's sign-in it also serves an authorization endpoint that approves at
//! once (after checking the request as a real provider would) and a token endpoint that
//! redeems each code once, checking the PKCE verifier and the client's secret.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The audience tokens of the test IdP are issued for.
pub const AUDIENCE: &str = "api://appfence";

const TESTDATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../server/src/oauth/external/testdata"
);

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The DER inside a PEM file (jsonwebtoken is built without its PEM parser).
fn pem_body(name: &str) -> Vec<u8> {
    let text = String::from_utf8(testdata(name)).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Test keys by kid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKey {
    RsaA,
    RsaB,
    Ec,
    Ed,
}

impl TestKey {
    pub fn kid(self) -> &'static str {
        match self {
            TestKey::RsaA => "rsa-a",
            TestKey::RsaB => "rsa-b",
            TestKey::Ec => "ec-p256",
            TestKey::Ed => "ed25519",
        }
    }

    fn encoding_key(self) -> (Algorithm, EncodingKey) {
        match self {
            TestKey::RsaA => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&pem_body("rsa-a.pem")),
            ),
            TestKey::RsaB => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&pem_body("rsa-b.pem")),
            ),
            TestKey::Ec => (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&pem_body("ec-p256.pem")),
            ),
            TestKey::Ed => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(&pem_body("ed25519.pem")),
            ),
        }
    }
}

/// The JWKS of the given keys, from the committed test JWKS.
pub fn jwks_of(keys: &[TestKey]) -> Value {
    let all: Value = serde_json::from_slice(&testdata("jwks.json")).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| keys.iter().any(|t| k["kid"] == t.kid()))
        .cloned()
        .collect();
    json!({ "keys": keys })
}

pub struct Idp {
    /// The `iss` of its tokens, e.g. `http://127.0.0.1:PORT/realms/corp`.
    pub issuer: String,
    /// How many times the JWKS was fetched.
    pub jwks_fetches: Arc<AtomicUsize>,
    /// What the JWKS endpoint serves; tests rotate keys by replacing it.
    pub published: Arc<Mutex<Value>>,
    /// The console's sign-ins: who signs in, and how the provider misbehaves.
    pub console: Arc<Mutex<ConsoleSignIn>>,
    task: tokio::task::JoinHandle<()>,
}

/// The console's client at the test provider.
pub const CONSOLE_CLIENT: &str = "appfence-console";
pub const CONSOLE_SECRET: &str = "console client secret: not a real one";

/// How the provider's authorization and token endpoints behave.
pub struct ConsoleSignIn {
    /// Who the provider signs in.
    pub upn: String,
    pub groups: Vec<String>,
    /// The client's secret it demands (HTTP Basic); `None`: a public client.
    pub secret: Option<String>,
    /// Answer the authorization request with `(error, description)` instead of a code.
    pub error: Option<(String, String)>,
    /// Put this nonce in the ID token instead of the request's.
    pub nonce: Option<String>,
    /// The token endpoint's refusals, as `error: description`.
    pub refusals: Vec<String>,
    /// Codes redeemed.
    pub redeemed: usize,
    grants: HashMap<String, Grant>,
}

/// What an authorization request asked for, kept with its code.
struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: String,
    used: bool,
}

impl Default for ConsoleSignIn {
    fn default() -> Self {
        ConsoleSignIn {
            upn: "erin@idp.test".into(),
            groups: vec!["g-analysts".into()],
            secret: Some(CONSOLE_SECRET.into()),
            error: None,
            nonce: None,
            refusals: Vec::new(),
            redeemed: 0,
            grants: HashMap::new(),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn bad_request(what: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("test IdP: {what}")).into_response()
}

/// The authorization endpoint: checks the request, then sends the browser back at once
/// with a one-time code (or the configured error).
fn authorize(console: &Mutex<ConsoleSignIn>, q: &HashMap<String, String>) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if get("client_id") != CONSOLE_CLIENT {
        return bad_request("unknown client_id");
    }
    if get("response_type") != "code" {
        return bad_request("response_type must be code");
    }
    let redirect_uri = get("redirect_uri");
    if !redirect_uri.starts_with("http://127.0.0.1:")
        || !redirect_uri.ends_with("/console/sign-in/callback")
    {
        return bad_request("redirect_uri is not registered");
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        return bad_request("PKCE with S256 is required");
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return bad_request("scope must include openid");
    }
    if get("state").is_empty() || get("nonce").is_empty() {
        return bad_request("state and nonce are required");
    }
    let mut c = console.lock().unwrap();
    let mut back = reqwest::Url::parse(redirect_uri).unwrap();
    if let Some((error, description)) = &c.error {
        back.query_pairs_mut()
            .append_pair("error", error)
            .append_pair("error_description", description)
            .append_pair("state", get("state"));
    } else {
        let code = uuid::Uuid::new_v4().to_string();
        c.grants.insert(
            code.clone(),
            Grant {
                redirect_uri: redirect_uri.to_string(),
                challenge: get("code_challenge").to_string(),
                nonce: get("nonce").to_string(),
                used: false,
            },
        );
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", get("state"));
    }
    Redirect::to(back.as_str()).into_response()
}

/// The token endpoint: redeems a code once, for the client that asked for it, with the
/// verifier of its challenge; answers an ID token signed with `rsa-a`.
fn redeem(
    issuer: &str,
    console: &Mutex<ConsoleSignIn>,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Response {
    let mut c = console.lock().unwrap();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    fn refuse(c: &mut ConsoleSignIn, status: StatusCode, error: &str, why: &str) -> Response {
        c.refusals.push(format!("{error}: {why}"));
        (
            status,
            Json(json!({ "error": error, "error_description": why })),
        )
            .into_response()
    }
    if get("grant_type") != "authorization_code" {
        return refuse(
            &mut c,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "",
        );
    }
    if let Some(secret) = c.secret.clone() {
        let basic = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        // RFC 6749 §2.3.1: form-urlencoded before Basic.
        let mut encoded = reqwest::Url::parse("http://x/").unwrap();
        encoded.query_pairs_mut().append_pair("s", &secret);
        let expected = format!("{CONSOLE_CLIENT}:{}", &encoded.query().unwrap()[2..]);
        if basic.as_deref() != Some(expected.as_str()) || form.contains_key("client_secret") {
            return refuse(
                &mut c,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
    }
    if get("client_id") != CONSOLE_CLIENT {
        return refuse(
            &mut c,
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "unknown client",
        );
    }
    let Some(grant) = c.grants.get_mut(get("code")) else {
        return refuse(
            &mut c,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Code not valid",
        );
    };
    let used = std::mem::replace(&mut grant.used, true);
    let (redirect_uri, challenge, nonce) = (
        grant.redirect_uri.clone(),
        grant.challenge.clone(),
        grant.nonce.clone(),
    );
    if used {
        return refuse(
            &mut c,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Code already used",
        );
    }
    if get("redirect_uri") != redirect_uri {
        return refuse(
            &mut c,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Incorrect redirect_uri",
        );
    }
    use sha2::Digest;
    let computed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if computed != challenge {
        return refuse(
            &mut c,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    c.redeemed += 1;
    let now = unix_now();
    let id_token = sign(
        TestKey::RsaA,
        &json!({
            "iss": issuer, "aud": CONSOLE_CLIENT, "azp": CONSOLE_CLIENT, "iat": now,
            "exp": now + 300, "sub": format!("sub-{}", c.upn), "oid": format!("oid-{}", c.upn),
            "preferred_username": c.upn, "groups": c.groups,
            "nonce": c.nonce.clone().unwrap_or(nonce),
        }),
    );
    Json(json!({
        "access_token": "opaque", "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

impl Idp {
    /// Serves discovery and a JWKS holding `keys` on 127.0.0.1:0.
    pub async fn start(keys: &[TestKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = format!("{base}/realms/corp");
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(Mutex::new(jwks_of(keys)));
        let console = Arc::new(Mutex::new(ConsoleSignIn::default()));
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
            "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
            "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        });
        let (fetches, served) = (jwks_fetches.clone(), published.clone());
        let (at_auth, at_token, iss) = (console.clone(), console.clone(), issuer.clone());
        let app = Router::new()
            .route(
                "/realms/corp/protocol/openid-connect/auth",
                get(move |Query(q): Query<HashMap<String, String>>| async move {
                    authorize(&at_auth, &q)
                }),
            )
            .route(
                "/realms/corp/protocol/openid-connect/token",
                post(
                    move |headers: HeaderMap, Form(f): Form<HashMap<String, String>>| async move {
                        redeem(&iss, &at_token, &headers, &f)
                    },
                ),
            )
            .route(
                "/realms/corp/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/realms/corp/protocol/openid-connect/certs",
                get(move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let jwks = served.lock().unwrap().clone();
                    Json(jwks)
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Idp {
            issuer,
            jwks_fetches,
            published,
            console,
            task,
        }
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a valid application token (client credentials), valid an hour
    /// around `now` (Unix seconds).
    pub fn app_claims(&self, now: i64, roles: &[&str]) -> Value {
        json!({
            "iss": self.issuer, "aud": AUDIENCE, "iat": now, "nbf": now - 60, "exp": now + 3600,
            "azp": "kc-soar", "app_displayname": "Keycloak SOAR", "roles": roles,
        })
    }

    /// The claims of a valid user token with delegated scopes and groups.
    pub fn user_claims(&self, now: i64, upn: &str, scopes: &str, groups: &[&str]) -> Value {
        json!({
            "iss": self.issuer, "aud": [AUDIENCE, "account"], "iat": now, "nbf": now - 60,
            "exp": now + 3600, "azp": "kc-portal", "scp": scopes,
            "oid": format!("oid-{upn}"), "preferred_username": upn, "groups": groups,
        })
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Signs `claims` with `key` under its own kid.
pub fn sign(key: TestKey, claims: &Value) -> String {
    sign_as(key, key.kid(), claims)
}

/// Signs `claims` with `key` but names `kid` in the header.
pub fn sign_as(key: TestKey, kid: &str, claims: &Value) -> String {
    let (alg, encoding) = key.encoding_key();
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A token with any header and an arbitrary signature.
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Replaces the payload of a signed token, keeping its header and signature.
pub fn tamper(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// The RSA public key of `rsa-a` as the PEM bytes an attacker would HMAC with.
pub fn rsa_a_public_modulus() -> Vec<u8> {
    let jwks = jwks_of(&[TestKey::RsaA]);
    URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["n"].as_str().unwrap())
        .unwrap()
}
