//! Dispatch at fleet scale: one server (SQLite), N simulated devices holding long-polls
//! (the demo fleet: HTTP/2 streams on one connection, acknowledging at once), then
//! single restricts one after another and a burst of concurrent ones. For each action,
//! the delivery time is from its creation to the device's acknowledgement, both as the
//! server recorded them (the action's audit trail), and the completion time is to
//! `Succeeded`. Also the process's memory per device and its CPU while the fleet only
//! waits and heartbeats. Prints a Markdown table.
//!
//! Usage: dispatch_bench [--devices 10000] [--singles 100] [--burst 1000] [--idle-seconds 20]

use std::sync::Arc;
use std::time::{Duration, Instant};

use appfence_agent::{spawn_fleet, SimTimings};
use appfence_core::SystemClock;
use appfence_server::ServerConfig;
use appfence_store::{SqliteStore, Store};

struct Options {
    devices: usize,
    singles: usize,
    burst: usize,
    idle_seconds: u64,
}

fn options() -> Options {
    let mut o = Options {
        devices: 10_000,
        singles: 100,
        burst: 1_000,
        idle_seconds: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut n = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{a} N"))
        };
        match a.as_str() {
            "--devices" => o.devices = n() as usize,
            "--singles" => o.singles = n() as usize,
            "--burst" => o.burst = n() as usize,
            "--idle-seconds" => o.idle_seconds = n(),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Creation → acknowledgement and creation → `Succeeded`, in ms, from the audit trail.
async fn timings(store: &dyn Store, ids: &[String]) -> (Vec<f64>, Vec<f64>) {
    let (mut delivered, mut succeeded) = (Vec::new(), Vec::new());
    for id in ids {
        let trail = store.audit_trail(id).await.expect("audit trail");
        let created = trail
            .iter()
            .find(|r| r.from.is_none())
            .map(|r| r.at.ticks());
        let at = |s: appfence_proto::ActionStatus| {
            trail.iter().find(|r| r.to == s).map(|r| r.at.ticks())
        };
        if let (Some(c), Some(ack)) = (created, at(appfence_proto::ActionStatus::InProgress)) {
            delivered.push((ack - c) as f64 / 10_000.0);
        }
        if let (Some(c), Some(done)) = (created, at(appfence_proto::ActionStatus::Succeeded)) {
            succeeded.push((done - c) as f64 / 10_000.0);
        }
    }
    delivered.sort_by(f64::total_cmp);
    succeeded.sort_by(f64::total_cmp);
    (delivered, succeeded)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let files = appfence_server::connections::raise_open_file_limit();
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("appfence.db"))
            .await
            .expect("store"),
    );
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        rate_limits: appfence_core::ratelimit::RateLimitPolicy {
            per_minute: 1_000_000,
            per_hour: 1_000_000,
        },
        ..ServerConfig::default()
    };
    let running = appfence_server::start(config, store.clone(), Arc::new(SystemClock))
        .await
        .expect("server");
    let state = running.state.clone();
    let demo = appfence_server::demo::provision(&state)
        .await
        .expect("demo tenant");
    let base = running.base_url();
    let rss_before = rss_kib();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let _fleet = spawn_fleet(
        &base,
        demo.enroll_secret.expose(),
        o.devices,
        &dir.path().join("devices"),
        SimTimings::IMMEDIATE,
        stop_rx,
    );
    loop {
        let since = state.clock.now().minus(Duration::from_secs(300));
        let seen = store.fleet_summary(since).await.expect("count").seen as usize;
        if seen >= o.devices {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {seen} of {} devices enrolled",
            o.devices
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let enrolled_in = started.elapsed();
    // Let every device settle into its long-poll.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_fleet = rss_kib();
    let cpu0 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let idle_cpu = (cpu_seconds() - cpu0) / o.idle_seconds as f64;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()
        .unwrap();
    let token: serde_json::Value = http
        .post(&demo.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", demo.client_id.as_str()),
            ("client_secret", demo.client_secret.expose()),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let machines: Vec<String> = {
        let tenant = demo.tenant_id.clone();
        let mut ids = Vec::new();
        let mut query =
            appfence_core::odata::Query::<appfence_core::odata::MachineField>::default();
        query.top = Some(o.devices.min(10_000) as u32);
        let page = store
            .list_machines(&tenant, &appfence_core::rbac::DeviceScope::All, &query)
            .await
            .unwrap();
        ids.extend(page.items.into_iter().map(|m| m.id));
        ids
    };
    let restrict = |machine: String| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            let r = http
                .post(format!(
                    "{base}/api/machines/{machine}/restrictCodeExecution"
                ))
                .bearer_auth(token)
                .json(&serde_json::json!({ "Comment": "dispatch bench" }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: serde_json::Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let wait_final = |ids: Vec<String>| {
        let store = store.clone();
        let tenant = demo.tenant_id.clone();
        async move {
            for id in &ids {
                loop {
                    let a = store.action(&tenant, id).await.unwrap().unwrap();
                    if a.status == appfence_proto::ActionStatus::Succeeded {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            ids
        }
    };
    // One at a time, each waited for.
    let mut singles = Vec::new();
    for machine in machines.iter().take(o.singles) {
        let id = restrict(machine.clone()).await;
        singles.extend(wait_final(vec![id]).await);
    }
    // A burst on other devices, all at once.
    let burst_ids: Vec<String> = futures::future::join_all(
        machines
            .iter()
            .skip(o.singles)
            .take(o.burst)
            .cloned()
            .map(restrict),
    )
    .await;
    let burst_ids = wait_final(burst_ids).await;

    let (single_delivery, single_done) = timings(store.as_ref(), &singles).await;
    let (burst_delivery, burst_done) = timings(store.as_ref(), &burst_ids).await;
    let row = |what: &str, v: &[f64]| {
        println!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!("Dispatch with {} devices connected (open-file limit {files}; enrolled in {enrolled_in:.1?})\n", o.devices);
    println!("| what (ms) | actions | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    row(
        "single restrict: created → device acknowledged",
        &single_delivery,
    );
    row("single restrict: created → Succeeded", &single_done);
    row(
        &format!(
            "burst of {}: created → device acknowledged",
            burst_ids.len()
        ),
        &burst_delivery,
    );
    row(
        &format!("burst of {}: created → Succeeded", burst_ids.len()),
        &burst_done,
    );
    println!();
    println!(
        "Process memory: {} MiB before the fleet, {} MiB with it: {:.1} KiB per device (server and simulated device together, one process).",
        rss_before / 1024,
        rss_fleet / 1024,
        (rss_fleet.saturating_sub(rss_before)) as f64 / o.devices as f64
    );
    println!(
        "CPU while {} devices wait and heartbeat: {:.1}% of one core ({} s).",
        o.devices,
        idle_cpu * 100.0,
        o.idle_seconds
    );
}
