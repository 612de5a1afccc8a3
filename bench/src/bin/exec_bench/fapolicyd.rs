//! fapolicyd (Debian's package) run inside the namespace child, with its own
//! configuration, rules and trust file on private tmpfs mounts over `/etc/fapolicyd`,
//! `/var/lib/fapolicyd` and `/run`, so nothing of the host's is read or written.
//!
//! Safety: `allow_filesystem_mark = 0` makes fapolicyd use mount marks, and a mount mark
//! only sees accesses made through that mount; every mount it can see here is the
//! namespace's own copy, so no process outside the namespace is ever held. This is
//! checked from `/proc/<pid>/fdinfo` after every start (only `mnt_id` marks allowed),
//! and the daemon is SIGKILLed on any doubt, on drop, and with the namespace.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sandbox::mount_tmpfs;

pub const BINARY: &str = "/usr/sbin/fapolicyd";
const CONFIG_DIR: &str = "/etc/fapolicyd";
const DB_DIR: &str = "/var/lib/fapolicyd";
const RUN_DIR: &str = "/run";
const LOG: &str = "/run/appfence-bench-fapolicyd.log";
const READY_LINE: &str = "Starting to listen for events";

/// The rules: the same policy appfence enforces. Executing needs trust; opening an ELF
/// object (executable or shared library) needs trust; any other open is allowed.
/// Every permission event on a watched mount is evaluated against them (no rule
/// short-circuits by subject).
pub const RULES: &str = "\
allow perm=execute all : trust=1
deny perm=execute all : all
allow perm=open all : ftype=application/x-executable trust=1
allow perm=open all : ftype=application/x-sharedlib trust=1
deny perm=open all : ftype=application/x-executable
deny perm=open all : ftype=application/x-sharedlib
allow perm=open all : all
";

/// Debian's default `fapolicyd.conf` with these changes: runs as root in the namespace
/// (no `fapolicyd` user needed), `nice_val = 0` (Debian's 14 would only slow it down
/// next to appfence, which runs at 0), `watch_fs = tmpfs` (the programs live there),
/// trust from the file backend only (Debian's build has no rpm backend), no statistics
/// report, and mount marks (`allow_filesystem_mark = 0`, the default, stated).
pub fn config(integrity: &str) -> String {
    format!(
        "permissive = 0
nice_val = 0
q_size = 640
uid = 0
gid = 0
do_stat_report = 0
detailed_report = 0
db_max_size = 50
subj_cache_size = 1549
obj_cache_size = 8191
watch_fs = tmpfs
trust = file
integrity = {integrity}
syslog_format = rule,dec,perm,auid,pid,exe,:,path,ftype,trust
rpm_sha256_only = 0
allow_filesystem_mark = 0
"
    )
}

/// Why fapolicyd cannot be used here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(BINARY).exists() {
        return Some(format!(
            "{BINARY} is not installed (run bench/exec-bench.sh, which installs Debian's package without starting or enabling its service)"
        ));
    }
    for dir in [CONFIG_DIR, DB_DIR] {
        if !Path::new(dir).is_dir() {
            return Some(format!(
                "{dir} is missing (the fapolicyd package is not configured)"
            ));
        }
    }
    None
}

/// fapolicyd's files, in place inside the namespace.
pub struct Setup {
    tmpfs_mount_id: u64,
}

/// Mounts the private directories and writes the configuration. `trusted`: every file
/// to put in the trust file.
pub fn prepare(trusted: &[PathBuf], integrity: &str, tmpfs_mount_id: u64) -> io::Result<Setup> {
    for dir in [CONFIG_DIR, DB_DIR, RUN_DIR] {
        mount_tmpfs(
            Path::new(dir),
            "appfence-bench-fapolicyd",
            "size=64m,mode=0755",
        )?;
    }
    std::fs::create_dir_all(Path::new(RUN_DIR).join("fapolicyd"))?;
    std::fs::create_dir_all(Path::new(CONFIG_DIR).join("trust.d"))?;
    std::fs::create_dir_all(Path::new(CONFIG_DIR).join("rules.d"))?;
    std::fs::write(
        Path::new(CONFIG_DIR).join("fapolicyd.conf"),
        config(integrity),
    )?;
    std::fs::write(Path::new(CONFIG_DIR).join("fapolicyd.rules"), RULES)?;
    let mut trust = String::new();
    for path in trusted {
        let bytes = std::fs::read(path)?;
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        trust.push_str(&format!("{} {} {digest}\n", path.display(), bytes.len()));
    }
    std::fs::write(Path::new(CONFIG_DIR).join("fapolicyd.trust"), trust)?;
    Ok(Setup { tmpfs_mount_id })
}

pub struct Daemon {
    child: Child,
}

impl Setup {
    /// Starts the daemon in the foreground (`--debug-deny`: only denials are logged)
    /// and returns once it listens and its marks are checked.
    pub fn start(&self) -> io::Result<Daemon> {
        let log = File::create(LOG)?;
        let child = Command::new(BINARY)
            .arg("--debug-deny")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut daemon = Daemon { child };
        daemon.wait_until_listening()?;
        daemon.check_marks(self.tmpfs_mount_id)?;
        Ok(daemon)
    }
}

impl Daemon {
    fn wait_until_listening(&mut self) -> io::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "fapolicyd exited at start ({status}): {}",
                    log_tail()
                )));
            }
            if std::fs::read_to_string(LOG)?.contains(READY_LINE) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::other(format!(
                    "fapolicyd did not start listening within 30 s: {}",
                    log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its fanotify marks must all be mount marks, one of them on the bench's tmpfs.
    fn check_marks(&self, tmpfs_mount_id: u64) -> io::Result<()> {
        let wanted = format!("fanotify mnt_id:{tmpfs_mount_id:x} ");
        let started = Instant::now();
        loop {
            let marks = fanotify_marks(self.child.id())?;
            if let Some(bad) = marks.iter().find(|m| !m.starts_with("fanotify mnt_id:")) {
                return Err(io::Error::other(format!(
                    "fapolicyd placed a mark that is not a mount mark ({bad}); stopped"
                )));
            }
            if marks.iter().any(|m| m.starts_with(&wanted)) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err(io::Error::other(format!(
                    "fapolicyd does not watch the bench tmpfs (mount id {tmpfs_mount_id}); marks: {marks:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL after 15 s (its threads take up to a few seconds to
    /// notice). Either way the kernel allows everything once its group is closed.
    pub fn stop(mut self) -> io::Result<Duration> {
        signal(self.child.id(), libc::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(io::Error::other(
            "fapolicyd ignored SIGTERM for 15 s; killed",
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
    unsafe { libc::kill(pid as i32, signal) };
}

/// The mark lines of every fanotify descriptor of `pid`.
fn fanotify_marks(pid: u32) -> io::Result<Vec<String>> {
    let mut marks = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:[fanotify]" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))?;
        marks.extend(
            info.lines()
                .filter(|l| l.starts_with("fanotify ") && !l.starts_with("fanotify flags:"))
                .map(str::to_string),
        );
    }
    Ok(marks)
}

fn log_tail() -> String {
    let log = std::fs::read_to_string(LOG).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}
