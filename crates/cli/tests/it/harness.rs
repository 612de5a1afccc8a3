//! Boots the real control plane (SQLite store in a temp dir, or a fresh database of the
//! throwaway PostgreSQL cluster; the real router, the real sweeper) on a free loopback
//! port, and drives it over HTTP like a client would. Every test gets its own server;
//! every wait has a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use appfence_core::records::Tenant;
use appfence_core::{Clock, ManualClock, SystemClock};
use appfence_server::agent_gateway::enroll::create_enroll_secret;
use appfence_server::oauth::apps::{create_app, ensure_default_tenant};
use appfence_server::{AppState, RunningServer, ServerConfig};
use appfence_store::{PgStore, SqliteStore, Store};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::wire::Resp;

/// The audience MDE clients ask for.
pub const MDE_AUDIENCE: &str = "https://api.securitycenter.microsoft.com";
pub const ROLE_RESTRICT: &str = "Machine.RestrictExecution";
pub const ROLE_READ: &str = "Machine.Read.All";
pub const ALL_ROLES: &[&str] = &[ROLE_RESTRICT, ROLE_READ];

/// Runs `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

pub struct TestServer {
    pub state: AppState,
    pub base: String,
    pub http: reqwest::Client,
    /// The default tenant, where `app`/`enroll` create things.
    pub tenant_id: String,
    running: Option<RunningServer>,
    /// Where Prometheus metrics are served, when configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The data directory; a replica shares its primary's (and does not own it).
    pub data_dir: std::path::PathBuf,
    /// The PostgreSQL database, when the store is not SQLite in `data_dir`.
    pub database_url: Option<String>,
    _dir: Option<TempDir>,
}

/// An application registration with its (plain) secret.
#[derive(Clone, Debug)]
pub struct App {
    pub tenant_id: String,
    pub client_id: String,
    pub secret: String,
    pub display_name: String,
}

/// What a test device says about itself at enrolment.
#[derive(Clone, Debug)]
pub struct DeviceOpts {
    pub can_restrict: bool,
    pub agent_version: String,
    pub tags: Vec<String>,
    pub ips: Vec<String>,
}

impl Default for DeviceOpts {
    fn default() -> Self {
        DeviceOpts {
            can_restrict: true,
            agent_version: "0.1.0".into(),
            tags: Vec::new(),
            ips: vec!["10.0.0.7".into()],
        }
    }
}

/// Config tweak for tests that make hundreds of calls per API within a minute: MDE's
/// 100 calls a minute would otherwise answer them 429 (the limits have their own test).
pub fn generous_limits(c: &mut ServerConfig) {
    c.rate_limits = appfence_core::ratelimit::RateLimitPolicy {
        per_minute: 100_000,
        per_hour: 100_000,
    };
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client")
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, None).await
    }

    pub async fn start_with_clock(clock: Arc<ManualClock>) -> Self {
        Self::start_with(|_| {}, Some(clock)).await
    }

    /// A server on 127.0.0.1:0 with a 50 ms sweep interval; `tweak` adjusts the config.
    pub async fn start_with(
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        let dir = private_tempdir();
        let mut server = Self::start_in(dir.path(), tweak, clock).await;
        server._dir = Some(dir);
        server
    }

    /// A server on the PostgreSQL database at `url` (its key file in a temp dir).
    pub async fn start_on_postgres(
        url: &str,
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        let dir = private_tempdir();
        let mut server = Self::start_on(dir.path(), Some(url), tweak, clock).await;
        server._dir = Some(dir);
        server
    }

    /// A second server on this one's database and key file, as a replica would be:
    /// another process's view of the same store (its own connections and caches).
    pub async fn replica(&self, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        self.replica_with_clock(tweak, None).await
    }

    /// [`Self::replica`] on the clock `clock`.
    pub async fn replica_with_clock(
        &self,
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        Self::start_on(&self.data_dir, self.database_url.as_deref(), tweak, clock).await
    }

    /// A server on the SQLite database in the data directory `dir` (which the caller
    /// keeps).
    pub async fn start_in(
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        Self::start_on(dir, None, tweak, clock).await
    }

    /// A server with its key file in `dir` (which the caller keeps), on the PostgreSQL
    /// database at `database_url`, else on SQLite in `dir`.
    pub async fn start_on(
        dir: &std::path::Path,
        database_url: Option<&str>,
        tweak: impl FnOnce(&mut ServerConfig),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        let store: Arc<dyn Store> = match database_url {
            Some(url) => Arc::new(PgStore::open(url).await.expect("open PostgreSQL store")),
            None => Arc::new(
                SqliteStore::open(&dir.join("appfence.db"))
                    .await
                    .expect("open store"),
            ),
        };
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            sweep_interval: Duration::from_millis(50),
            long_poll_max: Duration::from_secs(5),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let dyn_clock: Arc<dyn Clock> = match clock {
            Some(c) => c.clone(),
            None => Arc::new(SystemClock),
        };
        let running = appfence_server::start(config, store, dyn_clock)
            .await
            .expect("server starts");
        let tenant = ensure_default_tenant(running.state.store.as_ref())
            .await
            .expect("default tenant");
        // A new tenant refuses the password grant; these tests sign users in with it
        // (its switch and the flows that replace it are tested on their own).
        running
            .state
            .store
            .set_password_grant(&tenant.id, true, "test", running.state.clock.now())
            .await
            .expect("password grant on");
        TestServer {
            state: running.state.clone(),
            base: running.base_url(),
            http: http_client(),
            tenant_id: tenant.id,
            metrics_addr: running.metrics_addr,
            running: Some(running),
            data_dir: dir.to_path_buf(),
            database_url: database_url.map(str::to_string),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            within(Duration::from_secs(20), "server shutdown", r.shutdown())
                .await
                .expect("clean shutdown");
        }
    }

    /// A second tenant, with its own id.
    pub async fn new_tenant(&self, name: &str) -> String {
        let t = Tenant {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
        };
        self.state.store.ensure_tenant(&t).await.expect("tenant");
        t.id
    }

    pub async fn app(&self, roles: &[&str]) -> App {
        self.app_in(&self.tenant_id.clone(), "Integration test app", roles)
            .await
    }

    pub async fn app_in(&self, tenant_id: &str, name: &str, roles: &[&str]) -> App {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let (reg, secret) = create_app(
            self.state.store.as_ref(),
            self.state.clock.as_ref(),
            tenant_id,
            name,
            &roles,
        )
        .await
        .expect("create app");
        App {
            tenant_id: tenant_id.into(),
            client_id: reg.client_id,
            secret,
            display_name: reg.display_name,
        }
    }

    /// A token from the real v2 token endpoint.
    pub async fn token(&self, app: &App) -> String {
        let resp = self
            .http
            .post(self.url(&format!("/{}/oauth2/v2.0/token", app.tenant_id)))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.secret.as_str()),
                ("scope", &format!("{MDE_AUDIENCE}/.default")),
            ])
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("token JSON");
        assert_eq!(status, 200, "token endpoint: {body}");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_string()
    }

    /// An API caller in the default tenant with these roles.
    pub async fn api(&self, roles: &[&str]) -> Api {
        let app = self.app(roles).await;
        self.api_for(&app).await
    }

    pub async fn api_for(&self, app: &App) -> Api {
        let token = self.token(app).await;
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token: Some(token),
            app: Some(app.clone()),
        }
    }

    /// A caller without any token, for wire-level checks.
    pub fn anonymous(&self) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token: None,
            app: None,
        }
    }

    /// A fresh enrolment secret of the tenant (no expiry, no limit), inserted through
    /// the store.
    pub async fn enroll_secret(&self, tenant_id: &str) -> String {
        create_enroll_secret(
            self.state.store.as_ref(),
            self.state.clock.as_ref(),
            tenant_id,
            None,
            None,
            "test",
        )
        .await
        .expect("insert enrolment secret")
        .1
    }

    pub async fn enroll(&self, hostname: &str) -> Device {
        self.enroll_with(&self.tenant_id.clone(), hostname, DeviceOpts::default())
            .await
    }

    /// Enrols a device over the real agent gateway.
    pub async fn enroll_with(&self, tenant_id: &str, hostname: &str, opts: DeviceOpts) -> Device {
        let secret = self.enroll_secret(tenant_id).await;
        let body = json!({
            "enrollSecret": secret,
            "hostname": hostname,
            "info": {
                "osPlatform": "Linux",
                "osVersion": "Ubuntu 24.04",
                "kernelVersion": "6.8.0",
                "osArchitecture": "x86_64",
                "agentVersion": opts.agent_version,
                "ipAddresses": opts.ips,
                "machineTags": opts.tags,
                "capabilities": {
                    "canRestrictExecution": opts.can_restrict,
                    "execPermissionEvents": opts.can_restrict,
                    "filesystemMarks": opts.can_restrict,
                    "simulated": true
                }
            }
        });
        let resp = self
            .http
            .post(self.url("/agent/v1/enroll"))
            .json(&body)
            .send()
            .await
            .expect("enrol request");
        let resp = Resp::read(resp).await;
        assert_eq!(resp.status, 201, "enrol: {}", resp.text);
        let v = resp.json();
        Device {
            http: self.http.clone(),
            base: self.base.clone(),
            hostname: hostname.to_ascii_lowercase(),
            machine_id: v["machineId"].as_str().unwrap().to_string(),
            aad_device_id: v["aadDeviceId"].as_str().unwrap().to_string(),
            credential: v["credential"].as_str().unwrap().to_string(),
        }
    }

    /// Every action of a tenant, straight from the store.
    pub async fn stored_actions(&self, tenant_id: &str) -> Vec<appfence_core::ActionRecord> {
        let q = appfence_core::odata::Query {
            top: Some(appfence_core::odata::MAX_TOP),
            ..Default::default()
        };
        self.state
            .store
            .list_actions(tenant_id, &appfence_core::rbac::DeviceScope::All, &q)
            .await
            .expect("list actions")
            .items
    }
}

/// Calls the public API with a bearer token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub app: Option<App>,
}

impl Api {
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        Resp::read(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST with a raw body and `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Resp {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("Content-Type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, body.to_string()).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(
            self.request(reqwest::Method::PATCH, path)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn restrict(&self, machine: &str, comment: &str) -> Resp {
        self.post(
            &format!("/api/machines/{machine}/restrictCodeExecution"),
            &json!({ "Comment": comment }),
        )
        .await
    }

    pub async fn unrestrict(&self, machine: &str, comment: &str) -> Resp {
        self.post(
            &format!("/api/machines/{machine}/unrestrictCodeExecution"),
            &json!({ "Comment": comment }),
        )
        .await
    }

    pub async fn cancel(&self, action_id: &str, comment: &str) -> Resp {
        self.post(
            &format!("/api/machineactions/{action_id}/cancel"),
            &json!({ "Comment": comment }),
        )
        .await
    }

    pub async fn action(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/machineactions/{id}")).await;
        assert_eq!(r.status, 200, "get action {id}: {}", r.text);
        r.json()
    }
}

/// A device enrolled over the gateway, driven by hand (no agent loop).
#[derive(Clone)]
pub struct Device {
    pub http: reqwest::Client,
    pub base: String,
    pub hostname: String,
    pub machine_id: String,
    pub aad_device_id: String,
    pub credential: String,
}

impl Device {
    async fn call(&self, req: reqwest::RequestBuilder) -> Resp {
        Resp::read(
            req.bearer_auth(&self.credential)
                .send()
                .await
                .expect("gateway request"),
        )
        .await
    }

    pub async fn ack(&self, action_id: &str) -> Value {
        let r = self.ack_raw(action_id).await;
        assert_eq!(r.status, 200, "ack: {}", r.text);
        r.json()
    }

    pub async fn ack_raw(&self, action_id: &str) -> Resp {
        self.call(
            self.http
                .post(format!("{}/agent/v1/actions/{action_id}/ack", self.base)),
        )
        .await
    }

    pub async fn report(&self, action_id: &str, outcome: &str) -> Value {
        let r = self.report_raw(action_id, outcome).await;
        assert_eq!(r.status, 200, "result: {}", r.text);
        r.json()
    }

    pub async fn report_raw(&self, action_id: &str, outcome: &str) -> Resp {
        self.call(
            self.http
                .post(format!("{}/agent/v1/actions/{action_id}/result", self.base))
                .json(&json!({ "outcome": outcome, "errorHResult": 0, "troubleshootInfo": null })),
        )
        .await
    }

    /// A heartbeat reporting `enforcement` (an `EnforcementState` as JSON); returns the
    /// response (`{"desired": ...}`).
    pub async fn heartbeat(&self, enforcement: Value) -> Value {
        self.heartbeat_with_ips(enforcement, &["10.0.0.7"]).await
    }

    /// A heartbeat reporting these internal addresses.
    pub async fn heartbeat_with_ips(&self, enforcement: Value, ips: &[&str]) -> Value {
        let r = self
            .call(
                self.http
                    .post(format!("{}/agent/v1/heartbeat", self.base))
                    .json(&json!({
                        "info": {
                            "osPlatform": "Linux",
                            "osVersion": "Ubuntu 24.04",
                            "kernelVersion": "6.8.0",
                            "osArchitecture": "x86_64",
                            "agentVersion": "0.1.0",
                            "ipAddresses": ips,
                            "capabilities": {
                                "canRestrictExecution": true,
                                "execPermissionEvents": true,
                                "filesystemMarks": true,
                                "simulated": true
                            }
                        },
                        "enforcement": enforcement,
                    })),
            )
            .await;
        assert_eq!(r.status, 200, "heartbeat: {}", r.text);
        r.json()
    }

    /// `GET /agent/v1/allowlist`.
    pub async fn allowlist(&self) -> Value {
        let r = self
            .call(self.http.get(format!("{}/agent/v1/allowlist", self.base)))
            .await;
        assert_eq!(r.status, 200, "allowlist: {}", r.text);
        r.json()
    }

    /// `POST /agent/v1/events` with a raw JSON body.
    pub async fn post_events(&self, body: &Value) -> Resp {
        self.call(
            self.http
                .post(format!("{}/agent/v1/events", self.base))
                .json(body),
        )
        .await
    }

    pub async fn poll(&self, wait_seconds: u64) -> Value {
        let r = self
            .call(self.http.get(format!(
                "{}/agent/v1/commands?waitSeconds={wait_seconds}",
                self.base
            )))
            .await;
        assert_eq!(r.status, 200, "commands: {}", r.text);
        r.json()
    }
}

/// A temporary directory only its owner can enter, as appfence requires of a data
/// directory (tempfile's default follows the umask).
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("temp dir")
}
