//! Test support shared by the store's and the integration tests: a throwaway PostgreSQL
//! cluster from the server binaries of Debian's `postgresql` package.
//!
//! One cluster per test process, started on first use: `initdb` into a private
//! temporary directory (as `nobody` when the tests run as root, since PostgreSQL refuses
//! to run as root), listening on a free loopback port with trust authentication, and
//! each test takes a fresh database of its own. The postmaster is started by a
//! supervisor thread that lives as long as the process, with `PR_SET_PDEATHSIG`, so the
//! cluster dies with the tests whatever ends them; its directory is removed at exit, or
//! by the next run if the process was killed.
//!
//! Where PostgreSQL cannot be had, [`postgres_or_skip`] prints `skipped: <why>` and the
//! test returns; with `CI=true` it fails instead.
//!
//! With the `browser` feature, [`browser`] gives tests headless Chromium (Debian's
//! `chromium` and `chromium-driver`) over WebDriver, under the same rule:
//! [`browser_or_skip`].

#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "browser")]
pub use browser::{browser_or_skip, Browser};

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The role tests connect as (a superuser of the throwaway cluster).
pub const USER: &str = "appfence";
const DIR_PREFIX: &str = "appfence-pg-";
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running throwaway cluster.
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
    control: Mutex<mpsc::Sender<Control>>,
}

enum Control {
    Start(mpsc::Sender<Result<(), String>>),
    Stop(mpsc::Sender<Result<(), String>>),
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The process's cluster, started on first use; `Err(why)` if PostgreSQL cannot run.
pub fn cluster() -> Result<&'static PgCluster, String> {
    CLUSTER
        .get_or_init(|| PgCluster::start_new("shared", false))
        .as_ref()
        .map_err(Clone::clone)
}

/// A cluster of one test's own, for tests that stop and start PostgreSQL (which would
/// break every other test on the shared one). Stopped and removed when dropped.
pub fn private_cluster() -> Result<PgCluster, String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    PgCluster::start_new(&format!("private{n}"), false)
}

/// A private cluster with PostgreSQL's default durability (every commit flushed to
/// disk), for benchmarks: the test clusters trade durability for speed.
pub fn private_durable_cluster() -> Result<PgCluster, String> {
    PgCluster::start_new("durable", true)
}

/// [`private_cluster`], or `None` after printing `skipped: <why>` (a failure under
/// `CI=true`), as [`postgres_or_skip`].
pub fn private_postgres_or_skip(test: &str) -> Option<PgCluster> {
    match private_cluster() {
        Ok(c) => Some(c),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: PostgreSQL is required under CI=true: {why}")
        }
        Err(why) => {
            println!("skipped: {test}: {why}");
            None
        }
    }
}

/// The cluster, or `None` after printing `skipped: <why>`; under `CI=true` a missing
/// PostgreSQL fails the test instead of skipping it.
pub fn postgres_or_skip(test: &str) -> Option<&'static PgCluster> {
    match cluster() {
        Ok(c) => Some(c),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: PostgreSQL is required under CI=true: {why}")
        }
        Err(why) => {
            println!("skipped: {test}: {why}");
            None
        }
    }
}

/// The newest PostgreSQL server binaries Debian installed.
fn bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|_| {
            "PostgreSQL's server binaries are not installed (/usr/lib/postgresql is missing; \
             Debian's package is `postgresql`, which scripts/test installs)"
                .to_string()
        })?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/postgres".to_string())
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of `nobody`/`nogroup`, the unprivileged owner of the cluster under root.
const NOBODY: (u32, u32) = (65534, 65534);

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A command run as the cluster's owner: `nobody` under root, else ourselves.
fn as_owner(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if is_root() {
        let (uid, gid) = NOBODY;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// Removes the directories of earlier runs whose process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // <prefix><pid>-<name>
        let pid = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

extern "C" fn remove_own_dir() {
    if let Some(Ok(c)) = CLUSTER.get() {
        let _ = c.stop();
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

impl PgCluster {
    fn start_new(name: &str, durable: bool) -> Result<PgCluster, String> {
        let bin = bin_dir()?;
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        if is_root() {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::chown(c.as_ptr(), NOBODY.0, NOBODY.1) } != 0 {
                return Err(format!("cannot give {} to nobody", dir.display()));
            }
        }
        let data = dir.join("data");
        let out = as_owner(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let port = free_port()?;
        let (tx, rx) = mpsc::channel();
        let (bin2, dir2) = (bin.clone(), dir.clone());
        std::thread::Builder::new()
            .name("postgres-supervisor".into())
            .spawn(move || supervise(&bin2, &dir2, port, durable, rx))
            .map_err(|e| e.to_string())?;
        let cluster = PgCluster {
            port,
            dir,
            control: Mutex::new(tx),
        };
        cluster.start()?;
        if name == "shared" {
            // SAFETY: registering a plain extern "C" function.
            unsafe {
                libc::atexit(remove_own_dir);
            }
        }
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id, while it runs (its backends are its children).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh, empty database for one test; its URL.
    pub fn fresh_database(&self) -> Result<String, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs one SQL statement on the `postgres` database.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let bin = bin_dir()?;
        let psql = [bin.join("psql"), "/usr/bin/psql".into()]
            .into_iter()
            .find(|p: &PathBuf| p.exists())
            .ok_or("psql is missing")?;
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
            ])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Serves TLS with this certificate (PEM) and key from the next start on: written
    /// as the data directory's `server.crt`/`server.key` (0600, the cluster owner's),
    /// which `ssl=on` reads. Restarts the postmaster.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        self.stop()?;
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.dir.join("data").join(name);
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            if is_root() {
                let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                if unsafe { libc::chown(c.as_ptr(), NOBODY.0, NOBODY.1) } != 0 {
                    return Err(format!("cannot give {} to nobody", path.display()));
                }
            }
        }
        self.start()
    }

    /// Starts the postmaster (again) and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        self.ask(Control::Start)
    }

    /// Stops the postmaster (fast shutdown: connections are cut) and waits for it.
    pub fn stop(&self) -> Result<(), String> {
        self.ask(Control::Stop)
    }

    fn ask(&self, make: fn(mpsc::Sender<Result<(), String>>) -> Control) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.control
            .lock()
            .map_err(|_| "the supervisor's lock is poisoned".to_string())?
            .send(make(tx))
            .map_err(|_| "the postgres supervisor is gone".to_string())?;
        rx.recv_timeout(START_LIMIT * 2)
            .map_err(|_| "the postgres supervisor did not answer".to_string())?
    }
}

impl Drop for PgCluster {
    // Runs for private clusters only (the shared one is a static, cleaned up at exit).
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Owns the postmaster for the life of its cluster: the shared cluster's thread never
/// ends while the process runs, so `PR_SET_PDEATHSIG` (which follows the spawning
/// thread) fires only when the process does; a private cluster's ends when it is dropped.
fn supervise(bin: &Path, dir: &Path, port: u16, durable: bool, rx: mpsc::Receiver<Control>) {
    let mut child: Option<Child> = None;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Control::Start(reply) => {
                let running = child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_none());
                let r = if running {
                    Ok(())
                } else {
                    spawn_postmaster(bin, dir, port, durable).map(|c| child = Some(c))
                };
                let _ = reply.send(r);
            }
            Control::Stop(reply) => {
                let r = match child.take() {
                    Some(mut c) => stop_postmaster(&mut c),
                    None => Ok(()),
                };
                let _ = reply.send(r);
            }
        }
    }
    if let Some(mut c) = child {
        let _ = c.kill();
    }
}

/// Whether the server's `pg_stat_statements` extension is installed (Debian ships it
/// with the server: `/usr/share/postgresql/VERSION/extension`).
fn statement_statistics_available(bin: &Path) -> bool {
    let version = bin
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/usr/share/postgresql")
        .join(version)
        .join("extension/pg_stat_statements.control")
        .exists()
}

fn spawn_postmaster(bin: &Path, dir: &Path, port: u16, durable: bool) -> Result<Child, String> {
    let log = dir.join("postgres.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| e.to_string())?;
    let mut cmd = as_owner(&bin.join("postgres"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(dir)
        .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"]);
    if dir.join("data/server.crt").exists() {
        cmd.args(["-c", "ssl=on"]);
    }
    if durable && statement_statistics_available(bin) {
        // The durable cluster is the benchmarks': they can say which statements took
        // PostgreSQL's time (`CREATE EXTENSION pg_stat_statements`).
        cmd.args(["-c", "shared_preload_libraries=pg_stat_statements"]);
    }
    if !durable {
        // Tests need no durability from the cluster itself.
        cmd.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && ready(bin, port) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
            return Err(format!("postgres exited with {status}: {}", text.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("postgres did not accept connections within a minute".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGINT: PostgreSQL's fast shutdown. SIGKILL if it takes too long.
fn stop_postmaster(child: &mut Child) -> Result<(), String> {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_gives_databases_and_restarts() {
        let Some(c) = postgres_or_skip("testkit") else {
            return;
        };
        let a = c.fresh_database().unwrap();
        let b = c.fresh_database().unwrap();
        assert_ne!(a, b);
        assert_eq!(c.psql("SELECT 1 + 1").unwrap(), "2");
        c.stop().unwrap();
        assert!(c.psql("SELECT 1").is_err(), "stopped");
        c.start().unwrap();
        assert_eq!(c.psql("SELECT 2").unwrap(), "2");
        let owner = c.psql("SELECT current_user").unwrap();
        assert_eq!(owner, USER);
    }
}
