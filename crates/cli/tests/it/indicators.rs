//! The allowlist end to end: MDE's indicators API (submit, list, delete, permissions),
//! the allowlist and its version as agents see them, monitor mode, denial events and the
//! enforcement state, and the CLI commands over all of it.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::rbac::DeviceRule;
use appfence_core::{Clock, ManualClock};
use appfence_proto::agent::EnforcementMode;
use appfence_proto::Timestamp;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, IssuerSpec, RoleSpec};
use serde_json::{json, Value};

use crate::harness::{within, Api, Device, DeviceOpts, TestServer, ROLE_READ, ROLE_RESTRICT};
use crate::idp::{sign, Idp, TestKey, AUDIENCE};
use crate::process::run;
use crate::wire::{is_mde_timestamp, top_level_keys, Resp};

const TI_ALL: &str = "Ti.ReadWrite.All";
const TI_OWN: &str = "Ti.ReadWrite";
const WAIT: Duration = Duration::from_secs(20);

const INDICATOR_KEYS: &[&str] = &[
    "id",
    "indicatorValue",
    "indicatorType",
    "action",
    "application",
    "source",
    "sourceType",
    "title",
    "creationTimeDateTimeUtc",
    "createdBy",
    "expirationTime",
    "lastUpdateTime",
    "lastUpdatedBy",
    "severity",
    "description",
    "recommendedActions",
    "rbacGroupNames",
    "rbacGroupIds",
    "generateAlert",
];

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn allow(value: &str, title: &str) -> Value {
    json!({
        "indicatorValue": value,
        "indicatorType": "FileSha256",
        "action": "Allowed",
        "title": title,
        "description": "built in house",
    })
}

async fn submit(api: &Api, body: &Value) -> Value {
    let r = api.post("/api/indicators", body).await;
    assert_eq!(r.status, 200, "submit: {}", r.text);
    r.assert_odata_headers();
    r.json()
}

fn ids(list: &Resp) -> Vec<String> {
    list.json()["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value: {}", list.text))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_are_submitted_updated_listed_and_deleted_as_in_mde() {
    let server = TestServer::start().await;
    let app = server.app(&[TI_ALL]).await;
    let api = server.api_for(&app).await;
    let public = server.base.clone();

    // Submit: 200 with the entity, keys in MDE's order, the hash in lower case.
    let r = api
        .post(
            "/api/indicators",
            &json!({
                "indicatorValue": hash(0xab).to_uppercase(),
                "indicatorType": "FileSha256",
                "action": "Allowed",
                "title": "compiler",
                "description": "our build tool",
                "application": "toolchain",
                "severity": "Low",
                "recommendedActions": "none",
                "rbacGroupNames": [],
                "generateAlert": false
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.assert_odata_headers();
    let mut expected_keys = vec!["@odata.context"];
    expected_keys.extend_from_slice(INDICATOR_KEYS);
    assert_eq!(top_level_keys(&r.text), expected_keys);
    let first = r.json();
    assert_eq!(
        first["@odata.context"],
        format!("{public}/api/$metadata#Indicators/$entity")
    );
    let id = first["id"].as_str().unwrap().to_string();
    assert!(
        id.parse::<u64>().is_ok(),
        "id is a number as a string: {id}"
    );
    let created = first["creationTimeDateTimeUtc"].as_str().unwrap();
    assert!(is_mde_timestamp(created), "{created}");
    assert_eq!(
        first,
        json!({
            "@odata.context": format!("{public}/api/$metadata#Indicators/$entity"),
            "id": id,
            "indicatorValue": hash(0xab),
            "indicatorType": "FileSha256",
            "action": "Allowed",
            "application": "toolchain",
            "source": app.display_name,
            "sourceType": "AadApp",
            "title": "compiler",
            "creationTimeDateTimeUtc": created,
            "createdBy": app.client_id,
            "expirationTime": null,
            "lastUpdateTime": created,
            "lastUpdatedBy": null,
            "severity": "Low",
            "description": "our build tool",
            "recommendedActions": "none",
            "rbacGroupNames": [],
            "rbacGroupIds": [],
            "generateAlert": false
        })
    );

    // The same value and type again: an update of the same indicator (MDE spells
    // enums in any case).
    let mut again = allow(&hash(0xab), "compiler v2");
    again["indicatorType"] = json!("filesha256");
    again["application"] = json!("ignored on update");
    let updated = submit(&api, &again).await;
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["title"], "compiler v2");
    assert_eq!(updated["application"], "toolchain");
    assert_eq!(updated["severity"], "Informational");
    assert_eq!(updated["lastUpdatedBy"], app.display_name.as_str());
    assert_eq!(updated["creationTimeDateTimeUtc"], created);

    let second = submit(&api, &allow(&hash(0xcd), "linker")).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, id);

    // List: newest first, OData options, a next link, both prefixes.
    let all = api.get("/api/indicators?$count=true").await;
    assert_eq!(all.status, 200, "{}", all.text);
    all.assert_odata_headers();
    let page = all.json();
    assert_eq!(
        page["@odata.context"],
        format!("{public}/api/$metadata#Indicators")
    );
    assert_eq!(page["@odata.count"], json!(2));
    assert_eq!(ids(&all), [second_id.clone(), id.clone()]);
    let item = &page["value"][1];
    let mut entity = updated.clone();
    entity.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(item, &entity, "list items are the entity without a context");
    let filtered = api
        .get(&format!(
            "/api/indicators?$filter=indicatorValue eq '{}' and action eq 'Allowed' and createdBy eq '{}'",
            hash(0xcd),
            app.client_id
        ))
        .await;
    assert_eq!(ids(&filtered), [second_id.as_str()]);
    let by_type = api
        .get("/api/indicators?$filter=indicatorType in ('FileSha1','FileSha256')&$orderby=indicatorValue asc")
        .await;
    assert_eq!(ids(&by_type), [id.clone(), second_id.clone()]);
    let since = api
        .get(&format!(
            "/api/indicators?$filter=creationTimeDateTimeUtc ge {created}&$top=1"
        ))
        .await
        .json();
    assert_eq!(since["value"].as_array().unwrap().len(), 1);
    // The same query, continued after the last row by a $skiptoken.
    let link = since["@odata.nextLink"].as_str().unwrap().to_string();
    assert!(
        link.starts_with(&format!(
            "{public}/api/indicators?$filter=creationTimeDateTimeUtc+ge+{}&$top=1&$skiptoken=",
            created.replace(':', "%3A")
        )),
        "{link}"
    );
    let rest = api.get(&link).await.json();
    assert!(!rest["value"].as_array().unwrap().is_empty(), "{rest}");
    assert_ne!(rest["value"][0]["id"], since["value"][0]["id"]);
    let v1 = api.get("/api/v1.0/indicators").await;
    assert_eq!(ids(&v1), [second_id.clone(), id.clone()]);
    api.get("/api/indicators?$filter=color eq 'red'")
        .await
        .assert_error(400, "ODataError");

    // Refusals, each with its code and a message naming the problem.
    let mut missing = allow(&hash(1), "t");
    missing.as_object_mut().unwrap().remove("title");
    let e = api
        .post("/api/indicators", &missing)
        .await
        .assert_error(400, "MissingRequiredParameter");
    assert_eq!(e.message, "Parameter title is missing");
    let mut sha1 = allow("220e7d15b011d7fac48f2bd61114db1022197f7f", "t");
    sha1["indicatorType"] = json!("FileSha1");
    let e = api
        .post("/api/indicators", &sha1)
        .await
        .assert_error(400, "BadRequest");
    assert!(
        e.message
            .contains("indicatorType FileSha1 is not supported")
            && e.message.contains("supported indicatorType: FileSha256"),
        "{}",
        e.message
    );
    let mut warn = allow(&hash(1), "t");
    warn["action"] = json!("Warn");
    let e = api
        .post("/api/indicators", &warn)
        .await
        .assert_error(400, "BadRequest");
    assert!(
        e.message.starts_with("action Warn is not supported"),
        "{}",
        e.message
    );
    let mut unknown = allow(&hash(1), "t");
    unknown["action"] = json!("AlwaysAllow");
    let e = api
        .post("/api/indicators", &unknown)
        .await
        .assert_error(400, "InvalidRequestBody");
    assert!(e.message.contains("possible values are"), "{}", e.message);
    let e = api
        .post("/api/indicators", &allow("not-a-hash", "t"))
        .await
        .assert_error(400, "InvalidInput");
    assert!(e.message.contains("'not-a-hash'"), "{}", e.message);
    let mut grouped = allow(&hash(1), "t");
    grouped["rbacGroupNames"] = json!(["team1"]);
    let e = api
        .post("/api/indicators", &grouped)
        .await
        .assert_error(400, "BadRequest");
    assert_eq!(
        e.message,
        "rbacGroupNames: there is no device group 'team1'; device groups: none"
    );
    api.post_raw("/api/indicators", "")
        .await
        .assert_error(400, "InvalidRequestBody");

    // Delete: 204 without a body; then 404 in the MDE envelope.
    let r = api.delete(&format!("/api/indicators/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    let e = api
        .delete(&format!("/api/indicators/{id}"))
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(e.message, format!("Indicator {id} was not found"));
    api.delete("/api/indicators/abc")
        .await
        .assert_error(400, "InvalidInput");
    assert_eq!(ids(&api.get("/api/indicators").await), [second_id.as_str()]);

    // Rate limits count per API, as for the machine APIs.
    let r = api.get("/api/indicators").await;
    assert!(r.header("ratelimit").is_some(), "{:?}", r.headers);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_need_a_ti_role_and_ti_readwrite_sees_only_its_own() {
    let server = TestServer::start().await;
    let machine_app = server.api(&[ROLE_RESTRICT, ROLE_READ]).await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/indicators"),
        (reqwest::Method::DELETE, "/api/indicators/1"),
    ] {
        let r = machine_app
            .send(machine_app.request(method, path))
            .await
            .assert_error(403, "Forbidden");
        assert_eq!(
            r.message,
            "Missing application roles. API required roles: Ti.ReadWrite.All, Ti.ReadWrite"
        );
    }
    machine_app
        .post("/api/indicators", &allow(&hash(1), "t"))
        .await
        .assert_error(403, "Forbidden");

    // Two applications with Ti.ReadWrite: each sees and changes only its own.
    let admin = server.api(&[TI_ALL]).await;
    let a = server.api(&[TI_OWN]).await;
    let b = server.api(&[TI_OWN]).await;
    let of_a = submit(&a, &allow(&hash(1), "a")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let of_b = submit(&b, &allow(&hash(2), "b")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ids(&a.get("/api/indicators?$count=true").await),
        [of_a.as_str()]
    );
    assert_eq!(
        a.get("/api/indicators?$count=true").await.json()["@odata.count"],
        json!(1)
    );
    assert_eq!(
        ids(&admin.get("/api/indicators").await),
        [of_b.clone(), of_a.clone()]
    );
    a.delete(&format!("/api/indicators/{of_b}"))
        .await
        .assert_error(404, "ResourceNotFound");
    let e = a
        .post("/api/indicators", &allow(&hash(2), "taken over"))
        .await
        .assert_error(403, "Forbidden");
    assert!(e.message.contains("Ti.ReadWrite.All"), "{}", e.message);
    // Ti.ReadWrite.All may change anyone's.
    let by_admin = submit(&admin, &allow(&hash(2), "reviewed")).await;
    assert_eq!(
        (by_admin["id"].as_str(), by_admin["title"].as_str()),
        (Some(of_b.as_str()), Some("reviewed"))
    );
    assert_eq!(
        a.delete(&format!("/api/indicators/{of_a}")).await.status,
        204
    );
    server.stop().await;
}

/// Users of an external issuer: the delegated scope Ti.ReadWrite and the portal
/// permission "Manage security settings"; denial events follow the device groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_need_the_scope_and_manage_security_settings_and_events_follow_device_groups() {
    let idp = Idp::start(&[TestKey::Ec]).await;
    let role = |name: &str, permissions: &[&str], group: &str| RoleSpec {
        line: None,
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        user_groups: vec![group.into()],
        tenant: None,
    };
    let access = AccessSpec {
        issuers: vec![IssuerSpec {
            line: None,
            issuer: idp.issuer.clone(),
            audiences: vec![AUDIENCE.into()],
            jwks_uri: None,
            tenant: None,
            console: None,
        }],
        roles: vec![
            role(
                "Security admins",
                &["Manage security settings", "View data"],
                "g-secadmin",
            ),
            role("Viewers", &["View data"], "g-view"),
        ],
        device_groups: vec![DeviceGroupSpec {
            line: None,
            name: "Servers".into(),
            rank: 1,
            id: None,
            rule: DeviceRule::NamePrefix("srv-".into()),
            user_groups: vec!["g-server-admins".into()],
            tenant: None,
        }],
    };
    let server = TestServer::start_with(|c| c.access = access, None).await;
    let now = server.state.clock.now().unix_seconds();
    let token = |upn: &str, scopes: &str, groups: &[&str]| {
        sign(TestKey::Ec, &idp.user_claims(now, upn, scopes, groups))
    };
    let user = |t: &str| server.anonymous().with_token(t);

    let admin = user(&token(
        "sec@corp.example",
        "Ti.ReadWrite Machine.Read",
        // An indicator without rbacGroupNames reaches every device group.
        &["g-secadmin", "g-server-admins"],
    ));
    let created = submit(&admin, &allow(&hash(7), "approved by security")).await;
    assert_eq!(created["sourceType"], "User");
    assert_eq!(created["createdBy"], "sec@corp.example");
    assert_eq!(created["source"], "sec@corp.example");
    assert_eq!(admin.get("/api/indicators").await.status, 200);

    let no_scope = user(&token("sec@corp.example", "Machine.Read", &["g-secadmin"]));
    let e = no_scope
        .get("/api/indicators")
        .await
        .assert_error(403, "Forbidden");
    assert_eq!(
        e.message,
        "Missing delegated scopes. API required scopes: Ti.ReadWrite"
    );
    let viewer = user(&token(
        "view@corp.example",
        "Ti.ReadWrite Machine.Read",
        &["g-view"],
    ));
    let e = viewer
        .post("/api/indicators", &allow(&hash(8), "t"))
        .await
        .assert_error(403, "Forbidden");
    assert_eq!(
        e.message,
        "Missing user permission. API required role permission: Manage security settings"
    );

    // Events and enforcement of a device in the Servers group: not for a viewer outside
    // it; fine for a server admin.
    let srv = server.enroll("srv-db1.corp").await;
    let r = srv
        .post_events(&json!({ "events": [event(1, "/tmp/evil", "exec", false)] }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for path in [
        format!("/api/machines/{}/events", srv.machine_id),
        format!("/api/machines/{}/enforcement", srv.machine_id),
    ] {
        let e = viewer.get(&path).await.assert_error(403, "Forbidden");
        assert!(
            e.message.contains("device group 'Servers'"),
            "{}",
            e.message
        );
        let ops = user(&token(
            "ops@corp.example",
            "Machine.Read",
            &["g-view", "g-server-admins"],
        ));
        assert_eq!(ops.get(&path).await.status, 200, "{path}");
    }
    server.stop().await;
}

fn event(seconds_ago: i64, path: &str, kind: &str, monitor: bool) -> Value {
    let at = Timestamp::from_unix_seconds(1_750_000_000 - seconds_ago);
    json!({
        "time": at.to_string(),
        "path": path,
        "sha256": hash(0xee).to_uppercase(),
        "pid": 4242,
        "uid": 1000,
        "parent": "/usr/bin/bash",
        "kind": kind,
        "monitor": monitor
    })
}

fn restricted_state(since: &str) -> Value {
    json!({
        "restricted": true,
        "since": since,
        "appliedActionId": null,
        "mode": "monitor",
        "coverage": ["/", "/home"],
        "allowlistVersion": 2,
        "unprotectedSeconds": 42,
        "lastUnprotected": { "from": "2025-06-15T10:00:00Z", "to": "2025-06-15T10:00:42Z" }
    })
}

async fn allowlist_version_of(device: &Device) -> u64 {
    device.heartbeat(json!({ "restricted": false })).await["desired"]["allowlistVersion"]
        .as_u64()
        .unwrap()
}

/// An indicator change answers waiting long-polls with the new allowlist version, rather
/// than leaving agents to learn it at their next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indicator_change_wakes_waiting_agents() {
    let server = TestServer::start_with(|c| c.long_poll_max = Duration::from_secs(120), None).await;
    let api = server.api(&[TI_ALL]).await;
    let device = server.enroll("web-1.corp").await;
    let waiting = {
        let device = device.clone();
        tokio::spawn(async move { device.poll(120).await })
    };
    // The long-poll is waiting once the device's notifier is registered.
    within(WAIT, "the long-poll to wait", async {
        while server.state.dispatch.waiting_devices() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    submit(&api, &allow(&hash(0x42), "wake")).await;
    let answer = within(WAIT, "the woken long-poll", waiting).await.unwrap();
    assert_eq!(answer["commands"], json!([]));
    assert_eq!(answer["desired"]["allowlistVersion"], json!(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_see_the_allowlist_and_its_version_and_expired_indicators_leave_it() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    let api = server.api(&[TI_ALL]).await;
    let device = server.enroll("web-1.corp").await;
    let other_tenant = server.new_tenant("Fabrikam").await;
    let stranger = server
        .enroll_with(&other_tenant, "web-9.fabrikam", DeviceOpts::default())
        .await;

    assert_eq!(allowlist_version_of(&device).await, 0);
    assert_eq!(
        device.allowlist().await,
        json!({ "version": 0, "sha256": [] })
    );

    let soon = Timestamp::from_unix_seconds(clock.now().unix_seconds() + 60).to_string();
    submit(&api, &allow(&hash(0xcc), "c")).await;
    let mut expiring = allow(&hash(0xaa), "a");
    expiring["expirationTime"] = json!(soon);
    let expiring = submit(&api, &expiring).await;
    assert_eq!(expiring["expirationTime"], soon.as_str());
    assert_eq!(allowlist_version_of(&device).await, 2);
    assert_eq!(
        device.allowlist().await,
        json!({ "version": 2, "sha256": [hash(0xaa), hash(0xcc)], "nextExpiry": soon })
    );
    // The command long-poll carries the version too.
    assert_eq!(
        device.poll(0).await["desired"]["allowlistVersion"],
        json!(2)
    );
    // Another tenant's devices see nothing of it.
    assert_eq!(
        stranger.allowlist().await,
        json!({ "version": 0, "sha256": [] })
    );

    // Once expired, the sweeper deletes the indicator and the version moves on.
    clock.advance(Duration::from_secs(61));
    within(
        WAIT,
        "the expired indicator to leave the allowlist",
        async {
            while device.allowlist().await["version"] != json!(3) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert_eq!(
        device.allowlist().await,
        json!({ "version": 3, "sha256": [hash(0xcc)] })
    );
    assert_eq!(ids(&api.get("/api/indicators").await).len(), 1);

    // Deleting changes the version and the list.
    let id = api.get("/api/indicators").await.json()["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.delete(&format!("/api/indicators/{id}")).await.status,
        204
    );
    assert_eq!(
        device.allowlist().await,
        json!({ "version": 4, "sha256": [] })
    );
    assert_eq!(allowlist_version_of(&device).await, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_reaches_the_desired_state() {
    let server = TestServer::start_with(|c| c.agent_mode = EnforcementMode::Monitor, None).await;
    let device = server.enroll("web-1.corp").await;
    let desired = device.heartbeat(json!({ "restricted": false })).await["desired"].clone();
    assert_eq!(
        desired,
        json!({ "restricted": false, "actionId": null, "mode": "monitor", "allowlistVersion": 0 })
    );
    assert_eq!(device.poll(0).await["desired"]["mode"], "monitor");
    server.stop().await;

    let server = TestServer::start().await;
    let device = server.enroll("web-1.corp").await;
    assert_eq!(
        device.heartbeat(json!({ "restricted": false })).await["desired"]["mode"],
        "enforce"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_events_are_stored_and_listed_newest_first() {
    let server = TestServer::start().await;
    let api = server.api(&[ROLE_READ]).await;
    let device = server.enroll("web-1.corp").await;
    let other = server.enroll("web-2.corp").await;

    let r = device
        .post_events(&json!({ "events": [
            event(30, "/tmp/a.out", "exec", false),
            event(20, "/home/u/libx.so", "elfOpen", false),
            event(10, "/tmp/b.out", "exec", true),
        ]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({ "accepted": 3 }));
    let r = other
        .post_events(&json!({ "events": [event(5, "/tmp/other", "exec", false)] }))
        .await;
    assert_eq!(r.json(), json!({ "accepted": 1 }));

    let path = format!("/api/machines/{}/events", device.machine_id);
    let r = api.get(&format!("{path}?$count=true")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.assert_odata_headers();
    let page = r.json();
    assert_eq!(
        page["@odata.context"],
        format!("{}/api/$metadata#MachineEvents", server.base)
    );
    assert_eq!(page["@odata.count"], json!(3));
    let newest = &page["value"][0];
    assert_eq!(
        newest,
        &json!({
            "time": Timestamp::from_unix_seconds(1_750_000_000 - 10).to_string(),
            "path": "/tmp/b.out",
            "sha256": hash(0xee),
            "pid": 4242,
            "uid": 1000,
            "parent": "/usr/bin/bash",
            "kind": "exec",
            "monitor": true,
            "machineId": device.machine_id,
            "computerDnsName": "web-1.corp",
            // No indicator decided it: no `rule`, and no alert.
            "alert": false
        })
    );
    let paths: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/tmp/b.out", "/home/u/libx.so", "/tmp/a.out"]);
    // By DNS name too; $top and $skip page; $filter narrows.
    let top = api
        .get("/api/machines/web-1.corp/events?$top=1&$skip=1")
        .await
        .json();
    assert_eq!(top["value"][0]["path"], "/home/u/libx.so");
    let link = top["@odata.nextLink"].as_str().unwrap().to_string();
    assert!(link.contains("$top=1&$skiptoken="), "{link}");
    let next = api.get(&link).await.json();
    assert_eq!(next["value"][0]["path"], "/tmp/a.out", "{next}");
    let elf = api
        .get(&format!("{path}?$filter=kind eq 'elfOpen'"))
        .await
        .json();
    assert_eq!(elf["value"].as_array().unwrap().len(), 1);

    // Refused batches store nothing.
    let too_many: Vec<Value> = (0..501)
        .map(|i| event(i, "/tmp/x", "exec", false))
        .collect();
    let e = device
        .post_events(&json!({ "events": too_many }))
        .await
        .assert_error(400, "InvalidRequestBody");
    assert!(e.message.contains("at most 500 events"), "{}", e.message);
    let mut bad = event(1, "/tmp/y", "exec", false);
    bad["sha256"] = json!("xyz");
    device
        .post_events(&json!({ "events": [event(1, "/tmp/ok", "exec", false), bad] }))
        .await
        .assert_error(400, "InvalidRequestBody");
    device
        .post_events(&json!({ "events": [{ "path": "/tmp/z" }] }))
        .await
        .assert_error(400, "InvalidRequestBody");
    assert_eq!(
        api.get(&format!("{path}?$count=true")).await.json()["@odata.count"],
        json!(3)
    );
    // A full batch with long paths is larger than the API's 64 KiB body limit, and fine.
    let long = format!("/opt/{}", "d".repeat(400));
    let full: Vec<Value> = (0..500)
        .map(|i| event(100 + i, &long, "exec", false))
        .collect();
    let r = device.post_events(&json!({ "events": full })).await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(300)]);
    assert_eq!(r.json(), json!({ "accepted": 500 }));
    // Without a device credential: 401.
    let r = server
        .anonymous()
        .post("/agent/v1/events", &json!({ "events": [] }))
        .await;
    assert_eq!(r.status, 401);
    // Reading events needs a read role.
    server
        .api(&[crate::harness::ROLE_RESTRICT])
        .await
        .get(&path)
        .await
        .assert_error(403, "Forbidden");
    api.get("/api/machines/no-such-host/events")
        .await
        .assert_error(404, "ResourceNotFound");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enforcement_endpoint_shows_what_the_heartbeat_sent() {
    let server = TestServer::start_with(|c| c.agent_mode = EnforcementMode::Monitor, None).await;
    let api = server.api(&[ROLE_READ, ROLE_RESTRICT]).await;
    let ti = server.api(&[TI_ALL]).await;
    let device = server.enroll("web-1.corp").await;
    submit(&ti, &allow(&hash(1), "t")).await;

    let reported = restricted_state("2025-06-15T10:00:42Z");
    device.heartbeat(reported.clone()).await;
    let r = api
        .get(&format!("/api/machines/{}/enforcement", device.machine_id))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.assert_odata_headers();
    let v = r.json();
    assert_eq!(
        top_level_keys(&r.text),
        [
            "@odata.context",
            "machineId",
            "computerDnsName",
            "lastSeen",
            "reported",
            "desired"
        ]
    );
    assert_eq!(v["reported"], reported);
    assert_eq!(
        v["desired"],
        json!({ "restricted": false, "actionId": null, "mode": "monitor", "allowlistVersion": 1 })
    );
    assert_eq!(v["computerDnsName"], "web-1.corp");
    assert!(is_mde_timestamp(v["lastSeen"].as_str().unwrap()));

    // A restrict that succeeded shows up as desired.
    let action = api.restrict(&device.machine_id, "alert 7").await.json();
    let action_id = action["id"].as_str().unwrap();
    device.ack(action_id).await;
    device.report(action_id, "Succeeded").await;
    let v = api.get("/api/machines/web-1.corp/enforcement").await.json();
    assert_eq!(v["desired"]["restricted"], true);
    assert_eq!(v["desired"]["actionId"], action_id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_indicators_and_shows_events_and_enforcement() {
    let server = TestServer::start().await;
    let app = server
        .app(&[TI_ALL, ROLE_READ, crate::harness::ROLE_RESTRICT])
        .await;
    let env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", app.secret.as_str()),
    ];
    let limit = Duration::from_secs(60);
    let h = hash(0x5a);

    let out = run(
        &["indicators", "add", "--sha256", &h, "-o", "json"],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let added = out.json();
    assert_eq!(added["indicatorValue"], h.as_str());
    assert_eq!(added["title"], "Allowed file 5a5a5a5a5a5a");
    assert_eq!(added["description"], "Allowed to run on restricted devices");
    let id = added["id"].as_str().unwrap().to_string();

    let out = run(
        &[
            "indicators",
            "add",
            "--sha256",
            &h,
            "--title",
            "tool",
            "--description",
            "d",
        ],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("id               {id}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("title            tool\n"),
        "{}",
        out.stdout
    );

    let out = run(&["indicators", "list"], &env, limit).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID  TYPE        ACTION   VALUE"),
        "{}",
        out.stdout
    );
    assert!(lines[1].contains(&h) && lines[1].contains("FileSha256") && lines[1].contains("tool"));
    let out = run(&["indicators", "list", "-o", "json"], &env, limit).await;
    assert_eq!(out.json()["value"][0]["id"], id.as_str());

    let out = run(&["indicators", "add", "--sha256", "nope"], &env, limit).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("InvalidInput: indicatorValue 'nope'"),
        "{}",
        out.stderr
    );

    let out = run(&["indicators", "delete", &id], &env, limit).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, format!("Deleted indicator {id}.\n"));
    let out = run(&["indicators", "delete", &id], &env, limit).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("ResourceNotFound"), "{}", out.stderr);
    let out = run(&["indicators", "list"], &env, limit).await;
    assert_eq!(out.stdout, "No indicators.\n");

    // A device is restricted; `machines get` shows what it reports, `machines events`
    // what it denied.
    let api = server.api_for(&app).await;
    let device = server.enroll("web-1.corp").await;
    let host = device.hostname.clone();
    let action = api.restrict(&host, "cli test").await.json();
    let action_id = action["id"].as_str().unwrap();
    device.ack(action_id).await;
    device.report(action_id, "Succeeded").await;
    device
        .heartbeat(restricted_state("2025-06-15T10:00:42Z"))
        .await;
    let out = run(&["machines", "get", &host], &env, limit).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for line in [
        "name               web-1.corp\n".to_string(),
        "restricted         yes, since 2025-06-15T10:00:42Z\n".into(),
        "mode               monitor\n".into(),
        "coverage           /, /home\n".into(),
        "allowlist version  2\n".into(),
        "unprotected        42s (last: 2025-06-15T10:00:00Z to 2025-06-15T10:00:42Z)\n".into(),
        // Three indicator changes: added, updated, deleted.
        format!("desired            restricted, mode enforce, allowlist version 3, by action {action_id}\n"),
    ] {
        assert!(out.stdout.contains(&line), "{line:?} in {}", out.stdout);
    }
    let out = run(&["machines", "get", &host, "-o", "json"], &env, limit).await;
    let v = out.json();
    assert_eq!(v["computerDnsName"], host.as_str());
    assert_eq!(
        v["enforcement"]["reported"],
        restricted_state("2025-06-15T10:00:42Z")
    );
    assert_eq!(v["enforcement"]["desired"]["actionId"], action_id);

    let out = run(&["machines", "events", &host], &env, limit).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "No denied executions.\n");
    let r = device
        .post_events(&json!({ "events": [
            event(9, "/tmp/older", "exec", false),
            event(1, "/tmp/newer.so", "elfOpen", true)
        ]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let out = run(&["machines", "events", &host, "--top", "1"], &env, limit).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)"), "{}", out.stdout);
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[1].contains("/tmp/newer.so")
            && lines[1].contains("elfOpen")
            && lines[1].contains("no (monitor)"),
        "{}",
        lines[1]
    );
    assert!(out.stderr.contains("more results"), "{}", out.stderr);
    let out = run(
        &["machines", "events", &device.machine_id, "-o", "json"],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.json()["value"][1]["path"], "/tmp/older");
    server.stop().await;
}
