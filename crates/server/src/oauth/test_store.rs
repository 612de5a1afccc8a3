//! An in-memory store with just the tenant, app and key operations the OAuth tests
//! need, and an `AppState` built on it. The machine and action operations answer with
//! an error: nothing in these tests reaches them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use appfence_core::authz::IndicatorScope;
use appfence_core::odata::{ActionField, EventField, IndicatorField, MachineField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, AppRegistration, AuditRecord, DenialRecord, EnrollSecret, GroupAssignment,
    IndicatorRecord, IndicatorSubmission, MachineRecord, SigningKey, StatusChange, Tenant,
    TransitionOutcome, UserRecord,
};
use appfence_core::{Error, MachineRef, ManualClock, Result};
use appfence_proto::agent::{AllowlistResponse, DenialEvent, DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;
use appfence_store::Store;

use crate::{AppState, ServerConfig};

/// The tenant of [`test_state`], named "default".
pub const TENANT: &str = "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69";

#[derive(Default)]
pub struct MemStore {
    tenants: Mutex<Vec<Tenant>>,
    apps: Mutex<Vec<AppRegistration>>,
    keys: Mutex<Vec<SigningKey>>,
    tenant_reads: AtomicUsize,
}

impl MemStore {
    /// How many times `tenant` was called.
    pub fn tenant_reads(&self) -> usize {
        self.tenant_reads.load(Ordering::SeqCst)
    }
}

/// A server state on a [`MemStore`] holding the tenant [`TENANT`], with a manual clock.
pub async fn test_state() -> (AppState, Arc<ManualClock>) {
    let store = Arc::new(MemStore::default());
    store
        .ensure_tenant(&Tenant {
            id: TENANT.into(),
            name: "default".into(),
        })
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
        1_700_000_000,
    )));
    let config = ServerConfig {
        public_url: Some("https://appfence.test/".into()),
        ..ServerConfig::default()
    };
    let state = AppState::new(config, store, clock.clone()).await.unwrap();
    (state, clock)
}

fn unused<T>() -> Result<T> {
    Err(Error::internal("not supported by the OAuth test store"))
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn ensure_tenant(&self, tenant: &Tenant) -> Result<()> {
        let mut tenants = self.tenants.lock().unwrap();
        if !tenants.iter().any(|t| t.id == tenant.id) {
            tenants.push(tenant.clone());
        }
        Ok(())
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.tenants.lock().unwrap().clone())
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.tenant_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .tenants
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.id == id)
            .cloned())
    }

    async fn insert_app(&self, app: &AppRegistration) -> Result<()> {
        self.apps.lock().unwrap().push(app.clone());
        Ok(())
    }

    async fn app(&self, tenant_id: &str, client_id: &str) -> Result<Option<AppRegistration>> {
        Ok(self
            .apps
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.tenant_id == tenant_id && a.client_id == client_id)
            .cloned())
    }

    async fn insert_enroll_secret(&self, _secret: &EnrollSecret) -> Result<()> {
        unused()
    }

    async fn enroll_secret(&self, _secret_sha256: &str) -> Result<Option<EnrollSecret>> {
        unused()
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let mut keys = self.keys.lock().unwrap().clone();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created));
        Ok(keys)
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> Result<()> {
        self.keys.lock().unwrap().push(key.clone());
        Ok(())
    }

    async fn insert_machine(&self, _machine: &MachineRecord) -> Result<()> {
        unused()
    }

    async fn reenroll_machine(
        &self,
        _tenant_id: &str,
        _hostname: &str,
        _key_sha256: &str,
        _new_credential_sha256: &str,
        _info: &DeviceInfo,
        _at: Timestamp,
    ) -> Result<Option<MachineRecord>> {
        unused()
    }

    async fn machine(&self, _tenant_id: &str, _by: &MachineRef) -> Result<Option<MachineRecord>> {
        unused()
    }

    async fn machine_by_credential(
        &self,
        _credential_sha256: &str,
    ) -> Result<Option<MachineRecord>> {
        unused()
    }

    async fn record_heartbeat(
        &self,
        _machine_id: &str,
        _info: &DeviceInfo,
        _enforcement: &EnforcementState,
        _at: Timestamp,
    ) -> Result<()> {
        unused()
    }

    /// No machines: server start-up lists them to assign device groups.
    async fn list_machines(
        &self,
        _tenant_id: &str,
        _scope: &DeviceScope,
        _query: &Query<MachineField>,
    ) -> Result<Page<MachineRecord>> {
        Ok(Page {
            items: vec![],
            total: None,
            more: false,
        })
    }

    async fn set_machine_groups(
        &self,
        _tenant_id: &str,
        _assignments: &[GroupAssignment],
    ) -> Result<()> {
        unused()
    }

    async fn insert_user(&self, _user: &UserRecord) -> Result<()> {
        unused()
    }

    async fn user(&self, _tenant_id: &str, _upn: &str) -> Result<Option<UserRecord>> {
        unused()
    }

    async fn create_action(&self, _action: &ActionRecord) -> Result<()> {
        unused()
    }

    async fn action(&self, _tenant_id: &str, _id: &str) -> Result<Option<ActionRecord>> {
        unused()
    }

    async fn list_actions(
        &self,
        _tenant_id: &str,
        _scope: &DeviceScope,
        _query: &Query<ActionField>,
    ) -> Result<Page<ActionRecord>> {
        unused()
    }

    async fn transition(
        &self,
        _action_id: &str,
        _change: &StatusChange,
    ) -> Result<TransitionOutcome> {
        unused()
    }

    async fn open_actions(&self, _machine_id: &str) -> Result<Vec<ActionRecord>> {
        unused()
    }

    async fn last_succeeded_restrict_family(
        &self,
        _machine_id: &str,
    ) -> Result<Option<ActionRecord>> {
        unused()
    }

    async fn time_out_actions(
        &self,
        _pending_before: Timestamp,
        _in_progress_before: Timestamp,
        _now: Timestamp,
    ) -> Result<Vec<ActionRecord>> {
        unused()
    }

    async fn audit_trail(&self, _action_id: &str) -> Result<Vec<AuditRecord>> {
        unused()
    }

    async fn submit_indicator(
        &self,
        _submission: &IndicatorSubmission,
        _scope: &IndicatorScope,
    ) -> Result<IndicatorRecord> {
        unused()
    }

    async fn list_indicators(
        &self,
        _tenant_id: &str,
        _query: &Query<IndicatorField>,
    ) -> Result<Page<IndicatorRecord>> {
        unused()
    }

    async fn delete_indicator(
        &self,
        _tenant_id: &str,
        _id: i64,
        _scope: &IndicatorScope,
    ) -> Result<bool> {
        unused()
    }

    async fn delete_expired_indicators(&self, _now: Timestamp) -> Result<usize> {
        unused()
    }

    async fn allowlist_version(&self, _tenant_id: &str) -> Result<u64> {
        unused()
    }

    async fn allowlist(&self, _tenant_id: &str, _now: Timestamp) -> Result<AllowlistResponse> {
        unused()
    }

    async fn record_denials(
        &self,
        _machine: &MachineRecord,
        _events: &[DenialEvent],
        _received: Timestamp,
    ) -> Result<()> {
        unused()
    }

    async fn list_denials(
        &self,
        _tenant_id: &str,
        _scope: &DeviceScope,
        _query: &Query<EventField>,
    ) -> Result<Page<DenialRecord>> {
        unused()
    }
}
