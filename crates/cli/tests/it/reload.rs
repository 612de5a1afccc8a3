//! The access settings of a running `appfence serve`, as an operator changes them: a
//! user created with `appfence user create` gets a token with the password grant, an
//! external issuer's user token is accepted, and `kill -HUP` applies a new config file
//! or, when the file is broken, refuses it with the line and keeps the old settings.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::http_client;
use crate::idp::{sign, Idp, TestKey};
use crate::process::{command, free_port, run, run_with_stdin, ChildGuard};
use crate::wire::Resp;

const LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple";

fn config(idp: &Idp, viewer_role: &str) -> String {
    format!(
        r#"# appfence test config
[[auth.issuers]]
issuer = "{}"
audiences = ["api://appfence"]

{viewer_role}
[[device_groups]]
name = "Servers"
rank = 1
match = {{ name_prefix = "srv-" }}
user_groups = ["g-admins"]
"#,
        idp.issuer
    )
}

const VIEWER_ROLE: &str = r#"[[rbac.roles]]
name = "Viewer"
permissions = ["View data"]
user_groups = ["g-viewers"]
"#;

/// A role with an unknown permission; its entry starts at line 6 of the file.
const BROKEN_ROLE: &str = r#"[[rbac.roles]]
name = "Viewer"
permissions = ["View data", "Root"]
user_groups = ["g-viewers"]
"#;

fn start(config: &Path, data: &Path, logs: &Path, port: u16) -> ChildGuard {
    let listen = format!("127.0.0.1:{port}");
    let cmd = command(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("APPFENCE_LOG_LEVEL", "info")],
    );
    let mut child = ChildGuard::spawn(cmd, logs, "serve");
    let deadline = Instant::now() + LIMIT;
    while !child.stdout_text().contains("Press Ctrl-C to stop.") {
        if let Some(status) = child.exited() {
            panic!("serve exited with {status}\n{}", child.stderr_text());
        }
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

async fn list_status(http: &reqwest::Client, base: &str, token: &str) -> Resp {
    let r = http
        .get(format!("{base}/api/machines"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    Resp::read(r).await
}

/// Polls until listing machines answers `status` (a reload is applied asynchronously).
async fn wait_for_status(http: &reqwest::Client, base: &str, token: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = list_status(http, base, token).await;
        if r.status == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {status}, still {}: {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server's log holds `needle` `count` times.
async fn wait_for_log(child: &ChildGuard, needle: &str, count: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = child.stderr_text();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tokens_and_sighup_reloads_good_and_bad() {
    let idp = Idp::start(&[TestKey::Ec]).await;
    let dir = crate::harness::private_tempdir();
    let data = dir.path().join("data");
    let cfg = dir.path().join("appfence.toml");
    std::fs::write(&cfg, config(&idp, VIEWER_ROLE)).unwrap();
    // appfence refuses a config file other users can read.
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let data_arg = data.to_str().unwrap().to_string();

    // An application (a public client for the password grant) and a user, created
    // offline on the data directory.
    let app = run(
        &[
            "app",
            "create",
            "--name",
            "Portal",
            "--role",
            "Machine.Read.All",
            "--data-dir",
            &data_arg,
            "--output",
            "json",
        ],
        &[],
        LIMIT,
    )
    .await;
    assert_eq!(app.code, Some(0), "{app:?}");
    let app = app.json();
    let user = run_with_stdin(
        &[
            "user",
            "create",
            "--upn",
            "Vera@Corp.Example",
            "--password-stdin",
            "--group",
            "g-viewers",
            "--data-dir",
            &data_arg,
            "--output",
            "json",
        ],
        &[],
        &format!("{PASSWORD}\n"),
        LIMIT,
    )
    .await;
    assert_eq!(user.code, Some(0), "{user:?}");
    assert!(
        !user.stdout.contains(PASSWORD),
        "the password is never printed"
    );
    let user = user.json();
    assert_eq!(user["upn"], "vera@corp.example");
    assert_eq!(user["groups"], serde_json::json!(["g-viewers"]));
    // A short password is refused, as a usage error.
    let short = run_with_stdin(
        &[
            "user",
            "create",
            "--upn",
            "x@corp.example",
            "--password-stdin",
            "--group",
            "g",
            "--data-dir",
            &data_arg,
        ],
        &[],
        "short\n",
        LIMIT,
    )
    .await;
    assert_eq!(short.code, Some(2), "{short:?}");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (c, d, l) = (cfg.clone(), data.clone(), dir.path().to_path_buf());
    let child = tokio::task::spawn_blocking(move || start(&c, &d, &l, port))
        .await
        .unwrap();
    let http = http_client();

    // The password grant, as MDE's user-context documentation shows it (v1, public client).
    let tenant = app["tenantId"].as_str().unwrap();
    let password_grant = || {
        http.post(format!("{base}/{tenant}/oauth2/token"))
            .form(&[
                ("resource", "https://api.securitycenter.microsoft.com"),
                ("client_id", app["clientId"].as_str().unwrap()),
                ("grant_type", "password"),
                ("username", "vera@corp.example"),
                ("password", PASSWORD),
            ])
            .send()
    };
    // A new tenant refuses it until an administrator turns it on; the running server
    // follows the switch at once.
    let off = Resp::read(password_grant().await.unwrap()).await;
    assert_eq!(off.status, 400, "{}", off.text);
    assert_eq!(off.json()["error"], "unsupported_grant_type");
    let shown = run(
        &["tenant", "show", "--data-dir", &data_arg, "-o", "json"],
        &[],
        LIMIT,
    )
    .await;
    assert_eq!(shown.code, Some(0), "{shown:?}");
    assert_eq!(shown.json()["passwordGrant"], false);
    let set = run(
        &[
            "tenant",
            "set",
            "--password-grant",
            "on",
            "--data-dir",
            &data_arg,
            "-o",
            "json",
        ],
        &[],
        LIMIT,
    )
    .await;
    assert_eq!(set.code, Some(0), "{set:?}");
    assert_eq!(set.json()["passwordGrant"], true);
    assert_eq!(set.json()["id"], tenant);
    let r = Resp::read(password_grant().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let local = r.json()["access_token"].as_str().unwrap().to_string();
    let wrong = http
        .post(format!("{base}/{tenant}/oauth2/token"))
        .form(&[
            ("resource", "https://api.securitycenter.microsoft.com"),
            ("client_id", app["clientId"].as_str().unwrap()),
            ("grant_type", "password"),
            ("username", "vera@corp.example"),
            ("password", "not the password at all"),
        ])
        .send()
        .await
        .unwrap();
    let wrong = Resp::read(wrong).await;
    assert_eq!(wrong.status, 400, "{}", wrong.text);
    assert_eq!(wrong.json()["error"], "invalid_grant");

    // An external issuer's user token in the same group.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let external = sign(
        TestKey::Ec,
        &idp.user_claims(now, "erin@corp.example", "Machine.Read", &["g-viewers"]),
    );
    for token in [&local, &external] {
        let r = list_status(&http, &base, token).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Reload without the role: both users lose "View data".
    std::fs::write(&cfg, config(&idp, "")).unwrap();
    child.signal("HUP");
    wait_for_log(&child, "configuration reloaded", 1).await;
    for token in [&local, &external] {
        let r = list_status(&http, &base, token).await;
        let e = r.assert_error(403, "Forbidden");
        assert_eq!(
            e.message,
            "Missing user permission. API required role permission: View data"
        );
    }

    // A broken file (an unknown permission in the entry at line 6) is refused with its line; the
    // settings in force stay, so the role does not come back.
    std::fs::write(&cfg, config(&idp, BROKEN_ROLE)).unwrap();
    child.signal("HUP");
    let log = wait_for_log(&child, "configuration reload refused", 1).await;
    assert!(
        log.contains("line 6: role 'Viewer': unknown permission 'Root'"),
        "{log}"
    );
    list_status(&http, &base, &local)
        .await
        .assert_error(403, "Forbidden");
    // So is a file that is not TOML.
    std::fs::write(&cfg, "[[rbac.roles]\nname = ").unwrap();
    child.signal("HUP");
    let log = wait_for_log(&child, "configuration reload refused", 2).await;
    assert!(log.contains("line 1"), "{log}");

    // Fixed: the role is back.
    std::fs::write(&cfg, config(&idp, VIEWER_ROLE)).unwrap();
    child.signal("HUP");
    wait_for_log(&child, "configuration reloaded", 2).await;
    wait_for_status(&http, &base, &local, 200).await;
    wait_for_status(&http, &base, &external, 200).await;

    child.terminate();
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
}

/// SIGHUP applies `agent_mode` and the rate limits without a restart (devices hear of
/// the mode at once); a file that does not validate changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_agent_mode_and_the_rate_limits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::harness::private_tempdir();
    let cfg = dir.path().join("appfence.toml");
    let write = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write("agent_mode = \"enforce\"\n[rate_limits]\nper_minute = 5\nper_hour = 1000\n");
    let port = free_port();
    let (c, d) = (
        cfg.display().to_string(),
        dir.path().join("data").display().to_string(),
    );
    let l = format!("127.0.0.1:{port}");
    let logs = dir.path().to_path_buf();
    let child = tokio::task::block_in_place(|| {
        crate::process::start_serve(
            &[
                "--demo",
                "--demo-devices",
                "1",
                "--demo-step-delay",
                "0s",
                "--config",
                &c,
                "--listen",
                &l,
                "--data-dir",
                &d,
            ],
            &[("APPFENCE_LOG_LEVEL", "info")],
            &logs,
            "serve",
            LIMIT,
        )
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    let demo = crate::demo::read_demo(&dir.path().join("data"));
    let token = crate::demo::token(&http, &demo).await;
    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move { Resp::read(http.get(path).bearer_auth(token).send().await.unwrap()).await }
    };
    let machines = format!("{base}/api/machines");
    for _ in 0..5 {
        assert_eq!(get(machines.clone()).await.status, 200);
    }
    get(machines.clone())
        .await
        .assert_error(429, "TooManyRequests");

    write("agent_mode = \"monitor\"\n[rate_limits]\nper_minute = 1000\nper_hour = 1000\n");
    child.signal("HUP");
    let log = wait_for_log(&child, "configuration reloaded", 1).await;
    assert!(log.contains("agent_mode Enforce -> Monitor"), "{log}");
    assert!(
        log.contains("rate limits 5/min 1000/h -> 1000/min 1000/h"),
        "{log}"
    );
    let list = get(machines.clone()).await;
    assert_eq!(
        list.status, 200,
        "the new limit applies within the same minute: {}",
        list.text
    );
    let id = list.json()["value"][0]["id"].as_str().unwrap().to_string();
    // The device hears of the mode at once and reports it.
    let enforcement = format!("{base}/api/machines/{id}/enforcement");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let e = get(enforcement.clone()).await.json();
        assert_eq!(e["desired"]["mode"], "monitor", "{e}");
        if e["reported"]["mode"] == "monitor" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the device kept {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A value that does not validate: refused, nothing changes.
    write("agent_mode = \"maybe\"\n[rate_limits]\nper_minute = 2\nper_hour = 1000\n");
    child.signal("HUP");
    let log = wait_for_log(&child, "configuration reload refused", 1).await;
    assert!(log.contains("enforce or monitor"), "{log}");
    for _ in 0..5 {
        assert_eq!(
            get(machines.clone()).await.status,
            200,
            "the limits in force stay"
        );
    }
    assert_eq!(
        get(enforcement.clone()).await.json()["desired"]["mode"],
        "monitor"
    );
    drop(child);
}
