//! The client against a stand-in server that records every request it receives.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::*;

#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    /// Path and query exactly as sent (still percent-encoded).
    uri: String,
    auth: Option<String>,
    content_type: Option<String>,
    body: String,
}

#[derive(Default)]
struct Mock {
    requests: Vec<Recorded>,
    tokens_issued: u32,
    expires_in: u64,
    rejected_tokens: HashSet<String>,
    base: String,
}

type Shared = Arc<Mutex<Mock>>;

const TENANT: &str = "6f0c1a8e-8a6e-4a4e-9a51-0d6f3c2b7e11";

fn action_json(id: &str, status: &str) -> Value {
    json!({
        "@odata.context": "http://x/api/$metadata#MachineActions/$entity",
        "id": id,
        "type": "RestrictCodeExecution",
        "title": null,
        "requestor": "Integration",
        "requestorComment": "c",
        "status": status,
        "machineId": "1234",
        "computerDnsName": "windows11",
        "creationDateTimeUtc": "2024-10-21T11:27:58.1447302Z",
        "lastUpdateDateTimeUtc": "2024-10-21T11:27:58.1447307Z",
        "cancellationRequestor": null,
        "cancellationComment": null,
        "cancellationDateTimeUtc": null,
        "errorHResult": 0,
        "scope": null,
        "externalId": null,
        "requestSource": "PublicApi",
        "relatedFileInfo": null,
        "commands": [],
        "troubleshootInfo": null
    })
}

/// The entity MDE answers a submission with, from what was sent.
fn indicator_json(sent: &Value) -> Value {
    json!({
        "id": sent["id"], "indicatorValue": sent["indicatorValue"],
        "indicatorType": sent["indicatorType"], "action": sent["action"],
        "application": null, "source": "app", "sourceType": "AadApp", "title": sent["title"],
        "creationTimeDateTimeUtc": "2024-10-21T11:27:58Z", "createdBy": "app-1",
        "expirationTime": null, "lastUpdateTime": "2024-10-21T11:27:58Z",
        "lastUpdatedBy": null, "severity": "Informational", "description": sent["description"],
        "recommendedActions": null, "rbacGroupNames": [], "rbacGroupIds": [],
        "generateAlert": false
    })
}

/// An alert as MDE sends it (one File evidence when `evidence`).
fn alert_json(id: &str, status: &str, evidence: bool) -> Value {
    let evidence = if evidence {
        json!([{
            "entityType": "File", "evidenceCreationTime": "2024-10-21T11:27:58Z",
            "sha1": null, "sha256": "ab".repeat(32), "fileName": "tool",
            "filePath": "/tmp", "processId": null, "processCommandLine": null,
            "processCreationTime": null, "parentProcessId": null,
            "parentProcessCreationTime": null, "parentProcessFileName": null,
            "parentProcessFilePath": null, "ipAddress": null, "url": null,
            "registryKey": null, "registryHive": null, "registryValueType": null,
            "registryValue": null, "accountName": null, "domainName": null, "userSid": null,
            "aadUserId": null, "userPrincipalName": null, "detectionStatus": "Blocked"
        }])
    } else {
        json!([])
    };
    json!({
        "id": id, "incidentId": null, "investigationId": null, "assignedTo": null,
        "severity": "Medium", "status": status, "classification": null,
        "determination": null, "investigationState": null,
        "detectionSource": "CustomerTI", "detectorId": "d", "category": "Execution",
        "threatFamilyName": null, "title": "blocked", "description": "d",
        "alertCreationTime": "2024-10-21T11:27:58Z", "firstEventTime": null,
        "lastEventTime": null, "lastUpdateTime": "2024-10-21T11:27:58Z",
        "resolvedTime": null, "machineId": "1234", "computerDnsName": "web-01",
        "rbacGroupName": null, "aadTenantId": TENANT, "threatName": null,
        "mitreTechniques": [], "relatedUser": null, "comments": [], "evidence": evidence
    })
}

fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "target": "0b7f3c9e-1111-2222-3333-444455556666"}});
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let rec = Recorded {
        method: method.clone(),
        uri: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        auth: header(header::AUTHORIZATION),
        content_type: header(header::CONTENT_TYPE),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut s = state.lock().unwrap();
    s.requests.push(rec.clone());
    let path = uri.path();

    if path == format!("/{TENANT}/oauth2/v2.0/token") {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
        let secret = form
            .iter()
            .find(|(k, _)| k == "client_secret")
            .map(|(_, v)| v.as_str());
        if secret != Some("right secret") {
            let body = json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        s.tokens_issued += 1;
        let body = json!({"token_type": "Bearer", "expires_in": s.expires_in, "ext_expires_in": s.expires_in, "access_token": format!("tok-{}", s.tokens_issued)});
        return axum::Json(body).into_response();
    }

    let token = rec
        .auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    if token.is_empty() || s.rejected_tokens.contains(token) {
        return envelope(StatusCode::UNAUTHORIZED, "Unauthorized", "token expired");
    }

    match (method.as_str(), path) {
        ("POST", p) if p.ends_with("/restrictCodeExecution") || p.ends_with("/cancel") => (
            StatusCode::CREATED,
            axum::Json(action_json("a-1", "Pending")),
        )
            .into_response(),
        ("POST", p) if p.ends_with("/unrestrictCodeExecution") => envelope(
            StatusCode::BAD_REQUEST,
            "ActiveRequestAlreadyExists",
            "Action is already in progress",
        ),
        ("GET", "/api/machineactions/busy") => {
            let mut r = envelope(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "API calls quota exceeded! maximum allowed 100 per 00:01:00",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, "42".parse().unwrap());
            r
        }
        ("GET", "/api/machineactions/garbled") => axum::Json(json!({"id": 5})).into_response(),
        ("GET", "/api/machineactions/a-1") => {
            axum::Json(action_json("a-1", "Succeeded")).into_response()
        }
        ("GET", "/api/machineactions") => {
            let second = uri.query().is_some_and(|q| q.contains("$skip=1"));
            let mut page = json!({
                "@odata.context": "http://x/api/$metadata#MachineActions",
                "value": [action_json(if second { "a-2" } else { "a-1" }, "Pending")],
            });
            if !second {
                page["@odata.nextLink"] = json!(format!("{}/api/machineactions?$skip=1", s.base));
            }
            axum::Json(page).into_response()
        }
        ("POST", "/api/indicators") => {
            let mut sent: Value = serde_json::from_slice(&body).unwrap();
            sent["id"] = json!("7");
            axum::Json(indicator_json(&sent)).into_response()
        }
        ("DELETE", "/api/indicators/7") => StatusCode::NO_CONTENT.into_response(),
        ("GET", "/api/alerts") => {
            let second = uri.query().is_some_and(|q| q.contains("$skip=1"));
            let expand = uri.query().is_some_and(|q| q.contains("$expand=evidence"));
            let id = if second { "al-2" } else { "al-1" };
            let mut page = json!({
                "@odata.context": "http://x/api/$metadata#Alerts",
                "value": [alert_json(id, "New", expand)],
            });
            if !second {
                page["@odata.nextLink"] =
                    json!(format!("{}/api/alerts?$expand=evidence&$skip=1", s.base));
            }
            axum::Json(page).into_response()
        }
        ("GET", "/api/alerts/al-1") => axum::Json(alert_json("al-1", "New", true)).into_response(),
        ("PATCH", "/api/alerts/al-1") => {
            let sent: Value = serde_json::from_slice(&body).unwrap();
            let status = sent["status"].as_str().unwrap_or("New");
            axum::Json(alert_json("al-1", status, true)).into_response()
        }
        ("POST", "/api/alerts/batchUpdate") => StatusCode::OK.into_response(),
        ("GET", "/api/machines/web-01/alerts") => axum::Json(json!({
            "@odata.context": "http://x/api/$metadata#Alerts",
            "value": [alert_json("al-1", "New", false)],
        }))
        .into_response(),
        ("GET", "/api/machines") => axum::Json(json!({
            "@odata.context": "http://x/api/$metadata#Machines",
            "value": [],
        }))
        .into_response(),
        _ => envelope(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("No route {path}"),
        ),
    }
}

async fn mock(expires_in: u64) -> (Shared, String) {
    let state: Shared = Arc::new(Mutex::new(Mock {
        expires_in,
        ..Default::default()
    }));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    state.lock().unwrap().base = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, base)
}

fn client(base: &str, secret: &str) -> MdeClient {
    MdeClient::new(ClientConfig {
        server: format!("{base}/"),
        tenant: TENANT.into(),
        client_id: "app-1".into(),
        client_secret: secret.into(),
        token_url: None,
        tls: Default::default(),
    })
    .unwrap()
}

fn requests(state: &Shared) -> Vec<Recorded> {
    state.lock().unwrap().requests.clone()
}

#[tokio::test]
async fn fetches_a_v2_token_once_and_reuses_it() {
    let (state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    let a = c.restrict("web 01/x", "alert 1234").await.unwrap();
    assert_eq!(a.id, "a-1");
    assert_eq!(a.status, appfence_proto::ActionStatus::Pending);
    c.get_action("a-1").await.unwrap();

    let reqs = requests(&state);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    let tok = &reqs[0];
    assert_eq!(tok.method, Method::POST);
    assert_eq!(tok.uri, format!("/{TENANT}/oauth2/v2.0/token"));
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&tok.body).unwrap();
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(get("client_id").as_deref(), Some("app-1"));
    assert_eq!(get("client_secret").as_deref(), Some("right secret"));
    assert_eq!(get("scope").as_deref(), Some(MDE_SCOPE));

    let post = &reqs[1];
    assert_eq!(post.uri, "/api/machines/web%2001%2Fx/restrictCodeExecution");
    assert_eq!(post.auth.as_deref(), Some("Bearer tok-1"));
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    assert_eq!(post.body, r#"{"Comment":"alert 1234"}"#);
    assert_eq!(reqs[2].auth.as_deref(), Some("Bearer tok-1"));
}

#[tokio::test]
async fn refetches_a_token_that_is_about_to_expire() {
    // With expires_in 0 a token is never fresh: every call fetches a new one.
    let (state, base) = mock(0).await;
    let c = client(&base, "right secret");
    c.get_action("a-1").await.unwrap();
    c.get_action("a-1").await.unwrap();
    assert_eq!(state.lock().unwrap().tokens_issued, 2);
}

#[tokio::test]
async fn retries_once_with_a_new_token_after_a_401() {
    let (state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    c.get_action("a-1").await.unwrap();
    state.lock().unwrap().rejected_tokens.insert("tok-1".into());
    c.get_action("a-1").await.unwrap();
    let reqs = requests(&state);
    let auths: Vec<_> = reqs
        .iter()
        .filter(|r| r.uri.starts_with("/api"))
        .map(|r| r.auth.clone().unwrap())
        .collect();
    assert_eq!(auths, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);

    // A fresh token that is refused is not retried forever.
    state.lock().unwrap().rejected_tokens.insert("tok-2".into());
    state.lock().unwrap().rejected_tokens.insert("tok-3".into());
    let e = c.get_action("a-1").await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(state.lock().unwrap().tokens_issued, 3);
}

/// A person's session that hands out `user-1`, `user-2`, ... and records what it was
/// told the API refused.
#[derive(Default)]
struct CountingSession {
    given: Mutex<u32>,
    refused: Mutex<Vec<String>>,
}

impl UserSession for CountingSession {
    fn access_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        refused: Option<&'a str>,
    ) -> TokenFuture<'a> {
        Box::pin(async move {
            let mut given = self.given.lock().unwrap();
            if let Some(r) = refused {
                self.refused.lock().unwrap().push(r.to_string());
                *given += 1;
            }
            if *given == 0 {
                *given = 1;
            }
            Ok(format!("user-{given}"))
        })
    }
}

#[tokio::test]
async fn a_session_gives_the_tokens_and_replaces_a_refused_one_once() {
    let (state, base) = mock(3599).await;
    let session = Arc::new(CountingSession::default());
    let c = MdeClient::for_session(&base, &Default::default(), session.clone()).unwrap();
    c.get_action("a-1").await.unwrap();
    state
        .lock()
        .unwrap()
        .rejected_tokens
        .insert("user-1".into());
    c.get_action("a-1").await.unwrap();
    assert_eq!(*session.refused.lock().unwrap(), ["user-1"]);
    let auths: Vec<_> = requests(&state)
        .iter()
        .map(|r| r.auth.clone().unwrap())
        .collect();
    assert_eq!(auths, ["Bearer user-1", "Bearer user-1", "Bearer user-2"]);
    // No token endpoint call of the client's own.
    assert_eq!(state.lock().unwrap().tokens_issued, 0);
    // A replacement that is refused too is the caller's error, not a loop.
    state
        .lock()
        .unwrap()
        .rejected_tokens
        .insert("user-2".into());
    state
        .lock()
        .unwrap()
        .rejected_tokens
        .insert("user-3".into());
    let e = c.get_action("a-1").await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert_eq!(*session.refused.lock().unwrap(), ["user-1", "user-2"]);
    assert!(!format!("{c:?}").contains("user-"));
    // Plain http off loopback is refused for sessions too.
    assert!(matches!(
        MdeClient::for_session("http://10.1.2.3:8080", &Default::default(), session),
        Err(ClientError::Transport(_))
    ));
}

#[tokio::test]
async fn reports_the_oauth_error_of_bad_credentials() {
    let (_state, base) = mock(3599).await;
    let e = client(&base, "wrong").get_action("a-1").await.unwrap_err();
    match e {
        ClientError::Api {
            status,
            code,
            message,
            target,
            ..
        } => {
            assert_eq!(status, 401);
            assert_eq!(code, "invalid_client");
            assert!(message.contains("Invalid client secret"), "{message}");
            assert_eq!(target, None);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn reports_api_errors_with_their_envelope() {
    let (_state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    let e = c.unrestrict("m", "x").await.unwrap_err();
    assert_eq!(e.code(), Some("ActiveRequestAlreadyExists"));
    assert_eq!(
        e.to_string(),
        "ActiveRequestAlreadyExists: Action is already in progress (target 0b7f3c9e-1111-2222-3333-444455556666)"
    );
    match c.get_action("busy").await.unwrap_err() {
        ClientError::Api {
            status: 429,
            retry_after,
            ..
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(42)))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        c.get_machine("nope").await.unwrap_err().code(),
        Some("ResourceNotFound")
    );
    assert!(matches!(
        c.get_action("garbled").await.unwrap_err(),
        ClientError::Decode(_)
    ));
}

#[tokio::test]
async fn encodes_list_queries_and_follows_next_links() {
    let (state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    let page = c
        .list_actions(
            Some("status eq 'Pending' and requestor eq 'O''Brien'"),
            Some(5),
        )
        .await
        .unwrap();
    assert_eq!(page.value.len(), 1);
    assert!(page.odata_next_link.is_some());
    let uri = requests(&state).last().unwrap().uri.clone();
    assert_eq!(
        uri,
        "/api/machineactions?$filter=status%20eq%20%27Pending%27%20and%20requestor%20eq%20%27O%27%27Brien%27&$top=5"
    );

    let all = c.list_actions_all(None).await.unwrap();
    let ids: Vec<_> = all.value.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a-1", "a-2"]);
    assert_eq!(all.odata_next_link, None);

    let machines = c.list_machines(None, None).await.unwrap();
    assert!(machines.value.is_empty());
    assert_eq!(requests(&state).last().unwrap().uri, "/api/machines");
}

#[tokio::test]
async fn cancel_sends_an_optional_comment() {
    let (state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    c.cancel_action("a-1", None).await.unwrap();
    c.cancel_action("a-1", Some("oops")).await.unwrap();
    let reqs = requests(&state);
    let n = reqs.len();
    assert_eq!(reqs[n - 2].uri, "/api/machineactions/a-1/cancel");
    assert_eq!(reqs[n - 2].body, "{}");
    assert_eq!(reqs[n - 1].body, r#"{"Comment":"oops"}"#);
}

#[tokio::test]
async fn connection_failures_are_transport_errors() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = client(&format!("http://127.0.0.1:{port}"), "s")
        .get_action("a")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Transport(_)), "{e:?}");
}

#[test]
fn rejects_bad_urls_and_hides_the_secret() {
    let cfg = ClientConfig {
        server: "ftp://host".into(),
        tenant: "t".into(),
        client_id: "c".into(),
        client_secret: "hunter2".into(),
        token_url: None,
        tls: Default::default(),
    };
    assert!(!format!("{cfg:?}").contains("hunter2"));
    assert_eq!(cfg.token_url(), "ftp://host/t/oauth2/v2.0/token");
    assert!(matches!(
        MdeClient::new(cfg),
        Err(ClientError::Transport(_))
    ));
}

#[tokio::test]
async fn submits_and_deletes_indicators() {
    let (state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    let hash = "ab".repeat(32);
    let created = c
        .submit_indicator(&NewIndicator::allow_sha256(&hash, "tool", "our build tool"))
        .await
        .unwrap();
    assert_eq!(
        (created.id.as_str(), created.action.as_str()),
        ("7", "Allowed")
    );
    c.delete_indicator("7").await.unwrap();
    let e = c.delete_indicator("8").await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFound"));

    let reqs = requests(&state);
    let post = &reqs[1];
    assert_eq!(
        (post.method.as_str(), post.uri.as_str()),
        ("POST", "/api/indicators")
    );
    assert_eq!(
        post.body,
        format!(
            r#"{{"indicatorValue":"{hash}","indicatorType":"FileSha256","action":"Allowed","title":"tool","description":"our build tool"}}"#
        )
    );
    assert_eq!(
        (reqs[2].method.as_str(), reqs[2].uri.as_str()),
        ("DELETE", "/api/indicators/7")
    );
}

#[tokio::test]
async fn lists_shows_and_updates_alerts() {
    use appfence_proto::alert::{AlertBatchUpdate, AlertUpdate};
    let (state, base) = mock(3599).await;
    let c = client(&base, "right secret");
    let page = c
        .list_alerts(Some("status in ('New','InProgress')"), Some(2), true)
        .await
        .unwrap();
    assert_eq!(page.value.len(), 1);
    assert_eq!(
        page.value[0].evidence[0].sha256.as_deref(),
        Some("ab".repeat(32).as_str())
    );
    assert_eq!(
        requests(&state).last().unwrap().uri,
        "/api/alerts?$filter=status%20in%20%28%27New%27%2C%27InProgress%27%29&$top=2&$expand=evidence"
    );
    let page = c.list_alerts(None, None, false).await.unwrap();
    assert!(page.value[0].evidence.is_empty());
    assert_eq!(requests(&state).last().unwrap().uri, "/api/alerts");

    let all = c.list_alerts_all(None, true).await.unwrap();
    let ids: Vec<_> = all.value.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["al-1", "al-2"]);
    assert_eq!(all.odata_next_link, None);

    let alert = c.get_alert("al-1").await.unwrap();
    assert_eq!((alert.id.as_str(), alert.evidence.len()), ("al-1", 1));
    let e = c.get_alert("al-9").await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFound"));

    let update = AlertUpdate {
        status: Some("Resolved".into()),
        comment: Some("fixed".into()),
        ..Default::default()
    };
    let updated = c.update_alert("al-1", &update).await.unwrap();
    assert_eq!(updated.status, "Resolved");
    let patch = requests(&state).last().unwrap().clone();
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", "/api/alerts/al-1")
    );
    assert_eq!(patch.body, r#"{"status":"Resolved","comment":"fixed"}"#);

    let batch = AlertBatchUpdate {
        alert_ids: vec!["al-1".into(), "al-2".into()],
        update: AlertUpdate {
            assigned_to: Some("secops@contoso.com".into()),
            ..Default::default()
        },
    };
    c.batch_update_alerts(&batch).await.unwrap();
    let post = requests(&state).last().unwrap().clone();
    assert_eq!(
        (post.method.as_str(), post.uri.as_str()),
        ("POST", "/api/alerts/batchUpdate")
    );
    assert_eq!(
        post.body,
        r#"{"alertIds":["al-1","al-2"],"assignedTo":"secops@contoso.com"}"#
    );

    let alerts = c.machine_alerts("web-01").await.unwrap();
    assert_eq!(alerts.value.len(), 1);
    let e = c.alert_machine("al/1").await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFound"));
    assert_eq!(
        requests(&state).last().unwrap().uri,
        "/api/alerts/al%2F1/machine"
    );
}
