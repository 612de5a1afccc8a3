//! Several replicas on one PostgreSQL database behave as one service: the "already in
//! progress" rule, MDE's rate limits and the sweeper hold across them; tokens, devices
//! and changes made through one are seen by all. Each replica is a whole server with its
//! own connections and caches, as another process would be; `replica_faults` runs them
//! as processes and kills them.
//!
//! Every test takes a fresh database of the throwaway cluster (`appfence-testkit`) and
//! says `skipped: <why>` where PostgreSQL cannot be had (a failure under `CI=true`).

use std::sync::Arc;
use std::time::Duration;

use appfence_core::{Clock, ManualClock, SystemClock};
use appfence_proto::ActionStatus;
use appfence_proto::Timestamp;
use appfence_server::ServerConfig;
use futures::stream::{self, StreamExt};
use serde_json::json;

use crate::harness::{generous_limits, within, TestServer, ALL_ROLES};

/// `n` replicas on a fresh database, each tweaked by `tweak` and on `clock` (or the
/// system clock); `None` when PostgreSQL cannot be had.
pub async fn replicas(
    test: &str,
    n: usize,
    tweak: impl Fn(&mut ServerConfig),
    clock: Option<Arc<ManualClock>>,
) -> Option<Vec<TestServer>> {
    let cluster = appfence_testkit::postgres_or_skip(test)?;
    let url = cluster.fresh_database().expect("a fresh database");
    let first = TestServer::start_on_postgres(&url, &tweak, clock.clone()).await;
    // Replicas behind one load balancer share its URL: the tokens' issuer.
    let public_url = first.state.public_url();
    let mut all = Vec::with_capacity(n);
    for _ in 1..n {
        let tweak = |c: &mut ServerConfig| {
            tweak(c);
            c.public_url = Some(public_url.clone());
        };
        all.push(first.replica_with_clock(tweak, clock.clone()).await);
    }
    all.insert(0, first);
    Some(all)
}

async fn stop_all(servers: Vec<TestServer>) {
    // Replicas first: the first owns the temp dir holding the key file.
    for s in servers.into_iter().rev() {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_restrict_wins_across_three_replicas() {
    let Some(servers) = replicas("replicas: one restrict wins", 3, generous_limits, None).await
    else {
        return;
    };
    // An app registered through one replica, its token issued by another, a device
    // enrolled through the third: each works through all.
    let app = servers[0].app(ALL_ROLES).await;
    let token = servers[1].token(&app).await;
    let device = servers[2].enroll("contested").await;
    let apis: Vec<_> = servers
        .iter()
        .map(|s| s.anonymous().with_token(&token))
        .collect();

    let calls = (0..300).map(|i| {
        let api = apis[i % apis.len()].clone();
        let machine = device.machine_id.clone();
        async move { api.restrict(&machine, &format!("call {i}")).await }
    });
    let responses = within(
        Duration::from_secs(120),
        "300 restricts",
        stream::iter(calls)
            .buffer_unordered(100)
            .collect::<Vec<_>>(),
    )
    .await;
    let mut created = Vec::new();
    for r in &responses {
        match r.status {
            201 => created.push(r.json()["id"].as_str().unwrap().to_string()),
            _ => {
                let e = r.assert_error(400, "ActiveRequestAlreadyExists");
                assert_eq!(e.message, "Action is already in progress");
            }
        }
    }
    assert_eq!(created.len(), 1, "exactly one restrict is created");
    let stored = servers[0].stored_actions(&servers[0].tenant_id).await;
    assert_eq!(stored.len(), 1, "and exactly one is stored");

    // The device hears of it on one replica, reports through another; every replica
    // then shows it Succeeded.
    let mut device_on_0 = device.clone();
    device_on_0.base = servers[0].base.clone();
    let polled = device_on_0.poll(5).await;
    assert_eq!(polled["commands"][0]["actionId"], created[0].as_str());
    let mut device_on_1 = device.clone();
    device_on_1.base = servers[1].base.clone();
    device_on_1.ack(&created[0]).await;
    device_on_1.report(&created[0], "Succeeded").await;
    for api in &apis {
        assert_eq!(api.action(&created[0]).await["status"], "Succeeded");
    }
    stop_all(servers).await;
}

/// The start of the current hour plus `offset`.
fn hour_start_plus(offset: Duration) -> Timestamp {
    let now = SystemClock.now().unix_seconds();
    Timestamp::from_unix_seconds(now - now.rem_euclid(3600)).plus(offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_exactly_across_replicas() {
    // One clock for all replicas, as synchronised hosts have; the windows are exact.
    let clock = Arc::new(ManualClock::starting_now());
    clock.set(hour_start_plus(Duration::from_secs(1)));
    let Some(servers) = replicas("replicas: rate limits", 3, |_| {}, Some(clock.clone())).await
    else {
        return;
    };
    let app = servers[0].app(ALL_ROLES).await;
    let token = servers[0].token(&app).await;
    let apis: Vec<_> = servers
        .iter()
        .map(|s| s.anonymous().with_token(&token))
        .collect();

    let calls = (0..1000).map(|i| {
        let api = apis[i % apis.len()].clone();
        async move { api.get("/api/machines").await }
    });
    let responses = within(
        Duration::from_secs(120),
        "1,000 calls",
        stream::iter(calls).buffer_unordered(50).collect::<Vec<_>>(),
    )
    .await;
    let mut accepted = 0;
    for r in &responses {
        if r.status == 200 {
            accepted += 1;
            continue;
        }
        let e = r.assert_error(429, "TooManyRequests");
        assert_eq!(
            e.message,
            "API calls quota exceeded! maximum allowed 100 per 00:01:00"
        );
        assert_eq!(r.header("retry-after"), Some("59"), "{:?}", r.headers);
    }
    assert_eq!(
        accepted, 100,
        "exactly MDE's 100 calls a minute, over all replicas"
    );

    // Another API of the same caller has its own count, on every replica.
    for api in &apis {
        let r = api.get("/api/machineactions").await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // The next minute is a new window everywhere.
    clock.advance(Duration::from_secs(60));
    for (used, api) in apis.iter().enumerate() {
        let r = api.get("/api/machines").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let remaining = format!("\"minute\";r={};t=", 99 - used);
        let header = r.header("ratelimit").unwrap_or_default();
        assert!(header.starts_with(&remaining), "{header}");
    }
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_waiting_on_one_replica_hear_of_changes_made_on_another() {
    let long_polls = |c: &mut ServerConfig| c.long_poll_max = Duration::from_secs(60);
    let Some(servers) = replicas("replicas: wake-ups", 2, long_polls, None).await else {
        return;
    };
    let (a, b) = (&servers[0], &servers[1]);
    let device = a.enroll("waiting").await;
    let on_b = b.api(ALL_ROLES).await;
    let version_before = device.poll(0).await["desired"]["allowlistVersion"]
        .as_u64()
        .unwrap();

    // A device waiting for up to 50 s on A: an action created on B ends the wait (the
    // deadline below is well inside the 50 s, so only a wake-up passes).
    let waiting = tokio::spawn({
        let device = device.clone();
        async move { device.poll(50).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = on_b.restrict(&device.machine_id, "from b").await;
    assert_eq!(created.status, 201, "{}", created.text);
    let polled = within(Duration::from_secs(20), "the wake-up on A", waiting)
        .await
        .unwrap();
    assert_eq!(polled["commands"][0]["actionId"], created.json()["id"]);

    // An allowlist change on B raises the version once; A's waiting device learns it.
    let waiting = tokio::spawn({
        let device = device.clone();
        async move {
            loop {
                let r = device.poll(50).await;
                if r["desired"]["allowlistVersion"].as_u64() != Some(version_before) {
                    return r;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ti = b.api(&["Ti.ReadWrite.All"]).await;
    let added = ti
        .post(
            "/api/indicators",
            &json!({
                "indicatorValue": "ab".repeat(32),
                "indicatorType": "FileSha256",
                "action": "Allowed",
                "title": "built in house",
                "description": "allowed on every replica",
            }),
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.text);
    let polled = within(Duration::from_secs(20), "the allowlist on A", waiting)
        .await
        .unwrap();
    assert_eq!(
        polled["desired"]["allowlistVersion"].as_u64(),
        Some(version_before + 1),
        "{polled}"
    );
    let list = device.allowlist().await;
    assert!(list.to_string().contains(&"ab".repeat(32)), "{list}");
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_times_an_action_out_once_however_many_replicas_sweep() {
    let clock = Arc::new(ManualClock::starting_now());
    let pending = Duration::from_secs(600);
    let fast_sweeps = |c: &mut ServerConfig| {
        c.action_pending_timeout = pending;
        c.sweep_interval = Duration::from_millis(10);
    };
    let Some(servers) = replicas("replicas: sweeper", 3, fast_sweeps, Some(clock.clone())).await
    else {
        return;
    };
    let api = servers[0].api(ALL_ROLES).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let device = servers[i % 3].enroll(&format!("idle-{i}")).await;
        let r = api.restrict(&device.machine_id, "never picked up").await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    clock.advance(pending + Duration::from_secs(1));
    within(Duration::from_secs(30), "every action timed out", async {
        loop {
            let stored = servers[2].stored_actions(&servers[2].tenant_id).await;
            if stored.iter().all(|a| a.status == ActionStatus::TimeOut) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Let every replica sweep a few more times.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in &ids {
        let trail = servers[1].state.store.audit_trail(id).await.unwrap();
        let timeouts = trail
            .iter()
            .filter(|r| r.to == ActionStatus::TimeOut)
            .count();
        assert_eq!(timeouts, 1, "one timeout in the trail of {id}: {trail:?}");
    }
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_ready_only_while_its_database_answers() {
    let Some(cluster) = appfence_testkit::private_postgres_or_skip("replicas: readiness") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let server = TestServer::start_on_postgres(&url, |_| {}, None).await;
    let http = &server.http;
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    cluster.stop().unwrap();
    let alive = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200, "alive without its database");
    // The verdict is cached for a second (an unauthenticated flood of /readyz must not
    // be one of database probes): the next probe sees the database gone.
    let not_ready = within(
        Duration::from_secs(30),
        "readiness without a database",
        async {
            loop {
                let r = http.get(server.url("/readyz")).send().await.unwrap();
                if r.status() != 200 {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    assert_eq!(not_ready.status(), 503);
    assert_eq!(
        not_ready.text().await.unwrap(),
        "not ready: storage unreachable"
    );

    cluster.start().unwrap();
    within(Duration::from_secs(60), "ready again", async {
        loop {
            let r = http.get(server.url("/readyz")).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_regrouped_through_one_replica_is_regrouped_on_all() {
    use crate::lookups::{spec, user_api, ANALYSTS};
    let access = spec();
    let with_groups = move |c: &mut ServerConfig| c.access = access.clone();
    let Some(servers) = replicas("replicas: device groups", 2, with_groups, None).await else {
        return;
    };
    let (a, b) = (&servers[0], &servers[1]);
    let app = a.app(ALL_ROLES).await;
    // A viewer, calling A; an analyst (who may tag), calling B.
    let viewer = user_api(a, &app, "viewer@corp.example", &["g-viewers"]).await;
    let mut analyst = user_api(a, &app, "analyst@corp.example", &[ANALYSTS]).await;
    analyst.base = b.base.clone();
    let device = a.enroll("box.corp.example").await;
    let created = analyst.restrict(&device.machine_id, "contain").await;
    assert_eq!(created.status, 201, "{}", created.text);
    let action = format!(
        "/api/machineactions/{}",
        created.json()["id"].as_str().unwrap()
    );
    // Ungrouped: the viewer sees the action (and A remembers the device's group).
    assert_eq!(viewer.get(&action).await.status, 200);

    // Tagged `quarantine` through B: in the Quarantine group, which viewers may not see,
    // on A too.
    let tagged = analyst
        .post(
            &format!("/api/machines/{}/tags", device.machine_id),
            &json!({"Value": "quarantine", "Action": "Add"}),
        )
        .await;
    assert_eq!(tagged.status, 200, "{}", tagged.text);
    within(
        Duration::from_secs(20),
        "A to forget the device's old group",
        async {
            loop {
                let r = viewer.get(&action).await;
                if r.status == 403 {
                    let e = r.assert_error(403, "Forbidden");
                    assert!(
                        e.message.contains("device group 'Quarantine'"),
                        "{}",
                        e.message
                    );
                    break;
                }
                assert_eq!(r.status, 200, "{}", r.text);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    stop_all(servers).await;
}
