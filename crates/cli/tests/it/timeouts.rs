//! Stale actions become `TimeOut`, measured on an injected manual clock: `Pending` after
//! `action_pending_timeout` (3 days), `InProgress` after `action_inprogress_timeout`
//! (10 minutes) without an update. Nothing times out a tick early.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::ManualClock;
use appfence_proto::{ActionStatus, Timestamp};
use appfence_server::sweeper::sweep_once;

use crate::harness::{TestServer, ALL_ROLES};

const PENDING: Duration = Duration::from_secs(3 * 24 * 3600);
const IN_PROGRESS: Duration = Duration::from_secs(10 * 60);
const TICK: Duration = Duration::from_nanos(100);

fn ts(v: &serde_json::Value, key: &str) -> Timestamp {
    Timestamp::parse(v[key].as_str().unwrap()).unwrap()
}

async fn status(server: &TestServer, id: &str) -> ActionStatus {
    server
        .state
        .store
        .action(&server.tenant_id, id)
        .await
        .unwrap()
        .expect("action exists")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_actions_time_out_exactly_at_their_thresholds() {
    let clock = Arc::new(ManualClock::starting_now());
    // The background sweeper runs once at start and then not for an hour: every sweep
    // below is ours, so the clock is read only when we expect it.
    let server = TestServer::start_with(
        |c| {
            c.sweep_interval = Duration::from_secs(3600);
            c.action_pending_timeout = PENDING;
            c.action_inprogress_timeout = IN_PROGRESS;
        },
        Some(clock.clone()),
    )
    .await;
    let api = server.api(ALL_ROLES).await;
    let pending_dev = server.enroll("stale-pending").await;
    let busy_dev = server.enroll("stale-inprogress").await;

    let a = api.restrict(&pending_dev.machine_id, "will wait").await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = a.json();
    let a_id = a["id"].as_str().unwrap().to_string();
    let a_created = ts(&a, "creationDateTimeUtc");

    let b = api.restrict(&busy_dev.machine_id, "will stall").await;
    assert_eq!(b.status, 201, "{}", b.text);
    let b_id = b.json()["id"].as_str().unwrap().to_string();
    let ack = busy_dev.ack(&b_id).await;
    assert_eq!(ack["applied"], true);
    assert_eq!(ack["status"], "InProgress");
    let b = api.action(&b_id).await;
    assert_eq!(b["status"], "InProgress");
    let b_updated = ts(&b, "lastUpdateDateTimeUtc");

    // One tick before the InProgress threshold: nothing.
    clock.set(b_updated.plus(IN_PROGRESS).minus(TICK));
    assert_eq!(sweep_once(&server.state).await.unwrap(), 0);
    assert_eq!(status(&server, &b_id).await, ActionStatus::InProgress);
    assert_eq!(status(&server, &a_id).await, ActionStatus::Pending);

    // Past it: only the InProgress action (the Pending one is just 10 minutes old).
    clock.set(b_updated.plus(IN_PROGRESS).plus(Duration::from_secs(1)));
    assert_eq!(sweep_once(&server.state).await.unwrap(), 1);
    assert_eq!(status(&server, &b_id).await, ActionStatus::TimeOut);
    assert_eq!(status(&server, &a_id).await, ActionStatus::Pending);

    // One tick before the Pending threshold: nothing.
    clock.set(a_created.plus(PENDING).minus(TICK));
    assert_eq!(sweep_once(&server.state).await.unwrap(), 0);
    assert_eq!(status(&server, &a_id).await, ActionStatus::Pending);

    // 3 days + 1 s: TimeOut.
    clock.set(a_created);
    clock.advance(PENDING + Duration::from_secs(1));
    assert_eq!(sweep_once(&server.state).await.unwrap(), 1);
    let a_now = server
        .state
        .store
        .action(&server.tenant_id, &a_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_now.status, ActionStatus::TimeOut);
    assert!(a_now.last_update > a_created.plus(PENDING));
    // A second sweep finds nothing more.
    assert_eq!(sweep_once(&server.state).await.unwrap(), 0);

    // The audit trail has every change: who, from, to.
    let trail = server.state.store.audit_trail(&a_id).await.unwrap();
    let steps: Vec<_> = trail
        .iter()
        .map(|r| (r.actor.as_str(), r.from, r.to))
        .collect();
    let app_name = api.app.as_ref().unwrap().display_name.as_str();
    assert_eq!(
        steps,
        [
            (app_name, None, ActionStatus::Pending),
            (
                "sweeper",
                Some(ActionStatus::Pending),
                ActionStatus::TimeOut
            ),
        ]
    );
    let trail = server.state.store.audit_trail(&b_id).await.unwrap();
    let steps: Vec<_> = trail
        .iter()
        .map(|r| (r.actor.clone(), r.from, r.to))
        .collect();
    assert_eq!(
        steps,
        [
            (app_name.to_string(), None, ActionStatus::Pending),
            (
                format!("agent:{}", busy_dev.machine_id),
                Some(ActionStatus::Pending),
                ActionStatus::InProgress
            ),
            (
                "sweeper".to_string(),
                Some(ActionStatus::InProgress),
                ActionStatus::TimeOut
            ),
        ]
    );
    assert!(trail.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");

    // A device that comes back late must not apply them.
    let late_ack = pending_dev.ack(&a_id).await;
    assert_eq!(late_ack["applied"], false);
    assert_eq!(late_ack["status"], "TimeOut");
    let late_result = busy_dev.report(&b_id, "Succeeded").await;
    assert_eq!(late_result["applied"], false);
    assert_eq!(late_result["status"], "TimeOut");
    assert_eq!(status(&server, &b_id).await, ActionStatus::TimeOut);
    let polled = pending_dev.poll(0).await;
    assert_eq!(polled["commands"], serde_json::json!([]));

    // The slot is free again: a new restrict (with a token issued on the moved clock).
    let api = server.api(ALL_ROLES).await;
    let again = api.restrict(&pending_dev.machine_id, "retry").await;
    assert_eq!(again.status, 201, "{}", again.text);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sweeper_uses_the_injected_clock() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("sweeper-host").await;
    let r = api.restrict(&dev.machine_id, "x").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();

    // Several real sweep intervals pass: still Pending, the manual clock did not move.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&server, &id).await, ActionStatus::Pending);

    clock.advance(PENDING + Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&server, &id).await != ActionStatus::TimeOut {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper (every 50 ms) did not time the action out"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.stop().await;
}

/// Retention on the injected clock, over HTTP: a final action last updated more than
/// `retention` ago is gone (404 in the envelope) after a sweep, a newer final one and an
/// open one (however old) stay, and the deleted action's audit trail stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_final_actions_and_keeps_their_audit_trail() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with(
        |c| {
            c.sweep_interval = Duration::from_secs(3600);
            // Nothing times out in this test: only retention acts.
            c.action_pending_timeout = 1000 * DAY;
            c.retention = Some(180 * DAY);
        },
        Some(clock.clone()),
    )
    .await;
    let api = server.api(ALL_ROLES).await;
    let old_dev = server.enroll("retention-old").await;
    let open_dev = server.enroll("retention-open").await;

    let old = api.restrict(&old_dev.machine_id, "old").await.json();
    let old_id = old["id"].as_str().unwrap().to_string();
    assert_eq!(api.cancel(&old_id, "done").await.status, 200);
    let open = api.restrict(&open_dev.machine_id, "open").await.json();
    let open_id = open["id"].as_str().unwrap().to_string();

    clock.advance(100 * DAY);
    // Tokens last an hour: a fresh one on the new day.
    let api = server.api(ALL_ROLES).await;
    let new_dev = server.enroll("retention-new").await;
    let newer = api.restrict(&new_dev.machine_id, "newer").await;
    assert_eq!(newer.status, 201, "{}", newer.text);
    let newer = newer.json();
    let newer_id = newer["id"].as_str().unwrap().to_string();
    assert_eq!(api.cancel(&newer_id, "done").await.status, 200);

    // 179 days after the old action ended: still kept.
    clock.advance(79 * DAY);
    sweep_once(&server.state).await.unwrap();
    let api = server.api(ALL_ROLES).await;
    assert_eq!(api.action(&old_id).await["status"], "Cancelled");

    // 181 days: gone; the newer final one and the open one stay.
    clock.advance(2 * DAY);
    sweep_once(&server.state).await.unwrap();
    let api = server.api(ALL_ROLES).await;
    let r = api.get(&format!("/api/machineactions/{old_id}")).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.json()["error"]["code"].is_string(), "{}", r.text);
    assert_eq!(api.action(&newer_id).await["status"], "Cancelled");
    assert_eq!(api.action(&open_id).await["status"], "Pending");
    let listed = api.get("/api/machineactions").await.json();
    let ids: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&old_id.as_str()), "{ids:?}");
    assert_eq!(ids.len(), 2, "{ids:?}");
    // The audit trail of the deleted action: creation and cancellation, as written.
    let trail = server.state.store.audit_trail(&old_id).await.unwrap();
    let steps: Vec<ActionStatus> = trail.iter().map(|r| r.to).collect();
    assert_eq!(steps, [ActionStatus::Pending, ActionStatus::Cancelled]);
    server.stop().await;
}
