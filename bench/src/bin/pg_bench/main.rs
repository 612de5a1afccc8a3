//! Creating actions on PostgreSQL, measured side by side in one run:
//!
//! - `one replica`: `POST /api/machines/{id}/restrictCodeExecution` through one
//!   `appfence serve` process on the database (token check, device lookup, the insert,
//!   the change notification, JSON);
//! - `two replicas`: the same load spread over two such processes;
//! - `raw insert`: the same action row `INSERT`ed straight into a second database of the
//!   same schema on the same cluster (its audit trigger fires, as for the server), one
//!   autocommit statement per row, over as many connections as the HTTP load has
//!   clients: what a durable row costs with nothing above it;
//! - `raw, no trigger` (informative): the same with triggers off for the session, to
//!   tell the audit row's cost apart.
//!
//! PostgreSQL runs with its default durability (`fsync`, `synchronous_commit`: every
//! commit is flushed), a private cluster started from Debian's server binaries. Each
//! action is on a device of its own. The ways run in interleaved rounds, so drift of a
//! shared, noisy machine falls on all alike; the CPU time each part used (replicas,
//! PostgreSQL's processes, this load generator) comes from `/proc`. Progress goes to
//! stderr, the Markdown report to stdout; the run stops by itself.
//!
//! `bench/pg-bench.sh [--quick] [--rounds N] [--per-round N] [--concurrency N]`

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use appfence_bench::harness;
use appfence_bench::load;
use appfence_bench::proc_cpu::{cpu_time, postgres_cpu};
use appfence_bench::report::Environment;
use appfence_bench::served::Serve;
use appfence_bench::setup::{machine_record, pending_restrict, COMMENT};
use appfence_bench::stats::Sample;
use appfence_core::records::{ActionRecord, MachineRecord};
use appfence_core::{Clock, SystemClock};
use appfence_proto::Timestamp;
use appfence_store::{PgStore, Store};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

const USAGE: &str =
    "pg_bench [--bin APPFENCE] [--quick] [--rounds N] [--per-round N] [--concurrency N]
  --bin APPFENCE   the release binary to run as replicas (default: next to this one)
  --quick          a smoke run: 2 rounds of 200
  --rounds N       interleaved rounds (default 4)
  --per-round N    actions per way and round (default 2000)
  --concurrency N  clients (and raw connections) in flight (default 32)";

/// The run stops by itself even if something hangs.
const RUN_LIMIT: Duration = Duration::from_secs(1200);
const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
/// The `actions` columns in the order the store inserts them
/// (crates/store/src/rows.rs, `ACTION_COLUMNS`).
const ACTION_COLUMNS: &str = "id, tenant_id, action_type, title, requestor, \
     requestor_comment, status, machine_id, computer_dns_name, created, last_update, \
     cancellation_requestor, cancellation_comment, cancellation_time, error_h_result, \
     external_id, request_source, troubleshoot_info";

struct Options {
    bin: PathBuf,
    rounds: usize,
    per_round: usize,
    concurrency: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut o = Options {
            bin: exe.with_file_name("appfence"),
            rounds: 4,
            per_round: 2000,
            concurrency: 32,
        };
        let mut it = args.iter();
        let number = |v: Option<&String>, name: &str| {
            v.and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--help" | "-h" => return Ok(None),
                "--bin" => o.bin = it.next().ok_or("--bin needs a path")?.into(),
                "--quick" => {
                    o.rounds = 2;
                    o.per_round = 200;
                }
                "--rounds" => o.rounds = number(it.next(), "--rounds")?,
                "--per-round" => o.per_round = number(it.next(), "--per-round")?,
                "--concurrency" => o.concurrency = number(it.next(), "--concurrency")?,
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        if !o.bin.exists() {
            return Err(format!(
                "{} is missing: build it first (bench/pg-bench.sh does)",
                o.bin.display()
            ));
        }
        Ok(Some(o))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (options, args) = match harness::options(USAGE, Options::parse) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let env = Environment::run_by("bench/pg-bench.sh", &args);
    let run = async {
        let measured = run(&options).await?;
        Ok(render(&env, &options, &measured))
    };
    harness::report_within("benchmark", RUN_LIMIT, run).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    OneReplica,
    TwoReplicas,
    Raw,
    RawNoTrigger,
}

const WAYS: [Way; 4] = [
    Way::OneReplica,
    Way::TwoReplicas,
    Way::Raw,
    Way::RawNoTrigger,
];

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::OneReplica => "HTTP, one replica",
            Way::TwoReplicas => "HTTP, two replicas",
            Way::Raw => "raw insert",
            Way::RawNoTrigger => "raw insert, no trigger",
        }
    }
}

/// CPU time used so far by each part.
#[derive(Clone, Copy, Default)]
struct Cpu {
    replicas: Duration,
    postgres: Duration,
    load: Duration,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            replicas: self.replicas.saturating_sub(before.replicas),
            postgres: self.postgres.saturating_sub(before.postgres),
            load: self.load.saturating_sub(before.load),
        }
    }
    fn add(&mut self, other: Cpu) {
        self.replicas += other.replicas;
        self.postgres += other.postgres;
        self.load += other.load;
    }
    fn total(self) -> Duration {
        self.replicas + self.postgres + self.load
    }
}

#[derive(Default)]
struct Tally {
    sample: Sample,
    cpu: Cpu,
}

struct Measured {
    tallies: Vec<(Way, Tally)>,
    postgres_version: String,
    total: Duration,
}

impl Measured {
    fn of(&self, way: Way) -> &Tally {
        &self
            .tallies
            .iter()
            .find(|(w, _)| *w == way)
            .expect("every way is measured")
            .1
    }
}

async fn run(o: &Options) -> Result<Measured, String> {
    let started = Instant::now();
    eprintln!("starting a durable PostgreSQL cluster");
    let cluster = tokio::task::spawn_blocking(appfence_testkit::private_durable_cluster)
        .await
        .map_err(|e| e.to_string())??;
    let postmaster = cluster
        .postmaster_pid()
        .ok_or("the postmaster's pid is unknown")?;
    let service_url = cluster.fresh_database()?;
    let raw_url = cluster.fresh_database()?;
    let postgres_version = cluster.psql("SHOW server_version")?;
    let settings = cluster.psql("SELECT string_agg(name || '=' || setting, ', ') FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')")?;
    eprintln!("PostgreSQL {postgres_version}: {settings}");

    let dir = tempfile::Builder::new()
        .prefix("pg-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| e.to_string())?;
    let config = dir.path().join("appfence.toml");
    // Far above what the run makes: the benchmark measures creation, not refusals.
    std::fs::write(
        &config,
        "[rate_limits]\nper_minute = 1000000000\nper_hour = 1000000000\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| e.to_string())?;

    // The application, created as an operator would: the offline command on the database.
    let created = Command::new(&o.bin)
        .args([
            "app",
            "create",
            "--name",
            "pg bench",
            "--role",
            "Machine.Read.All,Machine.RestrictExecution",
            "-o",
            "json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("APPFENCE_DATABASE_URL", &service_url)
        .output()
        .map_err(|e| e.to_string())?;
    if !created.status.success() {
        return Err(format!(
            "app create failed: {}",
            String::from_utf8_lossy(&created.stderr)
        ));
    }
    let app: serde_json::Value =
        serde_json::from_slice(&created.stdout).map_err(|e| e.to_string())?;
    let field = |k: &str| app[k].as_str().unwrap_or_default().to_string();
    let tenant_id = field("tenantId");

    let replica = |name, public_url| {
        Serve {
            bin: &o.bin,
            dir: dir.path(),
            name,
            database_url: Some(&service_url),
            public_url,
            ready_within: Duration::from_secs(120),
        }
        .start()
    };
    let a = replica("a", None)?;
    let b = replica("b", Some(&a.url))?;
    let replica_pids = [a.child.id(), b.child.id()];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let token = token(
        &http,
        &a.url,
        &tenant_id,
        &field("clientId"),
        &field("clientSecret"),
    )
    .await?;

    // Devices: one per action, in both databases.
    let per_way = o.rounds * o.per_round;
    eprintln!("inserting {} devices", 4 * per_way);
    let service = PgStore::open(&service_url)
        .await
        .map_err(|e| e.to_string())?;
    let raw = PgStore::open(&raw_url).await.map_err(|e| e.to_string())?;
    raw.ensure_tenant(&appfence_core::Tenant {
        id: tenant_id.clone(),
        name: "default".into(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let service_machines =
        insert_machines(Arc::new(service), &tenant_id, "svc", 2 * per_way).await?;
    let raw_machines = insert_machines(Arc::new(raw), &tenant_id, "raw", 2 * per_way).await?;
    let raw_pool = raw_pool(&raw_url, o.concurrency).await?;
    let no_trigger_pool = raw_pool_no_trigger(&raw_url, o.concurrency).await?;

    let mut tallies: Vec<(Way, Tally)> = WAYS.iter().map(|w| (*w, Tally::default())).collect();
    let body = Arc::new(serde_json::json!({ "Comment": COMMENT }).to_string());
    for round in 0..o.rounds {
        for k in 0..WAYS.len() {
            let way = WAYS[(round + k) % WAYS.len()];
            // Each way takes the next slice of its devices.
            let (machines, offset) = match way {
                Way::OneReplica => (&service_machines, round * o.per_round),
                Way::TwoReplicas => (&service_machines, per_way + round * o.per_round),
                Way::Raw => (&raw_machines, round * o.per_round),
                Way::RawNoTrigger => (&raw_machines, per_way + round * o.per_round),
            };
            let slice: Arc<Vec<MachineRecord>> =
                Arc::new(machines[offset..offset + o.per_round].to_vec());
            let cpu_before = Cpu {
                replicas: replica_pids.iter().map(|p| cpu_time(*p)).sum(),
                postgres: postgres_cpu(postmaster),
                load: cpu_time(std::process::id()),
            };
            let sample = match way {
                Way::OneReplica | Way::TwoReplicas => {
                    let bases: Vec<String> = match way {
                        Way::OneReplica => vec![a.url.clone()],
                        _ => vec![a.url.clone(), b.url.clone()],
                    };
                    create_over_http(
                        &http,
                        Arc::new(bases),
                        &token,
                        slice,
                        body.clone(),
                        o.concurrency,
                    )
                    .await?
                }
                Way::Raw => insert_raw(&raw_pool, &tenant_id, slice, o.concurrency).await?,
                Way::RawNoTrigger => {
                    insert_raw(&no_trigger_pool, &tenant_id, slice, o.concurrency).await?
                }
            };
            let cpu = Cpu {
                replicas: replica_pids.iter().map(|p| cpu_time(*p)).sum(),
                postgres: postgres_cpu(postmaster),
                load: cpu_time(std::process::id()),
            }
            .since(cpu_before);
            eprintln!(
                "round {}: {:<24} {:>8.0}/s",
                round + 1,
                way.name(),
                sample.per_second()
            );
            let tally = &mut tallies.iter_mut().find(|(w, _)| *w == way).unwrap().1;
            tally.sample.merge(sample);
            tally.cpu.add(cpu);
        }
    }
    drop((a, b));
    Ok(Measured {
        tallies,
        postgres_version: format!("{postgres_version} ({settings})"),
        total: started.elapsed(),
    })
}

async fn token(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    client_id: &str,
    secret: &str,
) -> Result<String, String> {
    let r = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", MDE_SCOPE),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no token: {v}"))
}

async fn insert_machines(
    store: Arc<PgStore>,
    tenant: &str,
    prefix: &'static str,
    n: usize,
) -> Result<Vec<MachineRecord>, String> {
    let now = SystemClock.now();
    let machines: Arc<Vec<MachineRecord>> = Arc::new(
        (0..n)
            .map(|i| machine_record(tenant, prefix, i, now))
            .collect(),
    );
    let all = machines.clone();
    load::run_count(n, 16, move |i| {
        let (store, machines) = (store.clone(), machines.clone());
        async move {
            store
                .insert_machine(&machines[i])
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    Ok(all.to_vec())
}

async fn raw_pool(url: &str, connections: usize) -> Result<PgPool, String> {
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| e.to_string())?;
    pool(options, connections).await
}

/// Triggers off for the session (`session_replication_role = replica`: the cluster's
/// superuser may).
async fn raw_pool_no_trigger(url: &str, connections: usize) -> Result<PgPool, String> {
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| e.to_string())?;
    pool(
        options.options([("session_replication_role", "replica")]),
        connections,
    )
    .await
}

async fn pool(options: PgConnectOptions, connections: usize) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(connections as u32)
        .min_connections(connections as u32)
        .connect_with(options)
        .await
        .map_err(|e| e.to_string())
}

async fn create_over_http(
    http: &reqwest::Client,
    bases: Arc<Vec<String>>,
    token: &str,
    machines: Arc<Vec<MachineRecord>>,
    body: Arc<String>,
    concurrency: usize,
) -> Result<Sample, String> {
    let (http, token) = (http.clone(), Arc::new(format!("Bearer {token}")));
    let (sample, _) = load::run_count(machines.len(), concurrency, move |i| {
        let (http, bases, token, machines, body) = (
            http.clone(),
            bases.clone(),
            token.clone(),
            machines.clone(),
            body.clone(),
        );
        async move {
            let base = &bases[i % bases.len()];
            let r = http
                .post(format!(
                    "{base}/api/machines/{}/restrictCodeExecution",
                    machines[i].id
                ))
                .header("Authorization", token.as_str())
                .header("Content-Type", "application/json")
                .body(body.as_str().to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            if status != 201 {
                return Err(format!("restrict answered {status}: {text}"));
            }
            Ok(())
        }
    })
    .await?;
    Ok(sample)
}

async fn insert_raw(
    pool: &PgPool,
    tenant: &str,
    machines: Arc<Vec<MachineRecord>>,
    concurrency: usize,
) -> Result<Sample, String> {
    let (pool, tenant) = (pool.clone(), Arc::new(tenant.to_string()));
    let (sample, _) = load::run_count(machines.len(), concurrency, move |i| {
        let (pool, tenant, machines) = (pool.clone(), tenant.clone(), machines.clone());
        async move {
            let m = &machines[i];
            let a = pending_restrict(
                &tenant,
                "pg bench",
                &m.id,
                &m.computer_dns_name,
                SystemClock.now(),
            );
            insert_action(&pool, &a).await
        }
    })
    .await?;
    Ok(sample)
}

/// The store's insert (crates/store/src/postgres/actions.rs, `create`).
async fn insert_action(pool: &PgPool, a: &ActionRecord) -> Result<(), String> {
    sqlx::query(&format!(
        "INSERT INTO actions ({ACTION_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    ))
    .bind(&a.id)
    .bind(&a.tenant_id)
    .bind(a.action_type.as_str())
    .bind(&a.title)
    .bind(&a.requestor)
    .bind(&a.requestor_comment)
    .bind(a.status.as_str())
    .bind(&a.machine_id)
    .bind(&a.computer_dns_name)
    .bind(a.created.ticks())
    .bind(a.last_update.ticks())
    .bind(&a.cancellation_requestor)
    .bind(&a.cancellation_comment)
    .bind(a.cancellation_time.map(Timestamp::ticks))
    .bind(a.error_h_result)
    .bind(&a.external_id)
    .bind(&a.request_source)
    .bind(&a.troubleshoot_info)
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn render(env: &Environment, o: &Options, m: &Measured) -> String {
    let mut out = String::new();
    out.push_str("### Action creation on PostgreSQL\n\n");
    out.push_str(&format!(
        "- command: `{}`\n- date: {}, commit {}\n- machine: {} CPUs ({}), PostgreSQL {}\n- load: {} rounds x {} actions per way, {} in flight; total run {:.0} s\n\n",
        env.command, env.date_utc, env.commit, env.nproc, env.cpu, m.postgres_version,
        o.rounds, o.per_round, o.concurrency, m.total.as_secs_f64()
    ));
    out.push_str("| way | actions | actions/s | mean | p99 | CPU ms per action: replicas | PostgreSQL | load generator | CPU busy |\n|---|---|---|---|---|---|---|---|---|\n");
    for (way, t) in &m.tallies {
        let s = t.sample.summary();
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / s.count.max(1) as f64;
        let busy = t.cpu.total().as_secs_f64()
            / (t.sample.elapsed.as_secs_f64() * env.nproc as f64).max(1e-9);
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.2} | {:.2} | {:.2} | {:.0}% |\n",
            way.name(),
            s.count,
            s.per_second,
            s.mean.as_secs_f64() * 1000.0,
            s.p99.as_secs_f64() * 1000.0,
            per(t.cpu.replicas),
            per(t.cpu.postgres),
            per(t.cpu.load),
            busy * 100.0
        ));
    }
    let rate = |w: Way| m.of(w).sample.per_second();
    out.push_str(&format!(
        "\n- one replica against the raw insert: **{:.0}%** (target at least 50%); against the raw insert without the audit trigger: {:.0}%\n- two replicas against one: **{:.2}x** (target at least 1.6x)\n",
        100.0 * rate(Way::OneReplica) / rate(Way::Raw).max(1e-9),
        100.0 * rate(Way::OneReplica) / rate(Way::RawNoTrigger).max(1e-9),
        rate(Way::TwoReplicas) / rate(Way::OneReplica).max(1e-9),
    ));
    out
}
