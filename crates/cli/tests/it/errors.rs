//! Spec §6: every error code that applies, with the exact envelope, a fresh target per
//! error, and no change to the store after a refused request.

use std::collections::HashSet;

use serde_json::json;

use crate::harness::{DeviceOpts, TestServer, ALL_ROLES, ROLE_READ, ROLE_RESTRICT};
use crate::wire::{ErrorInfo, Resp};

/// What the store holds for the tenant: every action's id, status and last update.
async fn snapshot(server: &TestServer) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> = server
        .stored_actions(&server.tenant_id)
        .await
        .into_iter()
        .map(|a| (a.id, a.status.as_str().to_string(), a.last_update.ticks()))
        .collect();
    v.sort();
    v
}

struct Checker<'a> {
    server: &'a TestServer,
    before: Vec<(String, String, i64)>,
    targets: HashSet<String>,
}

impl Checker<'_> {
    /// Asserts the error, its message when given, and that the store did not change.
    async fn expect(
        &mut self,
        what: &str,
        r: Resp,
        status: u16,
        code: &str,
        message: Option<&str>,
    ) -> ErrorInfo {
        let info = r.assert_error(status, code);
        if let Some(m) = message {
            assert_eq!(info.message, m, "{what}");
        }
        assert!(!info.message.is_empty(), "{what}: empty message");
        assert!(
            self.targets.insert(info.target.clone()),
            "{what}: target reused"
        );
        let now = snapshot(self.server).await;
        assert_eq!(
            now, self.before,
            "{what}: the store changed after a refused request"
        );
        info
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_has_the_envelope_and_changes_nothing() {
    let server = TestServer::start().await;
    let api = server.api(ALL_ROLES).await;
    let reader = server.api(&[ROLE_READ]).await;
    let restricter = server.api(&[ROLE_RESTRICT]).await;
    let dev = server.enroll("err-host").await;
    let tenant = server.tenant_id.clone();
    let no_platform = server
        .enroll_with(
            &tenant,
            "err-noplatform",
            DeviceOpts {
                can_restrict: false,
                ..Default::default()
            },
        )
        .await;
    let idle_dev = server.enroll("err-idle").await;
    let too_old = server
        .enroll_with(
            &tenant,
            "err-oldagent",
            DeviceOpts {
                agent_version: "0.0.1".into(),
                ..Default::default()
            },
        )
        .await;

    // A final action (for BadRequest) and an open one (for ActiveRequestAlreadyExists).
    let first = api.restrict(&dev.machine_id, "first").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let final_id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(api.cancel(&final_id, "undo").await.status, 200);
    let open = api.restrict(&dev.machine_id, "second").await;
    assert_eq!(open.status, 201, "{}", open.text);
    let open_id = open.json()["id"].as_str().unwrap().to_string();

    let mut c = Checker {
        server: &server,
        before: snapshot(&server).await,
        targets: HashSet::new(),
    };
    assert_eq!(c.before.len(), 2);
    let m = &dev.machine_id;
    let restrict_path = format!("/api/machines/{m}/restrictCodeExecution");

    // BadRequest: cancelling a final action.
    let info = c
        .expect(
            "cancel final",
            api.cancel(&final_id, "again").await,
            400,
            "BadRequest",
            None,
        )
        .await;
    assert!(info.message.contains("Cancelled"), "{}", info.message);

    // ODataError.
    for (q, needle) in [
        ("$filter=nosuchfield+eq+'x'", "nosuchfield"),
        ("$filter=status+eq", ""),
        ("$filter=status+eq+'NotAStatus'", "NotAStatus"),
        ("$top=10001", "10001"),
        ("$top=-1", ""),
        ("$skip=abc", "abc"),
        ("$orderby=status+sideways", "sideways"),
        ("$select=id", "$select"),
        ("$filter=(status+eq+'Pending'", ""),
    ] {
        let info = c
            .expect(
                q,
                api.get(&format!("/api/machineactions?{q}")).await,
                400,
                "ODataError",
                None,
            )
            .await;
        assert!(info.message.contains(needle), "{q}: {}", info.message);
    }
    c.expect(
        "machines $top",
        api.get("/api/machines?$top=10001").await,
        400,
        "ODataError",
        None,
    )
    .await;

    // InvalidInput: ids of the wrong shape.
    c.expect(
        "action id",
        api.get("/api/machineactions/not-a-guid").await,
        400,
        "InvalidInput",
        None,
    )
    .await;
    c.expect(
        "cancel id",
        api.cancel("12345", "x").await,
        400,
        "InvalidInput",
        None,
    )
    .await;
    c.expect(
        "machine ref",
        api.restrict("bad%20name!", "x").await,
        400,
        "InvalidInput",
        None,
    )
    .await;

    // InvalidRequestBody. (The device has an open action, so use the other ones: body
    // problems must be found before the duplicate rule is even asked.)
    let idle = format!("/api/machines/{}/restrictCodeExecution", too_old.machine_id);
    for body in [
        "not json",
        "[1]",
        r#"{"Comment":5}"#,
        r#""Comment""#,
        r#"{"Comment":"a""#,
        "",
    ] {
        let info = c
            .expect(
                body,
                api.post_raw(&idle, body.to_string()).await,
                400,
                "InvalidRequestBody",
                None,
            )
            .await;
        assert!(!info.message.contains("serde"), "{}", info.message);
    }

    // MissingRequiredParameter: keys are case-sensitive.
    for body in [
        json!({"comment": "x"}),
        json!({}),
        json!({"Comment": ""}),
        json!({"Comment": null}),
    ] {
        c.expect(
            &body.to_string(),
            api.post(&restrict_path.replace(m, &no_platform.machine_id), &body)
                .await,
            400,
            "MissingRequiredParameter",
            Some("Parameter Comment is missing"),
        )
        .await;
    }

    // ActiveRequestAlreadyExists, for restrict and unrestrict, by every machine name.
    for key in [&dev.machine_id, &dev.aad_device_id, &dev.hostname] {
        for r in [
            api.restrict(key, "dup").await,
            api.unrestrict(key, "dup").await,
        ] {
            assert!(
                r.text
                    .contains(r#""message":"Action is already in progress""#),
                "clients match the compact substring: {}",
                r.text
            );
            c.expect(
                "duplicate",
                r,
                400,
                "ActiveRequestAlreadyExists",
                Some("Action is already in progress"),
            )
            .await;
        }
    }

    // OsPlatformNotSupported / ClientVersionNotSupported.
    c.expect(
        "platform",
        api.restrict(&no_platform.machine_id, "x").await,
        400,
        "OsPlatformNotSupported",
        None,
    )
    .await;
    c.expect(
        "platform unrestrict",
        api.unrestrict(&no_platform.hostname, "x").await,
        400,
        "OsPlatformNotSupported",
        None,
    )
    .await;
    let info = c
        .expect(
            "version",
            api.restrict(&too_old.machine_id, "x").await,
            400,
            "ClientVersionNotSupported",
            None,
        )
        .await;
    assert!(info.message.contains("0.0.1"), "{}", info.message);

    // Unauthorized: no token on every endpoint.
    let anon = server.anonymous();
    for r in [
        anon.restrict(m, "x").await,
        anon.unrestrict(m, "x").await,
        anon.get("/api/machines").await,
        anon.get(&format!("/api/machines/{m}")).await,
        anon.get("/api/machineactions").await,
        anon.get(&format!("/api/machineactions/{open_id}")).await,
        anon.cancel(&open_id, "x").await,
        anon.get("/api/v1.0/machineactions").await,
    ] {
        assert_eq!(
            r.header("www-authenticate")
                .map(|h| h.starts_with("Bearer")),
            Some(true)
        );
        c.expect("no token", r, 401, "Unauthorized", None).await;
    }

    // Forbidden: the exact MDE message, per permission.
    let forbidden_restrict =
        "Missing application roles. API required roles: Machine.RestrictExecution";
    for r in [
        reader.restrict(m, "x").await,
        reader.unrestrict(m, "x").await,
        reader.cancel(&open_id, "x").await,
    ] {
        c.expect("reader acts", r, 403, "Forbidden", Some(forbidden_restrict))
            .await;
    }
    for r in [
        restricter.get("/api/machines").await,
        restricter.get(&format!("/api/machines/{m}")).await,
        restricter.get("/api/machineactions").await,
        restricter
            .get(&format!("/api/machineactions/{open_id}"))
            .await,
    ] {
        let info = c
            .expect("restricter reads", r, 403, "Forbidden", None)
            .await;
        assert!(
            info.message
                .starts_with("Missing application roles. API required roles: ")
                && info.message.contains("Machine.Read.All"),
            "{}",
            info.message
        );
    }

    // ResourceNotFound: the exact messages.
    let unknown_machine = "0123456789abcdef0123456789abcdef01234567";
    c.expect(
        "unknown machine",
        api.restrict(unknown_machine, "x").await,
        404,
        "ResourceNotFound",
        Some(&format!("Machine {unknown_machine} was not found")),
    )
    .await;
    c.expect(
        "unknown machine name",
        api.get("/api/machines/no-such-host.example").await,
        404,
        "ResourceNotFound",
        Some("Machine no-such-host.example was not found"),
    )
    .await;
    let unknown_action = uuid::Uuid::new_v4().to_string();
    c.expect(
        "unknown action",
        api.get(&format!("/api/machineactions/{unknown_action}"))
            .await,
        404,
        "ResourceNotFound",
        Some(&format!("MachineAction {unknown_action} was not found")),
    )
    .await;
    c.expect(
        "cancel unknown action",
        api.cancel(&unknown_action, "x").await,
        404,
        "ResourceNotFound",
        Some(&format!("MachineAction {unknown_action} was not found")),
    )
    .await;

    // NotFound: unknown routes, also wrong-case path segments (they are case-sensitive).
    for path in [
        "/api/nosuchthing",
        "/nothing/here",
        "/api/v2.0/machines",
        &format!("/api/Machines/{m}"),
    ] {
        c.expect(path, api.get(path).await, 404, "NotFound", None)
            .await;
    }
    c.expect(
        "wrong-case action",
        api.post(
            &format!("/api/machines/{m}/RestrictCodeExecution"),
            &json!({"Comment": "x"}),
        )
        .await,
        404,
        "NotFound",
        None,
    )
    .await;

    // Oversized body: refused with the envelope before anything is created (the device
    // is idle, so without a limit this would be a 201).
    let pad = "a".repeat(70 * 1024);
    let big = json!({"Comment": "x", "Title": null, "Pad": pad}).to_string();
    let r = api
        .post_raw(
            &format!(
                "/api/machines/{}/restrictCodeExecution",
                idle_dev.machine_id
            ),
            big,
        )
        .await;
    assert!(
        matches!(r.status, 400 | 413),
        "oversized: HTTP {} {}",
        r.status,
        r.text
    );
    let status = r.status;
    let code = r.json()["error"]["code"].as_str().unwrap_or("").to_string();
    assert!(
        ["InvalidRequestBody", "BadRequest"].contains(&code.as_str()),
        "oversized code {code}"
    );
    c.expect("oversized", r, status, &code, None).await;

    // What the framework refuses before a handler runs gets the envelope too.
    let raw = |method: reqwest::Method, path: String| {
        let (http, url, token) = (
            server.http.clone(),
            server.url(&path),
            api.token.clone().unwrap_or_default(),
        );
        async move {
            Resp::read(
                http.request(method, url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let r = raw(reqwest::Method::GET, "/api/machines/%FF".into()).await;
    c.expect(
        "invalid UTF-8 in a path segment",
        r,
        400,
        "InvalidInput",
        None,
    )
    .await;
    let r = raw(reqwest::Method::GET, "/agent/v1/actions/%FF/ack".into()).await;
    assert_eq!(r.status, 405, "{}", r.text);
    c.expect(
        "a gateway path with the wrong method",
        r,
        405,
        "BadRequest",
        None,
    )
    .await;
    let long = format!("/api/machines?$top=1&x={}", "a".repeat(20 * 1024));
    let r = raw(reqwest::Method::GET, long).await;
    c.expect("a request line over 16 KiB", r, 414, "BadRequest", None)
        .await;
    let r = raw(reqwest::Method::DELETE, "/api/machines".into()).await;
    c.expect(
        "a method the path does not take",
        r,
        405,
        "BadRequest",
        None,
    )
    .await;
    let r = raw(reqwest::Method::GET, "/api/no/such/thing".into()).await;
    c.expect("an unknown path under /api", r, 404, "NotFound", None)
        .await;
    // The token endpoint with a body over the limit (3 MB, as measured in the issue).
    let r = Resp::read(
        server
            .http
            .post(server.url(&format!("/{}/oauth2/v2.0/token", server.tenant_id)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a".repeat(3 << 20))
            .send()
            .await
            .unwrap(),
    )
    .await;
    c.expect(
        "a token request over the body limit",
        r,
        413,
        "InvalidRequestBody",
        Some("Request body is too large"),
    )
    .await;
    // Probes keep their plain answers.
    let r = raw(reqwest::Method::GET, "/healthz".into()).await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));

    assert!(c.targets.len() > 40, "every case produced its own target");
    server.stop().await;
}
