//! Crash consistency of the real server on SQLite: `serve --demo` killed with SIGKILL
//! while writers restrict, unrestrict, cancel and submit indicators, three rounds on
//! one data directory. After each restart the store opens cleanly and every write the
//! server acknowledged (201/200) is there: each action, each cancellation as
//! `Cancelled`, each indicator.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::demo::{call, machine_ids, read_demo, token};
use crate::harness::{private_tempdir, within};
use crate::process::{free_port, start_serve, ChildGuard};
use crate::writers::{cancel_writer, indicator_writer, restrict_writer, Tally};

const ROUNDS: usize = 3;

fn start(data: &Path, config: &Path, port: u16, logs: &Path, round: usize) -> ChildGuard {
    let (l, d, c) = (
        format!("127.0.0.1:{port}"),
        data.display().to_string(),
        config.display().to_string(),
    );
    start_serve(
        &[
            "--demo",
            "--demo-devices",
            "4",
            "--demo-step-delay",
            "0s",
            "--listen",
            &l,
            "--data-dir",
            &d,
            "--config",
            &c,
        ],
        &[],
        logs,
        &format!("serve-{round}"),
        Duration::from_secs(60),
    )
}

/// Every acknowledged indicator, action and cancellation is there; returns how many
/// were checked.
async fn verify(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    tally: &Tally,
    round: usize,
) -> usize {
    let listed = call(
        http,
        token,
        reqwest::Method::GET,
        &format!("{api}/indicators"),
        None,
    )
    .await;
    let indicators: HashSet<String> = listed.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].to_string().trim_matches('"').to_string())
        .collect();
    let acknowledged = tally.indicators.lock().unwrap().clone();
    for id in &acknowledged {
        assert!(
            indicators.contains(id),
            "round {round}: acknowledged indicator {id} is lost"
        );
    }
    let cancelled: HashSet<String> = tally.cancelled.lock().unwrap().iter().cloned().collect();
    let actions = tally.actions.lock().unwrap().clone();
    for id in &actions {
        let r = call(
            http,
            token,
            reqwest::Method::GET,
            &format!("{api}/machineactions/{id}"),
            None,
        )
        .await;
        assert_eq!(
            r.status, 200,
            "round {round}: acknowledged action {id} is lost: {}",
            r.text
        );
        if cancelled.contains(id) {
            assert_eq!(
                r.json()["status"],
                "Cancelled",
                "round {round}: {id} was cancelled: {}",
                r.text
            );
        }
    }
    acknowledged.len() + actions.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_round_after_round() {
    let dir = private_tempdir();
    let data = dir.path().join("data");
    let config = dir.path().join("appfence.toml");
    std::fs::write(
        &config,
        "[rate_limits]\nper_minute = 1000000\nper_hour = 1000000\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}/api");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    tally.server_may_die.store(true, Ordering::SeqCst);
    let mut checked = 0;
    for round in 1..=ROUNDS {
        let mut server =
            tokio::task::block_in_place(|| start(&data, &config, port, dir.path(), round));
        let demo = read_demo(&data);
        let token = token(&http, &demo).await;
        let machines = machine_ids(&http, &token, &api).await;
        assert_eq!(
            machines.len(),
            4,
            "the store opened cleanly with its devices"
        );

        // Everything acknowledged so far, before this round's writes.
        checked += verify(&http, &api, &token, &tally, round).await;

        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for id in 0..2 {
            let id = (round * 10 + id) as u64;
            writers.push(tokio::spawn(indicator_writer(
                http.clone(),
                api.clone(),
                token.clone(),
                id,
                tally.clone(),
                stop.clone(),
            )));
        }
        writers.push(tokio::spawn(restrict_writer(
            http.clone(),
            api.clone(),
            token.clone(),
            machines[0].clone(),
            tally.clone(),
            stop.clone(),
        )));
        writers.push(tokio::spawn(restrict_writer(
            http.clone(),
            api.clone(),
            token.clone(),
            machines[1].clone(),
            tally.clone(),
            stop.clone(),
        )));
        writers.push(tokio::spawn(cancel_writer(
            http.clone(),
            api.clone(),
            token.clone(),
            machines[2].clone(),
            tally.clone(),
            stop.clone(),
        )));
        let before = tally.of(200) + tally.of(201);
        within(Duration::from_secs(60), "writes before the kill", async {
            while tally.of(200) + tally.of(201) < before + 100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        crate::writers::stop_writers(stop, writers).await;
    }
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // The last round's writes, after one more restart.
    let _server =
        tokio::task::block_in_place(|| start(&data, &config, port, dir.path(), ROUNDS + 1));
    let demo = read_demo(&data);
    let token = token(&http, &demo).await;
    checked += verify(&http, &api, &token, &tally, ROUNDS + 1).await;
    let statuses = tally.statuses.lock().unwrap().clone();
    println!(
        "{ROUNDS} SIGKILL rounds: statuses {statuses:?}; {} actions ({} cancelled) and {} indicators acknowledged, all present ({checked} checks over the restarts)",
        tally.actions.lock().unwrap().len(),
        tally.cancelled.lock().unwrap().len(),
        tally.indicators.lock().unwrap().len()
    );
}
