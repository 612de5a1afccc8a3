//! The flows against a stand-in token endpoint that answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;

#[derive(Default)]
struct Script {
    /// What the token endpoint answers, in order: an OAuth error code, or `ok`.
    answers: VecDeque<&'static str>,
    forms: Vec<Vec<(String, String)>>,
}

type Shared = Arc<Mutex<Script>>;

async fn token_endpoint(State(s): State<Shared>, body: Bytes) -> Response {
    let mut s = s.lock().unwrap();
    s.forms.push(serde_urlencoded::from_bytes(&body).unwrap());
    match s.answers.pop_front().unwrap_or("invalid_grant") {
        "ok" => axum::Json(json!({
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": "at-1", "refresh_token": "rt-2",
            "scope": "https://api.securitycenter.microsoft.com/.default offline_access"
        }))
        .into_response(),
        error => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": error, "error_description": format!("said {error}")})),
        )
            .into_response(),
    }
}

async fn stand_in(answers: &[&'static str]) -> (Shared, String) {
    let state: Shared = Arc::new(Mutex::new(Script {
        answers: answers.iter().copied().collect(),
        forms: Vec::new(),
    }));
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token_endpoint))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

fn device(interval: u64, expires_in: u64) -> DeviceAuthorization {
    DeviceAuthorization {
        device_code: "dc-secret".into(),
        user_code: "BCDF-GHJK".into(),
        verification_uri: "http://127.0.0.1/console/device".into(),
        verification_uri_complete: None,
        expires_in,
        interval,
        message: None,
    }
}

fn field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Runs the polling loop, recording each wait instead of sleeping.
async fn wait(url: &str, d: &DeviceAuthorization) -> (Result<UserTokens, ClientError>, Vec<u64>) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    let http = reqwest::Client::new();
    let r = wait_for_approval(&http, url, "cli", d, move |d: Duration| {
        w.lock().unwrap().push(d.as_secs());
        async {}
    })
    .await;
    let waits = waits.lock().unwrap().clone();
    (r, waits)
}

#[tokio::test]
async fn device_polling_waits_the_interval_and_slows_down_for_good() {
    let (state, url) = stand_in(&[
        "authorization_pending",
        "slow_down",
        "authorization_pending",
        "ok",
    ])
    .await;
    let (r, waits) = wait(&url, &device(5, 900)).await;
    let tokens = r.unwrap();
    assert_eq!(tokens.access_token, "at-1");
    assert_eq!(tokens.refresh_token.as_deref(), Some("rt-2"));
    // Before every poll, the interval; 5 s more from the slow_down on.
    assert_eq!(waits, [5, 5, 10, 10]);
    let forms = state.lock().unwrap().forms.clone();
    assert_eq!(forms.len(), 4);
    assert_eq!(
        field(&forms[0], "grant_type").as_deref(),
        Some(device::DEVICE_CODE_GRANT)
    );
    assert_eq!(
        field(&forms[0], "device_code").as_deref(),
        Some("dc-secret")
    );
    assert_eq!(field(&forms[0], "client_id").as_deref(), Some("cli"));
    assert!(!format!("{tokens:?}").contains("at-1"));
    assert!(!format!("{:?}", device(5, 900)).contains("dc-secret"));
}

#[tokio::test]
async fn device_polling_stops_on_denial_expiry_and_its_own_deadline() {
    let (_, url) = stand_in(&["authorization_pending", "access_denied"]).await;
    let (r, _) = wait(&url, &device(5, 900)).await;
    assert_eq!(r.unwrap_err().code(), Some("access_denied"));

    let (_, url) = stand_in(&["expired_token"]).await;
    let (r, _) = wait(&url, &device(5, 900)).await;
    assert_eq!(r.unwrap_err().code(), Some("expired_token"));

    // The codes' lifetime passes while the person has not decided: no more polls.
    let (state, url) = stand_in(&["authorization_pending"; 10]).await;
    let (r, waits) = wait(&url, &device(5, 12)).await;
    assert_eq!(r.unwrap_err().code(), Some("expired_token"));
    assert_eq!(waits, [5, 5, 5]);
    assert_eq!(state.lock().unwrap().forms.len(), 3);

    // An interval of 0 is not a licence to hammer the server.
    let (_, url) = stand_in(&["ok"]).await;
    let (r, waits) = wait(&url, &device(0, 900)).await;
    r.unwrap();
    assert_eq!(waits, [1]);
}

#[tokio::test]
async fn refresh_and_code_redemption_send_what_rfc_6749_names() {
    let (state, url) = stand_in(&["ok", "invalid_grant", "ok"]).await;
    let http = reqwest::Client::new();
    let t = refresh(&http, &url, "cli", "rt-1").await.unwrap();
    assert_eq!(t.refresh_token.as_deref(), Some("rt-2"));
    let e = refresh(&http, &url, "cli", "rt-1").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("invalid_grant")));
    assert_eq!(e.to_string(), "invalid_grant: said invalid_grant");
    let pkce = Pkce::new();
    redeem_code(
        &http,
        &url,
        "cli",
        "the-code",
        "http://127.0.0.1:1/callback",
        &pkce,
    )
    .await
    .unwrap();
    let forms = state.lock().unwrap().forms.clone();
    assert_eq!(
        field(&forms[0], "grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(field(&forms[0], "refresh_token").as_deref(), Some("rt-1"));
    assert_eq!(field(&forms[0], "scope"), Some(user_scope()));
    let code = &forms[2];
    assert_eq!(
        field(code, "grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(field(code, "code").as_deref(), Some("the-code"));
    assert_eq!(
        field(code, "redirect_uri").as_deref(),
        Some("http://127.0.0.1:1/callback")
    );
    assert_eq!(field(code, "code_verifier"), Some(pkce.verifier.clone()));
    assert_eq!(field(code, "client_secret"), None);
}
