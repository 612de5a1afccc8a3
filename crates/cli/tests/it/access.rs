//! Identity and access end to end: tokens of an external OpenID Connect issuer (served
//! by the test through a real JWKS endpoint), delegated users with portal roles and
//! device groups, the token attack matrix, and exact rate limits under concurrency.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::rbac::DeviceRule;
use appfence_core::ManualClock;
use appfence_server::access::{AccessSpec, DeviceGroupSpec, IssuerSpec, RoleSpec};
use appfence_server::ServerConfig;
use serde_json::{json, Value};

use crate::harness::{DeviceOpts, TestServer, ALL_ROLES, ROLE_READ, ROLE_RESTRICT};
use crate::idp::{forge, rsa_a_public_modulus, sign, sign_as, tamper, Idp, TestKey, AUDIENCE};
use crate::wire::Resp;

const TIER2: &str = "g-tier2";
const VIEWERS: &str = "g-viewers";
const SERVER_ADMINS: &str = "g-server-admins";
/// Holders of "Manage security settings", which lets a user offboard devices.
const SECURITY_ADMINS: &str = "g-security-admins";
const ALL_SCOPES: &str = "Machine.Read Machine.RestrictExecution";

fn role(name: &str, permissions: &[&str], group: &str) -> RoleSpec {
    RoleSpec {
        line: None,
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        user_groups: vec![group.into()],
        tenant: None,
    }
}

fn device_group(name: &str, rank: u32, rule: DeviceRule, users: &[&str]) -> DeviceGroupSpec {
    DeviceGroupSpec {
        line: None,
        name: name.into(),
        rank,
        id: None,
        rule,
        user_groups: users.iter().map(|u| u.to_string()).collect(),
        tenant: None,
    }
}

/// Servers (rank 1, only for server admins), Production (rank 2, tag `prod`, open to
/// every user); everything else is ungrouped.
fn spec(idp: &Idp) -> AccessSpec {
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
            role(
                "Tier 2",
                &["Active remediation actions", "View data"],
                TIER2,
            ),
            role("Viewer", &["View data"], VIEWERS),
            role(
                "Security admin",
                &["Manage security settings", "View data"],
                SECURITY_ADMINS,
            ),
        ],
        device_groups: vec![
            device_group("Production", 2, DeviceRule::Tag("prod".into()), &[]),
            device_group(
                "Servers",
                1,
                DeviceRule::NamePrefix("srv-".into()),
                &[SERVER_ADMINS],
            ),
        ],
    }
}

fn tagged(tags: &[&str]) -> DeviceOpts {
    DeviceOpts {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..DeviceOpts::default()
    }
}

struct Fixture {
    server: TestServer,
    idp: Idp,
    clock: Arc<ManualClock>,
    /// srv-db1 (tag prod): Servers, because rank 1 wins.
    srv: String,
    /// web-1 (tag prod): Production.
    web: String,
    /// laptop-1: ungrouped.
    laptop: String,
}

impl Fixture {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
        let idp = Idp::start(&[TestKey::RsaA, TestKey::Ec, TestKey::Ed]).await;
        let clock = Arc::new(ManualClock::starting_now());
        let access = spec(&idp);
        let server = TestServer::start_with(
            |c| {
                c.access = access;
                tweak(c);
            },
            Some(clock.clone()),
        )
        .await;
        let tenant = server.tenant_id.clone();
        let srv = server
            .enroll_with(&tenant, "srv-db1.corp", tagged(&["prod"]))
            .await;
        let web = server
            .enroll_with(&tenant, "web-1.corp", tagged(&["PROD", "web"]))
            .await;
        let laptop = server.enroll("laptop-1.corp").await;
        Fixture {
            server,
            idp,
            clock,
            srv: srv.machine_id,
            web: web.machine_id,
            laptop: laptop.machine_id,
        }
    }

    fn now(&self) -> i64 {
        appfence_core::Clock::now(self.clock.as_ref()).unix_seconds()
    }

    async fn call(&self, token: &str, method: reqwest::Method, path: &str) -> Resp {
        let api = self.server.anonymous().with_token(token);
        let mut req = api.request(method.clone(), path);
        if method == reqwest::Method::POST {
            req = req.json(&json!({ "Comment": "access test" }));
        }
        api.send(req).await
    }

    async fn get(&self, token: &str, path: &str) -> Resp {
        self.call(token, reqwest::Method::GET, path).await
    }

    async fn restrict(&self, token: &str, machine: &str) -> Resp {
        self.call(
            token,
            reqwest::Method::POST,
            &format!("/api/machines/{machine}/restrictCodeExecution"),
        )
        .await
    }

    fn user(&self, upn: &str, scopes: &str, groups: &[&str]) -> String {
        sign(
            TestKey::Ec,
            &self.idp.user_claims(self.now(), upn, scopes, groups),
        )
    }

    fn app(&self, roles: &[&str]) -> String {
        sign(TestKey::RsaA, &self.idp.app_claims(self.now(), roles))
    }
}

fn names(list: &Resp) -> Vec<String> {
    let mut n: Vec<String> = list.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["computerDnsName"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_application_and_user_tokens_work_end_to_end() {
    let f = Fixture::start(|_| {}).await;

    // An application token (Keycloak client credentials, RS256): every device.
    let app = f.app(&[ROLE_RESTRICT, ROLE_READ]);
    let all = f.get(&app, "/api/machines").await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(names(&all), ["laptop-1.corp", "srv-db1.corp", "web-1.corp"]);
    let created = f.restrict(&app, &f.srv).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json()["requestor"], "Keycloak SOAR");

    // Device groups on the Machine entity: rank 1 (name prefix) beats rank 2 (tag).
    let srv = f
        .get(&app, &format!("/api/machines/{}", f.srv))
        .await
        .json();
    let servers_id = appfence_core::rbac::default_group_id("Servers");
    assert_eq!(srv["rbacGroupId"], json!(servers_id));
    assert_eq!(srv["rbacGroupName"], "Servers");
    let web = f
        .get(&app, &format!("/api/machines/{}", f.web))
        .await
        .json();
    assert_eq!(web["rbacGroupName"], "Production");
    let laptop = f
        .get(&app, &format!("/api/machines/{}", f.laptop))
        .await
        .json();
    assert_eq!(laptop["rbacGroupId"], json!(0));
    assert_eq!(laptop["rbacGroupName"], Value::Null);

    // A Tier 2 analyst (ES256 user token): sees the open group and the ungrouped devices.
    let ana = f.user("ana@corp.example", ALL_SCOPES, &[TIER2]);
    let seen = f.get(&ana, "/api/machines?$count=true").await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(names(&seen), ["laptop-1.corp", "web-1.corp"]);
    assert_eq!(seen.json()["@odata.count"], json!(2));
    let created = f.restrict(&ana, &f.laptop).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let action = created.json();
    assert_eq!(action["requestor"], "ana@corp.example");
    // Her action list shows only actions on devices she may see.
    let actions = f.get(&ana, "/api/machineactions").await.json();
    let ids: Vec<&str> = actions["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["machineId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [f.laptop.as_str()]);
    // An EdDSA-signed token of the same issuer works too.
    let ed = sign(
        TestKey::Ed,
        &f.idp
            .user_claims(f.now(), "ed@corp.example", ALL_SCOPES, &[VIEWERS]),
    );
    assert_eq!(f.get(&ed, "/api/machines").await.status, 200);

    // Added to the server admins' group, she reaches the Servers group too.
    let admin = f.user("ana@corp.example", ALL_SCOPES, &[TIER2, SERVER_ADMINS]);
    let seen = f.get(&admin, "/api/machines").await;
    assert_eq!(
        names(&seen),
        ["laptop-1.corp", "srv-db1.corp", "web-1.corp"]
    );
    let srv_action = f
        .get(
            &app,
            "/api/machineactions?$filter=requestor eq 'Keycloak SOAR'",
        )
        .await
        .json()["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = f
        .call(
            &admin,
            reqwest::Method::POST,
            &format!("/api/machineactions/{srv_action}/cancel"),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(
        cancelled.json()["cancellationRequestor"],
        "ana@corp.example"
    );
    // The JWKS was fetched once for all of this.
    assert_eq!(f.idp.fetches(), 1);
    f.server.stop().await;
}

/// Every refusal of the matrix: status, code and what the message names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_attack_matrix() {
    let f = Fixture::start(|_| {}).await;
    let now = f.now();
    let good_app = f.idp.app_claims(now, ALL_ROLES);
    let path = "/api/machines";
    assert_eq!(
        f.get(&sign(TestKey::RsaA, &good_app), path).await.status,
        200
    );

    let with = |base: &Value, changes: Value| {
        let mut v = base.clone();
        for (k, val) in changes.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let unauthorized: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "Authorization header is missing"),
        (
            "malformed",
            Some("not-a-jwt".into()),
            "not a well-formed JWT",
        ),
        (
            "bad signature",
            Some(sign_as(TestKey::RsaB, "rsa-a", &good_app)),
            "signature is invalid",
        ),
        (
            "alg none",
            Some(forge(
                &json!({"alg": "none", "kid": "rsa-a"}),
                &good_app,
                b"",
            )),
            "algorithm 'none' is not accepted",
        ),
        (
            "HS256 with the issuer's public key",
            Some({
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                header.kid = Some("rsa-a".into());
                jsonwebtoken::encode(
                    &header,
                    &good_app,
                    &jsonwebtoken::EncodingKey::from_secret(&rsa_a_public_modulus()),
                )
                .unwrap()
            }),
            "algorithm 'HS256' is not accepted",
        ),
        (
            "expired",
            Some(sign(
                TestKey::RsaA,
                &with(&good_app, json!({"exp": now - 1})),
            )),
            "expired",
        ),
        (
            "not yet valid",
            Some(sign(
                TestKey::RsaA,
                &with(&good_app, json!({"nbf": now + 60})),
            )),
            "not valid yet",
        ),
        (
            "wrong audience",
            Some(sign(
                TestKey::RsaA,
                &with(&good_app, json!({"aud": "https://graph.microsoft.com"})),
            )),
            "audience",
        ),
        (
            "wrong issuer",
            Some(sign(
                TestKey::RsaA,
                &with(
                    &good_app,
                    json!({"iss": "https://evil.example/realms/corp"}),
                ),
            )),
            "issuer",
        ),
        (
            "unknown kid",
            Some(sign_as(TestKey::RsaB, "rsa-b", &good_app)),
            "rsa-b",
        ),
        (
            "tampered payload",
            Some(tamper(
                &sign(TestKey::RsaA, &f.idp.app_claims(now, &[ROLE_READ])),
                &f.idp.app_claims(now, ALL_ROLES),
            )),
            "signature is invalid",
        ),
    ];
    for (case, token, needle) in unauthorized {
        let api = match &token {
            Some(t) => f.server.anonymous().with_token(t),
            None => f.server.anonymous(),
        };
        let r = api.get(path).await;
        let e = r.assert_error(401, "Unauthorized");
        assert!(
            e.message.contains(needle),
            "{case}: {:?} should mention {needle:?}",
            e.message
        );
    }
    // The unknown kid caused exactly one refetch.
    assert_eq!(f.idp.fetches(), 2);

    // A built-in token for a tenant that does not exist.
    let other_tenant = f.server.new_tenant("other").await;
    let other_app = f.server.app_in(&other_tenant, "Other", ALL_ROLES).await;
    let other_token = f.server.token(&other_app).await;
    // ... sees nothing of this tenant: its machines are "not found".
    f.get(&other_token, &format!("/api/machines/{}", f.srv))
        .await
        .assert_error(404, "ResourceNotFound");

    let forbidden: Vec<(&str, String, reqwest::Method, String, &str)> = vec![
        (
            "application token without the role",
            f.app(&[ROLE_READ]),
            reqwest::Method::POST,
            format!("/api/machines/{}/restrictCodeExecution", f.laptop),
            "Missing application roles. API required roles: Machine.RestrictExecution",
        ),
        (
            "user token without the scope",
            f.user("ana@corp.example", "Machine.Read", &[TIER2]),
            reqwest::Method::POST,
            format!("/api/machines/{}/restrictCodeExecution", f.laptop),
            "Missing delegated scopes. API required scopes: Machine.RestrictExecution",
        ),
        (
            "user without the RBAC role",
            f.user("val@corp.example", ALL_SCOPES, &[VIEWERS]),
            reqwest::Method::POST,
            format!("/api/machines/{}/restrictCodeExecution", f.laptop),
            "Missing user permission. API required role permission: Active remediation actions",
        ),
        (
            "user with no role at all reading",
            f.user("nobody@corp.example", ALL_SCOPES, &["g-unknown"]),
            reqwest::Method::GET,
            "/api/machines".to_string(),
            "Missing user permission. API required role permission: View data",
        ),
        (
            "user outside the device's group",
            f.user("ana@corp.example", ALL_SCOPES, &[TIER2]),
            reqwest::Method::POST,
            format!("/api/machines/{}/restrictCodeExecution", f.srv),
            "User has no access to device group 'Servers' of machine",
        ),
        (
            "user outside the device's group, reading it",
            f.user("val@corp.example", ALL_SCOPES, &[VIEWERS]),
            reqwest::Method::GET,
            format!("/api/machines/{}", f.srv),
            "User has no access to device group 'Servers'",
        ),
    ];
    for (case, token, method, path, needle) in forbidden {
        let r = f.call(&token, method, &path).await;
        let e = r.assert_error(403, "Forbidden");
        assert!(
            e.message.contains(needle),
            "{case}: {:?} should contain {needle:?}",
            e.message
        );
    }
    // A refused restrict created nothing.
    assert!(f
        .server
        .stored_actions(&f.server.tenant_id)
        .await
        .is_empty());
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_at_most_once_a_minute_and_pick_up_rotated_keys() {
    let f = Fixture::start(|_| {}).await;
    let now = f.now();
    let claims = f.idp.app_claims(now, ALL_ROLES);
    assert_eq!(
        f.get(&sign(TestKey::RsaA, &claims), "/api/machines")
            .await
            .status,
        200
    );
    assert_eq!(f.idp.fetches(), 1);
    // rsa-b is not published: one refetch, then no more within the minute.
    for _ in 0..3 {
        f.get(&sign(TestKey::RsaB, &claims), "/api/machines")
            .await
            .assert_error(401, "Unauthorized");
    }
    assert_eq!(f.idp.fetches(), 2);
    // The IdP rotates to rsa-b; a minute later the next unknown kid refetches.
    *f.idp.published.lock().unwrap() = crate::idp::jwks_of(&[TestKey::RsaB, TestKey::Ec]);
    f.clock.advance(Duration::from_secs(61));
    let rotated = sign(TestKey::RsaB, &f.idp.app_claims(f.now(), ALL_ROLES));
    let r = f.get(&rotated, "/api/machines").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(f.idp.fetches(), 3);
    f.server.stop().await;
}

/// Reloading the access policy moves devices between groups and changes what users see.
/// Offboarding: the application role `Machine.Offboard`; for users the delegated scope
/// `Machine.Offboard`, the role permission "Manage security settings" (MDE: "onboard and
/// offboard devices") and access to the device's group. Every refusal creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_needs_its_permission_and_the_device_group() {
    let f = Fixture::start(|_| {}).await;
    let offboard = |machine: &str| format!("/api/machines/{machine}/offboard");
    let post = reqwest::Method::POST;
    let forbidden = [
        (
            "application without Machine.Offboard",
            f.app(&[ROLE_RESTRICT, ROLE_READ, "Machine.ReadWrite.All"]),
            f.laptop.clone(),
            "Missing application roles. API required roles: Machine.Offboard",
        ),
        (
            "user without the delegated scope",
            f.user("sam@corp.example", ALL_SCOPES, &[SECURITY_ADMINS]),
            f.laptop.clone(),
            "Missing delegated scopes. API required scopes: Machine.Offboard",
        ),
        (
            "user with the scope but only Active remediation actions",
            f.user(
                "ana@corp.example",
                "Machine.Read Machine.RestrictExecution Machine.Offboard",
                &[TIER2],
            ),
            f.laptop.clone(),
            "Missing user permission. API required role permission: Manage security settings",
        ),
        (
            "user outside the device's group",
            f.user(
                "sam@corp.example",
                "Machine.Read Machine.Offboard",
                &[SECURITY_ADMINS],
            ),
            f.srv.clone(),
            "User has no access to device group 'Servers' of machine",
        ),
    ];
    for (case, token, machine, needle) in forbidden {
        let e = f
            .call(&token, post.clone(), &offboard(&machine))
            .await
            .assert_error(403, "Forbidden");
        assert!(e.message.contains(needle), "{case}: {}", e.message);
    }
    assert!(f
        .server
        .stored_actions(&f.server.tenant_id)
        .await
        .is_empty());

    // Allowed: an application with the role, on any device; a security admin on the
    // devices of her groups; with the server admins' group, on the Servers too.
    let app = f.app(&["Machine.Offboard"]);
    let r = f.call(&app, post.clone(), &offboard(&f.laptop)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["requestor"], "Keycloak SOAR");
    let sam = f.user(
        "sam@corp.example",
        "Machine.Read Machine.Offboard",
        &[SECURITY_ADMINS],
    );
    let r = f.call(&sam, post.clone(), &offboard(&f.web)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["requestor"], "sam@corp.example");
    let sam_admin = f.user(
        "sam@corp.example",
        "Machine.Read Machine.Offboard",
        &[SECURITY_ADMINS, SERVER_ADMINS],
    );
    let r = f.call(&sam_admin, post.clone(), &offboard(&f.srv)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Open already: MDE's duplicate answer, whoever asks.
    f.call(&sam_admin, post, &offboard(&f.srv))
        .await
        .assert_error(400, "ActiveRequestAlreadyExists");
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_policy_regroups_devices_and_a_bad_one_changes_nothing() {
    let f = Fixture::start(|_| {}).await;
    let ana = f.user("ana@corp.example", ALL_SCOPES, &[TIER2]);
    assert_eq!(
        names(&f.get(&ana, "/api/machines").await),
        ["laptop-1.corp", "web-1.corp"]
    );
    // An action on the (still ungrouped) laptop: she may read it, which also puts the
    // laptop's group in the server's memory.
    let on_laptop = f.restrict(&ana, &f.laptop).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let action_path = format!("/api/machineactions/{on_laptop}");
    assert_eq!(f.get(&ana, &action_path).await.status, 200);
    // Servers opens to everyone; a laptops group appears.
    let mut next = spec(&f.idp);
    next.device_groups[1].user_groups.clear();
    next.device_groups.push(device_group(
        "Laptops",
        3,
        DeviceRule::NamePrefix("laptop-".into()),
        &[SERVER_ADMINS],
    ));
    let summary = f.server.state.reload_access(&next).await.unwrap();
    assert_eq!(summary.machines_regrouped, 1);
    assert_eq!(
        names(&f.get(&ana, "/api/machines").await),
        ["srv-db1.corp", "web-1.corp"]
    );
    let app = f.app(ALL_ROLES);
    let laptop = f
        .get(&app, &format!("/api/machines/{}", f.laptop))
        .await
        .json();
    assert_eq!(laptop["rbacGroupName"], "Laptops");
    // Her action checks follow the new groups too: the laptop's action is out of reach.
    let e = f
        .get(&ana, &action_path)
        .await
        .assert_error(403, "Forbidden");
    assert!(e.message.contains("'Laptops'"), "{}", e.message);

    // A spec that does not validate is refused, naming the line; nothing changes.
    let mut bad = next.clone();
    bad.roles.push(RoleSpec {
        line: Some(17),
        ..role("Broken", &["Root access"], TIER2)
    });
    let err = f.server.state.reload_access(&bad).await.unwrap_err();
    assert!(
        err.starts_with("line 17: role 'Broken': unknown permission 'Root access'"),
        "{err}"
    );
    assert_eq!(
        names(&f.get(&ana, "/api/machines").await),
        ["srv-db1.corp", "web-1.corp"]
    );
    f.server.stop().await;
}

/// 1,000 simultaneous calls by one application to one API within a minute: exactly
/// 100 are admitted; a user's calls are counted apart from the application's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_exactly_under_concurrency() {
    let f = Fixture::start(|_| {}).await;
    let app = f.app(ALL_ROLES);
    let calls = (0..1000).map(|_| f.get(&app, "/api/machines"));
    let results = futures::future::join_all(calls).await;
    let admitted = results.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Resp> = results.iter().filter(|r| r.status == 429).collect();
    assert_eq!((admitted, refused.len()), (100, 900));
    for r in &refused {
        r.assert_error(429, "TooManyRequests");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // Another API of the same application, and a user, still have their own quota.
    assert_eq!(f.get(&app, "/api/machineactions").await.status, 200);
    let ana = f.user("ana@corp.example", ALL_SCOPES, &[TIER2]);
    assert_eq!(f.get(&ana, "/api/machines").await.status, 200);
    f.server.stop().await;
}
