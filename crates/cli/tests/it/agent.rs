//! The real server and the real `appfence agent`, end to end, enforcing for real.
//!
//! A holder process (`sleep`) keeps a private mount and PID namespace alive, with a
//! private tmpfs mounted in it: `timeout -s KILL` → `unshare -m -p -f --kill-child
//! --mount-proc --propagation private` → `sh -c 'mount tmpfs && exec sleep'`. The agent
//! runs inside that namespace (`nsenter --mount --pid`) with `--only-mount` on the tmpfs,
//! so nothing else is ever marked, and `vm.memfd_noexec` changes only the private PID
//! namespace's copy. Test programs run there through `nsenter --mount`. The guard
//! SIGKILLs the namespace's init on teardown, which takes every agent with it; so does
//! the timeout if the test hangs.
//!
//! Without root the test prints "skipped: ..." and passes (unless
//! `APPFENCE_REQUIRE_FANOTIFY=1`). As root (CI) a missing `unshare`/`nsenter` or
//! fanotify is a failure; `APPFENCE_SKIP_FANOTIFY=1` skips explicitly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Api, TestServer, ROLE_READ, ROLE_RESTRICT};
use crate::process::{ChildGuard, BIN};

const REQUIRE_ENV: &str = "APPFENCE_REQUIRE_FANOTIFY";
const SKIP_ENV: &str = "APPFENCE_SKIP_FANOTIFY";
const ROLE_TI: &str = "Ti.ReadWrite.All";
/// The whole scenario's namespace dies after this, whatever happens.
const NAMESPACE_LIFETIME_SECS: u32 = 240;

const NOT_ROOT: &str = "not running as root";

/// Why this cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !crate::privileged::is_root() {
        return Some(NOT_ROOT.into());
    }
    if !appfence_agent::linux::probe_capabilities().can_restrict_execution {
        return Some("this kernel cannot restrict execution with fanotify".into());
    }
    crate::privileged::missing_tool(&["unshare", "nsenter", "timeout", "sha256sum"])
        .or_else(|| crate::privileged::cannot_unshare(&["-m", "-p", "-f", "--mount-proc"]))
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A descendant of `ancestor` (host PIDs) whose command is `name`, if one runs.
fn descendant_named(ancestor: u32, name: &str) -> Option<u32> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.into_iter().find(|&pid| {
        if comm(pid) != name {
            return false;
        }
        let mut p = pid;
        for _ in 0..8 {
            match parent_of(p) {
                Some(parent) if parent == ancestor => return true,
                Some(parent) if parent > 1 => p = parent,
                _ => return false,
            }
        }
        false
    })
}

/// What `probe` finds within `limit`, or `None`: the caller says what went wrong.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// The private namespace with its tmpfs; SIGKILLs its init when dropped.
struct Namespace {
    holder: ChildGuard,
    /// Host PID of the namespace's init (the `sleep`).
    init: u32,
    tmpfs: PathBuf,
    dir: PathBuf,
}

impl Namespace {
    fn start(dir: &Path) -> Namespace {
        let tmpfs = dir.join("fence");
        std::fs::create_dir(&tmpfs).unwrap();
        // The agent's state directory on a tmpfs of its own, small enough to fill.
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        let script = format!(
            "mount -t tmpfs -o size=64m,mode=0755 appfence-e2e {} && \
             mount -t tmpfs -o size=2m,mode=0700 appfence-state {} && exec sleep {NAMESPACE_LIFETIME_SECS}",
            tmpfs.display(),
            state.display()
        );
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", &NAMESPACE_LIFETIME_SECS.to_string()])
            .args(["unshare", "-m", "-p", "-f", "--kill-child", "--mount-proc"])
            .args(["--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null());
        let holder = ChildGuard::spawn(cmd, dir, "namespace");
        let init = wait_for(Duration::from_secs(10), || {
            descendant_named(holder.id(), "sleep")
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for the namespace's init; stderr:\n{}",
                holder.stderr_text()
            )
        });
        let ns = Namespace {
            holder,
            init,
            tmpfs,
            dir: dir.to_path_buf(),
        };
        // The tmpfs is mounted once `sleep` runs; check it from inside.
        let out = ns.run(&["sh", "-c", "grep -q appfence-e2e /proc/1/mountinfo"]);
        assert!(
            out.status.success(),
            "the tmpfs is not mounted in the namespace"
        );
        ns
    }

    /// Runs a command in the namespace's mount namespace.
    fn run(&self, argv: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args(["--target", &self.init.to_string(), "--mount", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    fn path(&self, name: &str) -> String {
        self.tmpfs.join(name).display().to_string()
    }

    /// Copies `from` into the tmpfs as an executable.
    fn copy(&self, from: &str, name: &str) -> String {
        let to = self.path(name);
        let out = self.run(&["sh", "-c", &format!("cp {from} {to} && chmod 755 {to}")]);
        assert!(out.status.success(), "copy {from}: {out:?}");
        to
    }

    /// `Ok` if the program ran (whatever its exit code), `Err(stderr)` if its execution
    /// was refused.
    fn exec(&self, program: &str) -> Result<(), String> {
        let out = self.run(&[program]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
            Err(stderr)
        } else {
            Ok(())
        }
    }

    /// Starts `appfence agent` inside the namespace (mount and PID): returns its guard
    /// (on `nsenter`) and the agent's host PID.
    fn start_agent(&self, name: &str, args: &[String]) -> (ChildGuard, u32) {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.init.to_string(), "--mount", "--pid", "--"])
            .arg(BIN)
            .arg("agent")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("APPFENCE_") {
                cmd.env_remove(k);
            }
        }
        let guard = ChildGuard::spawn(cmd, &self.dir, name);
        let pid = wait_for(Duration::from_secs(10), || {
            descendant_named(guard.id(), "appfence")
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out waiting for the agent process {name}; its stderr:\n{}",
                guard.stderr_text()
            )
        });
        (guard, pid)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The PID namespace's init: the kernel kills every process in it.
        kill9(self.init);
        self.holder.kill();
    }
}

fn sha256_of(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

async fn wait_async<T>(
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn action_final(api: &Api, id: &str) -> Value {
    wait_async(
        Duration::from_secs(30),
        "the action to finish",
        async || {
            let a = api.action(id).await;
            let status = a["status"].as_str().unwrap_or_default().to_string();
            ["Succeeded", "Failed", "Cancelled", "TimeOut"]
                .contains(&status.as_str())
                .then_some(a)
        },
    )
    .await
}

async fn enforcement(api: &Api, machine: &str) -> Value {
    let r = api
        .get(&format!("/api/machines/{machine}/enforcement"))
        .await;
    assert_eq!(r.status, 200, "enforcement: {}", r.text);
    r.json()
}

/// Runs blocking namespace work off the runtime's threads.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_agent_restricts_and_lifts_for_real() {
    if let Some(why) = unavailable() {
        // As root (CI) the agent must be testable: a missing tool or kernel feature fails.
        let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1")
            || (why != NOT_ROOT && std::env::var(SKIP_ENV).as_deref() != Ok("1"));
        if required {
            panic!("the agent cannot be tested here ({why}); as root it must be (set {SKIP_ENV}=1 to skip)");
        }
        println!("skipped: {why}");
        return;
    }
    let server = TestServer::start().await;
    let api = server
        .api(&[
            ROLE_RESTRICT,
            ROLE_READ,
            ROLE_TI,
            "Machine.Offboard",
            "Alert.ReadWrite.All",
        ])
        .await;
    let secret = server.enroll_secret(&server.tenant_id.clone()).await;
    let tmp = crate::harness::private_tempdir();
    let ns = std::sync::Arc::new(tokio::task::block_in_place(|| Namespace::start(tmp.path())));
    let state_dir = tmp.path().join("state");
    let agent_args: Vec<String> = vec![
        "--server".into(),
        server.base.clone(),
        "--enroll-secret".into(),
        secret.clone(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--only-mount".into(),
        ns.tmpfs.display().to_string(),
        "--log-level".into(),
        "info,appfence_agent=debug".into(),
    ];
    let (unknown, copied_true) = {
        let ns = ns.clone();
        off_runtime(move || {
            (
                ns.copy("/bin/false", "unknown"),
                ns.copy("/bin/true", "true"),
            )
        })
        .await
    };
    let exec = |program: &str| {
        let (ns, program) = (ns.clone(), program.to_string());
        off_runtime(move || ns.exec(&program))
    };
    assert!(exec(&unknown).await.is_ok(), "runs before any restriction");

    let (mut agent, agent_pid) =
        tokio::task::block_in_place(|| ns.start_agent("agent-1", &agent_args));
    let dump = |agent: &ChildGuard| format!("agent stderr:\n{}", agent.stderr_text());

    // Enrolment: the host appears as a Linux machine.
    let machine = wait_async(
        Duration::from_secs(20),
        "the machine to enrol",
        async || {
            let r = api.get("/api/machines").await;
            let list = r.json();
            list["value"].as_array()?.first().cloned()
        },
    )
    .await;
    let machine_id = machine["id"].as_str().unwrap().to_string();
    assert_eq!(machine["osPlatform"], "Linux", "{machine}");

    // Restrict through the public API.
    let started = Instant::now();
    let r = api.restrict(&machine_id, "e2e: restrict").await;
    assert_eq!(r.status, 201, "restrict: {}", r.text);
    let restrict_id = r.json()["id"].as_str().unwrap().to_string();
    let done = action_final(&api, &restrict_id).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", dump(&agent));
    println!("restrict Succeeded after {:?}", started.elapsed());
    let reported = wait_async(
        Duration::from_secs(20),
        "the restriction in a heartbeat",
        async || {
            let e = enforcement(&api, &machine_id).await;
            (e["reported"]["restricted"] == true).then_some(e)
        },
    )
    .await;
    let coverage = reported["reported"]["coverage"].to_string();
    assert!(
        coverage.contains(&ns.tmpfs.display().to_string()),
        "coverage: {reported}"
    );
    let denied_at = Instant::now();
    assert!(exec(&unknown).await.is_err(), "an unknown binary is denied");
    // The denial becomes an alert with the file's evidence (measured, not asserted:
    // the agent sends within 2 s, the server stores the alert with the batch).
    // A copy of /bin/false: the same bytes, outside the trusted set.
    let unknown_sha = sha256_of("/bin/false");
    let alert = wait_async(Duration::from_secs(20), "the alert", async || {
        let v = api.get("/api/alerts?$top=1&$expand=evidence").await.json();
        let a = v["value"].as_array()?.first()?.clone();
        (a["evidence"][0]["sha256"] == unknown_sha.as_str()).then_some(a)
    })
    .await;
    println!("alert queryable {:?} after the denial", denied_at.elapsed());
    assert_eq!(alert["machineId"], machine_id.as_str(), "{alert}");
    assert_eq!(alert["category"], "Execution", "{alert}");
    let (dir, name) = unknown.rsplit_once('/').unwrap();
    assert_eq!(alert["evidence"][0]["fileName"], name, "{alert}");
    assert_eq!(alert["evidence"][0]["filePath"], dir, "{alert}");
    assert_eq!(
        alert["evidence"][0]["detectionStatus"], "Blocked",
        "{alert}"
    );
    // The test runs the program from outside the agent's pid namespace, where fanotify
    // names no process (pid 0): no Process evidence then (the enforcer's own fanotify
    // test checks the command line and user of a process it can see).
    let evidence = alert["evidence"].as_array().unwrap();
    for p in evidence.iter().filter(|e| e["entityType"] == "Process") {
        assert!(p["processId"].as_u64().unwrap() > 0, "{alert}");
        assert!(p["processCommandLine"].is_string(), "{alert}");
    }
    assert!(
        exec(&copied_true).await.is_err(),
        "a copied /bin/true is not trusted"
    );

    // Allowlist /bin/true by its SHA-256: it runs once the agent fetched the new list.
    let r = api
        .post(
            "/api/indicators",
            &json!({
                "indicatorValue": sha256_of("/bin/true"),
                "indicatorType": "FileSha256",
                "action": "Allowed",
                "title": "true",
                "description": "e2e: allowed everywhere",
            }),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "indicator: {}", r.text);
    let t = copied_true.clone();
    wait_async(
        Duration::from_secs(30),
        "the allowlisted binary to run",
        async || exec(&t).await.ok(),
    )
    .await;
    assert!(exec(&unknown).await.is_err(), "still denied");

    // The denials reach the server.
    let events = wait_async(Duration::from_secs(20), "denial events", async || {
        let r = api.get(&format!("/api/machines/{machine_id}/events")).await;
        let v = r.json();
        let found = v["value"]
            .as_array()?
            .iter()
            .any(|e| e["path"] == unknown.as_str());
        found.then_some(v)
    })
    .await;
    println!("events: {events}");
    // Repeated runs of the same file stay one alert.
    let same_file = api
        .get(&format!(
            "/api/machines/{machine_id}/alerts?$expand=evidence"
        ))
        .await
        .json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["evidence"][0]["sha256"] == unknown_sha.as_str())
        .count();
    assert_eq!(same_file, 1, "one alert for the repeated denials");
    let alert_id = alert["id"].as_str().unwrap();
    let r = api
        .patch(
            &format!("/api/alerts/{alert_id}"),
            &json!({"status": "Resolved", "comment": "e2e: contained"}),
        )
        .await;
    assert_eq!(r.status, 200, "resolve: {}", r.text);
    assert_eq!(r.json()["status"], "Resolved");

    // kill -9 while restricted: the kernel fails open.
    kill9(agent_pid);
    let _ = off_runtime(move || {
        agent.wait(Duration::from_secs(10));
        agent
    })
    .await;
    assert!(
        exec(&unknown).await.is_ok(),
        "fail-open after the agent died"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Restart: re-applied from the state directory, without any server action.
    let actions_before = server.stored_actions(&server.tenant_id.clone()).await.len();
    let (agent, _) = tokio::task::block_in_place(|| ns.start_agent("agent-2", &agent_args));
    let u = unknown.clone();
    wait_async(
        Duration::from_secs(20),
        "the restriction to be re-applied",
        async || exec(&u).await.is_err().then_some(()),
    )
    .await;
    assert!(
        exec(&copied_true).await.is_ok(),
        "the recorded allowlist is back too"
    );
    assert_eq!(
        server.stored_actions(&server.tenant_id.clone()).await.len(),
        actions_before,
        "no server action was needed"
    );
    let reported = wait_async(
        Duration::from_secs(20),
        "an unprotected period in a heartbeat",
        async || {
            let e = enforcement(&api, &machine_id).await;
            (!e["reported"]["lastUnprotected"].is_null()).then_some(e)
        },
    )
    .await;
    println!("after restart: {reported}");
    assert_eq!(reported["reported"]["restricted"], true);
    assert!(
        reported["reported"]["unprotectedSeconds"].as_u64().unwrap() >= 1,
        "{reported}"
    );
    // The gap is an alert, once.
    let gaps = api
        .get(&format!(
            "/api/machines/{machine_id}/alerts?$filter=category eq 'DefenseEvasion'&$expand=evidence"
        ))
        .await
        .json();
    let gaps = gaps["value"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["title"], "Restricted device was unprotected");
    assert_eq!(
        gaps[0]["firstEventTime"],
        reported["reported"]["lastUnprotected"]["from"]
    );

    // The state directory fills up: the agent goes on enforcing and the server shows
    // the condition on the machine; once there is space again, it clears.
    let filler = state_dir.join("filler").display().to_string();
    {
        let (ns, filler) = (ns.clone(), filler.clone());
        off_runtime(move || ns.run(&["sh", "-c", &format!("cat /dev/zero > {filler}")])).await;
    }
    let submit_indicator = async |n: u8| {
        let r = api
            .post(
                "/api/indicators",
                &json!({
                    "indicatorValue": format!("{n:02x}").repeat(32),
                    "indicatorType": "FileSha256",
                    "action": "Allowed",
                    "title": format!("tool {n}"),
                    "description": "e2e: a new allowlist for the agent to record",
                }),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "indicator: {}", r.text);
    };
    submit_indicator(0xc1).await;
    let reported = wait_async(
        Duration::from_secs(30),
        "the full state directory in a heartbeat",
        async || {
            let e = enforcement(&api, &machine_id).await;
            (!e["reported"]["stateFault"].is_null()).then_some(e)
        },
    )
    .await;
    let fault = &reported["reported"]["stateFault"];
    assert!(
        fault["path"]
            .as_str()
            .unwrap()
            .starts_with(&state_dir.display().to_string()),
        "{reported}"
    );
    assert!(
        fault["error"].as_str().unwrap().contains("No space left"),
        "{reported}"
    );
    assert_eq!(reported["reported"]["restricted"], true, "{reported}");
    assert!(
        exec(&unknown).await.is_err(),
        "still enforcing on a full state directory"
    );
    {
        let ns = ns.clone();
        off_runtime(move || ns.run(&["rm", "-f", &filler])).await;
    }
    submit_indicator(0xc2).await;
    wait_async(
        Duration::from_secs(30),
        "the state directory's fault to clear",
        async || {
            let e = enforcement(&api, &machine_id).await;
            e["reported"]["stateFault"].is_null().then_some(())
        },
    )
    .await;

    // Unrestrict: lifted.
    let r = api.unrestrict(&machine_id, "e2e: lift").await;
    assert_eq!(r.status, 201, "unrestrict: {}", r.text);
    let lift_id = r.json()["id"].as_str().unwrap().to_string();
    let done = action_final(&api, &lift_id).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", dump(&agent));
    assert!(
        exec(&unknown).await.is_ok(),
        "the unknown binary runs again"
    );
    wait_async(
        Duration::from_secs(20),
        "the lift in a heartbeat",
        async || {
            let e = enforcement(&api, &machine_id).await;
            (e["reported"]["restricted"] == false).then_some(())
        },
    )
    .await;

    // Restricted again, then offboarded: the agent lifts the restriction (the fanotify
    // group goes), reports, forgets its credential and exits 0.
    let r = api
        .restrict(&machine_id, "e2e: restrict before offboarding")
        .await;
    assert_eq!(r.status, 201, "restrict: {}", r.text);
    let done = action_final(&api, r.json()["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", dump(&agent));
    assert!(exec(&unknown).await.is_err(), "denied again");
    let r = api
        .post(
            &format!("/api/machines/{machine_id}/offboard"),
            &json!({"Comment": "e2e: offboard"}),
        )
        .await;
    assert_eq!(r.status, 201, "offboard: {}", r.text);
    let done = action_final(&api, r.json()["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", dump(&agent));
    let mut agent = agent;
    let status = off_runtime(move || {
        let status = agent.wait(Duration::from_secs(20));
        (status, agent)
    })
    .await;
    let (status, agent) = status;
    assert!(
        status.success(),
        "the agent exits 0: {status:?}\n{}",
        dump(&agent)
    );
    assert!(
        dump(&agent).contains("this device is offboarded"),
        "{}",
        dump(&agent)
    );
    assert!(exec(&unknown).await.is_ok(), "nothing is enforced any more");
    // (The state directory is a tmpfs of the namespace: list it from inside.)
    let listed = {
        let (ns, dir) = (ns.clone(), state_dir.display().to_string());
        off_runtime(move || ns.run(&["ls", "-A", &dir])).await
    };
    let left = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["offboarded.json"],
        "{}",
        dump(&agent)
    );
    let m = api.get(&format!("/api/machines/{machine_id}")).await.json();
    assert_eq!(m["onboardingStatus"], "Offboarded", "{m}");
    drop(agent);
    drop(ns);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_agent_blocks_a_hash_on_an_unrestricted_host() {
    if let Some(why) = unavailable() {
        let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1")
            || (why != NOT_ROOT && std::env::var(SKIP_ENV).as_deref() != Ok("1"));
        if required {
            panic!("the agent cannot be tested here ({why}); as root it must be (set {SKIP_ENV}=1 to skip)");
        }
        println!("skipped: {why}");
        return;
    }
    let server = TestServer::start().await;
    let api = server.api(&[ROLE_READ, ROLE_TI]).await;
    let secret = server.enroll_secret(&server.tenant_id.clone()).await;
    let tmp = crate::harness::private_tempdir();
    let ns = std::sync::Arc::new(tokio::task::block_in_place(|| Namespace::start(tmp.path())));
    let agent_args: Vec<String> = vec![
        "--server".into(),
        server.base.clone(),
        "--enroll-secret".into(),
        secret,
        "--state-dir".into(),
        tmp.path().join("state").display().to_string(),
        "--only-mount".into(),
        ns.tmpfs.display().to_string(),
        "--log-level".into(),
        "info,appfence_agent=debug".into(),
    ];
    let (blocked, other) = {
        let ns = ns.clone();
        off_runtime(move || {
            (
                ns.copy("/bin/true", "blocked"),
                ns.copy("/bin/false", "other"),
            )
        })
        .await
    };
    let exec = |program: &str| {
        let (ns, program) = (ns.clone(), program.to_string());
        off_runtime(move || ns.exec(&program))
    };
    let (agent, _) = tokio::task::block_in_place(|| ns.start_agent("agent-block", &agent_args));
    let dump = || format!("agent stderr:\n{}", agent.stderr_text());
    let machine_id = wait_async(
        Duration::from_secs(20),
        "the machine to enrol",
        async || {
            let list = api.get("/api/machines").await.json();
            list["value"].as_array()?.first()?["id"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;

    // The agent reports what it protects; the server then refuses to block it.
    let reported = wait_async(Duration::from_secs(20), "the protected files", async || {
        let e = enforcement(&api, &machine_id).await;
        e["reported"]["protected"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            .then_some(e)
    })
    .await;
    let protected = reported["reported"]["protected"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        protected.iter().any(|p| p["role"] == "loader"),
        "{protected:?}\n{}",
        dump()
    );
    let loader_hash = protected.iter().find(|p| p["role"] == "loader").unwrap()["sha256"].clone();
    let r = api
        .post(
            "/api/indicators",
            &json!({
                "indicatorValue": loader_hash,
                "indicatorType": "FileSha256",
                "action": "Block",
                "title": "the loader",
                "description": "e2e: must be refused",
            }),
        )
        .await;
    assert_eq!(r.status, 400, "a block of the loader: {}", r.text);

    // Block /bin/true by hash: the unrestricted host denies it, and only it.
    assert!(exec(&blocked).await.is_ok(), "runs before the block");
    let r = api
        .post(
            "/api/indicators",
            &json!({
                "indicatorValue": sha256_of("/bin/true"),
                "indicatorType": "FileSha256",
                "action": "AlertAndBlock",
                "title": "true is bad",
                "description": "e2e: blocked everywhere",
                "generateAlert": true,
            }),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "indicator: {}", r.text);
    let indicator_id = r.json()["id"].to_string().trim_matches('"').to_string();
    let b = blocked.clone();
    let took = Instant::now();
    wait_async(Duration::from_secs(30), "the block to apply", async || {
        exec(&b).await.is_err().then_some(())
    })
    .await;
    println!("block applied after {:?}", took.elapsed());
    assert!(
        exec(&other).await.is_ok(),
        "unrestricted: other programs run"
    );
    assert_eq!(
        enforcement(&api, &machine_id).await["reported"]["restricted"],
        false
    );
    let event = wait_async(Duration::from_secs(20), "the denial event", async || {
        let v = api
            .get(&format!("/api/machines/{machine_id}/events"))
            .await
            .json();
        v["value"]
            .as_array()?
            .iter()
            .find(|e| e["path"] == blocked.as_str())
            .cloned()
    })
    .await;
    // The event says which indicator blocked it, and that it asked for an alert.
    assert_eq!(event["rule"], "blocked", "{event}");
    assert_eq!(event["indicatorId"], indicator_id.as_str(), "{event}");
    assert_eq!(event["alert"], true, "{event}");
    assert_eq!(event["monitor"], false, "{event}");

    // Deleting the indicator lifts the block.
    let r = api.delete(&format!("/api/indicators/{indicator_id}")).await;
    assert!(r.status == 200 || r.status == 204, "delete: {}", r.text);
    let b = blocked.clone();
    let took = Instant::now();
    wait_async(Duration::from_secs(30), "the block to lift", async || {
        exec(&b).await.ok()
    })
    .await;
    println!("block lifted after {:?}", took.elapsed());
}
