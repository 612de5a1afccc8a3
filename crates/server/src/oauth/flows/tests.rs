//! The sign-in flows end to end through the router, with a console session made in
//! the store: authorization code + PKCE, refresh rotation and reuse, device code.

use std::time::Duration;

use appfence_core::records::ConsoleSession;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::CLI_CLIENT_ID;
use crate::oauth::secrets::sha256_hex;
use crate::test_support::{test_state, TestState, TENANT};

const ANA: &str = "ana@example.com";
const REDIRECT: &str = "http://127.0.0.1:49152/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more";

struct Setup {
    t: TestState,
    router: Router,
    cookie: String,
    oid: String,
}

async fn setup() -> Setup {
    let t = test_state().await;
    let state = t.state.clone();
    let user = crate::oauth::users::create_user(
        state.store.as_ref(),
        state.clock.as_ref(),
        TENANT,
        ANA,
        "correct horse battery",
        &["tier2".to_string()],
    )
    .await
    .unwrap();
    let secret = "s".repeat(43);
    let now = state.clock.now();
    state
        .store
        .insert_console_session(&ConsoleSession {
            id_sha256: sha256_hex(&secret),
            tenant_id: TENANT.into(),
            user_object_id: user.object_id.clone(),
            upn: user.upn.clone(),
            groups: user.groups.clone(),
            issuer: "local".into(),
            created: now,
            last_seen: now,
            expires: now.plus(Duration::from_secs(3600)),
        })
        .await
        .unwrap();
    let name = if state.public_url().starts_with("https://") {
        "__Host-appfence-session"
    } else {
        "appfence-session"
    };
    let router = crate::oauth::routes::routes()
        .merge(crate::console::routes())
        .with_state(state);
    Setup {
        t,
        router,
        cookie: format!("{name}={secret}"),
        oid: user.object_id,
    }
}

struct Answer {
    status: StatusCode,
    location: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn query(&self, name: &str) -> Option<String> {
        let q = self.location.split_once('?')?.1;
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        location,
        body: String::from_utf8_lossy(&body).into(),
    }
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_uri(extra: &[(&str, &str)]) -> String {
    let c = challenge(VERIFIER);
    let mut p = vec![
        ("client_id", CLI_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid offline_access"),
        ("state", "xyz"),
        ("code_challenge", c.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        p.retain(|(n, _)| n != k);
        if !v.is_empty() {
            p.push((k, v));
        }
    }
    format!(
        "/{TENANT}/oauth2/v2.0/authorize?{}",
        serde_urlencoded::to_string(&p).unwrap()
    )
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    b.body(Body::empty()).unwrap()
}

fn token(form: &[(&str, &str)]) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(format!("/{TENANT}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

async fn code(s: &Setup) -> String {
    let a = send(&s.router, get(&authorize_uri(&[]), Some(&s.cookie))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(a.location.starts_with(REDIRECT), "{}", a.location);
    assert_eq!(a.query("state").as_deref(), Some("xyz"));
    a.query("code").expect("a code")
}

async fn redeem(s: &Setup, code: &str, verifier: &str) -> Answer {
    send(
        &s.router,
        token(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLI_CLIENT_ID),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ]),
    )
    .await
}

async fn refresh(s: &Setup, refresh_token: &str) -> Answer {
    send(
        &s.router,
        token(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLI_CLIENT_ID),
            ("refresh_token", refresh_token),
        ]),
    )
    .await
}

#[tokio::test]
async fn without_a_session_the_browser_signs_in_first_and_comes_back() {
    let s = setup().await;
    let uri = authorize_uri(&[]);
    let a = send(&s.router, get(&uri, None)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let next = a.location.strip_prefix("/console/sign-in?next=").unwrap();
    let next: Vec<(String, String)> = serde_urlencoded::from_str(&format!("n={next}")).unwrap();
    assert_eq!(next[0].1, uri);
    assert_eq!(crate::console::safe_next_for_tests(&uri), uri);
    assert_eq!(
        crate::console::safe_next_for_tests("//evil.example/x/oauth2/v2.0/authorize?a"),
        "/console/devices"
    );
}

#[tokio::test]
async fn code_pkce_refresh_rotation_and_reuse() {
    let s = setup().await;
    let code = code(&s).await;
    let a = redeem(&s, &code, VERIFIER).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let j = a.json();
    assert_eq!(j["token_type"], "Bearer");
    assert!(j["access_token"].as_str().is_some());
    assert!(j["id_token"].as_str().is_some());
    let r1 = j["refresh_token"].as_str().unwrap().to_string();
    let token = j["access_token"].as_str().unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["oid"], s.oid.as_str());
    assert_eq!(claims["upn"], ANA);
    assert_eq!(claims["appid"], CLI_CLIENT_ID);

    // The code is one-time: a replay is refused and revokes what it issued.
    let replay = redeem(&s, &code, VERIFIER).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.json()["error"], "invalid_grant");
    let a = refresh(&s, &r1).await;
    assert_eq!(a.json()["error"], "invalid_grant", "{}", a.body);

    // A new sign-in: refresh rotates; the old token again revokes the family.
    let code = self::code(&s).await;
    let r1 = redeem(&s, &code, VERIFIER).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = refresh(&s, &r1).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let r2 = a.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    let reuse = refresh(&s, &r1).await;
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert!(reuse.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    let a = refresh(&s, &r2).await;
    assert_eq!(a.json()["error"], "invalid_grant", "the family is revoked");

    // A deleted (or replaced) user's refresh token gets nothing.
    let code = self::code(&s).await;
    let r = redeem(&s, &code, VERIFIER).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let grant =
        s.t.state
            .store
            .oauth_grant(&sha256_hex(&r))
            .await
            .unwrap()
            .unwrap();
    let mut forged = grant.clone();
    forged.id_sha256 = sha256_hex("another");
    forged.user_object_id = Some("someone-else".into());
    s.t.state.store.insert_oauth_grant(&forged).await.unwrap();
    let a = refresh(&s, "another").await;
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(a.json().get("access_token").is_none());
}

#[tokio::test]
async fn bad_code_redemptions_issue_nothing() {
    let s = setup().await;
    let code = code(&s).await;
    let other_verifier = "x".repeat(50);
    let cases: Vec<(Vec<(&str, &str)>, u16, &str)> = vec![
        (
            vec![("code_verifier", other_verifier.as_str())],
            400,
            "invalid_grant",
        ),
        (vec![("code_verifier", "")], 400, "invalid_request"),
        (
            vec![("redirect_uri", "http://127.0.0.1:1/other")],
            400,
            "invalid_grant",
        ),
        (
            vec![("client_id", "00000000-0000-0000-0000-000000000000")],
            401,
            "invalid_client",
        ),
        (vec![("client_secret", "a-secret")], 401, "invalid_client"),
        (vec![("code", "not-a-code")], 400, "invalid_grant"),
    ];
    for (changes, status, error) in cases {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", CLI_CLIENT_ID),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ];
        for (k, v) in &changes {
            form.retain(|(n, _)| n != k);
            form.push((k, v));
        }
        let a = send(&s.router, token(&form)).await;
        assert_eq!(
            (
                a.status.as_u16(),
                a.json()["error"].as_str().unwrap_or_default()
            ),
            (status, error),
            "{changes:?}: {}",
            a.body
        );
        assert!(a.json().get("access_token").is_none());
        assert!(!a.json()["error_description"].as_str().unwrap().is_empty());
    }
    // None of them used the code up; it expires after 60 s.
    s.t.clock.advance(Duration::from_secs(61));
    let a = redeem(&s, &code, VERIFIER).await;
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(a.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[tokio::test]
async fn authorize_errors() {
    let s = setup().await;
    // An unregistered redirect URI: a page, never a redirect.
    for bad in [
        "https://evil.example/callback",
        "http://127.0.0.1.evil.example/callback",
        "http://127.0.0.1:8080/other",
    ] {
        let a = send(
            &s.router,
            get(&authorize_uri(&[("redirect_uri", bad)]), Some(&s.cookie)),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(a.location.is_empty());
        assert!(a.body.contains("not registered"), "{}", a.body);
    }
    let a = send(
        &s.router,
        get(
            &authorize_uri(&[("client_id", "00000000-0000-0000-0000-000000000000")]),
            Some(&s.cookie),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.location.is_empty());
    // Other errors go back to the client with the state.
    for (change, error) in [
        (("code_challenge_method", "plain"), "invalid_request"),
        (("code_challenge", ""), "invalid_request"),
        (("response_type", "token"), "unsupported_response_type"),
        (
            ("scope", "https://graph.microsoft.com/.default"),
            "invalid_scope",
        ),
    ] {
        let a = send(&s.router, get(&authorize_uri(&[change]), Some(&s.cookie))).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{change:?}");
        assert!(a.location.starts_with(REDIRECT));
        assert_eq!(a.query("error").as_deref(), Some(error), "{change:?}");
        assert_eq!(a.query("state").as_deref(), Some("xyz"));
        assert!(a.query("code").is_none());
    }
    // Loopback redirect URIs match on any port.
    for ok in [
        "http://127.0.0.1:1/callback",
        "http://localhost:65535/callback",
        "http://[::1]:8080/callback",
    ] {
        let a = send(
            &s.router,
            get(&authorize_uri(&[("redirect_uri", ok)]), Some(&s.cookie)),
        )
        .await;
        assert!(a.query("code").is_some(), "{ok}: {}", a.location);
    }
}

#[tokio::test]
async fn device_code_flow() {
    let s = setup().await;
    let start = |form: &[(&str, &str)]| {
        Request::builder()
            .method("POST")
            .uri(format!("/{TENANT}/oauth2/v2.0/devicecode"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
            .unwrap()
    };
    let a = send(
        &s.router,
        start(&[("client_id", CLI_CLIENT_ID), ("scope", "offline_access")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let j = a.json();
    let device_code = j["device_code"].as_str().unwrap().to_string();
    let user_code = j["user_code"].as_str().unwrap().to_string();
    assert_eq!(user_code.len(), 9);
    assert!(j["verification_uri"]
        .as_str()
        .unwrap()
        .ends_with("/console/device"));
    assert_eq!(j["interval"], 5);
    assert_eq!(j["expires_in"], 900);
    let poll = || {
        token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", CLI_CLIENT_ID),
            ("device_code", &device_code),
        ])
    };
    assert_eq!(
        send(&s.router, poll()).await.json()["error"],
        "authorization_pending"
    );
    let slow = send(&s.router, poll()).await.json();
    assert_eq!(slow["error"], "slow_down");
    assert!(
        slow["error_description"]
            .as_str()
            .unwrap()
            .contains("at least 10 seconds"),
        "{slow}"
    );
    // RFC 8628 §3.5: the interval grew by 5 s for every later poll, so 5 s is too soon
    // now (and it grows again), and 15 s is enough.
    s.t.clock.advance(Duration::from_secs(5));
    let slow = send(&s.router, poll()).await.json();
    assert_eq!(slow["error"], "slow_down", "{slow}");
    assert!(
        slow["error_description"]
            .as_str()
            .unwrap()
            .contains("at least 15 seconds"),
        "{slow}"
    );
    s.t.clock.advance(Duration::from_secs(15));
    assert_eq!(
        send(&s.router, poll()).await.json()["error"],
        "authorization_pending"
    );

    // The console page: a wrong code, then the right one, approved.
    let page = send(&s.router, get("/console/device", Some(&s.cookie))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = {
        let m = "name=\"csrf\" value=\"";
        let at = page.body.find(m).unwrap() + m.len();
        page.body[at..at + 64].to_string()
    };
    let post = |form: Vec<(&str, &str)>| {
        Request::builder()
            .method("POST")
            .uri("/console/device")
            .header("cookie", &s.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
            .unwrap()
    };
    let a = send(
        &s.router,
        post(vec![("csrf", &csrf), ("user_code", "BBBB-BBBB")]),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = send(
        &s.router,
        post(vec![("csrf", "wrong"), ("user_code", &user_code)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let lower = user_code.to_lowercase();
    let a = send(
        &s.router,
        post(vec![("csrf", &csrf), ("user_code", &lower)]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("appfence CLI"), "{}", a.body);
    let a = send(
        &s.router,
        post(vec![
            ("csrf", &csrf),
            ("user_code", &user_code),
            ("decision", "approve"),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    s.t.clock.advance(Duration::from_secs(5));
    let a = send(&s.router, poll()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.json()["refresh_token"].as_str().is_some());
    // One-time.
    let a = send(&s.router, poll()).await;
    assert_eq!(a.json()["error"], "invalid_grant");

    // Denied, expired, unknown.
    let j = send(&s.router, start(&[("client_id", CLI_CLIENT_ID)]))
        .await
        .json();
    let (dc, uc) = (
        j["device_code"].as_str().unwrap().to_string(),
        j["user_code"].as_str().unwrap().to_string(),
    );
    send(
        &s.router,
        post(vec![
            ("csrf", &csrf),
            ("user_code", &uc),
            ("decision", "deny"),
        ]),
    )
    .await;
    let poll_dc = |dc: &str| {
        token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", CLI_CLIENT_ID),
            ("device_code", dc),
        ])
    };
    assert_eq!(
        send(&s.router, poll_dc(&dc)).await.json()["error"],
        "access_denied"
    );
    let j = send(&s.router, start(&[("client_id", CLI_CLIENT_ID)]))
        .await
        .json();
    let dc = j["device_code"].as_str().unwrap().to_string();
    s.t.clock.advance(Duration::from_secs(901));
    assert_eq!(
        send(&s.router, poll_dc(&dc)).await.json()["error"],
        "expired_token"
    );
    assert_eq!(
        send(&s.router, poll_dc("unknown")).await.json()["error"],
        "invalid_grant"
    );
    // A confidential client cannot start one; a public client presents no secret.
    let a = send(
        &s.router,
        start(&[("client_id", CLI_CLIENT_ID), ("client_secret", "x")]),
    )
    .await;
    assert_eq!(a.json()["error"], "invalid_client");
}
