//! The agent loop against a small in-memory fake of the `/agent/v1` gateway: enrolment,
//! apply and report, cancellation before and during an action, convergence, restarts
//! (re-applied before the server is reachable, with the time spent unprotected),
//! allowlist and mode changes, denial batches, revoked credentials, unreachable servers,
//! enrolment answers or credentials lost (recovered with the enrolment key) and prompt
//! shutdown. The real server's own end-to-end tests live in the integration
//! test binary.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::enforcer::hresult;
use crate::simulated::device_config;
use crate::{
    run, AgentConfig, AgentError, EnforceError, EnforcementReport, Enforcer, SimTimings,
    SimulatedEnforcer,
};
use appfence_proto::agent::{
    ActionUpdateResponse, AllowlistResponse, Capabilities, Command, CommandsResponse, DenialEvent,
    DenialKind, DesiredState, EnforcementMode, EnforcementState, EnrollRequest, EnrollResponse,
    EventBatch, EventBatchResponse, HeartbeatRequest, HeartbeatResponse, Outcome, ResultRequest,
    MAX_EVENTS_PER_BATCH,
};
use appfence_proto::{ActionStatus, ActionType, Timestamp};
use async_trait::async_trait;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;

const SECRET: &str = "enrol-me";

// ---------------------------------------------------------------- the fake gateway

#[derive(Clone, Debug)]
struct FakeAction {
    id: String,
    host: String,
    action_type: ActionType,
    status: ActionStatus,
    result: Option<ResultRequest>,
}

/// An enrolled device as the fake remembers it.
#[derive(Clone, Debug)]
struct FakeMachine {
    machine_id: String,
    enrollment_key: Option<String>,
}

#[derive(Default)]
struct World {
    /// credential -> host name
    credentials: HashMap<String, String>,
    /// host name -> the machine enrolled under it
    machines: HashMap<String, FakeMachine>,
    /// Enrolments that gave a known machine a new credential.
    reenrolments: usize,
    /// How many more enrolments to carry out but answer with 502, as a proxy that lost
    /// the server's answer would.
    lose_enrolment_answers: usize,
    desired: HashMap<String, DesiredState>,
    actions: Vec<FakeAction>,
    enrolments: usize,
    heartbeats: Vec<(String, HeartbeatRequest)>,
    next_id: u64,
    allowlist: AllowlistResponse,
    allowlist_fetches: usize,
    /// Batches received, in order.
    batches: Vec<Vec<DenialEvent>>,
    /// Answer `POST /events` with 503 while set.
    events_down: bool,
    /// How many more results to record but answer with 502 (a lost answer).
    lose_result_answers: usize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message, "target": "t"}});
    (status, Json(body)).into_response()
}

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    #[allow(clippy::result_large_err)] // a test fake: the size of its error does not matter
    fn device(&self, headers: &HeaderMap) -> Result<String, Response> {
        let cred = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        self.world().credentials.get(cred).cloned().ok_or_else(|| {
            envelope(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "unknown credential",
            )
        })
    }

    fn create(&self, host: &str, action_type: ActionType) -> String {
        let mut w = self.world();
        w.next_id += 1;
        let id = format!("action-{}", w.next_id);
        w.actions.push(FakeAction {
            id: id.clone(),
            host: host.to_string(),
            action_type,
            status: ActionStatus::Pending,
            result: None,
        });
        id
    }

    fn action(&self, id: &str) -> FakeAction {
        self.world()
            .actions
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .unwrap()
    }

    fn set_status(&self, id: &str, status: ActionStatus) {
        let mut w = self.world();
        w.actions.iter_mut().find(|a| a.id == id).unwrap().status = status;
    }

    fn revoke(&self, host: &str) {
        self.world().credentials.retain(|_, h| h != host);
    }

    fn desired(&self, host: &str) -> DesiredState {
        self.world().desired.get(host).cloned().unwrap_or_default()
    }

    fn change_desired(&self, host: &str, change: impl FnOnce(&mut DesiredState)) {
        change(self.world().desired.entry(host.to_string()).or_default());
    }

    /// Publishes a new allowlist and tells `host` about its version.
    fn publish_allowlist(&self, host: &str, version: u64, sha256: &[String]) {
        self.world().allowlist = AllowlistResponse {
            version,
            sha256: sha256.to_vec(),
            ..AllowlistResponse::default()
        };
        self.change_desired(host, |d| d.allowlist_version = version);
    }

    fn received_events(&self) -> Vec<DenialEvent> {
        self.world().batches.concat()
    }

    fn last_heartbeat(&self, host: &str) -> Option<HeartbeatRequest> {
        let w = self.world();
        w.heartbeats
            .iter()
            .rev()
            .find(|(h, _)| h == host)
            .map(|(_, r)| r.clone())
    }

    fn update(&self, a: &FakeAction, applied: bool) -> ActionUpdateResponse {
        ActionUpdateResponse {
            action_id: a.id.clone(),
            status: a.status,
            applied,
            desired: self.desired(&a.host),
        }
    }
}

async fn enroll(State(fake): State<Fake>, Json(req): Json<EnrollRequest>) -> Response {
    if req.enroll_secret.expose() != SECRET {
        return envelope(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "bad enrolment secret",
        );
    }
    let mut w = fake.world();
    let taken = w.credentials.values().any(|h| *h == req.hostname);
    // A taken name: only the key its machine enrolled with gets that machine back.
    let reenrolled = match w.machines.get(&req.hostname) {
        Some(m) if taken => {
            let key = req.enrollment_key.as_ref().map(|k| k.expose().to_string());
            if key.is_none() || m.enrollment_key != key {
                return envelope(StatusCode::BAD_REQUEST, "BadRequest", "Hostname is taken");
            }
            Some(m.clone())
        }
        _ => None,
    };
    w.enrolments += 1;
    let machine = match reenrolled {
        Some(m) => {
            w.credentials.retain(|_, h| *h != req.hostname);
            w.reenrolments += 1;
            m
        }
        None => {
            let m = FakeMachine {
                machine_id: format!("machine-{}-{}", req.hostname, w.enrolments),
                enrollment_key: req.enrollment_key.as_ref().map(|k| k.expose().to_string()),
            };
            w.machines.insert(req.hostname.clone(), m.clone());
            m
        }
    };
    let credential = format!("cred-{}-{}", req.hostname, w.enrolments);
    w.credentials
        .insert(credential.clone(), req.hostname.clone());
    if w.lose_enrolment_answers > 0 {
        w.lose_enrolment_answers -= 1;
        return envelope(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            "upstream answer lost",
        );
    }
    let resp = EnrollResponse {
        machine_id: machine.machine_id,
        aad_device_id: "00000000-0000-0000-0000-000000000001".into(),
        credential: credential.into(),
    };
    (StatusCode::CREATED, Json(resp)).into_response()
}

async fn heartbeat(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(req): Json<HeartbeatRequest>,
) -> Response {
    let host = match fake.device(&headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    fake.world().heartbeats.push((host.clone(), req));
    Json(HeartbeatResponse {
        desired: fake.desired(&host),
    })
    .into_response()
}

async fn commands(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let host = match fake.device(&headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let wait: u64 = q
        .get("waitSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let open: Vec<Command> = fake
            .world()
            .actions
            .iter()
            .filter(|a| a.host == host)
            .filter(|a| matches!(a.status, ActionStatus::Pending | ActionStatus::InProgress))
            .map(|a| Command {
                action_id: a.id.clone(),
                action_type: a.action_type,
                status: a.status,
                created: Timestamp::from_unix_seconds(1),
            })
            .collect();
        if !open.is_empty() || Instant::now() >= deadline {
            return Json(CommandsResponse {
                commands: open,
                desired: fake.desired(&host),
            })
            .into_response();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ack(
    State(fake): State<Fake>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let host = match fake.device(&headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut w = fake.world();
    let Some(a) = w.actions.iter_mut().find(|a| a.id == id && a.host == host) else {
        return envelope(StatusCode::NOT_FOUND, "NotFound", "no such action");
    };
    let applied = match a.status {
        ActionStatus::Pending | ActionStatus::InProgress => {
            a.status = ActionStatus::InProgress;
            true
        }
        _ => false,
    };
    let a = a.clone();
    drop(w);
    Json(fake.update(&a, applied)).into_response()
}

async fn result(
    State(fake): State<Fake>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<ResultRequest>,
) -> Response {
    let host = match fake.device(&headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut w = fake.world();
    let Some(a) = w.actions.iter_mut().find(|a| a.id == id && a.host == host) else {
        return envelope(StatusCode::NOT_FOUND, "NotFound", "no such action");
    };
    let target = match req.outcome {
        Outcome::Succeeded => ActionStatus::Succeeded,
        Outcome::Failed => ActionStatus::Failed,
    };
    let applied = if a.status == ActionStatus::InProgress {
        a.status = target;
        a.result = Some(req);
        true
    } else {
        a.status == target
    };
    let a = a.clone();
    if applied && a.status == ActionStatus::Succeeded && a.action_type.is_restrict_family() {
        let d = w.desired.entry(host.clone()).or_default();
        d.restricted = a.action_type == ActionType::RestrictCodeExecution;
        d.action_id = Some(a.id.clone());
    }
    // As the server: an offboard that ends offboards, and the credential goes with it.
    if appfence_core::records::offboards(a.action_type, a.status) {
        w.credentials.retain(|_, h| *h != host);
    }
    if w.lose_result_answers > 0 {
        w.lose_result_answers -= 1;
        return envelope(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            "upstream answer lost",
        );
    }
    drop(w);
    Json(fake.update(&a, applied)).into_response()
}

async fn allowlist(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if let Err(r) = fake.device(&headers) {
        return r;
    }
    let mut w = fake.world();
    w.allowlist_fetches += 1;
    Json(w.allowlist.clone()).into_response()
}

async fn events(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(batch): Json<EventBatch>,
) -> Response {
    if let Err(r) = fake.device(&headers) {
        return r;
    }
    let mut w = fake.world();
    if w.events_down {
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "down",
        );
    }
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return envelope(StatusCode::BAD_REQUEST, "BadRequest", "batch too large");
    }
    let accepted = batch.events.len();
    w.batches.push(batch.events);
    Json(EventBatchResponse { accepted }).into_response()
}

fn router(fake: Fake) -> Router {
    Router::new()
        .route("/agent/v1/allowlist", get(allowlist))
        .route("/agent/v1/events", post(events))
        .route("/agent/v1/enroll", post(enroll))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/commands", get(commands))
        .route("/agent/v1/actions/{id}/ack", post(ack))
        .route("/agent/v1/actions/{id}/result", post(result))
        .with_state(fake)
}

async fn serve_on(listener: tokio::net::TcpListener, fake: Fake) {
    tokio::spawn(async move { axum::serve(listener, router(fake)).await.unwrap() });
}

async fn start_fake() -> (Fake, String) {
    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    serve_on(listener, fake.clone()).await;
    (fake, url)
}

// ---------------------------------------------------------------- helpers

/// A simulated enforcer that also remembers every state it was asked for.
struct Recording {
    inner: SimulatedEnforcer,
    calls: Mutex<Vec<bool>>,
}

impl Recording {
    fn new(timings: SimTimings) -> Arc<Self> {
        Arc::new(Recording {
            inner: SimulatedEnforcer::new(timings),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<bool> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Enforcer for Recording {
    async fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        self.calls.lock().unwrap().push(restricted);
        self.inner.apply(restricted).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn is_restricted(&self) -> bool {
        self.inner.is_restricted()
    }
    async fn before_ack(&self, command: &Command) {
        self.inner.before_ack(command).await
    }
    async fn set_allowlist(&self, sha256: &[String]) {
        self.inner.set_allowlist(sha256).await
    }
    fn set_mode(&self, mode: EnforcementMode) {
        self.inner.set_mode(mode)
    }
    fn drain_denials(&self) -> Vec<DenialEvent> {
        self.inner.drain_denials()
    }
    fn coverage(&self) -> Vec<String> {
        self.inner.coverage()
    }
}

const HOST: &str = "demo-linux-01.appfence.local";

fn config(url: &str, root: &Path) -> AgentConfig {
    let mut c = device_config(url, SECRET, 1, root);
    c.heartbeat_interval = Duration::from_secs(1);
    c.poll_wait = Duration::from_secs(1);
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    c.alive_interval = Duration::from_millis(100);
    c.events.drain_interval = Duration::from_millis(20);
    c.events.send_interval = Duration::from_millis(100);
    c.unauthorized_retry = Duration::from_millis(200);
    c
}

type Handle = tokio::task::JoinHandle<Result<(), AgentError>>;

fn start(config: AgentConfig, enforcer: Arc<dyn Enforcer>) -> (watch::Sender<bool>, Handle) {
    let (tx, rx) = watch::channel(false);
    (tx, tokio::spawn(run(config, enforcer, rx)))
}

/// Creates a restrict for the test host and waits until the agent made it `Succeeded`.
async fn restricted(fake: &Fake) -> String {
    let id = fake.create(HOST, ActionType::RestrictCodeExecution);
    eventually("restricted", || {
        fake.action(&id).status == ActionStatus::Succeeded
    })
    .await;
    id
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(tx: watch::Sender<bool>, handle: Handle) -> Result<(), AgentError> {
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the agent stops promptly")
        .unwrap()
}

fn read_enforcement(root: &Path) -> EnforcementState {
    try_read_enforcement(root).expect("an enforcement record")
}

/// The enforcement record, or `None` while the agent has not written one yet.
fn try_read_enforcement(root: &Path) -> Option<EnforcementState> {
    let bytes = std::fs::read(root.join("demo-linux-01/enforcement.json")).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn enrols_then_restricts_and_unrestricts() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());

    eventually("enrolment and a heartbeat", || {
        fake.last_heartbeat(HOST).is_some()
    })
    .await;
    let cred = tmp.path().join("demo-linux-01/credential.json");
    let mode = std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let hb = fake.last_heartbeat(HOST).unwrap();
    assert!(hb.info.capabilities.simulated && hb.info.capabilities.can_restrict_execution);
    assert_eq!(hb.info.os_platform, "Linux");

    let restrict = fake.create(HOST, ActionType::RestrictCodeExecution);
    eventually("restrict succeeds", || {
        fake.action(&restrict).status == ActionStatus::Succeeded
    })
    .await;
    assert!(enforcer.is_restricted());
    let rec = read_enforcement(tmp.path());
    assert!(rec.restricted && rec.since.is_some());
    assert_eq!(rec.applied_action_id.as_deref(), Some(restrict.as_str()));
    let result = fake.action(&restrict).result.unwrap();
    assert_eq!(
        (result.outcome, result.error_h_result),
        (Outcome::Succeeded, 0)
    );
    eventually("a heartbeat reports the restriction", || {
        fake.last_heartbeat(HOST)
            .is_some_and(|h| h.enforcement.restricted)
    })
    .await;

    let unrestrict = fake.create(HOST, ActionType::UnrestrictCodeExecution);
    eventually("unrestrict succeeds", || {
        fake.action(&unrestrict).status == ActionStatus::Succeeded
    })
    .await;
    assert!(!enforcer.is_restricted());
    assert!(!read_enforcement(tmp.path()).restricted);
    assert_eq!(
        enforcer.apply_count(),
        2,
        "convergence adds no extra applies"
    );

    stop(tx, handle).await.unwrap();
    assert_eq!(fake.world().enrolments, 1);
}

#[tokio::test]
async fn an_action_cancelled_before_the_ack_is_never_applied() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings {
        denial_when_restricted: false,
        ack_delay: Duration::from_millis(400),
        complete_delay: Duration::ZERO,
    }));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;

    let id = fake.create(HOST, ActionType::RestrictCodeExecution);
    // The device has seen the command and is waiting before it acknowledges.
    tokio::time::sleep(Duration::from_millis(150)).await;
    fake.set_status(&id, ActionStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(800)).await;

    assert_eq!(fake.action(&id).status, ActionStatus::Cancelled);
    assert!(fake.action(&id).result.is_none());
    assert_eq!(enforcer.apply_count(), 0);
    assert!(!enforcer.is_restricted());
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn an_action_cancelled_while_applying_is_rolled_back() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Recording::new(SimTimings {
        denial_when_restricted: false,
        ack_delay: Duration::ZERO,
        complete_delay: Duration::from_millis(300),
    });
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;

    let id = fake.create(HOST, ActionType::RestrictCodeExecution);
    eventually("acknowledged", || {
        fake.action(&id).status == ActionStatus::InProgress
    })
    .await;
    fake.set_status(&id, ActionStatus::Cancelled);

    eventually("converged back", || {
        enforcer.calls() == vec![true, false]
            && try_read_enforcement(tmp.path()).is_some_and(|r| !r.restricted)
    })
    .await;
    assert!(!enforcer.is_restricted());
    assert_eq!(fake.action(&id).status, ActionStatus::Cancelled);
    assert_eq!(read_enforcement(tmp.path()).applied_action_id, None);
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn enforcer_failures_are_reported_as_failed() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    enforcer.fail_with(Some(EnforceError::new(
        hresult::E_ACCESSDENIED,
        "no CAP_SYS_ADMIN",
    )));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());

    let id = fake.create(HOST, ActionType::RestrictCodeExecution);
    eventually("failed", || fake.action(&id).status == ActionStatus::Failed).await;
    let r = fake.action(&id).result.unwrap();
    assert_eq!(r.error_h_result, -2147024891);
    assert_eq!(r.troubleshoot_info.as_deref(), Some("no CAP_SYS_ADMIN"));
    assert!(!enforcer.is_restricted());

    let other = fake.create(HOST, ActionType::Isolate);
    eventually("unsupported fails", || {
        fake.action(&other).status == ActionStatus::Failed
    })
    .await;
    assert_eq!(
        fake.action(&other).result.unwrap().error_h_result,
        hresult::E_NOTIMPL
    );
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn a_restart_reuses_the_credential_and_restores_the_restriction() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let first = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), first.clone());
    restricted(&fake).await;
    stop(tx, handle).await.unwrap();

    // A new process: fresh (unrestricted) enforcer, same state directory.
    let second = Recording::new(SimTimings::IMMEDIATE);
    let (tx, handle) = start(config(&url, tmp.path()), second.clone());
    eventually("restriction re-applied", || second.is_restricted()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(second.calls(), vec![true]);
    assert_eq!(fake.world().enrolments, 1, "no re-enrolment");
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn an_applied_but_unreported_action_is_reported_not_undone() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    // Enrol, then stop.
    let (tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;
    stop(tx, handle).await.unwrap();

    // The state a crash between "persist" and "report" leaves behind.
    let id = fake.create(HOST, ActionType::RestrictCodeExecution);
    fake.set_status(&id, ActionStatus::InProgress);
    let record = EnforcementState {
        restricted: true,
        since: Some(Timestamp::from_unix_seconds(5)),
        applied_action_id: Some(id.clone()),
        ..EnforcementState::default()
    };
    std::fs::write(
        tmp.path().join("demo-linux-01/enforcement.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();

    let enforcer = Recording::new(SimTimings::IMMEDIATE);
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("reported", || {
        fake.action(&id).status == ActionStatus::Succeeded
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        enforcer.calls().iter().all(|r| *r),
        "never unrestricted in between: {:?}",
        enforcer.calls()
    );
    assert!(enforcer.is_restricted());
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn a_corrupt_enforcement_record_converges_to_the_server() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let (tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    let id = restricted(&fake).await;
    stop(tx, handle).await.unwrap();

    std::fs::write(
        tmp.path().join("demo-linux-01/enforcement.json"),
        b"{\"restri",
    )
    .unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("converged to the desired restriction", || {
        enforcer.is_restricted()
    })
    .await;
    eventually("record rewritten", || {
        std::fs::read(tmp.path().join("demo-linux-01/enforcement.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<EnforcementState>(&b).ok())
            .is_some_and(|s| s.restricted && s.applied_action_id.as_deref() == Some(id.as_str()))
    })
    .await;
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn a_revoked_credential_keeps_the_restriction_and_retries() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    restricted(&fake).await;
    let heartbeats = |fake: &Fake| fake.world().heartbeats.len();
    fake.revoke(HOST);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!handle.is_finished(), "a refused credential is retried");
    assert!(enforcer.is_restricted(), "and the restriction stays");
    assert_eq!(enforcer.apply_count(), 1);

    // Credential back (the fake forgot it, as a server restored from backup might not):
    // the agent resumes without re-enrolling.
    let cred: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("demo-linux-01/credential.json")).unwrap(),
    )
    .unwrap();
    let before = heartbeats(&fake);
    fake.world().credentials.insert(
        cred["credential"].as_str().unwrap().to_string(),
        HOST.to_string(),
    );
    eventually("heartbeats resume", || heartbeats(&fake) > before).await;
    assert_eq!(fake.world().enrolments, 1);
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn refused_enrolments_are_fatal() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = config(&url, tmp.path());
    bad.enroll_secret = Some("wrong".into());
    let (_tx, handle) = start(bad, Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)));
    let outcome = handle.await.unwrap();
    assert!(matches!(
        outcome,
        Err(AgentError::EnrollmentRefused(
            crate::ClientError::Unauthorized(_)
        ))
    ));

    // The host name is already taken by another enrolled device.
    let other = tempfile::tempdir().unwrap();
    let (tx, handle) = start(
        config(&url, other.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    eventually("first device enrolled", || fake.world().enrolments == 1).await;
    let (_tx2, second) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    match second.await.unwrap() {
        Err(AgentError::EnrollmentRefused(crate::ClientError::Server {
            status: 400,
            message,
            ..
        })) => assert_eq!(message, "Hostname is taken"),
        other => panic!("unexpected {other:?}"),
    }
    stop(tx, handle).await.unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let mut none = config(&url, fresh.path());
    none.enroll_secret = None;
    let (_tx, handle) = start(
        none,
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    assert!(matches!(
        handle.await.unwrap(),
        Err(AgentError::NotEnrolled(_))
    ));
}

fn stored_credential(root: &Path) -> crate::state::StoredCredential {
    let bytes = std::fs::read(root.join("demo-linux-01/credential.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The device's credential is the only valid one for its host name, and names the
/// machine first enrolled under it.
fn assert_enrolled_once_as(fake: &Fake, root: &Path) {
    let cred = stored_credential(root);
    let w = fake.world();
    let valid: Vec<&String> = w
        .credentials
        .iter()
        .filter(|(_, h)| *h == HOST)
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        valid,
        vec![&cred.credential],
        "only the saved credential works"
    );
    let machine = &w.machines[HOST];
    assert_eq!(cred.machine_id, machine.machine_id, "the same machine");
    let key: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("demo-linux-01/enrollment_key.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(machine.enrollment_key.as_deref(), key["key"].as_str());
}

#[tokio::test]
async fn a_lost_enrolment_answer_is_recovered_with_the_enrolment_key() {
    let (fake, url) = start_fake().await;
    // The server enrols the device, but the answer never reaches it.
    fake.world().lose_enrolment_answers = 1;
    let tmp = tempfile::tempdir().unwrap();
    let (tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    eventually("enrolled after the retry", || {
        fake.last_heartbeat(HOST).is_some()
    })
    .await;
    let counts = |w: &World| (w.enrolments, w.reenrolments);
    assert_eq!(counts(&fake.world()), (2, 1));
    assert_enrolled_once_as(&fake, tmp.path());
    let key = tmp.path().join("demo-linux-01/enrollment_key.json");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // And it works as that machine.
    restricted(&fake).await;
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn a_credential_that_could_not_be_saved_is_replaced_at_the_next_start() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    // Saving the credential fails (as on a full disk) while there is still no
    // credential file to read.
    let blocker = tmp.path().join("demo-linux-01/credential.json");
    crate::state::failing_writes::fail(&blocker);
    let (_tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Err(AgentError::State(_))), "{outcome:?}");
    assert_eq!(fake.world().enrolments, 1, "the server did enrol it");

    // The disk is usable again and the agent restarts.
    crate::state::failing_writes::heal(&blocker);
    let (tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    eventually("enrolled again", || fake.last_heartbeat(HOST).is_some()).await;
    assert_eq!(fake.world().reenrolments, 1);
    assert_enrolled_once_as(&fake, tmp.path());
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn an_unreadable_credential_is_replaced_by_enrolling_again() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let (tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    let id = restricted(&fake).await;
    stop(tx, handle).await.unwrap();
    let first = stored_credential(tmp.path());

    let cred_path = tmp.path().join("demo-linux-01/credential.json");
    std::fs::write(&cred_path, b"{\"serverUrl\": tru").unwrap();
    let enforcer = Recording::new(SimTimings::IMMEDIATE);
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("enrolled again", || fake.world().reenrolments == 1).await;
    eventually("heartbeats as the same machine", || {
        fake.last_heartbeat(HOST)
            .is_some_and(|h| h.enforcement.applied_action_id.as_deref() == Some(id.as_str()))
    })
    .await;
    let second = stored_credential(tmp.path());
    assert_eq!(second.machine_id, first.machine_id);
    assert_ne!(second.credential, first.credential);
    assert_enrolled_once_as(&fake, tmp.path());
    assert!(enforcer.calls().iter().all(|r| *r), "never unrestricted");
    stop(tx, handle).await.unwrap();

    // Without the key there is nothing to enrol again with: the damage is reported.
    std::fs::write(&cred_path, b"{\"serverUrl\": tru").unwrap();
    std::fs::remove_file(tmp.path().join("demo-linux-01/enrollment_key.json")).unwrap();
    let (_tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    assert!(matches!(
        handle.await.unwrap(),
        Err(AgentError::State(crate::state::StateError::Corrupt { .. }))
    ));
    assert_eq!(fake.world().enrolments, 2);
}

#[tokio::test]
async fn waits_for_an_unreachable_server_then_enrols() {
    // A port with nothing behind it yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}");
    let tmp = tempfile::tempdir().unwrap();
    let (tx, handle) = start(
        config(&url, tmp.path()),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!handle.is_finished(), "transport errors are retried");

    let fake = Fake::default();
    serve_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        fake.clone(),
    )
    .await;
    eventually("enrolled once the server is up", || {
        fake.last_heartbeat(HOST).is_some()
    })
    .await;
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn shutdown_interrupts_a_long_poll() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&url, tmp.path());
    c.poll_wait = Duration::from_secs(30);
    c.heartbeat_interval = Duration::from_secs(60);
    let (tx, handle) = start(c, Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)));
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // now inside the 30 s poll
    let t = Instant::now();
    stop(tx, handle).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_fleet_enrols_distinct_devices_once() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = watch::channel(false);
    let handles = crate::spawn_fleet(&url, SECRET, 3, tmp.path(), SimTimings::IMMEDIATE, rx);
    eventually("three devices", || fake.world().credentials.len() == 3).await;
    tx.send(true).unwrap();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let (tx, rx) = watch::channel(false);
    let handles = crate::spawn_fleet(&url, SECRET, 3, tmp.path(), SimTimings::IMMEDIATE, rx);
    let id = fake.create(
        "demo-linux-03.appfence.local",
        ActionType::RestrictCodeExecution,
    );
    eventually("the restarted fleet serves commands", || {
        fake.action(&id).status == ActionStatus::Succeeded
    })
    .await;
    assert_eq!(fake.world().enrolments, 3);
    drop(tx); // a dropped sender stops the fleet too
    for h in handles {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn denial(pid: u32) -> DenialEvent {
    DenialEvent {
        time: Timestamp::from_unix_seconds(1_700_000_000),
        path: format!("/srv/unknown-{pid}"),
        sha256: Some("cd".repeat(32)),
        pid,
        uid: Some(1000),
        parent: Some("/usr/bin/bash".into()),
        kind: DenialKind::Exec,
        monitor: false,
        rule: None,
        indicator_id: None,
        alert: false,
        command_line: None,
        user: None,
    }
}

#[tokio::test]
async fn a_recorded_restriction_is_re_applied_before_the_server_answers() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let hash = "ab".repeat(32);
    fake.publish_allowlist(HOST, 7, std::slice::from_ref(&hash));
    fake.change_desired(HOST, |d| d.mode = EnforcementMode::Monitor);
    let first = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), first.clone());
    restricted(&fake).await;
    eventually("allowlist and mode recorded", || {
        let r = read_enforcement(tmp.path());
        r.allowlist_version == 7 && r.mode == EnforcementMode::Monitor
    })
    .await;
    stop(tx, handle).await.unwrap();

    // The server is gone; the host restarts.
    let second = Recording::new(SimTimings::IMMEDIATE);
    let mut c = config(&unreachable_url(), tmp.path());
    c.enroll_secret = None;
    let (tx, handle) = start(c, second.clone());
    eventually("re-applied without the server", || second.is_restricted()).await;
    assert_eq!(second.calls(), vec![true]);
    assert_eq!(second.inner.allowlist(), vec![hash]);
    assert_eq!(second.inner.mode(), EnforcementMode::Monitor);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.is_finished(), "keeps trying to reach the server");
    assert!(second.is_restricted());
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn time_spent_down_while_restricted_is_reported() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(appfence_core::ManualClock::new(
        Timestamp::from_unix_seconds(1_700_000_000),
    ));
    let with_clock = || {
        let mut c = config(&url, tmp.path());
        c.clock = clock.clone();
        c
    };
    let (tx, handle) = start(
        with_clock(),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    restricted(&fake).await;
    // The manual clock moves a tick per reading: compare whole seconds.
    let stamp = || {
        crate::state::StateDir::new(tmp.path().join("demo-linux-01"))
            .load_alive()
            .unwrap()
            .map(Timestamp::unix_seconds)
    };
    assert_eq!(
        stamp(),
        Some(1_700_000_000),
        "the restriction's first alive stamp is written before Succeeded"
    );
    // Alive stamps follow the clock while the agent runs.
    clock.advance(Duration::from_secs(30));
    eventually("a later alive stamp", || stamp() == Some(1_700_000_030)).await;
    assert_eq!(read_enforcement(tmp.path()).unprotected_seconds, 0);
    // Killed (the task is aborted: no clean shutdown), down for 95 s.
    handle.abort();
    let _ = handle.await;
    drop(tx);
    clock.advance(Duration::from_secs(95));

    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(with_clock(), enforcer.clone());
    eventually("a heartbeat reports the unprotected period", || {
        fake.last_heartbeat(HOST)
            .is_some_and(|h| h.enforcement.unprotected_seconds == 95)
    })
    .await;
    let reported = fake.last_heartbeat(HOST).unwrap().enforcement;
    assert!(reported.restricted && enforcer.is_restricted());
    let period = reported.last_unprotected.unwrap();
    assert_eq!(period.from.unix_seconds(), 1_700_000_030);
    assert_eq!(period.to.unix_seconds(), 1_700_000_125);
    assert_eq!(reported.coverage, vec!["/"]);
    assert_eq!(read_enforcement(tmp.path()).unprotected_seconds, 95);

    // A clean stop is a gap too, and periods add up.
    stop(tx, handle).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let (tx, handle) = start(
        with_clock(),
        Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE)),
    );
    eventually("the second period is added", || {
        fake.last_heartbeat(HOST)
            .is_some_and(|h| h.enforcement.unprotected_seconds == 100)
    })
    .await;
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn a_new_allowlist_version_is_fetched_recorded_and_applied() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.world().allowlist_fetches,
        0,
        "version 0: nothing to fetch"
    );

    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    fake.publish_allowlist(HOST, 1, &[b.to_uppercase(), a.clone(), "not-a-hash".into()]);
    eventually("applied", || {
        enforcer.allowlist() == vec![a.clone(), b.clone()]
    })
    .await;
    let path = tmp.path().join("demo-linux-01/allowlist.json");
    let stored: AllowlistResponse = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    eventually("heartbeat reports the version", || {
        fake.last_heartbeat(HOST)
            .is_some_and(|h| h.enforcement.allowlist_version == 1)
    })
    .await;
    let fetches = fake.world().allowlist_fetches;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.world().allowlist_fetches,
        fetches,
        "fetched once per version"
    );

    fake.publish_allowlist(HOST, 2, &[]);
    eventually("the emptied list is applied", || {
        enforcer.allowlist().is_empty()
    })
    .await;
    eventually("recorded", || {
        read_enforcement(tmp.path()).allowlist_version == 2
    })
    .await;
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn denials_are_sent_in_bounded_batches_and_survive_an_outage() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;

    let total = 2 * MAX_EVENTS_PER_BATCH as u32 + 37;
    for pid in 0..total {
        enforcer.push_denial(denial(pid));
    }
    eventually("all denials received", || {
        fake.received_events().len() == total as usize
    })
    .await;
    let pids: Vec<u32> = fake.received_events().iter().map(|e| e.pid).collect();
    assert_eq!(pids, (0..total).collect::<Vec<_>>(), "in order, once each");
    assert!(fake
        .world()
        .batches
        .iter()
        .all(|b| !b.is_empty() && b.len() <= MAX_EVENTS_PER_BATCH));
    assert_eq!(fake.received_events()[0], denial(0));

    // The server cannot take events for a while: they wait, then arrive.
    fake.world().events_down = true;
    for pid in total..total + 5 {
        enforcer.push_denial(denial(pid));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        enforcer.pending_denials(),
        0,
        "drained into the agent's buffer"
    );
    assert_eq!(fake.received_events().len(), total as usize);
    fake.world().events_down = false;
    eventually("the held denials arrive", || {
        fake.received_events().len() == total as usize + 5
    })
    .await;
    stop(tx, handle).await.unwrap();
}

#[tokio::test]
async fn the_mode_follows_the_server() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    restricted(&fake).await;
    assert_eq!(enforcer.mode(), EnforcementMode::Enforce);

    fake.change_desired(HOST, |d| d.mode = EnforcementMode::Monitor);
    eventually("monitoring", || enforcer.mode() == EnforcementMode::Monitor).await;
    eventually("reported", || {
        fake.last_heartbeat(HOST).is_some_and(|h| {
            h.enforcement.mode == EnforcementMode::Monitor && h.enforcement.restricted
        })
    })
    .await;
    assert_eq!(read_enforcement(tmp.path()).mode, EnforcementMode::Monitor);
    assert_eq!(enforcer.apply_count(), 1, "a mode switch is no re-apply");

    fake.change_desired(HOST, |d| d.mode = EnforcementMode::Enforce);
    eventually("enforcing again", || {
        enforcer.mode() == EnforcementMode::Enforce
    })
    .await;
    stop(tx, handle).await.unwrap();
}

// ---------------------------------------------------------------- offboarding

/// The files left in the device's state directory.
fn state_files(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("demo-linux-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn offboarded_record(root: &Path) -> crate::state::OffboardRecord {
    let bytes = std::fs::read(root.join("demo-linux-01/offboarded.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Waits for the agent to stop by itself.
async fn stopped_by_itself(handle: Handle) -> Result<(), AgentError> {
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the agent stops by itself")
        .unwrap()
}

#[tokio::test]
async fn an_offboarded_device_lifts_its_restriction_reports_forgets_and_stops() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Recording::new(SimTimings::IMMEDIATE);
    let (_tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    restricted(&fake).await;
    assert!(enforcer.is_restricted());

    let offboard = fake.create(HOST, ActionType::Offboard);
    stopped_by_itself(handle).await.unwrap();
    let a = fake.action(&offboard);
    assert_eq!(a.status, ActionStatus::Succeeded);
    assert_eq!(a.result.unwrap().error_h_result, 0);
    assert!(!enforcer.is_restricted(), "the restriction is lifted");
    assert_eq!(enforcer.calls(), vec![true, false]);
    assert_eq!(state_files(tmp.path()), vec!["offboarded.json"]);
    let record = offboarded_record(tmp.path());
    assert_eq!(
        (record.action_id.as_str(), record.outcome.as_deref()),
        (offboard.as_str(), Some("Succeeded"))
    );

    // Started again (a service manager, an operator): it neither enforces nor enrols.
    let again = Recording::new(SimTimings::IMMEDIATE);
    let (_tx, handle) = start(config(&url, tmp.path()), again.clone());
    stopped_by_itself(handle).await.unwrap();
    assert!(again.calls().is_empty());
    assert_eq!(fake.world().enrolments, 1);
}

#[tokio::test]
async fn an_offboarding_whose_answer_was_lost_ends_at_the_refused_credential() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Recording::new(SimTimings::IMMEDIATE);
    let (_tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    restricted(&fake).await;
    fake.world().lose_result_answers = 1;
    let offboard = fake.create(HOST, ActionType::Offboard);
    stopped_by_itself(handle).await.unwrap();
    assert_eq!(fake.action(&offboard).status, ActionStatus::Succeeded);
    assert!(!enforcer.is_restricted());
    assert_eq!(state_files(tmp.path()), vec!["offboarded.json"]);
    assert_eq!(
        offboarded_record(tmp.path()).outcome.as_deref(),
        Some("CredentialRefused")
    );
}

#[tokio::test]
async fn an_offboarding_that_cannot_lift_the_restriction_fails_and_stops_anyway() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let enforcer = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
    let (_tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    restricted(&fake).await;
    enforcer.fail_with(Some(EnforceError::new(
        hresult::E_ACCESSDENIED,
        "no CAP_SYS_ADMIN",
    )));
    let offboard = fake.create(HOST, ActionType::Offboard);
    stopped_by_itself(handle).await.unwrap();
    let a = fake.action(&offboard);
    assert_eq!(a.status, ActionStatus::Failed);
    let result = a.result.unwrap();
    assert_eq!(result.error_h_result, hresult::E_ACCESSDENIED);
    assert!(result
        .troubleshoot_info
        .unwrap()
        .contains("no CAP_SYS_ADMIN"));
    assert_eq!(state_files(tmp.path()), vec!["offboarded.json"]);
    assert_eq!(
        offboarded_record(tmp.path()).outcome.as_deref(),
        Some("Failed")
    );
}

#[tokio::test]
async fn a_cancelled_offboarding_is_forgotten_and_the_device_converges_back() {
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let slow = SimTimings {
        complete_delay: Duration::from_millis(400),
        ..SimTimings::IMMEDIATE
    };
    let enforcer = Recording::new(slow);
    let (tx, handle) = start(config(&url, tmp.path()), enforcer.clone());
    restricted(&fake).await;
    let offboard = fake.create(HOST, ActionType::Offboard);
    eventually("the offboarding under way", || {
        fake.action(&offboard).status == ActionStatus::InProgress
            && tmp.path().join("demo-linux-01/offboarding.json").exists()
    })
    .await;
    fake.set_status(&offboard, ActionStatus::Cancelled);
    eventually("restricted again, the offboarding forgotten", || {
        enforcer.is_restricted() && !tmp.path().join("demo-linux-01/offboarding.json").exists()
    })
    .await;
    assert_eq!(enforcer.calls(), vec![true, false, true]);
    assert!(tmp.path().join("demo-linux-01/credential.json").exists());
    assert!(!handle.is_finished(), "the agent goes on");
    // Still at work.
    let unrestrict = fake.create(HOST, ActionType::UnrestrictCodeExecution);
    eventually("unrestricted", || {
        fake.action(&unrestrict).status == ActionStatus::Succeeded
    })
    .await;
    stop(tx, handle).await.unwrap();
}

/// A simulated enforcer that also records the file rules it is given, and protects one
/// hash as if it were the agent's own binary.
struct RuleRecorder {
    inner: SimulatedEnforcer,
    protected: String,
    blocks: Mutex<Vec<String>>,
    audits: Mutex<Vec<String>>,
}

impl RuleRecorder {
    fn ids(list: &Mutex<Vec<String>>) -> Vec<String> {
        list.lock().unwrap().clone()
    }
}

#[async_trait]
impl Enforcer for RuleRecorder {
    async fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        self.inner.apply(restricted).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn is_restricted(&self) -> bool {
        self.inner.is_restricted()
    }
    async fn set_file_rules(
        &self,
        block: &[appfence_proto::agent::FileRule],
        audit: &[appfence_proto::agent::FileRule],
    ) {
        let ids = |rules: &[appfence_proto::agent::FileRule]| {
            rules.iter().map(|r| r.indicator_id.clone()).collect()
        };
        *self.blocks.lock().unwrap() = ids(block);
        *self.audits.lock().unwrap() = ids(audit);
    }
    fn protected_files(&self) -> Vec<appfence_proto::agent::ProtectedFile> {
        vec![appfence_proto::agent::ProtectedFile {
            sha256: self.protected.clone(),
            path: "/usr/bin/appfence".into(),
            role: appfence_proto::agent::ProtectedRole::Agent,
        }]
    }
}

#[tokio::test]
async fn file_rules_are_applied_expire_without_the_server_and_spare_protected_files() {
    use appfence_proto::agent::FileRule;
    let (fake, url) = start_fake().await;
    let tmp = tempfile::tempdir().unwrap();
    let start_time = Timestamp::from_unix_seconds(1_700_000_000);
    let clock = Arc::new(appfence_core::ManualClock::new(start_time));
    let mut c = config(&url, tmp.path());
    c.clock = clock.clone();
    let (kept, expiring, protected, audited) = (
        "aa".repeat(32),
        "bb".repeat(32),
        "cc".repeat(32),
        "dd".repeat(32),
    );
    let enforcer = Arc::new(RuleRecorder {
        inner: SimulatedEnforcer::new(SimTimings::IMMEDIATE),
        protected: protected.clone(),
        blocks: Mutex::new(Vec::new()),
        audits: Mutex::new(Vec::new()),
    });
    let (tx, handle) = start(c, enforcer.clone());
    eventually("enrolled", || fake.last_heartbeat(HOST).is_some()).await;
    eventually("the protected files are reported", || {
        fake.last_heartbeat(HOST).is_some_and(|h| {
            h.enforcement
                .protected
                .iter()
                .any(|p| p.sha256 == protected)
        })
    })
    .await;

    let rule = |sha256: &str, id: &str, expires: Option<Timestamp>| FileRule {
        sha256: sha256.to_string(),
        action: "Block".into(),
        indicator_id: id.into(),
        generate_alert: true,
        expires,
    };
    let expiry = start_time.plus(Duration::from_secs(60));
    fake.world().allowlist = AllowlistResponse {
        version: 1,
        sha256: vec![],
        block: vec![
            rule(&kept, "kept", None),
            rule(&expiring, "expiring", Some(expiry)),
            rule(&protected, "protected", None),
        ],
        audit: vec![rule(&audited, "audited", None)],
        next_expiry: Some(expiry),
    };
    fake.change_desired(HOST, |d| d.allowlist_version = 1);
    eventually("the blocks are applied, the protected one refused", || {
        RuleRecorder::ids(&enforcer.blocks) == vec!["kept", "expiring"]
    })
    .await;
    assert_eq!(RuleRecorder::ids(&enforcer.audits), vec!["audited"]);
    let fetches = fake.world().allowlist_fetches;

    // Past the expiry: the server still sends the rule (no sweep), the agent drops it.
    clock.advance(Duration::from_secs(61));
    eventually("the expired block is dropped", || {
        RuleRecorder::ids(&enforcer.blocks) == vec!["kept"]
    })
    .await;
    eventually("the policy is fetched again at the expiry", || {
        fake.world().allowlist_fetches > fetches
    })
    .await;
    assert_eq!(RuleRecorder::ids(&enforcer.audits), vec!["audited"]);
    stop(tx, handle).await.unwrap();
}
