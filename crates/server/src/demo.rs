//! `serve --demo`: a tenant, an application with the restrict and read roles, an
//! enrolment secret for the simulated devices, all recorded in `DATA_DIR/demo.json`.
//! Idempotent: a restart on the same data dir re-uses everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use appfence_core::authz::{ROLE_READ_ALL, ROLE_RESTRICT};
use appfence_core::odata::Query;
use appfence_core::records::EnrollSecret;
use serde::{Deserialize, Serialize};

use crate::oauth::apps::{create_app, ensure_default_tenant};
use crate::oauth::secrets::{generate_secret, sha256_hex, verify_secret};
use crate::AppState;

/// Host names of simulated devices start with this.
pub const DEMO_HOST_PREFIX: &str = "demo-linux-";
pub const DEMO_APP_NAME: &str = "appfence demo";

/// The contents of `demo.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoInfo {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub api_base_url: String,
    /// The v2 token endpoint.
    pub token_url: String,
    pub enroll_secret: String,
    /// Machine ids of the simulated devices.
    pub machines: Vec<String>,
}

pub fn demo_file(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.json")
}

/// Creates (or re-uses, from `demo.json`) the demo tenant, application and enrolment
/// secret, and writes `demo.json`.
pub async fn provision(state: &AppState) -> Result<DemoInfo, String> {
    let path = demo_file(&state.config.data_dir);
    let base = state.public_url();
    let mut info = match reuse(state, &path).await? {
        Some(info) => info,
        None => create(state).await?,
    };
    info.api_base_url = format!("{base}/api");
    info.token_url = format!("{base}/{}/oauth2/v2.0/token", info.tenant_id);
    write_demo_file(&path, &info)?;
    Ok(info)
}

async fn reuse(state: &AppState, path: &Path) -> Result<Option<DemoInfo>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let info: DemoInfo = match serde_json::from_str(&text) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "demo.json is not readable; creating new demo credentials");
            return Ok(None);
        }
    };
    let store = state.store.as_ref();
    let app = store
        .app(&info.tenant_id, &info.client_id)
        .await
        .map_err(|e| e.to_string())?;
    let app_ok = app.is_some_and(|a| verify_secret(&info.client_secret, &a.secret_hash));
    let secret_ok = store
        .enroll_secret(&sha256_hex(&info.enroll_secret))
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if app_ok && secret_ok {
        Ok(Some(info))
    } else {
        tracing::warn!("demo.json does not match this store; creating new demo credentials");
        Ok(None)
    }
}

async fn create(state: &AppState) -> Result<DemoInfo, String> {
    let store = state.store.as_ref();
    let tenant = ensure_default_tenant(store)
        .await
        .map_err(|e| e.to_string())?;
    let roles = vec![ROLE_RESTRICT.to_string(), ROLE_READ_ALL.to_string()];
    let (app, client_secret) = create_app(
        store,
        state.clock.as_ref(),
        &tenant.id,
        DEMO_APP_NAME,
        &roles,
    )
    .await
    .map_err(|e| e.to_string())?;
    let enroll_secret = generate_secret();
    store
        .insert_enroll_secret(&EnrollSecret {
            tenant_id: tenant.id.clone(),
            secret_sha256: sha256_hex(&enroll_secret),
            created: state.clock.now(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(DemoInfo {
        tenant_id: tenant.id,
        client_id: app.client_id,
        client_secret,
        api_base_url: String::new(),
        token_url: String::new(),
        enroll_secret,
        machines: Vec::new(),
    })
}

/// Waits until `count` simulated devices have enrolled, records their ids in
/// `demo.json`.
pub async fn record_devices(
    state: &AppState,
    info: &mut DemoInfo,
    count: usize,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let page = state
            .store
            .list_machines(
                &info.tenant_id,
                &appfence_core::rbac::DeviceScope::All,
                &Query::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut demo: Vec<_> = page
            .items
            .into_iter()
            .filter(|m| m.computer_dns_name.starts_with(DEMO_HOST_PREFIX))
            .collect();
        if demo.len() >= count {
            demo.sort_by(|a, b| a.computer_dns_name.cmp(&b.computer_dns_name));
            info.machines = demo.into_iter().map(|m| m.id).collect();
            return write_demo_file(&demo_file(&state.config.data_dir), info);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "only {} of {count} simulated devices enrolled within {timeout:?}",
                demo.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the file atomically and readable by its owner only: it holds secrets.
fn write_demo_file(path: &Path, info: &DemoInfo) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(info).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&json)
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl DemoInfo {
    /// A ready-to-paste curl walkthrough against this demo.
    pub fn walkthrough(&self) -> String {
        let machine = self
            .machines
            .first()
            .map(String::as_str)
            .unwrap_or("<machine id>");
        format!(
            r#"appfence demo is ready. Credentials are in demo.json. Try the whole loop:

  # 1. get a token (client credentials, v2 endpoint)
  TOKEN=$(curl -s -X POST '{token_url}' \
    -d grant_type=client_credentials -d client_id='{client_id}' \
    --data-urlencode client_secret='{client_secret}' \
    --data-urlencode scope=https://api.securitycenter.microsoft.com/.default \
    | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  # 2. list the simulated devices
  curl -s -H "Authorization: Bearer $TOKEN" '{api}/machines'

  # 3. restrict code execution on one of them (a second call gets ActiveRequestAlreadyExists)
  ACTION=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{{"Comment":"Restrict code execution due to alert 1234"}}' \
    '{api}/machines/{machine}/restrictCodeExecution' | sed -E 's/.*"id":"([^"]+)".*"type".*/\1/')

  # 4. poll the action: Pending -> InProgress -> Succeeded within a few seconds
  for i in $(seq 30); do
    STATUS=$(curl -s -H "Authorization: Bearer $TOKEN" "{api}/machineactions/$ACTION" \
      | sed -E 's/.*"status":"([A-Za-z]+)".*/\1/')
    echo "$STATUS"; [ "$STATUS" = Succeeded ] && break; sleep 1
  done

  # 5. lift the restriction
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{{"Comment":"Device is clean"}}' '{api}/machines/{machine}/unrestrictCodeExecution'

Or with the CLI:  APPFENCE_SERVER={server} APPFENCE_TENANT={tenant} APPFENCE_CLIENT_ID={client_id} \
  APPFENCE_CLIENT_SECRET='{client_secret}' appfence restrict {machine} --comment 'alert 1234' --wait
"#,
            token_url = self.token_url,
            client_id = self.client_id,
            client_secret = self.client_secret,
            api = self.api_base_url,
            machine = machine,
            server = self.api_base_url.trim_end_matches("/api"),
            tenant = self.tenant_id,
        )
    }
}
