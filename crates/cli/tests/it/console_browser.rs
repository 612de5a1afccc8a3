//! The web console in a real browser (headless Chromium through chromedriver) against
//! the real server with demo devices, as an analyst and a viewer use it: sign-in, a
//! restriction followed to `Succeeded` without a reload, the device's enforcement state
//! changing, the denial's alert resolved, a denial allowed from the device page, the
//! restriction lifted, the action center following a playbook's action live; and what is
//! refused: a wrong password, a POST without the CSRF token, a viewer's forged POST.
//! Screenshots go to `target/browser-screenshots/` (the README's come from here).

use std::time::Duration;

use appfence_agent::{spawn_fleet, SimTimings};
use appfence_server::demo::{self, DemoInfo};
use appfence_testkit::Browser;
use tokio::sync::watch;

use crate::harness::{private_tempdir, TestServer};

/// Long enough for a busy two-core machine; the waits end as soon as the page shows it.
const WAIT: Duration = Duration::from_secs(30);

/// A server as `serve --demo` runs it: the demo tenant, application, users and roles, and
/// simulated devices that restrict (and report their denial) in about half a second.
struct Demo {
    server: TestServer,
    info: DemoInfo,
    stop_fleet: watch::Sender<bool>,
    _devices: tempfile::TempDir,
}

impl Demo {
    async fn start(devices: usize) -> Demo {
        let server = TestServer::start_with(|c| c.access.roles = demo::demo_roles(), None).await;
        let mut info = demo::provision(&server.state)
            .await
            .expect("demo provisioned");
        let (stop_fleet, stopped) = watch::channel(false);
        let dir = private_tempdir();
        let step = Duration::from_millis(300);
        spawn_fleet(
            &server.base,
            info.enroll_secret.expose(),
            devices,
            dir.path(),
            SimTimings {
                ack_delay: step,
                complete_delay: step,
                denial_when_restricted: true,
            },
            stopped,
        );
        demo::record_devices(&server.state, &mut info, devices, Duration::from_secs(60))
            .await
            .expect("demo devices enrolled");
        Demo {
            server,
            info,
            stop_fleet,
            _devices: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop_fleet.send(true);
        self.server.stop().await;
    }
}

async fn sign_in(b: &Browser, demo: &Demo, user: &str, password: &str) {
    b.goto(&demo.server.url("/console")).await;
    b.wait_for_url(|u| u.contains("/console/sign-in"), WAIT)
        .await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("form[action='/console/sign-in'] button[type=submit]")
        .await;
}

/// Marks the document, to tell later whether the page was reloaded.
async fn mark_document(b: &Browser) {
    b.execute(
        "window.appfenceTestMark = 'same document'; return true;",
        vec![],
    )
    .await;
}

async fn same_document(b: &Browser) -> bool {
    b.execute(
        "return window.appfenceTestMark === 'same document';",
        vec![],
    )
    .await
    .as_bool()
    .unwrap_or(false)
}

/// The live stream says it is connected.
async fn wait_live(b: &Browser) {
    b.wait_for("[data-live-status]", |t| t.starts_with("Live"), WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_restricts_allows_a_denied_file_and_unrestricts_in_the_browser() {
    let Some(b) = appfence_testkit::browser_or_skip("console_analyst").await else {
        return;
    };
    let demo = Demo::start(3).await;
    let analyst = demo.info.analyst.username.clone();
    let password = demo.info.analyst.password.expose().to_string();
    let machine = demo.info.machines[0].clone();

    // A wrong password: refused, in words.
    sign_in(&b, &demo, &analyst, "not the right password").await;
    b.wait_for_text(".notice.error", "The user name or password is incorrect")
        .await;
    assert!(b.cookie("appfence-session").await.is_none());
    b.screenshot("console-sign-in-refused").await;

    sign_in(&b, &demo, &analyst, &password).await;
    b.wait_for_url(|u| u.ends_with("/console/devices"), WAIT)
        .await;
    b.wait_for_text("#device-rows", "demo-linux-03.appfence.local")
        .await;
    assert_eq!(b.text_of("[data-testid=signed-in-as]").await, analyst);
    b.screenshot("devices").await;

    // Restrict, with the required comment; the page follows the device without a reload.
    b.click(&format!(
        "#device-rows a[href='/console/devices/{machine}']"
    ))
    .await;
    b.wait_for_text("h1", "demo-linux-01.appfence.local").await;
    b.fill("#restrict-comment", "Alert 1234: unknown miner")
        .await;
    b.click("#restrict").await;
    b.wait_for_text(".notice.ok", "Request sent").await;
    mark_document(&b).await;
    wait_live(&b).await;
    b.wait_for_text(
        "#device-actions tr:first-child [data-testid=action-status]",
        "Succeeded",
    )
    .await;
    b.wait_for_text("[data-testid=reported-state]", "Restricted")
        .await;
    b.wait_for_text("#device-denials", appfence_agent::simulated::DEMO_PROGRAM)
        .await;
    assert!(
        same_document(&b).await,
        "the status changed without a reload"
    );
    assert!(b
        .text_of("#device-actions")
        .await
        .contains("Alert 1234: unknown miner"));
    b.screenshot("device").await;
    b.execute(
        "document.getElementById('h-actions').scrollIntoView(); return true;",
        vec![],
    )
    .await;
    b.screenshot("device-history").await;

    // The denial raised an alert, shown on the device page and in the alerts: resolve it.
    b.wait_for_text("#device-alerts", "Untrusted program stopped")
        .await;
    b.goto(&demo.server.url("/console/alerts?device=demo-linux-01"))
        .await;
    let program = appfence_agent::simulated::DEMO_PROGRAM;
    let file = program.rsplit('/').next().unwrap();
    b.wait_for_text("#alert-rows", file).await;
    b.screenshot("alerts").await;
    b.click("#alert-rows tr:first-child a[href^='/console/alerts/']")
        .await;
    b.wait_for_text(
        "#alert-evidence",
        program.trim_end_matches(file).trim_end_matches('/'),
    )
    .await;
    assert_eq!(
        b.attr("#assigned_to", "value").await.as_deref(),
        Some(analyst.as_str())
    );
    b.select("#status", "Resolved").await;
    b.select("#classification", "TruePositive").await;
    b.select("#determination", "Malware").await;
    b.fill("#comment", "Unknown miner; device restricted").await;
    b.click("#save").await;
    b.wait_for_text(".notice.ok", "Saved").await;
    b.wait_for_text("[data-testid=alert-status]", "Resolved")
        .await;
    b.wait_for_text("#alert-comments", "Unknown miner; device restricted")
        .await;
    b.screenshot("alert").await;
    b.execute(
        "document.getElementById('h-evidence').scrollIntoView(); return true;",
        vec![],
    )
    .await;
    b.screenshot("alert-evidence").await;
    let resolved = demo
        .server
        .state
        .store
        .list_alerts(
            &demo.info.tenant_id,
            &appfence_core::rbac::DeviceScope::All,
            &Default::default(),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|a| a.status == "Resolved")
        .expect("the alert resolved");
    assert_eq!(resolved.comments[0].created_by, analyst);

    // The denied program, allowed from the device page.
    b.click("[data-testid=alert-device]").await;
    b.wait_for_text("h1", "demo-linux-01.appfence.local").await;
    b.click("#device-denials a.button").await;
    b.wait_for_url(|u| u.contains("/console/allowlist?sha256="), WAIT)
        .await;
    let sha = appfence_agent::simulated::demo_program_sha256();
    assert_eq!(
        b.attr("#sha256", "value").await.as_deref(),
        Some(sha.as_str())
    );
    b.fill("#description", "vendor updater, checked by the analyst")
        .await;
    b.click("#add").await;
    b.wait_for_text(".notice.ok", "Added").await;
    b.wait_for_text("#allowlist-rows", &sha).await;
    b.screenshot("allowlist").await;

    // A POST without its CSRF token is refused, and nothing is created.
    b.goto(&demo.server.url(&format!("/console/devices/{machine}")))
        .await;
    b.execute(
        "document.querySelector('form[action$=\"/unrestrict\"] input[name=csrf]').remove(); return true;",
        vec![],
    )
    .await;
    b.fill("#unrestrict-comment", "without a token").await;
    b.click("#unrestrict").await;
    b.wait_for_text(".notice.error", "CSRF").await;
    let unrestricts = |actions: &[appfence_core::ActionRecord]| {
        actions
            .iter()
            .filter(|a| a.action_type == appfence_proto::ActionType::UnrestrictCodeExecution)
            .count()
    };
    assert_eq!(
        unrestricts(&demo.server.stored_actions(&demo.info.tenant_id).await),
        0
    );

    // Lift the restriction.
    b.goto(&demo.server.url(&format!("/console/devices/{machine}")))
        .await;
    b.fill("#unrestrict-comment", "Device is clean").await;
    b.click("#unrestrict").await;
    b.wait_for_text(".notice.ok", "Request sent").await;
    mark_document(&b).await;
    b.wait_for_text("#device-actions tr:first-child", "Remove app restriction")
        .await;
    b.wait_for_text(
        "#device-actions tr:first-child [data-testid=action-status]",
        "Succeeded",
    )
    .await;
    b.wait_for_text("[data-testid=reported-state]", "Not restricted")
        .await;
    assert!(same_document(&b).await);

    // The action center follows an action a playbook makes through the API.
    b.goto(&demo.server.url("/console/actions")).await;
    wait_live(&b).await;
    mark_document(&b).await;
    let api = demo.server.api(&["Machine.RestrictExecution"]).await;
    let r = api
        .restrict(&demo.info.machines[1], "SOAR playbook 42")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    b.wait_for_text(
        "#action-rows tr:first-child",
        "demo-linux-02.appfence.local",
    )
    .await;
    b.wait_for_text(
        "#action-rows tr:first-child [data-testid=action-status]",
        "Succeeded",
    )
    .await;
    assert!(same_document(&b).await);
    b.screenshot("actions").await;

    b.click("header .who button").await;
    b.wait_for_text(".notice", "You are signed out").await;
    assert!(b.cookie("appfence-session").await.is_none());

    b.quit().await;
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_has_no_restrict_control_and_a_forged_post_is_refused_in_the_browser() {
    let Some(b) = appfence_testkit::browser_or_skip("console_viewer").await else {
        return;
    };
    let demo = Demo::start(1).await;
    let machine = demo.info.machines[0].clone();
    sign_in(
        &b,
        &demo,
        &demo.info.viewer.username,
        demo.info.viewer.password.expose(),
    )
    .await;
    b.wait_for_url(|u| u.ends_with("/console/devices"), WAIT)
        .await;
    b.goto(&demo.server.url(&format!("/console/devices/{machine}")))
        .await;
    b.wait_for_text("h1", "demo-linux-01.appfence.local").await;
    assert!(!b.exists("#restrict").await && !b.exists("#unrestrict").await);
    assert!(!b.source().await.contains("Restrict app execution"));

    // The form a viewer never gets, forged in the page with the session's own token.
    b.execute(
        "const f = document.createElement('form');
         f.method = 'post'; f.action = arguments[0];
         for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['comment', 'forged']]) {
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }
         document.body.appendChild(f); f.submit(); return true;",
        vec![serde_json::json!(format!("/console/devices/{machine}/restrict"))],
    )
    .await;
    b.wait_for_text("h1", "Not allowed").await;
    assert!(b.text_of(".notice.error").await.contains("not allowed"));
    assert!(demo
        .server
        .stored_actions(&demo.info.tenant_id)
        .await
        .is_empty());
    b.screenshot("viewer-forged-post-refused").await;

    b.quit().await;
    demo.stop().await;
}
