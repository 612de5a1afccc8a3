//! Cancel against completion: whichever the store applies first wins, the loser is told
//! so, and a final status never changes afterwards.

use std::time::Duration;

use serde_json::json;

use crate::harness::{generous_limits, within, TestServer, ALL_ROLES};

const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_completion_race_to_exactly_one_final_status() {
    let server = TestServer::start_with(generous_limits, None).await;
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("race-cancel").await;
    let mut wins = (0usize, 0usize);
    let mut ids = Vec::new();

    for round in 0..ROUNDS {
        let r = if round % 2 == 0 {
            api.restrict(&dev.machine_id, "race").await
        } else {
            api.unrestrict(&dev.machine_id, "race").await
        };
        assert_eq!(
            r.status, 201,
            "round {round}: a new action after the last one is final: {}",
            r.text
        );
        let id = r.json()["id"].as_str().unwrap().to_string();
        assert_eq!(dev.ack(&id).await["applied"], true);

        let (cancel, result) = within(Duration::from_secs(30), "cancel vs result", async {
            let c = {
                let api = api.clone();
                let id = id.clone();
                tokio::spawn(async move { api.cancel(&id, "stop").await })
            };
            let d = {
                let dev = dev.clone();
                let id = id.clone();
                tokio::spawn(async move { dev.report_raw(&id, "Succeeded").await })
            };
            (c.await.unwrap(), d.await.unwrap())
        })
        .await;
        assert_eq!(result.status, 200, "{}", result.text);
        let result = result.json();
        let stored = api.action(&id).await;
        match (cancel.status, result["applied"].as_bool()) {
            (200, Some(false)) => {
                wins.0 += 1;
                assert_eq!(cancel.json()["status"], "Cancelled");
                assert_eq!(result["status"], "Cancelled", "the agent learns who won");
                assert_eq!(stored["status"], "Cancelled");
                assert_eq!(stored["cancellationComment"], "stop");
            }
            (400, Some(true)) => {
                wins.1 += 1;
                let e = cancel.assert_error(400, "BadRequest");
                assert!(e.message.contains("Succeeded"), "{}", e.message);
                assert_eq!(result["status"], "Succeeded");
                assert_eq!(stored["status"], "Succeeded");
                assert_eq!(stored["cancellationRequestor"], serde_json::Value::Null);
            }
            other => panic!(
                "round {round}: not exactly one winner: cancel HTTP {} {}, result {result}",
                other.0, cancel.text
            ),
        }
        ids.push((
            id,
            stored["status"].as_str().unwrap().to_string(),
            stored["lastUpdateDateTimeUtc"].clone(),
        ));
    }
    assert_eq!(wins.0 + wins.1, ROUNDS);

    // A while later, nothing has moved, whatever anyone tries.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (id, status, updated) in &ids {
        let again = dev.report(id, "Failed").await;
        assert_eq!(again["applied"], false);
        assert_eq!(again["status"], status.as_str());
        let a = api.action(id).await;
        assert_eq!(
            a["status"],
            status.as_str(),
            "{id} changed after it was final"
        );
        assert_eq!(&a["lastUpdateDateTimeUtc"], updated);
        let trail = server.state.store.audit_trail(id).await.unwrap();
        assert_eq!(
            trail.len(),
            3,
            "created, acknowledged, one final change: {trail:?}"
        );
    }
    // A repeated identical report is idempotent: applied, nothing changes.
    if let Some((id, _, updated)) = ids.iter().find(|(_, s, _)| s == "Succeeded") {
        let same = dev.report(id, "Succeeded").await;
        assert_eq!(same["applied"], true);
        assert_eq!(&api.action(id).await["lastUpdateDateTimeUtc"], updated);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_never_applies_a_cancelled_action() {
    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("cancel-first").await;
    let r = api.restrict(&dev.machine_id, "oops").await;
    let id = r.json()["id"].as_str().unwrap().to_string();

    // The device sees the command...
    let polled = dev.poll(0).await;
    assert_eq!(polled["commands"][0]["actionId"], id.as_str());
    assert_eq!(polled["commands"][0]["type"], "RestrictCodeExecution");
    assert_eq!(polled["commands"][0]["status"], "Pending");
    // ...but it is cancelled before the device acknowledges it.
    let c = api.cancel(&id, "wrong host").await;
    assert_eq!(c.status, 200, "{}", c.text);
    let ack = dev.ack(&id).await;
    assert_eq!(ack["applied"], false);
    assert_eq!(ack["status"], "Cancelled");
    assert_eq!(ack["desired"]["restricted"], false);
    let result = dev.report(&id, "Succeeded").await;
    assert_eq!(result["applied"], false);
    let a = api.action(&id).await;
    assert_eq!(a["status"], "Cancelled");
    assert_eq!(a["cancellationComment"], "wrong host");
    assert_eq!(dev.poll(0).await["commands"], json!([]));

    // Cancelling an InProgress action works too, and the agent's later report loses.
    let r = api.restrict(&dev.machine_id, "again").await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(dev.ack(&id).await["applied"], true);
    assert_eq!(api.cancel(&id, "stop").await.status, 200);
    let late = dev.report(&id, "Succeeded").await;
    assert_eq!(late["applied"], false);
    assert_eq!(late["status"], "Cancelled");
    // The device's desired state never saw a restriction.
    let m = server
        .state
        .store
        .last_succeeded_restrict_family(&dev.machine_id)
        .await
        .unwrap();
    assert!(m.is_none());
    server.stop().await;
}
