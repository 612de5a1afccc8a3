//! `appfence alerts list|show|update`, the real binary against the real server: alerts
//! raised from denials two enrolled devices report, filtered, shown and triaged from the
//! command line as the README documents it; and the client's machine/alert links.

use std::time::Duration;

use appfence_client::{ClientConfig, MdeClient};
use serde_json::{json, Value};

use crate::harness::{Device, TestServer, ROLE_READ};
use crate::process::{run, CliRun};

const ALERT_RW: &str = "Alert.ReadWrite.All";
const LIMIT: Duration = Duration::from_secs(60);

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A denial as the agent reports it: `path` refused, not in monitor mode, no rule.
async fn deny(device: &Device, path: &str, sha: &str, command_line: &str, server: &TestServer) {
    let event = json!({
        "time": server.state.clock.now(),
        "path": path,
        "sha256": sha,
        "pid": 4242,
        "uid": 1000,
        "parent": "/usr/bin/bash",
        "kind": "exec",
        "monitor": false,
        "commandLine": command_line,
        "user": "alice",
    });
    let r = device.post_events(&json!({ "events": [event] })).await;
    assert_eq!(r.status, 200, "events: {}", r.text);
}

fn ok(out: &CliRun) {
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// The ids of a JSON list, in order.
fn ids(list: &Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value: {list}"))
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_shown_and_updated_from_the_cli() {
    let server = TestServer::start().await;
    let app = server.app(&[ALERT_RW, ROLE_READ]).await;
    let env = [
        ("APPFENCE_SERVER", server.base.as_str()),
        ("APPFENCE_TENANT", app.tenant_id.as_str()),
        ("APPFENCE_CLIENT_ID", app.client_id.as_str()),
        ("APPFENCE_CLIENT_SECRET", app.secret.as_str()),
    ];
    let cli = |args: &'static [&'static str]| run(args, &env, LIMIT);

    // Nothing yet: an empty table and an empty collection.
    let out = cli(&["alerts", "list"]).await;
    ok(&out);
    assert_eq!(out.stdout, "No alerts.\n");
    let out = cli(&["alerts", "list", "--json"]).await;
    ok(&out);
    assert_eq!(out.json()["value"], json!([]));

    // Two devices each refuse a program: an alert each, the newer listed first.
    let web = server.enroll("web-01.corp.example").await;
    let db = server.enroll("db-02.corp.example").await;
    let (web_sha, db_sha) = (hash(0xa1), hash(0xb2));
    deny(
        &web,
        "/home/alice/Downloads/invoice.pdf.elf",
        &web_sha,
        "bash -c ./invoice.pdf.elf --quiet",
        &server,
    )
    .await;
    // alertCreationTime has 100 ns ticks; keep the two apart for --since.
    tokio::time::sleep(Duration::from_millis(20)).await;
    deny(&db, "/tmp/miner", &db_sha, "sh -c /tmp/miner", &server).await;

    let out = cli(&["alerts", "list", "--json"]).await;
    ok(&out);
    let list = out.json();
    assert!(
        list["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#Alerts"),
        "{list}"
    );
    let all = ids(&list);
    assert_eq!(all.len(), 2, "{list}");
    let (db_alert, web_alert) = (all[0].clone(), all[1].clone());
    let alerts = list["value"].as_array().unwrap();
    assert_eq!(alerts[0]["computerDnsName"], "db-02.corp.example");
    assert_eq!(alerts[1]["machineId"], json!(web.machine_id));
    assert_eq!(alerts[1]["status"], "New");
    assert_eq!(
        alerts[1]["evidence"],
        json!([]),
        "evidence only with --evidence"
    );
    let web_created = alerts[1]["alertCreationTime"].as_str().unwrap().to_string();
    let out = cli(&["alerts", "list", "--json", "--evidence"]).await;
    ok(&out);
    let expanded = out.json();
    let evidence = expanded["value"][1]["evidence"].as_array().unwrap();
    assert!(
        evidence
            .iter()
            .any(|e| e["entityType"] == "File" && e["sha256"] == json!(web_sha)),
        "{expanded}"
    );

    // The table: a header, newest first, each with its machine and file hash.
    let out = cli(&["alerts", "list"]).await;
    ok(&out);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("CREATED (UTC)"),
        "{}",
        out.stdout
    );
    for col in ["SEVERITY", "STATUS", "MACHINE", "TITLE", "SHA256"] {
        assert!(lines[0].contains(col), "{col}: {}", out.stdout);
    }
    assert!(lines[1].starts_with(&db_alert), "{}", out.stdout);
    assert!(
        lines[1].contains("db-02.corp.example") && lines[1].ends_with(&db_sha),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].starts_with(&web_alert)
            && lines[2].contains(" New ")
            && lines[2].contains("web-01.corp.example")
            && lines[2].ends_with(&web_sha),
        "{}",
        out.stdout
    );

    // Filters: the machine by name or id, the time, one page.
    for machine in [web.hostname.as_str(), web.machine_id.as_str()] {
        let out = run(
            &["alerts", "list", "--machine", machine, "--json"],
            &env,
            LIMIT,
        )
        .await;
        ok(&out);
        assert_eq!(ids(&out.json()), [web_alert.as_str()], "{machine}");
    }
    let out = run(
        &["alerts", "list", "--since", &web_created, "--json"],
        &env,
        LIMIT,
    )
    .await;
    ok(&out);
    assert_eq!(
        ids(&out.json()),
        [db_alert.as_str()],
        "created after the web alert"
    );
    let out = cli(&["alerts", "list", "--since", "1h", "--json"]).await;
    ok(&out);
    assert_eq!(ids(&out.json()).len(), 2);
    let out = cli(&[
        "alerts",
        "list",
        "--since",
        "2099-01-01T00:00:00Z",
        "--json",
    ])
    .await;
    ok(&out);
    assert_eq!(ids(&out.json()), Vec::<String>::new());
    let out = cli(&["alerts", "list", "--top", "1", "--json"]).await;
    ok(&out);
    let page = out.json();
    assert_eq!(ids(&page), [db_alert.as_str()]);
    assert!(page["@odata.nextLink"].is_string(), "{page}");
    let out = cli(&["alerts", "list", "--top", "1"]).await;
    ok(&out);
    assert!(out.stderr.contains("more results"), "{out:?}");
    let severity = alerts[0]["severity"].as_str().unwrap().to_string();
    let out = run(
        &[
            "alerts",
            "list",
            "--severity",
            &severity.to_lowercase(),
            "--json",
        ],
        &env,
        LIMIT,
    )
    .await;
    ok(&out);
    assert_eq!(ids(&out.json()).len(), 2, "{severity}");
    let other = if severity == "High" { "Low" } else { "High" };
    let out = run(
        &["alerts", "list", "--severity", other, "--json"],
        &env,
        LIMIT,
    )
    .await;
    ok(&out);
    assert_eq!(ids(&out.json()), Vec::<String>::new());

    // show: every field, the evidence, no comments yet.
    let out = run(&["alerts", "show", &web_alert], &env, LIMIT).await;
    ok(&out);
    for want in [
        format!("id                {web_alert}\n"),
        "status            New\n".into(),
        "machine           web-01.corp.example\n".into(),
        format!("machine id        {}\n", web.machine_id),
        "\nNo comments.\n".into(),
        "Evidence (".into(),
        "file       /home/alice/Downloads/invoice.pdf.elf\n".into(),
        format!("sha256     {web_sha}\n"),
        "command line".into(),
        "bash -c ./invoice.pdf.elf --quiet\n".into(),
    ] {
        assert!(out.stdout.contains(&want), "{want:?} in\n{}", out.stdout);
    }
    let out = run(&["alerts", "show", &web_alert, "--json"], &env, LIMIT).await;
    ok(&out);
    let shown = out.json();
    assert_eq!(shown["id"], json!(web_alert));
    assert!(!shown["evidence"].as_array().unwrap().is_empty(), "{shown}");

    // update one: PATCH, the alert after it printed.
    let out = run(
        &[
            "alerts",
            "update",
            &web_alert,
            "--status",
            "inprogress",
            "--assign-to",
            "secop2@contoso.com",
            "--comment",
            "looking into it",
        ],
        &env,
        LIMIT,
    )
    .await;
    ok(&out);
    for want in [
        "status            InProgress\n",
        "assigned to       secop2@contoso.com\n",
        "Comments (1):\n",
        ": looking into it\n",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in\n{}", out.stdout);
    }
    let out = cli(&["alerts", "list", "--status", "InProgress", "--json"]).await;
    ok(&out);
    assert_eq!(ids(&out.json()), [web_alert.as_str()]);
    let out = cli(&["alerts", "list", "--status", "New", "InProgress", "--json"]).await;
    ok(&out);
    assert_eq!(ids(&out.json()).len(), 2);

    // update several: one batchUpdate.
    let out = run(
        &[
            "alerts",
            "update",
            &web_alert,
            &db_alert,
            "--status",
            "Resolved",
            "--classification",
            "TruePositive",
            "--determination",
            "Malware",
        ],
        &env,
        LIMIT,
    )
    .await;
    ok(&out);
    assert_eq!(out.stdout, "2 alerts updated\n");
    let out = cli(&["alerts", "list", "--status", "Resolved", "--json"]).await;
    ok(&out);
    let resolved = out.json();
    assert_eq!(ids(&resolved).len(), 2, "{resolved}");
    for a in resolved["value"].as_array().unwrap() {
        assert_eq!(a["classification"], "TruePositive");
        assert_eq!(a["determination"], "Malware");
        assert!(a["resolvedTime"].is_string(), "{a}");
    }
    let out = run(&["alerts", "show", &web_alert, "--json"], &env, LIMIT).await;
    assert_eq!(out.json()["assignedTo"], "secop2@contoso.com", "kept");

    // Errors: the server's, and usage.
    let out = cli(&["alerts", "show", "no-such-alert"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("ResourceNotFound"), "{out:?}");
    let out = run(
        &["alerts", "update", &web_alert, "--classification", "Maybe"],
        &env,
        LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("InvalidRequestBody"), "{out:?}");
    let out = run(&["alerts", "update", &web_alert], &env, LIMIT).await;
    assert_eq!(out.code, Some(2), "nothing to change: {out:?}");
    let out = cli(&["alerts", "list", "--status", "Closed"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = cli(&["alerts", "list", "--machine", "nowhere.corp.example"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("ResourceNotFound"), "{out:?}");

    // The client's links between alerts and machines.
    let client = MdeClient::new(ClientConfig {
        server: server.base.clone(),
        tenant: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        client_secret: app.secret.clone(),
        token_url: None,
        tls: Default::default(),
    })
    .unwrap();
    let machine = client.alert_machine(&web_alert).await.unwrap();
    assert_eq!(machine.id, web.machine_id);
    let of_db = client.machine_alerts(&db.hostname).await.unwrap();
    let of_db: Vec<&str> = of_db.value.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(of_db, [db_alert.as_str()]);
}
