//! The `appfence` binary on PostgreSQL: the offline administration commands work on the
//! database named by `--database-url` (or `APPFENCE_DATABASE_URL`), and what they
//! create serves through a replica; a database URL that is malformed or unreachable
//! stops `serve` with an error that names the problem and never the password.

use std::time::Duration;

use serde_json::json;

use crate::harness::{private_tempdir, TestServer, MDE_AUDIENCE};
use crate::process::{run, run_with_stdin};
use crate::wire::Resp;

const LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "a long enough passphrase";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_administer_the_postgres_database() {
    let Some(cluster) = appfence_testkit::postgres_or_skip("offline commands on PostgreSQL") else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let dir = private_tempdir();
    let data = dir.path().display().to_string();
    let env = [("APPFENCE_DATABASE_URL", url.as_str())];

    let app = run(
        &[
            "app",
            "create",
            "--name",
            "Playbook",
            "--role",
            "Machine.Read.All,Machine.RestrictExecution",
            "--data-dir",
            &data,
            "-o",
            "json",
        ],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(app.code, Some(0), "{app:?}");
    let app = app.json();
    // The flag works as the variable does.
    let user = run_with_stdin(
        &[
            "user",
            "create",
            "--upn",
            "ana@corp.example",
            "--password-stdin",
            "--group",
            "g-tier2",
            "--data-dir",
            &data,
            "--database-url",
            &url,
            "-o",
            "json",
        ],
        &[],
        &format!("{PASSWORD}\n"),
        LIMIT,
    )
    .await;
    assert_eq!(user.code, Some(0), "{user:?}");
    let secret = run(
        &["enroll-secret", "create", "--data-dir", &data, "-o", "json"],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(secret.code, Some(0), "{secret:?}");
    let secret = secret.json();
    // Nothing went to a SQLite file in the data directory.
    assert!(!dir.path().join("appfence.db").exists());

    // The tenant's password-grant switch, in PostgreSQL: off for a new tenant.
    let shown = run(
        &["tenant", "show", "--data-dir", &data, "-o", "json"],
        &env,
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
            &data,
            "-o",
            "json",
        ],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(set.code, Some(0), "{set:?}");
    assert_eq!(set.json()["passwordGrant"], true);
    let bad = run(
        &[
            "tenant",
            "set",
            "--password-grant",
            "maybe",
            "--data-dir",
            &data,
        ],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("neither on nor off"), "{bad:?}");

    // A replica on that database (and the key file the commands left) serves them all.
    let server = TestServer::start_on(dir.path(), Some(&url), |_| {}, None).await;
    assert_eq!(server.tenant_id, app["tenantId"].as_str().unwrap());
    let token = Resp::read(
        server
            .http
            .post(server.url(&format!("/{}/oauth2/v2.0/token", server.tenant_id)))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app["clientId"].as_str().unwrap()),
                ("client_secret", app["clientSecret"].as_str().unwrap()),
                ("scope", &format!("{MDE_AUDIENCE}/.default")),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text);
    let enrolled = Resp::read(
        server
            .http
            .post(server.url("/agent/v1/enroll"))
            .json(&json!({
                "enrollSecret": secret["enrollSecret"],
                "hostname": "pg-box",
                "info": {
                    "osPlatform": "Linux", "osVersion": "Debian 12", "kernelVersion": "6.1.0",
                    "osArchitecture": "x86_64", "agentVersion": "0.1.0", "ipAddresses": ["10.0.0.9"],
                    "capabilities": {"canRestrictExecution": true, "execPermissionEvents": true,
                                     "filesystemMarks": true, "simulated": true}
                }
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.text);
    let api = server
        .anonymous()
        .with_token(token.json()["access_token"].as_str().unwrap());
    let machines = api.get("/api/machines").await;
    assert_eq!(machines.json()["value"][0]["computerDnsName"], "pg-box");
    let password_grant = server
        .http
        .post(server.url(&format!("/{}/oauth2/token", server.tenant_id)))
        .form(&[
            ("grant_type", "password"),
            ("client_id", app["clientId"].as_str().unwrap()),
            ("username", "ana@corp.example"),
            ("password", PASSWORD),
            ("resource", MDE_AUDIENCE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(password_grant.status(), 200);
    server.stop().await;

    // The signing key the server made is listed from the database.
    let keys = run(
        &["keys", "list", "--data-dir", &data, "-o", "json"],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(keys.code, Some(0), "{keys:?}");
    assert_eq!(
        keys.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        keys.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_database_urls_stop_serve_with_a_clear_error_and_no_password() {
    let dir = private_tempdir();
    let data = dir.path().display().to_string();
    let unused = crate::process::free_port();
    let cases = [
        (
            "mysql://root:hunter2hunter2@127.0.0.1/appfence".to_string(),
            "--database-url: mysql://root:***@127.0.0.1/appfence is not a PostgreSQL URL",
        ),
        (
            format!("postgres://appfence:hunter2hunter2@127.0.0.1:{unused}/appfence"),
            "cannot connect to the database postgres://appfence:***@127.0.0.1",
        ),
        (
            "postgres://appfence:hunter2hunter2@127.0.0.1:notaport/appfence".to_string(),
            "is not valid",
        ),
    ];
    for (url, says) in cases {
        let r = run(
            &[
                "serve",
                "--data-dir",
                &data,
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &url,
            ],
            &[],
            LIMIT,
        )
        .await;
        assert_ne!(r.code, Some(0), "{r:?}");
        assert!(r.stderr.contains(says), "{url}: {r:?}");
        assert!(
            !r.stderr.contains("hunter2hunter2"),
            "the password is never shown: {r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{r:?}");
    }
}
