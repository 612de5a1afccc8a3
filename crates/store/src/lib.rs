//! Persistence behind one trait, [`Store`], with one contract test suite
//! ([`contract`]) that every implementation must pass.
//!
//! The store, not the caller, enforces the invariants that must hold under any
//! concurrency: at most one open restrict-family action per device (a unique index),
//! and status changes only along the lifecycle (conditional updates), each recorded in
//! the append-only audit table in the same transaction.

#[doc(hidden)]
pub mod contract;
pub mod odata_sql;
pub mod sqlite;

use appfence_core::odata::{ActionField, MachineField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, AppRegistration, AuditRecord, EnrollSecret, GroupAssignment, MachineRecord,
    SigningKey, StatusChange, Tenant, TransitionOutcome, UserRecord,
};
use appfence_core::{MachineRef, Result};
use appfence_proto::agent::{DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;

pub use sqlite::SqliteStore;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // --- tenants and credentials ---

    /// Creates the tenant if it does not exist (idempotent).
    async fn ensure_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>>;

    async fn insert_app(&self, app: &AppRegistration) -> Result<()>;
    async fn app(&self, tenant_id: &str, client_id: &str) -> Result<Option<AppRegistration>>;

    /// Fails with `BadRequest` if the UPN is already taken in the tenant.
    async fn insert_user(&self, user: &UserRecord) -> Result<()>;
    /// The user with this UPN (case-insensitive).
    async fn user(&self, tenant_id: &str, upn: &str) -> Result<Option<UserRecord>>;

    async fn insert_enroll_secret(&self, secret: &EnrollSecret) -> Result<()>;
    /// The enrolment secret with this SHA-256, if any.
    async fn enroll_secret(&self, secret_sha256: &str) -> Result<Option<EnrollSecret>>;

    /// Signing keys of the built-in authorization server, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;
    async fn insert_signing_key(&self, key: &SigningKey) -> Result<()>;

    // --- machines ---

    /// Inserts a new machine. Fails with `BadRequest` if the DNS name is already taken
    /// in the tenant.
    async fn insert_machine(&self, machine: &MachineRecord) -> Result<()>;
    async fn machine(&self, tenant_id: &str, by: &MachineRef) -> Result<Option<MachineRecord>>;
    /// The machine holding this device credential (any tenant).
    async fn machine_by_credential(&self, credential_sha256: &str)
        -> Result<Option<MachineRecord>>;
    /// Records a heartbeat: device facts, enforcement state, `lastSeen`, health `Active`.
    async fn record_heartbeat(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()>;
    /// One page of the tenant's machines within `scope`.
    async fn list_machines(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<MachineField>,
    ) -> Result<Page<MachineRecord>>;
    /// Moves machines into device groups (one transaction).
    async fn set_machine_groups(
        &self,
        tenant_id: &str,
        assignments: &[GroupAssignment],
    ) -> Result<()>;

    // --- actions ---

    /// Inserts a new `Pending` action and its creation audit record. Fails with
    /// `ActiveRequestAlreadyExists` if the device already has an open restrict-family
    /// action; this holds under any concurrency.
    async fn create_action(&self, action: &ActionRecord) -> Result<()>;
    async fn action(&self, tenant_id: &str, id: &str) -> Result<Option<ActionRecord>>;
    /// One page of the tenant's actions on machines within `scope`.
    async fn list_actions(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<ActionField>,
    ) -> Result<Page<ActionRecord>>;
    /// Changes the status if the lifecycle allows it from the current status, recording
    /// an audit row in the same transaction. `ResourceNotFound` if there is no such action.
    async fn transition(&self, action_id: &str, change: &StatusChange)
        -> Result<TransitionOutcome>;
    /// Open actions of a device, oldest first.
    async fn open_actions(&self, machine_id: &str) -> Result<Vec<ActionRecord>>;
    /// The last succeeded restrict-family action of a device.
    async fn last_succeeded_restrict_family(
        &self,
        machine_id: &str,
    ) -> Result<Option<ActionRecord>>;
    /// Moves `Pending` actions created before `pending_before` and `InProgress` actions
    /// last updated before `in_progress_before` to `TimeOut`; returns the actions changed.
    async fn time_out_actions(
        &self,
        pending_before: Timestamp,
        in_progress_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ActionRecord>>;
    /// The audit trail of one action, oldest first.
    async fn audit_trail(&self, action_id: &str) -> Result<Vec<AuditRecord>>;
}
