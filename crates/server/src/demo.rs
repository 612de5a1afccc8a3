//! `serve --demo`: a tenant, an application with the restrict, read, indicator and alert roles,
//! an enrolment secret for the simulated devices, and two users (an analyst who may
//! restrict and manage indicators, a viewer who may only read), all recorded in
//! `DATA_DIR/demo.json`.
//! Idempotent: a restart on the same data dir re-uses everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use appfence_core::audit::ACTOR_SERVER;
use appfence_core::authz::{
    ROLE_ALERT_READ_WRITE_ALL, ROLE_READ_ALL, ROLE_RESTRICT, ROLE_TI_READ_WRITE_ALL,
};
use appfence_core::odata::Query;
use appfence_core::rbac::Permission;
use appfence_proto::Secret;
use serde::{Deserialize, Serialize};

use crate::access::RoleSpec;
use crate::agent_gateway::enroll::create_enroll_secret;
use crate::oauth::apps::{create_app, ensure_default_tenant};
use crate::oauth::secrets::{generate_secret, sha256_hex, verify_generated_secret, StoredSecret};
use crate::oauth::users::{authenticate_user, create_user};
use crate::AppState;

/// Host names of simulated devices start with this.
pub const DEMO_HOST_PREFIX: &str = "demo-linux-";
pub const DEMO_APP_NAME: &str = "appfence demo";
/// The demo analyst's group: "Active remediation actions", "Manage security settings"
/// (indicators) and "View data".
pub const DEMO_ANALYSTS_GROUP: &str = "appfence-demo-analysts";
/// The demo viewer's group: "View data" only.
pub const DEMO_VIEWERS_GROUP: &str = "appfence-demo-viewers";
/// The demo users' UPNs are `<name>@` this domain.
pub const DEMO_USER_DOMAIN: &str = "demo.appfence.local";

/// The contents of `demo.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoInfo {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub api_base_url: String,
    /// The v2 token endpoint.
    pub token_url: String,
    pub enroll_secret: Secret,
    /// Machine ids of the simulated devices.
    pub machines: Vec<String>,
    /// May restrict, unrestrict and read (group [`DEMO_ANALYSTS_GROUP`]). Absent from a
    /// `demo.json` written before demo users existed; then created.
    #[serde(default)]
    pub analyst: DemoUser,
    /// May only read (group [`DEMO_VIEWERS_GROUP`]).
    #[serde(default)]
    pub viewer: DemoUser,
    /// The public client for `appfence login` (browser or `--device-code`): the
    /// built-in CLI client, the same in every tenant.
    #[serde(default = "cli_client_id")]
    pub public_client_id: String,
}

fn cli_client_id() -> String {
    crate::oauth::flows::CLI_CLIENT_ID.to_string()
}

/// Credentials of a demo user, for the token endpoint's password grant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoUser {
    pub username: String,
    pub password: Secret,
}

/// The portal roles of the demo users' groups, to add to the access spec with `--demo`.
pub fn demo_roles() -> Vec<RoleSpec> {
    let role = |name: &str, permissions: &[Permission], group: &str| RoleSpec {
        line: None,
        name: name.to_string(),
        permissions: permissions.iter().map(|p| p.name().to_string()).collect(),
        user_groups: vec![group.to_string()],
        tenant: None,
    };
    vec![
        role(
            "Demo analysts",
            &[
                Permission::ActiveRemediationActions,
                Permission::AlertsInvestigation,
                Permission::ManageSecuritySettings,
                Permission::ViewData,
            ],
            DEMO_ANALYSTS_GROUP,
        ),
        role("Demo viewers", &[Permission::ViewData], DEMO_VIEWERS_GROUP),
    ]
}

pub fn demo_file(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.json")
}

/// Creates (or re-uses, from `demo.json`) the demo tenant, application, enrolment
/// secret and users, and writes `demo.json`.
pub async fn provision(state: &AppState) -> Result<DemoInfo, String> {
    let path = demo_file(&state.config.data_dir);
    let base = state.public_url();
    let previous = read_demo_file(&path)?;
    let mut info = match &previous {
        Some(p) if app_and_secret_work(state, p).await? => p.clone(),
        Some(_) => {
            tracing::warn!("demo.json does not match this store; creating new demo credentials");
            create(state).await?
        }
        None => create(state).await?,
    };
    let tenant_id = info.tenant_id.clone();
    let previous = previous.as_ref();
    info.analyst = ensure_user(
        state,
        &tenant_id,
        previous.map(|p| &p.analyst),
        "analyst",
        DEMO_ANALYSTS_GROUP,
    )
    .await?;
    info.viewer = ensure_user(
        state,
        &tenant_id,
        previous.map(|p| &p.viewer),
        "viewer",
        DEMO_VIEWERS_GROUP,
    )
    .await?;
    info.api_base_url = format!("{base}/api");
    info.token_url = format!("{base}/{}/oauth2/v2.0/token", info.tenant_id);
    write_demo_file(&path, &info)?;
    Ok(info)
}

/// The previous `demo.json`, if there is a readable one.
fn read_demo_file(path: &Path) -> Result<Option<DemoInfo>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match serde_json::from_str(&text) {
        Ok(info) => Ok(Some(info)),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "demo.json is not readable; creating new demo credentials");
            Ok(None)
        }
    }
}

/// The demo application's roles.
const DEMO_APP_ROLES: [&str; 4] = [
    ROLE_RESTRICT,
    ROLE_READ_ALL,
    ROLE_TI_READ_WRITE_ALL,
    ROLE_ALERT_READ_WRITE_ALL,
];

/// Whether the application and enrolment secret recorded in `info` work with this store,
/// and the application has every demo role (one from an older version gets replaced).
async fn app_and_secret_work(state: &AppState, info: &DemoInfo) -> Result<bool, String> {
    let store = state.store.as_ref();
    let app = store
        .app(&info.tenant_id, &info.client_id)
        .await
        .map_err(|e| e.to_string())?;
    let app_ok = match &app {
        Some(a) if a.disabled.is_none() => {
            let secrets = store
                .app_secrets(&a.tenant_id, &a.client_id)
                .await
                .map_err(|e| e.to_string())?;
            let mut secret_ok = false;
            for stored in secrets.iter().filter(|s| !s.is_expired(state.clock.now())) {
                secret_ok |= match StoredSecret::of(&stored.secret_hash) {
                    StoredSecret::Fast(hex) => {
                        verify_generated_secret(info.client_secret.expose(), Some(hex))
                    }
                    StoredSecret::Legacy(phc) => state
                        .passwords
                        .verify(info.client_secret.expose(), Some(phc))
                        .await
                        .map_err(|_| "every password check is busy".to_string())?,
                    StoredSecret::Unknown => false,
                };
            }
            secret_ok
                && DEMO_APP_ROLES
                    .iter()
                    .all(|r| a.roles.iter().any(|have| have == r))
        }
        _ => false,
    };
    let secret_ok = store
        .enroll_secret(&sha256_hex(info.enroll_secret.expose()))
        .await
        .map_err(|e| e.to_string())?
        .is_some_and(|s| s.usable(state.clock.now()).is_ok());
    Ok(app_ok && secret_ok)
}

async fn create(state: &AppState) -> Result<DemoInfo, String> {
    let store = state.store.as_ref();
    let tenant = ensure_default_tenant(store)
        .await
        .map_err(|e| e.to_string())?;
    // Its users exist to try things out, scripts included: the password grant is on.
    store
        .set_password_grant(&tenant.id, true, ACTOR_SERVER, state.clock.now())
        .await
        .map_err(|e| e.to_string())?;
    let roles = DEMO_APP_ROLES.map(str::to_string).to_vec();
    let (app, client_secret) = create_app(
        store,
        state.clock.as_ref(),
        &tenant.id,
        DEMO_APP_NAME,
        &roles,
    )
    .await
    .map_err(|e| e.to_string())?;
    // The demo's devices enrol with it at every start: no expiry, no limit.
    let (_, enroll_secret) = create_enroll_secret(
        store,
        state.clock.as_ref(),
        &tenant.id,
        None,
        None,
        ACTOR_SERVER,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(DemoInfo {
        tenant_id: tenant.id,
        client_id: app.client_id,
        client_secret: client_secret.into(),
        api_base_url: String::new(),
        token_url: String::new(),
        enroll_secret: enroll_secret.into(),
        machines: Vec::new(),
        analyst: DemoUser::default(),
        viewer: DemoUser::default(),
        public_client_id: cli_client_id(),
    })
}

/// The demo user `name` in `group`: the one recorded in `previous` if its password still
/// works and it is still in the group, otherwise a new one with a fresh password. Users
/// cannot be changed or removed, so when `name@DEMO_USER_DOMAIN` exists with a password
/// nobody recorded, the new user gets a suffixed name.
async fn ensure_user(
    state: &AppState,
    tenant_id: &str,
    previous: Option<&DemoUser>,
    name: &str,
    group: &str,
) -> Result<DemoUser, String> {
    let store = state.store.as_ref();
    if let Some(p) = previous.filter(|p| !p.username.is_empty()) {
        let user = authenticate_user(
            store,
            &state.passwords,
            tenant_id,
            &p.username,
            p.password.expose(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if user.is_some_and(|u| u.groups.iter().any(|g| g == group)) {
            return Ok(p.clone());
        }
    }
    let mut upn = format!("{name}@{DEMO_USER_DOMAIN}");
    if store
        .user(tenant_id, &upn)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        let suffix = &sha256_hex(&generate_secret())[..8];
        upn = format!("{name}-{suffix}@{DEMO_USER_DOMAIN}");
        tracing::warn!(%upn, "the demo user's password is not in demo.json; creating another demo user");
    }
    let password = generate_secret();
    let user = create_user(
        store,
        state.clock.as_ref(),
        tenant_id,
        &upn,
        &password,
        &[group.to_string()],
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(DemoUser {
        username: user.upn,
        password: password.into(),
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
/// Writes `demo.json` atomically, `0600` from the start, through a temporary file of
/// its own (so concurrent or crashed writers never leave a torn or readable file).
fn write_demo_file(path: &Path, info: &DemoInfo) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut json = serde_json::to_vec_pretty(info).map_err(|e| e.to_string())?;
    json.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".demo.json.")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(&json).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

impl DemoInfo {
    /// The v1 token endpoint, where MDE's user-context documentation sends the
    /// password grant.
    pub fn user_token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/token",
            self.api_base_url.trim_end_matches("/api"),
            self.tenant_id
        )
    }

    /// A ready-to-paste curl walkthrough against this demo.
    pub fn walkthrough(&self) -> String {
        let machine = self
            .machines
            .first()
            .map(String::as_str)
            .unwrap_or("<machine id>");
        format!(
            r#"appfence demo is ready. Credentials are in demo.json.

Web console: {server}/console
  analyst (may restrict, unrestrict, allow files): {analyst}  password: {analyst_password}
  viewer (may only read):                          {viewer}  (password in demo.json)

Or try the whole loop over the API:

  # 1. get a token (client credentials, v2 endpoint)
  TOKEN=$(curl -s -X POST '{token_url}' \
    -d grant_type=client_credentials -d client_id='{client_id}' \
    --data-urlencode client_secret='{client_secret}' \
    --data-urlencode scope=https://api.securitycenter.microsoft.com/.default \
    | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  # 1b. or as the demo analyst, a user (password grant, v1 endpoint; the viewer in demo.json may only read)
  USER_TOKEN=$(curl -s -X POST '{user_token_url}' \
    -d grant_type=password -d client_id='{client_id}' \
    --data-urlencode username='{analyst}' --data-urlencode password='{analyst_password}' \
    --data-urlencode resource=https://api.securitycenter.microsoft.com \
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

  # 5. the alert: the restricted device stopped the compromised program (with its evidence)
  curl -s -H "Authorization: Bearer $TOKEN" '{api}/alerts?$top=1&$expand=evidence'

  # 6. lift the restriction
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{{"Comment":"Device is clean"}}' '{api}/machines/{machine}/unrestrictCodeExecution'

Or with the CLI:  APPFENCE_SERVER={server} APPFENCE_TENANT={tenant} APPFENCE_CLIENT_ID={client_id} \
  APPFENCE_CLIENT_SECRET='{client_secret}' appfence restrict {machine} --comment 'alert 1234' --wait

Or with the CLI as the analyst, no secret (approve the printed code at {server}/console/device):
  export APPFENCE_SERVER={server} APPFENCE_TENANT={tenant}
  appfence login --device-code
  appfence restrict {machine} --comment 'alert 1234' --wait
"#,
            token_url = self.token_url,
            client_id = self.client_id,
            // The walkthrough is printed for the person who started the demo.
            client_secret = self.client_secret.expose(),
            api = self.api_base_url,
            machine = machine,
            server = self.api_base_url.trim_end_matches("/api"),
            tenant = self.tenant_id,
            user_token_url = self.user_token_url(),
            analyst = self.analyst.username,
            analyst_password = self.analyst.password.expose(),
            viewer = self.viewer.username,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use appfence_core::ManualClock;
    use appfence_proto::Timestamp;
    use appfence_store::SqliteStore;

    use crate::ServerConfig;

    async fn state(data_dir: &Path) -> AppState {
        let store = SqliteStore::open(&data_dir.join("appfence.db"))
            .await
            .unwrap();
        let config = ServerConfig {
            data_dir: data_dir.to_path_buf(),
            public_url: Some("http://127.0.0.1:8080".into()),
            ..ServerConfig::default()
        };
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
            1_700_000_000,
        )));
        AppState::new(config, Arc::new(store), clock).await.unwrap()
    }

    /// The user's groups if `user`'s password works.
    async fn groups_of(state: &AppState, tenant_id: &str, user: &DemoUser) -> Option<Vec<String>> {
        authenticate_user(
            state.store.as_ref(),
            &state.passwords,
            tenant_id,
            &user.username,
            user.password.expose(),
        )
        .await
        .unwrap()
        .map(|u| u.groups)
    }

    fn read(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(demo_file(dir)).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_demo_has_an_analyst_and_a_viewer_that_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let info = provision(&state).await.unwrap();
        assert_eq!(info.analyst.username, "analyst@demo.appfence.local");
        assert_eq!(info.viewer.username, "viewer@demo.appfence.local");
        assert!(info.analyst.password.expose().len() >= 20);
        assert_ne!(info.analyst.password, info.viewer.password);
        assert_eq!(
            groups_of(&state, &info.tenant_id, &info.analyst).await,
            Some(vec![DEMO_ANALYSTS_GROUP.to_string()])
        );
        assert_eq!(
            groups_of(&state, &info.tenant_id, &info.viewer).await,
            Some(vec![DEMO_VIEWERS_GROUP.to_string()])
        );
        let json = read(dir.path());
        assert_eq!(json["analyst"]["username"], "analyst@demo.appfence.local");
        assert_eq!(json["analyst"]["password"], info.analyst.password.expose());
        assert_eq!(json["viewer"]["username"], "viewer@demo.appfence.local");
        assert_eq!(json["viewer"]["password"], info.viewer.password.expose());

        // A restart keeps every credential.
        assert_eq!(provision(&state).await.unwrap(), info);

        // A demo.json from before demo users keeps its application and gains the users.
        let mut old = read(dir.path());
        old.as_object_mut().unwrap().remove("analyst");
        old.as_object_mut().unwrap().remove("viewer");
        std::fs::write(demo_file(dir.path()), old.to_string()).unwrap();
        let again = provision(&state).await.unwrap();
        assert_eq!(again.client_id, info.client_id);
        // The names are taken by users whose passwords nobody recorded: new users.
        assert!(again.analyst.username.starts_with("analyst-"));
        assert!(again.analyst.username.ends_with("@demo.appfence.local"));
        assert!(again.viewer.username.starts_with("viewer-"));
        assert_eq!(
            groups_of(&state, &info.tenant_id, &again.analyst).await,
            Some(vec![DEMO_ANALYSTS_GROUP.to_string()])
        );
        assert!(groups_of(&state, &info.tenant_id, &again.viewer)
            .await
            .is_some());
        assert_eq!(provision(&state).await.unwrap(), again);
    }

    #[tokio::test]
    async fn the_walkthrough_shows_the_password_grant() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let info = provision(&state).await.unwrap();
        let text = info.walkthrough();
        assert!(text.contains(&format!(
            "http://127.0.0.1:8080/{}/oauth2/token",
            info.tenant_id
        )));
        assert!(text.contains("-d grant_type=password"));
        assert!(text.contains(&format!("username='{}'", info.analyst.username)));
        assert!(text.contains(&format!("password='{}'", info.analyst.password.expose())));
        assert!(!text.contains(info.viewer.password.expose()));
        // The web console, with the analyst's sign-in.
        assert!(
            text.contains("Web console: http://127.0.0.1:8080/console\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "{}  password: {}",
            info.analyst.username,
            info.analyst.password.expose()
        )));
        // A person signs in without any secret in the environment.
        assert!(text.contains("appfence login --device-code\n"), "{text}");
        assert!(text.contains(&format!("APPFENCE_TENANT={}\n", info.tenant_id)));
    }

    #[test]
    fn demo_roles_give_analysts_remediation_and_viewers_reading() {
        let roles = demo_roles();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0].name, "Demo analysts");
        assert_eq!(
            roles[0].permissions,
            [
                "Active remediation actions",
                "Alerts investigation",
                "Manage security settings",
                "View data"
            ]
        );
        assert_eq!(roles[0].user_groups, [DEMO_ANALYSTS_GROUP]);
        assert_eq!(roles[1].name, "Demo viewers");
        assert_eq!(roles[1].permissions, ["View data"]);
        assert_eq!(roles[1].user_groups, [DEMO_VIEWERS_GROUP]);
        assert!(roles.iter().all(|r| r.line.is_none() && r.tenant.is_none()));
        // They resolve as a config file's roles do.
        let spec = crate::access::AccessSpec {
            roles,
            ..Default::default()
        };
        let tenant = appfence_core::Tenant {
            id: "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69".into(),
            name: "default".into(),
        };
        crate::access::resolve(&spec, &[tenant]).unwrap();
    }
}
