//! The token endpoint under load and under attack, measured side by side in one run:
//!
//! 1. **Issuance rate** (client credentials, closed loop over loopback) of this build
//!    against a baseline build (`--baseline BIN`: the release binary of the version
//!    before secrets by kind), in alternating timed rounds, both servers running; and
//!    the server CPU each token costs (from `/proc/<pid>/stat`).
//! 2. **Argon2id and SHA-256 checks** in this process: one verification on the bounded
//!    pool, and one check of a generated secret.
//! 3. **Memory under a flood**: RSS of each server before, during (peak) and after a
//!    flood of wrong client secrets and wrong passwords from many loopback addresses,
//!    while a playbook keeps asking for tokens and calling the API from 127.0.0.1.
//!
//! Each server runs as its own process (`appfence serve --demo`) so its RSS is its own.
//! Progress goes to stderr, the Markdown report to stdout; everything stops by itself.
//!
//! `cargo run --release -p appfence-bench --bin token_bench -- [--baseline BIN] [--quick]`

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appfence_bench::harness;
use appfence_server::oauth::password_pool::PasswordPool;
use appfence_server::oauth::secrets::{
    generate_secret, hash_generated_secret, verify_generated_secret,
};
use serde_json::Value;

const USAGE: &str = "token_bench [--baseline BIN] [--quick] [--rounds N] [--round-secs S]
  --baseline BIN   release `appfence` of the previous version, run side by side
  --quick          a smoke run: short rounds, a small flood";

/// The run stops by itself even if something hangs.
const RUN_LIMIT: Duration = Duration::from_secs(900);

struct Options {
    baseline: Option<PathBuf>,
    rounds: usize,
    round: Duration,
    wrong_secrets: usize,
    wrong_passwords: usize,
    baseline_wrong_secrets: usize,
    baseline_wrong_passwords: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let mut o = Options {
            baseline: None,
            rounds: 6,
            round: Duration::from_secs(3),
            wrong_secrets: 10_000,
            wrong_passwords: 1_000,
            baseline_wrong_secrets: 300,
            baseline_wrong_passwords: 100,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--help" | "-h" => return Ok(None),
                "--baseline" => {
                    o.baseline = Some(it.next().ok_or("--baseline needs a path")?.into())
                }
                "--quick" => {
                    o.rounds = 2;
                    o.round = Duration::from_secs(1);
                    o.wrong_secrets = 1_000;
                    o.wrong_passwords = 100;
                    o.baseline_wrong_secrets = 40;
                    o.baseline_wrong_passwords = 10;
                }
                "--rounds" => {
                    o.rounds = it
                        .next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--rounds needs a number")?
                }
                "--round-secs" => {
                    o.round = Duration::from_secs(
                        it.next()
                            .and_then(|n| n.parse().ok())
                            .ok_or("--round-secs needs a number")?,
                    )
                }
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        Ok(Some(o))
    }
}

/// A server process with its demo credentials.
struct Server {
    name: &'static str,
    child: Child,
    demo: Value,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(name: &'static str, bin: &Path) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("token-bench-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let data = dir.path().join("data");
        let out = dir.path().join("serve.out");
        let child = Command::new(bin)
            .args(["serve", "--demo", "--demo-devices", "5", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .env("APPFENCE_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = Server {
            name,
            child,
            demo: Value::Null,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("Press Ctrl-C to stop.")
        {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{name} server exited with {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} server did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(data.join("demo.json")).map_err(|e| e.to_string())?;
        server.demo = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn field(&self, name: &str) -> String {
        self.demo[name].as_str().unwrap_or_default().to_string()
    }
}

/// Resident set size of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) a process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

fn token_form<'a>(server: &'a Server, secret: &'a str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", server.field("clientId")),
        ("client_secret", secret.to_string()),
        (
            "scope",
            "https://api.securitycenter.microsoft.com/.default".into(),
        ),
    ]
}

/// Closed-loop token requests for `span`: (tokens issued, failures).
async fn issue_for(
    http: &reqwest::Client,
    server: &Server,
    span: Duration,
    concurrency: usize,
) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + span;
    let url = server.field("tokenUrl");
    let form = token_form(server, &server.field("clientSecret"));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, form, ok, failed) = (
            http.clone(),
            url.clone(),
            form.clone(),
            ok.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match http.post(&url).form(&form).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

/// One server's issuance over all its rounds.
#[derive(Default)]
struct Issuance {
    tokens: u64,
    failures: u64,
    wall: Duration,
    cpu: Duration,
}

impl Issuance {
    fn rate(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    fn cpu_per_token_ms(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.tokens.max(1) as f64
    }
}

/// The memory of one server around a flood.
struct Flood {
    addresses: usize,
    wrong_secrets: usize,
    wrong_passwords: usize,
    before: f64,
    peak: f64,
    after: f64,
    took: Duration,
    status_counts: std::collections::BTreeMap<u16, u64>,
    playbook_ok: u64,
    playbook_failed: u64,
}

/// A client whose requests come from 127.x.y.z: many source addresses, as a
/// distributed attacker would have.
fn client_from(i: usize) -> reqwest::Client {
    let ip: IpAddr = format!("127.1.{}.{}", i / 200, 2 + i % 200)
        .parse()
        .unwrap();
    reqwest::Client::builder()
        .local_address(ip)
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A flood from `addresses` source addresses: with few, the per-address limits refuse
/// most of it at once; with many (each under the limit), every request is checked.
async fn flood(
    server: &Server,
    wrong_secrets: usize,
    wrong_passwords: usize,
    addresses: usize,
) -> Flood {
    let pid = server.pid();
    let before = rss_mib(pid);
    let url = server.field("tokenUrl");
    let v1 = url.replace("/v2.0/token", "/token");
    let client_id = server.field("clientId");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new((before * 1024.0) as u64));
    // RSS, sampled every 50 ms.
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max((rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // The playbook: a token and an API call every 0.7 s, from 127.0.0.1.
    let playbook = {
        let stop = stop.clone();
        let http = reqwest::Client::new();
        let form = token_form(server, &server.field("clientSecret"));
        let (url, api) = (url.clone(), server.field("apiBaseUrl"));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let token = match http.post(&url).form(&form).send().await {
                    Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                    _ => None,
                };
                let called = match token.as_ref().and_then(|t| t["access_token"].as_str()) {
                    Some(t) => http
                        .get(format!("{api}/machines"))
                        .bearer_auth(t)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200),
                    None => false,
                };
                if called {
                    ok += 1
                } else {
                    failed += 1
                }
                // Under MDE's 100 API calls a minute.
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            (ok, failed)
        })
    };
    let started = Instant::now();
    let counts = Arc::new(std::sync::Mutex::new(
        std::collections::BTreeMap::<u16, u64>::new(),
    ));
    let workers = 64;
    let clients: Arc<Vec<reqwest::Client>> = Arc::new((0..addresses).map(client_from).collect());
    let mut tasks = Vec::new();
    for w in 0..workers {
        let clients = clients.clone();
        let (url, v1, client_id, counts) =
            (url.clone(), v1.clone(), client_id.clone(), counts.clone());
        let secrets = (w..wrong_secrets).step_by(workers).count();
        let passwords = (w..wrong_passwords).step_by(workers).count();
        tasks.push(tokio::spawn(async move {
            let record = |status: u16| *counts.lock().unwrap().entry(status).or_default() += 1;
            for i in 0..secrets.max(passwords) {
                let http = &clients[(i * workers + w) % clients.len()];
                if i < secrets {
                    let form = [
                        ("grant_type", "client_credentials".to_string()),
                        ("client_id", client_id.clone()),
                        ("client_secret", generate_secret()),
                        (
                            "scope",
                            "https://api.securitycenter.microsoft.com/.default".into(),
                        ),
                    ];
                    record(
                        http.post(&url)
                            .form(&form)
                            .send()
                            .await
                            .map_or(0, |r| r.status().as_u16()),
                    );
                }
                if i < passwords {
                    let form = [
                        ("grant_type", "password".to_string()),
                        ("client_id", client_id.clone()),
                        ("username", format!("user{}@demo.appfence.local", i % 50)),
                        ("password", generate_secret()),
                        (
                            "resource",
                            "https://api.securitycenter.microsoft.com".into(),
                        ),
                    ];
                    record(
                        http.post(&v1)
                            .form(&form)
                            .send()
                            .await
                            .map_or(0, |r| r.status().as_u16()),
                    );
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed();
    // Let the playbook see the server settle, then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let (playbook_ok, playbook_failed) = playbook.await.unwrap_or((0, 0));
    // After: the lowest RSS over the next 10 s (what the allocator gave back).
    let mut after = rss_mib(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = after.min(rss_mib(pid));
    }
    let status_counts = counts.lock().unwrap().clone();
    Flood {
        addresses,
        wrong_secrets,
        wrong_passwords,
        before,
        peak: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        after,
        took,
        status_counts,
        playbook_ok,
        playbook_failed,
    }
}

/// Mean time of `f` over `n` calls.
fn mean_of(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

async fn run(o: &Options) -> Result<String, String> {
    let own = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("appfence");
    if !own.exists() {
        return Err(format!(
            "{} does not exist: build it first (cargo build --release -p appfence-cli)",
            own.display()
        ));
    }
    let mut report = String::new();
    let started = Instant::now();

    // 2. The checks themselves, in this process.
    eprintln!("measuring one Argon2id verification and one SHA-256 check");
    let pool = PasswordPool::new(1, 4);
    let phc = pool
        .hash("correct horse battery staple")
        .await
        .map_err(|_| "busy")?;
    let argon = {
        let n = 20;
        let start = Instant::now();
        for _ in 0..n {
            pool.verify("correct horse battery staple", Some(&phc))
                .await
                .map_err(|_| "busy")?;
        }
        start.elapsed() / n
    };
    let secret = generate_secret();
    let stored = hash_generated_secret(&secret);
    let hex = stored.trim_start_matches("sha256:").to_string();
    let sha = mean_of(100_000, || {
        std::hint::black_box(verify_generated_secret(
            std::hint::black_box(&secret),
            Some(&hex),
        ));
    });

    // 1. Issuance rate, side by side.
    eprintln!("starting servers");
    let new = Server::start("this build", &own)?;
    let old = match &o.baseline {
        Some(bin) => Some(Server::start("baseline", bin)?),
        None => None,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    // 3. Floods, on fresh servers (the baseline's issuance rounds would swell it first).
    eprintln!(
        "flooding this build: {} wrong secrets, {} wrong passwords",
        o.wrong_secrets, o.wrong_passwords
    );
    let new_flood = flood(&new, o.wrong_secrets, o.wrong_passwords, 64).await;
    eprintln!("flooding this build again from 512 addresses (under every per-address limit)");
    let wide_flood = flood(&new, o.wrong_secrets, o.wrong_passwords, 512).await;
    let old_flood = match &old {
        Some(s) => {
            eprintln!(
                "flooding the baseline: {} wrong secrets, {} wrong passwords",
                o.baseline_wrong_secrets, o.baseline_wrong_passwords
            );
            Some(flood(s, o.baseline_wrong_secrets, o.baseline_wrong_passwords, 64).await)
        }
        None => None,
    };

    let concurrency = 8;
    let mut results = [Issuance::default(), Issuance::default()];
    for round in 0..o.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for i in order {
            let server = match i {
                0 => &new,
                _ => match &old {
                    Some(s) => s,
                    None => continue,
                },
            };
            let cpu0 = cpu_time(server.pid());
            let t0 = Instant::now();
            let (ok, failed) = issue_for(&http, server, o.round, concurrency).await;
            let r = &mut results[i];
            r.wall += t0.elapsed();
            r.cpu += cpu_time(server.pid()).saturating_sub(cpu0);
            r.tokens += ok;
            r.failures += failed;
            eprintln!(
                "round {round}: {} issued {ok} tokens ({failed} failures)",
                server.name
            );
        }
    }
    let [fresh, before] = results;

    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    report.push_str(&format!(
        "### Token endpoint (`token_bench`)\n\n{cores} cores ({host}); rounds {} × {:?} per server, {concurrency} concurrent clients; total {:.0} s.\n\n",
        o.rounds,
        o.round,
        started.elapsed().as_secs_f64()
    ));
    report.push_str("| client credentials | tokens/s | server CPU per token | failures |\n|---|---:|---:|---:|\n");
    report.push_str(&format!(
        "| this build (SHA-256 secrets) | {:.0} | {:.3} ms | {} |\n",
        fresh.rate(),
        fresh.cpu_per_token_ms(),
        fresh.failures
    ));
    if old.is_some() {
        report.push_str(&format!(
            "| baseline (Argon2id secrets) | {:.1} | {:.2} ms | {} |\n\n**Ratio: {:.0}× the tokens per second**, {:.0}× less CPU per token.\n\n",
            before.rate(),
            before.cpu_per_token_ms(),
            before.failures,
            fresh.rate() / before.rate().max(1e-9),
            before.cpu_per_token_ms() / fresh.cpu_per_token_ms().max(1e-9),
        ));
    } else {
        report.push_str("\n(no --baseline: the previous version was not measured)\n\n");
    }
    report.push_str(&format!(
        "Checks in-process: Argon2id (m=19 MiB, t=2, p=1) verification **{:.1} ms**; SHA-256 check of a generated secret **{:.2} µs** ({:.0}× less).\n\n",
        argon.as_secs_f64() * 1000.0,
        sha.as_secs_f64() * 1e6,
        argon.as_secs_f64() / sha.as_secs_f64().max(1e-12)
    ));
    report.push_str("| flood | from addresses | wrong secrets | wrong passwords | took | RSS before | peak | after (min over 10 s) | after − before | answers | playbook ok / failed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
    for (name, f) in [
        ("this build", Some(&new_flood)),
        ("this build, again", Some(&wide_flood)),
        ("baseline", old_flood.as_ref()),
    ] {
        let Some(f) = f else { continue };
        let answers = f
            .status_counts
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        report.push_str(&format!(
            "| {name} | {} | {} | {} | {:.1} s | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:+.0} MiB | {answers} | {} / {} |\n",
            f.addresses,
            f.wrong_secrets,
            f.wrong_passwords,
            f.took.as_secs_f64(),
            f.before,
            f.peak,
            f.after,
            f.after - f.before,
            f.playbook_ok,
            f.playbook_failed
        ));
    }
    if fresh.failures > 0 || new_flood.playbook_failed > 0 || wide_flood.playbook_failed > 0 {
        return Err(format!("{report}\nrequests of this build failed"));
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (options, _) = match harness::options(USAGE, Options::parse) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    harness::report_within("token_bench", RUN_LIMIT, run(&options)).await
}
