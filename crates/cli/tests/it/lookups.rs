//! Playbook lookups over real HTTP: devices by internal IP at a time (the 15-minute
//! window on an injected clock, the 30-day limit, IPv6, a device that moved), by tag,
//! and tag changes that move devices between device groups, for applications and for
//! users limited to their groups; every malformed call a 400 envelope naming the problem.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::rbac::DeviceRule;
use appfence_core::{Clock, ManualClock};
use appfence_proto::Timestamp;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, RoleSpec};
use appfence_server::oauth::users::create_user;
use serde_json::{json, Value};

use crate::harness::{Api, App, DeviceOpts, TestServer, MDE_AUDIENCE, ROLE_READ, ROLE_RESTRICT};
use crate::wire::{top_level_keys, Resp};

const ROLE_READ_WRITE: &str = "Machine.ReadWrite.All";
const QUARANTINE_ADMINS: &str = "g-quarantine";
pub(crate) const ANALYSTS: &str = "g-analysts";
const PASSWORD: &str = "a long enough passphrase";

/// Roles: analysts may view, remediate and manage settings (tags); device groups:
/// "Quarantine" (tag `quarantine`, only for quarantine admins), the rest ungrouped.
pub(crate) fn spec() -> AccessSpec {
    let role = |name: &str, permissions: &[&str], group: &str| RoleSpec {
        line: None,
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        user_groups: vec![group.into()],
        tenant: None,
    };
    AccessSpec {
        issuers: vec![],
        roles: vec![
            role(
                "Analysts",
                &[
                    "View data",
                    "Active remediation actions",
                    "Manage security settings",
                ],
                ANALYSTS,
            ),
            role("Viewers only", &["View data"], "g-viewers"),
        ],
        device_groups: vec![DeviceGroupSpec {
            line: None,
            name: "Quarantine".into(),
            rank: 1,
            id: None,
            rule: DeviceRule::Tag("quarantine".into()),
            user_groups: vec![QUARANTINE_ADMINS.into()],
            tenant: None,
        }],
    }
}

fn ips(list: &[&str]) -> DeviceOpts {
    DeviceOpts {
        ips: list.iter().map(|s| s.to_string()).collect(),
        ..DeviceOpts::default()
    }
}

/// `findbyip(...)` under `/api`.
fn find_by_ip(ip: &str, at: Timestamp) -> String {
    format!("/api/machines/findbyip(ip='{ip}',timestamp={at})")
}

fn names(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    let mut v: Vec<String> = r.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["computerDnsName"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// A user token of a local user in `groups`, by the password grant.
pub(crate) async fn user_api(server: &TestServer, app: &App, upn: &str, groups: &[&str]) -> Api {
    create_user(
        server.state.store.as_ref(),
        server.state.clock.as_ref(),
        &server.tenant_id,
        upn,
        PASSWORD,
        &groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let r = Resp::read(
        server
            .http
            .post(server.url(&format!("/{}/oauth2/token", server.tenant_id)))
            .form(&[
                ("grant_type", "password"),
                ("client_id", app.client_id.as_str()),
                ("username", upn),
                ("password", PASSWORD),
                ("resource", MDE_AUDIENCE),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    server
        .anonymous()
        .with_token(r.json()["access_token"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_found_by_the_address_they_had_at_a_time() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with(|_| {}, Some(clock.clone())).await;
    let api = server.api(&[ROLE_READ]).await;
    let t0 = clock.now();
    let mover = server
        .enroll_with(
            &server.tenant_id.clone(),
            "mover.corp.example",
            ips(&["10.1.0.5", "fd00::5"]),
        )
        .await;
    server
        .enroll_with(
            &server.tenant_id.clone(),
            "still.corp.example",
            ips(&["10.1.0.9"]),
        )
        .await;

    // The documented shape: a collection of machines under #Machines.
    let r = api.get(&find_by_ip("10.1.0.5", t0)).await;
    assert_eq!(names(&r), ["mover.corp.example"]);
    let v = r.json();
    assert_eq!(top_level_keys(&r.text), ["@odata.context", "value"]);
    assert_eq!(
        v["@odata.context"],
        format!("{}/api/$metadata#Machines", server.base)
    );
    let listed = api
        .get("/api/machines?$filter=computerDnsName eq 'mover.corp.example'")
        .await
        .json();
    assert_eq!(
        v["value"][0], listed["value"][0],
        "the same Machine as the list gives"
    );
    // The same under /api/v1.0, and IPv6 in another notation.
    let v1 = api
        .get(&format!(
            "/api/v1.0/machines/findbyip(ip='fd00:0:0::5',timestamp={t0})"
        ))
        .await;
    assert_eq!(names(&v1), ["mover.corp.example"]);

    // Heartbeats for 10 minutes, then the device moves to 10.1.0.6.
    for _ in 0..20 {
        clock.advance(Duration::from_secs(30));
        mover
            .heartbeat_with_ips(json!({ "restricted": false }), &["10.1.0.5"])
            .await;
    }
    let left = clock.now(); // about t0 + 10 min
    for _ in 0..40 {
        clock.advance(Duration::from_secs(30));
        mover
            .heartbeat_with_ips(json!({ "restricted": false }), &["10.1.0.6"])
            .await;
    }
    // 15 minutes either side: found under the old address up to 15 minutes after it
    // was last seen with it, not after; under the new one only from when it had it.
    let minutes = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(
        names(
            &api.get(&find_by_ip("10.1.0.5", left.plus(minutes(14))))
                .await
        ),
        ["mover.corp.example"]
    );
    assert!(names(
        &api.get(&find_by_ip("10.1.0.5", left.plus(minutes(17))))
            .await
    )
    .is_empty());
    assert_eq!(
        names(
            &api.get(&find_by_ip("10.1.0.6", left.plus(minutes(5))))
                .await
        ),
        ["mover.corp.example"]
    );
    assert!(names(
        &api.get(&find_by_ip("10.1.0.6", t0.minus(minutes(16))))
            .await
    )
    .is_empty());
    // And before the device existed, 15 minutes back: found at t0 - 14 min, not 16.
    assert_eq!(
        names(
            &api.get(&find_by_ip("10.1.0.9", t0.minus(minutes(14))))
                .await
        ),
        ["still.corp.example"]
    );
    assert!(names(
        &api.get(&find_by_ip("10.1.0.9", t0.minus(minutes(16))))
            .await
    )
    .is_empty());

    // find(timestamp=...,key='...'): the same rule, 404 when nothing matches.
    let r = api
        .get(&format!(
            "/api/machines/find(timestamp={t0},key='10.1.0.9')"
        ))
        .await;
    assert_eq!(names(&r), ["still.corp.example"]);
    api.get(&format!(
        "/api/machines/find(timestamp={t0},key='10.9.9.9')"
    ))
    .await
    .assert_error(404, "ResourceNotFound");

    // The 30-day limit, and the future.
    let now = clock.now();
    api.get(&find_by_ip(
        "10.1.0.5",
        now.minus(Duration::from_secs(30 * 86400 - 60)),
    ))
    .await;
    let old = api
        .get(&find_by_ip(
            "10.1.0.5",
            now.minus(Duration::from_secs(31 * 86400)),
        ))
        .await;
    let e = old.assert_error(400, "InvalidInput");
    assert!(
        e.message.contains("within the last 30 days"),
        "{}",
        e.message
    );
    api.get(&find_by_ip("10.1.0.5", now.plus(minutes(60))))
        .await
        .assert_error(400, "InvalidInput");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lookups_are_400_envelopes_naming_the_problem() {
    let server = TestServer::start().await;
    let api = server.api(&[ROLE_READ, ROLE_READ_WRITE]).await;
    let now = server.state.clock.now();
    let machine = server.enroll("m1.corp.example").await;
    for (path, needle) in [
        (
            format!("/api/machines/findbyip(ip='10.0.0.7,timestamp={now})"),
            "closing quote",
        ),
        (
            format!("/api/machines/findbyip(ip=10.0.0.7,timestamp={now})"),
            "must be quoted",
        ),
        (
            format!("/api/machines/findbyip(ip='10.0.0.700',timestamp={now})"),
            "not an IPv4 or IPv6 address",
        ),
        (
            "/api/machines/findbyip(ip='10.0.0.7',timestamp=last-tuesday)".to_string(),
            "not a UTC time",
        ),
        (
            "/api/machines/findbyip(ip='10.0.0.7')".to_string(),
            "timestamp is missing",
        ),
        (
            format!("/api/machines/findbyip(ip='10.0.0.7',timestamp={now}"),
            "closing parenthesis",
        ),
        ("/api/machines/findbytag".to_string(), "tag is missing"),
        (
            "/api/machines/findbytag?tag=x&useStartsWithFilter=perhaps".to_string(),
            "true or false",
        ),
    ] {
        let r = api.get(&path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        let e = r.json();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{path}: {}",
            r.text
        );
        assert!(crate::wire::is_guid(e["error"]["target"].as_str().unwrap()));
    }
    let post = |path: &str, body: Value| {
        let req = api.request(reqwest::Method::POST, path).json(&body);
        let api = api.clone();
        async move { api.send(req).await }
    };
    let tags = format!("/api/machines/{}/tags", machine.machine_id);
    for (path, body, code, needle) in [
        (
            tags.clone(),
            json!({"Value": "x", "Action": "Toggle"}),
            "InvalidRequestBody",
            "'Add' or 'Remove'",
        ),
        (
            tags.clone(),
            json!({"Action": "Add"}),
            "MissingRequiredParameter",
            "Value",
        ),
        (
            tags.clone(),
            json!({"Value": "x".repeat(201), "Action": "Add"}),
            "InvalidRequestBody",
            "200 characters",
        ),
        (
            "/api/machines/AddOrRemoveTagForMultipleMachines".to_string(),
            json!({"Value": "x", "Action": "Add", "MachineIds": (0..501).map(|i| format!("{i:040x}")).collect::<Vec<_>>()}),
            "InvalidRequestBody",
            "at most 500",
        ),
        (
            "/api/machines/AddOrRemoveTagForMultipleMachines".to_string(),
            json!({"Value": "x", "Action": "Add", "MachineIds": ["not-a-machine-id"]}),
            "InvalidInput",
            "not a machine id",
        ),
        (
            "/api/machines/AddOrRemoveTagForMultipleMachines".to_string(),
            json!({"Value": "x", "Action": "Add", "MachineIds": [format!("{:040x}", 7)]}),
            "ResourceNotFound",
            "",
        ),
    ] {
        let r = post(&path, body).await;
        let status = if code == "ResourceNotFound" { 404 } else { 400 };
        let e = r.assert_error(status, code);
        assert!(e.message.contains(needle), "{path}: {}", e.message);
    }
    // Nothing changed.
    let m = api
        .get(&format!("/api/machines/{}", machine.machine_id))
        .await
        .json();
    assert_eq!(m["machineTags"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_set_found_and_move_devices_between_groups() {
    let server = TestServer::start_with(|c| c.access = spec(), None).await;
    let app_rw = server
        .api(&[ROLE_READ, ROLE_READ_WRITE, ROLE_RESTRICT])
        .await;
    let reader = server.api(&[ROLE_READ]).await;
    let a = server.enroll("web-a.corp.example").await;
    let b = server.enroll("web-b.corp.example").await;
    let public_client = server.app(&[]).await;
    let analyst = user_api(&server, &public_client, "ana@corp.example", &[ANALYSTS]).await;
    let viewer = user_api(&server, &public_client, "vic@corp.example", &["g-viewers"]).await;
    let admin = user_api(
        &server,
        &public_client,
        "qa@corp.example",
        &[ANALYSTS, QUARANTINE_ADMINS],
    )
    .await;

    let tag = |api: &Api, id: &str, value: &str, action: &str| {
        let req = api
            .request(reqwest::Method::POST, &format!("/api/machines/{id}/tags"))
            .json(&json!({"Value": value, "Action": action}));
        let api = api.clone();
        async move { api.send(req).await }
    };
    // An application adds a tag: 200 with the machine, which now carries it.
    let r = tag(&app_rw, &a.machine_id, "restricted-by-soar", "Add").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    assert_eq!(
        m["@odata.context"],
        format!("{}/api/$metadata#Machines/$entity", server.base)
    );
    assert_eq!(m["machineTags"], json!(["restricted-by-soar"]));
    assert_eq!(
        tag(&app_rw, &a.machine_id, "RESTRICTED-by-SOAR", "Add")
            .await
            .json()["machineTags"],
        json!(["restricted-by-soar"])
    );
    // Found by tag, in any case, exactly or by prefix; and by OData's machineTags/any.
    assert_eq!(
        names(
            &reader
                .get("/api/machines/findbytag?tag=Restricted-By-Soar")
                .await
        ),
        ["web-a.corp.example"]
    );
    assert!(names(&reader.get("/api/machines/findbytag?tag=restricted").await).is_empty());
    assert_eq!(
        names(
            &reader
                .get("/api/machines/findbytag?tag=restricted&useStartsWithFilter=true")
                .await
        ),
        ["web-a.corp.example"]
    );
    let odata = reader
        .get("/api/machines?$filter=machineTags/any(t: t eq 'restricted-by-soar')")
        .await;
    assert_eq!(names(&odata), ["web-a.corp.example"]);

    // Permissions: reading roles cannot tag; a viewer cannot; an analyst can.
    tag(&reader, &b.machine_id, "x", "Add")
        .await
        .assert_error(403, "Forbidden");
    let e = tag(&viewer, &b.machine_id, "x", "Add")
        .await
        .assert_error(403, "Forbidden");
    assert!(
        e.message.contains("Manage security settings"),
        "{}",
        e.message
    );
    assert_eq!(
        tag(&analyst, &b.machine_id, "reviewed", "Add").await.status,
        200
    );

    // A tag that matches a device group's rule moves the device into it: the analyst,
    // who may not see that group, loses it at once (find, get, restrict).
    let r = tag(&analyst, &b.machine_id, "Quarantine", "Add").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["rbacGroupName"], "Quarantine");
    assert!(names(&analyst.get("/api/machines/findbytag?tag=quarantine").await).is_empty());
    assert_eq!(
        names(&admin.get("/api/machines/findbytag?tag=quarantine").await),
        ["web-b.corp.example"]
    );
    analyst
        .get(&format!("/api/machines/{}", b.machine_id))
        .await
        .assert_error(403, "Forbidden");
    let restrict = analyst
        .send(
            analyst
                .request(
                    reqwest::Method::POST,
                    &format!("/api/machines/{}/restrictCodeExecution", b.machine_id),
                )
                .json(&json!({"Comment": "x"})),
        )
        .await;
    restrict.assert_error(403, "Forbidden");
    tag(&analyst, &b.machine_id, "quarantine", "Remove")
        .await
        .assert_error(403, "Forbidden");
    // The admin removes it; the device is back where the analyst sees it.
    let r = tag(&admin, &b.machine_id, "QUARANTINE", "Remove").await;
    assert_eq!(r.json()["rbacGroupName"], Value::Null);
    assert_eq!(r.json()["machineTags"], json!(["reviewed"]));
    assert_eq!(
        analyst
            .get(&format!("/api/machines/{}", b.machine_id))
            .await
            .status,
        200
    );

    // Several at once, by machine id: all or none.
    let many = |api: &Api, body: Value| {
        let req = api
            .request(
                reqwest::Method::POST,
                "/api/v1.0/machines/AddOrRemoveTagForMultipleMachines",
            )
            .json(&body);
        let api = api.clone();
        async move { api.send(req).await }
    };
    let r = many(
        &app_rw,
        json!({"Value": "wave-1", "Action": "Add", "MachineIds": [a.machine_id, b.machine_id]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["@odata.context"],
        format!("{}/api/$metadata#Machines", server.base)
    );
    assert_eq!(names(&r), ["web-a.corp.example", "web-b.corp.example"]);
    assert_eq!(
        names(&reader.get("/api/machines/findbytag?tag=wave-1").await).len(),
        2
    );
    many(&app_rw, json!({"Value": "wave-1", "Action": "Remove", "MachineIds": [a.machine_id, format!("{:040x}", 9)]}))
        .await
        .assert_error(404, "ResourceNotFound");
    assert_eq!(
        names(&reader.get("/api/machines/findbytag?tag=wave-1").await).len(),
        2,
        "nothing removed"
    );

    // A user scoped to groups sees only their devices in lookups by IP too.
    tag(&admin, &a.machine_id, "quarantine", "Add").await;
    let now = server.state.clock.now();
    assert_eq!(
        names(&analyst.get(&find_by_ip("10.0.0.7", now)).await),
        ["web-b.corp.example"]
    );
    assert_eq!(
        names(&admin.get(&find_by_ip("10.0.0.7", now)).await).len(),
        2
    );
}

/// The playbook of the issue, through the CLI against simulated devices: resolve a
/// device by its internal IP, tag it, restrict it, find it again by the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playbook_resolves_tags_restricts_and_finds_a_device_from_the_cli() {
    use appfence_agent::{spawn_fleet, SimTimings};
    let server = TestServer::start().await;
    let app = server
        .app(&[ROLE_READ, ROLE_READ_WRITE, ROLE_RESTRICT])
        .await;
    let api = server.api_for(&app).await;
    let secret = server.enroll_secret(&server.tenant_id).await;
    let fleet_dir = crate::harness::private_tempdir();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let timings = SimTimings {
        denial_when_restricted: false,
        ack_delay: Duration::from_millis(50),
        complete_delay: Duration::from_millis(50),
    };
    let fleet = spawn_fleet(&server.base, &secret, 3, fleet_dir.path(), timings, stop_rx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api.get("/api/machines").await.json()["value"]
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet did not enrol"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", app.secret.as_str()),
    ];
    let limit = Duration::from_secs(60);
    let run = |args: Vec<&'static str>| crate::process::run_owned(args, &env, limit);
    // The simulated device N reports 127.0.0.N.
    let found = run(vec!["machines", "find", "--ip", "127.0.0.2", "-o", "json"]).await;
    assert_eq!(found.code, Some(0), "{found:?}");
    let value = found.json()["value"].clone();
    assert_eq!(value.as_array().unwrap().len(), 1, "{value}");
    assert_eq!(value[0]["computerDnsName"], "demo-linux-02.appfence.local");
    let host = "demo-linux-02.appfence.local";
    let tagged = run(vec!["machines", "tag", host, "--add", "restricted-by-soar"]).await;
    assert_eq!(tagged.code, Some(0), "{tagged:?}");
    assert!(
        tagged.stdout.contains("restricted-by-soar"),
        "{}",
        tagged.stdout
    );
    let restricted = run(vec!["restrict", host, "--comment", "alert 42", "--wait"]).await;
    assert_eq!(restricted.code, Some(0), "{restricted:?}");
    let by_tag = run(vec![
        "machines",
        "find",
        "--tag",
        "Restricted-By-SOAR",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(by_tag.code, Some(0), "{by_tag:?}");
    assert_eq!(by_tag.json()["value"][0]["computerDnsName"], host);
    let table = run(vec!["machines", "find", "--tag", "restricted", "--prefix"]).await;
    assert!(table.stdout.contains(host), "{}", table.stdout);
    let untag = run(vec![
        "machines",
        "tag",
        host,
        "--remove",
        "restricted-by-soar",
    ])
    .await;
    assert_eq!(untag.code, Some(0), "{untag:?}");
    let none = run(vec![
        "machines",
        "find",
        "--tag",
        "restricted-by-soar",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(none.json()["value"], json!([]));
    let usage = run(vec!["machines", "find", "--at", "2026-01-01T00:00:00Z"]).await;
    assert_eq!(usage.code, Some(2), "--at needs --ip: {usage:?}");
    let _ = stop.send(true);
    for f in fleet {
        let _ = tokio::time::timeout(Duration::from_secs(5), f).await;
    }
}
