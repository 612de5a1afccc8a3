//! Measurement 1: creating actions. Three ways of creating the same pending restrict
//! action, each on devices of its own (one action per device, so the duplicate rule
//! never refuses one), run in interleaved rounds so that drift of a shared, noisy
//! machine falls on all of them alike:
//!
//! - `http`: `POST /api/machines/{id}/restrictCodeExecution` through the whole server
//!   (token check, device lookup, store transaction, JSON response);
//! - `store`: `Store::create_action` called directly (the store's transaction: the
//!   action row plus its audit row, one commit), to split the cost between HTTP and store;
//! - `raw`: the action row alone, one autocommit `INSERT` into a separate database
//!   with the same schema and durability (the baseline);
//! - `raw_tx`: the store's transaction shape on that raw connection (`BEGIN IMMEDIATE`,
//!   action row, audit row, `COMMIT`), to split the store's cost between what it writes
//!   and how it is called.

use std::sync::Arc;

use appfence_core::records::MachineRecord;
use appfence_core::{Clock, SystemClock};
use appfence_store::Store;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use crate::load;
use crate::raw_sqlite::RawSqlite;
use crate::setup::{pending_restrict, Harness, COMMENT};
use crate::stats::Sample;

#[derive(Default)]
pub struct Creation {
    pub http: Sample,
    pub store: Sample,
    pub raw: Sample,
    pub raw_tx: Sample,
    /// Ids of the actions created over HTTP, for the read measurement.
    pub action_ids: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Way {
    Http,
    Store,
    Raw,
    RawTx,
}

/// Creates one action on each of `http_devices` over HTTP, one on each of
/// `store_devices` through the store, and `http_devices.len()` raw rows in the baseline
/// database (and as many in the store's transaction shape), in `rounds` interleaved
/// rounds whose order rotates (so over every four rounds each way has run in each
/// position once).
pub async fn run(
    h: &Harness,
    raw: &mut RawSqlite,
    http_devices: &[String],
    store_devices: &[MachineRecord],
    rounds: usize,
    concurrency: usize,
) -> Result<Creation, String> {
    let rounds = rounds.max(1);
    let mut out = Creation::default();
    let ways = [Way::Http, Way::Store, Way::Raw, Way::RawTx];
    for r in 0..rounds {
        let http_chunk = chunk(http_devices, r, rounds);
        let store_chunk = chunk(store_devices, r, rounds);
        for k in 0..ways.len() {
            match ways[(r + k) % ways.len()] {
                Way::Http => {
                    let (sample, ids) = over_http(h, http_chunk, concurrency).await?;
                    out.http.merge(sample);
                    out.action_ids.extend(ids);
                }
                Way::Store => out
                    .store
                    .merge(through_store(h, store_chunk, concurrency).await?),
                Way::Raw => out.raw.merge(raw.insert(http_chunk.len()).await?),
                Way::RawTx => out
                    .raw_tx
                    .merge(raw.insert_with_audit(http_chunk.len()).await?),
            }
        }
    }
    Ok(out)
}

/// Part `r` of `rounds` nearly equal parts of `items`.
fn chunk<T>(items: &[T], r: usize, rounds: usize) -> &[T] {
    let at = |k: usize| items.len() * k / rounds;
    &items[at(r)..at(r + 1)]
}

async fn over_http(
    h: &Harness,
    devices: &[String],
    concurrency: usize,
) -> Result<(Sample, Vec<String>), String> {
    let devices: Arc<Vec<String>> = Arc::new(devices.to_vec());
    let body = serde_json::json!({ "Comment": COMMENT }).to_string();
    let (http, base, auth) = (h.http.clone(), h.base.clone(), h.authorization.clone());
    let (sample, bodies) = load::run_count(devices.len(), concurrency, move |i| {
        let req = http
            .post(format!(
                "{base}/api/machines/{}/restrictCodeExecution",
                devices[i]
            ))
            .header(AUTHORIZATION, auth.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        async move {
            let resp = req.send().await.map_err(|e| format!("restrict: {e}"))?;
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| format!("restrict body: {e}"))?;
            if status != StatusCode::CREATED {
                return Err(format!(
                    "restrict answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
            Ok(bytes)
        }
    })
    .await?;
    // Parsed after the clock stopped: the client's JSON work is not the server's cost.
    let ids = bodies
        .iter()
        .map(|b| {
            let v: serde_json::Value =
                serde_json::from_slice(b).map_err(|e| format!("restrict response: {e}"))?;
            match (v["id"].as_str(), v["status"].as_str()) {
                (Some(id), Some("Pending")) => Ok(id.to_string()),
                _ => Err(format!("unexpected restrict response: {v}")),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((sample, ids))
}

async fn through_store(
    h: &Harness,
    devices: &[MachineRecord],
    concurrency: usize,
) -> Result<Sample, String> {
    let devices: Arc<Vec<MachineRecord>> = Arc::new(devices.to_vec());
    let store: Arc<dyn Store> = h.store.clone();
    let (tenant, requestor) = (h.tenant.id.clone(), h.requestor.clone());
    let (sample, _) = load::run_count(devices.len(), concurrency, move |i| {
        let (store, devices) = (store.clone(), devices.clone());
        let a = pending_restrict(
            &tenant,
            &requestor,
            &devices[i].id,
            &devices[i].computer_dns_name,
            SystemClock.now(),
        );
        async move {
            store
                .create_action(&a)
                .await
                .map_err(|e| format!("Store::create_action: {e}"))
        }
    })
    .await?;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_item_once() {
        let items: Vec<usize> = (0..10).collect();
        let parts: Vec<&[usize]> = (0..3).map(|r| chunk(&items, r, 3)).collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![3, 3, 4]
        );
        assert_eq!(parts.concat(), items);
    }
}
