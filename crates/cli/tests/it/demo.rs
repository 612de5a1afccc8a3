//! `appfence serve --demo` as a user runs it: five simulated devices, the credentials in
//! `demo.json`, the whole restrict/unrestrict loop over HTTP, and everything still there
//! after a SIGTERM and a restart on the same data directory.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::http_client;
use crate::process::{free_port, start_serve, ChildGuard};
use crate::wire::Resp;

const START_LIMIT: Duration = Duration::from_secs(90);

/// Starts `serve --demo` and waits (blocking, bounded) for the banner, which is printed
/// once the demo is provisioned and every device has enrolled.
fn start_demo(data_dir: &Path, logs: &Path, port: u16, name: &str) -> ChildGuard {
    let listen = format!("127.0.0.1:{port}");
    start_serve(
        &[
            "--demo",
            "--listen",
            &listen,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[("APPFENCE_LOG_LEVEL", "info")],
        logs,
        name,
        START_LIMIT,
    )
}

pub(crate) fn read_demo(data_dir: &Path) -> Value {
    let text = std::fs::read_to_string(data_dir.join("demo.json")).expect("demo.json exists");
    serde_json::from_str(&text).expect("demo.json is JSON")
}

pub(crate) async fn token(http: &reqwest::Client, demo: &Value) -> String {
    let resp = http
        .post(demo["tokenUrl"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", demo["clientId"].as_str().unwrap()),
            ("client_secret", demo["clientSecret"].as_str().unwrap()),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    let r = Resp::read(resp).await;
    assert_eq!(r.status, 200, "token: {}", r.text);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// A user token of a demo user (`analyst` or `viewer`), by the password grant on the v1
/// endpoint, as MDE's user-context documentation shows it.
async fn user_token(http: &reqwest::Client, demo: &Value, who: &str) -> String {
    let token_url = demo["tokenUrl"]
        .as_str()
        .unwrap()
        .replace("/oauth2/v2.0/token", "/oauth2/token");
    let resp = http
        .post(token_url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", demo["clientId"].as_str().unwrap()),
            ("username", demo[who]["username"].as_str().unwrap()),
            ("password", demo[who]["password"].as_str().unwrap()),
            ("resource", "https://api.securitycenter.microsoft.com"),
        ])
        .send()
        .await
        .unwrap();
    let r = Resp::read(resp).await;
    assert_eq!(r.status, 200, "{who} token: {}", r.text);
    r.json()["access_token"].as_str().unwrap().to_string()
}

pub(crate) async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Resp {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    Resp::read(req.send().await.unwrap()).await
}

pub(crate) async fn wait_succeeded(
    http: &reqwest::Client,
    token: &str,
    api: &str,
    id: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(
            http,
            token,
            reqwest::Method::GET,
            &format!("{api}/machineactions/{id}"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let a = r.json();
        match a["status"].as_str().unwrap() {
            "Pending" | "InProgress" => {}
            "Succeeded" => return a,
            other => panic!("action {id} ended {other}: {a}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} did not succeed: {a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn machine_ids(http: &reqwest::Client, token: &str, api: &str) -> Vec<String> {
    let r = call(
        http,
        token,
        reqwest::Method::GET,
        &format!("{api}/machines"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut ids: Vec<String> = r.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Stops with SIGTERM and expects a clean exit.
async fn terminate(mut child: ChildGuard) {
    child.terminate();
    let status = tokio::task::spawn_blocking(move || child.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "serve exited with {status} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_end_to_end_and_after_a_restart() {
    let data = crate::harness::private_tempdir();
    let logs = crate::harness::private_tempdir();
    let port = free_port();
    let http = http_client();
    let (d, l) = (data.path().to_path_buf(), logs.path().to_path_buf());
    let child = tokio::task::spawn_blocking(move || start_demo(&d, &l, port, "first"))
        .await
        .unwrap();

    let demo = read_demo(data.path());
    let machines: Vec<String> = demo["machines"]
        .as_array()
        .expect("machines in demo.json")
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(machines.len(), 5, "{demo}");
    let api = demo["apiBaseUrl"].as_str().unwrap().to_string();
    assert_eq!(api, format!("http://127.0.0.1:{port}/api"));
    assert!(
        child
            .stdout_text()
            .contains(demo["clientId"].as_str().unwrap()),
        "banner shows how to connect"
    );

    let t = token(&http, &demo).await;
    let mut sorted = machines.clone();
    sorted.sort();
    assert_eq!(machine_ids(&http, &t, &api).await, sorted);

    // Restrict one device; the duplicate is refused; poll to Succeeded; unrestrict.
    let m = &machines[0];
    let restrict_url = format!("{api}/machines/{m}/restrictCodeExecution");
    let body = json!({"Comment": "Restrict code execution due to alert 1234"});
    let r = call(
        &http,
        &t,
        reqwest::Method::POST,
        &restrict_url,
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let restrict_id = r.json()["id"].as_str().unwrap().to_string();
    let dup = call(&http, &t, reqwest::Method::POST, &restrict_url, Some(body)).await;
    let e = dup.assert_error(400, "ActiveRequestAlreadyExists");
    assert_eq!(e.message, "Action is already in progress");
    let done = wait_succeeded(&http, &t, &api, &restrict_id).await;
    assert_eq!(done["machineId"], m.as_str());
    let r = call(
        &http,
        &t,
        reqwest::Method::POST,
        &format!("{api}/machines/{m}/unrestrictCodeExecution"),
        Some(json!({"Comment": "Device is clean"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let unrestrict_id = r.json()["id"].as_str().unwrap().to_string();
    wait_succeeded(&http, &t, &api, &unrestrict_id).await;

    // The demo analyst may restrict (and is the requestor); the viewer may only read.
    let analyst = user_token(&http, &demo, "analyst").await;
    let r = call(
        &http,
        &analyst,
        reqwest::Method::POST,
        &format!("{api}/machines/{}/restrictCodeExecution", machines[2]),
        Some(json!({"Comment": "analyst on duty"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["requestor"], demo["analyst"]["username"]);
    let viewer = user_token(&http, &demo, "viewer").await;
    assert_eq!(machine_ids(&http, &viewer, &api).await, sorted);
    let r = call(
        &http,
        &viewer,
        reqwest::Method::POST,
        &format!("{api}/machines/{}/restrictCodeExecution", machines[3]),
        Some(json!({"Comment": "viewer tries"})),
    )
    .await;
    let e = r.assert_error(403, "Forbidden");
    assert_eq!(
        e.message,
        "Missing user permission. API required role permission: Active remediation actions"
    );

    // The demo application and the analyst manage the allowlist; the viewer may not.
    let allow = |n: &str| {
        json!({
            "indicatorValue": n.repeat(64), "indicatorType": "FileSha256",
            "action": "Allowed", "title": "demo", "description": "demo allowlist"
        })
    };
    for (who, value) in [(&t, "a"), (&analyst, "b")] {
        let r = call(
            &http,
            who,
            reqwest::Method::POST,
            &format!("{api}/indicators"),
            Some(allow(value)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = call(
        &http,
        &viewer,
        reqwest::Method::POST,
        &format!("{api}/indicators"),
        Some(allow("c")),
    )
    .await;
    let e = r.assert_error(403, "Forbidden");
    assert!(
        e.message.contains("Manage security settings"),
        "{}",
        e.message
    );

    // SIGTERM: a clean exit.
    terminate(child).await;
    assert!(
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err(),
        "nothing listens after the stop"
    );

    // Restart on the same data directory (and port).
    let (d, l) = (data.path().to_path_buf(), logs.path().to_path_buf());
    let child = tokio::task::spawn_blocking(move || start_demo(&d, &l, port, "second"))
        .await
        .unwrap();
    let again = read_demo(data.path());
    for key in [
        "tenantId",
        "clientId",
        "clientSecret",
        "enrollSecret",
        "analyst",
        "viewer",
    ] {
        assert_eq!(again[key], demo[key], "{key} changed across the restart");
    }
    // The demo users still sign in after the restart.
    user_token(&http, &again, "analyst").await;
    assert_eq!(again["machines"], demo["machines"], "the same machines");
    // The old token still verifies (keys persist), and a new one can be had.
    assert_eq!(
        machine_ids(&http, &t, &api).await,
        sorted,
        "no device enrolled twice"
    );
    let t2 = token(&http, &again).await;
    for (id, kind) in [
        (&restrict_id, "RestrictCodeExecution"),
        (&unrestrict_id, "UnrestrictCodeExecution"),
    ] {
        let r = call(
            &http,
            &t2,
            reqwest::Method::GET,
            &format!("{api}/machineactions/{id}"),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let a = r.json();
        assert_eq!(a["status"], "Succeeded");
        assert_eq!(a["type"], kind);
    }
    // And the loop still works after the restart.
    let r = call(
        &http,
        &t2,
        reqwest::Method::POST,
        &format!("{api}/machines/{}/restrictCodeExecution", machines[1]),
        Some(json!({"Comment": "after restart"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_succeeded(&http, &t2, &api, &id).await;
    terminate(child).await;
}
