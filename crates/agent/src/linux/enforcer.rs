//! [`FanotifyEnforcer`]: the [`Enforcer`] that really restricts a Linux device.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use appfence_core::Clock;
use appfence_proto::agent::Capabilities;
use async_trait::async_trait;

use super::cache::Verdict;
use super::denials::{DenialLog, DenialRecord};
use super::digest::Sha256Hash;
use super::dpkg::PackageIndex;
use super::engine::{Counters, EnforcerStats, Engine, EngineSettings, Shared};
use super::memfd::{MemfdChange, MemfdSysctl};
use super::mounts::discover_local_filesystems;
use super::sys::{fanotify_available, kernel_version, raise_open_file_limit, FanotifyGroup};
use super::trust::{own_executable_sha256, SharedAllowlist, TrustSet};
use crate::enforcer::{hresult, EnforceError, EnforcementReport, Enforcer};

/// The answer given to an event whose decision is not ready by the deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeadlineAnswer {
    /// Never hang or break the host for want of an answer (the default).
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Debug)]
pub struct FanotifyConfig {
    /// Filesystems to mark, by any path on them. `None`: every local filesystem of
    /// `/proc/self/mountinfo` (pseudo, network and FUSE filesystems excluded).
    pub only_mounts: Option<Vec<PathBuf>>,
    /// Every permission event is answered within this time.
    pub deadline: Duration,
    pub answer_on_deadline: DeadlineAnswer,
    /// Events waiting for a worker; beyond it, events get the deadline answer at once.
    pub queue_bound: usize,
    /// Threads that hash and decide.
    pub workers: usize,
    /// Report what would be denied, deny nothing.
    pub monitor: bool,
    /// SHA-256 hashes the server allows (replaceable: [`FanotifyEnforcer::set_allowlist`]).
    pub allowlist: Vec<Sha256Hash>,
    /// Where the package database lives (`<root>/var/lib/dpkg/info`). The files it
    /// lists are always those of the live system.
    pub package_db_root: PathBuf,
    /// The `vm.memfd_noexec` sysctl.
    pub memfd_sysctl: PathBuf,
    /// Larger files are never hashed, so never trusted.
    pub hash_size_limit: u64,
    /// File versions remembered by the decision cache.
    pub cache_capacity: usize,
    /// Denial records kept until drained.
    pub denial_buffer: usize,
}

impl Default for FanotifyConfig {
    fn default() -> Self {
        FanotifyConfig {
            only_mounts: None,
            deadline: Duration::from_secs(2),
            answer_on_deadline: DeadlineAnswer::Allow,
            queue_bound: 4096,
            workers: 2,
            monitor: false,
            allowlist: Vec::new(),
            package_db_root: PathBuf::from("/"),
            memfd_sysctl: PathBuf::from("/proc/sys/vm/memfd_noexec"),
            hash_size_limit: 256 << 20,
            cache_capacity: 1 << 16,
            denial_buffer: 10_000,
        }
    }
}

/// Restricts execution with a fanotify group while restricted; holds nothing while not.
pub struct FanotifyEnforcer {
    inner: Arc<Inner>,
}

struct Running {
    engine: Engine,
    memfd: MemfdChange,
    marked: Vec<PathBuf>,
    package_files: usize,
}

impl Running {
    fn describe(&self) -> String {
        let paths: Vec<String> = self
            .marked
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let plural = if self.marked.len() == 1 { "" } else { "s" };
        format!(
            "marked {} filesystem{plural}: {}; {}; {} package files trusted",
            self.marked.len(),
            paths.join(", "),
            self.memfd.describe(),
            self.package_files
        )
    }
}

struct Inner {
    config: FanotifyConfig,
    shared: Arc<Shared>,
    allowlist: SharedAllowlist,
    running: Mutex<Option<Running>>,
    restricted: AtomicBool,
    agent_sha256: OnceLock<Option<Sha256Hash>>,
    capabilities: Capabilities,
    #[cfg(test)]
    decision_delay: Mutex<Duration>,
}

impl FanotifyEnforcer {
    pub fn new(config: FanotifyConfig, clock: Arc<dyn Clock>) -> Self {
        let allowlist: HashSet<Sha256Hash> = config.allowlist.iter().copied().collect();
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            denials: DenialLog::new(config.denial_buffer),
            generation: AtomicU64::new(0),
            applied_generation: AtomicU64::new(0),
            monitor: AtomicBool::new(config.monitor),
            clock,
        });
        FanotifyEnforcer {
            inner: Arc::new(Inner {
                capabilities: probe_capabilities(),
                shared,
                allowlist: Arc::new(RwLock::new(allowlist)),
                running: Mutex::new(None),
                restricted: AtomicBool::new(false),
                agent_sha256: OnceLock::new(),
                config,
                #[cfg(test)]
                decision_delay: Mutex::new(Duration::ZERO),
            }),
        }
    }

    /// [`Enforcer::apply`] for callers outside an async runtime. Blocks while marking
    /// and loading the package database.
    pub fn apply_blocking(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        self.inner.apply(restricted)
    }

    /// Replaces the allowlist. Cached decisions and ignore marks are dropped; when this
    /// returns the new list is in force (unless the reader did not get to it within a
    /// second, which is logged).
    pub fn set_allowlist(&self, hashes: impl IntoIterator<Item = Sha256Hash>) {
        let hashes: HashSet<Sha256Hash> = hashes.into_iter().collect();
        *self
            .inner
            .allowlist
            .write()
            .unwrap_or_else(|p| p.into_inner()) = hashes;
        let shared = &self.inner.shared;
        let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let running = self.inner.lock_running();
        let Some(running) = running.as_ref() else {
            return; // the next run starts from the new list
        };
        running.engine.nudge();
        let waited = std::time::Instant::now();
        while shared.applied_generation.load(Ordering::Acquire) < generation {
            if waited.elapsed() > Duration::from_secs(1) {
                tracing::warn!("the decision loop has not taken the new allowlist yet");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Monitor mode: report what would be denied, deny nothing. Takes effect at once.
    pub fn set_monitor(&self, monitor: bool) {
        self.inner.shared.monitor.store(monitor, Ordering::SeqCst);
    }

    /// The denials recorded since the last call, oldest first.
    pub fn drain_denials(&self) -> Vec<DenialRecord> {
        self.inner.shared.denials.drain()
    }

    pub fn stats(&self) -> EnforcerStats {
        self.inner.shared.stats()
    }

    #[cfg(test)]
    pub(crate) fn set_decision_delay(&self, delay: Duration) {
        *self
            .inner
            .decision_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = delay;
    }
}

impl Inner {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        let mut running = self.lock_running();
        let detail = if restricted {
            match running.as_ref() {
                Some(r) => format!("already restricted; {}", r.describe()),
                None => {
                    let started = self.start()?;
                    let detail = started.describe();
                    *running = Some(started);
                    self.restricted.store(true, Ordering::SeqCst);
                    detail
                }
            }
        } else {
            match running.take() {
                None => "not restricted".to_string(),
                Some(r) => {
                    self.restricted.store(false, Ordering::SeqCst);
                    stop(r, &self.config)?
                }
            }
        };
        tracing::info!(restricted, %detail, "enforcement applied");
        Ok(EnforcementReport {
            detail: Some(detail),
        })
    }

    fn start(&self) -> Result<Running, EnforceError> {
        let config = &self.config;
        let mounts = match &config.only_mounts {
            Some(mounts) => mounts.clone(),
            None => discover_local_filesystems()
                .map_err(|e| EnforceError::failed(format!("cannot list mounts: {e}")))?,
        };
        if mounts.is_empty() {
            return Err(EnforceError::failed("no filesystem to mark"));
        }
        let packages = load_packages(&config.package_db_root);
        let package_files = packages.files();
        let agent_sha256 = *self
            .agent_sha256
            .get_or_init(|| own_executable_sha256(u64::MAX));
        let trust = Arc::new(TrustSet::new(
            packages,
            agent_sha256,
            self.allowlist.clone(),
            config.hash_size_limit,
        ));

        match raise_open_file_limit() {
            Ok(limit) if (limit as usize) < config.queue_bound + 256 => tracing::warn!(
                limit,
                queue_bound = config.queue_bound,
                "open-file limit below the event queue bound: events may be denied under load"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
        let group = FanotifyGroup::new().map_err(|e| {
            let code = if e.kind() == io::ErrorKind::PermissionDenied {
                hresult::E_ACCESSDENIED
            } else {
                hresult::E_FAIL
            };
            EnforceError::new(code, format!("fanotify_init: {e}"))
        })?;
        let mut marked = Vec::new();
        for mount in &mounts {
            match group.mark_filesystem(mount) {
                Ok(()) => marked.push(mount.clone()),
                // Asked for explicitly: a mount that cannot be covered is a failure.
                Err(e) if config.only_mounts.is_some() => {
                    return Err(EnforceError::failed(format!(
                        "cannot mark {}: {e}",
                        mount.display()
                    )))
                }
                Err(e) => {
                    tracing::warn!(mount = %mount.display(), error = %e, "filesystem not marked")
                }
            }
        }
        if marked.is_empty() {
            return Err(EnforceError::failed("no filesystem could be marked"));
        }
        let settings = EngineSettings {
            deadline: config.deadline,
            answer_on_deadline: match config.answer_on_deadline {
                DeadlineAnswer::Allow => Verdict::Allow,
                DeadlineAnswer::Deny => Verdict::Deny,
            },
            queue_bound: config.queue_bound,
            workers: config.workers,
            cache_capacity: config.cache_capacity,
            own_pid: std::process::id() as i32,
            #[cfg(test)]
            decision_delay: *self
                .decision_delay
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        let engine = Engine::start(group, trust, settings, self.shared.clone())
            .map_err(|e| EnforceError::failed(format!("cannot start the decision loop: {e}")))?;
        let memfd = match MemfdSysctl::new(&config.memfd_sysctl).restrict() {
            Ok(change) => change,
            Err(e) => {
                engine.stop();
                return Err(EnforceError::failed(format!(
                    "cannot set {}: {e}",
                    config.memfd_sysctl.display()
                )));
            }
        };
        Ok(Running {
            engine,
            memfd,
            marked,
            package_files,
        })
    }
}

/// Restores memfd_noexec, then closes the group (the kernel then allows everything).
fn stop(running: Running, config: &FanotifyConfig) -> Result<String, EnforceError> {
    let restored = MemfdSysctl::new(&config.memfd_sysctl).restore(running.memfd);
    let count = running.marked.len();
    running.engine.stop();
    restored.map_err(|e| {
        EnforceError::failed(format!(
            "enforcement lifted, but {} not restored: {e}",
            config.memfd_sysctl.display()
        ))
    })?;
    let plural = if count == 1 { "" } else { "s" };
    Ok(format!(
        "unmarked {count} filesystem{plural}; memfd_noexec restored"
    ))
}

/// The dpkg index, or an empty one (trusting nothing from packages) if it is unreadable.
fn load_packages(db_root: &Path) -> PackageIndex {
    match PackageIndex::load_dpkg(db_root, Path::new("/")) {
        Ok(index) => {
            tracing::info!(
                packages = index.packages(),
                files = index.files(),
                "dpkg database loaded"
            );
            index
        }
        Err(e) => {
            let rpm = ["var/lib/rpm", "usr/lib/sysimage/rpm"]
                .iter()
                .map(|dir| db_root.join(dir))
                .find(|dir| dir.is_dir());
            match rpm {
                Some(dir) => tracing::warn!(
                    database = %dir.display(),
                    "rpm package verification is not supported yet: no package file is trusted"
                ),
                None => tracing::warn!(
                    root = %db_root.display(),
                    error = %e,
                    "dpkg database unreadable: no package file is trusted"
                ),
            }
            PackageIndex::default()
        }
    }
}

/// What this kernel and these privileges allow (one throwaway `fanotify_init`).
pub fn probe_capabilities() -> Capabilities {
    let available = fanotify_available().is_ok();
    let version = kernel_version().unwrap_or((0, 0));
    // FAN_OPEN_EXEC_PERM arrived in Linux 5.0, FAN_MARK_FILESYSTEM in 4.20.
    let exec_permission_events = available && version >= (5, 0);
    let filesystem_marks = available && version >= (4, 20);
    Capabilities {
        can_restrict_execution: exec_permission_events && filesystem_marks,
        exec_permission_events,
        filesystem_marks,
        simulated: false,
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(running) = self.lock_running().take() {
            if let Err(e) = stop(running, &self.config) {
                tracing::warn!(error = %e, "unrestricting on shutdown");
            }
        }
    }
}

#[async_trait]
impl Enforcer for FanotifyEnforcer {
    async fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply(restricted))
            .await
            .map_err(|e| EnforceError::failed(format!("enforcer task: {e}")))?
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    fn is_restricted(&self) -> bool {
        self.inner.restricted.load(Ordering::SeqCst)
    }
}
