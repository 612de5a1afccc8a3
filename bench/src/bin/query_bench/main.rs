//! Queries at a million actions: a store filled with 1,000,000 actions over 10,000
//! machines (bulk inserts in big transactions straight into the store's schema, the
//! audit trigger firing as for the server), then every supported shape of
//! `GET /api/machineactions` timed through the real HTTP API of an `appfence serve`
//! process on loopback that opened the store normally: every `$filter` field, every
//! `$orderby` field ascending and descending, `$count=true`, deep `$skip`, and following
//! `@odata.nextLink` deep into the collection. On SQLite and on PostgreSQL (a throwaway
//! cluster of its own from Debian's server binaries).
//!
//! The data: actions spread evenly over the last 170 days (inside the default retention,
//! so the sweeper deletes nothing while the benchmark runs); 85% Succeeded, 5% Failed, 5%
//! TimeOut, 5% Cancelled; the newest action of 5% of the machines Pending; 55% restricts,
//! 35% unrestricts, the rest spread over the other types; requestors `app0`..`app19`
//! (about 5% each, every app with every status) and a few users; 30% with an
//! `externalId`.
//!
//! Each shape runs `--reps` times (values vary between repetitions where the shape has
//! one, e.g. another machine); p50, p99 and max of the request's wall time as the client
//! sees it. Targets: p99 < 20 ms for every shape at `$top` <= 100, `$count=true` <= 50 ms.
//! Progress goes to stderr, the Markdown report to stdout.
//!
//! `bench/query-bench.sh [--quick] [--actions N] [--machines N] [--reps N] [--engine sqlite|postgres|both]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use appfence_bench::harness;
use appfence_bench::report::Environment;
use appfence_bench::served::Serve;
use appfence_bench::setup::machine_record;
use appfence_core::{Clock, SystemClock};
use appfence_store::{PgStore, SqliteStore, Store};

const USAGE: &str = "query_bench [--bin APPFENCE] [--quick] [--actions N] [--machines N] [--reps N] [--pages N] [--engine sqlite|postgres|both]
  --bin APPFENCE   the release binary to serve with (default: next to this one)
  --quick          a smoke run: 100,000 actions over 1,000 machines, 10 repetitions
  --actions N      actions in the store (default 1000000)
  --machines N     machines (default 10000)
  --reps N         requests per shape (default 50)
  --pages N        next links followed per walk (default 300)
  --engine E       sqlite, postgres or both (default both)";

const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
/// The run stops by itself even if something hangs.
const RUN_LIMIT: Duration = Duration::from_secs(3600);
const DAY_TICKS: i64 = 864_000_000_000;
/// Actions per fill transaction.
const FILL_CHUNK: i64 = 100_000;
const TOP_TARGET_MS: f64 = 20.0;
const COUNT_TARGET_MS: f64 = 50.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        }
    }
}

struct Options {
    bin: PathBuf,
    actions: i64,
    machines: i64,
    reps: usize,
    pages: usize,
    engines: Vec<Engine>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut o = Options {
            bin: exe.with_file_name("appfence"),
            actions: 1_000_000,
            machines: 10_000,
            reps: 50,
            pages: 300,
            engines: vec![Engine::Sqlite, Engine::Postgres],
        };
        let mut it = args.iter();
        let number = |v: Option<&String>, name: &str| {
            v.and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--help" | "-h" => return Ok(None),
                "--bin" => o.bin = it.next().ok_or("--bin needs a path")?.into(),
                "--quick" => {
                    o.actions = 100_000;
                    o.machines = 1_000;
                    o.reps = 10;
                    o.pages = 50;
                }
                "--actions" => o.actions = number(it.next(), "--actions")?,
                "--machines" => o.machines = number(it.next(), "--machines")?,
                "--reps" => o.reps = number(it.next(), "--reps")? as usize,
                "--pages" => o.pages = number(it.next(), "--pages")? as usize,
                "--engine" => {
                    o.engines = match it.next().map(String::as_str) {
                        Some("sqlite") => vec![Engine::Sqlite],
                        Some("postgres") => vec![Engine::Postgres],
                        Some("both") => vec![Engine::Sqlite, Engine::Postgres],
                        _ => return Err("--engine needs sqlite, postgres or both".into()),
                    }
                }
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        if o.machines > o.actions {
            return Err("--machines must not exceed --actions".into());
        }
        if !o.bin.exists() {
            return Err(format!(
                "{} is missing: build it first (bench/query-bench.sh does)",
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
    let env = Environment::run_by("bench/query-bench.sh", &args);
    let run = async {
        let mut report = format!(
            "Command: `{}`\nDate: {}; commit {}; {} CPUs ({})\n\n",
            env.command, env.date_utc, env.commit, env.nproc, env.cpu
        );
        for engine in &options.engines {
            report.push_str(&run_engine(&options, *engine).await?);
            report.push('\n');
        }
        Ok(report)
    };
    harness::report_within("benchmark", RUN_LIMIT, run).await
}

/// The `appfence` binary with the store chosen: the embedded one, or `database_url`.
fn appfence(bin: &Path, database_url: Option<&str>) -> Command {
    let mut c = Command::new(bin);
    c.env("APPFENCE_LOG_LEVEL", "warn");
    match database_url {
        Some(url) => c.env("APPFENCE_DATABASE_URL", url),
        None => c.env_remove("APPFENCE_DATABASE_URL"),
    };
    c
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

/// The SQL that differs between the engines.
struct Dialect {
    engine: Engine,
}

impl Dialect {
    /// A machine id (40 hex digits) from the integer expression `i`.
    fn machine_id(&self, i: &str) -> String {
        match self.engine {
            Engine::Sqlite => format!("printf('%040x', {i})"),
            Engine::Postgres => format!("lpad(to_hex({i}), 40, '0')"),
        }
    }
    /// An action id (a GUID) from `i`.
    fn action_id(&self, i: &str) -> String {
        match self.engine {
            Engine::Sqlite => format!("printf('%08x-0000-4000-8000-%012x', {i}, {i})"),
            Engine::Postgres => format!(
                "lpad(to_hex({i}), 8, '0') || '-0000-4000-8000-' || lpad(to_hex({i}), 12, '0')"
            ),
        }
    }
    /// The integers `lo..=hi` as rows `n(i)`.
    fn series(&self, lo: i64, hi: i64) -> String {
        match self.engine {
            Engine::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n WHERE i < {hi})"
            ),
            Engine::Postgres => {
                format!("WITH n(i) AS (SELECT generate_series({lo}::bigint, {hi}::bigint))")
            }
        }
    }
}

/// Runs the fill's statements: SQLite in a transaction each, PostgreSQL without waiting
/// for each commit's flush (the data is the benchmark's, not a client's).
enum Filler {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Filler {
    async fn exec(&self, sql: String) -> Result<(), String> {
        let fail = |e: sqlx::Error| format!("{e}: {}", &sql[..sql.len().min(300)]);
        match self {
            Filler::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(fail)?;
                tx.commit().await.map_err(|e| e.to_string())
            }
            Filler::Postgres(pool) => {
                let mut c = pool.acquire().await.map_err(|e| e.to_string())?;
                sqlx::raw_sql("SET synchronous_commit = off")
                    .execute(&mut *c)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&sql).execute(&mut *c).await.map_err(fail)?;
                Ok(())
            }
        }
    }
}

/// What the data looks like, for the shapes to ask about.
struct Data {
    actions: i64,
    machines: i64,
    /// `created` of action 1, in ticks.
    start: i64,
    step: i64,
}

impl Data {
    fn machine_id(&self, m: i64) -> String {
        format!("{m:040x}")
    }
    fn created_at(&self, i: i64) -> appfence_proto::Timestamp {
        appfence_proto::Timestamp::from_ticks(self.start + i * self.step)
    }
}

/// Fills the store: `o.machines` machines cloned from one inserted through the store,
/// then `o.actions` actions in transactions of [`FILL_CHUNK`].
async fn fill(
    engine: Engine,
    store: &dyn Store,
    tenant: &str,
    o: &Options,
    filler: &Filler,
) -> Result<Data, String> {
    let d = Dialect { engine };
    let now = SystemClock.now();
    let template = machine_record(tenant, "template", 0, now);
    store
        .insert_machine(&template)
        .await
        .map_err(|e| format!("cannot insert the template machine: {e}"))?;
    let m = o.machines;
    filler
        .exec(format!(
            "INSERT INTO machines (id, tenant_id, aad_device_id, computer_dns_name, first_seen, \
             last_seen, os_platform, os_version, kernel_version, os_architecture, agent_version, \
             last_ip_address, ip_addresses, health_status, onboarding_status, machine_tags, \
             rbac_group_id, rbac_group_name, risk_score, exposure_level, device_value, \
             capabilities, enforcement, credential_sha256, enrollment_key_sha256) \
         {series} \
         SELECT {mid}, t.tenant_id, 'aad-' || i, 'host-' || i, t.first_seen, t.last_seen, \
             t.os_platform, t.os_version, t.kernel_version, t.os_architecture, t.agent_version, \
             t.last_ip_address, t.ip_addresses, t.health_status, t.onboarding_status, \
             t.machine_tags, t.rbac_group_id, t.rbac_group_name, t.risk_score, \
             t.exposure_level, t.device_value, t.capabilities, t.enforcement, 'cred-' || i, NULL \
         FROM n, machines t WHERE t.id = '{tid}'",
            series = d.series(1, m),
            mid = d.machine_id("i"),
            tid = template.id,
        ))
        .await?;

    let span = 170 * DAY_TICKS;
    let data = Data {
        actions: o.actions,
        machines: m,
        start: now.ticks() - span,
        step: span / o.actions,
    };
    let n = o.actions;
    let mut lo = 1;
    while lo <= n {
        let hi = (lo + FILL_CHUNK - 1).min(n);
        let started = Instant::now();
        // h: status and timing; r: requestor; y: type. Machines go round robin, so the
        // newest `m` actions are on distinct machines (at most one open restrict each).
        filler
            .exec(format!(
                "INSERT INTO actions (id, tenant_id, action_type, title, requestor, \
                 requestor_comment, status, machine_id, computer_dns_name, created, last_update, \
                 cancellation_requestor, cancellation_comment, cancellation_time, \
                 error_h_result, external_id, request_source, troubleshoot_info) \
             {series} \
             SELECT {aid}, '{tenant}', \
                 CASE WHEN y < 55 THEN 'RestrictCodeExecution' \
                      WHEN y < 90 THEN 'UnrestrictCodeExecution' \
                      WHEN y < 93 THEN 'RunAntiVirusScan' WHEN y < 95 THEN 'Isolate' \
                      WHEN y < 97 THEN 'Unisolate' WHEN y < 98 THEN 'CollectInvestigationPackage' \
                      WHEN y < 99 THEN 'LiveResponse' ELSE 'StopAndQuarantineFile' END, \
                 NULL, \
                 CASE WHEN r < 90 THEN 'app' || (r % 20) \
                      ELSE 'analyst' || (r - 90) || '@contoso.com' END, \
                 'Restrict code execution due to alert (appfence query bench)', \
                 status, {mid}, 'host-' || m, c, \
                 CASE WHEN status = 'Pending' THEN c ELSE c + (h + 1) * 1000000 END, \
                 CASE WHEN status = 'Cancelled' THEN 'app1' END, \
                 CASE WHEN status = 'Cancelled' THEN 'no longer needed' END, \
                 CASE WHEN status = 'Cancelled' THEN c + (h + 1) * 1000000 END, \
                 0, CASE WHEN (i * 131) % 10 < 3 THEN 'ext-' || i END, 'PublicApi', NULL \
             FROM (SELECT i, h, r, y, m, c, \
                     CASE WHEN i > {open_from} AND h < 50 THEN 'Pending' \
                          WHEN h % 20 = 1 THEN 'Failed' WHEN h % 20 = 2 THEN 'TimeOut' \
                          WHEN h % 20 = 3 THEN 'Cancelled' ELSE 'Succeeded' END AS status \
                   FROM (SELECT i, (i * 7919) % 1000 AS h, (i * 40503) % 97 AS r, \
                           (i * 31) % 100 AS y, (i % {m}) + 1 AS m, \
                           {start} + i * {step} - ((i * 104729) % 1000) * 10000 AS c \
                         FROM n) AS a) AS b",
                series = d.series(lo, hi),
                aid = d.action_id("i"),
                mid = d.machine_id("m"),
                open_from = n - m,
                start = data.start,
                step = data.step,
            ))
            .await?;
        eprintln!(
            "  actions {lo}..={hi} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        lo = hi + 1;
    }
    Ok(data)
}

/// One shape: a name, its query string (for repetition `k`), and its target.
struct Shape {
    name: String,
    query: Box<dyn Fn(usize) -> String + Send + Sync>,
    target_ms: f64,
}

fn shape(
    name: impl Into<String>,
    target_ms: f64,
    query: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Shape {
    Shape {
        name: name.into(),
        query: Box::new(query),
        target_ms,
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push_str("%20"),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn shapes(d: &Data) -> Vec<Shape> {
    let t = TOP_TARGET_MS;
    let m = d.machines;
    let n = d.actions;
    let mut v = Vec::new();
    v.push(shape("no filter, $top=100", t, |_| "$top=100".into()));
    v.push(shape("id eq", t, move |k| {
        let i = 1 + (k as i64 * 7_777) % n;
        format!(
            "$filter={}",
            enc(&format!("id eq '{:08x}-0000-4000-8000-{:012x}'", i, i))
        )
    }));
    for status in ["Pending", "Succeeded", "Failed", "Cancelled"] {
        v.push(shape(format!("status eq '{status}'"), t, move |_| {
            format!("$top=100&$filter={}", enc(&format!("status eq '{status}'")))
        }));
    }
    let mids: Vec<String> = (0..64).map(|k| d.machine_id(1 + (k * 97) % m)).collect();
    v.push(shape("machineId eq", t, move |k| {
        format!(
            "$top=100&$filter={}",
            enc(&format!("machineId eq '{}'", mids[k % mids.len()]))
        )
    }));
    for ty in ["RestrictCodeExecution", "Isolate"] {
        v.push(shape(format!("type eq '{ty}'"), t, move |_| {
            format!("$top=100&$filter={}", enc(&format!("type eq '{ty}'")))
        }));
    }
    v.push(shape("requestor eq 'app3'", t, |_| {
        format!("$top=100&$filter={}", enc("requestor eq 'APP3'"))
    }));
    v.push(shape("requestor eq (a user, rare)", t, |_| {
        format!(
            "$top=100&$filter={}",
            enc("requestor eq 'analyst6@contoso.com'")
        )
    }));
    v.push(shape(
        "status eq 'Failed' and requestor eq 'app3'",
        t,
        |_| {
            format!(
                "$top=100&$filter={}",
                enc("status eq 'Failed' and requestor eq 'app3'")
            )
        },
    ));
    let recent = d.created_at(n - n / 100).to_string();
    v.push(shape("creationDateTimeUtc gt (newest 1%)", t, move |_| {
        format!(
            "$top=100&$filter={}",
            enc(&format!("creationDateTimeUtc gt {recent}"))
        )
    }));
    let old = d.created_at(n / 2).to_string();
    v.push(shape(
        "lastUpdateDateTimeUtc lt (older half)",
        t,
        move |_| {
            format!(
                "$top=100&$filter={}",
                enc(&format!("lastUpdateDateTimeUtc lt {old}"))
            )
        },
    ));
    v.push(shape("computerDnsName eq", t, move |k| {
        format!(
            "$top=100&$filter={}",
            enc(&format!(
                "computerDnsName eq 'HOST-{}'",
                1 + (k as i64 * 13) % m
            ))
        )
    }));
    v.push(shape("externalId eq", t, move |k| {
        let i = 10 * (1 + (k as i64 * 9_973) % (n / 10));
        format!(
            "$top=100&$filter={}",
            enc(&format!("externalId eq 'ext-{i}'"))
        )
    }));
    for field in [
        "id",
        "status",
        "machineId",
        "type",
        "requestor",
        "creationDateTimeUtc",
        "lastUpdateDateTimeUtc",
        "computerDnsName",
        "externalId",
    ] {
        for dir in ["asc", "desc"] {
            v.push(shape(format!("$orderby={field} {dir}"), t, move |_| {
                format!("$top=100&$orderby={}", enc(&format!("{field} {dir}")))
            }));
        }
    }
    v.push(shape("$orderby=requestor desc&$top=10", t, |_| {
        format!("$top=10&$orderby={}", enc("requestor desc"))
    }));
    v.push(shape("$count=true (all)", COUNT_TARGET_MS, |_| {
        "$count=true&$top=1".into()
    }));
    v.push(shape(
        "$count=true status eq 'Succeeded'",
        COUNT_TARGET_MS,
        |_| {
            format!(
                "$count=true&$top=1&$filter={}",
                enc("status eq 'Succeeded'")
            )
        },
    ));
    v.push(shape(
        "$count=true requestor eq 'app3'",
        COUNT_TARGET_MS,
        |_| format!("$count=true&$top=1&$filter={}", enc("requestor eq 'app3'")),
    ));
    let half = n / 2;
    v.push(shape(format!("$skip={half}&$top=100"), t, move |_| {
        format!("$skip={half}&$top=100")
    }));
    let deep = n - 200;
    v.push(shape(format!("$skip={deep}&$top=100"), t, move |_| {
        format!("$skip={deep}&$top=100")
    }));
    v
}

struct Row {
    name: String,
    p50: f64,
    p99: f64,
    max: f64,
    target_ms: f64,
    note: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn row(name: String, mut ms: Vec<f64>, target_ms: f64, note: String) -> Row {
    ms.sort_by(|a, b| a.total_cmp(b));
    Row {
        name,
        p50: percentile(&ms, 0.50),
        p99: percentile(&ms, 0.99),
        max: ms.last().copied().unwrap_or(0.0),
        target_ms,
        note,
    }
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
) -> Result<(f64, serde_json::Value), String> {
    let started = Instant::now();
    let r = http
        .get(url)
        .header("Authorization", auth)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok((ms, v))
}

async fn measure(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    d: &Data,
    o: &Options,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for s in shapes(d) {
        let mut ms = Vec::new();
        let mut returned = 0;
        let mut count = None;
        // One unmeasured request first: the server's first use of a statement.
        let _ = get(
            http,
            &format!("{base}/api/machineactions?{}", (s.query)(0)),
            auth,
        )
        .await?;
        for k in 0..o.reps {
            let url = format!("{base}/api/machineactions?{}", (s.query)(k));
            let (t, v) = get(http, &url, auth).await?;
            ms.push(t);
            returned = v["value"].as_array().map_or(0, Vec::len);
            count = v["@odata.count"].as_u64().or(count);
        }
        let note = match count {
            Some(c) => format!("{returned} rows, count {c}"),
            None => format!("{returned} rows"),
        };
        eprintln!("  {:<48} {note}", s.name);
        rows.push(row(s.name, ms, s.target_ms, note));
    }
    // Following @odata.nextLink: every page after the first, deep into the collection.
    for (name, first) in [
        (
            "nextLink walk, default order, $top=100",
            "$top=100".to_string(),
        ),
        (
            "nextLink walk, $orderby=requestor desc, $top=100",
            format!("$top=100&$orderby={}", enc("requestor desc")),
        ),
        (
            "nextLink walk, $orderby=lastUpdateDateTimeUtc asc, $top=100",
            format!("$top=100&$orderby={}", enc("lastUpdateDateTimeUtc asc")),
        ),
        (
            "nextLink walk, status eq 'Succeeded', $top=100",
            format!("$top=100&$filter={}", enc("status eq 'Succeeded'")),
        ),
    ] {
        let mut ms = Vec::new();
        let mut seen = 0usize;
        let mut next = Some(format!("{base}/api/machineactions?{first}"));
        let mut pages = 0;
        while let Some(url) = next.take() {
            if pages > o.pages {
                break;
            }
            let (t, v) = get(http, &url, auth).await?;
            if pages > 0 {
                ms.push(t);
            }
            pages += 1;
            seen += v["value"].as_array().map_or(0, Vec::len);
            // The link names the server's public URL; the benchmark talks to loopback.
            next = v["@odata.nextLink"].as_str().map(str::to_string);
        }
        let note = format!("{} pages, {seen} rows deep", ms.len());
        eprintln!("  {name:<48} {note}");
        rows.push(row(name.to_string(), ms, TOP_TARGET_MS, note));
    }
    Ok(rows)
}

fn render(engine: Engine, version: &str, d: &Data, fill_secs: f64, rows: &[Row]) -> String {
    let mut s = format!(
        "### {} ({version}): {} actions over {} machines (filled in {fill_secs:.0} s)\n\n\
         | shape | p50 ms | p99 ms | max ms | target (p99) | met | returned |\n\
         |---|---:|---:|---:|---:|:-:|---|\n",
        engine.name(),
        d.actions,
        d.machines
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | < {:.0} ms | {} | {} |\n",
            r.name.replace('|', "\\|"),
            r.p50,
            r.p99,
            r.max,
            r.target_ms,
            if r.p99 < r.target_ms { "yes" } else { "**no**" },
            r.note
        ));
    }
    let missed = rows.iter().filter(|r| r.p99 >= r.target_ms).count();
    s.push_str(&format!(
        "\n{} of {} shapes within target.\n",
        rows.len() - missed,
        rows.len()
    ));
    s
}

async fn run_engine(o: &Options, engine: Engine) -> Result<String, String> {
    eprintln!("== {}", engine.name());
    let dir = tempfile::Builder::new()
        .prefix("query-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| e.to_string())?;
    let config = dir.path().join("appfence.toml");
    // Far above what the run makes: the benchmark measures queries, not refusals.
    std::fs::write(
        &config,
        "[rate_limits]\nper_minute = 1000000000\nper_hour = 1000000000\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| e.to_string())?;

    let cluster = match engine {
        Engine::Postgres => Some(
            tokio::task::spawn_blocking(appfence_testkit::private_durable_cluster)
                .await
                .map_err(|e| e.to_string())??,
        ),
        Engine::Sqlite => None,
    };
    let database_url = match &cluster {
        Some(c) => Some(c.fresh_database()?),
        None => None,
    };
    let version = match &cluster {
        Some(c) => format!("PostgreSQL {}", c.psql("SHOW server_version")?),
        None => format!("SQLite {}", sqlite_version().await),
    };

    // The application, created as an operator would (this also migrates the store).
    let created = appfence(&o.bin, database_url.as_deref())
        .args([
            "app",
            "create",
            "--name",
            "query bench",
            "--role",
            "Machine.Read.All",
            "-o",
            "json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
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
    let tenant = field("tenantId");

    eprintln!("filling {} actions over {} machines", o.actions, o.machines);
    let started = Instant::now();
    let data = match &database_url {
        Some(url) => {
            let store = PgStore::open(url).await.map_err(|e| e.to_string())?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| e.to_string())?;
            let filler = Filler::Postgres(pool);
            let data = fill(engine, &store, &tenant, o, &filler).await?;
            store.close().await;
            // What autovacuum would do in time: statistics and the visibility map.
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql("VACUUM ANALYZE")
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            data
        }
        None => {
            let path = dir.path().join("data").join("appfence.db");
            let store = SqliteStore::open(&path).await.map_err(|e| e.to_string())?;
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .foreign_keys(false)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
                .busy_timeout(Duration::from_secs(60));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .map_err(|e| e.to_string())?;
            let filler = Filler::Sqlite(pool);
            let data = fill(engine, &store, &tenant, o, &filler).await?;
            store.close().await;
            data
        }
    };
    let fill_secs = started.elapsed().as_secs_f64();
    eprintln!("filled in {fill_secs:.1} s");

    let server = Serve {
        bin: &o.bin,
        dir: dir.path(),
        name: "serve",
        database_url: database_url.as_deref(),
        public_url: None,
        ready_within: Duration::from_secs(300),
    }
    .start()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let token = token(
        &http,
        &server.url,
        &tenant,
        &field("clientId"),
        &field("clientSecret"),
    )
    .await?;
    let rows = measure(&http, &server.url, &format!("Bearer {token}"), &data, o).await?;
    drop(server);
    drop(cluster);
    Ok(render(engine, &version, &data, fill_secs, &rows))
}

async fn sqlite_version() -> String {
    let Ok(mut c) = <sqlx::SqliteConnection as sqlx::Connection>::connect("sqlite::memory:").await
    else {
        return "?".into();
    };
    sqlx::query_scalar::<_, String>("SELECT sqlite_version()")
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|_| "?".into())
}
