//! The web console over real HTTP, as a browser without JavaScript would use it: sign-in
//! (with its limits), the pages, restrict and unrestrict with their comments, the live
//! stream of a device page, the allowlist, and what is refused: a viewer's forged
//! POST, a POST without the CSRF token, a session after sign-out. The browser tests
//! (`browser.rs`) drive the same pages in Chromium.

use std::time::Duration;

use appfence_server::access::{AccessSpec, RoleSpec};
use appfence_server::oauth::users::create_user;
use serde_json::json;

use crate::harness::{within, Device, TestServer};

pub(crate) const PASSWORD: &str = "a long enough passphrase";
pub(crate) const ANALYST: &str = "ana@console.test";
pub(crate) const VIEWER: &str = "vic@console.test";

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
                "g-analysts",
            ),
            role("Viewers", &["View data"], "g-viewers"),
        ],
        device_groups: vec![],
    }
}

/// A server with an analyst and a viewer, and one enrolled device.
pub(crate) async fn console_server() -> (TestServer, Device) {
    let server = analyst_server(|_| {}).await;
    add_user(&server, VIEWER, "g-viewers").await;
    let device = server.enroll("web-01.corp.local").await;
    (server, device)
}

/// A server with the console's roles and the analyst, `tweak`ed.
pub(crate) async fn analyst_server(
    tweak: impl FnOnce(&mut appfence_server::ServerConfig),
) -> TestServer {
    let server = TestServer::start_with(
        |c| {
            c.access = spec();
            tweak(c);
        },
        None,
    )
    .await;
    add_user(&server, ANALYST, "g-analysts").await;
    server
}

/// A local user with `PASSWORD`, in `group`.
pub(crate) async fn add_user(server: &TestServer, upn: &str, group: &str) {
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

/// A browser without JavaScript: keeps its cookies, never follows redirects (the tests
/// look at them).
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

pub(crate) struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Where the browser goes next: the `Location` of a redirect, or the target of a
    /// page that moves on by itself (`<meta http-equiv="refresh">`, as the sign-in
    /// answer does so that its new cookie is sent along).
    pub fn next_location(&self) -> String {
        if !self.location().is_empty() {
            return self.location().to_string();
        }
        let marker = "content=\"0;url=";
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no redirect in {} {}", self.status, self.body))
            + marker.len();
        let rest = &self.body[at..];
        rest[..rest.find('"').unwrap()].replace("&amp;", "&")
    }

    /// The value of the first hidden input named `name`.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let resp = req.send().await.expect("console request");
        for set in resp.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !set.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.read(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.read(req).await
    }

    /// Signs in; returns the answer to the form's POST.
    pub async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let form = self.get("/console/sign-in?next=%2Fconsole%2Factions").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.hidden("csrf");
        self.post(
            "/console/sign-in",
            &[
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/console/actions"),
            ],
        )
        .await
    }

    /// Follows a sign-in redirect (`location`, e.g. `/console/sign-in?next=...` from the
    /// authorization endpoint): fills the form and returns the answer to its POST,
    /// which sends the browser back to `next`.
    pub async fn sign_in_at(&mut self, location: &str, user: &str, password: &str) -> Page {
        let form = self.get(location).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let (csrf, next) = (form.hidden("csrf"), form.hidden("next"));
        let next = next.replace("&amp;", "&");
        self.post(
            "/console/sign-in",
            &[
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("next", &next),
            ],
        )
        .await
    }

    /// Approves (`"approve"`) or denies (`"deny"`) a device sign-in on the console's
    /// device page, as a person signed in here would: enter the code, then decide.
    pub async fn decide_device_code(&mut self, user_code: &str, decision: &str) -> Page {
        let page = self.get("/console/device").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page.hidden("csrf");
        let confirm = self
            .post(
                "/console/device",
                &[("csrf", &csrf), ("user_code", user_code)],
            )
            .await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        self.post(
            "/console/device",
            &[
                ("csrf", &csrf),
                ("user_code", user_code),
                ("decision", decision),
            ],
        )
        .await
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.iter().any(|(k, _)| k == name)
    }

    /// Opens a live stream; `next_event` reads it.
    pub async fn live(&self, path: &str) -> reqwest::Response {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        resp
    }
}

/// The data of the next `replace` event whose data contains `needle` (bounded wait).
pub(crate) async fn event_with(
    stream: &mut reqwest::Response,
    buffer: &mut String,
    needle: &str,
) -> String {
    within(
        Duration::from_secs(20),
        &format!("a live event with {needle}"),
        async {
            loop {
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect::<Vec<_>>()
                        .join("\n");
                    if event.contains("event: replace") && data.contains(needle) {
                        return data;
                    }
                }
                let chunk = stream
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        },
    )
    .await
}

#[tokio::test]
async fn an_analyst_signs_in_restricts_follows_the_device_live_and_signs_out() {
    let (server, device) = console_server().await;
    let mut b = Browser::new(&server.base);

    // Not signed in: every page leads to the sign-in form, keeping where to return.
    let r = b.get("/console/devices").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), "/console/sign-in?next=%2Fconsole%2Fdevices");
    let r = b.get("/").await;
    assert_eq!((r.status, r.location()), (303, "/console"));

    // A wrong password: refused in words, the name kept, no session.
    let r = b.sign_in(ANALYST, "not the password at all").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.body.contains("The user name or password is incorrect"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("value=\"{ANALYST}\"")),
        "the name stays filled in"
    );
    assert!(!b.has_cookie("appfence-session"));

    let r = b.sign_in(ANALYST, PASSWORD).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/console/actions"),
        "{}",
        r.body
    );
    let set = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("appfence-session="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");

    let r = b.get("/console/devices").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("web-01.corp.local") && r.body.contains(ANALYST),
        "{}",
        r.body
    );
    let path = format!("/console/devices/{}", device.machine_id);
    let page = b.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Restrict app execution") && page.body.contains("Not restricted"));
    let csrf = page.hidden("csrf");
    let mut live = b
        .live(&format!("/console/live/devices/{}", device.machine_id))
        .await;
    let mut buf = String::new();
    event_with(&mut live, &mut buf, "No action is open").await;

    // The comment is required; what was typed is kept when a submit fails.
    let r = b
        .post(
            &format!("{path}/restrict"),
            &[("csrf", &csrf), ("comment", "  ")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("A comment is required"), "{}", r.body);
    assert!(server.stored_actions(&server.tenant_id).await.is_empty());

    let r = b
        .post(
            &format!("{path}/restrict"),
            &[("csrf", &csrf), ("comment", "alert 1234: miner")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.location().starts_with(&path), "{}", r.location());
    let actions = server.stored_actions(&server.tenant_id).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].requestor, ANALYST,
        "the console records the user's UPN"
    );
    assert_eq!(actions[0].requestor_comment, "alert 1234: miner");
    let id = actions[0].id.clone();

    // Asked again while it is open: refused in words, the comment kept.
    let r = b
        .post(
            &format!("{path}/restrict"),
            &[("csrf", &csrf), ("comment", "again please")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("Action is already in progress"),
        "{}",
        r.body
    );
    assert!(r.body.contains("again please"));
    assert_eq!(server.stored_actions(&server.tenant_id).await.len(), 1);

    // The device works; the page's stream follows it without a reload.
    event_with(&mut live, &mut buf, "Pending").await;
    device.ack(&id).await;
    event_with(&mut live, &mut buf, "InProgress").await;
    device.report(&id, "Succeeded").await;
    let data = event_with(&mut live, &mut buf, "Succeeded").await;
    assert!(data.contains("alert 1234: miner"), "{data}");
    device
        .heartbeat(json!({ "restricted": true, "since": "2026-12-07T10:00:00Z", "appliedActionId": id, "mode": "enforce", "coverage": ["/"] }))
        .await;
    event_with(&mut live, &mut buf, "Restricted").await;
    // The devices page finds it among the restricted ones only.
    assert!(b
        .get("/console/devices?restricted=yes")
        .await
        .body
        .contains("web-01.corp.local"));
    assert!(!b
        .get("/console/devices?restricted=no")
        .await
        .body
        .contains("web-01.corp.local"));

    // Without the CSRF token: refused, nothing created.
    let r = b
        .post(&format!("{path}/unrestrict"), &[("comment", "clean")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let r = b
        .post(
            &format!("{path}/unrestrict"),
            &[("csrf", "0".repeat(64).as_str()), ("comment", "clean")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(server.stored_actions(&server.tenant_id).await.len(), 1);

    let r = b
        .post(
            &format!("{path}/unrestrict"),
            &[("csrf", &csrf), ("comment", "clean")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let center = b.get("/console/actions?type=UnrestrictCodeExecution").await;
    assert!(
        center.body.contains("Remove app restriction") && !center.body.contains("alert 1234"),
        "{}",
        center.body
    );

    // Signing out ends the session on the server: the old cookie opens nothing.
    let stolen = b.cookies.clone();
    let r = b.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/console/sign-in?signed_out=1")
    );
    let mut replay = Browser::new(&server.base);
    replay.cookies = stolen;
    let r = replay.get("/console/devices").await;
    assert_eq!(r.status, 303, "a signed-out session is refused");
}

#[tokio::test]
async fn a_viewer_sees_no_controls_and_a_forged_post_is_refused() {
    let (server, device) = console_server().await;
    let mut b = Browser::new(&server.base);
    assert_eq!(b.sign_in(VIEWER, PASSWORD).await.status, 303);
    let path = format!("/console/devices/{}", device.machine_id);
    let page = b.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("web-01.corp.local"));
    assert!(
        !page.body.contains("/restrict\""),
        "no restrict form for a viewer"
    );
    assert!(!page.body.contains("Remove app restriction"));
    let csrf = page.hidden("csrf");
    // The form a viewer never saw, forged with the viewer's own valid token.
    let r = b
        .post(
            &format!("{path}/restrict"),
            &[("csrf", &csrf), ("comment", "forged")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not allowed"), "{}", r.body);
    assert!(server.stored_actions(&server.tenant_id).await.is_empty());
    // No allowlist changes either.
    let r = b
        .post(
            "/console/allowlist",
            &[
                ("csrf", &csrf),
                ("sha256", &"a".repeat(64)),
                ("title", "t"),
                ("description", "d"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test]
async fn a_denial_becomes_an_allowlist_entry_from_the_device_page() {
    let (server, device) = console_server().await;
    let sha = "ab".repeat(32);
    let r = device
        .post_events(&json!({ "events": [{
            "time": "2026-12-07T10:00:00Z", "path": "/opt/tool/bin/tool", "sha256": sha,
            "pid": 77, "uid": 1000, "parent": "/usr/bin/bash", "kind": "exec", "monitor": false
        }, {
            "time": "2026-12-07T10:00:01Z", "path": "/tmp/miner", "sha256": "cd".repeat(32),
            "pid": 78, "kind": "exec", "monitor": false,
            "rule": "blocked", "indicatorId": "41", "alert": true
        }]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut b = Browser::new(&server.base);
    assert_eq!(b.sign_in(ANALYST, PASSWORD).await.status, 303);
    let page = b
        .get(&format!("/console/devices/{}", device.machine_id))
        .await;
    assert!(page.body.contains("/opt/tool/bin/tool") && page.body.contains(&sha));
    // What a block indicator denied says so, with its alert.
    assert!(
        page.body.contains("Blocked by an indicator"),
        "{}",
        page.body
    );
    assert!(page.body.contains(">Alert<"), "{}", page.body);
    let events = server
        .api(&["Machine.Read.All"])
        .await
        .get(&format!("/api/machines/{}/events", device.machine_id))
        .await;
    assert_eq!(
        events.json()["value"][0]["rule"],
        "blocked",
        "{}",
        events.text
    );
    assert_eq!(events.json()["value"][0]["indicatorId"], "41");
    assert_eq!(
        events.json()["value"][1].get("rule"),
        None,
        "{}",
        events.text
    );
    let allow = format!("/console/allowlist?sha256={sha}&amp;title=Allow+tool");
    assert!(page.body.contains(&allow), "{}", page.body);

    let form = b
        .get(&format!(
            "/console/allowlist?sha256={sha}&title=Allow%20tool"
        ))
        .await;
    assert!(
        form.body.contains(&format!("value=\"{sha}\"")),
        "pre-filled"
    );
    let csrf = form.hidden("csrf");
    // Bad input: refused in words, everything typed kept.
    let r = b
        .post(
            "/console/allowlist",
            &[
                ("csrf", &csrf),
                ("sha256", "xyz"),
                ("title", "Allow tool"),
                ("description", "vendor tool"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("vendor tool") && r.body.contains("value=\"xyz\""));
    let r = b
        .post(
            "/console/allowlist",
            &[
                ("csrf", &csrf),
                ("sha256", &sha),
                ("title", "Allow tool"),
                ("description", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("The description is required"), "{}", r.body);

    let r = b
        .post(
            "/console/allowlist",
            &[
                ("csrf", &csrf),
                ("sha256", &sha),
                ("title", "Allow tool"),
                ("description", "vendor tool"),
                ("expires", "2099-01-31"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (303, "/console/allowlist?done=added"),
        "{}",
        r.body
    );
    assert_eq!(device.allowlist().await["sha256"], json!([sha]));
    let list = b.get("/console/allowlist").await;
    assert!(
        list.body.contains("Allow tool")
            && list.body.contains("2099-01-31 00:00:00 UTC")
            && list.body.contains(ANALYST),
        "{}",
        list.body
    );
    let marker = "action=\"/console/allowlist/";
    let at = list.body.find(marker).unwrap() + marker.len();
    let id: String = list.body[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let r = b
        .post(
            &format!("/console/allowlist/{id}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(device.allowlist().await["sha256"], json!([]));
}

#[tokio::test]
async fn console_answers_are_locked_down_and_assets_cached() {
    let (server, _device) = console_server().await;
    let mut b = Browser::new(&server.base);
    let page = b.get("/console/sign-in").await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["referrer-policy"], "same-origin");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(!page.body.contains("<script>"), "no inline script");
    for ext in ["css", "js"] {
        let marker = "/console/assets/console.";
        let at = page.body.find(&format!("{marker}")).unwrap();
        let _ = at;
        let href = page
            .body
            .match_indices(marker)
            .map(|(i, _)| &page.body[i..i + page.body[i..].find('"').unwrap()])
            .find(|h| h.ends_with(ext))
            .unwrap()
            .to_string();
        let asset = b.get(&href).await;
        assert_eq!(asset.status, 200);
        assert_eq!(
            asset.headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
    let missing = b.get("/console/assets/console.000000000000.css").await;
    assert_eq!(missing.status, 404);
    assert!(missing.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // A page of someone else's site as "next" is not followed.
    let r = b
        .get("/console/sign-in?next=https%3A%2F%2Fevil.example%2F")
        .await;
    assert!(!r.body.contains("evil.example"));
}

#[tokio::test]
async fn failed_console_sign_ins_lock_the_account_like_the_token_endpoint() {
    let server = analyst_server(|c| c.sign_in_throttle.account_failures = 3).await;
    let mut b = Browser::new(&server.base);
    for _ in 0..3 {
        b.sign_in(ANALYST, "wrong wrong wrong").await;
    }
    let r = b.sign_in(ANALYST, PASSWORD).await;
    assert_eq!(
        r.status, 429,
        "even the right password waits out the lockout: {}",
        r.body
    );
    assert!(r.body.contains("The account is locked"), "{}", r.body);
    assert!(!b.has_cookie("appfence-session"));
    // Without the form's cookie the POST is refused (login CSRF).
    let mut other = Browser::new(&server.base);
    let r = other
        .post(
            "/console/sign-in",
            &[("username", ANALYST), ("password", PASSWORD), ("csrf", "x")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test]
async fn a_session_opened_on_one_replica_works_and_ends_on_another() {
    let (a, device) = console_server().await;
    let b_server = a.replica(|c| c.access = spec()).await;
    let mut on_a = Browser::new(&a.base);
    assert_eq!(on_a.sign_in(ANALYST, PASSWORD).await.status, 303);
    let mut on_b = Browser::new(&b_server.base);
    on_b.cookies = on_a.cookies.clone();
    let page = on_b
        .get(&format!("/console/devices/{}", device.machine_id))
        .await;
    assert_eq!(page.status, 200, "the other replica knows the session");
    let csrf = page.hidden("csrf");
    let r = on_b.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        on_a.get("/console/devices").await.status,
        303,
        "signed out everywhere"
    );
}

#[tokio::test]
async fn an_open_live_view_does_not_hold_up_a_shutdown() {
    let (server, device) = console_server().await;
    let mut b = Browser::new(&server.base);
    assert_eq!(b.sign_in(ANALYST, PASSWORD).await.status, 303);
    let mut live = b
        .live(&format!("/console/live/devices/{}", device.machine_id))
        .await;
    let mut buf = String::new();
    event_with(&mut live, &mut buf, "No action is open").await;
    let mut center = b.live("/console/live/actions").await;
    let mut buf2 = String::new();
    event_with(&mut center, &mut buf2, "action-rows").await;
    within(
        Duration::from_secs(20),
        "a graceful stop with live views open",
        server.stop(),
    )
    .await;
    // The streams ended with the server.
    within(Duration::from_secs(10), "the stream's end", async {
        while let Ok(Some(_)) = live.chunk().await {}
    })
    .await;
}

#[tokio::test]
async fn page_views_count_against_the_rate_limit_and_live_views_are_bounded_per_session() {
    let server = analyst_server(|c| {
        c.rate_limits = appfence_core::ratelimit::RateLimitPolicy {
            per_minute: 3,
            per_hour: 100,
        }
    })
    .await;
    let mut b = Browser::new(&server.base);
    assert_eq!(b.sign_in(ANALYST, PASSWORD).await.status, 303);
    for _ in 0..3 {
        assert_eq!(b.get("/console/devices").await.status, 200);
    }
    let r = b.get("/console/devices").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.body.contains("Too many requests of this kind"),
        "{}",
        r.body
    );
    // Another page reads another API, with its own quota.
    assert_eq!(b.get("/console/actions").await.status, 200);

    let mut open = Vec::new();
    for _ in 0..appfence_server::console::LIVE_STREAMS_PER_SESSION {
        open.push(b.live("/console/live/actions").await);
    }
    let refused = b
        .http
        .get(format!("{}/console/live/actions", server.base))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        503,
        "one session cannot take every live stream"
    );
    drop(open);
    // Given back when the streams end.
    within(Duration::from_secs(20), "a live slot freed", async {
        loop {
            let r = b
                .http
                .get(format!("{}/console/live/actions", server.base))
                .header("cookie", b.cookie_header())
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_user_sees_only_the_devices_of_their_device_groups() {
    let server = analyst_server(|c| {
        c.access.device_groups = vec![appfence_server::access::DeviceGroupSpec {
            line: None,
            name: "Quarantine".into(),
            rank: 1,
            id: None,
            rule: appfence_core::rbac::DeviceRule::Tag("quarantine".into()),
            user_groups: vec!["g-quarantine".into()],
            tenant: None,
        }];
    })
    .await;
    let open = server.enroll("open-01.corp.local").await;
    let quarantined = server
        .enroll_with(
            &server.tenant_id.clone(),
            "isolated-01.corp.local",
            crate::harness::DeviceOpts {
                tags: vec!["quarantine".into()],
                ..Default::default()
            },
        )
        .await;
    let mut b = Browser::new(&server.base);
    assert_eq!(b.sign_in(ANALYST, PASSWORD).await.status, 303);
    let list = b.get("/console/devices").await;
    assert!(list.body.contains("open-01.corp.local"), "{}", list.body);
    assert!(
        !list.body.contains("isolated-01"),
        "another group's device is not listed"
    );
    assert!(list.body.contains("1 device<"), "{}", list.body);
    let page = b
        .get(&format!("/console/devices/{}", open.machine_id))
        .await;
    let csrf = page.hidden("csrf");
    let path = format!("/console/devices/{}", quarantined.machine_id);
    let r = b.get(&path).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("device group"), "{}", r.body);
    let r = b
        .post(
            &format!("{path}/restrict"),
            &[("csrf", &csrf), ("comment", "not mine")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(server.stored_actions(&server.tenant_id).await.is_empty());
    let live = b
        .http
        .get(format!(
            "{}/console/live/devices/{}",
            server.base, quarantined.machine_id
        ))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 403, "no live view of it either");
}
