//! [`FanotifyEnforcer`]: the [`Enforcer`] that really restricts a Linux device.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use appfence_core::Clock;
use appfence_proto::agent::{
    Capabilities, DenialEvent, DenialKind, EnforcementMode, FileRule, ProtectedFile,
};
use async_trait::async_trait;

use super::cache::Verdict;
use super::denials::{AccessKind, DenialLog, DenialRecord};
use super::digest::{parse_sha256_hex, Sha256Hash};
use super::dpkg::PackageIndex;
use super::engine::{Counters, EnforcerStats, Engine, EngineSettings, Shared};
use super::memfd::{MemfdChange, MemfdSysctl};
use super::mounts::{discover_local_mounts, MountWatcher};
use super::protected::protected_files;
use super::rpm::{find_database, is_executable, load_rpm_cached, RpmIndex};
use super::sys::{fanotify_available, kernel_version, raise_open_file_limit, FanotifyGroup};
use super::trust::{
    own_executable_sha256, RuleInfo, RuleTable, SharedAllowlist, SharedRules, TrustSet,
};
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
    /// Where the package databases live (`<root>/var/lib/dpkg/info`, `<root>/var/lib/rpm`
    /// or `<root>/usr/lib/sysimage/rpm`). The files they list are always those of the
    /// live system.
    pub package_db_root: PathBuf,
    /// The rpm command, which lists the files of an rpm database and their digests.
    pub rpm_command: PathBuf,
    /// How long listing them may take; past it nothing from rpm is trusted.
    pub rpm_timeout: Duration,
    /// The `vm.memfd_noexec` sysctl.
    pub memfd_sysctl: PathBuf,
    /// Where the sysctl's value to restore is kept while restricted (the agent's state
    /// directory), so that a run after a crash restores it rather than the leftover 2.
    /// `None`: kept in memory only.
    pub memfd_saved: Option<PathBuf>,
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
            rpm_command: PathBuf::from("/usr/bin/rpm"),
            rpm_timeout: Duration::from_secs(30),
            memfd_sysctl: PathBuf::from("/proc/sys/vm/memfd_noexec"),
            memfd_saved: None,
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

/// A running decision loop: restricting, or only enforcing the block and audit rules.
struct Running {
    engine: Engine,
    restricting: bool,
    /// Set only while restricting.
    memfd: Option<MemfdChange>,
    marked: Vec<PathBuf>,
    package_files: usize,
    /// Marks filesystems mounted later (only when every local filesystem is covered).
    _watcher: Option<MountWatcher>,
}

impl Running {
    fn describe(&self) -> String {
        let paths: Vec<String> = self
            .marked
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let plural = if self.marked.len() == 1 { "" } else { "s" };
        match &self.memfd {
            Some(memfd) => format!(
                "marked {} filesystem{plural}: {}; {}; {} package files trusted",
                self.marked.len(),
                paths.join(", "),
                memfd.describe(),
                self.package_files
            ),
            None => format!(
                "not restricted; marked {} filesystem{plural} for the block and audit rules: {}",
                self.marked.len(),
                paths.join(", "),
            ),
        }
    }
}

struct Inner {
    config: FanotifyConfig,
    shared: Arc<Shared>,
    allowlist: SharedAllowlist,
    rules: SharedRules,
    running: Mutex<Option<Running>>,
    restricted: AtomicBool,
    /// The filesystems marked right now (the mount watcher adds to it).
    coverage: Arc<Mutex<Vec<PathBuf>>>,
    agent_sha256: OnceLock<Option<Sha256Hash>>,
    protected: OnceLock<Vec<ProtectedFile>>,
    /// Blocks already refused for a protected file, so each is logged once.
    refused: Mutex<HashSet<Sha256Hash>>,
    capabilities: Capabilities,
    #[cfg(test)]
    decision_delay: Mutex<Duration>,
    /// Test hook: discovery (and the mount watcher) only consider mounts under this
    /// path, so that a test covering "every filesystem" never marks `/`.
    #[cfg(test)]
    mount_scope: Mutex<Option<PathBuf>>,
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
                rules: SharedRules::default(),
                running: Mutex::new(None),
                restricted: AtomicBool::new(false),
                coverage: Arc::new(Mutex::new(Vec::new())),
                agent_sha256: OnceLock::new(),
                protected: OnceLock::new(),
                refused: Mutex::new(HashSet::new()),
                config,
                #[cfg(test)]
                decision_delay: Mutex::new(Duration::ZERO),
                #[cfg(test)]
                mount_scope: Mutex::new(None),
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
        self.inner.set_allowlist(hashes.into_iter().collect());
    }

    /// Replaces the block and audit rules: blocks deny executing a file whatever else
    /// holds, restricted or not; audits allow and report it. With rules and no
    /// restriction the filesystems are marked all the same (without `memfd_noexec`,
    /// without the package databases); with neither, nothing is. Blocks for the
    /// protected files are dropped. In force when this returns (or logged if not).
    pub fn set_file_rules(&self, block: &[FileRule], audit: &[FileRule]) {
        self.inner.set_file_rules(block, audit);
    }

    /// The files no block may touch, hashed once.
    pub fn protected_files(&self) -> Vec<ProtectedFile> {
        self.inner.protected().to_vec()
    }

    /// Whether a decision loop runs (restricting or for the rules).
    pub fn is_watching(&self) -> bool {
        self.inner.lock_running().is_some()
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

    /// Puts back the `vm.memfd_noexec` value that a run killed while restricted left in
    /// [`FanotifyConfig::memfd_saved`]. Call it at start, before anything is applied; a
    /// restriction applied afterwards saves the value again.
    pub fn recover_memfd_noexec(&self) {
        let config = &self.inner.config;
        if config.memfd_saved.is_none() || self.inner.lock_running().is_some() {
            return;
        }
        match memfd_sysctl(config).recover() {
            Ok(Some(value)) => {
                tracing::info!(
                    value,
                    "restored vm.memfd_noexec left at 2 by an earlier run"
                )
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot restore vm.memfd_noexec"),
        }
    }

    #[cfg(test)]
    pub(crate) fn set_mount_scope(&self, scope: Option<PathBuf>) {
        *self
            .inner
            .mount_scope
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = scope;
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

fn memfd_sysctl(config: &FanotifyConfig) -> MemfdSysctl {
    MemfdSysctl::new(&config.memfd_sysctl).with_saved_value(config.memfd_saved.as_deref())
}

impl Inner {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_coverage(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.coverage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_allowlist(&self, hashes: HashSet<Sha256Hash>) {
        *self.allowlist.write().unwrap_or_else(|p| p.into_inner()) = hashes;
        self.new_generation(&self.lock_running());
    }

    fn protected(&self) -> &[ProtectedFile] {
        self.protected.get_or_init(protected_files)
    }

    fn set_file_rules(&self, block: &[FileRule], audit: &[FileRule]) {
        let parse = |rules: &[FileRule]| -> Vec<(Sha256Hash, RuleInfo)> {
            rules
                .iter()
                .filter_map(|r| {
                    let info = RuleInfo {
                        indicator_id: r.indicator_id.clone(),
                        generate_alert: r.generate_alert,
                    };
                    parse_sha256_hex(&r.sha256).map(|h| (h, info))
                })
                .collect()
        };
        let protected: HashSet<Sha256Hash> = self
            .protected()
            .iter()
            .filter_map(|p| parse_sha256_hex(&p.sha256))
            .collect();
        let mut table = RuleTable::default();
        for (hash, info) in parse(block) {
            if protected.contains(&hash) {
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                if refused.insert(hash) {
                    tracing::warn!(sha256 = %hex::encode(hash), indicator = %info.indicator_id, "not applying a block for a file the host needs");
                }
                continue;
            }
            table.block.insert(hash, info);
        }
        for (hash, info) in parse(audit) {
            if !table.block.contains_key(&hash) {
                table.audit.insert(hash, info);
            }
        }
        let (blocks, audits) = (table.block.len(), table.audit.len());
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = table;
        let mut running = self.lock_running();
        let restricting = running.as_ref().is_some_and(|r| r.restricting);
        match self.reconcile(&mut running, restricting) {
            Ok(detail) => tracing::info!(blocks, audits, %detail, "file rules applied"),
            Err(e) => {
                tracing::error!(blocks, audits, error = %e, "cannot watch executions for the file rules")
            }
        }
        self.new_generation(&running);
    }

    fn has_rules(&self) -> bool {
        !self
            .rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Bumps the generation (the reader forgets its cache and its ignore marks) and
    /// waits, up to a second, for the running reader to take it.
    fn new_generation(&self, running: &Option<Running>) {
        let shared = &self.shared;
        let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let Some(running) = running.as_ref() else {
            return; // the next run starts from the new list
        };
        running.engine.nudge();
        let waited = std::time::Instant::now();
        while shared.applied_generation.load(Ordering::Acquire) < generation {
            if waited.elapsed() > Duration::from_secs(1) {
                tracing::warn!("the decision loop has not taken the new policy yet");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[cfg(test)]
    fn mount_scope(&self) -> Option<PathBuf> {
        self.mount_scope
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    #[cfg(not(test))]
    fn mount_scope(&self) -> Option<PathBuf> {
        None
    }

    fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        let mut running = self.lock_running();
        let detail = self.reconcile(&mut running, restricted)?;
        tracing::info!(restricted, %detail, "enforcement applied");
        Ok(EnforcementReport {
            detail: Some(detail),
        })
    }

    /// Brings the decision loop to `restricting`, or to the rules alone, or to nothing.
    /// A change of kind starts the new loop before stopping the old one, so that blocks
    /// never lapse; the kernel asks both groups meanwhile.
    fn reconcile(
        &self,
        running: &mut Option<Running>,
        restricting: bool,
    ) -> Result<String, EnforceError> {
        let watch = restricting || self.has_rules();
        let current = running.as_ref().map(|r| r.restricting);
        let detail = match (current, watch) {
            (None, false) => "not restricted".to_string(),
            (Some(r), true) if r == restricting => {
                let prefix = if restricting {
                    "already restricted; "
                } else {
                    ""
                };
                format!(
                    "{prefix}{}",
                    running.as_ref().map(Running::describe).unwrap_or_default()
                )
            }
            (Some(_), false) => {
                self.restricted.store(false, Ordering::SeqCst);
                self.lock_coverage().clear();
                let old = running.take().expect("a running loop");
                stop(old, &self.config)?
            }
            (_, true) => {
                let started = self.start(restricting)?;
                let detail = started.describe();
                let old = running.replace(started);
                self.restricted.store(restricting, Ordering::SeqCst);
                if let Some(old) = old {
                    if let Err(e) = stop(old, &self.config) {
                        tracing::warn!(error = %e, "stopping the previous decision loop");
                    }
                }
                detail
            }
        };
        Ok(detail)
    }

    fn start(&self, restricting: bool) -> Result<Running, EnforceError> {
        let config = &self.config;
        let scope = self.mount_scope();
        // Without an explicit list: the devices seen now, for the mount watcher.
        let mut known_devices = HashSet::new();
        let mounts = match &config.only_mounts {
            Some(mounts) => mounts.clone(),
            None => discover_local_mounts()
                .map_err(|e| EnforceError::failed(format!("cannot list mounts: {e}")))?
                .into_iter()
                .filter(|m| scope.as_ref().is_none_or(|s| m.mount_point.starts_with(s)))
                .map(|m| {
                    known_devices.insert(m.device);
                    m.mount_point
                })
                .collect(),
        };
        if mounts.is_empty() {
            return Err(EnforceError::failed("no filesystem to mark"));
        }
        // Unrestricted, trust decides nothing: the package databases are not loaded.
        let (packages, rpm) = if restricting {
            load_packages(config)
        } else {
            Default::default()
        };
        let package_files = packages.files() + rpm.files();
        let agent_sha256 = *self
            .agent_sha256
            .get_or_init(|| own_executable_sha256(u64::MAX));
        let trust = Arc::new(
            TrustSet::new(
                packages,
                rpm,
                agent_sha256,
                self.allowlist.clone(),
                config.hash_size_limit,
            )
            .with_rules(self.rules.clone()),
        );

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
            restricting,
            #[cfg(test)]
            decision_delay: *self
                .decision_delay
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        let engine = Engine::start(group, trust, settings, self.shared.clone())
            .map_err(|e| EnforceError::failed(format!("cannot start the decision loop: {e}")))?;
        let memfd = match restricting.then(|| memfd_sysctl(config).restrict()) {
            None => None,
            Some(Ok(change)) => Some(change),
            Some(Err(e)) => {
                engine.stop();
                return Err(EnforceError::failed(format!(
                    "cannot set {}: {e}",
                    config.memfd_sysctl.display()
                )));
            }
        };
        *self.lock_coverage() = marked.clone();
        let watcher = if config.only_mounts.is_none() {
            self.watch_new_mounts(&engine, known_devices, scope)
        } else {
            None
        };
        Ok(Running {
            engine,
            restricting,
            memfd,
            marked,
            package_files,
            _watcher: watcher,
        })
    }

    /// Marks local filesystems mounted while restricted. A failure to watch is logged:
    /// the filesystems marked at start stay covered.
    fn watch_new_mounts(
        &self,
        engine: &Engine,
        known: HashSet<String>,
        scope: Option<PathBuf>,
    ) -> Option<MountWatcher> {
        let group = engine.group();
        let coverage = self.coverage.clone();
        let started = MountWatcher::start(known, scope, move |mount| {
            let Some(group) = group.upgrade() else {
                return false; // unrestricted meanwhile
            };
            let path = &mount.mount_point;
            match group.mark_filesystem(path) {
                Ok(()) => {
                    tracing::info!(mount = %path.display(), fs_type = %mount.fs_type, "new filesystem marked");
                    coverage
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(path.clone());
                }
                Err(e) => {
                    tracing::warn!(mount = %path.display(), error = %e, "new filesystem not marked")
                }
            }
            true
        });
        match started {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for new mounts; only the current ones are covered");
                None
            }
        }
    }
}

/// Restores memfd_noexec, then closes the group (the kernel then allows everything).
fn stop(running: Running, config: &FanotifyConfig) -> Result<String, EnforceError> {
    let restored = match running.memfd {
        Some(memfd) => memfd_sysctl(config).restore(memfd),
        None => Ok(()),
    };
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

/// The dpkg and rpm indexes; either is empty (trusting nothing from it) if its database
/// is absent or unreadable.
fn load_packages(config: &FanotifyConfig) -> (PackageIndex, Arc<RpmIndex>) {
    let root = &config.package_db_root;
    let live = Path::new("/");
    let dpkg = match PackageIndex::load_dpkg(root, live) {
        Ok(index) => {
            tracing::info!(
                packages = index.packages(),
                files = index.files(),
                "dpkg database loaded"
            );
            Some(index)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "dpkg database unreadable: no dpkg file is trusted");
            Some(PackageIndex::default())
        }
    };
    let rpm = find_database(root).map(|db| {
        let command = &config.rpm_command;
        if !is_executable(command) {
            tracing::warn!(
                database = %root.join(db.strip_prefix("/").unwrap_or(&db)).display(),
                command = %command.display(),
                "rpm database without an rpm command: no rpm file is trusted"
            );
            return Arc::new(RpmIndex::default());
        }
        let started = std::time::Instant::now();
        match load_rpm_cached(command, root, &db, live, config.rpm_timeout) {
            Ok((index, cached)) => {
                tracing::info!(
                    files = index.files(),
                    took = ?started.elapsed(),
                    unchanged_since_last_load = cached,
                    "rpm database loaded"
                );
                index
            }
            Err(e) => {
                tracing::warn!(
                    command = %command.display(),
                    error = %e,
                    "cannot list rpm's files: no rpm file is trusted"
                );
                Arc::new(RpmIndex::default())
            }
        }
    });
    if dpkg.is_none() && rpm.is_none() {
        tracing::warn!(
            root = %root.display(),
            "no dpkg or rpm database: no package file is trusted"
        );
    }
    (dpkg.unwrap_or_default(), rpm.unwrap_or_default())
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

    async fn set_allowlist(&self, sha256: &[String]) {
        let hashes: HashSet<Sha256Hash> = sha256
            .iter()
            .filter_map(|h| {
                let parsed = parse_sha256_hex(h);
                if parsed.is_none() {
                    tracing::warn!(hash = %h, "ignoring an allowlist entry that is not a SHA-256");
                }
                parsed
            })
            .collect();
        let inner = self.inner.clone();
        // It may wait (up to a second) for the decision loop to take the new list.
        if let Err(e) = tokio::task::spawn_blocking(move || inner.set_allowlist(hashes)).await {
            tracing::error!(error = %e, "setting the allowlist");
        }
    }

    async fn set_file_rules(&self, block: &[FileRule], audit: &[FileRule]) {
        let inner = self.inner.clone();
        let (block, audit) = (block.to_vec(), audit.to_vec());
        // It may start the decision loop, and waits (up to a second) for it.
        if let Err(e) =
            tokio::task::spawn_blocking(move || inner.set_file_rules(&block, &audit)).await
        {
            tracing::error!(error = %e, "setting the file rules");
        }
    }

    fn protected_files(&self) -> Vec<ProtectedFile> {
        FanotifyEnforcer::protected_files(self)
    }

    fn set_mode(&self, mode: EnforcementMode) {
        self.set_monitor(mode == EnforcementMode::Monitor);
    }

    fn drain_denials(&self) -> Vec<DenialEvent> {
        FanotifyEnforcer::drain_denials(self)
            .into_iter()
            .map(denial_event)
            .collect()
    }

    fn coverage(&self) -> Vec<String> {
        if !self.is_restricted() {
            return Vec::new(); // marks for the rules alone restrict nothing
        }
        self.inner
            .lock_coverage()
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }
}

/// A denial record as the server receives it.
pub fn denial_event(record: DenialRecord) -> DenialEvent {
    DenialEvent {
        time: record.time,
        path: record
            .path
            .map_or_else(|| "(unknown)".to_string(), |p| p.display().to_string()),
        sha256: record.sha256,
        pid: record.pid,
        uid: record.uid,
        parent: record.parent_program.map(|p| p.display().to_string()),
        kind: match record.access {
            AccessKind::Exec => DenialKind::Exec,
            AccessKind::ElfOpen => DenialKind::ElfOpen,
        },
        monitor: record.monitor_only,
        rule: record.rule,
        indicator_id: record.indicator_id,
        alert: record.alert,
        command_line: record.command_line,
        user: record.user,
    }
}
