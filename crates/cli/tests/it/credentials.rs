//! The lifecycle of credentials over real HTTP: applications disabled, enabled and
//! deleted (their tokens refused within the bound on every replica, new tokens refused
//! at once), client secrets that expire and are rotated with no failed call, users
//! disabled (password grant, tokens, console sessions) and enabled again, enrolment
//! secrets revoked, expired or used up; and the `appfence app|user|enroll-secret`
//! commands run as the real binary on the server's data directory. The bound is
//! reached by moving the servers' clock past it: no sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use appfence_core::ManualClock;
use appfence_server::oauth::apps::register_app;
use appfence_server::oauth::principal_state::STATE_TTL;
use appfence_server::oauth::users::create_user;
use serde_json::{json, Value};

use crate::console::{spec, Browser};
use crate::harness::{App, TestServer, MDE_AUDIENCE, ROLE_READ};
use crate::process::{run, run_with_stdin, CliRun};
use crate::wire::Resp;

const LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "a long enough passphrase";
const ANA: &str = "ana@corp.example";

/// The client-credentials grant with `secret`, from the real token endpoint.
async fn client_credentials(server: &TestServer, client_id: &str, secret: &str) -> Resp {
    Resp::read(
        server
            .http
            .post(server.url(&format!("/{}/oauth2/v2.0/token", server.tenant_id)))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", &format!("{MDE_AUDIENCE}/.default")),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The password grant for `upn` through the public client `client_id`.
async fn password_grant(server: &TestServer, client_id: &str, upn: &str) -> Resp {
    Resp::read(
        server
            .http
            .post(server.url(&format!("/{}/oauth2/token", server.tenant_id)))
            .form(&[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("username", upn),
                ("password", PASSWORD),
                ("resource", MDE_AUDIENCE),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn access_token(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// `GET /api/machines` on `server` with `token`.
async fn machines(server: &TestServer, token: &str) -> Resp {
    server
        .anonymous()
        .with_token(token)
        .get("/api/machines")
        .await
}

/// An OAuth refusal: status, `error`, Entra's code, and the start of the description.
fn assert_refused(r: &Resp, status: u16, error: &str, code: u32, starts: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert_eq!(v["error_codes"], json!([code]), "{v}");
    let d = v["error_description"].as_str().unwrap();
    assert!(d.starts_with(starts), "{d}");
    assert!(v.get("access_token").is_none());
}

/// A 401 of the API naming why.
fn assert_unauthorized(r: &Resp, message: &str) {
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "Unauthorized", "{}", r.text);
    assert_eq!(r.json()["error"]["message"], message, "{}", r.text);
}

/// Runs the `appfence` binary on the server's data directory.
async fn cli(server: &TestServer, args: &[&str]) -> CliRun {
    let data = server.data_dir.display().to_string();
    let mut argv: Vec<&str> = args.to_vec();
    argv.extend(["--data-dir", data.as_str()]);
    run(&argv, &[], LIMIT).await
}

/// [`cli`], which must succeed; its JSON output.
async fn cli_json(server: &TestServer, args: &[&str]) -> Value {
    let mut argv = args.to_vec();
    argv.extend(["-o", "json"]);
    let out = cli(server, &argv).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    out.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_apps_tokens_are_refused_within_the_bound_on_every_replica() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    let public_url = server.state.public_url();
    let replica = server
        .replica_with_clock(|c| c.public_url = Some(public_url), Some(clock.clone()))
        .await;
    let app = server.app(&[ROLE_READ]).await;
    let token = access_token(&client_credentials(&server, &app.client_id, &app.secret).await);
    for s in [&server, &replica] {
        let r = machines(s, &token).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Disabled with the real binary, on the data directory both servers use.
    let out = cli(&server, &["app", "disable", &app.client_id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("within 30 s"), "{}", out.stdout);
    // No new token, at once, on either server (the token endpoint reads the store).
    for s in [&server, &replica] {
        assert_refused(
            &client_credentials(s, &app.client_id, &app.secret).await,
            400,
            "unauthorized_client",
            7000112,
            &format!(
                "AADSTS7000112: Application '{}'(Integration test app) is disabled.",
                app.client_id
            ),
        );
    }
    // The token already issued: still accepted until the bound, then refused by both.
    clock.advance(STATE_TTL - Duration::from_secs(1));
    assert_eq!(machines(&server, &token).await.status, 200);
    clock.advance(Duration::from_secs(1));
    let refusal = format!("The token's application '{}' is disabled", app.client_id);
    for s in [&server, &replica] {
        assert_unauthorized(&machines(s, &token).await, &refusal);
    }
    // The list and the audit log say so.
    let list = cli_json(&server, &["app", "list"]).await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["clientId"] == app.client_id.as_str())
        .unwrap();
    assert_eq!(listed["state"], "Disabled");
    let events = server.state.store.audit_events(0, 10_000).await.unwrap();
    let disabled = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.event == "AppDisabled" && e.subject == app.client_id)
        .expect("audited");
    assert!(
        disabled.actor.starts_with("cli:") && disabled.actor.ends_with("(appfence app disable)"),
        "{}",
        disabled.actor
    );

    // Enabled again: a new token at once, the old one again within the bound.
    let out = cli(&server, &["app", "enable", &app.client_id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let fresh = access_token(&client_credentials(&server, &app.client_id, &app.secret).await);
    clock.advance(STATE_TTL);
    for s in [&server, &replica] {
        assert_eq!(machines(s, &token).await.status, 200);
        assert_eq!(machines(s, &fresh).await.status, 200);
    }

    // Deleted: as disabled, for good.
    let out = cli(&server, &["app", "delete", "Integration test app"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_refused(
        &client_credentials(&replica, &app.client_id, &app.secret).await,
        400,
        "unauthorized_client",
        700016,
        &format!(
            "AADSTS700016: Application with identifier '{}' was not found in the directory '{}'.",
            app.client_id, server.tenant_id
        ),
    );
    clock.advance(STATE_TTL);
    let gone = format!(
        "The token's application '{}' no longer exists",
        app.client_id
    );
    for s in [&server, &replica] {
        assert_unauthorized(&machines(s, &fresh).await, &gone);
    }
    replica.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_secret_is_refused_as_entra_refuses_it() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    let (app, stored, secret) = register_app(
        server.state.store.as_ref(),
        server.state.clock.as_ref(),
        &server.tenant_id,
        "Short-lived",
        &[ROLE_READ.to_string()],
        Duration::from_secs(3600),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(
        stored.expires,
        Some(stored.created.plus(Duration::from_secs(3600)))
    );
    access_token(&client_credentials(&server, &app.client_id, &secret).await);

    clock.advance(Duration::from_secs(3600));
    let expired = client_credentials(&server, &app.client_id, &secret).await;
    assert_refused(
        &expired,
        401,
        "invalid_client",
        7000222,
        &format!(
            "AADSTS7000222: The provided client secret keys for app '{}' are expired.",
            app.client_id
        ),
    );
    assert!(
        expired.text.contains("appfence app secret add"),
        "{}",
        expired.text
    );
    // A wrong secret is another answer.
    assert_refused(
        &client_credentials(&server, &app.client_id, "not the secret").await,
        401,
        "invalid_client",
        7000215,
        "AADSTS7000215: Invalid client secret provided.",
    );
    // `app show` lists it (by the system's clock, still valid) and never prints a
    // secret or a hash.
    let out = cli(&server, &["app", "show", "Short-lived"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&stored.id), "{}", out.stdout);
    assert!(!out.stdout.contains(&secret), "{}", out.stdout);
    assert!(!out.stdout.contains("sha256"), "{}", out.stdout);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_rotated_with_no_failed_call() {
    let server = TestServer::start().await;
    // Registered with the binary, as an operator would.
    let created = cli_json(
        &server,
        &[
            "app",
            "create",
            "--name",
            "Playbook",
            "--role",
            ROLE_READ,
            "--expires",
            "90d",
        ],
    )
    .await;
    let client_id = created["clientId"].as_str().unwrap().to_string();
    let first = created["clientSecret"].as_str().unwrap().to_string();
    let first_id = created["secretId"].as_str().unwrap().to_string();

    // The playbook calls all along with the secret it was given: token, then the API.
    let current = Arc::new(Mutex::new(first.clone()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let playbook = {
        let (http, base, tenant, client_id, current) = (
            server.http.clone(),
            server.base.clone(),
            server.tenant_id.clone(),
            client_id.clone(),
            current.clone(),
        );
        tokio::spawn(async move {
            let (mut calls, mut failures) = (0u32, Vec::new());
            while !*stopped.borrow_and_update() {
                let secret = current.lock().unwrap().clone();
                let token = http
                    .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id.as_str()),
                        ("client_secret", secret.as_str()),
                        ("scope", &format!("{MDE_AUDIENCE}/.default")),
                    ])
                    .send()
                    .await
                    .unwrap();
                let status = token.status();
                let body: Value = token.json().await.unwrap();
                calls += 1;
                if status != 200 {
                    failures.push(body.to_string());
                    continue;
                }
                let api = http
                    .get(format!("{base}/api/machines"))
                    .bearer_auth(body["access_token"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap();
                if api.status() != 200 {
                    failures.push(api.text().await.unwrap());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (calls, failures)
        })
    };

    // A second secret: both work.
    let added = cli_json(
        &server,
        &["app", "secret", "add", "Playbook", "--expires", "90d"],
    )
    .await;
    let second = added["clientSecret"].as_str().unwrap().to_string();
    let second_id = added["secretId"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    for secret in [&first, &second] {
        access_token(&client_credentials(&server, &client_id, secret).await);
    }
    let shown = cli_json(&server, &["app", "show", &client_id]).await;
    let ids: Vec<&str> = shown["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str(), second_id.as_str()]);
    assert_eq!(shown["secrets"][1]["hint"], &second[..3]);
    assert!(!shown.to_string().contains(&second));

    // The playbook switches; then the first secret is removed.
    *current.lock().unwrap() = second.clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = cli(&server, &["app", "secret", "remove", "Playbook", &first_id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_refused(
        &client_credentials(&server, &client_id, &first).await,
        401,
        "invalid_client",
        7000215,
        "AADSTS7000215: Invalid client secret provided.",
    );
    access_token(&client_credentials(&server, &client_id, &second).await);
    // Removing it again: nothing to remove, a usage error.
    let again = cli(&server, &["app", "secret", "remove", "Playbook", &first_id]).await;
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(again.stderr.contains("has no secret"), "{}", again.stderr);

    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    let (calls, failures) = playbook.await.unwrap();
    assert!(calls >= 5, "{calls} calls");
    assert!(
        failures.is_empty(),
        "failed calls during rotation: {failures:?}"
    );

    // Both changes are in the audit log, with who made them.
    let events = server.state.store.audit_events(0, 10_000).await.unwrap();
    let mine: Vec<(&str, &str)> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.subject == client_id)
        .map(|e| (e.event.as_str(), e.actor.as_str()))
        .collect();
    let names: Vec<&str> = mine.iter().map(|(e, _)| *e).collect();
    assert_eq!(names, ["AppCreated", "AppSecretAdded", "AppSecretRemoved"]);
    assert!(mine.iter().all(|(_, a)| a.starts_with("cli:")), "{mine:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_is_locked_out_within_the_bound_and_enabled_again() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with(|c| c.access = spec(), Some(clock.clone())).await;
    let public_client: App = server.app(&[]).await;
    let user = create_user(
        server.state.store.as_ref(),
        server.state.clock.as_ref(),
        &server.tenant_id,
        ANA,
        PASSWORD,
        &["g-analysts".to_string()],
    )
    .await
    .unwrap();
    let token = access_token(&password_grant(&server, &public_client.client_id, ANA).await);
    assert_eq!(machines(&server, &token).await.status, 200);
    let mut browser = Browser::new(&server.base);
    assert_eq!(browser.sign_in(ANA, PASSWORD).await.status, 303);
    assert_eq!(browser.get("/console/actions").await.status, 200);

    // Disabled with the binary.
    let out = cli(&server, &["user", "disable", "Ana@Corp.Example"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // The password grant: refused at once, with Entra's code.
    assert_refused(
        &password_grant(&server, &public_client.client_id, ANA).await,
        400,
        "invalid_grant",
        50057,
        "AADSTS50057: The user account is disabled.",
    );
    // The console session is over at once; signing in again is refused.
    let page = browser.get("/console/actions").await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(
        page.location().starts_with("/console/sign-in"),
        "{}",
        page.location()
    );
    let again = browser.sign_in(ANA, PASSWORD).await;
    assert_ne!(again.status, 303, "a disabled user opens no session");
    assert!(again.body.contains("disabled"), "{}", again.body);
    // The token: accepted until the bound, then refused.
    clock.advance(STATE_TTL - Duration::from_secs(1));
    assert_eq!(machines(&server, &token).await.status, 200);
    clock.advance(Duration::from_secs(1));
    assert_unauthorized(
        &machines(&server, &token).await,
        &format!("The token's user '{ANA}' is disabled"),
    );
    let listed = cli_json(&server, &["user", "list"]).await;
    assert_eq!(listed[0]["upn"], ANA);
    assert_eq!(listed[0]["state"], "Disabled");
    assert_eq!(listed[0]["objectId"], user.object_id.as_str());

    // Enabled: the password grant works at once, the old token within the bound.
    let out = cli(&server, &["user", "enable", ANA]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let fresh = access_token(&password_grant(&server, &public_client.client_id, ANA).await);
    assert_eq!(machines(&server, &fresh).await.status, 200);
    clock.advance(STATE_TTL);
    assert_eq!(machines(&server, &token).await.status, 200);

    // New groups reach the tokens already issued within the bound: a viewer's group
    // still reads; a group in no role reads nothing.
    let out = cli(&server, &["user", "set-groups", ANA, "--group", "g-nobody"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(machines(&server, &token).await.status, 200, "cached");
    clock.advance(STATE_TTL);
    assert_eq!(machines(&server, &token).await.status, 403);

    // A new password (from standard input): the old one stops working.
    let data = server.data_dir.display().to_string();
    let out = run_with_stdin(
        &[
            "user",
            "set-password",
            ANA,
            "--password-stdin",
            "--data-dir",
            &data,
        ],
        &[],
        "another long passphrase\n",
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("another long passphrase"));
    let old = password_grant(&server, &public_client.client_id, ANA).await;
    assert_eq!(old.status, 400, "{}", old.text);

    // Deleted: the token is refused within the bound.
    let out = cli(&server, &["user", "delete", ANA]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    clock.advance(STATE_TTL);
    assert_unauthorized(
        &machines(&server, &token).await,
        &format!("The token's user '{}' no longer exists", user.object_id),
    );
    let events: Vec<String> = server
        .state
        .store
        .audit_events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.subject == ANA)
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            "UserCreated",
            "UserDisabled",
            "UserEnabled",
            "UserGroupsChanged",
            "UserPasswordChanged",
            "UserDeleted"
        ]
    );
    server.stop().await;
}

/// Enrols `hostname` over the agent gateway with `secret` (and an enrolment key).
async fn enroll(server: &TestServer, secret: &str, hostname: &str, key: &str) -> Resp {
    Resp::read(
        server
            .http
            .post(server.url("/agent/v1/enroll"))
            .json(&json!({
                "enrollSecret": secret,
                "enrollmentKey": key,
                "hostname": hostname,
                "info": {
                    "osPlatform": "Linux",
                    "osVersion": "22.04",
                    "kernelVersion": "6.8.0",
                    "osArchitecture": "x86_64",
                    "agentVersion": "0.1.0",
                    "ipAddresses": ["10.0.0.7"],
                    "machineTags": [],
                    "capabilities": {
                        "canRestrictExecution": true,
                        "execPermissionEvents": true,
                        "filesystemMarks": false,
                        "simulated": true
                    }
                }
            }))
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn key(n: u8) -> String {
    format!("{}{n:03}", "k".repeat(40))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_with_a_revoked_expired_or_used_up_secret_is_refused() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with_clock(clock.clone()).await;
    // Made with the binary: good for two devices, for a day.
    let created = cli_json(
        &server,
        &[
            "enroll-secret",
            "create",
            "--expires",
            "1d",
            "--max-uses",
            "2",
        ],
    )
    .await;
    let secret = created["enrollSecret"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["maxUses"], 2);

    assert_eq!(
        enroll(&server, &secret, "host-1", &key(1)).await.status,
        201
    );
    assert_eq!(
        enroll(&server, &secret, "host-2", &key(2)).await.status,
        201
    );
    let used_up = enroll(&server, &secret, "host-3", &key(3)).await;
    assert_eq!(used_up.status, 401, "{}", used_up.text);
    assert_eq!(used_up.json()["error"]["code"], "Unauthorized");
    assert_eq!(
        used_up.json()["error"]["message"],
        format!(
            "The enrolment secret {id} has enrolled its maximum of 2 devices; create a new \
             one with `appfence enroll-secret create`"
        )
    );
    // A known device enrolling again with its key counts no use, even now.
    assert_eq!(
        enroll(&server, &secret, "host-1", &key(1)).await.status,
        201
    );
    let listed = cli_json(&server, &["enroll-secret", "list"]).await;
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (mine["uses"].clone(), mine["state"].clone()),
        (json!(2), json!("UsedUp"))
    );

    // Expired (the server's clock): refused, re-enrolment too.
    let open = cli_json(&server, &["enroll-secret", "create", "--expires", "1d"]).await;
    let open_secret = open["enrollSecret"].as_str().unwrap().to_string();
    assert_eq!(
        enroll(&server, &open_secret, "host-4", &key(4))
            .await
            .status,
        201
    );
    // A taken host name without its key: refused, and the use given back.
    let taken = enroll(&server, &open_secret, "host-4", &key(9)).await;
    assert_eq!(taken.status, 400, "{}", taken.text);
    let listed = cli_json(&server, &["enroll-secret", "list"]).await;
    let uses = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == open["id"])
        .unwrap()["uses"]
        .clone();
    assert_eq!(uses, json!(1));
    clock.advance(Duration::from_secs(86_400 + 60));
    let expired = enroll(&server, &open_secret, "host-5", &key(5)).await;
    assert_eq!(expired.status, 401, "{}", expired.text);
    let message = expired.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "The enrolment secret {} expired at ",
            open["id"].as_str().unwrap()
        )),
        "{message}"
    );
    assert_eq!(
        enroll(&server, &open_secret, "host-4", &key(4))
            .await
            .status,
        401
    );

    // Revoked with the binary: refused, with what to do.
    let lasting = cli_json(&server, &["enroll-secret", "create", "--expires", "never"]).await;
    let lasting_secret = lasting["enrollSecret"].as_str().unwrap().to_string();
    let lasting_id = lasting["id"].as_str().unwrap().to_string();
    assert_eq!(lasting["expires"], Value::Null);
    assert_eq!(
        enroll(&server, &lasting_secret, "host-6", &key(6))
            .await
            .status,
        201
    );
    let out = cli(&server, &["enroll-secret", "revoke", &lasting_id]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Revoked"), "{}", out.stdout);
    let revoked = enroll(&server, &lasting_secret, "host-7", &key(7)).await;
    assert_eq!(revoked.status, 401, "{}", revoked.text);
    let message = revoked.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "The enrolment secret {lasting_id} was revoked at "
        )),
        "{message}"
    );
    assert!(message.ends_with("create a new one with `appfence enroll-secret create`"));
    // `list` judges expiry by the system's clock, which this server's clock ran ahead of.
    let listed = cli_json(&server, &["enroll-secret", "list"]).await;
    let states: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["UsedUp", "Usable", "Revoked"]);
    // An unknown id: a usage error.
    let out = cli(&server, &["enroll-secret", "revoke", "no-such-id"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_commands_print_no_secret_after_creation() {
    let server = TestServer::start().await;
    let out = cli(
        &server,
        &["app", "create", "--name", "SOAR", "--role", ROLE_READ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("client secret"), "{}", out.stdout);
    assert!(out.stdout.contains("secret id"), "{}", out.stdout);
    let list = cli(&server, &["app", "list"]).await;
    assert_eq!(list.code, Some(0), "{list:?}");
    assert!(list.stdout.starts_with("CLIENT ID"), "{}", list.stdout);
    assert!(list.stdout.contains("SOAR"), "{}", list.stdout);
    assert!(list.stdout.contains("Enabled"), "{}", list.stdout);
    let show = cli(&server, &["app", "show", "soar"]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(show.stdout.contains("SECRET ID"), "{}", show.stdout);
    assert!(!show.stdout.contains("sha256"), "{}", show.stdout);
    // Two applications of one name: the client id is needed.
    cli_json(
        &server,
        &["app", "create", "--name", "SOAR", "--role", ROLE_READ],
    )
    .await;
    let ambiguous = cli(&server, &["app", "show", "SOAR"]).await;
    assert_eq!(ambiguous.code, Some(2), "{ambiguous:?}");
    assert!(
        ambiguous.stderr.contains("give the client id"),
        "{}",
        ambiguous.stderr
    );
    let unknown = cli(&server, &["app", "disable", "nope"]).await;
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    // A lifetime beyond two years is refused.
    let long = cli(
        &server,
        &[
            "app",
            "create",
            "--name",
            "X",
            "--role",
            ROLE_READ,
            "--expires",
            "800d",
        ],
    )
    .await;
    assert_eq!(long.code, Some(2), "{long:?}");
    assert!(long.stderr.contains("730 days"), "{}", long.stderr);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_commands_work_on_postgres() {
    let Some(cluster) = appfence_testkit::postgres_or_skip("lifecycle commands on PostgreSQL")
    else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_on_postgres(&url, |_| {}, Some(clock.clone())).await;
    let data = server.data_dir.display().to_string();
    let env = [("APPFENCE_DATABASE_URL", url.as_str())];
    let pg = |args: &[&str]| {
        let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        argv.extend([
            "--data-dir".into(),
            data.clone(),
            "-o".into(),
            "json".into(),
        ]);
        argv
    };
    let run_pg = |argv: Vec<String>| async move {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run(&args, &env, LIMIT).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        out.json()
    };

    let app = run_pg(pg(&[
        "app",
        "create",
        "--name",
        "PG playbook",
        "--role",
        ROLE_READ,
    ]))
    .await;
    let client_id = app["clientId"].as_str().unwrap().to_string();
    let first_id = app["secretId"].as_str().unwrap().to_string();
    let added = run_pg(pg(&[
        "app",
        "secret",
        "add",
        &client_id,
        "--expires",
        "30d",
    ]))
    .await;
    let second = added["clientSecret"].as_str().unwrap().to_string();
    run_pg(pg(&["app", "secret", "remove", &client_id, &first_id])).await;
    assert_refused(
        &client_credentials(&server, &client_id, app["clientSecret"].as_str().unwrap()).await,
        401,
        "invalid_client",
        7000215,
        "AADSTS7000215",
    );
    let token = access_token(&client_credentials(&server, &client_id, &second).await);
    assert_eq!(machines(&server, &token).await.status, 200);
    let shown = run_pg(pg(&["app", "show", "PG playbook"])).await;
    assert_eq!(shown["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(shown["secrets"][0]["id"], added["secretId"]);

    run_pg(pg(&["app", "disable", &client_id])).await;
    assert_refused(
        &client_credentials(&server, &client_id, &second).await,
        400,
        "unauthorized_client",
        7000112,
        "AADSTS7000112",
    );
    clock.advance(STATE_TTL);
    assert_unauthorized(
        &machines(&server, &token).await,
        &format!("The token's application '{client_id}' is disabled"),
    );
    let listed = run_pg(pg(&["app", "list"])).await;
    assert_eq!(listed[0]["state"], "Disabled");

    let user = run_with_stdin(
        &[
            "user",
            "create",
            "--upn",
            ANA,
            "--password-stdin",
            "--group",
            "g",
            "--data-dir",
            &data,
        ],
        &env,
        &format!("{PASSWORD}\n"),
        LIMIT,
    )
    .await;
    assert_eq!(user.code, Some(0), "{user:?}");
    let disabled = run_pg(pg(&["user", "disable", ANA])).await;
    assert_eq!(disabled["state"], "Disabled");
    let users = run_pg(pg(&["user", "list"])).await;
    assert_eq!(users[0]["state"], "Disabled");

    let secret = run_pg(pg(&["enroll-secret", "create", "--max-uses", "1"])).await;
    let revoked = run_pg(pg(&[
        "enroll-secret",
        "revoke",
        secret["id"].as_str().unwrap(),
    ]))
    .await;
    assert_eq!(revoked["changed"], true);
    let refused = enroll(
        &server,
        secret["enrollSecret"].as_str().unwrap(),
        "pg-host",
        &key(1),
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let secrets = run_pg(pg(&["enroll-secret", "list"])).await;
    assert_eq!(secrets[0]["state"], "Revoked");

    // Every change is in the database's audit log.
    let events: Vec<String> = server
        .state
        .store
        .audit_events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.event)
        // The harness's own: signing keys, and the password grant turned on.
        .filter(|e| !e.starts_with("SigningKey") && e != "PasswordGrantEnabled")
        .collect();
    assert_eq!(
        events,
        [
            "AppCreated",
            "AppSecretAdded",
            "AppSecretRemoved",
            "AppDisabled",
            "UserCreated",
            "UserDisabled",
            "EnrollSecretCreated",
            "EnrollSecretRevoked"
        ]
    );
    server.stop().await;
}
