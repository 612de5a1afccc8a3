//! Metrics and structured logs of a real `serve` process: `/metrics` parsed after a
//! restrict (the counters moved by exactly what was done), and `--log-format json`
//! lines that carry the request id the response named and the error's target.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::demo::{call, machine_ids, read_demo, token, wait_succeeded};
use crate::harness::{private_tempdir, within};
use crate::process::{free_port, start_serve};
use crate::wire::Resp;

/// The Prometheus text format: `name{labels} value` per sample; every sample must parse.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {l}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l}"));
            (series.to_string(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_json_logs_of_a_restrict() {
    let dir = private_tempdir();
    let (port, metrics_port) = (free_port(), free_port());
    let data = dir.path().join("data");
    let (l, m, d) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{metrics_port}"),
        data.display().to_string(),
    );
    let server = tokio::task::block_in_place(|| {
        start_serve(
            &[
                "--demo",
                "--demo-devices",
                "2",
                "--demo-step-delay",
                "0s",
                "--listen",
                &l,
                "--metrics-listen",
                &m,
                "--data-dir",
                &d,
                "--log-format",
                "json",
            ],
            &[],
            dir.path(),
            "serve",
            Duration::from_secs(60),
        )
    });
    let http = reqwest::Client::new();
    let api = format!("http://{l}/api");
    let demo = read_demo(&data);
    let token = token(&http, &demo).await;
    let machines = machine_ids(&http, &token, &api).await;
    let r = call(
        &http,
        &token,
        reqwest::Method::POST,
        &format!("{api}/machines/{}/restrictCodeExecution", machines[0]),
        Some(json!({ "Comment": "metrics" })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    wait_succeeded(&http, &token, &api, r.json()["id"].as_str().unwrap()).await;
    // A refused token request and a refused API call.
    let refused = http
        .post(demo["tokenUrl"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", demo["clientId"].as_str().unwrap()),
            ("client_secret", "not the secret"),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let bad = http
        .get(format!("{api}/machines"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    let request_id = bad.headers()["x-request-id"].to_str().unwrap().to_string();
    let bad = Resp::read(bad).await;
    let target = bad.assert_error(401, "Unauthorized").target;

    // The sweeper (every 5 s) counts the fleet: one restricted device, two seen.
    let scrape = || {
        let http = http.clone();
        async move {
            let text = http
                .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            parse_metrics(&text)
        }
    };
    let samples = within(Duration::from_secs(30), "the fleet gauges", async {
        loop {
            let s = scrape().await;
            if s.get("appfence_devices_restricted") == Some(&1.0) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let get = |series: &str| {
        samples
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
    };
    assert_eq!(get("appfence_devices_seen"), 2.0);
    assert_eq!(
        get("appfence_actions_created_total{type=\"RestrictCodeExecution\"}"),
        1.0
    );
    assert_eq!(
        get("appfence_actions_finished_total{type=\"RestrictCodeExecution\",status=\"Succeeded\"}"),
        1.0
    );
    assert_eq!(get("appfence_action_delivery_seconds_count"), 1.0);
    assert_eq!(
        get("appfence_http_requests_total{route=\"/api/machines/{id}/restrictCodeExecution\",method=\"POST\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        get("appfence_http_requests_total{route=\"/api/machines\",method=\"GET\",status=\"401\"}"),
        1.0
    );
    assert!(get("appfence_http_request_duration_seconds_count{route=\"/api/machines\"}") >= 2.0);
    assert_eq!(
        get("appfence_token_requests_refused_total{reason=\"invalid_client\"}"),
        1.0
    );
    let polling = get("appfence_devices_long_polling");
    assert!((0.0..=2.0).contains(&polling), "{polling}");

    // Every log line is one JSON object; the refusal names the request id and target.
    let log = server.stderr_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refusal = lines
        .iter()
        .find(|l| l["fields"]["target"] == target.as_str())
        .unwrap_or_else(|| panic!("no line with target {target}:\n{log}"));
    assert_eq!(
        refusal["span"]["request_id"],
        request_id.as_str(),
        "{refusal}"
    );
    assert_eq!(refusal["fields"]["message"], "request refused", "{refusal}");
    assert_eq!(refusal["span"]["path"], "/api/machines", "{refusal}");
    assert!(!log.contains("not-a-token"), "a credential reached the log");
    drop(server);
}
