//! Simulated devices for `serve --demo`, tests and load generation: the real agent loop
//! and client, with an enforcer that only pretends.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appfence_proto::agent::{
    Capabilities, Command, DenialEvent, DenialKind, DeviceInfo, EnforcementMode,
};
use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::enforcer::{EnforceError, EnforcementReport, Enforcer};
use crate::runner::{run, AgentConfig, AgentError};

/// How fast a simulated device reacts: an action becomes `InProgress` about `ack_delay`
/// after the device receives it, and `Succeeded` about `complete_delay` after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimTimings {
    pub ack_delay: Duration,
    pub complete_delay: Duration,
    /// Like a compromised host, the device tries to run an unknown program right after
    /// it is restricted, and reports that denial (unless the program's hash is on the
    /// allowlist): the demo shows the whole loop, denial and "allow this file" included.
    pub denial_when_restricted: bool,
}

impl Default for SimTimings {
    fn default() -> Self {
        SimTimings {
            ack_delay: Duration::from_secs(1),
            complete_delay: Duration::from_secs(1),
            denial_when_restricted: false,
        }
    }
}

impl SimTimings {
    /// No delays at all (tests, benchmarks).
    pub const IMMEDIATE: SimTimings = SimTimings {
        ack_delay: Duration::ZERO,
        complete_delay: Duration::ZERO,
        denial_when_restricted: false,
    };
}

/// An enforcer that records the requested state, allowlist and mode, and enforces
/// nothing. Its denials are the ones a test feeds it ([`SimulatedEnforcer::push_denial`]).
#[derive(Debug)]
pub struct SimulatedEnforcer {
    timings: SimTimings,
    restricted: AtomicBool,
    failure: Mutex<Option<EnforceError>>,
    applies: AtomicU64,
    allowlist: Mutex<Vec<String>>,
    monitor: AtomicBool,
    denials: Mutex<Vec<DenialEvent>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimulatedEnforcer {
    pub fn new(timings: SimTimings) -> Self {
        SimulatedEnforcer {
            timings,
            restricted: AtomicBool::new(false),
            failure: Mutex::new(None),
            applies: AtomicU64::new(0),
            allowlist: Mutex::new(Vec::new()),
            monitor: AtomicBool::new(false),
            denials: Mutex::new(Vec::new()),
        }
    }

    /// The allowlist last set.
    pub fn allowlist(&self) -> Vec<String> {
        lock(&self.allowlist).clone()
    }

    /// The mode last set.
    pub fn mode(&self) -> EnforcementMode {
        if self.monitor.load(Ordering::SeqCst) {
            EnforcementMode::Monitor
        } else {
            EnforcementMode::Enforce
        }
    }

    /// Records a denial, as if a program had been stopped.
    pub fn push_denial(&self, event: DenialEvent) {
        lock(&self.denials).push(event);
    }

    /// Denials recorded and not drained yet.
    pub fn pending_denials(&self) -> usize {
        lock(&self.denials).len()
    }

    /// Makes every following `apply` fail with `error` (`None` heals the device), to
    /// exercise `Failed` outcomes.
    pub fn fail_with(&self, error: Option<EnforceError>) {
        *lock(&self.failure) = error;
    }

    /// The demo's compromised program: stopped (or, in monitor mode, seen) unless the
    /// allowlist lets it run.
    fn deny_unknown_program(&self) {
        let sha256 = demo_program_sha256();
        if lock(&self.allowlist).contains(&sha256) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.push_denial(DenialEvent {
            time: appfence_proto::Timestamp::from_unix_seconds(now),
            path: DEMO_PROGRAM.to_string(),
            sha256: Some(sha256),
            pid: 4242,
            uid: Some(1000),
            parent: Some("/usr/bin/bash".to_string()),
            kind: DenialKind::Exec,
            monitor: self.mode() == EnforcementMode::Monitor,
            rule: None,
            indicator_id: None,
            alert: false,
            command_line: Some(format!("/usr/bin/bash -c {DEMO_PROGRAM}")),
            user: Some("demo".to_string()),
        });
    }

    /// How many times `apply` was called, successful or not.
    pub fn apply_count(&self) -> u64 {
        self.applies.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Enforcer for SimulatedEnforcer {
    async fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        tokio::time::sleep(self.timings.complete_delay).await;
        self.applies.fetch_add(1, Ordering::SeqCst);
        let failure = lock(&self.failure).clone();
        if let Some(e) = failure {
            return Err(e);
        }
        let was = self.restricted.swap(restricted, Ordering::SeqCst);
        if restricted && !was && self.timings.denial_when_restricted {
            self.deny_unknown_program();
        }
        Ok(EnforcementReport { detail: None })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_restrict_execution: true,
            exec_permission_events: false,
            filesystem_marks: false,
            simulated: true,
        }
    }

    fn is_restricted(&self) -> bool {
        self.restricted.load(Ordering::SeqCst)
    }

    async fn before_ack(&self, _command: &Command) {
        tokio::time::sleep(self.timings.ack_delay).await;
    }

    async fn set_allowlist(&self, sha256: &[String]) {
        *lock(&self.allowlist) = sha256.to_vec();
    }

    fn set_mode(&self, mode: EnforcementMode) {
        self.monitor
            .store(mode == EnforcementMode::Monitor, Ordering::SeqCst);
    }

    fn drain_denials(&self) -> Vec<DenialEvent> {
        std::mem::take(&mut *lock(&self.denials))
    }

    /// The whole (pretend) device while restricted.
    fn coverage(&self) -> Vec<String> {
        if self.is_restricted() {
            vec!["/".to_string()]
        } else {
            Vec::new()
        }
    }
}

/// The program a demo device tries to run once restricted.
pub const DEMO_PROGRAM: &str = "/tmp/.cache/kworker-update";

/// Its SHA-256 (of a fixed text: the program is imaginary).
pub fn demo_program_sha256() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b"appfence demo: an unknown program"))
}

/// Short name of simulated device `index` (1-based): `demo-linux-01`; also its state
/// directory's name.
pub fn device_name(index: usize) -> String {
    format!("demo-linux-{index:02}")
}

/// Host name of simulated device `index` (1-based): `demo-linux-01.appfence.local`.
pub fn hostname(index: usize) -> String {
    format!("{}.appfence.local", device_name(index))
}

/// What simulated device `index` (1-based) says about itself. Its loopback address is
/// unique in the fleet (`127.0.0.1`, `127.0.0.2`, ..., `127.0.1.0` for the 256th).
pub fn device_info(index: usize) -> DeviceInfo {
    let n = index as u32;
    DeviceInfo {
        os_platform: "Linux".into(),
        os_version: "Debian 12".into(),
        kernel_version: "6.1.0-sim".into(),
        os_architecture: "x86_64".into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        ip_addresses: vec![format!(
            "127.{}.{}.{}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )],
        capabilities: SimulatedEnforcer::new(SimTimings::IMMEDIATE).capabilities(),
        machine_tags: vec!["demo".into()],
    }
}

/// The configuration of simulated device `index` (1-based), with its state in
/// `state_root/demo-linux-NN/`.
pub fn device_config(
    server_url: &str,
    enroll_secret: &str,
    index: usize,
    state_root: &Path,
) -> AgentConfig {
    let mut config = AgentConfig::new(
        server_url,
        state_root.join(device_name(index)),
        hostname(index),
        device_info(index),
    );
    config.enroll_secret = Some(enroll_secret.to_string());
    config
}

/// Starts `count` simulated devices (`demo-linux-01` ...) on the current tokio runtime.
/// Devices whose state directory already holds a credential reuse it; the others enrol.
/// Each task ends when `shutdown` becomes true, or with the device's fatal error.
pub fn spawn_fleet(
    server_url: &str,
    enroll_secret: &str,
    count: usize,
    state_root: &Path,
    timings: SimTimings,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<(), AgentError>>> {
    spawn_fleet_on(
        None,
        server_url,
        enroll_secret,
        1..=count,
        state_root,
        timings,
        shutdown,
    )
}

/// The demo fleet's client: HTTP/2 without negotiation (the fleet talks to its own
/// server over loopback, which speaks both).
fn fleet_client() -> Result<reqwest::Client, crate::client::ClientError> {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("appfence-demo-device/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| crate::client::ClientError::Transport(e.to_string()))
}

/// [`spawn_fleet`] with the fleet's HTTP client given (e.g. one that trusts the
/// server's own certificate); `None`: one client multiplexing every device's calls on
/// HTTP/2 streams, so a fleet of thousands holds a few connections, not one per
/// waiting device. `devices` numbers them (`demo-linux-{n}`): fleets that run side by
/// side (e.g. on two replicas) need numbers of their own.
pub fn spawn_fleet_on(
    http: Option<reqwest::Client>,
    server_url: &str,
    enroll_secret: &str,
    devices: std::ops::RangeInclusive<usize>,
    state_root: &Path,
    timings: SimTimings,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<(), AgentError>>> {
    // If no client can be built, each device builds its own and reports why it cannot.
    let http = http.or_else(|| match fleet_client() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for the demo fleet");
            None
        }
    });
    let first = *devices.start();
    devices
        .map(|index| {
            let mut config = device_config(server_url, enroll_secret, index, state_root);
            config.http = http.clone();
            let enforcer: Arc<dyn Enforcer> = Arc::new(SimulatedEnforcer::new(timings));
            // A large fleet starts in waves of 200 devices 50 ms apart: thousands of
            // enrolments at the same instant on one HTTP/2 connection only queue up.
            let wave = Duration::from_millis(50 * ((index - first) as u64 / FLEET_WAVE));
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wave).await;
                run(config, enforcer, shutdown).await
            })
        })
        .collect()
}

/// Devices of a fleet that start together.
const FLEET_WAVE: u64 = 200;

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_proto::{ActionStatus, ActionType, Timestamp};

    #[test]
    fn names_and_addresses_are_distinct() {
        assert_eq!(hostname(1), "demo-linux-01.appfence.local");
        assert_eq!(hostname(12), "demo-linux-12.appfence.local");
        assert_eq!(hostname(100), "demo-linux-100.appfence.local");
        assert_eq!(device_info(1).ip_addresses, vec!["127.0.0.1"]);
        assert_eq!(device_info(300).ip_addresses, vec!["127.0.1.44"]);
        let info = device_info(3);
        assert_eq!(info.os_platform, "Linux");
        assert!(info.capabilities.simulated && info.capabilities.can_restrict_execution);
        let cfg = device_config("http://127.0.0.1:1", "s", 7, Path::new("/data/sim"));
        assert_eq!(cfg.state_dir, Path::new("/data/sim/demo-linux-07"));
        assert_eq!(cfg.enroll_secret.as_deref(), Some("s"));
    }

    #[tokio::test]
    async fn simulated_enforcer_pretends_and_can_fail() {
        let e = SimulatedEnforcer::new(SimTimings::IMMEDIATE);
        assert!(!e.is_restricted());
        e.apply(true).await.unwrap();
        assert!(e.is_restricted());
        e.fail_with(Some(EnforceError::failed("disk on fire")));
        let err = e.apply(false).await.unwrap_err();
        assert_eq!(err.message, "disk on fire");
        assert!(e.is_restricted(), "a failed apply leaves the state alone");
        e.fail_with(None);
        e.apply(false).await.unwrap();
        assert!(!e.is_restricted());
        assert_eq!(e.apply_count(), 3);
    }

    #[tokio::test]
    async fn simulated_enforcer_paces_ack_and_completion() {
        let e = SimulatedEnforcer::new(SimTimings {
            denial_when_restricted: false,
            ack_delay: Duration::from_millis(60),
            complete_delay: Duration::from_millis(80),
        });
        let cmd = Command {
            action_id: "a".into(),
            action_type: ActionType::RestrictCodeExecution,
            status: ActionStatus::Pending,
            created: Timestamp::from_unix_seconds(1),
        };
        let t = std::time::Instant::now();
        e.before_ack(&cmd).await;
        assert!(t.elapsed() >= Duration::from_millis(60));
        let t = std::time::Instant::now();
        e.apply(true).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(80));
    }

    #[tokio::test]
    async fn a_demo_device_reports_its_unknown_program_once_restricted_unless_allowed() {
        let demo = SimTimings {
            denial_when_restricted: true,
            ..SimTimings::IMMEDIATE
        };
        let e = SimulatedEnforcer::new(demo);
        e.apply(true).await.unwrap();
        let denied = e.drain_denials();
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert_eq!(denied[0].path, DEMO_PROGRAM);
        assert_eq!(
            denied[0].sha256.as_deref(),
            Some(demo_program_sha256().as_str())
        );
        assert!(!denied[0].monitor);
        e.apply(true).await.unwrap();
        assert_eq!(e.pending_denials(), 0, "only when it becomes restricted");

        let allowed = SimulatedEnforcer::new(demo);
        allowed.set_allowlist(&[demo_program_sha256()]).await;
        allowed.apply(true).await.unwrap();
        assert_eq!(allowed.pending_denials(), 0, "an allowed program runs");

        let plain = SimulatedEnforcer::new(SimTimings::IMMEDIATE);
        plain.apply(true).await.unwrap();
        assert_eq!(plain.pending_denials(), 0, "only demo devices do this");
    }
}
