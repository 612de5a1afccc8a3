//! The system under test: a real server on loopback over a fresh SQLite file, one tenant,
//! one application with the restrict and read roles, an access token fetched once, and
//! devices enrolled through the agent gateway.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use appfence_core::authz::{ROLE_ALERT_READ_ALL, ROLE_READ_ALL, ROLE_RESTRICT};
use appfence_core::ids::{new_guid, new_machine_id};
use appfence_core::ratelimit::RateLimitPolicy;
use appfence_core::records::{ActionRecord, MachineRecord};
use appfence_core::{Clock, SystemClock, Tenant};
use appfence_proto::agent::{
    Capabilities, DeviceInfo, EnforcementState, EnrollRequest, EnrollResponse,
};
use appfence_proto::{ActionStatus, ActionType, Timestamp};
use appfence_server::access::AccessSpec;
use appfence_server::oauth::apps::{create_app, ensure_default_tenant};
use appfence_server::oauth::secrets::sha256_hex;
use appfence_server::{RunningServer, ServerConfig};
use appfence_store::{SqliteStore, Store};
use reqwest::StatusCode;

use crate::load;
use crate::stats::Sample;

/// The audience real MDE clients ask for; the server maps it to its own API.
const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
const APP_NAME: &str = "appfence bench";
/// The comment of every restrict the benchmarks create.
pub const COMMENT: &str = "Restrict code execution due to alert 1234 (appfence bench)";
/// Host names of the devices enrolled over HTTP (the access benchmark's device group).
pub const HTTP_HOST_PREFIX: &str = "bench-http-";
/// Generous: a request that takes this long means something is broken, not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub server: RunningServer,
    pub store: Arc<SqliteStore>,
    pub base: String,
    pub tenant: Tenant,
    /// The application's display name: what the server records as `requestor`.
    pub requestor: String,
    /// `Bearer <access token>`, ready for the `Authorization` header.
    pub authorization: String,
    /// One keep-alive client shared by every load task.
    pub http: reqwest::Client,
    enroll_secret: String,
}

impl Harness {
    /// Starts the server on `127.0.0.1:0` with its database in `dir` and the given
    /// access settings (external issuer, roles, device groups), provisions the tenant,
    /// application and enrolment secret, and fetches an access token.
    pub async fn start(
        dir: &Path,
        concurrency: usize,
        access: AccessSpec,
    ) -> Result<Harness, String> {
        let store = Arc::new(
            SqliteStore::open(&dir.join("appfence.db"))
                .await
                .map_err(|e| format!("cannot open the store: {e}"))?,
        );
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.to_path_buf(),
            // MDE's quotas (100 calls a minute) would refuse almost every call; the
            // limiter still counts every call, so its cost stays in the figures.
            rate_limits: RateLimitPolicy {
                per_minute: u32::MAX,
                per_hour: u32::MAX,
            },
            access,
            ..ServerConfig::default()
        };
        let dyn_store: Arc<dyn Store> = store.clone();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = appfence_server::start(config, dyn_store.clone(), clock.clone()).await?;
        let base = server.base_url();

        let tenant = ensure_default_tenant(dyn_store.as_ref())
            .await
            .map_err(|e| format!("cannot create the tenant: {e}"))?;
        let roles = [
            ROLE_RESTRICT.to_string(),
            ROLE_READ_ALL.to_string(),
            ROLE_ALERT_READ_ALL.to_string(),
        ];
        let (app, client_secret) = create_app(
            dyn_store.as_ref(),
            clock.as_ref(),
            &tenant.id,
            APP_NAME,
            &roles,
        )
        .await
        .map_err(|e| format!("cannot register the application: {e}"))?;
        let (_, enroll_secret) = appfence_server::agent_gateway::enroll::create_enroll_secret(
            dyn_store.as_ref(),
            clock.as_ref(),
            &tenant.id,
            None,
            None,
            "bench",
        )
        .await
        .map_err(|e| format!("cannot store the enrolment secret: {e}"))?;

        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(1))
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let token = fetch_token(&http, &base, &tenant.id, &app.client_id, &client_secret).await?;
        Ok(Harness {
            server,
            store,
            base,
            tenant,
            requestor: app.display_name,
            authorization: format!("Bearer {token}"),
            http,
            enroll_secret,
        })
    }

    /// Enrols `count` devices through `POST /agent/v1/enroll`, as the agent does, each
    /// able to restrict execution. Returns their machine ids in order.
    pub async fn enroll_devices(
        &self,
        count: usize,
        concurrency: usize,
    ) -> Result<(Vec<String>, Sample), String> {
        let url = format!("{}/agent/v1/enroll", self.base);
        let http = self.http.clone();
        let secret = self.enroll_secret.clone();
        load::run_count(count, concurrency, move |i| {
            let req = http.post(&url).json(&EnrollRequest {
                enroll_secret: secret.clone().into(),
                hostname: format!("{HTTP_HOST_PREFIX}{i:06}"),
                info: device_info(i),
                enrollment_key: None,
            });
            async move {
                let resp = req.send().await.map_err(|e| format!("enrol: {e}"))?;
                let status = resp.status();
                if status != StatusCode::CREATED {
                    let body = resp.text().await.unwrap_or_default();
                    return Err(format!("enrol answered {status}: {body}"));
                }
                let body: EnrollResponse = resp
                    .json()
                    .await
                    .map_err(|e| format!("enrol response: {e}"))?;
                Ok(body.machine_id)
            }
        })
        .await
        .map(|(sample, ids)| (ids, sample))
    }

    /// Enrols one device (host name number `i`); returns its machine id and credential,
    /// for benchmarks that speak the agent protocol.
    pub async fn enroll_device(&self, i: usize) -> Result<(String, String), String> {
        let resp = self
            .http
            .post(format!("{}/agent/v1/enroll", self.base))
            .json(&EnrollRequest {
                enroll_secret: self.enroll_secret.clone().into(),
                hostname: format!("{HTTP_HOST_PREFIX}{i:06}"),
                info: device_info(i),
                enrollment_key: None,
            })
            .send()
            .await
            .map_err(|e| format!("enrol: {e}"))?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("enrol answered {status}: {body}"));
        }
        let body: EnrollResponse = resp
            .json()
            .await
            .map_err(|e| format!("enrol response: {e}"))?;
        Ok((body.machine_id, body.credential.expose().to_string()))
    }

    pub async fn shutdown(self) -> Result<(), String> {
        self.server
            .shutdown()
            .await
            .map_err(|e| format!("server shutdown: {e}"))?;
        self.store.close().await;
        Ok(())
    }
}

async fn fetch_token(
    http: &reqwest::Client,
    base: &str,
    tenant_id: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<String, String> {
    let resp = http
        .post(format!("{base}/{tenant_id}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("scope", MDE_SCOPE),
        ])
        .send()
        .await
        .map_err(|e| format!("token request: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("token response ({status}): {e}"))?;
    body.get("access_token")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("the token endpoint answered {status} without a token: {body}"))
}

/// What a restrict-capable Linux agent reports.
fn device_info(i: usize) -> DeviceInfo {
    DeviceInfo {
        os_platform: "Linux".into(),
        os_version: "Ubuntu 24.04".into(),
        kernel_version: "6.8.0".into(),
        os_architecture: "x86_64".into(),
        agent_version: "0.1.0".into(),
        ip_addresses: vec![format!(
            "10.{}.{}.{}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )],
        capabilities: Capabilities {
            can_restrict_execution: true,
            exec_permission_events: true,
            filesystem_marks: true,
            simulated: false,
        },
        machine_tags: vec![],
    }
}

/// A device record as enrolment would create it, for inserting straight into a store
/// (the baselines need devices too, since actions reference them).
pub fn machine_record(
    tenant_id: &str,
    host_prefix: &str,
    i: usize,
    now: appfence_proto::Timestamp,
) -> MachineRecord {
    let info = device_info(i);
    let id = new_machine_id();
    MachineRecord {
        tenant_id: tenant_id.to_string(),
        credential_sha256: sha256_hex(&id),
        enrollment_key_sha256: None,
        id,
        aad_device_id: new_guid(),
        computer_dns_name: format!("{host_prefix}-{i:06}"),
        first_seen: now,
        last_seen: Some(now),
        os_platform: info.os_platform,
        os_version: info.os_version,
        kernel_version: info.kernel_version,
        os_architecture: info.os_architecture,
        agent_version: info.agent_version,
        last_ip_address: info.ip_addresses.first().cloned(),
        ip_addresses: info.ip_addresses,
        health_status: "Active".into(),
        onboarding_status: "Onboarded".into(),
        machine_tags: Vec::new(),
        rbac_group_id: 0,
        rbac_group_name: None,
        risk_score: "None".into(),
        exposure_level: "None".into(),
        device_value: "Normal".into(),
        capabilities: info.capabilities,
        enforcement: EnforcementState::default(),
        offboarded: None,
    }
}

/// The action the server creates for a restrict call, as a record.
pub fn pending_restrict(
    tenant_id: &str,
    requestor: &str,
    machine_id: &str,
    computer_dns_name: &str,
    now: Timestamp,
) -> ActionRecord {
    ActionRecord {
        tenant_id: tenant_id.to_string(),
        id: new_guid(),
        action_type: ActionType::RestrictCodeExecution,
        title: None,
        requestor: requestor.to_string(),
        requestor_comment: COMMENT.to_string(),
        status: ActionStatus::Pending,
        machine_id: machine_id.to_string(),
        computer_dns_name: computer_dns_name.to_string(),
        created: now,
        last_update: now,
        cancellation_requestor: None,
        cancellation_comment: None,
        cancellation_time: None,
        error_h_result: 0,
        external_id: None,
        request_source: "PublicApi".into(),
        troubleshoot_info: None,
    }
}
