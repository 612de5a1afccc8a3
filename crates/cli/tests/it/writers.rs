//! Concurrent writers for fault tests: indicators, restrict/unrestrict and
//! restrict-then-cancel loops that record every write the server acknowledged, so that
//! a test can check each is still there after the fault. A 503 must carry the envelope
//! and `Retry-After`; a 500 is always a failure; a lost connection is one unless the
//! test kills the server on purpose (`Tally::server_may_die`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::wire::Resp;

/// What the writers saw.
#[derive(Default)]
pub(crate) struct Tally {
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    pub unexpected: Mutex<Vec<String>>,
    pub indicators: Mutex<Vec<String>>,
    pub actions: Mutex<Vec<String>>,
    /// Writes acknowledged after the disk was freed.
    pub since_freed: AtomicU64,
    pub freed: AtomicBool,
    /// Actions whose cancellation was acknowledged (200).
    pub cancelled: Mutex<Vec<String>>,
    /// Connections lost while the server is killed on purpose are not failures.
    pub server_may_die: AtomicBool,
}

impl Tally {
    pub fn count(&self, status: u16) -> u64 {
        let mut s = self.statuses.lock().unwrap();
        *s.entry(status).or_default() += 1;
        s[&status]
    }

    pub fn of(&self, status: u16) -> u64 {
        self.statuses
            .lock()
            .unwrap()
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    pub fn unexpected(&self, what: String) {
        let mut all = self.unexpected.lock().unwrap();
        // The first few say what went wrong; the count says how often.
        if all.len() < 5 {
            all.push(what);
        } else if all.len() == 5 {
            all.push("(and more)".into());
        }
    }

    /// Checks an answer: a 503 carries the envelope and `Retry-After`; a 500 or a
    /// dropped connection is a failure. Returns the answer when there was one.
    pub async fn check(
        &self,
        what: &str,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Option<Resp> {
        let r = match sent {
            Err(e) => {
                if self.server_may_die.load(Ordering::SeqCst) {
                    self.count(0);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    self.unexpected(format!("{what}: no answer: {e}"));
                }
                return None;
            }
            Ok(r) => Resp::read(r).await,
        };
        self.count(r.status);
        match r.status {
            503 => {
                if r.json()["error"]["code"] != "ServiceUnavailable"
                    || r.header("retry-after").is_none()
                {
                    self.unexpected(format!(
                        "{what}: 503 without envelope or Retry-After: {}",
                        r.text
                    ));
                }
            }
            s if s >= 500 => self.unexpected(format!("{what}: {s}: {}", r.text)),
            _ => {}
        }
        Some(r)
    }
}

fn new_hash(n: u64) -> String {
    format!("{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed)
}

/// Submits indicators until `stop`.
pub(crate) async fn indicator_writer(
    http: reqwest::Client,
    api: String,
    token: String,
    id: u64,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut n = id << 32;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let sent = http
            .post(format!("{api}/indicators"))
            .bearer_auth(&token)
            .json(&json!({
                "indicatorValue": new_hash(n),
                "indicatorType": "FileSha256",
                "action": "Allowed",
                "title": format!("tool {n}"),
                "description": "written under a fault",
            }))
            .send()
            .await;
        let Some(r) = tally.check("submit an indicator", sent).await else {
            continue;
        };
        match r.status {
            200 => {
                tally
                    .indicators
                    .lock()
                    .unwrap()
                    .push(r.json()["id"].to_string().trim_matches('"').to_string());
                if tally.freed.load(Ordering::SeqCst) {
                    tally.since_freed.fetch_add(1, Ordering::SeqCst);
                }
            }
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => tally.unexpected(format!("submit an indicator: {other}: {}", r.text)),
        }
    }
}

/// Restricts and releases `machine` until `stop`.
pub(crate) async fn restrict_writer(
    http: reqwest::Client,
    api: String,
    token: String,
    machine: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut restrict = true;
    while !stop.load(Ordering::SeqCst) {
        let verb = if restrict {
            "restrictCodeExecution"
        } else {
            "unrestrictCodeExecution"
        };
        let sent = http
            .post(format!("{api}/machines/{machine}/{verb}"))
            .bearer_auth(&token)
            .json(&json!({ "Comment": "under a fault" }))
            .send()
            .await;
        let Some(r) = tally.check(verb, sent).await else {
            continue;
        };
        match r.status {
            201 => {
                tally
                    .actions
                    .lock()
                    .unwrap()
                    .push(r.json()["id"].as_str().unwrap().to_string());
                if tally.freed.load(Ordering::SeqCst) {
                    tally.since_freed.fetch_add(1, Ordering::SeqCst);
                }
                restrict = !restrict;
            }
            // The previous action is still running (or its device is catching up).
            400 if r.text.contains("ActiveRequestAlreadyExists") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => tally.unexpected(format!("{verb}: {other}: {}", r.text)),
        }
    }
}

/// Restricts `machine` and cancels the action at once, until `stop`; records each
/// acknowledged cancellation.
pub(crate) async fn cancel_writer(
    http: reqwest::Client,
    api: String,
    token: String,
    machine: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let sent = http
            .post(format!("{api}/machines/{machine}/restrictCodeExecution"))
            .bearer_auth(&token)
            .json(&json!({ "Comment": "to be cancelled" }))
            .send()
            .await;
        let Some(r) = tally.check("restrict to cancel", sent).await else {
            continue;
        };
        let id = match r.status {
            201 => r.json()["id"].as_str().unwrap().to_string(),
            400 if r.text.contains("ActiveRequestAlreadyExists") => {
                // An action of an earlier round is open: find it and cancel it.
                let open = http
                    .get(format!("{api}/machineactions?$filter=machineId eq '{machine}' and status eq 'Pending'"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                if let Some(list) = tally.check("find the open action", open).await {
                    if let Some(id) = list.json()["value"][0]["id"].as_str() {
                        let _ = http
                            .post(format!("{api}/machineactions/{id}/cancel"))
                            .bearer_auth(&token)
                            .json(&json!({ "Comment": "left over" }))
                            .send()
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            503 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            other => {
                tally.unexpected(format!("restrict to cancel: {other}: {}", r.text));
                continue;
            }
        };
        tally.actions.lock().unwrap().push(id.clone());
        let sent = http
            .post(format!("{api}/machineactions/{id}/cancel"))
            .bearer_auth(&token)
            .json(&json!({ "Comment": "cancelled under a fault" }))
            .send()
            .await;
        let Some(r) = tally.check("cancel", sent).await else {
            continue;
        };
        match r.status {
            200 => tally.cancelled.lock().unwrap().push(id),
            // It completed first.
            400 => {}
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => tally.unexpected(format!("cancel: {other}: {}", r.text)),
        }
    }
}

/// Tells the writers to stop and waits for them (a minute at most).
pub(crate) async fn stop_writers(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    crate::harness::within(Duration::from_secs(60), "the writers to stop", async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}
