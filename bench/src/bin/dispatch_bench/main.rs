//! Dispatch at fleet scale: one server (SQLite), N simulated devices holding long-polls
//! (the demo fleet: HTTP/2 streams on one connection, acknowledging at once), then
//! single restricts one after another and a burst of concurrent ones. For each action,
//! the delivery time is from its creation to the device's acknowledgement, both as the
//! server recorded them (the action's audit trail), and the completion time is to
//! `Succeeded`. Also the process's memory per device and its CPU while the fleet only
//! waits and heartbeats, the server apart from the simulated devices (which run in
//! child processes of this program). Prints a Markdown table.
//!
//! With `--postgres`: two replicas (in this process, each with its own store handle) on
//! one database of a private, durable PostgreSQL cluster; half the devices hold their
//! long-polls on each replica, and every action is created on the replica its device
//! is *not* connected to, so each delivery crosses replicas through PostgreSQL's
//! change notifications.
//!
//! Usage: dispatch_bench [--devices 10000] [--singles 100] [--burst 1000] [--idle-seconds 20] [--postgres]

use std::sync::Arc;
use std::time::{Duration, Instant};

use appfence_agent::{spawn_fleet_on, SimTimings};
use appfence_bench::proc_cpu::{postgres_cpu, process_cpu_time};
use appfence_core::SystemClock;
use appfence_server::ServerConfig;
use appfence_store::{PgStore, SqliteStore, Store};

struct Options {
    devices: usize,
    singles: usize,
    burst: usize,
    idle_seconds: u64,
    postgres: bool,
}

fn options() -> Options {
    let mut o = Options {
        devices: 10_000,
        singles: 100,
        burst: 1_000,
        idle_seconds: 20,
        postgres: false,
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
            "--postgres" => o.postgres = true,
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Resident memory of a process (`self` or a pid), in KiB.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    process_cpu_time(pid).as_secs_f64()
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

/// Waits until `count` devices have been seen, within 15 minutes.
async fn wait_enrolled(
    store: &dyn Store,
    state: &appfence_server::AppState,
    count: usize,
    started: Instant,
) {
    loop {
        let since = state.clock.now().minus(Duration::from_secs(300));
        // While thousands enrol at once the store may refuse (a full pool): ask again.
        let seen = match store.fleet_summary(since).await {
            Ok(summary) => summary.seen as usize,
            Err(e) => {
                eprintln!("counting the enrolled devices: {e}");
                0
            }
        };
        if seen >= count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {seen} of {count} devices enrolled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The ids of every device of the tenant.
async fn all_machines(store: &dyn Store, tenant: &str) -> Vec<String> {
    let mut query = appfence_core::odata::Query::<appfence_core::odata::MachineField>::default();
    query.top = Some(appfence_core::odata::MAX_TOP);
    let mut ids = Vec::new();
    loop {
        let page = store
            .list_machines(tenant, &appfence_core::rbac::DeviceScope::All, &query)
            .await
            .expect("machines");
        ids.extend(page.items.into_iter().map(|m| m.id));
        if !page.more {
            return ids;
        }
        query.skip += appfence_core::odata::MAX_TOP;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--fleet-child") {
        return fleet_child(&args[1..]).await;
    }
    let o = options();
    let files = appfence_server::connections::raise_open_file_limit();
    let dir = tempfile::tempdir().expect("temp dir");
    // Kept alive for the run: the cluster stops when it is dropped.
    let cluster = o
        .postgres
        .then(|| appfence_testkit::private_durable_cluster().expect("PostgreSQL cluster"));
    let stores: Vec<Arc<dyn Store>> = if let Some(cluster) = &cluster {
        let url = cluster.fresh_database().expect("database");
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..2 {
            stores.push(Arc::new(PgStore::open(&url).await.expect("store")));
        }
        stores
    } else {
        vec![Arc::new(
            SqliteStore::open(&dir.path().join("appfence.db"))
                .await
                .expect("store"),
        )]
    };
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        rate_limits: appfence_core::ratelimit::RateLimitPolicy {
            per_minute: 1_000_000,
            per_hour: 1_000_000,
        },
        ..ServerConfig::default()
    };
    let mut replicas: Vec<appfence_server::RunningServer> = Vec::new();
    for store in &stores {
        // Replicas are one service: one public URL, so one token issuer.
        let config = ServerConfig {
            public_url: replicas.first().map(|r| r.base_url()),
            ..config.clone()
        };
        replicas.push(
            appfence_server::start(config, store.clone(), Arc::new(SystemClock))
                .await
                .expect("server"),
        );
    }
    let store = stores[0].clone();
    let state = replicas[0].state.clone();
    let demo = appfence_server::demo::provision(&state)
        .await
        .expect("demo tenant");
    let bases: Vec<String> = replicas.iter().map(|r| r.base_url()).collect();
    let rss_before = rss_kib("self");
    let started = Instant::now();
    // The devices of each replica, in the order they were enrolled there.
    let mut fleets = Vec::new();
    let mut on_replica: Vec<Vec<String>> = Vec::new();
    let per_replica = o.devices.div_ceil(replicas.len());
    for (r, base) in bases.iter().enumerate() {
        let count = per_replica.min(o.devices - r * per_replica);
        fleets.push(FleetProcess::spawn(
            base,
            demo.enroll_secret.expose(),
            r * per_replica + 1,
            count,
            &dir.path().join(format!("devices-{r}")),
        ));
        let enrolled_before: usize = on_replica.iter().map(Vec::len).sum();
        wait_enrolled(store.as_ref(), &state, enrolled_before + count, started).await;
        let known: std::collections::HashSet<&String> = on_replica.iter().flatten().collect();
        let mine: Vec<String> = all_machines(store.as_ref(), &demo.tenant_id)
            .await
            .into_iter()
            .filter(|m| !known.contains(m))
            .collect();
        on_replica.push(mine);
    }
    let enrolled_in = started.elapsed();
    // Let every device settle into its long-poll.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_fleet = rss_kib("self");
    let rss_devices: u64 = fleets.iter().map(|f| rss_kib(&f.pid())).sum();
    let devices_cpu = || fleets.iter().map(|f| cpu_seconds(f.0.id())).sum::<f64>();
    // PostgreSQL's processes, when it is the store: the other half of a heartbeat's cost.
    let postmaster = cluster.as_ref().and_then(|c| c.postmaster_pid());
    let database_cpu = || postmaster.map_or(0.0, |p| postgres_cpu(p).as_secs_f64());
    let (cpu0, devices_cpu0, database_cpu0) = (
        cpu_seconds(std::process::id()),
        devices_cpu(),
        database_cpu(),
    );
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let idle_cpu = (cpu_seconds(std::process::id()) - cpu0) / o.idle_seconds as f64;
    let idle_devices_cpu = (devices_cpu() - devices_cpu0) / o.idle_seconds as f64;
    let idle_database_cpu = (database_cpu() - database_cpu0) / o.idle_seconds as f64;

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
    // Every device with the replica its actions are created on: the other one, when
    // there are two. Interleaved, so the singles and the burst cross both ways.
    let mut targets: Vec<(String, String)> = Vec::new();
    for i in 0..per_replica {
        for (r, devices) in on_replica.iter().enumerate() {
            if let Some(machine) = devices.get(i) {
                targets.push((machine.clone(), bases[(r + 1) % bases.len()].clone()));
            }
        }
    }
    let restrict = |(machine, base): (String, String)| {
        let (http, token) = (http.clone(), token.clone());
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
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(status, 201, "restrict {machine} on {base}: {v}");
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
    for target in targets.iter().take(o.singles) {
        let id = restrict(target.clone()).await;
        singles.extend(wait_final(vec![id]).await);
    }
    // A burst on other devices, all at once: its wall time and the CPU it took tell
    // whether the burst is bound by the machine's two cores.
    // Which statements take PostgreSQL's time in the burst (when the cluster has
    // pg_stat_statements): counted from here.
    let statements = cluster.as_ref().map(|c| {
        c.psql(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
        )
        .map(|_| c)
    });
    let burst_started = Instant::now();
    let (burst_cpu0, burst_devices_cpu0, burst_database_cpu0) = (
        cpu_seconds(std::process::id()),
        devices_cpu(),
        database_cpu(),
    );
    let burst_ids: Vec<String> = futures::future::join_all(
        targets
            .iter()
            .skip(o.singles)
            .take(o.burst)
            .cloned()
            .map(restrict),
    )
    .await;
    let burst_created = burst_started.elapsed();
    let burst_ids = wait_final(burst_ids).await;
    let burst_wall = burst_started.elapsed();
    let burst_cpu = cpu_seconds(std::process::id()) - burst_cpu0;
    let burst_devices_cpu = devices_cpu() - burst_devices_cpu0;
    let burst_database_cpu = database_cpu() - burst_database_cpu0;
    let top_statements = match statements {
        Some(Ok(cluster)) => cluster
            .psql(
                "SELECT round(total_exec_time)::text || ' | ' || calls || ' | `' || \
                 left(regexp_replace(query, '\\s+', ' ', 'g'), 110) || '`' \
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8",
            )
            .unwrap_or_else(|e| format!("(cannot read pg_stat_statements: {e})")),
        Some(Err(e)) => format!("(pg_stat_statements is not available: {e})"),
        None => String::new(),
    };
    // The same idle measurement with part of the fleet now restricted.
    let (cpu1, devices_cpu1) = (cpu_seconds(std::process::id()), devices_cpu());
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let restricted_cpu = (cpu_seconds(std::process::id()) - cpu1) / o.idle_seconds as f64;
    let restricted_devices_cpu = (devices_cpu() - devices_cpu1) / o.idle_seconds as f64;

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
    let bed = if o.postgres {
        format!(
            "two replicas on PostgreSQL, {} devices on each, every action created on the other replica",
            per_replica
        )
    } else {
        "one server on SQLite".to_string()
    };
    println!("Dispatch with {} devices connected, {bed} (open-file limit {files}; enrolled in {enrolled_in:.1?})\n", o.devices);
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
        "Server memory: {} MiB before the fleet, {} MiB with it: **{:.1} KiB per waiting device** ({}the simulated devices run in separate processes: {} MiB, {:.1} KiB each).",
        rss_before / 1024,
        rss_fleet / 1024,
        (rss_fleet.saturating_sub(rss_before)) as f64 / o.devices as f64,
        if o.postgres { "both replicas; PostgreSQL's own memory not included; " } else { "" },
        rss_devices / 1024,
        rss_devices as f64 / o.devices as f64,
    );
    println!(
        "CPU while {} devices wait and heartbeat: server {:.1}% of one core{}, simulated devices {:.1}% ({} s).",
        o.devices,
        idle_cpu * 100.0,
        if o.postgres {
            format!(", PostgreSQL {:.1}%", idle_database_cpu * 100.0)
        } else {
            String::new()
        },
        idle_devices_cpu * 100.0,
        o.idle_seconds
    );
    println!(
        "CPU while they wait again, {} of them restricted: server {:.1}% of one core, simulated devices {:.1}% ({} s).",
        singles.len() + burst_ids.len(),
        restricted_cpu * 100.0,
        restricted_devices_cpu * 100.0,
        o.idle_seconds
    );
    println!(
        "Burst: all {} created (201 received) in {:.0} ms, all Succeeded in {:.0} ms; CPU meanwhile: server and load generator {:.2} s, simulated devices {:.2} s, PostgreSQL {:.2} s: {:.0}% of the machine's {} cores.",
        burst_ids.len(),
        burst_created.as_secs_f64() * 1000.0,
        burst_wall.as_secs_f64() * 1000.0,
        burst_cpu,
        burst_devices_cpu,
        burst_database_cpu,
        100.0 * (burst_cpu + burst_devices_cpu + burst_database_cpu)
            / (burst_wall.as_secs_f64() * cores()),
        cores()
    );
    if !top_statements.is_empty() {
        println!("\nPostgreSQL's statements during the burst, by total time:\n");
        println!("| total ms | calls | statement |\n|---:|---:|---|");
        for line in top_statements.lines() {
            println!("| {line} |");
        }
    }
    drop(fleets);
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// Simulated devices in a child process (this program with `--fleet-child`), so that
/// the server's memory and CPU are measured apart from theirs. Killed when dropped; the
/// child also ends when its stdin closes, should this process die first.
struct FleetProcess(std::process::Child);

impl FleetProcess {
    fn spawn(
        base: &str,
        secret: &str,
        first: usize,
        count: usize,
        state: &std::path::Path,
    ) -> FleetProcess {
        let child = std::process::Command::new(std::env::current_exe().expect("own path"))
            .arg("--fleet-child")
            .arg(base)
            .arg(first.to_string())
            .arg(count.to_string())
            .arg(state)
            .env("APPFENCE_BENCH_ENROLL_SECRET", secret)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("fleet process");
        FleetProcess(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's side of [`FleetProcess`]: `--fleet-child BASE FIRST COUNT STATE_DIR`
/// (devices numbered from FIRST), the enrolment secret in the environment (not on a
/// command line others can read).
async fn fleet_child(args: &[String]) {
    let [base, first, count, state] = args else {
        panic!("--fleet-child BASE FIRST COUNT STATE_DIR");
    };
    let first: usize = first.parse().expect("first");
    let count: usize = count.parse().expect("count");
    appfence_server::connections::raise_open_file_limit();
    let secret = std::env::var("APPFENCE_BENCH_ENROLL_SECRET").expect("enrolment secret");
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let _fleet = spawn_fleet_on(
        None,
        base,
        &secret,
        first..=first + count - 1,
        std::path::Path::new(state),
        SimTimings::IMMEDIATE,
        stop_rx,
    );
    // Until the parent closes stdin (it kills this process first, normally).
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let _ = std::io::stdin().read(&mut [0u8; 1]);
    })
    .await;
}
