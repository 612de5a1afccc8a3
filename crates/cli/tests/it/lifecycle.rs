//! The whole loop with simulated devices (the real agent loop and gateway client, an
//! enforcer that pretends): restrict → Pending → InProgress → Succeeded, unrestrict,
//! and the device's desired and reported state following along.

use std::time::Duration;

use appfence_agent::{spawn_fleet, SimTimings};
use appfence_core::MachineRef;
use appfence_proto::ActionStatus;
use serde_json::Value;
use tokio::sync::watch;

use crate::harness::{Api, TestServer, ALL_ROLES};

const WAIT: Duration = Duration::from_secs(20);

/// Polls the action until it is final, returning every status seen, in order.
async fn statuses_until_final(api: &Api, id: &str) -> (Vec<String>, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let a = api.action(id).await;
        let s = a["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if !matches!(s.as_str(), "Pending" | "InProgress") {
            return (seen, a);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} not final within {WAIT:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the device reports (heartbeat) the enforcement state `restricted`.
async fn reported(server: &TestServer, machine_id: &str, restricted: bool) -> Option<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = server
            .state
            .store
            .machine(&server.tenant_id, &MachineRef::Id(machine_id.into()))
            .await
            .unwrap()
            .expect("machine");
        if m.enforcement.restricted == restricted {
            return m.enforcement.applied_action_id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "device never reported restricted={restricted}: {:?}",
            m.enforcement
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restrict_and_unrestrict_with_simulated_devices() {
    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    let secret = server.enroll_secret(&server.tenant_id).await;
    let fleet_dir = crate::harness::private_tempdir();
    let (stop, stop_rx) = watch::channel(false);
    let timings = SimTimings {
        denial_when_restricted: false,
        ack_delay: Duration::from_millis(50),
        complete_delay: Duration::from_millis(50),
    };
    let fleet = spawn_fleet(&server.base, &secret, 2, fleet_dir.path(), timings, stop_rx);

    // Both devices enrol.
    let deadline = tokio::time::Instant::now() + WAIT;
    let machines = loop {
        let v = api
            .get("/api/machines?$filter=startswith(computerDnsName,'demo-linux-')")
            .await
            .json();
        if v["value"].as_array().unwrap().len() == 2 {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet did not enrol: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let host = "demo-linux-01.appfence.local";
    let machine = machines["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["computerDnsName"] == host)
        .expect("demo-linux-01")
        .clone();
    let machine_id = machine["id"].as_str().unwrap().to_string();
    assert_eq!(machine["osPlatform"], "Linux");
    let other_id = machines["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["computerDnsName"] != host)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Restrict by DNS name, as SOAR playbooks do.
    let r = api
        .restrict(host, "Restrict code execution due to alert 1234")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let restrict = r.json();
    assert_eq!(restrict["status"], "Pending");
    assert_eq!(restrict["machineId"], machine_id.as_str());
    let restrict_id = restrict["id"].as_str().unwrap().to_string();
    let (seen, done) = statuses_until_final(&api, &restrict_id).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert_eq!(done["errorHResult"], 0);
    let order = ["Pending", "InProgress", "Succeeded"];
    let mut pos = 0;
    for s in &seen {
        let i = order
            .iter()
            .position(|o| o == s)
            .unwrap_or_else(|| panic!("unexpected {s}"));
        assert!(i >= pos, "statuses went backwards: {seen:?}");
        pos = i;
    }
    // Every step is in the audit trail, made by the device.
    let trail = server.state.store.audit_trail(&restrict_id).await.unwrap();
    let steps: Vec<_> = trail.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        steps,
        [
            (None, ActionStatus::Pending),
            (Some(ActionStatus::Pending), ActionStatus::InProgress),
            (Some(ActionStatus::InProgress), ActionStatus::Succeeded),
        ]
    );
    let agent = format!("agent:{machine_id}");
    assert_eq!(trail[1].actor, agent);
    assert_eq!(trail[2].actor, agent);

    // The desired state follows; the device reports it enforces it.
    let last = server
        .state
        .store
        .last_succeeded_restrict_family(&machine_id)
        .await
        .unwrap()
        .expect("a succeeded action");
    assert_eq!(last.id, restrict_id);
    assert_eq!(
        reported(&server, &machine_id, true).await.as_deref(),
        Some(restrict_id.as_str())
    );
    // The other device was left alone.
    assert!(server
        .state
        .store
        .last_succeeded_restrict_family(&other_id)
        .await
        .unwrap()
        .is_none());

    // Unrestrict, by aadDeviceId.
    let aad = machine["aadDeviceId"].as_str().unwrap();
    let r = api.unrestrict(aad, "Device is clean").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let unrestrict_id = r.json()["id"].as_str().unwrap().to_string();
    let (_, done) = statuses_until_final(&api, &unrestrict_id).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert_eq!(done["type"], "UnrestrictCodeExecution");
    assert_eq!(
        reported(&server, &machine_id, false).await.as_deref(),
        Some(unrestrict_id.as_str())
    );

    // A new restrict is accepted now that the previous one is final, and completes.
    let r = api.restrict(&machine_id, "again").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let again = r.json()["id"].as_str().unwrap().to_string();
    // While it is open, a second one is refused.
    api.restrict(&machine_id, "dup")
        .await
        .assert_error(400, "ActiveRequestAlreadyExists");
    let (_, done) = statuses_until_final(&api, &again).await;
    assert_eq!(done["status"], "Succeeded");
    reported(&server, &machine_id, true).await;

    // Actions of the device, newest first.
    let list = api
        .get(&format!(
            "/api/machineactions?$filter=machineId+eq+'{machine_id}'"
        ))
        .await
        .json();
    let ids: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [again.as_str(), unrestrict_id.as_str(), restrict_id.as_str()]
    );

    stop.send(true).unwrap();
    for task in fleet {
        let res = crate::harness::within(Duration::from_secs(20), "fleet shutdown", task).await;
        res.expect("device task").expect("device ends cleanly");
    }
    server.stop().await;
}

/// A device's waiting long-poll is woken by a new action rather than by its timeout:
/// the poll may wait 5 minutes, the test allows 30 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_long_poll_is_woken_by_a_new_action() {
    let server = TestServer::start_with(|c| c.long_poll_max = Duration::from_secs(300), None).await;
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("long-poller").await;
    let idle = dev.poll(0).await;
    assert_eq!(idle["commands"], serde_json::json!([]));
    assert_eq!(idle["desired"]["restricted"], false);

    let poller = {
        let dev = dev.clone();
        tokio::spawn(async move { dev.poll(300).await })
    };
    // Wait until the poll is really parked on the dispatcher before creating the action.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.state.dispatch.waiting_devices() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long-poll never started waiting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = api.restrict(&dev.machine_id, "wake up").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let got = crate::harness::within(Duration::from_secs(30), "the woken long-poll", poller)
        .await
        .unwrap();
    let commands = got["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1, "{got}");
    assert_eq!(commands[0]["actionId"], id.as_str());
    assert_eq!(commands[0]["type"], "RestrictCodeExecution");
    // (Un-woken, the poll would have run into the HTTP client's 30 s timeout and failed.)
    server.stop().await;
}
