//! Alerts over real HTTP against the real server: denials become MDE alerts (grouped,
//! with evidence), the calls' shapes against MDE's documented examples, the lifecycle
//! through PATCH and batchUpdate with the audit log, polling with
//! `alertCreationTime gt` while alerts keep arriving, permissions and device groups,
//! protection alerts, the flood case, and bad input refused with nothing changed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use appfence_core::rbac::DeviceRule;
use appfence_core::{Clock, ManualClock};
use appfence_proto::Timestamp;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, IssuerSpec, RoleSpec};
use serde_json::{json, Value};

use crate::harness::{generous_limits, within, Api, Device, TestServer, ROLE_READ};
use crate::idp::{sign, Idp, TestKey, AUDIENCE};
use crate::wire::top_level_keys;

const ALERT_READ: &str = "Alert.Read.All";
const ALERT_RW: &str = "Alert.ReadWrite.All";
const WAIT: Duration = Duration::from_secs(30);

/// The keys of MDE's alert, in the order of its documented example (alerts.md, "Response
/// example for getting single alert").
const MDE_ALERT_KEYS: &[&str] = &[
    "id",
    "incidentId",
    "investigationId",
    "assignedTo",
    "severity",
    "status",
    "classification",
    "determination",
    "investigationState",
    "detectionSource",
    "detectorId",
    "category",
    "threatFamilyName",
    "title",
    "description",
    "alertCreationTime",
    "firstEventTime",
    "lastEventTime",
    "lastUpdateTime",
    "resolvedTime",
    "machineId",
    "computerDnsName",
    "rbacGroupName",
    "aadTenantId",
    "threatName",
    "mitreTechniques",
    "relatedUser",
    "comments",
    "evidence",
];

/// The keys of an evidence item in MDE's example, in order.
const MDE_EVIDENCE_KEYS: &[&str] = &[
    "entityType",
    "evidenceCreationTime",
    "sha1",
    "sha256",
    "fileName",
    "filePath",
    "processId",
    "processCommandLine",
    "processCreationTime",
    "parentProcessId",
    "parentProcessCreationTime",
    "parentProcessFileName",
    "parentProcessFilePath",
    "ipAddress",
    "url",
    "registryKey",
    "registryHive",
    "registryValueType",
    "registryValue",
    "accountName",
    "domainName",
    "userSid",
    "aadUserId",
    "userPrincipalName",
    "detectionStatus",
];

pub(crate) fn hash(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

/// A denial as the agent reports it: `path` refused on a restricted device at `time`.
pub(crate) fn denial(path: &str, sha: &str, time: Timestamp) -> Value {
    json!({
        "time": time,
        "path": path,
        "sha256": sha,
        "pid": 4242,
        "uid": 1000,
        "parent": "/usr/bin/bash",
        "kind": "exec",
        "monitor": false,
        "commandLine": "bash -c ./invoice.pdf.elf --quiet",
        "user": "alice",
    })
}

pub(crate) async fn send(device: &Device, events: Vec<Value>) {
    let r = device.post_events(&json!({ "events": events })).await;
    assert_eq!(r.status, 200, "events: {}", r.text);
}

async fn alerts(api: &Api, query: &str) -> Vec<Value> {
    let r = api.get(&format!("/api/alerts{query}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["value"].as_array().unwrap().clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The keys of every JSON object in `text`, each list in the order written, inner
/// objects before the object holding them (serde_json's maps are sorted, so the order
/// is read from the text itself).
fn object_keys(text: &str) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let (mut open, mut done): (Vec<Vec<String>>, Vec<Vec<String>>) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => open.push(Vec::new()),
            b'}' => done.extend(open.pop()),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let mut j = i + 1;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                if bytes.get(j) == Some(&b':') {
                    if let Some(keys) = open.last_mut() {
                        keys.push(text[start..i].to_string());
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    done
}

/// Checks every alert and evidence object of a response against MDE's key order;
/// returns how many alerts there were.
fn assert_mde_key_order(text: &str) -> usize {
    let mut alerts = 0;
    for keys in object_keys(text) {
        match keys.first().map(String::as_str) {
            Some("entityType") => assert_eq!(keys, MDE_EVIDENCE_KEYS),
            Some("id") => {
                assert_eq!(keys, MDE_ALERT_KEYS);
                alerts += 1;
            }
            Some("@odata.context") if keys.get(1).is_some_and(|k| k == "id") => {
                assert_eq!(keys[1..], *MDE_ALERT_KEYS);
                alerts += 1;
            }
            _ => {}
        }
    }
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_execution_becomes_one_alert_with_its_evidence_and_is_resolved() {
    let server = TestServer::start().await;
    let api = server.api(&[ALERT_RW, ROLE_READ]).await;
    let device = server.enroll("web-01.corp.example").await;
    let now = server.state.clock.now();

    // The SOAR connection check before anything happened: an empty list, not a 404.
    assert!(alerts(&api, "?$top=1").await.is_empty());

    let sha = hash(7);
    send(
        &device,
        vec![denial("/home/alice/Downloads/invoice.pdf.elf", &sha, now)],
    )
    .await;
    let listed = alerts(&api, "?$top=1").await;
    assert_eq!(
        listed.len(),
        1,
        "the alert is there as soon as the events are stored"
    );
    let alert = &listed[0];
    assert_eq!(alert["machineId"], json!(device.machine_id));
    assert_eq!(alert["computerDnsName"], "web-01.corp.example");
    assert_eq!(alert["status"], "New");
    assert_eq!(alert["severity"], "Medium");
    assert_eq!(alert["category"], "Execution");
    assert_eq!(alert["detectionSource"], "ThirdPartySensors");
    assert_eq!(
        alert["title"],
        "Untrusted program stopped on a restricted device"
    );
    assert_eq!(alert["aadTenantId"], json!(server.tenant_id));
    assert_eq!(alert["mitreTechniques"], json!(["T1204.002"]));
    assert_eq!(alert["relatedUser"]["userName"], "alice");
    assert!(alert["incidentId"].is_null() && alert["investigationState"].is_null());
    assert_eq!(alert["evidence"], json!([]), "evidence only with $expand");
    assert_eq!(
        assert_mde_key_order(&api.get("/api/alerts?$top=1").await.text),
        1
    );
    assert_eq!(alert["firstEventTime"], alert["lastEventTime"]);

    // The same file again, later: still one alert, its last event moved.
    let later = now.plus(Duration::from_secs(90));
    send(
        &device,
        vec![
            denial("/home/alice/Downloads/invoice.pdf.elf", &sha, later),
            denial("/home/alice/Downloads/invoice.pdf.elf", &sha, later),
        ],
    )
    .await;
    let listed = alerts(&api, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["firstEventTime"], json!(now));
    assert_eq!(listed[0]["lastEventTime"], json!(later));
    assert_eq!(listed[0]["id"], alert["id"]);

    // With evidence, as a SOAR poller asks.
    let r = api.get("/api/alerts?$top=10&$expand=evidence").await;
    assert_eq!(assert_mde_key_order(&r.text), 1);
    let expanded = r.json()["value"].as_array().unwrap().clone();
    let evidence = expanded[0]["evidence"].as_array().unwrap();
    let kinds: Vec<_> = evidence
        .iter()
        .map(|e| e["entityType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["File", "Process", "User"]);
    assert_eq!(evidence[0]["sha256"], json!(sha));
    assert_eq!(evidence[0]["fileName"], "invoice.pdf.elf");
    assert_eq!(evidence[0]["filePath"], "/home/alice/Downloads");
    assert_eq!(evidence[0]["detectionStatus"], "Blocked");
    assert!(
        evidence[0]["sha1"].is_null(),
        "the agent does not compute SHA-1"
    );
    assert_eq!(evidence[1]["processId"], 4242);
    assert_eq!(
        evidence[1]["processCommandLine"],
        "bash -c ./invoice.pdf.elf --quiet"
    );
    assert_eq!(evidence[1]["fileName"], "bash");
    assert_eq!(evidence[2]["accountName"], "alice");

    // Get alert: the entity with its context and evidence.
    let alert_id = id(alert);
    let r = api.get(&format!("/api/alerts/{alert_id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut expected: Vec<String> = vec!["@odata.context".into()];
    expected.extend(MDE_ALERT_KEYS.iter().map(|k| k.to_string()));
    assert_eq!(top_level_keys(&r.text), expected);
    assert_eq!(assert_mde_key_order(&r.text), 1);
    let got = r.json();
    assert!(got["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("/api/$metadata#Alerts/$entity"));
    assert_eq!(got["evidence"].as_array().unwrap().len(), 3);

    // Its machine, and the machine's alerts.
    let r = api.get(&format!("/api/alerts/{alert_id}/machine")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["id"], json!(device.machine_id));
    let r = api
        .get(&format!("/api/machines/{}/alerts", device.machine_id))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["value"][0]["id"], json!(alert_id));
    let other = server.enroll("web-02.corp.example").await;
    let r = api
        .get(&format!("/api/machines/{}/alerts", other.machine_id))
        .await;
    assert_eq!(r.json()["value"], json!([]));

    // New -> InProgress -> Resolved, as MDE's Update alert example sends it.
    let r = api
        .patch(
            &format!("/api/alerts/{alert_id}"),
            &json!({"status": "InProgress", "assignedTo": "secop2@contoso.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "InProgress");
    assert_eq!(r.json()["assignedTo"], "secop2@contoso.com");
    assert!(r.json()["resolvedTime"].is_null());
    let r = api
        .patch(
            &format!("/api/alerts/{alert_id}"),
            &json!({
                "status": "Resolved",
                "assignedTo": "secop2@contoso.com",
                "classification": "FalsePositive",
                "determination": "Malware",
                "comment": "Resolve my alert and assign to secop2"
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let resolved = r.json();
    assert_eq!(resolved["status"], "Resolved");
    assert_eq!(resolved["classification"], "FalsePositive");
    assert_eq!(resolved["determination"], "Malware");
    assert!(resolved["resolvedTime"].is_string());
    assert_eq!(
        resolved["comments"][0]["comment"],
        "Resolve my alert and assign to secop2"
    );
    let app_id = resolved["comments"][0]["createdBy"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!app_id.is_empty());
    // Resolving keeps the alert; the audit log says who did what.
    assert_eq!(alerts(&api, "?$filter=status eq 'Resolved'").await.len(), 1);
    let audit = server.state.store.audit_events(0, 10_000).await.unwrap();
    let changes: Vec<_> = audit
        .iter()
        .filter(|(_, e)| e.event == "AlertUpdated" && e.subject == alert_id)
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1].1.actor, app_id);
    assert!(changes[1]
        .1
        .detail
        .as_deref()
        .unwrap()
        .contains("status=Resolved"));

    // The file again after the alert was resolved: a new alert.
    send(
        &device,
        vec![denial(
            "/home/alice/Downloads/invoice.pdf.elf",
            &sha,
            later.plus(Duration::from_secs(5)),
        )],
    )
    .await;
    let listed = alerts(&api, "").await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["status"], "New");

    // Batch update: one change to several alerts; an empty body answered 200.
    let r = api
        .post("/api/alerts/batchUpdate", &json!({"alertIds": [id(&listed[0]), id(&listed[1])], "status": "InProgress", "comment": "triage"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.is_empty(), "{}", r.text);
    for a in alerts(&api, "").await {
        assert_eq!(a["status"], "InProgress");
        assert!(a["resolvedTime"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_problem_and_nothing_changes() {
    let server = TestServer::start().await;
    let api = server.api(&[ALERT_RW]).await;
    let device = server.enroll("web-01.corp.example").await;
    send(
        &device,
        vec![denial("/tmp/x", &hash(1), server.state.clock.now())],
    )
    .await;
    let alert_id = id(&alerts(&api, "").await[0]);
    let path = format!("/api/alerts/{alert_id}");

    for (query, needle) in [
        ("$filter=status eq 'Closed'", "Closed"),
        (
            "$filter=alertCreationTime gt 'yesterday'",
            "alertCreationTime",
        ),
        ("$filter=severity gt 'Low'", "severity"),
        ("$filter=nosuchfield eq 1", "nosuchfield"),
        ("$expand=comments", "comments"),
        ("$top=10001", "10000"),
        ("$filter=status in ('New'", ""),
    ] {
        let r = api.get(&format!("/api/alerts?{query}")).await;
        let e = r.assert_error(400, "ODataError");
        assert!(e.message.contains(needle), "{query}: {}", e.message);
    }
    for (body, needle) in [
        (
            json!({"status": "Closed"}),
            "'Closed' is not a valid status",
        ),
        (
            json!({"classification": "Maybe"}),
            "not a valid classification",
        ),
        (json!({"determination": "Apt"}), "not a valid determination"),
        (
            json!({"severity": "High"}),
            "Property 'severity' cannot be updated",
        ),
        (
            json!({"title": "renamed", "status": "Resolved"}),
            "Property 'title' cannot be updated",
        ),
        (json!({"status": 3}), "must be a string"),
        (json!({}), "Nothing to update"),
    ] {
        let e = api
            .patch(&path, &body)
            .await
            .assert_error(400, "InvalidRequestBody");
        assert!(e.message.contains(needle), "{body}: {}", e.message);
    }
    let ids: Vec<String> = (0..1001).map(|i| format!("af1_{i}")).collect();
    let e = api
        .post(
            "/api/alerts/batchUpdate",
            &json!({"alertIds": ids, "status": "Resolved"}),
        )
        .await
        .assert_error(400, "InvalidRequestBody");
    assert!(e.message.contains("1 to 1000"), "{}", e.message);
    api.post("/api/alerts/batchUpdate", &json!({"status": "Resolved"}))
        .await
        .assert_error(400, "InvalidRequestBody");
    // One unknown id: 404 naming it, and the known one unchanged.
    let e = api
        .post(
            "/api/alerts/batchUpdate",
            &json!({"alertIds": [alert_id, "af1_1"], "status": "Resolved"}),
        )
        .await
        .assert_error(404, "ResourceNotFound");
    assert!(e.message.contains("af1_1"), "{}", e.message);
    api.get(&format!("/api/alerts/af1_1"))
        .await
        .assert_error(404, "ResourceNotFound");
    api.patch("/api/alerts/..%2Fx", &json!({"status": "Resolved"}))
        .await
        .assert_error(404, "ResourceNotFound");

    // Another tenant's caller does not see it, nor change it.
    let other_tenant = server.new_tenant("other").await;
    let foreign = server.app_in(&other_tenant, "foreign", &[ALERT_RW]).await;
    let foreign = server.api_for(&foreign).await;
    foreign
        .get(&path)
        .await
        .assert_error(404, "ResourceNotFound");
    foreign
        .patch(&path, &json!({"status": "Resolved"}))
        .await
        .assert_error(404, "ResourceNotFound");
    assert!(alerts(&foreign, "").await.is_empty());

    let stored = api.get(&path).await.json();
    assert_eq!(stored["status"], "New");
    assert_eq!(stored["comments"], json!([]));
    assert!(stored["classification"].is_null());
}

/// Device groups `Web` (tag `web`, every user) and `Servers` (`srv-` names, for
/// `g-server-admins` only).
fn access(idp: &Idp) -> AccessSpec {
    let role = |name: &str, permissions: &[&str], group: &str| RoleSpec {
        line: None,
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        user_groups: vec![group.into()],
        tenant: None,
    };
    let group = |name: &str, rank, rule, users: &[&str]| DeviceGroupSpec {
        line: None,
        name: name.into(),
        rank,
        id: None,
        rule,
        user_groups: users.iter().map(|g| g.to_string()).collect(),
        tenant: None,
    };
    AccessSpec {
        issuers: vec![IssuerSpec {
            line: None,
            issuer: idp.issuer.clone(),
            audiences: vec![AUDIENCE.into()],
            jwks_uri: None,
            tenant: None,
            console: None,
        }],
        roles: vec![
            role("Viewers", &["View data"], "g-view"),
            role(
                "Investigators",
                &["View data", "Alerts investigation"],
                "g-investigate",
            ),
        ],
        device_groups: vec![
            group("Web", 1, DeviceRule::Tag("web".into()), &[]),
            group(
                "Servers",
                2,
                DeviceRule::NamePrefix("srv-".into()),
                &["g-server-admins"],
            ),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_follow_mde_and_users_see_only_their_device_groups() {
    let idp = Idp::start(&[TestKey::Ec]).await;
    let server = TestServer::start_with(|c| c.access = access(&idp), None).await;
    let srv = server.enroll("srv-db1.corp").await;
    let web = server
        .enroll_with(
            &server.tenant_id,
            "web-1.corp",
            crate::harness::DeviceOpts {
                tags: vec!["web".into()],
                ..Default::default()
            },
        )
        .await;
    let now = server.state.clock.now();
    send(&srv, vec![denial("/tmp/a", &hash(1), now)]).await;
    send(&web, vec![denial("/tmp/b", &hash(2), now)]).await;
    let admin = server.api(&[ALERT_RW]).await;
    let all = alerts(&admin, "").await;
    assert_eq!(all.len(), 2);
    let srv_alert = id(all
        .iter()
        .find(|a| a["machineId"] == json!(srv.machine_id))
        .unwrap());
    let web_alert = id(all
        .iter()
        .find(|a| a["machineId"] == json!(web.machine_id))
        .unwrap());
    assert_eq!(
        all.iter().find(|a| id(a) == web_alert).unwrap()["rbacGroupName"],
        "Web"
    );

    // Applications: read with either alert role, write with ReadWrite; the machine of
    // an alert with the machine roles.
    let status = |r: crate::wire::Resp| r.status;
    for (roles, list, patch, machine) in [
        (vec![ALERT_READ], 200, 403, 403),
        (vec![ALERT_RW], 200, 200, 403),
        (vec![ROLE_READ], 403, 403, 200),
        (
            vec!["Machine.RestrictExecution", "Ti.ReadWrite.All"],
            403,
            403,
            403,
        ),
    ] {
        let app = server.api(&roles).await;
        assert_eq!(status(app.get("/api/alerts").await), list, "{roles:?}");
        assert_eq!(
            status(app.get(&format!("/api/alerts/{web_alert}")).await),
            list,
            "{roles:?}"
        );
        let r = app
            .patch(
                &format!("/api/alerts/{web_alert}"),
                &json!({"comment": "seen"}),
            )
            .await;
        assert_eq!(r.status, patch, "{roles:?}: {}", r.text);
        if patch == 403 {
            let e = r.assert_error(403, "Forbidden");
            assert_eq!(
                e.message,
                "Missing application roles. API required roles: Alert.ReadWrite.All"
            );
        }
        assert_eq!(
            status(app.get(&format!("/api/alerts/{web_alert}/machine")).await),
            machine,
            "{roles:?}"
        );
    }
    server
        .anonymous()
        .get("/api/alerts")
        .await
        .assert_error(401, "Unauthorized");

    // Users: the delegated scope, the portal permission, and their device groups.
    let stamp = now.unix_seconds();
    let user = |upn: &str, scopes: &str, groups: &[&str]| {
        server.anonymous().with_token(&sign(
            TestKey::Ec,
            &idp.user_claims(stamp, upn, scopes, groups),
        ))
    };
    let viewer = user("viewer@corp.example", "Alert.Read", &["g-view"]);
    let seen = alerts(&viewer, "").await;
    assert_eq!(
        seen.iter().map(id).collect::<Vec<_>>(),
        [web_alert.clone()],
        "only the Web group"
    );
    viewer
        .get(&format!("/api/alerts/{srv_alert}"))
        .await
        .assert_error(404, "ResourceNotFound");
    viewer
        .patch(
            &format!("/api/alerts/{web_alert}"),
            &json!({"status": "InProgress"}),
        )
        .await
        .assert_error(403, "Forbidden");
    let investigator = user("inv@corp.example", "Alert.ReadWrite", &["g-investigate"]);
    let r = investigator
        .patch(
            &format!("/api/alerts/{web_alert}"),
            &json!({"status": "InProgress"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "InProgress");
    investigator
        .patch(
            &format!("/api/alerts/{srv_alert}"),
            &json!({"status": "InProgress"}),
        )
        .await
        .assert_error(404, "ResourceNotFound");
    investigator
        .post(
            "/api/alerts/batchUpdate",
            &json!({"alertIds": [web_alert, srv_alert], "status": "Resolved"}),
        )
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        alerts(&admin, "?$filter=status eq 'Resolved'").await.len(),
        0,
        "nothing changed"
    );
    let server_admin = user(
        "srv@corp.example",
        "Alert.ReadWrite",
        &["g-investigate", "g-server-admins"],
    );
    let r = server_admin
        .post(
            "/api/alerts/batchUpdate",
            &json!({"alertIds": [web_alert, srv_alert], "status": "Resolved"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let audit = server.state.store.audit_events(0, 10_000).await.unwrap();
    assert!(audit.iter().any(|(_, e)| e.event == "AlertUpdated"
        && e.actor == "srv@corp.example"
        && e.subject == srv_alert));
    // A user token without the alert scope.
    user("viewer@corp.example", "Machine.Read", &["g-view"])
        .get("/api/alerts")
        .await
        .assert_error(403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_with_alert_creation_time_gt_misses_and_repeats_nothing_while_alerts_arrive() {
    let server = TestServer::start_with(generous_limits, None).await;
    poll_while_alerts_arrive(std::slice::from_ref(&server)).await;
    let api = server.api(&[ALERT_READ]).await;
    let device = server.enroll("poll-late.corp").await;
    // Following @odata.nextLink while new alerts arrive repeats nothing either.
    let mut next = Some(server.url("/api/alerts?$top=25"));
    let mut paged = Vec::new();
    let mut round = 0;
    while let Some(url) = next {
        let r = api.send(api.request(reqwest::Method::GET, &url)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.json();
        paged.extend(body["value"].as_array().unwrap().iter().map(id));
        next = body["@odata.nextLink"].as_str().map(str::to_string);
        round += 1;
        send(
            &device,
            vec![denial(
                &format!("/tmp/late{round}"),
                &hash(90_000 + round),
                server.state.clock.now(),
            )],
        )
        .await;
    }
    let unique: HashSet<_> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len());
    assert_eq!(
        paged.len(),
        120,
        "the pages hold exactly what existed when the first was read"
    );
}

/// Alerts raised through every server of `servers` (three devices, 40 files each) while
/// a poller on the last one pages with `alertCreationTime gt <newest seen>`: it sees
/// every alert exactly once.
async fn poll_while_alerts_arrive(servers: &[TestServer]) {
    let first = &servers[0];
    let app = first.app(&[ALERT_READ]).await;
    let api = servers[servers.len() - 1].api_for(&app).await;
    let mut devices = Vec::new();
    for (i, name) in ["poll-1.corp", "poll-2.corp", "poll-3.corp"]
        .iter()
        .enumerate()
    {
        let device = first.enroll(name).await;
        let via = &servers[i % servers.len()];
        devices.push(Device {
            base: via.base.clone(),
            ..device
        });
    }
    let clock = first.state.clock.clone();
    let producers: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(d, device)| {
            let device = device.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                for i in 0..40u32 {
                    let n = (d as u32) * 1000 + i;
                    send(
                        &device,
                        vec![denial(&format!("/tmp/p{n}"), &hash(n), clock.now())],
                    )
                    .await;
                }
            })
        })
        .collect();
    // The poller: newest-seen watermark, oldest first, small pages, as SOAR platforms poll.
    let mut seen: Vec<String> = Vec::new();
    let mut watermark = "1970-01-01T00:00:00Z".to_string();
    let mut idle_rounds = 0;
    loop {
        let page = alerts(
            &api,
            &format!(
                "?$filter=alertCreationTime gt {watermark}&$orderby=alertCreationTime asc&$top=7"
            ),
        )
        .await;
        for a in &page {
            seen.push(id(a));
            watermark = a["alertCreationTime"].as_str().unwrap().to_string();
        }
        let done = producers.iter().all(|p| p.is_finished());
        if page.is_empty() && done {
            idle_rounds += 1;
            if idle_rounds > 1 {
                break;
            }
        }
    }
    for p in producers {
        p.await.unwrap();
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an alert was seen twice");
    let all = alerts(&api, "?$top=10000").await;
    assert_eq!(all.len(), 120);
    let stored: HashSet<_> = all.iter().map(id).collect();
    assert_eq!(unique, stored, "an alert was missed");
    // Creation times are distinct, and the default order is newest first.
    let times: Vec<Timestamp> = all
        .iter()
        .map(|a| Timestamp::parse(a["alertCreationTime"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgresql_keep_the_poller_exact() {
    let Some(replicas) = crate::replicas::replicas(
        "alerts::replicas_on_postgresql_keep_the_poller_exact",
        2,
        generous_limits,
        None,
    )
    .await
    else {
        return;
    };
    poll_while_alerts_arrive(&replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_denials_stays_grouped_loses_nothing_and_the_server_keeps_answering() {
    let server = TestServer::start_with(generous_limits, None).await;
    let api = server.api(&[ALERT_READ, ROLE_READ]).await;
    let device = server.enroll("flooded.corp").await;
    let start = server.state.clock.now();
    // 10,000 denials of five files from one device, in the agent's batches of 500,
    // while an analyst keeps listing machines.
    let flood = {
        let device = device.clone();
        tokio::spawn(async move {
            for batch in 0..20u32 {
                let events: Vec<Value> = (0..500u32)
                    .map(|i| {
                        let n = batch * 500 + i;
                        denial(
                            &format!("/tmp/w{}", n % 5),
                            &hash(n % 5),
                            start.plus(Duration::from_millis(u64::from(n))),
                        )
                    })
                    .collect();
                send(&device, events).await;
            }
        })
    };
    let mut answered = 0;
    let flooding = std::time::Instant::now();
    while !flood.is_finished() {
        let r = within(
            WAIT,
            "the API while flooded",
            api.get("/api/machines?$top=5"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        answered += 1;
    }
    flood.await.unwrap();
    println!(
        "10,000 denials stored in {:?}; the analyst's list answered {answered} times meanwhile",
        flooding.elapsed()
    );
    assert!(answered > 0);
    let all = alerts(&api, "?$expand=evidence").await;
    assert_eq!(all.len(), 5, "one alert per file: {}", all.len());
    for a in &all {
        let n =
            u64::from_str_radix(&a["evidence"][0]["sha256"].as_str().unwrap()[..8], 16).unwrap();
        assert_eq!(
            a["firstEventTime"],
            json!(start.plus(Duration::from_millis(n)))
        );
        assert_eq!(
            a["lastEventTime"],
            json!(start.plus(Duration::from_millis(9_995 + n)))
        );
    }
    // Every event kept (the newest 10,000 per machine).
    let r = api
        .get(&format!(
            "/api/machines/{}/events?$count=true&$top=1",
            device.machine_id
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["@odata.count"], 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_protection_raises_one_alert_per_gap_and_per_silence() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
        1_800_000_000,
    )));
    let server = TestServer::start_with_clock(clock.clone()).await;
    let api = server.api(&[ALERT_READ]).await;
    let device = server.enroll("restricted.corp").await;
    let t0 = clock.now();
    let gap = json!({"from": t0.minus(Duration::from_secs(300)), "to": t0.minus(Duration::from_secs(60))});
    let restricted = json!({
        "restricted": true, "mode": "enforce", "coverage": ["/"], "allowlistVersion": 0,
        "unprotectedSeconds": 240, "lastUnprotected": gap,
        "protected": [{"sha256": hash(3), "path": "/usr/sbin/appfence", "role": "agent"}]
    });
    device.heartbeat(restricted.clone()).await;
    device.heartbeat(restricted.clone()).await;
    let list = alerts(&api, "?$expand=evidence").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["title"], "Restricted device was unprotected");
    assert_eq!(list[0]["category"], "DefenseEvasion");
    assert_eq!(list[0]["severity"], "High");
    assert_eq!(list[0]["firstEventTime"], gap["from"]);
    assert_eq!(list[0]["lastEventTime"], gap["to"]);
    assert!(
        list[0]["description"]
            .as_str()
            .unwrap()
            .contains("for 240 s"),
        "{}",
        list[0]["description"]
    );
    assert_eq!(list[0]["evidence"][0]["filePath"], "/usr/sbin");
    assert_eq!(list[0]["evidence"][0]["sha256"], json!(hash(3)));

    // Silent for longer than --alert-after-silence (10 minutes): one alert, however
    // many sweeps look.
    clock.advance(Duration::from_secs(9 * 60));
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    assert_eq!(
        alerts(&api, "").await.len(),
        1,
        "not silent long enough yet"
    );
    clock.advance(Duration::from_secs(2 * 60));
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    let list = alerts(&api, "").await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["title"], "Restricted device stopped checking in");
    // Its last event is the device's last check-in, just after t0.
    let last = Timestamp::parse(list[0]["lastEventTime"].as_str().unwrap()).unwrap();
    assert!(
        last >= t0 && last < t0.plus(Duration::from_secs(1)),
        "{last}"
    );
    // Back, then silent again: another alert.
    device.heartbeat(restricted).await;
    clock.advance(Duration::from_secs(11 * 60));
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    assert_eq!(alerts(&api, "").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_raises_alerts_only_when_configured_and_indicator_hits_take_the_indicator() {
    for monitor_alerts in [false, true] {
        let server =
            TestServer::start_with(|c| c.alerts.monitor_alerts = monitor_alerts, None).await;
        let api = server.api(&[ALERT_READ, "Ti.ReadWrite.All"]).await;
        let device = server.enroll("watched.corp").await;
        let now = server.state.clock.now();
        let r = api
            .post("/api/indicators", &json!({
                "indicatorValue": hash(9), "indicatorType": "FileSha256", "action": "AlertAndBlock",
                "title": "Known ransomware loader", "description": "From IR case 42.",
                "severity": "High", "generateAlert": true
            }))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let indicator_id = r.json()["id"].as_str().unwrap().to_string();
        let mut would_deny = denial("/tmp/monitored", &hash(8), now);
        would_deny["monitor"] = json!(true);
        let mut blocked = denial("/tmp/loader", &hash(9), now);
        blocked["rule"] = json!("blocked");
        blocked["indicatorId"] = json!(indicator_id);
        blocked["alert"] = json!(true);
        send(&device, vec![would_deny, blocked]).await;
        let list = alerts(&api, "").await;
        let titles: Vec<_> = list
            .iter()
            .map(|a| a["title"].as_str().unwrap().to_string())
            .collect();
        let block = list
            .iter()
            .find(|a| a["title"] == "Known ransomware loader")
            .expect("the indicator's alert");
        assert_eq!(block["severity"], "High");
        assert_eq!(block["detectionSource"], "CustomerTI");
        assert_eq!(block["threatName"], "Known ransomware loader");
        assert!(block["description"]
            .as_str()
            .unwrap()
            .starts_with("From IR case 42."));
        assert_eq!(list.len(), if monitor_alerts { 2 } else { 1 }, "{titles:?}");
        if monitor_alerts {
            let m = list
                .iter()
                .find(|a| a["severity"] == "Informational")
                .unwrap();
            assert_eq!(
                m["title"],
                "Untrusted program would have been stopped (monitor mode)"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_update_has_mde_rate_limits() {
    let server = TestServer::start().await;
    let api = server.api(&[ALERT_RW]).await;
    let device = server.enroll("limits.corp").await;
    send(
        &device,
        vec![denial("/tmp/x", &hash(1), server.state.clock.now())],
    )
    .await;
    let alert_id = id(&alerts(&api, "").await[0]);
    let body = json!({"alertIds": [alert_id], "comment": "again"});
    for _ in 0..10 {
        let r = api.post("/api/alerts/batchUpdate", &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r
            .header("ratelimit-policy")
            .unwrap()
            .contains("\"minute\";q=10"));
    }
    let e = api
        .post("/api/alerts/batchUpdate", &body)
        .await
        .assert_error(429, "TooManyRequests");
    assert!(
        e.message.contains("maximum allowed 10 per 00:01:00"),
        "{}",
        e.message
    );
    // Other alert calls keep MDE's 100 a minute.
    let r = api.get("/api/alerts").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("ratelimit-policy")
        .unwrap()
        .contains("\"minute\";q=100"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_batches_beyond_the_gate_are_answered_429_before_their_body_is_read() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let device = server.enroll("gate.corp").await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // A batch in flight: its head and part of its body sent, the rest never.
    let hold_as = |credential: String| {
        let addr = addr.clone();
        async move {
            let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /agent/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {credential}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{\"events\": ["
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            conn
        }
    };
    let hold = || hold_as(device.credential.clone());
    // Without a device's credential nobody takes a place: answered 401 at once.
    for _ in 0..appfence_server::agent_gateway::MAX_CONCURRENT_EVENT_BATCHES {
        use tokio::io::AsyncReadExt;
        let mut forged = hold_as("not-a-credential".into()).await;
        let mut answer = vec![0u8; 64];
        let n = within(WAIT, "the stranger's answer", forged.read(&mut answer))
            .await
            .unwrap();
        let head = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    }
    let r = device.post_events(&json!({"events": []})).await;
    assert_eq!(r.status, 200, "strangers hold no place: {}", r.text);
    let mut held = Vec::new();
    for _ in 0..appfence_server::agent_gateway::MAX_CONCURRENT_EVENT_BATCHES {
        held.push(hold().await);
    }
    // Eight batches in flight: the next is refused. A held batch the server read while
    // one of ours was being stored was itself refused (it has an answer): replace it,
    // so that all eight end up holding their places.
    let refused = within(WAIT, "a refused batch", async {
        loop {
            for conn in held.iter_mut() {
                let mut buf = [0u8; 64];
                match conn.try_read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => *conn = hold().await,
                }
            }
            let r = device.post_events(&json!({"events": []})).await;
            if r.status == 429 {
                return r;
            }
            assert_eq!(r.status, 200, "{}", r.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let e = refused.assert_error(429, "TooManyRequests");
    assert!(e.message.contains("send this one again"), "{}", e.message);
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The senders go away: their places free up, and batches are taken again.
    drop(held);
    within(WAIT, "a batch taken again", async {
        loop {
            let r = device
                .post_events(
                    &json!({"events": [denial("/tmp/x", &hash(1), server.state.clock.now())]}),
                )
                .await;
            if r.status == 200 {
                return;
            }
            assert_eq!(r.status, 429, "{}", r.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
