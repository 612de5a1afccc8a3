//! The console's alerts over real HTTP, as a browser without JavaScript would use them:
//! alerts raised from an enrolled device's denials, listed with their file and device,
//! filtered and paged; an alert's page with its evidence and comments; resolving it
//! with the form (the comment and the audit log name the user); the device page's open
//! alerts; and what is refused with nothing changed: a bad value, a viewer's forged
//! POST, a user of other device groups (not found), a POST without the CSRF token.

use appfence_core::alerts::AlertRecord;
use appfence_core::rbac::{DeviceRule, DeviceScope};
use appfence_server::access::{AccessSpec, DeviceGroupSpec, RoleSpec};

use crate::alerts::{denial, hash, send};
use appfence_server::oauth::users::create_user;

use crate::console::{Browser, PASSWORD};
use crate::harness::{Device, TestServer};

/// Investigates alerts, on every device.
const ANALYST: &str = "ana@alerts.test";
/// Sees every device, changes nothing.
const VIEWER: &str = "vic@alerts.test";
/// Investigates alerts, but not on the servers' device group.
const OUTSIDER: &str = "oscar@alerts.test";

const SRV_PROGRAM: &str = "/tmp/.cache/kworker-update";
const WEB_PROGRAM: &str = "/home/alice/Downloads/invoice.pdf.elf";

fn spec() -> AccessSpec {
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
                "Investigators",
                &["View data", "Alerts investigation"],
                "g-investigators",
            ),
            role("Viewers", &["View data"], "g-viewers"),
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
    }
}

/// A server with the three users, a web device and a server (in "Servers"), each with
/// one alert from a denial.
struct Setup {
    server: TestServer,
    web: Device,
    srv: Device,
}

impl Setup {
    async fn start() -> Setup {
        let server = TestServer::start_with(|c| c.access = spec(), None).await;
        for (upn, groups) in [
            (ANALYST, &["g-investigators", "g-server-admins"][..]),
            (VIEWER, &["g-viewers", "g-server-admins"][..]),
            (OUTSIDER, &["g-investigators"][..]),
        ] {
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
        }
        let web = server.enroll("web-01.corp.local").await;
        let srv = server.enroll("srv-db1.corp.local").await;
        let now = server.state.clock.now();
        send(&srv, vec![denial(SRV_PROGRAM, &hash(1), now)]).await;
        send(&web, vec![denial(WEB_PROGRAM, &hash(2), now)]).await;
        Setup { server, web, srv }
    }

    /// Every alert of the tenant, newest first, with evidence.
    async fn alerts(&self) -> Vec<AlertRecord> {
        let q = appfence_core::odata::Query {
            top: Some(10_000),
            expand: vec!["evidence"],
            ..Default::default()
        };
        self.server
            .state
            .store
            .list_alerts(&self.server.tenant_id, &DeviceScope::All, &q)
            .await
            .unwrap()
            .items
    }

    async fn alert_of(&self, device: &Device) -> AlertRecord {
        self.alerts()
            .await
            .into_iter()
            .find(|a| a.machine_id == device.machine_id)
            .expect("the device's alert")
    }

    async fn alert(&self, id: &str) -> AlertRecord {
        self.server
            .state
            .store
            .get_alert(&self.server.tenant_id, id, &DeviceScope::All)
            .await
            .unwrap()
            .expect("the alert")
    }

    async fn alert_updates(&self) -> Vec<appfence_core::audit::AuditEvent> {
        self.server
            .state
            .store
            .audit_events(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.event == "AlertUpdated")
            .collect()
    }

    async fn signed_in(&self, upn: &str) -> Browser {
        let mut b = Browser::new(&self.server.base);
        let r = b.sign_in(upn, PASSWORD).await;
        assert_eq!(r.status, 303, "{}", r.body);
        b
    }
}

/// A form's fields as `Browser::post` takes them.
fn post<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The rows of the alerts table (between its `<tbody>` tags).
fn rows(body: &str) -> &str {
    let start = body
        .find("<tbody id=\"alert-rows\">")
        .expect("the alerts table");
    let end = start + body[start..].find("</tbody>").unwrap();
    &body[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_page_lists_open_alerts_with_their_file_and_device_filtered_and_paged() {
    let s = Setup::start().await;
    let srv_alert = s.alert_of(&s.srv).await;
    let web_alert = s.alert_of(&s.web).await;
    let mut b = s.signed_in(ANALYST).await;

    let page = b.get("/console/alerts").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<a href=\"/console/alerts\" aria-current=\"page\">Alerts</a>"),
        "in the navigation, as the current section: {}",
        page.body
    );
    let listed = rows(&page.body);
    assert!(page.body.contains("2 alerts<"), "{}", page.body);
    for (alert, device, file, sha) in [
        (&srv_alert, &s.srv, "kworker-update", hash(1)),
        (&web_alert, &s.web, "invoice.pdf.elf", hash(2)),
    ] {
        assert!(
            listed.contains(&format!("href=\"/console/alerts/{}\"", alert.id)),
            "{listed}"
        );
        assert!(listed.contains(&format!("href=\"/console/devices/{}\"", device.machine_id)));
        assert!(listed.contains(file), "{listed}");
        assert!(
            listed.contains(&format!("title=\"{sha}\">{}…</span>", &sha[..12])),
            "the SHA-256's start, the whole of it on hover: {listed}"
        );
    }
    assert!(listed.contains("srv-db1.corp.local") && listed.contains("web-01.corp.local"));
    assert!(listed.contains("Untrusted program stopped on a restricted device"));
    assert!(listed.contains("Medium") && listed.contains("New"));
    // Newest first: the web device's denial was sent last.
    assert!(listed.find(&web_alert.id).unwrap() < listed.find(&srv_alert.id).unwrap());

    // Filters: device name prefix, severity, status.
    let only_srv = b.get("/console/alerts?device=SRV-").await;
    assert!(rows(&only_srv.body).contains(&srv_alert.id));
    assert!(!rows(&only_srv.body).contains(&web_alert.id));
    assert!(
        only_srv.body.contains("value=\"SRV-\""),
        "the filter stays filled in"
    );
    let high = b.get("/console/alerts?severity=High").await;
    assert!(
        rows(&high.body).contains("No alert matches."),
        "{}",
        high.body
    );
    let medium = b.get("/console/alerts?severity=Medium").await;
    assert!(
        rows(&medium.body).contains(&srv_alert.id) && rows(&medium.body).contains(&web_alert.id)
    );
    let resolved = b.get("/console/alerts?status=Resolved").await;
    assert!(rows(&resolved.body).contains("No alert matches."));
    let one_device = b
        .get(&format!("/console/alerts?machine={}", s.web.machine_id))
        .await;
    assert!(rows(&one_device.body).contains(&web_alert.id));
    assert!(!rows(&one_device.body).contains(&srv_alert.id));
    let bad = b.get("/console/alerts?status=Closed").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("Unknown status"), "{}", bad.body);

    // Paging: fifty to a page, newest first, the filters kept in the links.
    let now = s.server.state.clock.now();
    let many = (100..151)
        .map(|n| denial(&format!("/tmp/drop-{n}"), &hash(n), now))
        .collect();
    send(&s.web, many).await;
    assert_eq!(s.alerts().await.len(), 53);
    let first = b.get("/console/alerts?device=web").await;
    assert!(first.body.contains("52 alerts"), "{}", first.body);
    assert_eq!(rows(&first.body).matches("<tr data-alert-id=").count(), 50);
    assert!(
        first
            .body
            .contains("href=\"/console/alerts?device=web&amp;page=2\" rel=\"next\""),
        "{}",
        first.body
    );
    let second = b.get("/console/alerts?device=web&page=2").await;
    let second_rows = rows(&second.body);
    assert_eq!(second_rows.matches("<tr data-alert-id=").count(), 2);
    assert!(second_rows.contains(&web_alert.id), "the oldest last");
    assert!(!second.body.contains("rel=\"next\""));
    assert!(second.body.contains("rel=\"prev\""));

    // The device page shows its open alerts, newest first, at most ten.
    let device_page = b
        .get(&format!("/console/devices/{}", s.srv.machine_id))
        .await;
    assert_eq!(device_page.status, 200);
    assert!(device_page.body.contains("Open alerts"));
    assert!(device_page
        .body
        .contains(&format!("href=\"/console/alerts/{}\"", srv_alert.id)));
    let web_page = b
        .get(&format!("/console/devices/{}", s.web.machine_id))
        .await;
    assert_eq!(web_page.body.matches("<tr data-alert-id=").count(), 10);
    assert!(web_page.body.contains(&format!(
        "href=\"/console/alerts?machine={}\"",
        s.web.machine_id
    )));
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_reads_an_alert_and_resolves_it_with_the_form() {
    let s = Setup::start().await;
    let alert = s.alert_of(&s.srv).await;
    let path = format!("/console/alerts/{}", alert.id);
    let mut b = s.signed_in(ANALYST).await;

    let page = b.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    for expected in [
        "Untrusted program stopped on a restricted device",
        "srv-db1.corp.local is restricted to trusted programs and refused to run /tmp/.cache/kworker-update",
        "Execution",
        "ThirdPartySensors",
        "Medium",
        "Servers",
        // Evidence: the file, the process that asked, the user.
        "<tr data-entity=\"File\">",
        "kworker-update",
        "/tmp/.cache",
        &hash(1),
        "<tr data-entity=\"Process\">",
        "4242",
        "bash -c ./invoice.pdf.elf --quiet",
        "<tr data-entity=\"User\">",
        "alice",
        "Blocked",
        "No comment yet.",
    ] {
        assert!(body.contains(expected), "{expected} in {body}");
    }
    assert!(body.contains(&format!("href=\"/console/devices/{}\"", s.srv.machine_id)));
    // The form: the current values, the owner defaulting to the signed-in user.
    assert!(
        body.contains("<option value=\"New\" selected>New</option>"),
        "{body}"
    );
    assert!(
        body.contains(&format!("name=\"assigned_to\" value=\"{ANALYST}\"")),
        "{body}"
    );
    let csrf = page.hidden("csrf");

    let form = |status: &'static str, comment: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("status", status.to_string()),
            ("was_status", "New".to_string()),
            ("assigned_to", ANALYST.to_string()),
            ("was_assigned_to", String::new()),
            ("classification", "TruePositive".to_string()),
            ("was_classification", String::new()),
            ("determination", "Malware".to_string()),
            ("was_determination", String::new()),
            ("comment", comment.to_string()),
        ]
    };

    // A bad value: refused in words, what was typed kept, nothing changed.
    let mut bad = form("Resolved", "miner removed");
    bad[5].1 = "Maybe".into();
    let r = b.post(&path, &post(&bad)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not a valid classification"), "{}", r.body);
    assert!(r.body.contains("miner removed"), "the comment stays typed");
    assert_eq!(s.alert(&alert.id).await, alert, "nothing changed");
    // Nothing changed in the form: said so.
    let r = b
        .post(
            &path,
            &[
                ("csrf", csrf.as_str()),
                ("status", "New"),
                ("was_status", "New"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Nothing to save"), "{}", r.body);
    assert!(s.alert_updates().await.is_empty());

    let r = b
        .post(&path, &post(&form("Resolved", "miner removed")))
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), format!("{path}?saved=1"));
    let resolved = s.alert(&alert.id).await;
    assert_eq!(resolved.status, "Resolved");
    assert!(resolved.resolved.is_some());
    assert_eq!(resolved.assigned_to.as_deref(), Some(ANALYST));
    assert_eq!(resolved.classification.as_deref(), Some("TruePositive"));
    assert_eq!(resolved.determination.as_deref(), Some("Malware"));
    assert_eq!(resolved.comments.len(), 1);
    assert_eq!(resolved.comments[0].comment, "miner removed");
    assert_eq!(resolved.comments[0].created_by, ANALYST);
    let audit = s.alert_updates().await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, ANALYST);
    assert_eq!(audit[0].subject, alert.id);
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("status=Resolved, assignedTo=ana@alerts.test, classification=TruePositive, determination=Malware, comment added")
    );

    let page = b.get(r.location()).await;
    assert!(page.body.contains("Saved."), "{}", page.body);
    assert!(page.body.contains("miner removed") && page.body.contains(&format!("{ANALYST}: ")));
    assert!(page.body.contains("<option value=\"Resolved\" selected>"));

    // Only what the user changed is changed: a second comment alone.
    let r = b
        .post(
            &path,
            &[
                ("csrf", csrf.as_str()),
                ("status", "Resolved"),
                ("was_status", "Resolved"),
                ("assigned_to", ANALYST),
                ("was_assigned_to", ANALYST),
                ("classification", "TruePositive"),
                ("was_classification", "TruePositive"),
                ("determination", "Malware"),
                ("was_determination", "Malware"),
                ("comment", "host reimaged"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        s.alert_updates().await[1].detail.as_deref(),
        Some("comment added")
    );
    assert_eq!(s.alert(&alert.id).await.comments.len(), 2);

    // Resolved: out of the open alerts, in the resolved ones, off the device page.
    assert!(!rows(&b.get("/console/alerts").await.body).contains(&alert.id));
    assert!(rows(&b.get("/console/alerts?status=Resolved").await.body).contains(&alert.id));
    let device_page = b
        .get(&format!("/console/devices/{}", s.srv.machine_id))
        .await;
    assert!(device_page.body.contains("No open alert on this device."));
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_other_groups_and_forms_without_the_token_change_nothing() {
    let s = Setup::start().await;
    let alert = s.alert_of(&s.srv).await;
    let path = format!("/console/alerts/{}", alert.id);
    let resolve = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("status", "Resolved".to_string()),
            ("comment", "closing it".to_string()),
        ]
    };

    // A viewer reads the alert, gets no form, and a forged POST is refused.
    let mut viewer = s.signed_in(VIEWER).await;
    let page = viewer.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("kworker-update"));
    assert!(
        !page.body.contains("id=\"alert-change\""),
        "no form for a viewer"
    );
    assert!(page.body.contains("needs the"), "{}", page.body);
    let csrf = page.hidden("csrf");
    let r = viewer.post(&path, &post(&resolve(&csrf))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("not allowed") && r.body.contains("Alerts investigation"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("kworker-update"),
        "shown on the alert's page"
    );

    // A user of other device groups: the alert does not exist for them.
    let mut outsider = s.signed_in(OUTSIDER).await;
    let list = outsider.get("/console/alerts").await;
    assert!(rows(&list.body).contains(&s.alert_of(&s.web).await.id));
    assert!(!rows(&list.body).contains(&alert.id), "{}", list.body);
    let r = outsider.get(&path).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("Not found") && !r.body.contains("kworker-update"));
    let csrf = outsider.get("/console/alerts").await.hidden("csrf");
    let r = outsider.post(&path, &post(&resolve(&csrf))).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(!r.body.contains("kworker-update"));
    let r = outsider.get("/console/alerts/not'an-id").await;
    assert_eq!(r.status, 404);

    // The analyst's form without its CSRF token, or with another one.
    let mut analyst = s.signed_in(ANALYST).await;
    let r = analyst
        .post(&path, &[("status", "Resolved"), ("comment", "no token")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let forged = "0".repeat(64);
    let r = analyst.post(&path, &post(&resolve(&forged))).await;
    assert_eq!(r.status, 403, "{}", r.body);

    assert_eq!(s.alert(&alert.id).await, alert, "nothing changed");
    assert!(s.alert_updates().await.is_empty());
    s.server.stop().await;
}
