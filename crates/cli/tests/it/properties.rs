//! Property tests of every request body, over HTTP against the real server: arbitrary
//! text and arbitrary JSON (the fields each endpoint knows, with values of any type)
//! never cause a 5xx or a dropped connection, and every refusal is a 4xx with the
//! endpoint's error format: the MDE envelope on the API and the agent gateway, the
//! OAuth error object on the token endpoint.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

use crate::harness::{generous_limits, TestServer, ALL_ROLES};
use crate::wire::Resp;

const CASES: u32 = 150;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "\\PC{0,40}".prop_map(Value::String),
        "[0-9a-f]{64}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of `keys` (and maybe others), each of any JSON type.
fn body(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let object = proptest::collection::vec(
        (
            proptest::sample::select(keys.to_vec()).prop_map(String::from),
            json_value(),
        ),
        0..keys.len() + 2,
    )
    .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<String, Value>>()).to_string());
    prop_oneof![
        3 => object,
        1 => json_value().prop_map(|v| v.to_string()),
        1 => "\\PC{0,200}",
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Envelope,
    OAuth,
}

fn check(what: &str, r: &Resp, format: Format) -> Result<(), TestCaseError> {
    prop_assert!(r.status < 500, "{what}: {} {}", r.status, r.text);
    if r.status >= 400 {
        let v: Value = serde_json::from_str(&r.text)
            .map_err(|e| TestCaseError::fail(format!("{what}: not JSON ({e}): {}", r.text)))?;
        match format {
            Format::Envelope => {
                let e = &v["error"];
                prop_assert!(
                    e["code"].is_string() && e["message"].is_string() && e["target"].is_string(),
                    "{what}: not the envelope: {}",
                    r.text
                );
            }
            Format::OAuth => prop_assert!(
                v["error"].is_string(),
                "{what}: not an OAuth error: {}",
                r.text
            ),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_body_breaks_an_endpoint() {
    let server = TestServer::start_with(generous_limits, None).await;
    let api = server.api(ALL_ROLES).await;
    let device = server.enroll("prop.corp.example").await;
    let action = api
        .restrict(&device.machine_id, "an action to cancel")
        .await;
    let action = action.json()["id"].as_str().unwrap().to_string();
    let token_url = server.url(&format!("/{}/oauth2/v2.0/token", server.tenant_id));
    let m = device.machine_id.clone();
    let endpoints: Vec<(String, &'static [&'static str], Format, bool)> = vec![
        (
            format!("/api/machines/{m}/restrictCodeExecution"),
            &["Comment", "ExternalId", "Title"],
            Format::Envelope,
            false,
        ),
        (
            format!("/api/machines/{m}/unrestrictCodeExecution"),
            &["Comment", "ExternalId"],
            Format::Envelope,
            false,
        ),
        (
            format!("/api/machineactions/{action}/cancel"),
            &["Comment"],
            Format::Envelope,
            false,
        ),
        (
            "/api/indicators".into(),
            &[
                "indicatorValue",
                "indicatorType",
                "action",
                "title",
                "description",
                "expirationTime",
                "severity",
                "rbacGroupNames",
            ],
            Format::Envelope,
            false,
        ),
        (
            "/api/machines/findbytag".into(),
            &["tag"],
            Format::Envelope,
            false,
        ),
        (
            format!("/api/machines/{m}/tags"),
            &["Value", "Action"],
            Format::Envelope,
            false,
        ),
        (
            "/agent/v1/enroll".into(),
            &["enrollSecret", "hostname", "info", "enrollmentKey"],
            Format::Envelope,
            true,
        ),
        (
            "/agent/v1/heartbeat".into(),
            &["info", "enforcement"],
            Format::Envelope,
            true,
        ),
        (
            format!("/agent/v1/actions/{action}/result"),
            &["outcome", "errorHResult", "troubleshootInfo"],
            Format::Envelope,
            true,
        ),
        (
            "/agent/v1/events".into(),
            &["events"],
            Format::Envelope,
            true,
        ),
    ];
    let handle = tokio::runtime::Handle::current();
    for (path, keys, format, as_device) in endpoints {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&body(keys), |text| {
            let r = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    if as_device {
                        let sent = device
                            .http
                            .post(format!("{}{}", device.base, path))
                            .bearer_auth(&device.credential)
                            .header("content-type", "application/json")
                            .body(text.clone())
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>(Resp::read(sent).await)
                    } else {
                        Ok(api.post_raw(&path, text.clone()).await)
                    }
                })
            })
            .map_err(|e| TestCaseError::fail(format!("{path}: no answer: {e}")))?;
            check(&path, &r, format)
        });
        if let Err(e) = result {
            panic!("{path}: {e}");
        }
    }
    // The token endpoint: form bodies of any shape.
    let form = proptest::collection::vec(
        (
            proptest::sample::select(vec![
                "grant_type",
                "client_id",
                "client_secret",
                "scope",
                "resource",
                "username",
                "password",
            ]),
            "\\PC{0,30}",
        ),
        0..8,
    );
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&form, |pairs| {
        let r = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let sent = server
                    .http
                    .post(&token_url)
                    .form(&pairs)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(Resp::read(sent).await)
            })
        })
        .map_err(|e| TestCaseError::fail(format!("token: no answer: {e}")))?;
        check("token", &r, Format::OAuth)
    });
    if let Err(e) = result {
        panic!("token endpoint: {e}");
    }
    server.stop().await;
}
