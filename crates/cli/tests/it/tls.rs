//! HTTPS end to end on loopback: a lab certificate from `appfence tls init`, the
//! server serving it, the CLI and an agent verifying it; the agent refusing servers it
//! must not trust; the certificate reloaded on SIGHUP under a long-poll.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use appfence_agent::{AgentConfig, SimTimings, SimulatedEnforcer};
use appfence_core::ManualClock;
use appfence_proto::agent::DeviceInfo;
use appfence_proto::Timestamp;
use appfence_tls::client::ClientTls;
use appfence_tls::server::TlsFiles;
use serde_json::{json, Value};

use crate::harness::{private_tempdir, within, TestServer, ROLE_READ, ROLE_RESTRICT};
use crate::process::{self, free_port, ChildGuard};
use crate::wire::Resp;

/// `appfence tls init --host localhost --host 127.0.0.1 --out DIR`, run as a user would.
async fn tls_init(dir: &Path) -> Value {
    let out = dir.display().to_string();
    let run = process::run(
        &[
            "--output",
            "json",
            "tls",
            "init",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
            &out,
        ],
        &[],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    run.json()
}

fn files(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// An HTTP client that trusts only `ca`.
fn trusting(ca: &Path) -> reqwest::Client {
    let tls = ClientTls {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTls::default()
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.rustls_config().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A server on 127.0.0.1 serving `tls`; its test client trusts `ca`.
async fn https_server(tls: TlsFiles, ca: &Path, clock: Option<Arc<ManualClock>>) -> TestServer {
    let mut server = TestServer::start_with(move |c| c.tls = Some(tls), clock).await;
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    server.http = trusting(ca);
    server
}

fn device_info() -> DeviceInfo {
    DeviceInfo {
        os_platform: "Linux".into(),
        os_version: "Debian 13".into(),
        kernel_version: "6.12".into(),
        os_architecture: "x86_64".into(),
        agent_version: "0.1.0".into(),
        ip_addresses: vec!["127.0.0.1".into()],
        capabilities: appfence_proto::agent::Capabilities {
            can_restrict_execution: true,
            exec_permission_events: true,
            filesystem_marks: true,
            simulated: true,
        },
        ..DeviceInfo::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_end_to_end_with_a_lab_certificate() {
    let certs = private_tempdir();
    let lab = tls_init(certs.path()).await;
    let ca = PathBuf::from(lab["caCert"].as_str().unwrap());
    let server = https_server(files(certs.path()), &ca, None).await;
    let secret = server.enroll_secret(&server.tenant_id.clone()).await;

    // A real agent (simulated enforcer) that trusts only the lab CA, pinning the key too.
    let state = private_tempdir();
    let mut config = AgentConfig::new(
        format!(
            "https://localhost:{}",
            server.base.rsplit(':').next().unwrap()
        ),
        state.path(),
        "tls-box",
        device_info(),
    );
    config.enroll_secret = Some(secret);
    config.poll_wait = Duration::from_secs(2);
    config.tls = ClientTls {
        ca_file: Some(ca.clone()),
        server_key_sha256: Some(lab["serverKeySha256"].as_str().unwrap().to_string()),
        insecure_http: false,
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(appfence_agent::run(
        config,
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
        stop_rx,
    ));
    let api = server.api(&[ROLE_RESTRICT, ROLE_READ]).await;
    let machine = within(
        Duration::from_secs(30),
        "the agent to enrol over HTTPS",
        async {
            loop {
                let r = api.get("/api/machines").await;
                if let Some(m) = r.json()["value"]
                    .as_array()
                    .and_then(|v| v.first().cloned())
                {
                    break m["id"].as_str().unwrap().to_string();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;

    // The CLI, over HTTPS with the CA file: restrict and wait, then unrestrict.
    let app = server.app(&[ROLE_RESTRICT, ROLE_READ]).await;
    let env = [
        ("APPFENCE_SERVER", server.base.clone()),
        ("APPFENCE_CA_FILE", ca.display().to_string()),
        ("APPFENCE_TENANT", server.tenant_id.clone()),
        ("APPFENCE_CLIENT_ID", app.client_id.clone()),
        ("APPFENCE_CLIENT_SECRET", app.secret.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for verb in ["restrict", "unrestrict"] {
        let run = process::run(
            &[
                "--output",
                "json",
                verb,
                &machine,
                "--comment",
                "over https",
                "--wait",
            ],
            &env,
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(run.code, Some(0), "{verb}: {run:?}");
        assert_eq!(run.json()["status"], "Succeeded", "{verb}: {run:?}");
    }
    // HTTP/2 by ALPN, for clients that offer it.
    let r = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // Without the CA the CLI refuses the server, in words.
    let no_ca: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "APPFENCE_CA_FILE")
        .collect();
    let run = process::run(&["machines", "list"], &no_ca, Duration::from_secs(30)).await;
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("signed by a CA this host does not trust"),
        "{run:?}"
    );

    stop.send(true).unwrap();
    within(Duration::from_secs(20), "the agent to stop", agent)
        .await
        .unwrap()
        .unwrap();
    server.stop().await;
}

/// A certificate for `hosts`, valid between the dates, signed by a fresh CA; written to
/// `dir` as server.pem/server.key/ca.pem.
fn certificate(dir: &Path, hosts: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> TlsFiles {
    use std::os::unix::fs::PermissionsExt;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    // A name of its own: clients find a certificate's issuer by name.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("test CA {}", dir.display()),
    );
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    ca.not_after = rcgen::date_time_ymd(until.0 + 1, until.1, until.2);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    files(dir)
}

/// What the agent's enrolment call says against `server` trusting `ca`.
async fn agent_refusal(server: &TestServer, host: &str, ca: &Path) -> String {
    let tls = ClientTls {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTls::default()
    };
    let http = appfence_agent::client::http_client(&tls).unwrap();
    let port = server.base.rsplit(':').next().unwrap();
    let e = appfence_agent::client::GatewayClient::enroll(
        &http,
        &format!("https://{host}:{port}"),
        "secret",
        "key",
        "box",
        &device_info(),
    )
    .await
    .expect_err("the agent must refuse this server");
    assert!(e.is_retryable(), "retried with backoff: {e}");
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_servers_it_must_not_trust() {
    let dir = private_tempdir();
    // A certificate for another name.
    let other = certificate(
        &dir.path().join("other"),
        &["other.example"],
        (2020, 1, 1),
        (2090, 1, 1),
    );
    let ca_other = dir.path().join("other/ca.pem");
    let server = https_server(other, &ca_other, None).await;
    let e = agent_refusal(&server, "127.0.0.1", &ca_other).await;
    assert!(e.contains("certificate is for another name"), "{e}");
    // The right CA file of another CA.
    let stranger = certificate(
        &dir.path().join("stranger"),
        &["localhost"],
        (2020, 1, 1),
        (2090, 1, 1),
    );
    let e = agent_refusal(
        &server,
        "127.0.0.1",
        &stranger.cert.with_file_name("ca.pem"),
    )
    .await;
    assert!(e.contains("signed by a CA this host does not trust"), "{e}");
    server.stop().await;

    // An expired certificate (the server, on its own clock, still serves it).
    let old = certificate(
        &dir.path().join("old"),
        &["localhost", "127.0.0.1"],
        (2020, 1, 1),
        (2021, 1, 1),
    );
    let then = Arc::new(ManualClock::new(
        Timestamp::parse("2020-06-01T00:00:00Z").unwrap(),
    ));
    let ca_old = dir.path().join("old/ca.pem");
    let server = https_server(old, &ca_old, Some(then)).await;
    let e = agent_refusal(&server, "localhost", &ca_old).await;
    assert!(e.contains("certificate has expired"), "{e}");
    server.stop().await;

    // Plain http:// to an address other than loopback: refused before anything is sent.
    let run = process::run(
        &[
            "agent",
            "--server",
            "http://192.0.2.10:8080",
            "--enroll-secret",
            "s",
            "--state-dir",
            "/nonexistent",
        ],
        &[],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("not a loopback address") && run.stderr.contains("--insecure-http"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_certificates_and_plain_http_off_loopback() {
    let dir = private_tempdir();
    let d = dir.path().display().to_string();
    let first = certificate(
        &dir.path().join("a"),
        &["localhost"],
        (2020, 1, 1),
        (2090, 1, 1),
    );
    let second = certificate(
        &dir.path().join("b"),
        &["localhost"],
        (2020, 1, 1),
        (2090, 1, 1),
    );
    let expired = certificate(
        &dir.path().join("c"),
        &["localhost"],
        (2020, 1, 1),
        (2021, 1, 1),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                first.cert.display().to_string(),
                "--tls-key".into(),
                second.key.display().to_string(),
            ],
            "does not match the certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                expired.cert.display().to_string(),
                "--tls-key".into(),
                expired.key.display().to_string(),
            ],
            "expired on 2021-01-01",
        ),
        (
            vec![
                "--tls-cert".into(),
                format!("{d}/missing.pem"),
                "--tls-key".into(),
                first.key.display().to_string(),
            ],
            "cannot read the TLS certificate",
        ),
        (
            vec!["--tls-cert".into(), first.cert.display().to_string()],
            "--tls-key",
        ),
        (
            vec!["--listen".into(), "0.0.0.0:0".into()],
            "not a loopback address",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "serve".to_string(),
            "--data-dir".into(),
            format!("{d}/data"),
        ];
        args.extend(extra);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = process::run(&argv, &[], Duration::from_secs(30)).await;
        assert_ne!(run.code, Some(0), "{argv:?}: {run:?}");
        assert!(run.stderr.contains(expected), "{argv:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_reload_on_sighup_keeps_a_long_poll() {
    let dir = private_tempdir();
    let live = dir.path().join("live");
    let first = certificate(
        &dir.path().join("first"),
        &["localhost", "127.0.0.1"],
        (2020, 1, 1),
        (2090, 1, 1),
    );
    std::fs::create_dir_all(&live).unwrap();
    let copy_pair = |from: &TlsFiles| {
        std::fs::copy(&from.cert, live.join("server.pem")).unwrap();
        std::fs::copy(&from.key, live.join("server.key")).unwrap();
    };
    copy_pair(&first);
    let port = free_port();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (l, c, k, dd) = (
        format!("127.0.0.1:{port}"),
        live.join("server.pem").display().to_string(),
        live.join("server.key").display().to_string(),
        data.display().to_string(),
    );
    let server: ChildGuard = tokio::task::block_in_place(|| {
        process::start_serve(
            &[
                "--demo",
                "--demo-devices",
                "0",
                "--listen",
                &l,
                "--data-dir",
                &dd,
                "--tls-cert",
                &c,
                "--tls-key",
                &k,
            ],
            &[],
            &logs,
            "serve",
            Duration::from_secs(60),
        )
    });
    let base = format!("https://127.0.0.1:{port}");
    let demo: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("demo.json")).unwrap()).unwrap();
    let old_client = trusting(&first.cert.with_file_name("ca.pem"));

    // A device enrols and long-polls over the first certificate's connection.
    let enrolled = Resp::read(
        old_client
            .post(format!("{base}/agent/v1/enroll"))
            .json(&json!({
                "enrollSecret": demo["enrollSecret"],
                "hostname": "poller",
                "info": serde_json::to_value(device_info()).unwrap(),
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.text);
    let machine = enrolled.json()["machineId"].as_str().unwrap().to_string();
    let credential = enrolled.json()["credential"].as_str().unwrap().to_string();
    let poll = tokio::spawn({
        let (http, url, credential) = (
            old_client.clone(),
            format!("{base}/agent/v1/commands?waitSeconds=30"),
            credential.clone(),
        );
        async move { Resp::read(http.get(url).bearer_auth(credential).send().await.unwrap()).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new pair from another CA, then SIGHUP: new connections get it.
    let second = certificate(
        &dir.path().join("second"),
        &["localhost", "127.0.0.1"],
        (2020, 1, 1),
        (2090, 1, 1),
    );
    copy_pair(&second);
    server.signal("HUP");
    let new_client = trusting(&second.cert.with_file_name("ca.pem"));
    within(Duration::from_secs(20), "the new certificate", async {
        while new_client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        server.stderr_text().contains("TLS certificate reloaded"),
        "{}",
        server.stderr_text()
    );

    // The long-poll on the old connection is answered with the command.
    let token = crate::demo::token(&new_client, &demo).await;
    let restrict = Resp::read(
        new_client
            .post(format!(
                "{base}/api/machines/{machine}/restrictCodeExecution"
            ))
            .bearer_auth(&token)
            .json(&json!({ "Comment": "during a certificate reload" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(restrict.status, 201, "{}", restrict.text);
    let polled = within(Duration::from_secs(30), "the long-poll's answer", poll)
        .await
        .unwrap();
    assert_eq!(polled.status, 200, "{}", polled.text);
    assert_eq!(
        polled.json()["commands"][0]["actionId"],
        restrict.json()["id"],
        "{}",
        polled.text
    );

    // A bad new pair (a key of another certificate): refused, the second stays.
    std::fs::copy(&first.key, live.join("server.key")).unwrap();
    server.signal("HUP");
    within(Duration::from_secs(20), "the refusal", async {
        while !server
            .stderr_text()
            .contains("TLS certificate reload refused")
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(server
        .stderr_text()
        .contains("does not match the certificate"));
    let r = new_client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(server);
}

/// Over HTTPS the console's cookies are `Secure`, and the session's carries the
/// `__Host-` prefix (whole origin, no Domain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cookies_are_secure_over_https() {
    let certs = private_tempdir();
    let lab = tls_init(certs.path()).await;
    let ca = PathBuf::from(lab["caCert"].as_str().unwrap());
    let tls = files(certs.path());
    let server = TestServer::start_with(
        move |c| {
            c.tls = Some(tls);
            c.access = crate::console::spec();
        },
        None,
    )
    .await;
    crate::console::add_user(&server, crate::console::ANALYST, "g-analysts").await;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            ClientTls {
                ca_file: Some(ca),
                ..ClientTls::default()
            }
            .rustls_config()
            .unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http
        .get(server.url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    let form_cookie = form.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(form_cookie.contains("; Secure"), "{form_cookie}");
    let pair = form_cookie.split(';').next().unwrap().to_string();
    let body = form.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let at = body.find(marker).unwrap() + marker.len();
    let csrf = &body[at..at + 64];
    let signed_in = http
        .post(server.url("/console/sign-in"))
        .header("cookie", pair)
        .form(&[
            ("username", crate::console::ANALYST),
            ("password", crate::console::PASSWORD),
            ("csrf", csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-appfence-session="))
        .expect("the session cookie has the __Host- prefix");
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly") && session.contains("Path=/"),
        "{session}"
    );
    assert!(!session.contains("Domain"), "{session}");
    server.stop().await;
}
