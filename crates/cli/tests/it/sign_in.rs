//! The token endpoint under attack, over real HTTP: lockouts of user accounts (on an
//! injected clock, so their lengths are exact), limits per source address, client
//! secrets in the fast form, and `appfence user unlock`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use appfence_core::audit::{SIGN_IN_LOCKOUT_ENDED, SIGN_IN_LOCKOUT_STARTED};
use appfence_core::ManualClock;
use appfence_server::oauth::users::create_user;
use serde_json::Value;

use crate::harness::{App, TestServer, MDE_AUDIENCE, ROLE_READ};
use crate::process::run;
use crate::wire::Resp;

const ANA: &str = "ana@corp.example";
const PASSWORD: &str = "correct horse battery staple";

/// A client whose requests come from `source` (any 127.0.0.0/8 address is local).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn password_grant(
    server: &TestServer,
    http: &reqwest::Client,
    app: &App,
    user: &str,
    password: &str,
) -> Resp {
    Resp::read(
        http.post(server.url(&format!("/{}/oauth2/token", app.tenant_id)))
            .form(&[
                ("grant_type", "password"),
                ("client_id", app.client_id.as_str()),
                ("username", user),
                ("password", password),
                ("resource", MDE_AUDIENCE),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn client_credentials(
    server: &TestServer,
    http: &reqwest::Client,
    app: &App,
    secret: &str,
) -> Resp {
    Resp::read(
        http.post(server.url(&format!("/{}/oauth2/v2.0/token", app.tenant_id)))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", secret),
                ("scope", &format!("{MDE_AUDIENCE}/.default")),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn assert_wrong_password(r: &Resp) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(
        r.json()["error_description"],
        "The user name or password is incorrect"
    );
}

/// Locked, with Entra's code and the seconds left.
fn assert_locked(r: &Resp, seconds: u64) {
    assert_eq!(r.status, 400, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(v["error_codes"], serde_json::json!([50053]));
    let d = v["error_description"].as_str().unwrap();
    assert!(d.starts_with("AADSTS50053: The account is locked"), "{d}");
    assert!(
        d.contains(&format!("Try again in {seconds} seconds")),
        "{d}"
    );
    assert_eq!(r.header("retry-after"), Some(seconds.to_string().as_str()));
}

async fn setup(clock: Option<Arc<ManualClock>>) -> (TestServer, App) {
    let server = TestServer::start_with(|_| {}, clock).await;
    let app = server.app(&[ROLE_READ]).await;
    for (upn, group) in [(ANA, "tier2"), ("bo@corp.example", "tier2")] {
        create_user(
            server.state.store.as_ref(),
            server.state.clock.as_ref(),
            &server.tenant_id,
            upn,
            PASSWORD,
            &[group.to_string()],
        )
        .await
        .unwrap();
    }
    (server, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_wrong_passwords_lock_the_account_for_a_minute_then_two() {
    let clock = Arc::new(ManualClock::starting_now());
    let (server, app) = setup(Some(clock.clone())).await;
    let http = server.http.clone();
    let seq_before = server
        .state
        .store
        .audit_events(0, 100_000)
        .await
        .unwrap()
        .len();

    for _ in 0..9 {
        assert_wrong_password(&password_grant(&server, &http, &app, ANA, "wrong password!!").await);
    }
    // The tenth locks; from then on even the right password is refused.
    assert_locked(
        &password_grant(&server, &http, &app, ANA, "wrong password!!").await,
        60,
    );
    clock.advance(Duration::from_secs(20));
    assert_locked(
        &password_grant(&server, &http, &app, "Ana@Corp.Example", PASSWORD).await,
        40,
    );
    // Nobody else is locked: another user, and the application's own tokens.
    assert_eq!(
        password_grant(&server, &http, &app, "bo@corp.example", PASSWORD)
            .await
            .status,
        200
    );
    assert_eq!(
        client_credentials(&server, &http, &app, &app.secret)
            .await
            .status,
        200
    );

    // A minute after the lock, the right password works again.
    clock.advance(Duration::from_secs(40));
    let ok = password_grant(&server, &http, &app, ANA, PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    // The end of the lockout is in the audit log, after the sweep.
    appfence_server::sweeper::sweep_once(&server.state)
        .await
        .unwrap();
    let events: Vec<(String, String)> = server.state.store.audit_events(0, 100_000).await.unwrap()
        [seq_before..]
        .iter()
        .map(|(_, e)| (e.event.clone(), e.subject.clone()))
        .collect();
    assert_eq!(
        events,
        [
            (SIGN_IN_LOCKOUT_STARTED.to_string(), ANA.to_string()),
            (SIGN_IN_LOCKOUT_ENDED.to_string(), ANA.to_string())
        ]
    );

    // A success forgot the failures, so it takes ten more; the level is forgotten too
    // (a success in between), so the next lock is a minute again.
    for _ in 0..9 {
        assert_wrong_password(&password_grant(&server, &http, &app, ANA, "nope nope nope").await);
    }
    assert_locked(
        &password_grant(&server, &http, &app, ANA, "nope nope nope").await,
        60,
    );
    // Ten more right after it ends, without a success: two minutes.
    clock.advance(Duration::from_secs(60));
    for _ in 0..9 {
        assert_wrong_password(&password_grant(&server, &http, &app, ANA, "nope nope nope").await);
    }
    assert_locked(
        &password_grant(&server, &http, &app, ANA, "nope nope nope").await,
        120,
    );
    clock.advance(Duration::from_secs(119));
    assert_locked(
        &password_grant(&server, &http, &app, ANA, PASSWORD).await,
        1,
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        password_grant(&server, &http, &app, ANA, PASSWORD)
            .await
            .status,
        200
    );

    // An unknown user is counted like a known one: a lock tells nothing about who exists.
    for _ in 0..9 {
        assert_wrong_password(
            &password_grant(&server, &http, &app, "ghost@corp.example", "x-x-x-x-x-x").await,
        );
    }
    assert_locked(
        &password_grant(&server, &http, &app, "ghost@corp.example", "x-x-x-x-x-x").await,
        60,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_unlock_ends_a_lockout_at_once() {
    let (server, app) = setup(None).await;
    let http = server.http.clone();
    for _ in 0..10 {
        password_grant(&server, &http, &app, ANA, "wrong password!!").await;
    }
    assert_eq!(
        password_grant(&server, &http, &app, ANA, PASSWORD)
            .await
            .json()["error_codes"][0],
        50053
    );
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let unlocked = run(
        &[
            "user",
            "unlock",
            "--upn",
            "ANA@corp.example",
            "--data-dir",
            &data_dir,
        ],
        &[],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(unlocked.code, Some(0), "{unlocked:?}");
    assert!(
        unlocked.stdout.contains("Unlocked ana@corp.example"),
        "{unlocked:?}"
    );
    assert_eq!(
        password_grant(&server, &http, &app, ANA, PASSWORD)
            .await
            .status,
        200
    );
    let again = run(
        &["user", "unlock", "--upn", ANA, "--data-dir", &data_dir],
        &[],
        Duration::from_secs(30),
    )
    .await;
    assert!(again.stdout.contains("was not locked"), "{again:?}");
    let events = server.state.store.audit_events(0, 1000).await.unwrap();
    assert!(events
        .iter()
        .any(|(_, e)| e.event == "AccountUnlocked" && e.actor == "appfence user unlock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_is_throttled_and_others_are_not() {
    let clock = Arc::new(ManualClock::starting_now());
    let server = TestServer::start_with(
        |c| c.sign_in_throttle.address_failures = 5,
        Some(clock.clone()),
    )
    .await;
    let app = server.app(&[ROLE_READ]).await;
    let attacker = client_from("127.0.0.2");
    let playbook = client_from("127.0.0.1");
    for _ in 0..5 {
        let r = client_credentials(&server, &attacker, &app, "guessed-secret").await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.json()["error"], "invalid_client");
    }
    // Over the limit: refused at once, even with the right secret, until the minute ends.
    for secret in ["guessed-secret", app.secret.as_str()] {
        let r = client_credentials(&server, &attacker, &app, secret).await;
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.json()["error"], "temporarily_unavailable");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Wrong passwords from there are refused the same way, without any check.
    assert_eq!(
        password_grant(&server, &attacker, &app, "x@y", "zzzzzzzzzzzz")
            .await
            .status,
        429
    );
    // The playbook, from another address, is not affected.
    let ok = client_credentials(&server, &playbook, &app, &app.secret).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        client_credentials(&server, &attacker, &app, &app.secret)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secrets_are_stored_in_the_fast_form() {
    let server = TestServer::start().await;
    let app = server.app(&[ROLE_READ]).await;
    let secrets = server
        .state
        .store
        .app_secrets(&app.tenant_id, &app.client_id)
        .await
        .unwrap();
    assert_eq!(secrets.len(), 1);
    let stored = &secrets[0];
    assert!(
        stored.secret_hash.starts_with("sha256:"),
        "{}",
        stored.secret_hash
    );
    assert!(!stored.secret_hash.contains(&app.secret));
    let http = server.http.clone();
    assert_eq!(
        client_credentials(&server, &http, &app, &app.secret)
            .await
            .status,
        200
    );
    let wrong = client_credentials(&server, &http, &app, &format!("{}x", app.secret)).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let v: Value = wrong.json();
    assert_eq!(v["error"], "invalid_client");
}

/// Lockouts and refusals are counted on the metrics listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockouts_and_refusals_are_metrics() {
    let server = TestServer::start_with(
        |c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
        None,
    )
    .await;
    let app = server.app(&[ROLE_READ]).await;
    create_user(
        server.state.store.as_ref(),
        server.state.clock.as_ref(),
        &server.tenant_id,
        ANA,
        PASSWORD,
        &["tier2".to_string()],
    )
    .await
    .unwrap();
    let metrics_url = format!(
        "http://{}/metrics",
        server.metrics_addr.expect("metrics listen")
    );
    let scrape = || {
        let http = server.http.clone();
        let url = metrics_url.clone();
        async move {
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            let value = |name: &str| -> f64 {
                text.lines()
                    .filter(|l| l.starts_with(name))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            };
            (
                value("appfence_sign_in_lockouts_total"),
                value("appfence_token_requests_refused_total{reason=\"invalid_grant\"}"),
            )
        }
    };
    let (lockouts, refused) = scrape().await;
    let http = server.http.clone();
    for _ in 0..10 {
        password_grant(&server, &http, &app, ANA, "wrong password!!").await;
    }
    let (lockouts_after, refused_after) = scrape().await;
    // Other tests in this process count too: at least this test's.
    assert!(
        lockouts_after >= lockouts + 1.0,
        "{lockouts} -> {lockouts_after}"
    );
    assert!(
        refused_after >= refused + 9.0,
        "{refused} -> {refused_after}"
    );
}
