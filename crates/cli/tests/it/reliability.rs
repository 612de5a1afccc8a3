//! The reliability suite: the server as a process under abuse, judged by what an
//! operator sees (its RSS, whether playbooks keep working), not by timings.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::private_tempdir;
use crate::process::{free_port, start_serve};

/// Resident set size of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// 10,000 wrong client secrets and 1,000 wrong passwords, in parallel from 64 loopback
/// addresses, while a playbook (from 127.0.0.1) gets tokens and calls the API: the
/// playbook never fails, and afterwards the server's memory is back within 64 MB of
/// where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_credentials_leaves_memory_and_playbooks_alone() {
    let root = private_tempdir();
    let data = root.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = start_serve(
        &[
            "--demo",
            "--demo-devices",
            "2",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("APPFENCE_LOG_LEVEL", "warn")],
        root.path(),
        "serve",
        Duration::from_secs(90),
    );
    let pid = server.id();
    let demo: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("demo.json")).unwrap()).unwrap();
    let field = |k: &str| demo[k].as_str().unwrap().to_string();
    let (token_url, api, client_id, secret) = (
        field("tokenUrl"),
        field("apiBaseUrl"),
        field("clientId"),
        field("clientSecret"),
    );
    let v1 = token_url.replace("/v2.0/token", "/token");
    let scope = "https://api.securitycenter.microsoft.com/.default".to_string();

    // Warm up the paths the flood takes, then measure.
    let playbook_http = reqwest::Client::new();
    let good = [
        ("grant_type", "client_credentials".to_string()),
        ("client_id", client_id.clone()),
        ("client_secret", secret.clone()),
        ("scope", scope.clone()),
    ];
    for _ in 0..20 {
        assert_eq!(
            playbook_http
                .post(&token_url)
                .form(&good)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let playbook = {
        let (stop, http, good, token_url, api) = (
            stop.clone(),
            playbook_http.clone(),
            good.clone(),
            token_url.clone(),
            api.clone(),
        );
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let token: Value = match http.post(&token_url).form(&good).send().await {
                    Ok(r) if r.status() == 200 => r.json().await.unwrap(),
                    other => {
                        failed.push(format!("token: {:?}", other.map(|r| r.status())));
                        continue;
                    }
                };
                let status = http
                    .get(format!("{api}/machines"))
                    .bearer_auth(token["access_token"].as_str().unwrap())
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                match status {
                    Ok(200) => ok += 1,
                    other => failed.push(format!("API: {other:?}")),
                }
                // Under MDE's 100 API calls a minute.
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            (ok, failed)
        })
    };
    let peak = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };

    let workers = 64;
    let (wrong_secrets, wrong_passwords) = (10_000usize, 1_000usize);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let source: IpAddr = format!("127.0.{}.{}", 1 + w / 200, 2 + w % 200)
            .parse()
            .unwrap();
        let http = reqwest::Client::builder()
            .local_address(source)
            .build()
            .unwrap();
        let (token_url, v1, client_id, scope) = (
            token_url.clone(),
            v1.clone(),
            client_id.clone(),
            scope.clone(),
        );
        let secrets = (w..wrong_secrets).step_by(workers).count();
        let passwords = (w..wrong_passwords).step_by(workers).count();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..secrets.max(passwords) {
                if i < secrets {
                    let form = [
                        ("grant_type", "client_credentials".to_string()),
                        ("client_id", client_id.clone()),
                        (
                            "client_secret",
                            format!("wrong-{w}-{i}-0000000000000000000000000000"),
                        ),
                        ("scope", scope.clone()),
                    ];
                    statuses.push(
                        http.post(&token_url)
                            .form(&form)
                            .send()
                            .await
                            .unwrap()
                            .status()
                            .as_u16(),
                    );
                }
                if i < passwords {
                    let form = [
                        ("grant_type", "password".to_string()),
                        ("client_id", client_id.clone()),
                        ("username", format!("user{}@demo.appfence.local", i % 20)),
                        ("password", format!("wrong password {w} {i}")),
                        (
                            "resource",
                            "https://api.securitycenter.microsoft.com".to_string(),
                        ),
                    ];
                    statuses.push(
                        http.post(&v1)
                            .form(&form)
                            .send()
                            .await
                            .unwrap()
                            .status()
                            .as_u16(),
                    );
                }
            }
            statuses
        }));
    }
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for t in tasks {
        for s in t.await.unwrap() {
            *statuses.entry(s).or_default() += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = playbook.await.unwrap();
    let peak = peak.await.unwrap();
    // What the allocator gave back: the lowest RSS over the next seconds.
    let mut after = rss_mib(pid);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        after = after.min(rss_mib(pid));
    }
    println!(
        "flood answers {statuses:?}; RSS before {before:.0} MiB, peak {peak:.0} MiB, after {after:.0} MiB; playbook {ok} ok"
    );
    assert_eq!(
        statuses.values().sum::<u32>() as usize,
        wrong_secrets + wrong_passwords
    );
    assert!(
        statuses.keys().all(|s| [400, 401, 429].contains(s)),
        "every wrong credential is refused with an OAuth error: {statuses:?}"
    );
    assert!(
        statuses.get(&429).is_some_and(|n| *n > 0),
        "the per-address limits engaged: {statuses:?}"
    );
    assert!(
        failed.is_empty(),
        "the playbook failed during the flood: {failed:?}"
    );
    assert!(ok >= 3, "the playbook kept working: {ok} calls");
    assert!(
        after - before < 64.0,
        "RSS grew from {before:.0} MiB to {after:.0} MiB (peak {peak:.0} MiB) and stayed"
    );
    drop(server);
}
