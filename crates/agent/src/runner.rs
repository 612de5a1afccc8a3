//! The agent's main loop: enrol once, then heartbeat, long-poll commands, apply them and
//! report, converging to the server's desired state whenever the two disagree.
//!
//! Enrolment sends the device's enrolment key, saved before the first request; without
//! a readable credential (never received, never saved, lost or damaged since) the agent
//! enrols again with that key and gets a new credential for the same machine.
//!
//! One task per device does everything in sequence, so a command is never handled twice
//! at once and a heartbeat never races an action. Rules that the loop keeps:
//!
//! - An action is applied only after its acknowledgement said `applied: true`.
//! - The new state is persisted (fsync) before success is reported.
//! - Convergence happens only after the open commands were handled: an action that was
//!   applied but not yet reported before a restart is still open, and is re-acknowledged
//!   and reported rather than undone.
//! - Transport errors and server faults restart the cycle after an exponential backoff
//!   with jitter; a refused credential is logged and retried slowly (the device keeps
//!   enforcing what it recorded); `shutdown` stops it promptly, even in the middle of a
//!   long-poll.
//! - At start, before the server is contacted, a recorded restriction is re-applied with
//!   the recorded allowlist and mode, and the time since the agent was last alive while
//!   restricted is added to the record as time spent unprotected.
//! - The allowlist and the mode follow the server's desired state; denials are sent by
//!   a task of their own ([`crate::events`]), and another records every few seconds that
//!   the agent is alive while restricted.
//!
//! Offboarding (an `Offboard` action, acknowledged like any other): the agent records
//! that it is under way, lifts the enforcement, reports, then records that the device
//! was offboarded, deletes its credential and state, and stops ([`run`] returns `Ok`).
//! The server refuses the credential from the moment the action is final, so a refused
//! credential while an offboarding is under way (the report's answer was lost) also
//! ends it. An offboarding cancelled meanwhile is forgotten, and the device converges
//! back to the server's desired state. A state directory that records an offboarding
//! keeps the agent from starting, and from enrolling again, until someone removes that
//! record.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use appfence_core::{Clock, SystemClock};
use appfence_proto::agent::{
    AllowlistResponse, Command, DesiredState, DeviceInfo, EnforcementState, HeartbeatRequest,
    Outcome, ProtectedFile, ResultRequest,
};
use appfence_proto::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::client::{http_client, ClientError, GatewayClient};
use crate::enforcer::{hresult, Enforcer};
use crate::events::{ship_denials, EventSettings};
use crate::plan::{self, Convergence, Step};
use crate::state::{OffboardRecord, StateDir, StateError, StoredCredential};

pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_UNAUTHORIZED_RETRY: Duration = Duration::from_secs(60);

/// Everything one device needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server_url: String,
    /// The tenant's enrolment secret; needed only while the device is not enrolled.
    pub enroll_secret: Option<String>,
    /// The name the device enrols under.
    pub hostname: String,
    /// What the device says about itself; `capabilities` is replaced by the enforcer's.
    pub device_info: DeviceInfo,
    /// Where the credential and the enforcement state live.
    pub state_dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// How long one long-poll may wait for a command.
    pub poll_wait: Duration,
    pub backoff: Backoff,
    /// How the server is verified (CA file, key pin) and whether plain HTTP off loopback
    /// is allowed.
    pub tls: appfence_tls::client::ClientTls,
    /// A shared connection pool (a demo fleet uses one for all devices); `None` builds one.
    pub http: Option<reqwest::Client>,
    /// Source of the `since` timestamps, the alive stamps and the unprotected periods.
    pub clock: Arc<dyn Clock>,
    /// How often the agent records that it is alive while restricted: the precision of
    /// the unprotected time reported after a crash.
    pub alive_interval: Duration,
    /// How denials are collected and sent.
    pub events: EventSettings,
    /// The wait between attempts while the server refuses the device's credential.
    pub unauthorized_retry: Duration,
}

impl AgentConfig {
    /// A configuration with the default intervals, no enrolment secret and no shared pool.
    pub fn new(
        server_url: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        hostname: impl Into<String>,
        device_info: DeviceInfo,
    ) -> Self {
        AgentConfig {
            server_url: server_url.into(),
            enroll_secret: None,
            hostname: hostname.into(),
            device_info,
            state_dir: state_dir.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            poll_wait: DEFAULT_POLL_WAIT,
            backoff: Backoff::default(),
            tls: Default::default(),
            http: None,
            clock: Arc::new(SystemClock),
            alive_interval: DEFAULT_ALIVE_INTERVAL,
            events: EventSettings::default(),
            unauthorized_retry: DEFAULT_UNAUTHORIZED_RETRY,
        }
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server_url", &self.server_url)
            .field(
                "enroll_secret",
                &self.enroll_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("hostname", &self.hostname)
            .field("device_info", &self.device_info)
            .field("state_dir", &self.state_dir)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("poll_wait", &self.poll_wait)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Why [`run`] stopped (other than a requested shutdown, which is `Ok`).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the device is not enrolled ({} does not exist) and no enrolment secret was given", .0.display())]
    NotEnrolled(PathBuf),
    /// The server refused the enrolment: wrong secret (401), host name taken (400), ...
    #[error("enrolment refused: {0}")]
    EnrollmentRefused(#[source] ClientError),
    #[error("invalid agent configuration: {0}")]
    Config(#[source] ClientError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs one device until `shutdown` becomes true (or its sender is dropped), which
/// returns `Ok(())`. Returns an error only for what retrying cannot fix.
pub async fn run(
    config: AgentConfig,
    enforcer: Arc<dyn Enforcer>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let span = tracing::info_span!("agent", host = %config.hostname);
    run_device(config, enforcer, shutdown)
        .instrument(span)
        .await
}

/// `https://`, or `http://` only where the settings allow it: refused before anything
/// is sent.
fn check_server_url(config: &AgentConfig) -> Result<(), AgentError> {
    config
        .tls
        .check_server_url(&config.server_url)
        .map_err(|reason| {
            AgentError::Config(crate::client::ClientError::InvalidUrl {
                url: config.server_url.clone(),
                reason,
            })
        })
}

async fn run_device(
    config: AgentConfig,
    enforcer: Arc<dyn Enforcer>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    check_server_url(&config)?;
    let http = match &config.http {
        Some(h) => h.clone(),
        None => http_client(&config.tls).map_err(AgentError::Config)?,
    };
    let state = StateDir::new(&config.state_dir);
    {
        let s = state.clone();
        blocking(move || s.create()).await?;
    }
    // An offboarded device stays so: no restriction re-applied, no enrolment.
    let offboarded = {
        let s = state.clone();
        blocking(move || s.load_offboarded()).await?
    };
    if let Some(record) = offboarded {
        info!(
            machine_id = %record.machine_id,
            action = %record.action_id,
            at = %record.at,
            record = %state.offboarded_path().display(),
            "this device was offboarded; the agent does not start. To onboard it again, remove the record and start the agent with an enrolment secret"
        );
        return Ok(());
    }

    // Fail-open recovery first: a restart must not leave a restricted device open while
    // the server is unreachable.
    let protected = {
        let e = enforcer.clone();
        tokio::task::spawn_blocking(move || e.protected_files())
            .await
            .unwrap_or_default()
    };
    let mut rules = FilePolicy {
        policy: load_allowlist(&state).await,
        protected,
        next_change: None,
        refused_logged: HashSet::new(),
        refetch: false,
    };
    rules.apply(&*enforcer, config.clock.now()).await;
    let (persisted, unprotected_since) =
        recover(&config, &*enforcer, &state, rules.policy.as_ref()).await;
    let _alive = AbortOnDrop(tokio::spawn(keep_alive_stamp(
        enforcer.clone(),
        state.clone(),
        config.clock.clone(),
        config.alive_interval,
    )));

    let credential = {
        let s = state.clone();
        blocking(move || s.load_credential()).await
    };
    let credential = match credential {
        Ok(Some(c)) => {
            if c.server_url != config.server_url {
                warn!(enrolled_with = %c.server_url, using = %config.server_url, "the server URL changed since enrolment; using the configured one");
            }
            if c.hostname != config.hostname {
                warn!(enrolled_as = %c.hostname, "the device keeps the host name it enrolled under");
            }
            debug!(machine_id = %c.machine_id, "using the stored credential");
            c
        }
        Ok(None) => match enroll(&config, &http, &*enforcer, &state, &mut shutdown).await? {
            Some(c) => c,
            None => return Ok(()),
        },
        Err(unreadable) => {
            if !can_enroll_again(&config, &state).await {
                return Err(unreadable.into());
            }
            error!(error = %unreadable, "the stored credential is unreadable; enrolling again with the enrolment key");
            match enroll(&config, &http, &*enforcer, &state, &mut shutdown).await? {
                Some(c) => c,
                None => return Ok(()),
            }
        }
    };

    let offboarding = {
        let s = state.clone();
        match blocking(move || s.load_offboarding()).await {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, "the record of an offboarding under way is unreadable; ignoring it");
                None
            }
        }
    };
    let machine_id = credential.machine_id.clone();
    let client = GatewayClient::new(http, &config.server_url, credential.credential)
        .map_err(AgentError::Config)?;
    let _events = AbortOnDrop(tokio::spawn(ship_denials(
        enforcer.clone(),
        client.clone(),
        config.events,
        config.backoff,
        shutdown.clone(),
    )));
    let mut agent = Agent {
        config,
        enforcer,
        client,
        state,
        persisted,
        unprotected_since,
        state_fault_since: None,
        shutdown,
        next_heartbeat: Instant::now(),
        check_now: true,
        skipped: HashSet::new(),
        machine_id,
        offboarding,
        rules,
    };
    agent.serve().await
}

/// Aborts a background task when the loop that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Re-applies what the state directory records, before the server is contacted: the
/// allowlist and the mode, then the restriction. Returns the record (with the time spent
/// unprotected added and saved, if the restriction is back) and, if the restriction could
/// not be re-applied, since when the device is unprotected.
async fn recover(
    config: &AgentConfig,
    enforcer: &dyn Enforcer,
    state: &StateDir,
    policy: Option<&AllowlistResponse>,
) -> (EnforcementState, Option<Timestamp>) {
    let mut persisted = load_enforcement(state).await;
    match policy {
        Some(list) => {
            let (hashes, _) = plan::allowlist_hashes(list);
            enforcer.set_allowlist(&hashes).await;
            persisted.allowlist_version = list.version;
        }
        // Fetched again from the server.
        None => persisted.allowlist_version = 0,
    }
    enforcer.set_mode(persisted.mode);
    if !persisted.restricted {
        return (persisted, None);
    }
    let last_alive = {
        let s = state.clone();
        match blocking(move || s.load_alive()).await {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, "cannot tell when the agent was last alive; the time spent unprotected is unknown");
                None
            }
        }
    };
    if !enforcer.is_restricted() {
        info!("re-applying the restriction recorded before the restart");
        if let Err(e) = enforcer.apply(true).await {
            error!(error = %e, "could not re-apply the recorded restriction: the device is NOT protected");
            return (persisted, last_alive);
        }
    }
    let now = config.clock.now();
    if let Some(from) = last_alive {
        persisted = plan::with_unprotected(&persisted, from, now);
        warn!(%from, to = %now, total_seconds = persisted.unprotected_seconds, "the device was unprotected while the agent was down");
    }
    let (s, record) = (state.clone(), persisted.clone());
    let saved = blocking(move || {
        s.save_alive(now)?;
        s.save_enforcement(&record)
    })
    .await;
    if let Err(e) = saved {
        error!(error = %e, "cannot record the re-applied restriction");
    }
    (persisted, None)
}

/// The block and audit rules: the policy they come from, kept so that they can expire
/// without the server.
struct FilePolicy {
    /// The last policy fetched (or recorded before a restart).
    policy: Option<AllowlistResponse>,
    /// The files no block may touch, reported in every heartbeat.
    protected: Vec<ProtectedFile>,
    /// When the rules in force change next on their own (an expiry).
    next_change: Option<Timestamp>,
    /// Refused blocks already logged (by indicator id).
    refused_logged: HashSet<String>,
    /// An expiry passed: fetch the policy again even if its version did not move.
    refetch: bool,
}

impl FilePolicy {
    /// Hands the enforcer the rules in force at `now`.
    async fn apply(&mut self, enforcer: &dyn Enforcer, now: Timestamp) {
        let Some(policy) = &self.policy else {
            return;
        };
        let rules = plan::file_rules(policy, &self.protected, now);
        for (rule, file) in &rules.refused {
            if self.refused_logged.insert(rule.indicator_id.clone()) {
                warn!(indicator = %rule.indicator_id, sha256 = %rule.sha256, path = %file.path, "not applying a block for {}: the host needs it", file.role.describe());
            }
        }
        if rules.malformed > 0 {
            warn!(
                malformed = rules.malformed,
                "the policy has file rules that are not SHA-256 hashes; ignoring them"
            );
        }
        enforcer.set_file_rules(&rules.block, &rules.audit).await;
        self.next_change = rules.next_change;
        if !rules.block.is_empty() || !rules.audit.is_empty() {
            info!(
                block = rules.block.len(),
                audit = rules.audit.len(),
                next_change = ?rules.next_change,
                "file rules applied"
            );
        }
    }

    /// Drops the rules that expired by `now`, without the server; true if any did.
    async fn expire(&mut self, enforcer: &dyn Enforcer, now: Timestamp) -> bool {
        if self.next_change.is_none_or(|t| t > now) {
            return false;
        }
        info!("file rules expired; applying the rest and fetching the policy again");
        self.apply(enforcer, now).await;
        self.refetch = true;
        true
    }
}

/// Records every `interval` that the agent is alive while the enforcer restricts.
async fn keep_alive_stamp(
    enforcer: Arc<dyn Enforcer>,
    state: StateDir,
    clock: Arc<dyn Clock>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !enforcer.is_restricted() {
            continue;
        }
        let (s, now) = (state.clone(), clock.now());
        if let Err(e) = blocking(move || s.save_alive(now)).await {
            warn!(error = %e, "cannot record that the agent is alive");
        }
    }
}

/// The loop was interrupted by a shutdown request.
struct Stopped;

/// Why a cycle ended early.
enum Interrupt {
    Shutdown,
    /// The device was offboarded: the loop ends for good.
    Offboarded,
    Client(ClientError),
    /// The server broke the protocol in a way a retry might fix (or at least slow down).
    Protocol(String),
}

impl From<Stopped> for Interrupt {
    fn from(_: Stopped) -> Self {
        Interrupt::Shutdown
    }
}

impl From<ClientError> for Interrupt {
    fn from(e: ClientError) -> Self {
        Interrupt::Client(e)
    }
}

/// The time to the next heartbeat: the interval, less a random tenth of it at most.
/// Devices that started together (a fleet enrolled at once, hosts rebooted together)
/// would otherwise heartbeat together for good, each storm a burst of writes that
/// delays the actions behind it; never later than the interval, so the server's view
/// of "last seen" is as fresh as configured.
fn jittered(interval: Duration) -> Duration {
    use rand::Rng;
    interval.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..0.1))
}

/// The long-poll's wait: up to the next heartbeat, in whole seconds as the protocol
/// counts them, rounded *up* and at least one, so that the last second before a heartbeat
/// is not spent polling in a tight loop with `waitSeconds=0`.
fn poll_wait(max_wait: Duration, until_heartbeat: Duration) -> Duration {
    let d = max_wait.min(until_heartbeat);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Runs `fut` unless shutdown is requested first (or the shutdown sender is gone).
async fn until_stopped<F: Future>(
    shutdown: &mut watch::Receiver<bool>,
    fut: F,
) -> Result<F::Output, Stopped> {
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stop| *stop) => Err(Stopped),
        out = fut => Ok(out),
    }
}

/// Runs a state-file operation on the blocking pool (it fsyncs).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StateError::Io {
            op: "access",
            path: PathBuf::from("<state dir>"),
            source: std::io::Error::other(e),
        })
    })
}

/// The recorded enforcement state. A record that cannot be read is salvaged as far as
/// it goes (whether the device was restricted); one that says nothing at all counts as
/// unrestricted, loudly, and the server's desired state then decides.
async fn load_enforcement(state: &StateDir) -> EnforcementState {
    let s = state.clone();
    match blocking(move || s.load_enforcement()).await {
        Ok(found) => found.unwrap_or_default(),
        Err(e) => {
            let s = state.clone();
            let salvaged = tokio::task::spawn_blocking(move || s.salvage_enforcement())
                .await
                .ok()
                .flatten();
            match salvaged {
                Some(record) => {
                    error!(error = %e, restricted = record.restricted, "the enforcement record is damaged; keeping the state it still shows");
                    record
                }
                None => {
                    error!(error = %e, "THE ENFORCEMENT RECORD IS UNREADABLE: starting unrestricted until the server's desired state is applied");
                    EnforcementState::default()
                }
            }
        }
    }
}

/// The recorded allowlist; an unreadable one is reported and fetched again.
async fn load_allowlist(state: &StateDir) -> Option<AllowlistResponse> {
    let s = state.clone();
    match blocking(move || s.load_allowlist()).await {
        Ok(found) => found,
        Err(e) => {
            error!(error = %e, "the recorded allowlist is unreadable; it will be fetched from the server");
            None
        }
    }
}

fn device_info(config: &AgentConfig, enforcer: &dyn Enforcer) -> DeviceInfo {
    DeviceInfo {
        capabilities: enforcer.capabilities(),
        ..config.device_info.clone()
    }
}

/// Whether an enrolment would get this device its identity back: it has an enrolment
/// secret and the key it enrolled with.
async fn can_enroll_again(config: &AgentConfig, state: &StateDir) -> bool {
    let s = state.clone();
    config.enroll_secret.is_some()
        && matches!(blocking(move || s.load_enrollment_key()).await, Ok(Some(_)))
}

/// Enrols the device and stores its credential; `None` if shutdown came first.
///
/// The enrolment key is on disk before the first request, so if the answer is lost (or
/// the credential cannot be saved) the next attempt, in this process or the next, gets
/// a new credential for the same machine instead of "host name taken".
async fn enroll(
    config: &AgentConfig,
    http: &reqwest::Client,
    enforcer: &dyn Enforcer,
    state: &StateDir,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<StoredCredential>, AgentError> {
    let Some(secret) = config.enroll_secret.as_deref() else {
        return Err(AgentError::NotEnrolled(state.credential_path()));
    };
    let key = {
        let s = state.clone();
        blocking(move || s.enrollment_key()).await?
    };
    let info = device_info(config, enforcer);
    let mut attempt = 0u32;
    loop {
        let call = GatewayClient::enroll(
            http,
            &config.server_url,
            secret,
            &key.key,
            &config.hostname,
            &info,
        );
        let Ok(outcome) = until_stopped(shutdown, call).await else {
            return Ok(None);
        };
        match outcome {
            Ok(resp) => {
                let cred = StoredCredential {
                    server_url: config.server_url.clone(),
                    hostname: config.hostname.clone(),
                    machine_id: resp.machine_id,
                    aad_device_id: resp.aad_device_id,
                    credential: resp.credential.expose().to_string(),
                    enrolled_at: config.clock.now(),
                };
                let (s, c) = (state.clone(), cred.clone());
                blocking(move || s.save_credential(&c)).await?;
                info!(machine_id = %cred.machine_id, "enrolled");
                return Ok(Some(cred));
            }
            Err(e @ ClientError::InvalidUrl { .. }) => return Err(AgentError::Config(e)),
            Err(e) if e.is_retryable() => {
                let delay = config.backoff.next_delay(attempt);
                attempt = attempt.saturating_add(1);
                warn!(error = %e, retry_in = ?delay, "enrolment failed; retrying");
                if until_stopped(shutdown, tokio::time::sleep(delay))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
            Err(e) => {
                error!(error = %e, "enrolment refused");
                return Err(AgentError::EnrollmentRefused(e));
            }
        }
    }
}

struct Agent {
    config: AgentConfig,
    enforcer: Arc<dyn Enforcer>,
    client: GatewayClient,
    state: StateDir,
    /// The record on disk, kept in step with it.
    persisted: EnforcementState,
    /// Since when the device should be restricted but is not (a re-apply at start
    /// failed); closed into the record once enforcement is back or no longer wanted.
    unprotected_since: Option<Timestamp>,
    /// Since when the state directory cannot be written, as last seen by a heartbeat.
    state_fault_since: Option<Timestamp>,
    shutdown: watch::Receiver<bool>,
    next_heartbeat: Instant,
    /// Poll without waiting and converge right away (at start, after a heartbeat showed a
    /// mismatch, after an error).
    check_now: bool,
    /// Commands whose acknowledgement said they are closed, from the last cycle: the
    /// server sending only those again would otherwise make the loop spin.
    skipped: HashSet<String>,
    /// The machine id the device enrolled as.
    machine_id: String,
    /// The offboard action under way, as recorded in the state directory.
    offboarding: Option<OffboardRecord>,
    /// The block and audit rules and when they expire.
    rules: FilePolicy,
}

impl Agent {
    async fn serve(&mut self) -> Result<(), AgentError> {
        let mut attempt = 0u32;
        loop {
            match self.cycle().await {
                Ok(()) => attempt = 0,
                Err(Interrupt::Shutdown) => {
                    info!("stopping");
                    return Ok(());
                }
                Err(Interrupt::Offboarded) => return Ok(()),
                Err(Interrupt::Client(ClientError::Unauthorized(message)))
                    if self.offboarding.is_some() =>
                {
                    info!(%message, "the server refuses the credential while an offboarding is under way: it completed the offboarding");
                    self.finish_offboarding("CredentialRefused").await;
                    return Ok(());
                }
                Err(Interrupt::Client(ClientError::Unauthorized(message))) => {
                    let delay = self.config.unauthorized_retry;
                    error!(
                        %message,
                        restricted = self.enforcer.is_restricted(),
                        retry_in = ?delay,
                        credential = %self.state.credential_path().display(),
                        "THE SERVER REFUSES THIS DEVICE'S CREDENTIAL (revoked or unknown). \
                         The recorded enforcement stays in force. To enrol again, remove the \
                         credential file and restart the agent with an enrolment secret."
                    );
                    self.next_heartbeat = Instant::now();
                    self.check_now = true;
                    if until_stopped(&mut self.shutdown, tokio::time::sleep(delay))
                        .await
                        .is_err()
                    {
                        info!("stopping");
                        return Ok(());
                    }
                }
                Err(interrupt) => {
                    let delay = self.config.backoff.next_delay(attempt);
                    attempt = attempt.saturating_add(1);
                    match &interrupt {
                        Interrupt::Client(e) if e.is_retryable() => {
                            warn!(error = %e, retry_in = ?delay, "gateway call failed")
                        }
                        Interrupt::Client(e) => {
                            error!(error = %e, retry_in = ?delay, "gateway call rejected")
                        }
                        Interrupt::Protocol(m) => {
                            error!(error = %m, retry_in = ?delay, "protocol error")
                        }
                        Interrupt::Shutdown | Interrupt::Offboarded => {}
                    }
                    // Once back, say so at once and catch up with what was missed.
                    self.next_heartbeat = Instant::now();
                    self.check_now = true;
                    if until_stopped(&mut self.shutdown, tokio::time::sleep(delay))
                        .await
                        .is_err()
                    {
                        info!("stopping");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One round: heartbeat if due, one long-poll, the commands it returned in order,
    /// then convergence to the newest desired state seen.
    async fn cycle(&mut self) -> Result<(), Interrupt> {
        // Whether the state directory can be written changed: news for the server now.
        if self.state.write_fault().is_some() != self.state_fault_since.is_some() {
            self.next_heartbeat = Instant::now();
        }
        self.rules
            .expire(&*self.enforcer, self.config.clock.now())
            .await;
        if Instant::now() >= self.next_heartbeat {
            let desired = self.heartbeat().await?;
            let actual = self.enforcer.is_restricted();
            let settings_differ = desired.mode != self.persisted.mode
                || desired.allowlist_version != self.persisted.allowlist_version;
            if settings_differ
                || plan::convergence(actual, &self.persisted, &desired) != Convergence::InSync
            {
                // Maybe an open command explains the difference: look before converging.
                self.check_now = true;
            }
        }
        let wait = if self.check_now || self.rules.refetch {
            Duration::ZERO
        } else {
            // Back by the next expiry too, so that it takes effect on time.
            let until_expiry = self.rules.next_change.map_or(Duration::MAX, |at| {
                plan::time_until(self.config.clock.now(), at)
            });
            poll_wait(
                self.config.poll_wait,
                self.next_heartbeat
                    .saturating_duration_since(Instant::now())
                    .min(until_expiry),
            )
        };
        let resp = until_stopped(&mut self.shutdown, self.client.poll_commands(wait)).await??;
        // The allowlist and the mode first, so that a restriction in this round starts
        // with them.
        self.sync_settings(&resp.desired).await?;

        if !resp.commands.is_empty()
            && resp
                .commands
                .iter()
                .all(|c| self.skipped.contains(&c.action_id))
        {
            let ids: Vec<&str> = resp.commands.iter().map(|c| c.action_id.as_str()).collect();
            return Err(Interrupt::Protocol(format!(
                "the server keeps sending actions it says are closed: {ids:?}"
            )));
        }
        self.skipped.clear();
        // The server answered with this credential, so it did not offboard the device:
        // an offboarding under way that is no longer open was cancelled.
        if let Some(leaving) = &self.offboarding {
            if !resp
                .commands
                .iter()
                .any(|c| c.action_id == leaving.action_id)
            {
                info!(action = %leaving.action_id, "the offboarding was cancelled; staying");
                self.forget_offboarding().await;
            }
        }

        let mut desired = resp.desired;
        for command in &resp.commands {
            desired = self.handle(command).await?;
        }
        self.sync_settings(&desired).await?;
        self.converge(&desired).await;
        self.check_now = false;
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<DesiredState, Interrupt> {
        let mut enforcement = plan::reported_state(self.enforcer.is_restricted(), &self.persisted);
        enforcement.coverage = self.enforcer.coverage();
        enforcement.state_fault = self.state_fault();
        enforcement.protected = self.rules.protected.clone();
        let req = HeartbeatRequest {
            info: device_info(&self.config, &*self.enforcer),
            enforcement,
        };
        let resp = until_stopped(&mut self.shutdown, self.client.heartbeat(&req)).await??;
        debug!(desired = ?resp.desired, "heartbeat");
        self.next_heartbeat = Instant::now() + jittered(self.config.heartbeat_interval);
        Ok(resp.desired)
    }

    /// Acknowledges, applies (if still open) and reports one command; returns the desired
    /// state after it.
    async fn handle(&mut self, command: &Command) -> Result<DesiredState, Interrupt> {
        let id = command.action_id.as_str();
        until_stopped(&mut self.shutdown, self.enforcer.before_ack(command)).await?;
        let ack = until_stopped(&mut self.shutdown, self.client.ack(id)).await??;
        let result = match plan::decide(command, &ack) {
            Step::Skip => {
                info!(action = id, status = ?ack.status, "the action is no longer open; not applying it");
                self.skipped.insert(id.to_string());
                return Ok(ack.desired);
            }
            Step::Reject {
                error_h_result,
                troubleshoot_info,
            } => {
                warn!(
                    action = id,
                    r#type = command.action_type.as_str(),
                    "unsupported action"
                );
                ResultRequest {
                    outcome: Outcome::Failed,
                    error_h_result,
                    troubleshoot_info: Some(troubleshoot_info),
                }
            }
            Step::Apply { restricted } => {
                self.next_heartbeat = Instant::now();
                self.apply_action(id, restricted).await
            }
            Step::Offboard => return self.offboard(id).await,
        };
        let update = until_stopped(&mut self.shutdown, self.client.report(id, &result)).await??;
        if update.applied {
            info!(action = id, outcome = ?result.outcome, "reported");
        } else {
            warn!(action = id, status = ?update.status, "the action was closed while being applied; converging back");
        }
        Ok(update.desired)
    }

    /// Carries out an acknowledged offboard action: records that it is under way, lifts
    /// the enforcement, reports. Once the server has it (or refuses the credential, or
    /// says the action ended some other way that offboards), finishes the offboarding
    /// and ends the loop (`Interrupt::Offboarded`); if it was cancelled meanwhile,
    /// forgets it and returns the desired state to converge to.
    async fn offboard(&mut self, id: &str) -> Result<DesiredState, Interrupt> {
        let record = OffboardRecord {
            action_id: id.to_string(),
            machine_id: self.machine_id.clone(),
            hostname: self.config.hostname.clone(),
            server_url: self.config.server_url.clone(),
            at: self.config.clock.now(),
            outcome: None,
        };
        let (s, r) = (self.state.clone(), record.clone());
        if let Err(e) = blocking(move || s.save_offboarding(&r)).await {
            error!(action = id, error = %e, "cannot record that an offboarding is under way; going on");
        }
        self.offboarding = Some(record);
        info!(action = id, "offboarding: lifting the enforcement");
        let result = match self.enforcer.apply(false).await {
            Ok(report) => ResultRequest {
                outcome: Outcome::Succeeded,
                error_h_result: 0,
                troubleshoot_info: report.detail,
            },
            Err(e) => {
                // Reported, and the agent stops all the same: a device cannot decline
                // its offboarding, and nothing stays enforced once the agent is gone.
                warn!(action = id, error = %e, "could not lift the enforcement cleanly");
                ResultRequest {
                    outcome: Outcome::Failed,
                    error_h_result: e.hresult,
                    troubleshoot_info: Some(format!(
                        "Offboarding: the enforcement could not be lifted cleanly ({}); \
                         the agent stops anyway",
                        e.message
                    )),
                }
            }
        };
        // The server hears that nothing is enforced any more before the device goes
        // quiet for good (best effort: the report below is what counts).
        match self.heartbeat().await {
            Ok(_) => {}
            Err(Interrupt::Shutdown) => return Err(Interrupt::Shutdown),
            Err(Interrupt::Client(e)) => {
                warn!(action = id, error = %e, "could not report the lifted enforcement")
            }
            Err(_) => {}
        }
        let outcome = match result.outcome {
            Outcome::Succeeded => "Succeeded",
            Outcome::Failed => "Failed",
        };
        match until_stopped(&mut self.shutdown, self.client.report(id, &result)).await? {
            Ok(update)
                if update.applied
                    || appfence_core::records::offboards(
                        appfence_proto::ActionType::Offboard,
                        update.status,
                    ) =>
            {
                self.finish_offboarding(if update.applied {
                    outcome
                } else {
                    update.status.as_str()
                })
                .await;
                Err(Interrupt::Offboarded)
            }
            Ok(update) => {
                warn!(action = id, status = ?update.status, "the offboarding was cancelled while under way; converging back");
                self.forget_offboarding().await;
                Ok(update.desired)
            }
            Err(ClientError::Unauthorized(_)) => {
                self.finish_offboarding("CredentialRefused").await;
                Err(Interrupt::Offboarded)
            }
            Err(e) => Err(Interrupt::Client(e)),
        }
    }

    /// The end of an offboarding: nothing enforced, the offboarding recorded, the
    /// credential and the state deleted. Failures are logged; the agent stops anyway.
    async fn finish_offboarding(&mut self, outcome: &str) {
        let Some(mut record) = self.offboarding.take() else {
            return;
        };
        if self.enforcer.is_restricted() {
            if let Err(e) = self.enforcer.apply(false).await {
                error!(error = %e, "could not lift the enforcement; it ends when the agent stops");
            }
        }
        record.at = self.config.clock.now();
        record.outcome = Some(outcome.to_string());
        let (s, r) = (self.state.clone(), record.clone());
        if let Err(e) = blocking(move || s.finish_offboarding(&r)).await {
            error!(error = %e, "could not delete all of the device's state");
        }
        info!(
            action = %record.action_id,
            machine_id = %record.machine_id,
            outcome,
            record = %self.state.offboarded_path().display(),
            "this device is offboarded: enforcement lifted, credential and state deleted; the agent stops"
        );
    }

    /// Forgets an offboarding that will not happen.
    async fn forget_offboarding(&mut self) {
        self.offboarding = None;
        let s = self.state.clone();
        if let Err(e) = blocking(move || s.clear_offboarding()).await {
            warn!(error = %e, "cannot delete the record of a cancelled offboarding");
        }
    }

    /// Applies an acknowledged action and records it; returns the report to send.
    async fn apply_action(&mut self, id: &str, restricted: bool) -> ResultRequest {
        let failed = |error_h_result, info: String| ResultRequest {
            outcome: Outcome::Failed,
            error_h_result,
            troubleshoot_info: Some(info),
        };
        let report = match self.enforcer.apply(restricted).await {
            Ok(r) => r,
            Err(e) => {
                warn!(action = id, error = %e, "could not apply the action");
                return failed(e.hresult, e.message);
            }
        };
        let next = plan::next_state(
            &self.persisted,
            restricted,
            Some(id.to_string()),
            self.config.clock.now(),
        );
        match self.persist(next).await {
            Ok(()) => {
                info!(action = id, restricted, "applied");
                ResultRequest {
                    outcome: Outcome::Succeeded,
                    error_h_result: 0,
                    troubleshoot_info: report.detail,
                }
            }
            Err(e) => {
                // Unrecorded, the state would be lost at the next restart: report failure,
                // and convergence then returns the device to the server's desired state.
                error!(action = id, error = %e, "applied but could not record the state");
                failed(
                    hresult::E_FAIL,
                    format!("The state was applied but could not be recorded: {e}"),
                )
            }
        }
    }

    /// Brings enforcement and record in line with `desired`, without creating actions.
    /// A failure is logged and retried at the next cycle.
    async fn converge(&mut self, desired: &DesiredState) {
        let actual = self.enforcer.is_restricted();
        let step = plan::convergence(actual, &self.persisted, desired);
        if step == Convergence::InSync {
            return;
        }
        if let Convergence::Apply { restricted } = step {
            info!(restricted, action = ?desired.action_id, "converging to the server's desired state");
            if let Err(e) = self.enforcer.apply(restricted).await {
                error!(error = %e, "could not converge to the desired state");
                return;
            }
            self.next_heartbeat = Instant::now();
        }
        let next = plan::next_state(
            &self.persisted,
            desired.restricted,
            desired.action_id.clone(),
            self.config.clock.now(),
        );
        if let Err(e) = self.persist(next).await {
            error!(error = %e, "could not record the converged state");
        }
    }

    /// Brings the mode and the allowlist in line with `desired`. Failures are logged
    /// and retried at the next cycle; only a shutdown interrupts.
    async fn sync_settings(&mut self, desired: &DesiredState) -> Result<(), Interrupt> {
        if desired.mode != self.persisted.mode {
            info!(mode = ?desired.mode, "switching the enforcement mode");
            self.enforcer.set_mode(desired.mode);
            let next = EnforcementState {
                mode: desired.mode,
                ..self.persisted.clone()
            };
            if let Err(e) = self.persist(next).await {
                error!(error = %e, "could not record the enforcement mode");
            }
            self.next_heartbeat = Instant::now();
        }
        if desired.allowlist_version != self.persisted.allowlist_version || self.rules.refetch {
            let fetched = until_stopped(&mut self.shutdown, self.client.allowlist()).await?;
            // Once per expiry, fetched or not: a failing server must not make the loop
            // spin (a version change still fetches).
            self.rules.refetch = false;
            match fetched {
                Ok(list) => self.apply_allowlist(list).await,
                Err(e) => {
                    warn!(error = %e, wanted = desired.allowlist_version, "cannot fetch the allowlist; keeping the one in force")
                }
            }
        }
        Ok(())
    }

    /// Records the allowlist (so that a restart re-applies it), then applies it.
    async fn apply_allowlist(&mut self, list: AllowlistResponse) {
        let (hashes, rejected) = plan::allowlist_hashes(&list);
        if rejected > 0 {
            warn!(
                rejected,
                "the allowlist has entries that are not SHA-256 hashes; ignoring them"
            );
        }
        let (s, record) = (self.state.clone(), list.clone());
        if let Err(e) = blocking(move || s.save_allowlist(&record)).await {
            error!(error = %e, "could not record the allowlist; applying it anyway");
        }
        self.enforcer.set_allowlist(&hashes).await;
        info!(
            version = list.version,
            hashes = hashes.len(),
            "allowlist applied"
        );
        let version = list.version;
        self.rules.policy = Some(list);
        self.rules
            .apply(&*self.enforcer, self.config.clock.now())
            .await;
        let next = EnforcementState {
            allowlist_version: version,
            ..self.persisted.clone()
        };
        if let Err(e) = self.persist(next).await {
            error!(error = %e, "could not record the allowlist version");
        }
        self.next_heartbeat = Instant::now();
    }

    /// The state directory's write failure, if the last write failed, for the server.
    fn state_fault(&mut self) -> Option<appfence_proto::agent::StateFault> {
        let Some((path, error)) = self.state.write_fault() else {
            self.state_fault_since = None;
            return None;
        };
        let since = *self
            .state_fault_since
            .get_or_insert_with(|| self.config.clock.now());
        Some(appfence_proto::agent::StateFault {
            path: path.display().to_string(),
            error,
            since,
        })
    }

    /// Saves `next` as the record. While restricted, an alive stamp is saved with it
    /// (durably, before anything is reported, so a restriction that begins here has one);
    /// an unprotected period still open ends here once enforcement is back or no longer
    /// wanted.
    async fn persist(&mut self, mut next: EnforcementState) -> Result<(), StateError> {
        let now = self.config.clock.now();
        let enforced = self.enforcer.is_restricted();
        if let Some(from) = self.unprotected_since {
            if enforced || !next.restricted {
                next = plan::with_unprotected(&next, from, now);
                warn!(%from, to = %now, total_seconds = next.unprotected_seconds, "the device was unprotected");
            }
        }
        let stamp = next.restricted && enforced;
        let (state, record) = (self.state.clone(), next.clone());
        blocking(move || {
            if stamp {
                state.save_alive(now)?;
            }
            state.save_enforcement(&record)
        })
        .await?;
        if enforced || !next.restricted {
            self.unprotected_since = None;
        }
        self.persisted = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_wait_is_whole_seconds_up_to_the_heartbeat() {
        let s = Duration::from_secs;
        assert_eq!(poll_wait(s(30), s(100)), s(30));
        assert_eq!(poll_wait(s(30), s(12)), s(12));
        assert_eq!(poll_wait(s(30), Duration::from_millis(12_300)), s(13));
        // Never a zero wait, which would spin until the heartbeat is due.
        assert_eq!(poll_wait(s(30), Duration::from_millis(200)), s(1));
        assert_eq!(poll_wait(s(30), Duration::ZERO), s(1));
        assert_eq!(poll_wait(Duration::ZERO, s(30)), s(1));
    }

    #[test]
    fn heartbeats_spread_within_the_last_tenth_of_the_interval() {
        let interval = Duration::from_secs(30);
        let waits: Vec<Duration> = (0..1000).map(|_| jittered(interval)).collect();
        assert!(waits
            .iter()
            .all(|w| *w <= interval && *w > interval.mul_f64(0.9)));
        // Spread out, not one value: a fleet started together drifts apart.
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*max - *min > Duration::from_secs(2), "{min:?}..{max:?}");
    }

    #[test]
    fn config_debug_hides_the_secret() {
        let mut c = AgentConfig::new("http://h:1", "/tmp/x", "h", DeviceInfo::default());
        c.enroll_secret = Some("topsecret".into());
        let text = format!("{c:?}");
        assert!(!text.contains("topsecret") && text.contains("redacted"));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
    }
}
