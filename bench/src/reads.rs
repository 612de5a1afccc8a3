//! Measurement 2: `GET /api/machineactions/{id}` against `GET /healthz`, the same client
//! and concurrency, in alternating timed rounds (A B B A A B ...) so that drift falls on
//! both alike. `/healthz` is the cost of the HTTP round trip alone; the difference is the
//! token check, the store read and the JSON response.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;

use crate::load;
use crate::setup::Harness;
use crate::stats::Sample;

#[derive(Default)]
pub struct Reads {
    pub get_action: Sample,
    pub healthz: Sample,
}

/// Checks once that reading an action answers it, then measures.
pub async fn run(
    h: &Harness,
    action_ids: &[String],
    rounds: usize,
    round: Duration,
    concurrency: usize,
) -> Result<Reads, String> {
    let ids: Arc<Vec<String>> = Arc::new(action_ids.to_vec());
    if ids.is_empty() {
        return Err("no actions to read".into());
    }
    check_get_action(h, &ids[0]).await?;
    let mut out = Reads::default();
    for r in 0..rounds.max(1) {
        // A B, B A, A B, ...: each kind goes first in half of the rounds.
        let get_first = r % 2 == 0;
        for first in [true, false] {
            if first == get_first {
                out.get_action.merge(get_actions(h, ids.clone(), round, concurrency).await?);
            } else {
                out.healthz.merge(healthz(h, round, concurrency).await?);
            }
        }
    }
    Ok(out)
}

/// Opens the client's keep-alive connections before anything is timed.
pub async fn warm_up(h: &Harness, concurrency: usize) -> Result<(), String> {
    healthz(h, Duration::from_millis(300), concurrency).await.map(|_| ())
}

async fn get_actions(
    h: &Harness,
    ids: Arc<Vec<String>>,
    round: Duration,
    concurrency: usize,
) -> Result<Sample, String> {
    let (http, base, auth) = (h.http.clone(), h.base.clone(), h.authorization.clone());
    load::run_for(round, concurrency, move |n| {
        // Cycle through every action so reads are spread over the table.
        let req = http
            .get(format!("{base}/api/machineactions/{}", ids[n % ids.len()]))
            .header(AUTHORIZATION, auth.as_str());
        async move { expect_ok(req, "GET /api/machineactions/{id}").await }
    })
    .await
}

async fn healthz(h: &Harness, round: Duration, concurrency: usize) -> Result<Sample, String> {
    let http = h.http.clone();
    let url = format!("{}/healthz", h.base);
    load::run_for(round, concurrency, move |_| {
        let req = http.get(&url);
        async move { expect_ok(req, "GET /healthz").await }
    })
    .await
}

/// Sends the request and reads the whole body; anything but 200 is an error.
async fn expect_ok(req: reqwest::RequestBuilder, what: &str) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("{what} body: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("{what} answered {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

async fn check_get_action(h: &Harness, id: &str) -> Result<(), String> {
    let resp = h
        .http
        .get(format!("{}/api/machineactions/{id}", h.base))
        .header(AUTHORIZATION, h.authorization.as_str())
        .send()
        .await
        .map_err(|e| format!("GET action: {e}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.map_err(|e| format!("GET action body: {e}"))?;
    if status != StatusCode::OK || v["id"].as_str() != Some(id) {
        return Err(format!("GET /api/machineactions/{id} answered {status}: {v}"));
    }
    Ok(())
}
