//! Offboarding end to end (MDE's `POST /api/machines/{id}/offboard`): a real agent loop
//! with the simulated enforcer, the `appfence machines offboard` command, the gateway
//! refusing the device's credential afterwards, the Machine as MDE shows an offboarded
//! device, bad input, and an offboard the device never came for.

use std::sync::Arc;
use std::time::Duration;

use appfence_agent::{spawn_fleet, SimTimings};
use appfence_core::{MachineRef, ManualClock};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::harness::{within, Api, TestServer, ROLE_READ, ROLE_RESTRICT};
use crate::process::run;
use crate::wire::Resp;

const ROLE_OFFBOARD: &str = "Machine.Offboard";
const WAIT: Duration = Duration::from_secs(30);
const HOST: &str = "demo-linux-01.appfence.local";

async fn final_action(api: &Api, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = api.action(id).await;
        if !matches!(a["status"].as_str(), Some("Pending" | "InProgress")) {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} not final: {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn offboard(api: &Api, machine: &str, body: Option<Value>) -> Resp {
    let mut req = api.request(
        reqwest::Method::POST,
        &format!("/api/machines/{machine}/offboard"),
    );
    if let Some(body) = body {
        req = req.json(&body);
    }
    api.send(req).await
}

/// A gateway call with `credential`, as the agent makes it.
async fn gateway(server: &TestServer, credential: &str, path: &str, body: Option<Value>) -> Resp {
    let url = format!("{}/agent/v1/{path}", server.base);
    let req = match body {
        Some(b) => server.http.post(url).json(&b),
        None => server.http.get(url),
    };
    Resp::read(req.bearer_auth(credential).send().await.unwrap()).await
}

fn heartbeat_body() -> Value {
    json!({
        "info": {"osPlatform": "Linux", "agentVersion": "0.1.0", "ipAddresses": ["127.0.0.1"]},
        "enforcement": {"restricted": false}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_lifts_the_restriction_stops_the_agent_and_refuses_its_credential() {
    let server = TestServer::start().await;
    let app = server.app(&[ROLE_RESTRICT, ROLE_READ, ROLE_OFFBOARD]).await;
    let api = server.api_for(&app).await;
    let secret = server.enroll_secret(&server.tenant_id).await;
    let fleet_dir = crate::harness::private_tempdir();
    let (_stop, stop_rx) = watch::channel(false);
    let timings = SimTimings {
        denial_when_restricted: false,
        ack_delay: Duration::from_millis(20),
        complete_delay: Duration::from_millis(20),
    };
    let mut fleet = spawn_fleet(&server.base, &secret, 1, fleet_dir.path(), timings, stop_rx);
    let device = fleet.pop().unwrap();

    // The device enrols; it is restricted.
    let deadline = tokio::time::Instant::now() + WAIT;
    let machine = loop {
        let r = api.get(&format!("/api/machines/{HOST}")).await;
        if r.status == 200 {
            break r.json();
        }
        assert!(tokio::time::Instant::now() < deadline, "no enrolment");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let machine_id = machine["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            machine["onboardingStatus"].as_str(),
            machine["healthStatus"].as_str()
        ),
        (Some("Onboarded"), Some("Active"))
    );
    let restrict = api.restrict(HOST, "alert 1234").await;
    assert_eq!(restrict.status, 201, "{}", restrict.text);
    let restrict = final_action(&api, restrict.json()["id"].as_str().unwrap()).await;
    assert_eq!(restrict["status"], "Succeeded", "{restrict}");
    let state_dir = fleet_dir.path().join("demo-linux-01");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("credential.json")).unwrap()).unwrap();
    let credential = stored["credential"].as_str().unwrap().to_string();

    // Bad input first: MDE's envelope every time, nothing created.
    offboard(&api, &machine_id, None)
        .await
        .assert_error(400, "InvalidRequestBody");
    let e = offboard(&api, &machine_id, Some(json!({"comment": "lower case"})))
        .await
        .assert_error(400, "MissingRequiredParameter");
    assert_eq!(e.message, "Parameter Comment is missing");
    offboard(&api, &machine_id, Some(json!({"Comment": 7})))
        .await
        .assert_error(400, "InvalidRequestBody");
    let e = offboard(&api, "no-such-host.example", Some(json!({"Comment": "x"})))
        .await
        .assert_error(404, "ResourceNotFound");
    assert!(e.message.contains("no-such-host.example"), "{}", e.message);
    offboard(&api, &"0".repeat(40), Some(json!({"Comment": "x"})))
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(server.stored_actions(&server.tenant_id).await.len(), 1);

    // `appfence machines offboard --wait`: exit 0 once the device did it.
    let env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", app.secret.as_str()),
    ];
    let out = run(
        &[
            "machines",
            "offboard",
            HOST,
            "--comment",
            "decommissioned",
            "--wait",
            "--timeout",
            "30s",
            "--poll-interval",
            "50ms",
            "-o",
            "json",
        ],
        &env,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let action = out.json();
    assert_eq!(action["type"], "Offboard", "{action}");
    assert_eq!(action["status"], "Succeeded", "{action}");
    assert_eq!(action["requestorComment"], "decommissioned");
    assert_eq!(action["machineId"], machine_id.as_str());
    assert_eq!(action["computerDnsName"], HOST);
    assert_eq!(action["requestSource"], "PublicApi");
    assert_eq!(action["errorHResult"], 0);
    let action_id = action["id"].as_str().unwrap().to_string();
    let trail = server.state.store.audit_trail(&action_id).await.unwrap();
    assert_eq!(trail.last().unwrap().actor, format!("agent:{machine_id}"));

    // The agent stopped by itself, its state gone but for the record of its end.
    within(WAIT, "the agent to stop", device)
        .await
        .unwrap()
        .expect("the agent ends cleanly");
    let left: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["offboarded.json"]);
    let record: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("offboarded.json")).unwrap()).unwrap();
    assert_eq!(record["actionId"], action_id.as_str());
    assert_eq!(record["outcome"], "Succeeded");
    // Before it went, it told the server nothing is enforced any more.
    let m = server
        .state
        .store
        .machine(&server.tenant_id, &MachineRef::Id(machine_id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(!m.enforcement.restricted, "{:?}", m.enforcement);

    // The Machine shows as MDE shows an offboarded device, and can be found so.
    let shown = api.get(&format!("/api/machines/{machine_id}")).await.json();
    assert_eq!(shown["onboardingStatus"], "Offboarded", "{shown}");
    assert_eq!(shown["healthStatus"], "Inactive");
    let listed = api
        .get("/api/machines?$filter=onboardingStatus+eq+'Offboarded'")
        .await
        .json();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1, "{listed}");
    let out = run(&["machines", "get", HOST], &env, Duration::from_secs(60)).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Offboarded"), "{}", out.stdout);

    // Its credential is refused everywhere on the gateway, in the gateway's format.
    let result_path = format!("actions/{action_id}/result");
    let calls = [
        ("heartbeat", Some(heartbeat_body())),
        ("commands?waitSeconds=0", None),
        ("allowlist", None),
        (
            result_path.as_str(),
            Some(json!({"outcome": "Succeeded", "errorHResult": 0})),
        ),
    ];
    for (path, body) in calls {
        let r = gateway(&server, &credential, path, body).await;
        let e = r.assert_error(401, "Unauthorized");
        assert!(
            e.message.contains("revoked or unknown"),
            "{path}: {}",
            e.message
        );
    }
    // The audit log says who offboarded it.
    let audit = server.state.store.audit_events(0, 10_000).await.unwrap();
    let offboarded: Vec<_> = audit
        .iter()
        .filter(|(_, e)| e.event == "DeviceOffboarded")
        .collect();
    assert_eq!(offboarded.len(), 1, "{audit:?}");
    assert_eq!(offboarded[0].1.subject, machine_id);
    assert_eq!(offboarded[0].1.actor, app.display_name);

    // It takes no more actions: a clear 400.
    for path in [
        "restrictCodeExecution",
        "unrestrictCodeExecution",
        "offboard",
    ] {
        let r = api
            .post(
                &format!("/api/machines/{machine_id}/{path}"),
                &json!({"Comment": "too late"}),
            )
            .await;
        let e = r.assert_error(400, "BadRequest");
        assert!(e.message.contains("offboarded"), "{path}: {}", e.message);
    }

    // Started again, the agent does not enrol (nor enforce): it knows it was offboarded.
    let (_stop, stop_rx) = watch::channel(false);
    let again = spawn_fleet(&server.base, &secret, 1, fleet_dir.path(), timings, stop_rx);
    for h in again {
        within(WAIT, "the restarted agent to stop", h)
            .await
            .unwrap()
            .unwrap();
    }
    let machines = api.get("/api/machines").await.json();
    assert_eq!(machines["value"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// A second offboard while one is open: MDE's duplicate answer. Restrict and unrestrict
/// while it is open: refused, the device is leaving. Cancelled, nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_offboard_is_the_only_one_and_a_cancelled_one_changes_nothing() {
    let server = TestServer::start().await;
    let api = server.api(&[ROLE_RESTRICT, ROLE_READ, ROLE_OFFBOARD]).await;
    let dev = server.enroll("leaving.corp").await;
    let first = offboard(&api, &dev.machine_id, Some(json!({"Comment": "bye"}))).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(
        first.header("content-type"),
        Some("application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8")
    );
    let first = first.json();
    assert_eq!(first["type"], "Offboard");
    assert_eq!(first["status"], "Pending");
    assert!(first["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/api/$metadata#MachineActions/$entity"));
    let dup = offboard(&api, &dev.machine_id, Some(json!({"Comment": "again"}))).await;
    assert!(dup
        .text
        .contains(r#""message":"Action is already in progress""#));
    dup.assert_error(400, "ActiveRequestAlreadyExists");
    // The versioned prefix and the DNS name are the same API and the same machine.
    offboard(&api, "leaving.corp", Some(json!({"Comment": "again"})))
        .await
        .assert_error(400, "ActiveRequestAlreadyExists");
    let r = api
        .post(
            "/api/v1.0/machines/leaving.corp/offboard",
            &json!({"Comment": "again"}),
        )
        .await;
    r.assert_error(400, "ActiveRequestAlreadyExists");
    let e = api
        .restrict(&dev.machine_id, "now")
        .await
        .assert_error(400, "BadRequest");
    assert!(e.message.contains("being offboarded"), "{}", e.message);

    // The device sees it like any action.
    let polled = dev.poll(0).await;
    assert_eq!(polled["commands"][0]["type"], "Offboard", "{polled}");

    // Cancelled: the device stays onboarded, its credential works, it may be asked again.
    let id = first["id"].as_str().unwrap();
    let cancelled = api.cancel(id, "wrong host").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    dev.heartbeat(json!({"restricted": false})).await;
    let m = api
        .get(&format!("/api/machines/{}", dev.machine_id))
        .await
        .json();
    assert_eq!(m["onboardingStatus"], "Onboarded");
    assert_eq!(m["healthStatus"], "Active");
    let again = offboard(&api, &dev.machine_id, Some(json!({"Comment": "now"}))).await;
    assert_eq!(again.status, 201, "{}", again.text);

    // An agent that cannot offboard (too old) answers Failed: offboarded all the same.
    let again_id = again.json()["id"].as_str().unwrap().to_string();
    dev.ack(&again_id).await;
    let done = dev.report(&again_id, "Failed").await;
    assert_eq!(done["status"], "Failed");
    let r = gateway(
        &server,
        &dev.credential,
        "heartbeat",
        Some(heartbeat_body()),
    )
    .await;
    r.assert_error(401, "Unauthorized");
    let m = api
        .get(&format!("/api/machines/{}", dev.machine_id))
        .await
        .json();
    assert_eq!(m["onboardingStatus"], "Offboarded");
    server.stop().await;
}

/// A lost or stolen device never comes for its offboard: once the action times out, the
/// server offboards it anyway, and its credential is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboard_the_device_never_came_for_revokes_it_at_the_timeout() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    let api = server.api(&[ROLE_READ, ROLE_OFFBOARD]).await;
    let dev = server.enroll("stolen.corp").await;
    let r = offboard(&api, &dev.machine_id, Some(json!({"Comment": "stolen"}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Until then the device may still call (it is how it would pick the action up).
    dev.heartbeat(json!({"restricted": true})).await;

    clock.advance(server.state.config.action_pending_timeout + Duration::from_secs(1));
    // A token of the new time (the first one expired meanwhile).
    let api = server.api(&[ROLE_READ]).await;
    let done = final_action(&api, &id).await;
    assert_eq!(done["status"], "TimeOut", "{done}");
    gateway(
        &server,
        &dev.credential,
        "heartbeat",
        Some(heartbeat_body()),
    )
    .await
    .assert_error(401, "Unauthorized");
    gateway(&server, &dev.credential, "commands?waitSeconds=0", None)
        .await
        .assert_error(401, "Unauthorized");
    let m = api
        .get(&format!("/api/machines/{}", dev.machine_id))
        .await
        .json();
    assert_eq!(
        (m["onboardingStatus"].as_str(), m["healthStatus"].as_str()),
        (Some("Offboarded"), Some("Inactive"))
    );
    // Holding the tenant's enrolment secret, the stolen device cannot take its identity
    // back, with a key of any kind or none.
    let secret = server.enroll_secret(&server.tenant_id).await;
    for key in [Some("k".repeat(43)), None] {
        let mut body = json!({
            "enrollSecret": secret,
            "hostname": "stolen.corp",
            "info": {
                "osPlatform": "Linux", "osVersion": "Ubuntu 24.04", "kernelVersion": "6.8.0",
                "osArchitecture": "x86_64", "agentVersion": "0.1.0", "ipAddresses": [],
                "capabilities": {"canRestrictExecution": true, "execPermissionEvents": true,
                                 "filesystemMarks": true, "simulated": true}
            },
        });
        if let Some(k) = &key {
            body["enrollmentKey"] = json!(k);
        }
        let r = Resp::read(
            server
                .http
                .post(server.url("/agent/v1/enroll"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let e = r.assert_error(400, "BadRequest");
        assert!(e.message.contains("was offboarded"), "{}", e.message);
    }
    server.stop().await;
}
