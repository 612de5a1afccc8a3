//! Storage faults on real filesystems: `appfence serve --demo` with its data directory
//! (or its log) on a tiny tmpfs that the test fills and frees under load.
//!
//! The tmpfs lives in a private mount namespace held by a `sleep` process:
//! `timeout -s KILL` → `unshare -m --propagation private` → `sh -c 'mount tmpfs ... &&
//! exec sleep'`; each server runs in it through `nsenter --mount`, and the test reaches
//! the files through `/proc/<holder>/root/...`. Nothing outside the namespace is
//! mounted or filled; the holder is SIGKILLed on teardown (and by the timeout if the
//! test hangs), which unmounts everything.
//!
//! Without root this prints "skipped: ..." and passes, except under `CI=true`, where it
//! is a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::demo::{call, machine_ids, read_demo, token, wait_succeeded};
use crate::harness::{private_tempdir, within};
use crate::process::{free_port, wait_ready, ChildGuard, BIN};
use crate::writers::{indicator_writer, restrict_writer, Tally};

/// The whole namespace dies after this, whatever happens.
const NAMESPACE_LIFETIME_SECS: u32 = 300;
const START_LIMIT: Duration = Duration::from_secs(60);

/// Why this cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !crate::privileged::is_root() {
        return Some("not running as root (a private tmpfs needs it)".into());
    }
    crate::privileged::missing_tool(&["unshare", "nsenter", "timeout"])
        .or_else(|| crate::privileged::cannot_unshare(&["-m"]))
}

/// `true` when the test should run; prints why not, and fails under `CI=true`.
fn can_run(test: &str) -> bool {
    match unavailable() {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test} cannot run under CI: {why}")
        }
        Some(why) => {
            println!("skipped: {test}: {why}");
            false
        }
    }
}

/// A private mount namespace with tmpfs mounts, held by a sleeping process.
struct Namespace {
    holder: ChildGuard,
    holder_pid: u32,
    /// Where the mounts are, as seen inside the namespace.
    base: PathBuf,
    logs: PathBuf,
    _dir: tempfile::TempDir,
}

/// The only child of `pid`, once it has one.
fn child_of(pid: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let name = entry.ok()?.file_name();
        let Some(candidate) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{candidate}/stat")).unwrap_or_default();
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let parent = stat[close + 2..].split_whitespace().nth(1);
        if parent == Some(pid.to_string().as_str()) {
            return Some(candidate);
        }
    }
    None
}

impl Namespace {
    /// Mounts a tmpfs of `size` at `<base>/<name>` for each of `mounts`.
    fn start(mounts: &[(&str, &str)]) -> Namespace {
        let dir = private_tempdir();
        let base = dir.path().join("fs");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut script = String::from("set -e\n");
        for (name, size) in mounts {
            let at = base.join(name);
            std::fs::create_dir_all(&at).unwrap();
            script.push_str(&format!(
                "mount -t tmpfs -o size={size},mode=0700 appfence-test '{}'\n",
                at.display()
            ));
        }
        script.push_str(&format!(
            "echo mounted\nexec sleep {NAMESPACE_LIFETIME_SECS}\n"
        ));
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", &NAMESPACE_LIFETIME_SECS.to_string()])
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null());
        let holder = ChildGuard::spawn(cmd, &logs, "namespace");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !holder.stdout_text().contains("mounted") {
            assert!(
                Instant::now() < deadline,
                "the namespace did not start: {}",
                holder.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let holder_pid = child_of(holder.id()).expect("the namespace's holder");
        Namespace {
            holder,
            holder_pid,
            base,
            logs,
            _dir: dir,
        }
    }

    /// `name` as the servers inside see it.
    fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// `name` as this test reaches it, from outside the namespace.
    fn reach(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder_pid))
            .join(self.path(name).strip_prefix("/").unwrap())
    }

    /// `appfence serve ARGS` inside the namespace, its stderr to `stderr_inside` (a file
    /// inside) or to the test's log directory; waits until it is ready.
    fn serve(&self, args: &[String], stderr_inside: Option<&Path>, name: &str) -> ChildGuard {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder_pid.to_string(), "-m", "--"]);
        match stderr_inside {
            Some(file) => {
                let script = format!("exec \"$0\" serve \"$@\" 2>>'{}'", file.display());
                cmd.args(["sh", "-c", &script, BIN]);
            }
            None => {
                cmd.args([BIN, "serve"]);
            }
        }
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("APPFENCE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1").stdin(Stdio::null());
        let mut child = ChildGuard::spawn(cmd, &self.logs, name);
        wait_ready(&mut child, START_LIMIT);
        child
    }

    /// Fills the tmpfs `name` with a file until no byte more fits; returns its size.
    fn fill(&self, name: &str) -> u64 {
        let mut f = std::fs::File::create(self.reach(name).join("filler")).unwrap();
        let mut written = 0u64;
        for chunk in [1 << 20, 4096, 512] {
            let buf = vec![0xa5u8; chunk];
            while f.write_all(&buf).is_ok() {
                written += chunk as u64;
            }
        }
        let _ = f.flush();
        written
    }

    fn free(&self, name: &str) {
        std::fs::remove_file(self.reach(name).join("filler")).unwrap();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.holder_pid.to_string()])
            .status();
        self.holder.kill();
    }
}

fn serve_args(data_dir: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--demo",
        "--demo-step-delay",
        "0s",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The value of one sample of `/metrics`, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn metrics_text(http: &reqwest::Client, port: u16) -> String {
    http.get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn readiness(http: &reqwest::Client, base: &str) -> (u16, String) {
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_gets_503s_and_everything_recovers_by_itself() {
    if !can_run("full data disk") {
        return;
    }
    let ns = tokio::task::spawn_blocking(|| Namespace::start(&[("data", "24m")]))
        .await
        .unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    // Generous limits: the writers test the disk, not MDE's 100 calls a minute.
    let config = ns.logs.join("appfence.toml");
    std::fs::write(
        &config,
        "[rate_limits]\nper_minute = 1000000\nper_hour = 1000000\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let args = serve_args(
        &ns.path("data"),
        port,
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--config",
            config.to_str().unwrap(),
            // Warn early: half the tmpfs.
            "--disk-free-warning",
            "50%",
        ],
    );
    let server = {
        let (ns, args) = (&ns, args.clone());
        tokio::task::block_in_place(|| ns.serve(&args, None, "serve"))
    };
    let base = format!("http://127.0.0.1:{port}");
    let api = format!("{base}/api");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let demo = read_demo(&ns.reach("data"));
    let token = token(&http, &demo).await;
    let machines = machine_ids(&http, &token, &api).await;
    assert!(machines.len() >= 4, "{machines:?}");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in 0..3 {
        writers.push(tokio::spawn(indicator_writer(
            http.clone(),
            api.clone(),
            token.clone(),
            id,
            tally.clone(),
            stop.clone(),
        )));
    }
    for machine in &machines[..2] {
        writers.push(tokio::spawn(restrict_writer(
            http.clone(),
            api.clone(),
            token.clone(),
            machine.clone(),
            tally.clone(),
            stop.clone(),
        )));
    }
    within(Duration::from_secs(30), "writes to succeed before", async {
        while tally.of(200) + tally.of(201) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // The disk fills under the writers: 503s with Retry-After, never a 500 or a lost
    // connection; reads go on; readiness says why.
    let filled = tokio::task::block_in_place(|| ns.fill("data"));
    within(Duration::from_secs(60), "503s on a full disk", async {
        while tally.of(503) < 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let read = call(
        &http,
        &token,
        reqwest::Method::GET,
        &format!("{api}/machines"),
        None,
    )
    .await;
    assert_eq!(read.status, 200, "reads go on: {}", read.text);
    within(
        Duration::from_secs(20),
        "readiness to say the storage is full",
        async {
            loop {
                let (status, text) = readiness(&http, &base).await;
                if status == 503 {
                    assert_eq!(text, "not ready: storage full");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;

    // The early warning came first (at a sweep, every 5 s), with its metric.
    within(Duration::from_secs(20), "the free-space warning", async {
        while !server
            .stderr_text()
            .contains("the data directory's disk is nearly full")
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let m = metrics_text(&http, metrics_port).await;
    assert_eq!(metric(&m, "appfence_storage_low"), 1.0, "{m}");

    // Space comes back: writes succeed again by themselves.
    let full_503s = tally.of(503);
    ns.free("data");
    let freed_at = Instant::now();
    tally.freed.store(true, Ordering::SeqCst);
    within(
        Duration::from_secs(30),
        "writes to succeed after space is freed",
        async {
            while tally.since_freed.load(Ordering::SeqCst) < 10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let recovered_in = freed_at.elapsed();
    crate::writers::stop_writers(stop, writers).await;
    let unexpected = tally.unexpected.lock().unwrap().clone();
    let statuses = tally.statuses.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "{unexpected:?} (statuses {statuses:?})"
    );

    // An action created now completes on its (simulated) device.
    let r = call(
        &http,
        &token,
        reqwest::Method::POST,
        &format!("{api}/machines/{}/restrictCodeExecution", machines[3]),
        Some(json!({ "Comment": "after the disk was freed" })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_succeeded(&http, &token, &api, &id).await;
    tally.actions.lock().unwrap().push(id);
    within(
        Duration::from_secs(20),
        "readiness to be ready again",
        async {
            while readiness(&http, &base).await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;
    // Storage errors were counted by kind; the sweeper runs again.
    let m = metrics_text(&http, metrics_port).await;
    assert!(
        metric(&m, "appfence_storage_errors_total{kind=\"storage full\"}")
            >= full_503s as f64 * 0.5,
        "{m}"
    );
    assert_eq!(metric(&m, "appfence_storage_fault"), 0.0, "{m}");
    let sweeps = metric(&m, "appfence_sweeps_total{outcome=\"ok\"}");
    within(Duration::from_secs(30), "a sweep after recovery", async {
        while metric(
            &metrics_text(&http, metrics_port).await,
            "appfence_sweeps_total{outcome=\"ok\"}",
        ) <= sweeps
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    // A sweep reads the free space again (just after its own count: wait for it).
    within(
        Duration::from_secs(30),
        "the free space read again",
        async {
            loop {
                let m = metrics_text(&http, metrics_port).await;
                if metric(&m, "appfence_storage_free_bytes") > 0.0
                    && metric(&m, "appfence_storage_low") == 0.0
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    )
    .await;
    // Logged once for the episode, and its end; not once per request. A full disk may
    // still take a small write now and then (SQLite reuses its WAL after a checkpoint),
    // which ends an episode: a few episodes are right, a line per refusal is not.
    let log = server.stderr_text();
    let began = log
        .matches("storage full: requests that need it get 503")
        .count();
    let ended = log.matches("storage full is over").count();
    assert!(began >= 1, "{log}");
    assert_eq!(began, ended, "every episode ends: {log}");
    assert!(
        began as u64 <= 1 + full_503s / 10,
        "{began} episodes for {full_503s} refusals: {log}"
    );
    assert!(
        log.contains(&format!(
            "store=the database in {}",
            ns.path("data").display()
        )),
        "{log}"
    );

    // kill -9 and start again: every acknowledged write is there.
    let mut server = server;
    server.kill();
    let _server = tokio::task::block_in_place(|| ns.serve(&args, None, "serve-again"));
    let indicators = tally.indicators.lock().unwrap().clone();
    let actions = tally.actions.lock().unwrap().clone();
    let listed = call(
        &http,
        &token,
        reqwest::Method::GET,
        &format!("{api}/indicators"),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let present: std::collections::HashSet<String> = listed.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].to_string().trim_matches('"').to_string())
        .collect();
    for id in &indicators {
        assert!(present.contains(id), "acknowledged indicator {id} is lost");
    }
    for id in &actions {
        let r = call(
            &http,
            &token,
            reqwest::Method::GET,
            &format!("{api}/machineactions/{id}"),
            None,
        )
        .await;
        assert_eq!(
            r.status, 200,
            "acknowledged action {id} is lost: {}",
            r.text
        );
    }
    println!(
        "full data disk: filled {filled} bytes; statuses {statuses:?}; writes succeeded again \
         {recovered_in:?} after space was freed; {} indicators and {} actions acknowledged, all present after kill -9",
        indicators.len(),
        actions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_disk_never_costs_an_answer() {
    if !can_run("full log disk") {
        return;
    }
    let ns = tokio::task::spawn_blocking(|| Namespace::start(&[("data", "24m"), ("log", "1m")]))
        .await
        .unwrap();
    let port = free_port();
    let args = serve_args(&ns.path("data"), port, &["--log-level", "debug"]);
    let log_file = ns.path("log").join("serve.err");
    let _server = {
        let (ns, args, log_file) = (&ns, args.clone(), log_file.clone());
        tokio::task::block_in_place(|| ns.serve(&args, Some(&log_file), "serve"))
    };
    let api = format!("http://127.0.0.1:{port}/api");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let demo = read_demo(&ns.reach("data"));
    let token = token(&http, &demo).await;
    tokio::task::block_in_place(|| ns.fill("log"));

    // Every request logs (at debug, and refusals at info): all are answered.
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let (http, api, token) = (http.clone(), api.clone(), token.clone());
            tokio::spawn(async move {
                let bearer = if i % 2 == 0 {
                    token
                } else {
                    "not-a-token".to_string()
                };
                http.get(format!("{api}/machines"))
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut answers = BTreeMap::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(status) => *answers.entry(status).or_insert(0) += 1,
            Err(e) => panic!("a request lost its answer with the log on a full disk: {e}"),
        }
    }
    assert_eq!(answers, BTreeMap::from([(200, 30), (401, 30)]));

    // Space for the log again: the server says it lost lines.
    ns.free("log");
    let reach_log = ns.reach("log").join("serve.err");
    within(
        Duration::from_secs(20),
        "the log to say lines were lost",
        async {
            loop {
                let _ = http
                    .get(format!("{api}/machines"))
                    .bearer_auth("not-a-token")
                    .send()
                    .await;
                let text = std::fs::read_to_string(&reach_log).unwrap_or_default();
                if text.contains("log line(s) were lost") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;
    println!("full log disk: answers {answers:?}");
}
