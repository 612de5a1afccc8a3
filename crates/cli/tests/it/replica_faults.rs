//! Faults of a service of replicas on PostgreSQL, under write load: a replica killed
//! with SIGKILL, and the database stopped and started again. The rest of the service
//! goes on serving (or answers 503 with the MDE envelope and `Retry-After` while the
//! database is away), recovers by itself, and every action answered 201 is still there.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::{
    generous_limits, private_tempdir, within, Api, Device, TestServer, ALL_ROLES,
};
use crate::process::{self, ChildGuard};
use crate::wire::Resp;

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// Actions answered 201: (id, machine id).
    acknowledged: Mutex<Vec<(String, String)>>,
    /// 201s answered after the fault began.
    acknowledged_since_fault: AtomicUsize,
    /// Answers by status (0 for no answer: connection refused or cut).
    statuses: Mutex<BTreeMap<u16, usize>>,
    /// Answers that are not what a client may get in these faults.
    unexpected: Mutex<Vec<String>>,
    fault: AtomicBool,
}

impl Tally {
    fn count(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
    }

    fn unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }

    fn acknowledged(&self) -> Vec<(String, String)> {
        self.acknowledged.lock().unwrap().clone()
    }
}

/// One device's writer: restrict through the next replica, cancel what was created (so
/// the device is free again), and again, until `stop`. A 503 must carry the MDE
/// envelope and `Retry-After`; every other answer but 201, 200 and "already in
/// progress" is unexpected.
async fn writer(
    apis: Vec<Api>,
    device: Device,
    start: usize,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut turn = start;
    while !stop.load(Ordering::SeqCst) {
        let api = &apis[turn % apis.len()];
        turn += 1;
        let sent = api
            .request(
                reqwest::Method::POST,
                &format!("/api/machines/{}/restrictCodeExecution", device.machine_id),
            )
            .json(&json!({ "Comment": "under load" }))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => Resp::read(r).await,
            Err(e) if e.is_timeout() => {
                tally.unexpected(format!("a restrict hung past the client's deadline: {e}"));
                continue;
            }
            Err(_) => {
                // A replica that is gone: the call was not acknowledged.
                tally.count(0);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        tally.count(resp.status);
        match resp.status {
            201 => {
                let id = resp.json()["id"].as_str().unwrap().to_string();
                if tally.fault.load(Ordering::SeqCst) {
                    tally
                        .acknowledged_since_fault
                        .fetch_add(1, Ordering::SeqCst);
                }
                tally
                    .acknowledged
                    .lock()
                    .unwrap()
                    .push((id.clone(), device.machine_id.clone()));
                cancel_somewhere(&apis, turn, &id).await;
            }
            400 if resp.text.contains("ActiveRequestAlreadyExists") => {
                // An action whose 201 was lost with its replica: find it and free the device.
                free_device(&apis, turn, &device.machine_id).await;
            }
            503 => {
                let v = resp.json();
                if v["error"]["code"] != "ServiceUnavailable"
                    || resp.header("retry-after").is_none()
                {
                    tally.unexpected(format!(
                        "503 without the envelope or Retry-After: {}",
                        resp.text
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => tally.unexpected(format!("restrict answered {other}: {}", resp.text)),
        }
    }
}

/// Cancels `id` through the first replica that answers.
async fn cancel_somewhere(apis: &[Api], from: usize, id: &str) {
    for k in 0..apis.len() * 3 {
        let api = &apis[(from + k) % apis.len()];
        let sent = api
            .request(
                reqwest::Method::POST,
                &format!("/api/machineactions/{id}/cancel"),
            )
            .json(&json!({ "Comment": "done" }))
            .send()
            .await;
        if let Ok(r) = sent {
            if r.status() == 200 || r.status() == 400 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn free_device(apis: &[Api], from: usize, machine_id: &str) {
    let path =
        format!("/api/machineactions?$filter=machineId eq '{machine_id}' and status eq 'Pending'");
    for k in 0..apis.len() {
        let api = &apis[(from + k) % apis.len()];
        if let Ok(r) = api.request(reqwest::Method::GET, &path).send().await {
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                for a in v["value"].as_array().into_iter().flatten() {
                    if let Some(id) = a["id"].as_str() {
                        cancel_somewhere(apis, from, id).await;
                    }
                }
                return;
            }
        }
    }
}

/// Starts one writer per device; returns the stop flag and the tasks.
fn start_load(
    apis: &[Api],
    devices: &[Device],
    tally: &Arc<Tally>,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            tokio::spawn(writer(
                apis.to_vec(),
                d.clone(),
                i,
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();
    (stop, tasks)
}

/// Every acknowledged action is there, on the device it was created for.
async fn assert_all_there(api: &Api, acknowledged: &[(String, String)]) {
    for (id, machine) in acknowledged {
        let r = api.get(&format!("/api/machineactions/{id}")).await;
        assert_eq!(
            r.status, 200,
            "acknowledged action {id} is lost: {}",
            r.text
        );
        assert_eq!(r.json()["machineId"], machine.as_str());
    }
}

/// `appfence serve` on PostgreSQL as a separate process, sharing `data_dir` (its key
/// file) and the issuer URL with the other replicas.
async fn spawn_replica(
    url: &str,
    data_dir: &std::path::Path,
    config: &std::path::Path,
    public_url: &str,
    logs: &std::path::Path,
    name: &str,
) -> (ChildGuard, String) {
    let port = process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<String> = vec![
        "--listen".into(),
        listen.clone(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--config".into(),
        config.display().to_string(),
        "--public-url".into(),
        public_url.into(),
    ];
    let env = [("APPFENCE_DATABASE_URL".to_string(), url.to_string())];
    let (logs, name) = (logs.to_path_buf(), name.to_string());
    let child = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        process::start_serve(&args, &env, &logs, &name, Duration::from_secs(60))
    })
    .await
    .unwrap();
    (child, format!("http://{listen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_write_load_loses_nothing_acknowledged() {
    let Some(cluster) = appfence_testkit::postgres_or_skip("replica killed under load") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let dir = private_tempdir();
    let logs = private_tempdir();
    // The in-process replica creates the key file the processes share.
    let first = TestServer::start_on(dir.path(), Some(&url), generous_limits, None).await;
    let public_url = first.state.public_url();
    let config = dir.path().join("appfence.toml");
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&config)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[rate_limits]\nper_minute = 100000\nper_hour = 100000\n",
    )
    .unwrap();
    let (mut doomed, doomed_url) = spawn_replica(
        &url,
        dir.path(),
        &config,
        &public_url,
        logs.path(),
        "doomed",
    )
    .await;
    let (survivor, survivor_url) = spawn_replica(
        &url,
        dir.path(),
        &config,
        &public_url,
        logs.path(),
        "survivor",
    )
    .await;

    let app = first.app(ALL_ROLES).await;
    let token = first.token(&app).await;
    let on = |base: &str| Api {
        base: base.to_string(),
        ..first.anonymous().with_token(&token)
    };
    let apis = vec![on(&first.base), on(&doomed_url), on(&survivor_url)];
    let mut devices = Vec::new();
    for i in 0..16 {
        devices.push(first.enroll(&format!("busy-{i}")).await);
    }

    let tally = Arc::new(Tally::default());
    let (stop, tasks) = start_load(&apis, &devices, &tally);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tally.fault.store(true, Ordering::SeqCst);
    doomed.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    crate::writers::stop_writers(stop, tasks).await;

    let statuses = tally.statuses.lock().unwrap().clone();
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "{unexpected:?} (statuses {statuses:?})"
    );
    assert!(
        tally.acknowledged_since_fault.load(Ordering::SeqCst) > 0,
        "the other replicas go on serving: {statuses:?}"
    );
    let acknowledged = tally.acknowledged();
    assert_all_there(&apis[2], &acknowledged).await;
    assert_all_there(&apis[0], &acknowledged).await;
    println!(
        "killed a replica under load: statuses {statuses:?}, {} acknowledged",
        acknowledged.len()
    );

    survivor.terminate();
    drop(survivor);
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_and_restarted_under_load_loses_nothing_acknowledged() {
    let Some(cluster) = appfence_testkit::private_postgres_or_skip("database restarted under load")
    else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let first = TestServer::start_on_postgres(&url, generous_limits, None).await;
    let public_url = first.state.public_url();
    let second = first
        .replica(|c| {
            generous_limits(c);
            c.public_url = Some(public_url.clone());
        })
        .await;
    let app = first.app(ALL_ROLES).await;
    let token = first.token(&app).await;
    let apis = vec![
        first.anonymous().with_token(&token),
        second.anonymous().with_token(&token),
    ];
    let mut devices = Vec::new();
    for i in 0..12 {
        devices.push(first.enroll(&format!("busy-{i}")).await);
    }
    // A device waiting on the second replica when the database goes.
    let waiting = tokio::spawn({
        let mut device = devices[0].clone();
        device.base = second.base.clone();
        async move {
            let r = device
                .http
                .get(format!("{}/agent/v1/commands?waitSeconds=50", device.base))
                .bearer_auth(&device.credential)
                .send()
                .await;
            match r {
                Ok(r) => Ok(Resp::read(r).await),
                Err(e) => Err(e.to_string()),
            }
        }
    });

    let tally = Arc::new(Tally::default());
    let (stop, tasks) = start_load(&apis, &devices, &tally);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.stop().unwrap();
    tally.fault.store(true, Ordering::SeqCst);
    // While it is down: 503s (counted and checked by the writers), nothing hangs.
    within(
        Duration::from_secs(30),
        "503s while the database is down",
        async {
            while tally
                .statuses
                .lock()
                .unwrap()
                .get(&503)
                .copied()
                .unwrap_or(0)
                < 10
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let waited = within(Duration::from_secs(30), "the long-poll to end", waiting)
        .await
        .unwrap()
        .expect("the long-poll is answered");
    if waited.status != 200 {
        waited.assert_error(503, "ServiceUnavailable");
    }

    cluster.start().unwrap();
    let before = tally.acknowledged_since_fault.load(Ordering::SeqCst);
    within(
        Duration::from_secs(60),
        "service after the database is back",
        async {
            while tally.acknowledged_since_fault.load(Ordering::SeqCst) < before + 20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    crate::writers::stop_writers(stop, tasks).await;

    let statuses = tally.statuses.lock().unwrap().clone();
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "{unexpected:?} (statuses {statuses:?})"
    );
    let acknowledged = tally.acknowledged();
    assert_all_there(&apis[0], &acknowledged).await;
    assert_all_there(&apis[1], &acknowledged).await;
    // Both replicas serve again, and are ready.
    for s in [&first, &second] {
        let r = s.http.get(s.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    println!(
        "restarted the database under load: statuses {statuses:?}, {} acknowledged",
        acknowledged.len()
    );
    second.stop().await;
    first.stop().await;
}
