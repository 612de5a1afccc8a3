//! Spec §1: every endpoint under `/api` and `/api/v1.0`, with MDE's headers, contexts
//! and timestamp format; and enrolment again with the enrolment key.

use appfence_server::oauth::secrets::generate_secret;
use serde_json::{json, Value};

use crate::harness::{Api, Device, TestServer, ALL_ROLES};
use crate::wire::{assert_machine_action, is_machine_id, is_mde_timestamp, Resp};

const PREFIXES: [&str; 2] = ["/api", "/api/v1.0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_under_both_prefixes() {
    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    let public = server.state.public_url();
    for (n, prefix) in PREFIXES.into_iter().enumerate() {
        let dev = server.enroll(&format!("ep-host-{n}.corp.example")).await;
        check_machines(&api, prefix, &public, &dev).await;
        check_actions(&server, &api, prefix, &public, &dev).await;
    }
    server.stop().await;
}

async fn check_machines(api: &Api, prefix: &str, public: &str, dev: &crate::harness::Device) {
    // The list shows the device, with the collection context.
    let list = api.get(&format!("{prefix}/machines")).await;
    assert_eq!(list.status, 200, "{}", list.text);
    list.assert_odata_headers();
    let v = list.json();
    assert_eq!(
        v["@odata.context"],
        format!("{public}/api/$metadata#Machines")
    );
    let found: Vec<_> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == dev.machine_id.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["computerDnsName"], dev.hostname.as_str());

    // By id, aadDeviceId and computerDnsName: the same machine.
    for key in [&dev.machine_id, &dev.aad_device_id, &dev.hostname] {
        let r = api.get(&format!("{prefix}/machines/{key}")).await;
        assert_eq!(r.status, 200, "GET machine by {key}: {}", r.text);
        r.assert_odata_headers();
        let m = r.json();
        assert_eq!(
            m["@odata.context"],
            format!("{public}/api/$metadata#Machines/$entity")
        );
        assert_eq!(m["id"], dev.machine_id.as_str());
        assert!(is_machine_id(m["id"].as_str().unwrap()));
        assert_eq!(m["aadDeviceId"], dev.aad_device_id.as_str());
        assert_eq!(m["computerDnsName"], dev.hostname.as_str());
        assert_eq!(m["osPlatform"], "Linux");
        assert_eq!(m["healthStatus"], "Active");
        assert_eq!(m["onboardingStatus"], "Onboarded");
        assert_eq!(m["rbacGroupId"], 0);
        assert_eq!(m["rbacGroupName"], serde_json::Value::Null);
        assert!(is_mde_timestamp(m["firstSeen"].as_str().unwrap()), "{m}");
        assert!(is_mde_timestamp(m["lastSeen"].as_str().unwrap()), "{m}");
    }
    // Every field of spec §5, with its JSON type.
    let m = api
        .get(&format!("{prefix}/machines/{}", dev.machine_id))
        .await
        .json();
    for key in [
        "id",
        "computerDnsName",
        "firstSeen",
        "lastSeen",
        "osPlatform",
        "version",
        "osBuild",
        "osArchitecture",
        "agentVersion",
        "lastIpAddress",
        "lastExternalIpAddress",
        "healthStatus",
        "onboardingStatus",
        "rbacGroupId",
        "rbacGroupName",
        "riskScore",
        "exposureLevel",
        "deviceValue",
        "aadDeviceId",
        "machineTags",
        "ipAddresses",
        "isAadJoined",
    ] {
        assert!(m.get(key).is_some(), "machine lacks {key}: {m}");
    }
    assert!(
        m["rbacGroupId"].is_i64() && m["isAadJoined"].is_boolean(),
        "{m}"
    );
    assert!(m["machineTags"].is_array(), "{m}");
    assert_eq!(m["agentVersion"], "0.1.0");
    assert_eq!(m["lastIpAddress"], "10.0.0.7");
    let ips = m["ipAddresses"].as_array().unwrap();
    assert_eq!(ips.len(), 1, "{m}");
    for key in ["ipAddress", "macAddress", "operationalStatus", "type"] {
        assert!(
            ips[0].get(key).is_some(),
            "ipAddresses item lacks {key}: {m}"
        );
    }
    assert_eq!(ips[0]["ipAddress"], "10.0.0.7");

    // The DNS name is matched case-insensitively.
    let upper = dev.hostname.to_ascii_uppercase();
    let r = api.get(&format!("{prefix}/machines/{upper}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["id"], dev.machine_id.as_str());
}

async fn check_actions(
    server: &TestServer,
    api: &Api,
    prefix: &str,
    public: &str,
    dev: &crate::harness::Device,
) {
    let app_name = api.app.as_ref().unwrap().display_name.clone();
    // Restrict, with the optional keys clients send (some as explicit null).
    let r = api
        .post(
            &format!("{prefix}/machines/{}/restrictCodeExecution", dev.machine_id),
            &json!({"Comment": "Restrict code execution due to alert 1234", "ExternalId": "ext-1",
                    "RequestSource": null, "Title": "alert 1234"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.assert_odata_headers();
    let a = r.json();
    assert_machine_action(&a, public, true);
    assert_eq!(a["type"], "RestrictCodeExecution");
    assert_eq!(a["status"], "Pending");
    assert_eq!(a["title"], "alert 1234");
    assert_eq!(a["externalId"], "ext-1");
    assert_eq!(a["requestor"], app_name.as_str());
    assert_eq!(
        a["requestorComment"],
        "Restrict code execution due to alert 1234"
    );
    assert_eq!(a["machineId"], dev.machine_id.as_str());
    assert_eq!(a["computerDnsName"], dev.hostname.as_str());
    assert_eq!(a["requestSource"], "PublicApi");
    assert_eq!(a["errorHResult"], 0);
    assert_eq!(a["cancellationRequestor"], serde_json::Value::Null);
    assert_eq!(a["commands"], json!([]));
    let restrict_id = a["id"].as_str().unwrap().to_string();

    // Get it, also with `Content-Type: application/json` and a `{}` body on the GET.
    let g = api
        .get(&format!("{prefix}/machineactions/{restrict_id}"))
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
    g.assert_odata_headers();
    let got = g.json();
    assert_machine_action(&got, public, true);
    assert_eq!(got["id"], restrict_id.as_str());
    assert_eq!(got["status"], "Pending");
    assert_eq!(got["creationDateTimeUtc"], a["creationDateTimeUtc"]);
    let g2 = api
        .send(
            api.request(
                reqwest::Method::GET,
                &format!("{prefix}/machineactions/{restrict_id}"),
            )
            .header("Content-Type", "application/json")
            .body("{}"),
        )
        .await;
    assert_eq!(g2.status, 200, "GET with a {{}} body: {}", g2.text);
    assert_eq!(g2.json()["id"], restrict_id.as_str());
    let l2 = api
        .send(
            api.request(reqwest::Method::GET, &format!("{prefix}/machines"))
                .header("Content-Type", "application/json")
                .body("{}"),
        )
        .await;
    assert_eq!(l2.status, 200, "GET list with a {{}} body: {}", l2.text);

    // List: the collection context, our action in it.
    let l = api
        .get(&format!(
            "{prefix}/machineactions?$filter=machineId+eq+'{}'",
            dev.machine_id
        ))
        .await;
    assert_eq!(l.status, 200, "{}", l.text);
    l.assert_odata_headers();
    let lv = l.json();
    assert_eq!(
        lv["@odata.context"],
        format!("{public}/api/$metadata#MachineActions")
    );
    let items = lv["value"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{lv}");
    assert_eq!(items[0]["id"], restrict_id.as_str());
    assert!(
        items[0].get("@odata.context").is_none(),
        "items carry no context"
    );
    assert_machine_action(&items[0], public, false);

    // Cancel: 200 with the cancellation fields.
    let c = api
        .post(
            &format!("{prefix}/machineactions/{restrict_id}/cancel"),
            &json!({"Comment": "wrong machine"}),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    c.assert_odata_headers();
    let cv = c.json();
    assert_machine_action(&cv, public, true);
    assert_eq!(cv["status"], "Cancelled");
    assert_eq!(cv["cancellationComment"], "wrong machine");
    assert_eq!(cv["cancellationRequestor"], app_name.as_str());
    assert!(is_mde_timestamp(
        cv["cancellationDateTimeUtc"].as_str().unwrap()
    ));

    // Unrestrict (by aadDeviceId) is now allowed: the restrict is final.
    let u = api
        .post(
            &format!(
                "{prefix}/machines/{}/unrestrictCodeExecution",
                dev.aad_device_id
            ),
            &json!({"Comment": "clean"}),
        )
        .await;
    assert_eq!(u.status, 201, "{}", u.text);
    u.assert_odata_headers();
    let uv = u.json();
    assert_machine_action(&uv, public, true);
    assert_eq!(uv["type"], "UnrestrictCodeExecution");
    assert_eq!(uv["status"], "Pending");
    assert_eq!(uv["machineId"], dev.machine_id.as_str());
    assert_eq!(uv["title"], serde_json::Value::Null);
    assert_eq!(uv["externalId"], serde_json::Value::Null);
    // Leave the device idle for the next prefix's round: cancel without a body.
    let c2 = api
        .send(api.request(
            reqwest::Method::POST,
            &format!(
                "{prefix}/machineactions/{}/cancel",
                uv["id"].as_str().unwrap()
            ),
        ))
        .await;
    assert_eq!(c2.status, 200, "cancel without a body: {}", c2.text);
    assert_eq!(c2.json()["cancellationComment"], serde_json::Value::Null);

    // The store agrees: two actions on this device, both cancelled.
    let stored: Vec<_> = server
        .stored_actions(&server.tenant_id)
        .await
        .into_iter()
        .filter(|a| a.machine_id == dev.machine_id)
        .collect();
    assert_eq!(stored.len(), 2);
    assert!(stored
        .iter()
        .all(|a| a.status == appfence_proto::ActionStatus::Cancelled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_from_config_is_used_in_contexts() {
    let server = TestServer::start_with(
        |c| c.public_url = Some("https://appfence.example.com/".into()),
        None,
    )
    .await;
    // Tokens name the public URL as issuer; fetching one must still work over loopback.
    let api = server.api(ALL_ROLES).await;
    let dev = server.enroll("ctx-host").await;
    let r = api.restrict(&dev.machine_id, "c").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["@odata.context"],
        "https://appfence.example.com/api/$metadata#MachineActions/$entity"
    );
    let l = api.get("/api/machineactions?$top=1").await;
    assert_eq!(
        l.json()["@odata.context"],
        "https://appfence.example.com/api/$metadata#MachineActions"
    );
    server.stop().await;
}

/// `POST /agent/v1/enroll` with an optional enrolment key, reporting `ip`.
async fn enroll_raw(
    server: &TestServer,
    secret: &str,
    hostname: &str,
    key: Option<&str>,
    ip: &str,
) -> Resp {
    let mut body = json!({
        "enrollSecret": secret,
        "hostname": hostname,
        "info": {
            "osPlatform": "Linux",
            "osVersion": "Ubuntu 24.04",
            "kernelVersion": "6.8.0",
            "osArchitecture": "x86_64",
            "agentVersion": "0.1.0",
            "ipAddresses": [ip],
            "capabilities": {
                "canRestrictExecution": true,
                "execPermissionEvents": true,
                "filesystemMarks": true,
                "simulated": true
            }
        }
    });
    if let Some(key) = key {
        body["enrollmentKey"] = json!(key);
    }
    let resp = server
        .http
        .post(server.url("/agent/v1/enroll"))
        .json(&body)
        .send()
        .await
        .expect("enrol request");
    Resp::read(resp).await
}

fn device_from(server: &TestServer, hostname: &str, enrolled: &Value) -> Device {
    Device {
        http: server.http.clone(),
        base: server.base.clone(),
        hostname: hostname.to_string(),
        machine_id: enrolled["machineId"].as_str().unwrap().to_string(),
        aad_device_id: enrolled["aadDeviceId"].as_str().unwrap().to_string(),
        credential: enrolled["credential"].as_str().unwrap().to_string(),
    }
}

/// The status of a heartbeat sent with `credential`.
async fn heartbeat_status(server: &TestServer, credential: &str) -> u16 {
    let resp = server
        .http
        .post(server.url("/agent/v1/heartbeat"))
        .bearer_auth(credential)
        .json(&json!({
            "info": {
                "osPlatform": "Linux", "osVersion": "Ubuntu 24.04", "kernelVersion": "6.8.0",
                "osArchitecture": "x86_64", "agentVersion": "0.1.0", "ipAddresses": [],
                "capabilities": {"canRestrictExecution": true, "execPermissionEvents": true,
                                 "filesystemMarks": true, "simulated": true}
            },
            "enforcement": {"restricted": false, "since": null, "appliedActionId": null}
        }))
        .send()
        .await
        .expect("heartbeat request");
    resp.status().as_u16()
}

/// An agent whose enrolment answer was lost (or whose credential was) enrols again with
/// its enrolment key: a new credential for the same machine, the old one refused. Any
/// other key, or none, still finds the host name taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_again_with_the_enrolment_key_rotates_the_credential() {
    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    let secret = server.enroll_secret(&server.tenant_id.clone()).await;
    let host = "rekey-host.corp.example";
    let key = generate_secret();

    let first = enroll_raw(&server, &secret, host, Some(&key), "10.0.0.7").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let first = device_from(&server, host, &first.json());
    let restrict = api
        .restrict(&first.machine_id, "pending while re-enrolling")
        .await;
    assert_eq!(restrict.status, 201, "{}", restrict.text);
    let restrict_id = restrict.json()["id"].as_str().unwrap().to_string();

    // The same key (the name in another case): 201, same machine, new credential.
    let again = enroll_raw(
        &server,
        &secret,
        &host.to_ascii_uppercase(),
        Some(&key),
        "10.0.0.8",
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.text);
    let again = device_from(&server, host, &again.json());
    assert_eq!(
        (&again.machine_id, &again.aad_device_id),
        (&first.machine_id, &first.aad_device_id)
    );
    assert_ne!(again.credential, first.credential);
    let m = api
        .get(&format!("/api/machines/{}", first.machine_id))
        .await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(
        m.json()["lastIpAddress"],
        "10.0.0.8",
        "the device facts are updated"
    );
    assert_eq!(heartbeat_status(&server, &first.credential).await, 401);
    assert_eq!(heartbeat_status(&server, &again.credential).await, 200);
    // The machine's pending action waits for the new credential.
    let commands = again.poll(0).await;
    assert_eq!(
        commands["commands"][0]["actionId"],
        restrict_id.as_str(),
        "{commands}"
    );
    let named = api
        .get(&format!(
            "/api/machines?$filter=computerDnsName+eq+'{host}'&$count=true"
        ))
        .await;
    assert_eq!(named.json()["@odata.count"], 1, "{}", named.text);

    // Another key, or none: the name stays taken, and the credential stays valid.
    let other = generate_secret();
    for refused in [Some(other.as_str()), None] {
        let r = enroll_raw(&server, &secret, host, refused, "10.0.0.9").await;
        let err = r.assert_error(400, "BadRequest");
        assert_eq!(
            err.message,
            format!("A machine named {host} already exists")
        );
    }
    // A key too short to protect the identity is refused as such.
    let weak = enroll_raw(&server, &secret, host, Some("short"), "10.0.0.9").await;
    weak.assert_error(400, "InvalidInput");
    assert_eq!(heartbeat_status(&server, &again.credential).await, 200);

    // A device enrolled without a key (an older agent) cannot be taken over by one.
    let legacy = server.enroll("rekey-legacy.corp.example").await;
    let r = enroll_raw(&server, &secret, &legacy.hostname, Some(&key), "10.0.0.9").await;
    r.assert_error(400, "BadRequest");
    assert_eq!(heartbeat_status(&server, &legacy.credential).await, 200);
    server.stop().await;
}
