//! Measurement 2: `GET /api/machineactions/{id}` against `GET /healthz`, the same client
//! and concurrency. `/healthz` is the cost of the HTTP round trip alone; the difference
//! is the token check, the store read and the JSON response. The two parts that can be
//! called without HTTP are measured alongside, to split that difference:
//! `Store::action` (the read) and the token check of the `Authenticated` extractor.
//!
//! All four run in timed rounds whose order rotates (A B C D, B C D A, ...), so that
//! over every four rounds each one has run in each position once and linear drift of a
//! shared machine falls on all of them alike.

use std::sync::Arc;
use std::time::Duration;

use appfence_server::oauth::audience::TokenPolicy;
use appfence_server::oauth::verify::verify_access_token;
use appfence_store::Store;
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;

use crate::load;
use crate::setup::Harness;
use crate::stats::Sample;

#[derive(Default)]
pub struct Reads {
    pub get_action: Sample,
    pub healthz: Sample,
    pub store_read: Sample,
    pub token_check: Sample,
}

#[derive(Clone, Copy)]
enum Kind {
    GetAction,
    Healthz,
    StoreRead,
    TokenCheck,
}

const KINDS: [Kind; 4] = [
    Kind::GetAction,
    Kind::Healthz,
    Kind::StoreRead,
    Kind::TokenCheck,
];

/// Checks once that reading an action answers it, then measures `rounds` rounds of
/// `round` per kind.
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
        for k in 0..KINDS.len() {
            match KINDS[(r + k) % KINDS.len()] {
                Kind::GetAction => out
                    .get_action
                    .merge(get_actions(h, ids.clone(), round, concurrency).await?),
                Kind::Healthz => out.healthz.merge(healthz(h, round, concurrency).await?),
                Kind::StoreRead => out
                    .store_read
                    .merge(store_reads(h, ids.clone(), round, concurrency).await?),
                // CPU-bound and synchronous: one task gives the cost of one check.
                Kind::TokenCheck => out.token_check.merge(token_checks(h, round).await?),
            }
        }
    }
    Ok(out)
}

/// Opens the client's keep-alive connections before anything is timed.
pub async fn warm_up(h: &Harness, concurrency: usize) -> Result<(), String> {
    healthz(h, Duration::from_millis(300), concurrency)
        .await
        .map(|_| ())
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

async fn store_reads(
    h: &Harness,
    ids: Arc<Vec<String>>,
    round: Duration,
    concurrency: usize,
) -> Result<Sample, String> {
    let store: Arc<dyn Store> = h.store.clone();
    let tenant = h.tenant.id.clone();
    load::run_for(round, concurrency, move |n| {
        let (store, tenant, ids) = (store.clone(), tenant.clone(), ids.clone());
        async move {
            let id = &ids[n % ids.len()];
            match store.action(&tenant, id).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("Store::action: {id} not found")),
                Err(e) => Err(format!("Store::action: {e}")),
            }
        }
    })
    .await
}

/// What the `Authenticated` extractor does for every API request
/// (crates/server/src/oauth/extract.rs): build the token policy, verify the JWT, check
/// that its tenant exists (answered from the server's cache).
async fn token_checks(h: &Harness, round: Duration) -> Result<Sample, String> {
    let state = h.server.state.clone();
    let token: Arc<str> = h
        .authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .into();
    load::run_for(round, 1, move |_| {
        let (state, token) = (state.clone(), token.clone());
        async move {
            let policy = TokenPolicy::new(&state.public_url());
            let principal =
                verify_access_token(&state.keys.current(), &policy, &token, state.clock.now())
                    .map_err(|e| format!("token check: {e}"))?;
            let known = state
                .tenants
                .exists(state.store.as_ref(), &principal.tenant_id)
                .await
                .map_err(|e| format!("tenant check: {e}"))?;
            if known {
                Ok(())
            } else {
                Err("token check: the tenant is unknown".into())
            }
        }
    })
    .await
}

/// Sends the request and reads the whole body; anything but 200 is an error.
pub async fn expect_ok(req: reqwest::RequestBuilder, what: &str) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{what} body: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "{what} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
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
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("GET action body: {e}"))?;
    if status != StatusCode::OK || v["id"].as_str() != Some(id) {
        return Err(format!(
            "GET /api/machineactions/{id} answered {status}: {v}"
        ));
    }
    Ok(())
}
