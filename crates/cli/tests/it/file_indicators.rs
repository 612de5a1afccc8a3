//! Block and audit file indicators, Import Indicators and Update machine over real HTTP:
//! the answers against MDE's documented examples, the refusals (each a 400 in the MDE
//! envelope naming the field, nothing stored), the safety refusal, device-group scoping,
//! the policy agents fetch, and PATCH of tags and device value found again by tag.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::rbac::{default_group_id, DeviceRule};
use appfence_core::{Clock, ManualClock};
use appfence_proto::Timestamp;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, IssuerSpec, RoleSpec};
use serde_json::{json, Value};

use crate::harness::{within, Api, Device, TestServer, ROLE_READ};
use crate::idp::{sign, Idp, TestKey, AUDIENCE};
use crate::wire::top_level_keys;

const TI_ALL: &str = "Ti.ReadWrite.All";
const TI_OWN: &str = "Ti.ReadWrite";
const MACHINE_RW: &str = "Machine.ReadWrite.All";
const WAIT: Duration = Duration::from_secs(20);

/// MDE's "Import Indicators API" request example, with its expiration moved into the
/// future (the page's 2021 date would be refused as past): a FileSha1 and a FileSha256.
const MDE_IMPORT_EXAMPLE: &str = include_str!("fixtures/mde_import_indicators_request.json");

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn file(value: &str, action: &str) -> Value {
    json!({
        "indicatorValue": value,
        "indicatorType": "FileSha256",
        "action": action,
        "title": format!("{action} it"),
        "description": "seen in an incident",
    })
}

fn with(mut body: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn group(name: &str, rank: u32, rule: DeviceRule, user_groups: &[&str]) -> DeviceGroupSpec {
    DeviceGroupSpec {
        line: None,
        name: name.into(),
        rank,
        id: None,
        rule,
        user_groups: user_groups.iter().map(|g| g.to_string()).collect(),
        tenant: None,
    }
}

fn role(name: &str, permissions: &[&str], user_group: &str) -> RoleSpec {
    RoleSpec {
        line: None,
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        user_groups: vec![user_group.into()],
        tenant: None,
    }
}

/// Device groups `Web` (tag `web`, open to every user) and `Servers` (`srv-` names,
/// for `g-server-admins` only); roles for users of the test issuer.
fn access(idp: Option<&Idp>) -> AccessSpec {
    AccessSpec {
        issuers: idp
            .map(|idp| IssuerSpec {
                line: None,
                issuer: idp.issuer.clone(),
                audiences: vec![AUDIENCE.into()],
                jwks_uri: None,
                tenant: None,
                console: None,
            })
            .into_iter()
            .collect(),
        roles: vec![
            role(
                "Security admins",
                &["Manage security settings"],
                "g-secadmin",
            ),
            role("Investigators", &["Alerts investigation"], "g-investigate"),
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

async fn policy(device: &Device) -> Value {
    device.allowlist().await
}

async fn indicator_count(api: &Api) -> u64 {
    let r = api.get("/api/indicators?$count=true&$top=1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["@odata.count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_and_audit_indicators_answer_as_mde_and_reach_the_agents_of_their_groups() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with(|c| c.access = access(None), Some(clock.clone())).await;
    let api = server.api(&[TI_ALL]).await;
    let web = server.enroll("web-1.corp").await;
    let admin = server.api(&[MACHINE_RW, ROLE_READ]).await;
    let r = admin
        .patch(
            &format!("/api/machines/{}", web.machine_id),
            &json!({"machineTags": ["web"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let other = server.enroll("db-1.corp").await;

    // A block, as MDE's Submit or Update Indicator example sends one (AlertAndBlock,
    // rbacGroupNames as a list), answered with the Indicator entity.
    let soon = Timestamp::from_unix_seconds(clock.now().unix_seconds() + 60).to_string();
    let r = api
        .post(
            "/api/indicators",
            &with(
                file(&hash(1), "AlertAndBlock"),
                json!({"rbacGroupNames": ["web"], "severity": "High",
                       "application": "demo-test", "recommendedActions": "nothing"}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.assert_odata_headers();
    let blocked = r.json();
    assert_eq!(
        blocked["@odata.context"],
        format!("{}/api/$metadata#Indicators/$entity", server.base)
    );
    assert_eq!(blocked["action"], "AlertAndBlock");
    assert_eq!(blocked["rbacGroupNames"], json!(["Web"]), "canonical name");
    assert_eq!(
        blocked["rbacGroupIds"],
        json!([default_group_id("Web").to_string()])
    );
    let audited = api
        .post(
            "/api/indicators",
            &with(
                file(&hash(2), "Audit"),
                json!({"generateAlert": true, "expirationTime": soon}),
            ),
        )
        .await;
    assert_eq!(audited.status, 200, "{}", audited.text);
    let audited = audited.json();
    let everywhere = api.post("/api/indicators", &file(&hash(3), "Block")).await;
    assert_eq!(everywhere.status, 200, "{}", everywhere.text);
    let everywhere = everywhere.json();
    // The same file allowed and then blocked: one indicator, now a block.
    api.post("/api/indicators", &file(&hash(4), "Allowed"))
        .await
        .assert_odata_headers();
    let turned = api
        .post("/api/indicators", &file(&hash(4), "BlockAndRemediate"))
        .await
        .json();

    // What the agents fetch: the web device gets the group's block and the tenant's.
    let p = policy(&web).await;
    let rule = |i: &Value, action: &str, alert: bool| {
        let mut r = json!({
            "sha256": i["indicatorValue"], "action": action,
            "indicatorId": i["id"], "generateAlert": alert,
        });
        if let Some(e) = i["expirationTime"].as_str() {
            r["expires"] = json!(e);
        }
        r
    };
    assert_eq!(
        p["block"],
        json!([
            rule(&blocked, "AlertAndBlock", true),
            rule(&everywhere, "Block", false),
            rule(&turned, "BlockAndRemediate", false),
        ])
    );
    assert_eq!(p["audit"], json!([rule(&audited, "Audit", true)]));
    assert_eq!(p["sha256"], json!([]), "block beats allow");
    assert_eq!(p["nextExpiry"], json!(soon));
    let q = policy(&other).await;
    let other_blocks: Vec<&str> = q["block"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["indicatorId"].as_str().unwrap())
        .collect();
    assert_eq!(
        other_blocks,
        [
            everywhere["id"].as_str().unwrap(),
            turned["id"].as_str().unwrap()
        ],
        "not in Web: not the Web block"
    );
    assert_eq!(p["version"], q["version"]);

    // Expired: out of the policy without a call, the version moved on.
    let before = p["version"].as_u64().unwrap();
    clock.advance(Duration::from_secs(61));
    within(WAIT, "the expired audit to leave the policy", async {
        while policy(&web).await["version"].as_u64().unwrap() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let p = policy(&web).await;
    assert!(p.get("audit").is_none(), "{p}");
    assert!(p.get("nextExpiry").is_none(), "{p}");
    assert_eq!(p["block"].as_array().unwrap().len(), 3);

    // Deleting a block lifts it from the policy.
    let r = api
        .delete(&format!(
            "/api/indicators/{}",
            everywhere["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(policy(&other).await["block"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_indicators_are_refused_naming_the_field_and_nothing_is_stored() {
    let server = TestServer::start_with(|c| c.access = access(None), None).await;
    let api = server.api(&[TI_ALL]).await;
    let device = server.enroll("web-1.corp").await;
    api.post("/api/indicators", &file(&hash(9), "Block"))
        .await
        .assert_odata_headers();
    let version = policy(&device).await["version"].clone();
    let past = "2020-12-12T00:00:00Z";
    let cases: Vec<(Value, &str, &str)> = vec![
        (file("xyz", "Block"), "InvalidInput", "indicatorValue 'xyz'"),
        (
            file(&hash(1), "Destroy"),
            "InvalidRequestBody",
            "is not a valid action",
        ),
        (
            with(file(&hash(1), "Block"), json!({"indicatorType": "Sha256"})),
            "InvalidRequestBody",
            "is not a valid indicatorType",
        ),
        (
            with(
                file("220e7d15b011d7fac48f2bd61114db1022197f7f", "Block"),
                json!({"indicatorType": "FileSha1"}),
            ),
            "BadRequest",
            "supported indicatorType: FileSha256",
        ),
        (
            with(file(&hash(1), "Block"), json!({"indicatorType": "FileMd5"})),
            "BadRequest",
            "indicatorType FileMd5 is not supported",
        ),
        (
            file(&hash(1), "Warn"),
            "BadRequest",
            "action Warn is not supported",
        ),
        (
            with(file(&hash(1), "Block"), json!({"expirationTime": past})),
            "BadRequest",
            "expirationTime 2020-12-12T00:00:00Z is in the past",
        ),
        (
            with(
                file(&hash(1), "Block"),
                json!({"rbacGroupNames": ["Web", "Nope"]}),
            ),
            "BadRequest",
            "rbacGroupNames: there is no device group 'Nope'; device groups: Web, Servers",
        ),
        (
            file(&hash(1), "Audit"),
            "BadRequest",
            "generateAlert must be true for action Audit",
        ),
    ];
    for (body, code, says) in cases {
        let e = api
            .post("/api/indicators", &body)
            .await
            .assert_error(400, code);
        assert!(e.message.contains(says), "{body}: {}", e.message);
    }
    assert_eq!(indicator_count(&api).await, 1, "nothing stored");
    assert_eq!(policy(&device).await["version"], version, "no version bump");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_of_a_file_a_device_needs_is_refused_saying_why() {
    let server = TestServer::start().await;
    let api = server.api(&[TI_ALL]).await;
    let device = server.enroll("web-1.corp").await;
    let loader = hash(0x1d);
    device
        .heartbeat(json!({
            "restricted": false,
            "protected": [
                {"sha256": loader, "path": "/lib64/ld-linux-x86-64.so.2", "role": "loader"},
                {"sha256": hash(0xa6), "path": "/usr/sbin/appfence", "role": "agent"},
            ]
        }))
        .await;
    for action in ["Block", "AlertAndBlock", "BlockAndRemediate"] {
        let e = api
            .post("/api/indicators", &file(&loader.to_uppercase(), action))
            .await
            .assert_error(400, "BadRequest");
        assert_eq!(
            e.message,
            format!(
                "indicatorValue {loader} is the dynamic loader (/lib64/ld-linux-x86-64.so.2) \
                 on machine web-1.corp ({}): blocking it would leave devices unmanageable, so \
                 appfence refuses action {action} for it",
                device.machine_id
            )
        );
    }
    let e = api
        .post(
            "/api/indicators/import",
            &json!({"Indicators": [file(&hash(0xa6), "Block")]}),
        )
        .await;
    assert_eq!(e.status, 200, "{}", e.text);
    assert!(
        e.json()["value"][0]["failureReason"]
            .as_str()
            .unwrap()
            .contains("the appfence agent (/usr/sbin/appfence)"),
        "{}",
        e.text
    );
    assert_eq!(indicator_count(&api).await, 0);
    // Auditing or allowing it blocks nothing: accepted.
    let audit = with(file(&loader, "Audit"), json!({"generateAlert": true}));
    assert_eq!(api.post("/api/indicators", &audit).await.status, 200);
    assert_eq!(policy(&device).await["block"], Value::Null);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_answer_per_indicator_as_mde_and_hold_at_most_five_hundred() {
    let server = TestServer::start().await;
    let api = server.api(&[TI_OWN]).await;
    let device = server.enroll("web-1.corp").await;

    // MDE's example: the FileSha1 one fails (appfence hashes with SHA-256), the other is
    // stored; the answer has MDE's keys in MDE's order.
    let example: Value = serde_json::from_str(MDE_IMPORT_EXAMPLE).unwrap();
    let r = api.post("/api/indicators/import", &example).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.assert_odata_headers();
    assert_eq!(top_level_keys(&r.text), ["value"]);
    let v = r.json()["value"].as_array().unwrap().clone();
    assert_eq!(v.len(), 2);
    assert!(
        r.text.contains(
            r#"{"id":null,"indicator":"220e7d15b011d7fac48f2bd61114db1022197f7f","isFailed":true,"failureReason":"indicatorType FileSha1 is not supported"#
        ),
        "{}",
        r.text
    );
    assert_eq!(
        v[1]["indicator"],
        example["Indicators"][1]["indicatorValue"]
    );
    assert_eq!(
        (v[1]["isFailed"].clone(), v[1]["failureReason"].clone()),
        (json!(false), Value::Null)
    );
    let stored = api
        .get(&format!(
            "/api/indicators?$filter=id+eq+'{}'",
            v[1]["id"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(stored["value"][0]["action"], "Alert");
    assert_eq!(stored["value"][0]["severity"], "Medium");
    assert_eq!(
        policy(&device).await["audit"][0]["generateAlert"],
        json!(true)
    );

    // Item problems are reported item by item, the rest stored together.
    let r = api
        .post(
            "/api/indicators/import",
            &json!({"Indicators": [
                file(&hash(1), "Block"),
                file("nope", "Block"),
                with(file(&hash(2), "Block"), json!({"expirationTime": "2020-01-01T00:00:00Z"})),
                with(file(&hash(3), "Block"), json!({"rbacGroupNames": "Ghosts"})),
                file(&hash(1), "Block"),
                "not an object",
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json()["value"].as_array().unwrap().clone();
    let failed: Vec<bool> = v.iter().map(|i| i["isFailed"].as_bool().unwrap()).collect();
    assert_eq!(failed, [false, true, true, true, true, true]);
    for (i, says) in [
        (1, "indicatorValue 'nope'"),
        (2, "expirationTime"),
        (3, "rbacGroupNames: there is no device group 'Ghosts'"),
        (4, "earlier in this import"),
        (5, "must be a JSON object"),
    ] {
        let reason = v[i]["failureReason"].as_str().unwrap();
        assert!(reason.contains(says), "{i}: {reason}");
        assert_eq!(v[i]["id"], Value::Null);
    }
    assert_eq!(indicator_count(&api).await, 2);

    // 500 at once are stored; the 501st refuses the whole import.
    let many: Vec<Value> = (0..500u32)
        .map(|n| file(&format!("{n:064x}"), "Block"))
        .collect();
    let r = api
        .post("/api/indicators/import", &json!({ "Indicators": many }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text.get(..300).unwrap_or(&r.text));
    let v = r.json()["value"].as_array().unwrap().clone();
    assert_eq!(v.len(), 500);
    assert!(v
        .iter()
        .all(|i| i["isFailed"] == json!(false) && i["id"].is_string()));
    assert_eq!(indicator_count(&api).await, 502);
    assert_eq!(
        policy(&device).await["block"].as_array().unwrap().len(),
        501
    );
    let version = policy(&device).await["version"].clone();
    let too_many: Vec<Value> = (0..501u32)
        .map(|n| file(&format!("{:064x}", 10_000 + n), "Block"))
        .collect();
    let e = api
        .post("/api/indicators/import", &json!({ "Indicators": too_many }))
        .await
        .assert_error(400, "BadRequest");
    assert_eq!(
        e.message,
        "Indicators: at most 500 indicators per import, not 501"
    );
    assert_eq!(indicator_count(&api).await, 502, "nothing of it stored");
    assert_eq!(policy(&device).await["version"], version);
    api.post("/api/indicators/import", &json!({"indicators": []}))
        .await
        .assert_error(400, "MissingRequiredParameter");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_calls_check_their_permissions_and_users_their_device_groups() {
    let idp = Idp::start(&[TestKey::Ec]).await;
    let server = TestServer::start_with(|c| c.access = access(Some(&idp)), None).await;
    let srv = server.enroll("srv-db1.corp").await;
    let web = server.enroll("web-1.corp").await;
    let import = json!({"Indicators": [file(&hash(5), "Block")]});
    let patch = json!({"deviceValue": "High"});
    let srv_path = format!("/api/machines/{}", srv.machine_id);

    // Applications: the roles MDE documents.
    for (roles, import_status, patch_status) in [
        (vec![TI_ALL], 200, 403),
        (vec![TI_OWN], 200, 403),
        (vec![MACHINE_RW], 403, 200),
        (vec![ROLE_READ, "Machine.RestrictExecution"], 403, 403),
    ] {
        let app = server.api(&roles).await;
        let r = app.post("/api/indicators/import", &import).await;
        assert_eq!(r.status, import_status, "{roles:?}: {}", r.text);
        let r = app.patch(&srv_path, &patch).await;
        assert_eq!(r.status, patch_status, "{roles:?}: {}", r.text);
        if patch_status == 403 {
            let e = r.assert_error(403, "Forbidden");
            assert_eq!(
                e.message,
                "Missing application roles. API required roles: Machine.ReadWrite.All"
            );
        }
    }
    server
        .anonymous()
        .patch(&srv_path, &patch)
        .await
        .assert_error(401, "Unauthorized");

    // Users: scope, portal permission, and device groups.
    let now = server.state.clock.now().unix_seconds();
    let user = |upn: &str, scopes: &str, groups: &[&str]| {
        server.anonymous().with_token(&sign(
            TestKey::Ec,
            &idp.user_claims(now, upn, scopes, groups),
        ))
    };
    let secadmin = user("sec@corp.example", "Ti.ReadWrite", &["g-secadmin"]);
    let scoped = |g: &[&str]| with(file(&hash(6), "Block"), json!({"rbacGroupNames": g}));
    let e = secadmin
        .post("/api/indicators", &scoped(&["Servers"]))
        .await
        .assert_error(403, "Forbidden");
    assert_eq!(e.message, "User has no access to device group 'Servers'");
    let e = secadmin
        .post("/api/indicators", &file(&hash(6), "Block"))
        .await
        .assert_error(403, "Forbidden");
    assert!(
        e.message.contains("applies to every device"),
        "{}",
        e.message
    );
    let r = secadmin.post("/api/indicators", &scoped(&["Web"])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let web_only = r.json()["id"].as_str().unwrap().to_string();
    let server_admin = user(
        "srvadmin@corp.example",
        "Ti.ReadWrite",
        &["g-secadmin", "g-server-admins"],
    );
    let r = server_admin
        .post("/api/indicators", &file(&hash(7), "Block"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let everywhere = r.json()["id"].as_str().unwrap().to_string();
    // A scoped user neither deletes nor rewrites what reaches beyond their groups.
    secadmin
        .delete(&format!("/api/indicators/{everywhere}"))
        .await
        .assert_error(403, "Forbidden");
    secadmin
        .post(
            "/api/indicators",
            &with(
                file(&hash(7), "Audit"),
                json!({"generateAlert": true, "rbacGroupNames": ["Web"]}),
            ),
        )
        .await
        .assert_error(403, "Forbidden");
    let r = secadmin
        .delete(&format!("/api/indicators/{web_only}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = secadmin
        .post(
            "/api/indicators/import",
            &json!({"Indicators": [scoped(&["Servers"])]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["value"][0]["failureReason"]
        .as_str()
        .unwrap()
        .contains("no access to device group 'Servers'"));

    // Update machine: Machine.ReadWrite and 'Alerts investigation', on their devices.
    let investigator = user("inv@corp.example", "Machine.ReadWrite", &["g-investigate"]);
    let e = investigator
        .patch(&srv_path, &patch)
        .await
        .assert_error(403, "Forbidden");
    assert!(
        e.message.contains("device group 'Servers'"),
        "{}",
        e.message
    );
    let r = investigator
        .patch(&format!("/api/machines/{}", web.machine_id), &patch)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = user("inv@corp.example", "Machine.Read", &["g-investigate"])
        .patch(&srv_path, &patch)
        .await
        .assert_error(403, "Forbidden");
    assert_eq!(
        e.message,
        "Missing delegated scopes. API required scopes: Machine.ReadWrite"
    );
    let e = user("sec@corp.example", "Machine.ReadWrite", &["g-secadmin"])
        .patch(&srv_path, &patch)
        .await
        .assert_error(403, "Forbidden");
    assert_eq!(
        e.message,
        "Missing user permission. API required role permission: Alerts investigation"
    );
    let r = user(
        "inv2@corp.example",
        "Machine.ReadWrite",
        &["g-investigate", "g-server-admins"],
    )
    .patch(&srv_path, &patch)
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_machine_replaces_tags_sets_the_value_and_the_machine_is_found_by_tag() {
    let server = TestServer::start_with(|c| c.access = access(None), None).await;
    let admin = server.api(&[MACHINE_RW]).await;
    let reader = server.api(&[ROLE_READ]).await;
    let ti = server.api(&[TI_ALL]).await;
    let device = server.enroll("web-7.corp").await;
    let path = format!("/api/machines/{}", device.machine_id);
    let web_block = ti
        .post(
            "/api/indicators",
            &with(file(&hash(8), "Block"), json!({"rbacGroupNames": "Web"})),
        )
        .await
        .json();
    let before = policy(&device).await;
    assert_eq!(before["block"], Value::Null, "ungrouped: not the Web block");

    // MDE's example body (minus the stray quote of the page's list).
    let r = admin
        .patch(
            &path,
            &json!({
                "deviceValue": "Normal",
                "machineTags": ["Demo Device", "Generic User Machine - Attack Source", "web"]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.assert_odata_headers();
    let m = r.json();
    assert_eq!(
        m["@odata.context"],
        format!("{}/api/$metadata#Machines/$entity", server.base)
    );
    assert_eq!(m["id"], device.machine_id.as_str());
    assert_eq!(
        m["machineTags"],
        json!(["Demo Device", "Generic User Machine - Attack Source", "web"])
    );
    assert_eq!(m["rbacGroupName"], "Web");
    assert_eq!(m["rbacGroupId"], json!(default_group_id("Web")));
    // The move reached the device's policy.
    let after = policy(&device).await;
    assert!(after["version"].as_u64() > before["version"].as_u64());
    assert_eq!(after["block"][0]["indicatorId"], web_block["id"]);

    // The value alone keeps the tags; the tags alone replace them all.
    let m = admin
        .patch(&path, &json!({"deviceValue": "high"}))
        .await
        .json();
    assert_eq!(
        (
            m["deviceValue"].clone(),
            m["machineTags"].as_array().unwrap().len()
        ),
        (json!("High"), 3)
    );
    let m = admin
        .patch(&path, &json!({"machineTags": ["vip", "web"]}))
        .await
        .json();
    assert_eq!(m["machineTags"], json!(["vip", "web"]));
    assert_eq!(m["deviceValue"], "High");

    // Found by tag through OData, and by its value.
    let found = reader
        .get("/api/machines?$filter=machineTags/any(t:+t+eq+'vip')+and+deviceValue+eq+'High'")
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    let found = found.json();
    let ids: Vec<&str> = found["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [device.machine_id.as_str()]);

    // Bad bodies: a 400 naming the field, the machine unchanged.
    let unchanged = reader.get(&path).await.json();
    for (body, says) in [
        (
            json!({"deviceValue": "Critical"}),
            "'Critical' is not a valid deviceValue",
        ),
        (
            json!({"deviceValue": "Low", "riskScore": "High"}),
            "Property 'riskScore' cannot be updated",
        ),
        (json!({"machineTags": "vip"}), "machineTags must be a list"),
        (
            json!({"machineTags": ["ok", 7], "deviceValue": "Low"}),
            "machineTags must hold strings",
        ),
        (json!({}), "sets nothing"),
    ] {
        let e = admin
            .patch(&path, &body)
            .await
            .assert_error(400, "InvalidRequestBody");
        assert!(e.message.contains(says), "{body}: {}", e.message);
    }
    assert_eq!(
        reader.get(&path).await.json(),
        unchanged,
        "nothing half-applied"
    );
    admin
        .patch(
            &format!("/api/machines/{}", "0".repeat(40)),
            &json!({"deviceValue": "Low"}),
        )
        .await
        .assert_error(404, "ResourceNotFound");
    // By DNS name too, as the other machine calls.
    let r = admin
        .patch("/api/machines/web-7.corp", &json!({"deviceValue": "Low"}))
        .await;
    assert_eq!(r.json()["deviceValue"], "Low");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_blocks_imports_and_updates_machines() {
    use crate::process::run;
    let server = TestServer::start_with(|c| c.access = access(None), None).await;
    let app = server.app(&[TI_ALL, MACHINE_RW]).await;
    let device = server.enroll("web-1.corp").await;
    let env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", app.secret.as_str()),
    ];
    let limit = Duration::from_secs(60);
    let h = hash(0x5b);
    let out = run(
        &[
            "indicators",
            "add",
            "--sha256",
            &h,
            "--action",
            "Block",
            "--group",
            "web",
            "--expires",
            "2031-01-01T00:00:00Z",
            "-o",
            "json",
        ],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let added = out.json();
    assert_eq!(added["action"], "Block");
    assert_eq!(added["title"], "Block file 5b5b5b5b5b5b");
    assert_eq!(added["rbacGroupNames"], json!(["Web"]));
    assert_eq!(added["expirationTime"], "2031-01-01T00:00:00Z");
    let out = run(
        &[
            "indicators",
            "add",
            "--sha256",
            &hash(0x5c),
            "--action",
            "Audit",
            "-o",
            "json",
        ],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json()["generateAlert"], json!(true), "Audit needs it");

    // MDE's import columns, one row refused: the rest stored, exit 1, each row shown.
    let dir = crate::harness::private_tempdir();
    let csv = dir.path().join("iocs.csv");
    std::fs::write(
        &csv,
        format!(
            "IndicatorType,IndicatorValue,ExpirationTime,Action,Severity,Title,Description,RecommendedActions,RbacGroups,Category,MitreTechniques,GenerateAlert\n\
             FileSha256,{},,AlertAndBlock,High,miner,\"seen in IR-7, twice\",,Web,Execution,T1059,True\n\
             FileSha256,nope,,Block,,bad,row,,,,,\n",
            hash(0x5d)
        ),
    )
    .unwrap();
    let out = run(
        &["indicators", "import", csv.to_str().unwrap()],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("row 2: {} stored as indicator", hash(0x5d))),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("row 3: nope refused: indicatorValue 'nope'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("1 stored, 1 refused.\n"),
        "{}",
        out.stdout
    );
    let out = run(&["indicators", "import", "--help"], &env, limit).await;
    assert!(out.stdout.contains("rbacGroupNames"), "{}", out.stdout);

    let out = run(
        &[
            "machines",
            "update",
            "web-1.corp",
            "--device-value",
            "High",
            "--tags",
            "web, vip",
            "-o",
            "json",
        ],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let m = out.json();
    assert_eq!(
        (m["deviceValue"].clone(), m["machineTags"].clone()),
        (json!("High"), json!(["web", "vip"]))
    );
    assert_eq!(m["rbacGroupName"], "Web");
    // In Web now: the group's blocks reach the device.
    let p = policy(&device).await;
    let blocked: Vec<&str> = p["block"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(blocked, [h.as_str(), hash(0x5d).as_str()]);
    let out = run(
        &["machines", "update", "web-1.corp", "--device-value", "Huge"],
        &env,
        limit,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("'Huge' is not a valid deviceValue"),
        "{}",
        out.stderr
    );
    server.stop().await;
}
