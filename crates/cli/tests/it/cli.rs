//! The `appfence` client commands, as a script would run them, against the real server
//! with simulated devices.

use std::time::Duration;

use appfence_agent::{spawn_fleet, SimTimings};
use tokio::sync::watch;

use crate::harness::{within, TestServer, ALL_ROLES};
use crate::process::run;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_against_the_real_server() {
    let server = TestServer::start().await;
    let app = server.app(ALL_ROLES).await;
    let api = server.api_for(&app).await;
    let secret = server.enroll_secret(&server.tenant_id).await;
    let fleet_dir = crate::harness::private_tempdir();
    let (stop, stop_rx) = watch::channel(false);
    let timings = SimTimings {
        denial_when_restricted: false,
        ack_delay: Duration::from_millis(50),
        complete_delay: Duration::from_millis(50),
    };
    let fleet = spawn_fleet(&server.base, &secret, 2, fleet_dir.path(), timings, stop_rx);
    let env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", app.secret.as_str()),
    ];

    // The fleet enrols; then `machines list --output json` shows both, as the wire form.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api.get("/api/machines").await.json()["value"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet did not enrol"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = run(&["machines", "list", "--output", "json"], &env, LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let list = out.json();
    let mut names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["computerDnsName"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "demo-linux-01.appfence.local",
            "demo-linux-02.appfence.local"
        ]
    );
    assert!(list["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("#Machines"));
    let host = "demo-linux-01.appfence.local";

    // Table output names the hosts too.
    let out = run(&["machines", "list"], &env, LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(host), "{}", out.stdout);

    // `restrict --wait` returns once the device has done it: exit 0, status Succeeded.
    let out = run(
        &[
            "restrict",
            host,
            "--comment",
            "alert 1234",
            "--wait",
            "--timeout",
            "30s",
            "--poll-interval",
            "50ms",
            "-o",
            "json",
        ],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let action = out.json();
    assert_eq!(action["status"], "Succeeded", "{action}");
    assert_eq!(action["type"], "RestrictCodeExecution");
    assert_eq!(action["requestorComment"], "alert 1234");
    assert_eq!(action["computerDnsName"], host);
    let id = action["id"].as_str().unwrap().to_string();
    assert_eq!(api.action(&id).await["status"], "Succeeded");

    // `actions list` and `actions get`.
    let out = run(&["actions", "list", "-o", "json"], &env, LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let ids: Vec<String> = out.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&id));
    let out = run(
        &[
            "actions",
            "list",
            "--filter",
            "status eq 'Pending'",
            "-o",
            "json",
        ],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json()["value"], serde_json::json!([]));
    let out = run(&["actions", "get", &id, "-o", "json"], &env, LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let got = out.json();
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["status"], "Succeeded");
    let out = run(&["actions", "get", &id], &env, LIMIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("Succeeded"),
        "{}",
        out.stdout
    );

    // Cancelling a final action fails: non-zero exit, the error code on stderr.
    let out = run(
        &["actions", "cancel", &id, "--comment", "too late"],
        &env,
        LIMIT,
    )
    .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("BadRequest"), "{}", out.stderr);
    assert_eq!(api.action(&id).await["status"], "Succeeded", "unchanged");

    // A duplicate: the first (no wait) is accepted, the second refused with the code.
    let out = run(
        &["unrestrict", host, "--comment", "clean", "-o", "json"],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let unrestrict_id = out.json()["id"].as_str().unwrap().to_string();
    let dup = run(&["restrict", host, "--comment", "again"], &env, LIMIT).await;
    // The simulated device may already have finished the unrestrict (50 ms): then the
    // restrict is legitimately accepted.
    let first_final = api.action(&unrestrict_id).await;
    if dup.code == Some(0) {
        assert_eq!(first_final["status"], "Succeeded", "{dup:?}");
    } else {
        assert!(dup.stderr.contains("ActiveRequestAlreadyExists"), "{dup:?}");
        assert!(
            dup.stderr.contains("Action is already in progress"),
            "{dup:?}"
        );
    }

    // Bad credentials: a clear error, non-zero exit.
    let bad_env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", "wrong"),
    ];
    let out = run(&["machines", "list"], &bad_env, LIMIT).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("invalid_client"), "{}", out.stderr);

    stop.send(true).unwrap();
    for t in fleet {
        within(Duration::from_secs(20), "fleet shutdown", t)
            .await
            .unwrap()
            .unwrap();
    }
    server.stop().await;
}
