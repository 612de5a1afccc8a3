//! External issuers against a JWKS and discovery document served by the test itself
//! on 127.0.0.1, with the committed test keys (testdata/) and an exact clock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use appfence_core::authz::Caller;
use appfence_core::ManualClock;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const T0: i64 = 1_700_000_000;
const TENANT: &str = "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69";
const AUDIENCE: &str = "api://appfence";

const RSA_A: &str = include_str!("testdata/rsa-a.pem");
const RSA_B: &str = include_str!("testdata/rsa-b.pem");
const EC_P256: &str = include_str!("testdata/ec-p256.pem");
const ED25519: &str = include_str!("testdata/ed25519.pem");
const JWKS: &str = include_str!("testdata/jwks.json");

/// The DER body of a PEM file.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

fn rsa_a() -> Signer {
    Signer {
        kid: "rsa-a",
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_der(&der(RSA_A)),
    }
}

fn rsa_b() -> Signer {
    Signer {
        kid: "rsa-b",
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_der(&der(RSA_B)),
    }
}

fn ec() -> Signer {
    Signer {
        kid: "ec-p256",
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(&der(EC_P256)),
    }
}

fn ed() -> Signer {
    Signer {
        kid: "ed25519",
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&der(ED25519)),
    }
}

/// The committed public keys with these kids.
fn jwks(kids: &[&str]) -> Value {
    let all: Value = serde_json::from_str(JWKS).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    assert_eq!(keys.len(), kids.len());
    json!({ "keys": keys })
}

fn sign(signer: &Signer, claims: &Value) -> String {
    sign_with_kid(signer, Some(signer.kid), claims)
}

fn sign_with_kid(signer: &Signer, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(signer.alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap()
}

/// A token with any header and a given signature.
fn forged(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// An identity provider on 127.0.0.1 that counts the requests for its documents.
#[derive(Clone)]
struct Idp {
    base: String,
    jwks: Arc<Mutex<Value>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
    /// Answer the JWKS with 500 while set.
    failing: Arc<AtomicBool>,
    /// Milliseconds to wait before answering the JWKS.
    delay_ms: Arc<AtomicU64>,
}

impl Idp {
    async fn start(keys: Value) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = Idp {
            base: format!("http://{}", listener.local_addr().unwrap()),
            jwks: Arc::new(Mutex::new(keys)),
            jwks_hits: Arc::default(),
            discovery_hits: Arc::default(),
            failing: Arc::default(),
            delay_ms: Arc::default(),
        };
        let app = Router::new()
            .route("/keys", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .route(
                "/liar/.well-known/openid-configuration",
                get(lying_discovery),
            )
            .route(
                "/insecure/.well-known/openid-configuration",
                get(insecure_discovery),
            )
            .route(
                "/status500",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .route("/not-json", get(|| async { "hello" }))
            .route(
                "/huge",
                get(|| async { format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(2 << 20)) }),
            )
            .with_state(idp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        idp
    }

    fn set_keys(&self, keys: Value) {
        *self.jwks.lock().unwrap() = keys;
    }

    fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    fn config(&self) -> IssuerConfig {
        IssuerConfig {
            issuer: self.base.clone(),
            audiences: vec![AUDIENCE.into()],
            jwks_uri: Some(format!("{}/keys", self.base)),
            tenant_id: TENANT.into(),
            console: None,
        }
    }
}

async fn serve_jwks(State(idp): State<Idp>) -> Response {
    idp.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let delay = idp.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if idp.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let keys = idp.jwks.lock().unwrap().clone();
    Json(keys).into_response()
}

async fn discovery(State(idp): State<Idp>) -> Json<Value> {
    idp.discovery_hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({"issuer": idp.base, "jwks_uri": format!("{}/keys", idp.base)}))
}

async fn lying_discovery(State(idp): State<Idp>) -> Json<Value> {
    Json(
        json!({"issuer": "https://someone-else.example", "jwks_uri": format!("{}/keys", idp.base)}),
    )
}

async fn insecure_discovery(State(idp): State<Idp>) -> Json<Value> {
    Json(json!({"issuer": format!("{}/insecure", idp.base), "jwks_uri": "http://idp.example/keys"}))
}

struct Fixture {
    idp: Idp,
    issuers: ExternalIssuers,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new(kids: &[&str]) -> Fixture {
        let idp = Idp::start(jwks(kids)).await;
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(T0)));
        let issuers = ExternalIssuers::new(reqwest::Client::new(), clock.clone());
        issuers.configure(vec![idp.config()]);
        Fixture {
            idp,
            issuers,
            clock,
        }
    }

    fn iss(&self) -> &str {
        &self.idp.base
    }

    async fn verify(&self, token: &str) -> Result<VerifiedToken, Error> {
        self.issuers.verify(token, self.iss()).await
    }

    async fn refused(&self, token: &str) -> String {
        message(self.verify(token).await)
    }

    fn app_claims(&self) -> Value {
        json!({
            "iss": self.iss(), "aud": AUDIENCE, "iat": T0 - 10, "nbf": T0 - 10, "exp": T0 + 3600,
            "tid": "the-idp-s-own-tenant", "appid": "client-1", "app_displayname": "SOAR",
            "roles": ["Machine.Read.All"]
        })
    }

    fn user_claims(&self) -> Value {
        json!({
            "iss": self.iss(), "aud": ["https://graph.example", AUDIENCE], "exp": T0 + 3600,
            "scp": "Machine.Read Machine.RestrictExecution", "oid": "oid-1",
            "preferred_username": "ana@example.com", "groups": ["g-tier2"]
        })
    }
}

fn message<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Unauthorized(m)) => m,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn an_rs256_application_token_acts_on_the_configured_tenant() {
    let f = Fixture::new(&["rsa-a"]).await;
    let verified = f.verify(&sign(&rsa_a(), &f.app_claims())).await.unwrap();
    let p = verified.principal;
    assert_eq!(
        p.tenant_id, TENANT,
        "the tenant comes from the config, not tid"
    );
    assert_eq!(
        p.caller,
        Caller::Application {
            client_id: "client-1".into(),
            display_name: "SOAR".into()
        }
    );
    assert_eq!(p.roles, ["Machine.Read.All"]);
    assert_eq!(p.requestor(), "SOAR");
    assert_eq!(
        verified.expires,
        Timestamp::from_unix_seconds(T0 + 3600).ticks()
    );
    assert_eq!(
        verified.not_before,
        Some(Timestamp::from_unix_seconds(T0 - 10).ticks())
    );
    assert!(f.issuers.knows(f.iss()));
    assert!(!f.issuers.knows(&format!("{}/", f.iss())));
    assert_eq!(f.idp.hits(), 1);
}

#[tokio::test]
async fn es256_user_and_eddsa_tokens_are_accepted() {
    let f = Fixture::new(&["ec-p256", "ed25519"]).await;
    let p = f
        .verify(&sign(&ec(), &f.user_claims()))
        .await
        .unwrap()
        .principal;
    assert_eq!(
        p.caller,
        Caller::User {
            object_id: "oid-1".into(),
            upn: "ana@example.com".into()
        }
    );
    assert_eq!(p.scopes, ["Machine.Read", "Machine.RestrictExecution"]);
    assert_eq!(p.groups, ["g-tier2"]);
    assert_eq!(p.tenant_id, TENANT);

    let p = f
        .verify(&sign(&ed(), &f.app_claims()))
        .await
        .unwrap()
        .principal;
    assert_eq!(p.caller_key(), "app:client-1");
    assert_eq!(f.idp.hits(), 1, "both keys came with the first fetch");
}

#[tokio::test]
async fn only_allow_listed_algorithms_are_accepted() {
    let f = Fixture::new(&["rsa-a"]).await;
    let claims = f.app_claims();
    let unsigned = forged(
        json!({"alg": "none", "typ": "JWT", "kid": "rsa-a"}),
        &claims,
        b"",
    );
    assert_eq!(
        f.refused(&unsigned).await,
        "The token's algorithm 'none' is not accepted; accepted: RS256, ES256, EdDSA"
    );
    let no_alg = forged(json!({"kid": "rsa-a"}), &claims, b"");
    assert_eq!(
        f.refused(&no_alg).await,
        "The token's header has no algorithm (alg)"
    );
    let ps256 = forged(json!({"alg": "PS256", "kid": "rsa-a"}), &claims, &[7; 256]);
    assert!(f.refused(&ps256).await.contains("'PS256' is not accepted"));

    // Key confusion: HMAC keyed with the issuer's public key (its modulus, and its
    // JWK text), which the attacker knows.
    let modulus = URL_SAFE_NO_PAD
        .decode(jwks(&["rsa-a"])["keys"][0]["n"].as_str().unwrap())
        .unwrap();
    let jwk_text = jwks(&["rsa-a"])["keys"][0].to_string().into_bytes();
    for (alg, name) in [
        (Algorithm::HS256, "HS256"),
        (Algorithm::HS384, "HS384"),
        (Algorithm::HS512, "HS512"),
    ] {
        for secret in [&modulus, &jwk_text] {
            let hmac = Signer {
                kid: "rsa-a",
                alg,
                key: EncodingKey::from_secret(secret),
            };
            assert_eq!(
                f.refused(&sign(&hmac, &claims)).await,
                format!(
                    "The token's algorithm '{name}' is not accepted; accepted: RS256, ES256, EdDSA"
                )
            );
        }
    }
    assert_eq!(f.idp.hits(), 0, "refused before any key was fetched");

    // An allowed algorithm with a key of another type.
    let es_on_rsa = sign_with_kid(&ec(), Some("rsa-a"), &claims);
    assert_eq!(
        f.refused(&es_on_rsa).await,
        "The token's signing key 'rsa-a' cannot verify ES256: it verifies RS256"
    );
}

#[tokio::test]
async fn tampered_or_foreign_signatures_are_refused() {
    let f = Fixture::new(&["rsa-a", "ec-p256"]).await;
    let token = sign(&rsa_a(), &f.app_claims());
    let mut more_roles = f.app_claims();
    more_roles["roles"] = json!(["Machine.Read.All", "Machine.RestrictExecution"]);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(more_roles.to_string()),
        parts[2]
    );
    assert_eq!(
        f.refused(&tampered).await,
        "The token's signature is invalid"
    );
    // Signed by another key that claims rsa-a's kid.
    let impostor = sign_with_kid(&rsa_b(), Some("rsa-a"), &f.app_claims());
    assert_eq!(
        f.refused(&impostor).await,
        "The token's signature is invalid"
    );
    // An ES256 signature that is not one.
    let ec_token = sign(&ec(), &f.app_claims());
    let (signed, _) = ec_token.rsplit_once('.').unwrap();
    let garbage = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([1u8; 64]));
    assert_eq!(
        f.refused(&garbage).await,
        "The token's signature is invalid"
    );
    for junk in ["", "a.b", "a.b.c", "é.é.é"] {
        assert!(f.refused(junk).await.contains("well-formed"), "{junk}");
    }
    assert_eq!(
        f.refused(&"a".repeat(MAX_TOKEN_BYTES + 1)).await,
        "The token is too large"
    );
}

#[tokio::test]
async fn time_audience_and_issuer_are_checked() {
    let f = Fixture::new(&["rsa-a"]).await;
    let signer = rsa_a();
    let token = sign(&signer, &f.app_claims());
    // The injected clock decides, without leeway.
    f.clock.set(Timestamp::from_unix_seconds(T0 + 3600));
    assert_eq!(f.refused(&token).await, "The token has expired");
    f.clock.set(Timestamp::from_unix_seconds(T0 - 11));
    assert_eq!(f.refused(&token).await, "The token is not valid yet (nbf)");
    f.clock.set(Timestamp::from_unix_seconds(T0));

    let mut no_exp = f.app_claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        f.refused(&sign(&signer, &no_exp)).await,
        "The token has no expiry (exp)"
    );

    let mut other_audience = f.app_claims();
    other_audience["aud"] = json!(["api://other", "https://graph.example"]);
    assert_eq!(
        f.refused(&sign(&signer, &other_audience)).await,
        "The token's audience 'api://other https://graph.example' is not accepted"
    );
    let mut with_slash = f.app_claims();
    with_slash["aud"] = json!(format!("{AUDIENCE}/"));
    assert!(f.verify(&sign(&signer, &with_slash)).await.is_ok());

    // Signed with the issuer's key, but claiming another issuer.
    let mut other_issuer = f.app_claims();
    other_issuer["iss"] = json!("https://evil.example");
    let token = sign(&signer, &other_issuer);
    assert_eq!(
        f.refused(&token).await,
        "The token's issuer 'https://evil.example' is not accepted"
    );
    assert!(!f.issuers.knows("https://evil.example"));
    assert_eq!(
        message(f.issuers.verify(&token, "https://evil.example").await),
        "The token's issuer 'https://evil.example' is not accepted"
    );
    let mut trailing_slash = f.app_claims();
    trailing_slash["iss"] = json!(format!("{}/", f.iss()));
    assert!(f
        .refused(&sign(&signer, &trailing_slash))
        .await
        .contains("issuer"));
    // A user token still needs its user claims.
    let mut no_oid = f.user_claims();
    no_oid.as_object_mut().unwrap().remove("oid");
    assert_eq!(
        f.refused(&sign(&signer, &no_oid)).await,
        "The user token has no object id (oid)"
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_a_minute() {
    let f = Fixture::new(&["rsa-a"]).await;
    assert!(f.verify(&sign(&rsa_a(), &f.app_claims())).await.is_ok());
    assert_eq!(f.idp.hits(), 1);

    let unknown = sign(&rsa_b(), &f.app_claims());
    assert_eq!(
        f.refused(&unknown).await,
        format!(
            "The token's signing key 'rsa-b' is not published by issuer '{}'",
            f.iss()
        )
    );
    assert_eq!(f.idp.hits(), 2, "an unknown kid refetches");

    let made_up = sign_with_kid(&rsa_b(), Some("made-up"), &f.app_claims());
    assert!(f
        .refused(&made_up)
        .await
        .contains("'made-up' is not published"));
    assert!(f.refused(&unknown).await.contains("not published"));
    assert_eq!(f.idp.hits(), 2, "no second refetch within the minute");
    // Known keys keep working meanwhile, without fetching.
    assert!(f.verify(&sign(&rsa_a(), &f.app_claims())).await.is_ok());

    f.clock.advance(Duration::from_secs(59));
    assert!(f.refused(&made_up).await.contains("not published"));
    assert_eq!(f.idp.hits(), 2);
    f.clock.advance(Duration::from_secs(2));
    assert!(f.refused(&made_up).await.contains("not published"));
    assert_eq!(f.idp.hits(), 3, "a minute later it refetches again");
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_withdrawn_keys_expire_within_a_day() {
    let f = Fixture::new(&["rsa-a"]).await;
    let mut long_lived = f.app_claims();
    long_lived["exp"] = json!(T0 + 3 * 86_400);
    let old = sign(&rsa_a(), &long_lived);
    let new = sign(&rsa_b(), &long_lived);
    assert!(f.verify(&old).await.is_ok());

    // The issuer rotates: the new key is published next to the old one.
    f.idp.set_keys(jwks(&["rsa-a", "rsa-b"]));
    assert!(f.verify(&new).await.is_ok());
    assert_eq!(f.idp.hits(), 2);

    // Then withdraws the old key: it still verifies until the keys are a day old...
    f.idp.set_keys(jwks(&["rsa-b"]));
    assert!(f.verify(&old).await.is_ok());
    assert_eq!(f.idp.hits(), 2);
    // ...and not after.
    f.clock.advance(MAX_KEY_AGE);
    assert!(f.refused(&old).await.contains("'rsa-a' is not published"));
    assert_eq!(f.idp.hits(), 3);
    assert!(f.verify(&new).await.is_ok());
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_keys_fetched_before() {
    let f = Fixture::new(&["rsa-a"]).await;
    let mut long_lived = f.app_claims();
    long_lived["exp"] = json!(T0 + 3 * 86_400);
    let token = sign(&rsa_a(), &long_lived);
    assert!(f.verify(&token).await.is_ok());

    f.idp.failing.store(true, Ordering::SeqCst);
    f.clock.advance(MAX_KEY_AGE);
    assert!(f.verify(&token).await.is_ok(), "old keys serve on");
    assert_eq!(f.idp.hits(), 2, "the refresh was tried");
    f.clock.advance(REFETCH_INTERVAL);
    let unknown = sign(&rsa_b(), &long_lived);
    assert_eq!(
        f.refused(&unknown).await,
        format!(
            "The signing keys of issuer '{0}' could not be fetched: {0}/keys answered HTTP 500",
            f.iss()
        )
    );
    assert_eq!(f.idp.hits(), 3);
    assert!(f.verify(&token).await.is_ok());
}

#[tokio::test]
async fn an_unreachable_or_broken_key_endpoint_refuses_with_the_reason() {
    let f = Fixture::new(&["rsa-a"]).await;
    // A port nobody listens on: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let token = sign(&rsa_a(), &f.app_claims());
    for (jwks_uri, reason) in [
        (
            format!("http://{closed}/keys"),
            "could not be reached".to_string(),
        ),
        (format!("{}/status500", f.iss()), "answered HTTP 500".into()),
        (
            format!("{}/not-json", f.iss()),
            "did not return the expected JSON".into(),
        ),
        (
            format!("{}/huge", f.iss()),
            format!("returned more than {MAX_DOCUMENT_BYTES} bytes"),
        ),
    ] {
        f.issuers.configure(vec![IssuerConfig {
            jwks_uri: Some(jwks_uri.clone()),
            ..f.idp.config()
        }]);
        let m = f.refused(&token).await;
        assert!(
            m.starts_with(&format!(
                "The signing keys of issuer '{}' could not be fetched: {jwks_uri} ",
                f.iss()
            )) && m.contains(&reason),
            "{m}"
        );
    }
    // An empty key set fetches fine and simply does not know the key.
    f.idp.set_keys(json!({"keys": []}));
    f.issuers.configure(vec![f.idp.config()]);
    assert!(f.refused(&token).await.contains("'rsa-a' is not published"));
}

#[tokio::test]
async fn without_jwks_uri_the_discovery_document_names_it() {
    let f = Fixture::new(&["rsa-a"]).await;
    let discovered = IssuerConfig {
        jwks_uri: None,
        ..f.idp.config()
    };
    f.issuers.configure(vec![discovered]);
    assert!(f.verify(&sign(&rsa_a(), &f.app_claims())).await.is_ok());
    assert_eq!(f.idp.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(f.idp.hits(), 1);

    // A discovery document for another issuer, or pointing at plain http, is refused.
    for (path, reason) in [
        (
            "liar",
            "names issuer 'https://someone-else.example'".to_string(),
        ),
        (
            "insecure",
            "jwks_uri 'http://idp.example/keys' must use https".into(),
        ),
    ] {
        let issuer = format!("{}/{path}", f.iss());
        f.issuers.configure(vec![IssuerConfig {
            issuer: issuer.clone(),
            jwks_uri: None,
            ..f.idp.config()
        }]);
        let mut claims = f.app_claims();
        claims["iss"] = json!(issuer);
        let m = message(f.issuers.verify(&sign(&rsa_a(), &claims), &issuer).await);
        assert!(
            m.starts_with(&format!(
                "The signing keys of issuer '{issuer}' could not be fetched: "
            )) && m.contains(&reason),
            "{m}"
        );
    }
    assert_eq!(f.idp.hits(), 1, "no keys fetched from a refused discovery");
}

#[tokio::test]
async fn reconfiguring_keeps_the_keys_of_unchanged_issuers_only() {
    let f = Fixture::new(&["rsa-a"]).await;
    let token = sign(&rsa_a(), &f.app_claims());
    assert!(f.verify(&token).await.is_ok());
    assert_eq!(f.idp.hits(), 1);

    // Same issuer and jwks_uri, other audience and tenant: cached keys kept.
    f.issuers.configure(vec![IssuerConfig {
        audiences: vec!["api://renamed".into()],
        tenant_id: "another-tenant".into(),
        ..f.idp.config()
    }]);
    assert!(f.refused(&token).await.contains("audience"));
    let mut renamed = f.app_claims();
    renamed["aud"] = json!("api://renamed");
    let p = f.verify(&sign(&rsa_a(), &renamed)).await.unwrap().principal;
    assert_eq!(p.tenant_id, "another-tenant");
    assert_eq!(f.idp.hits(), 1);

    // Another jwks_uri (here: the same document through discovery): keys dropped.
    f.issuers.configure(vec![IssuerConfig {
        jwks_uri: None,
        ..f.idp.config()
    }]);
    assert!(f.verify(&token).await.is_ok());
    assert_eq!(f.idp.hits(), 2);

    // Removed: unknown, and its tokens are refused without any fetch.
    f.issuers.configure(vec![]);
    assert!(!f.issuers.knows(f.iss()));
    assert_eq!(
        f.refused(&token).await,
        format!("The token's issuer '{}' is not accepted", f.iss())
    );
    assert_eq!(f.idp.hits(), 2);
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let f = Fixture::new(&["rsa-a"]).await;
    f.idp.delay_ms.store(100, Ordering::SeqCst);
    let token = sign(&rsa_a(), &f.app_claims());
    let results = futures::future::join_all((0..20).map(|_| f.verify(&token))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(f.idp.hits(), 1, "the first use fetches once");

    let unknown = sign(&rsa_b(), &f.app_claims());
    let results = futures::future::join_all((0..20).map(|_| f.verify(&unknown))).await;
    assert!(results.iter().all(|r| r.is_err()));
    assert_eq!(f.idp.hits(), 2, "twenty unknown kids, one refetch");
}

#[tokio::test]
async fn a_token_without_kid_needs_exactly_one_fitting_key() {
    let f = Fixture::new(&["rsa-a", "ec-p256"]).await;
    let no_kid = sign_with_kid(&rsa_a(), None, &f.app_claims());
    assert!(f.verify(&no_kid).await.is_ok());

    f.idp.set_keys(jwks(&["rsa-a", "rsa-b"]));
    f.issuers.configure(vec![IssuerConfig {
        jwks_uri: None,
        ..f.idp.config()
    }]);
    assert_eq!(
        f.refused(&no_kid).await,
        "The token's header has no key id (kid) and its issuer publishes several RS256 keys"
    );
    let ed_no_kid = sign_with_kid(&ed(), None, &f.app_claims());
    assert_eq!(
        f.refused(&ed_no_kid).await,
        format!(
            "The token's header has no key id (kid) and issuer '{}' publishes no EdDSA key",
            f.iss()
        )
    );
}

#[test]
fn verification_can_run_in_axum_handlers() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn sendable<T: Send>(_: T) {}
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(T0)));
    let issuers = ExternalIssuers::new(reqwest::Client::new(), clock);
    shared(&issuers);
    sendable(issuers.verify("a.b.c", "https://idp.example"));
}
