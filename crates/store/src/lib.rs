//! Persistence behind one trait, [`Store`], with one contract test suite
//! ([`contract`]) that every implementation must pass.
//!
//! The store, not the caller, enforces the invariants that must hold under any
//! concurrency: at most one open restrict-family action per device (a unique index),
//! and status changes only along the lifecycle (conditional updates), each recorded in
//! the append-only audit table in the same transaction.

mod addresses;
#[doc(hidden)]
mod alert_columns;
pub mod contract;
mod grant_rows;
mod lifecycle;
pub mod odata_sql;
pub mod postgres;
mod rows;
pub mod sqlite;

use appfence_core::alerts::{AlertCandidate, AlertChange, AlertRecord};
use appfence_core::audit::AuditEvent;
use appfence_core::authz::IndicatorScope;
use appfence_core::grants::{ClientRegistration, OAuthGrant};
use appfence_core::indicators::ProtectedHit;
use appfence_core::odata::{
    ActionField, AlertField, EventField, IndicatorField, MachineField, Page, Query,
};
use appfence_core::ratelimit::{Decision, RateLimitPolicy};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, AppRegistration, AppSecret, AuditRecord, ConsoleSession, DenialRecord,
    EnrollSecret, GroupAssignment, IndicatorRecord, IndicatorSubmission, MachineRecord,
    SealedSigningKey, SigningKey, StatusChange, Tenant, TransitionOutcome, UnsealedSigningKey,
    UserRecord,
};
use appfence_core::sign_in_throttle::{
    AccountFailure, SignInAccount, ThrottlePolicy, ThrottleRecord,
};
use appfence_core::{MachineRef, Result};
use appfence_proto::agent::{AllowlistResponse, DenialEvent, DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Counts over every tenant's machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetSummary {
    pub seen: u64,
    pub restricted: u64,
}

/// A change that every server sharing the store must hear about, beyond what it reads
/// on its own: so that a device long-polling one replica learns of an action created
/// on another at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Something for this device (an action created, changed or timed out).
    Machine(String),
    /// Something people watch changed on this device, which the device itself need not
    /// hear about (it reported it): an action's status, its enforcement state, its
    /// denials. Wakes only the web console's live views.
    Observed(String),
    /// Something for every device of the tenant (the allowlist changed).
    Tenant(String),
    /// Device groups were re-evaluated (a reload, a tag change): cached groups go.
    Groups,
    /// Changes may have been missed (a listener reconnected): re-read everything.
    Everything,
}

impl Change {
    /// The text form sent between replicas.
    pub fn payload(&self) -> String {
        match self {
            Change::Machine(id) => format!("machine:{id}"),
            Change::Observed(id) => format!("observed:{id}"),
            Change::Tenant(id) => format!("tenant:{id}"),
            Change::Groups => "groups".into(),
            Change::Everything => "everything".into(),
        }
    }

    pub fn parse(payload: &str) -> Option<Change> {
        match payload.split_once(':') {
            Some(("machine", id)) => Some(Change::Machine(id.to_string())),
            Some(("observed", id)) => Some(Change::Observed(id.to_string())),
            Some(("tenant", id)) => Some(Change::Tenant(id.to_string())),
            None if payload == "groups" => Some(Change::Groups),
            None if payload == "everything" => Some(Change::Everything),
            _ => None,
        }
    }
}

/// The audit event of offboarding the machine of `action` (an offboard action that
/// ended) at `at`; both engines append it with the change.
pub(crate) fn offboarded_event(action: &ActionRecord, at: Timestamp) -> AuditEvent {
    AuditEvent {
        at,
        tenant_id: Some(action.tenant_id.clone()),
        event: appfence_core::audit::DEVICE_OFFBOARDED.to_string(),
        subject: action.machine_id.clone(),
        actor: action.requestor.clone(),
        detail: Some(format!(
            "offboard action {} ended {}; the device's credential is refused from now on",
            action.id,
            action.status.as_str()
        )),
    }
}

/// The device group (`rbacGroupId`, `rbacGroupName`) a machine belongs in, from the
/// access policy; the store applies it inside the transaction that changes the machine.
pub type GroupOf = dyn Fn(&MachineRecord) -> (i64, Option<String>) + Send + Sync;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // --- tenants and credentials ---

    /// Creates the tenant if it does not exist (idempotent).
    async fn ensure_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Whether the tenant's token endpoints accept `grant_type=password`; `None` if
    /// there is no such tenant. New tenants start without it.
    async fn password_grant(&self, tenant_id: &str) -> Result<Option<bool>>;
    /// Turns the password grant on or off; audited (`PasswordGrantEnabled`,
    /// `PasswordGrantDisabled`) when this changes it. `None` if there is no such tenant.
    async fn set_password_grant(
        &self,
        tenant_id: &str,
        allowed: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<bool>>;

    /// Registers an application with its first secret (`None`: a public client), in
    /// one transaction. Not audited here: the caller appends `AppCreated`.
    async fn insert_app(&self, app: &AppRegistration, secret: Option<&AppSecret>) -> Result<()>;
    async fn app(&self, tenant_id: &str, client_id: &str) -> Result<Option<AppRegistration>>;
    /// The tenant's applications, by display name then client id.
    async fn apps(&self, tenant_id: &str) -> Result<Vec<AppRegistration>>;
    /// The application's secrets (expired ones included), oldest first.
    async fn app_secrets(&self, tenant_id: &str, client_id: &str) -> Result<Vec<AppSecret>>;
    /// Adds a secret to the application, unless it holds `max` secrets already
    /// (`BadRequest`); `ResourceNotFound` if there is no such application. Audited
    /// (`AppSecretAdded` by `actor`, at the secret's creation) in the same transaction.
    async fn add_app_secret(&self, secret: &AppSecret, max: usize, actor: &str) -> Result<()>;
    /// Removes one secret of the application, audited (`AppSecretRemoved`). False if the
    /// application has no secret with this id.
    async fn remove_app_secret(
        &self,
        tenant_id: &str,
        client_id: &str,
        secret_id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool>;
    /// Disables (since `at`) or enables the application; audited (`AppDisabled`,
    /// `AppEnabled`) when this changes its state. The application as it is now; `None`
    /// if there is no such application.
    async fn set_app_disabled(
        &self,
        tenant_id: &str,
        client_id: &str,
        disabled: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<AppRegistration>>;
    /// Deletes the application and its secrets, audited (`AppDeleted`). False if there
    /// is no such application.
    async fn delete_app(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool>;

    /// Fails with `BadRequest` if the UPN is already taken in the tenant.
    async fn insert_user(&self, user: &UserRecord) -> Result<()>;
    /// The user with this UPN (case-insensitive).
    async fn user(&self, tenant_id: &str, upn: &str) -> Result<Option<UserRecord>>;
    /// The user with this object id (`oid`).
    async fn user_by_object_id(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<UserRecord>>;
    /// The tenant's users, by UPN.
    async fn users(&self, tenant_id: &str) -> Result<Vec<UserRecord>>;
    /// Disables (since `at`) or enables the user (UPN case-insensitive); audited
    /// (`UserDisabled`, `UserEnabled`) when this changes its state. Disabling deletes
    /// the user's console sessions in the same transaction. The user as it is now;
    /// `None` if there is no such user.
    async fn set_user_disabled(
        &self,
        tenant_id: &str,
        upn: &str,
        disabled: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<UserRecord>>;
    /// Deletes the user and their console sessions, audited (`UserDeleted`). False if
    /// there is no such user.
    async fn delete_user(
        &self,
        tenant_id: &str,
        upn: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool>;
    /// Replaces the user's password hash and ends their console sessions, audited
    /// (`UserPasswordChanged`). False if there is no such user.
    async fn set_user_password(
        &self,
        tenant_id: &str,
        upn: &str,
        password_hash: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool>;
    /// Replaces the user's groups and ends their console sessions (which hold the
    /// groups of their sign-in), audited (`UserGroupsChanged`). The user as it is now;
    /// `None` if there is no such user.
    async fn set_user_groups(
        &self,
        tenant_id: &str,
        upn: &str,
        groups: &[String],
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<UserRecord>>;

    /// Not audited here: the caller appends `EnrollSecretCreated`.
    async fn insert_enroll_secret(&self, secret: &EnrollSecret) -> Result<()>;
    /// The enrolment secret with this SHA-256, if any (revoked, expired or used up
    /// ones included: the caller says why they enrol nothing).
    async fn enroll_secret(&self, secret_sha256: &str) -> Result<Option<EnrollSecret>>;
    /// The tenant's enrolment secrets, oldest first.
    async fn enroll_secrets(&self, tenant_id: &str) -> Result<Vec<EnrollSecret>>;
    /// Revokes the tenant's enrolment secret `id` at `at`, audited
    /// (`EnrollSecretRevoked`) unless it was revoked already. The secret as it is now;
    /// `None` if the tenant has no such secret.
    async fn revoke_enroll_secret(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<EnrollSecret>>;
    /// Counts one use of the enrolment secret `id` if it is usable at `now` (not
    /// revoked, not expired, below its maximum), in one statement: under any
    /// concurrency a secret enrols at most `max_uses` devices. False, counting nothing,
    /// otherwise.
    async fn claim_enroll_secret_use(&self, id: &str, now: Timestamp) -> Result<bool>;
    /// Gives back a use claimed for an enrolment that did not add a device.
    async fn release_enroll_secret_use(&self, id: &str) -> Result<()>;

    /// Replaces one of an application's secret hashes, if it is still `expected` (a
    /// legacy hash re-stored in the fast form at its first successful use). False,
    /// changing nothing, if the hash changed meanwhile or there is no such secret.
    async fn replace_app_secret_hash(
        &self,
        tenant_id: &str,
        client_id: &str,
        expected: &str,
        new_hash: &str,
    ) -> Result<bool>;

    // --- signing keys (see appfence_core::signing_keys) ---

    /// Signing keys of the built-in authorization server, newest first, retired ones
    /// included.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;
    /// Adds `key`, in one transaction with a check that the newest key that is not
    /// retired is still `replacing` (`None`: there is none), and gives every key
    /// without an end that is not retired `verify_until = superseded_until`. False,
    /// changing nothing, if another rotation came first: rotations on several
    /// replicas at once add one key.
    async fn add_signing_key(
        &self,
        key: &SigningKey,
        replacing: Option<&str>,
        superseded_until: Timestamp,
    ) -> Result<bool>;
    /// Retires a key at `at`: it verifies nothing any more and its sealed private part
    /// is destroyed; audited with `actor`. False if there is no such key or it was
    /// retired already.
    async fn retire_signing_key(&self, kid: &str, at: Timestamp, actor: &str) -> Result<bool>;
    /// Private keys written in plain form by versions before sealing.
    async fn unsealed_signing_keys(&self) -> Result<Vec<UnsealedSigningKey>>;
    /// Stores the sealed forms of plain keys and destroys the plain copies, in one
    /// transaction; then makes sure no page of the database or its log still holds them.
    async fn seal_signing_keys(&self, sealed: &[SealedSigningKey], at: Timestamp) -> Result<()>;

    // --- throttled guessing (see appfence_core::sign_in_throttle) ---

    /// The counters of these keys that exist.
    async fn sign_in_throttle(&self, keys: &[String]) -> Result<Vec<ThrottleRecord>>;
    /// Counts a failed sign-in from `address_key` (`address` is its text form), and
    /// for `account` if given, in one transaction under `policy`. When this failure
    /// locks the account, the lockout is appended to the audit log in the same
    /// transaction. Returns what happened to the account.
    async fn record_sign_in_failure(
        &self,
        account: Option<&SignInAccount>,
        address_key: &str,
        address: &str,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Option<AccountFailure>>;
    /// A successful sign-in: forgets the account's failures and its lockout level.
    async fn clear_sign_in_failures(&self, account: &SignInAccount) -> Result<()>;
    /// Ends the account's lockout and forgets its failures, audited with `actor`.
    /// False if the account was not locked at `now`.
    async fn unlock_account(
        &self,
        account: &SignInAccount,
        actor: &str,
        now: Timestamp,
    ) -> Result<bool>;
    /// Appends the end of every lockout over by `now` to the audit log (once, whichever
    /// replica sweeps first) and deletes counters that no longer matter. Returns the
    /// accounts whose lockout ended.
    async fn sweep_sign_in_throttle(
        &self,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Vec<SignInAccount>>;

    // --- sessions of the web console (signed-in analysts), shared by every replica ---

    /// Stores a new session. Fails if one with the same `id_sha256` exists: a session
    /// is never replaced.
    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<()>;
    /// The session whose cookie secret has this SHA-256, even if it is over: the caller
    /// compares with its clock (`ConsoleSession::is_over`).
    async fn console_session(&self, id_sha256: &str) -> Result<Option<ConsoleSession>>;
    /// Records a use of the session at `at`: `last_seen` becomes `at`, unless it is
    /// later already (it never moves back). False if there is no such session.
    async fn touch_console_session(&self, id_sha256: &str, at: Timestamp) -> Result<bool>;
    /// Sign-out. False if there was no such session.
    async fn delete_console_session(&self, id_sha256: &str) -> Result<bool>;
    /// Deletes every session of the user (say, when it is disabled); returns how many.
    async fn delete_console_sessions_of_user(
        &self,
        tenant_id: &str,
        user_object_id: &str,
    ) -> Result<u64>;
    /// How many sessions the user holds, those over but not yet pruned included: the
    /// caller bounds it, so sign-ins cannot fill the store.
    async fn count_console_sessions_of_user(
        &self,
        tenant_id: &str,
        user_object_id: &str,
    ) -> Result<u64>;
    /// Deletes the sessions over at `now`: `expires <= now`, or unused for `idle`
    /// (`last_seen + idle <= now`), as `ConsoleSession::is_over`. Returns how many; the
    /// sweeper calls it.
    async fn prune_console_sessions(
        &self,
        now: Timestamp,
        idle: std::time::Duration,
    ) -> Result<u64>;

    // --- sign-in without passwords: codes, device codes, refresh tokens ---

    /// Stores a new grant. Fails if one with the same hash (or, for a device code, the
    /// same user code hash) exists.
    async fn insert_oauth_grant(&self, grant: &OAuthGrant) -> Result<()>;
    /// The grant whose secret has this SHA-256, whatever its status or expiry.
    async fn oauth_grant(&self, id_sha256: &str) -> Result<Option<OAuthGrant>>;
    /// The device code whose user code has this SHA-256.
    async fn oauth_grant_by_user_code(&self, user_code_sha256: &str) -> Result<Option<OAuthGrant>>;
    /// Moves the grant from status `from` to `to` (and records its user, if given), in
    /// one conditional statement. False, changing nothing, if its status is not `from`
    /// (another request used it first) or there is no such grant.
    async fn set_oauth_grant_status(
        &self,
        id_sha256: &str,
        from: &str,
        to: &str,
        user: Option<(&str, &str)>,
    ) -> Result<bool>;
    /// Records a device code poll at `at`, and the interval the client must keep from
    /// now on, if the last poll is still `previous`. False if another poll came in
    /// between (or there is no such grant).
    async fn record_oauth_poll(
        &self,
        id_sha256: &str,
        previous: Option<Timestamp>,
        at: Timestamp,
        interval_secs: u32,
    ) -> Result<bool>;
    /// Revokes every grant of the family; returns how many changed.
    async fn revoke_oauth_family(&self, family: &str) -> Result<u64>;
    /// Deletes the grants expired at `before`; returns how many.
    async fn prune_oauth_grants(&self, before: Timestamp) -> Result<u64>;
    /// Creates or replaces an application's client registration.
    async fn upsert_client_registration(&self, registration: &ClientRegistration) -> Result<()>;
    async fn client_registration(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<ClientRegistration>>;

    // --- replicas ---

    /// Whether the store takes reads and writes now (readiness): `Storage` errors say
    /// why not.
    async fn check(&self) -> Result<()>;
    /// Whether several server processes may share this store (then counters that must
    /// hold for the whole service live in it, and changes are published).
    fn is_shared(&self) -> bool;
    /// Admits or refuses one call of `key` at `now` under `policy`, counting it if
    /// admitted; exact for every process sharing the store.
    async fn rate_limit(
        &self,
        key: &str,
        policy: &RateLimitPolicy,
        now: Timestamp,
    ) -> Result<Decision>;
    /// Deletes rate-limit counters of windows that started before `before`.
    async fn prune_rate_windows(&self, before: Timestamp) -> Result<u64>;
    /// Tells every process sharing the store (this one included) about `change`; a
    /// store of one process has nobody to tell. Does not wait for the others to hear:
    /// a shared store sends its changes in batches, in the background.
    async fn publish(&self, change: &Change) -> Result<()>;
    /// Changes published by any process sharing the store; `None` for a store of one
    /// process.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>>;

    // --- the audit log ---

    async fn append_audit_event(&self, event: &AuditEvent) -> Result<()>;
    /// Events after sequence number `after` (0: from the start), oldest first, at most
    /// `limit`, with their sequence numbers.
    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditEvent)>>;

    // --- machines ---

    /// Inserts a new machine. Fails with `BadRequest` if the DNS name is already taken
    /// in the tenant.
    async fn insert_machine(&self, machine: &MachineRecord) -> Result<()>;
    /// Re-enrolment, in one transaction: if the tenant's machine named `hostname`
    /// (case-insensitive) was enrolled with the enrolment key whose SHA-256 is
    /// `key_sha256` (compared in constant time), replaces its credential hash (the old
    /// credential stops working) and records the device facts of `info` as a heartbeat
    /// does (tags and device group stay), returning the machine. `None`, changing
    /// nothing, if there is no such machine, it was enrolled with another key or none, or
    /// it is offboarded.
    async fn reenroll_machine(
        &self,
        tenant_id: &str,
        hostname: &str,
        key_sha256: &str,
        new_credential_sha256: &str,
        info: &DeviceInfo,
        at: Timestamp,
    ) -> Result<Option<MachineRecord>>;
    async fn machine(&self, tenant_id: &str, by: &MachineRef) -> Result<Option<MachineRecord>>;
    /// The machine holding this device credential (any tenant), offboarded or not: the
    /// caller refuses an offboarded one (`MachineRecord::offboarded`).
    async fn machine_by_credential(&self, credential_sha256: &str)
        -> Result<Option<MachineRecord>>;
    /// Records a heartbeat: device facts, enforcement state, `lastSeen`, health `Active`
    /// (an offboarded machine's health stays `Inactive`).
    async fn record_heartbeat(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()>;
    /// Across tenants: machines seen since `since`, and machines whose last report says
    /// a restriction is in force (for the fleet gauges).
    async fn fleet_summary(&self, since: Timestamp) -> Result<FleetSummary>;
    /// One page of the tenant's machines within `scope`.
    async fn list_machines(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<MachineField>,
    ) -> Result<Page<MachineRecord>>;
    /// The tenant's machines that reported the internal address `ip` (any notation; it
    /// is canonicalised) at some time between `from` and `to`, by name; at most 10,000.
    async fn machines_seen_with_ip(
        &self,
        tenant_id: &str,
        ip: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MachineRecord>>;
    /// Deletes the address history that ended before `before`; returns how much.
    async fn prune_address_history(&self, before: Timestamp) -> Result<u64>;
    /// The tenant's machines with the tag `tag` (or one starting with it, with
    /// `prefix`), ASCII case-insensitively, by name; at most 10,000.
    async fn machines_with_tag(
        &self,
        tenant_id: &str,
        tag: &str,
        prefix: bool,
    ) -> Result<Vec<MachineRecord>>;
    /// Adds or removes `tag` (ASCII case-insensitively) on the tenant's machines
    /// `ids`, all or none in one transaction, each put in the device group `group_of`
    /// computes from its new tags; returns them in `ids` order. `ResourceNotFound`
    /// naming the first id that is not a machine of the tenant. A device-group move
    /// bumps the tenant's allowlist version.
    async fn change_machine_tag(
        &self,
        tenant_id: &str,
        ids: &[String],
        tag: &str,
        add: bool,
        group_of: &GroupOf,
    ) -> Result<Vec<MachineRecord>>;
    /// MDE's Update machine, in one transaction: replaces the machine's tags when
    /// `tags` is given (and re-evaluates its device group with `group_of`), sets its
    /// device value when `device_value` is given. A device-group move bumps the
    /// tenant's allowlist version (the device's file policy depends on its group).
    /// `ResourceNotFound` if the machine is not the tenant's.
    async fn update_machine(
        &self,
        tenant_id: &str,
        id: &str,
        tags: Option<&[String]>,
        device_value: Option<&str>,
        group_of: &GroupOf,
    ) -> Result<MachineRecord>;
    /// Moves machines into device groups (one transaction), bumping the tenant's
    /// allowlist version when any moved.
    async fn set_machine_groups(
        &self,
        tenant_id: &str,
        assignments: &[GroupAssignment],
    ) -> Result<()>;

    // --- actions ---

    /// Inserts a new `Pending` action and its creation audit record. Fails with
    /// `ActiveRequestAlreadyExists` if the device already has an open restrict-family
    /// action and this is one too, or an open offboard action and this is one too; this
    /// holds under any concurrency.
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
    /// an audit row in the same transaction. An offboard action that ends `Succeeded`,
    /// `Failed` or `TimeOut` offboards its machine in that transaction too
    /// (`records::offboards`): `offboarded` set, `onboardingStatus` `Offboarded`,
    /// `healthStatus` `Inactive`, the enrolment key forgotten, and `DeviceOffboarded`
    /// in the audit log. `ResourceNotFound` if there is no such action.
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
    /// last updated before `in_progress_before` to `TimeOut` (an offboard action timing
    /// out offboards its machine, as in [`Store::transition`]); returns the actions
    /// changed.
    async fn time_out_actions(
        &self,
        pending_before: Timestamp,
        in_progress_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ActionRecord>>;
    /// The audit trail of one action, oldest first. It outlives the action: an action
    /// deleted by retention keeps its trail.
    async fn audit_trail(&self, action_id: &str) -> Result<Vec<AuditRecord>>;
    /// Retention: deletes at most `limit` final actions (`Succeeded`, `Failed`,
    /// `TimeOut`, `Cancelled`) last updated before `before`, oldest first, in one short
    /// transaction; open actions are never deleted, and the audit trail stays. Returns
    /// how many were deleted (fewer than `limit`: none older remain).
    async fn delete_old_actions(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Refreshes the query planner's statistics where the data changed a lot (SQLite's
    /// `PRAGMA optimize`; PostgreSQL's autovacuum does this by itself). Cheap when
    /// nothing changed; the sweeper calls it.
    async fn refresh_statistics(&self) -> Result<()> {
        Ok(())
    }
    /// Retention: deletes at most `limit` denial events received before `before`,
    /// oldest first, in one short transaction; returns how many.
    async fn delete_old_denials(&self, before: Timestamp, limit: u32) -> Result<u64>;

    // --- indicators and the allowlist ---

    /// Creates the indicator, or updates the tenant's indicator with the same type and
    /// value (its `application`, `createdBy` and `source` stay), and bumps the tenant's
    /// allowlist version, in one transaction. `Forbidden` if the indicator exists outside
    /// `scope`; `BadRequest` if a new one would exceed
    /// [`appfence_core::indicators::MAX_ACTIVE_INDICATORS`] active indicators.
    async fn submit_indicator(
        &self,
        submission: &IndicatorSubmission,
        scope: &IndicatorScope,
    ) -> Result<IndicatorRecord> {
        let mut outcomes = self
            .submit_indicators(std::slice::from_ref(submission), scope)
            .await?;
        outcomes.pop().unwrap_or_else(|| {
            Err(appfence_core::Error::internal(
                "a submission had no outcome",
            ))
        })
    }
    /// [`Store::submit_indicator`] for several submissions of one tenant, in one
    /// transaction: each gets its own outcome (in order), a refused one (`Forbidden`,
    /// the tenant's limit) leaving the others stored; the version is bumped once if
    /// any was stored. An `Err` of the whole call stored nothing.
    async fn submit_indicators(
        &self,
        submissions: &[IndicatorSubmission],
        scope: &IndicatorScope,
    ) -> Result<Vec<Result<IndicatorRecord>>>;
    /// One page of the tenant's indicators (expired ones included: the caller filters).
    async fn list_indicators(
        &self,
        tenant_id: &str,
        query: &Query<IndicatorField>,
    ) -> Result<Page<IndicatorRecord>>;
    /// Deletes the indicator if it exists within `scope`, bumping the tenant's allowlist
    /// version in the same transaction; false if there is no such indicator.
    async fn delete_indicator(
        &self,
        tenant_id: &str,
        id: i64,
        scope: &IndicatorScope,
    ) -> Result<bool>;
    /// Deletes indicators whose expiration time is at or before `now`, bumping the
    /// allowlist version of each tenant concerned; returns how many were deleted.
    async fn delete_expired_indicators(&self, now: Timestamp) -> Result<usize>;
    /// The tenant's allowlist version (0 before its first indicator change).
    async fn allowlist_version(&self, tenant_id: &str) -> Result<u64>;
    /// The file policy of a device of the tenant in device group `rbac_group_id`: the
    /// version and the rules compiled from the `FileSha256` indicators unexpired at
    /// `now` that apply to the group (see [`appfence_core::indicators::compile_policy`]),
    /// read together.
    async fn allowlist(
        &self,
        tenant_id: &str,
        rbac_group_id: i64,
        now: Timestamp,
    ) -> Result<AllowlistResponse>;
    /// The files devices of the tenant reported as protected (the agent, the dynamic
    /// loader, PID 1's executable) in their latest enforcement report.
    async fn protected_files(&self, tenant_id: &str) -> Result<Vec<ProtectedHit>>;

    // --- denial events ---

    /// Stores a batch of a machine's denial events and raises (or groups) the alerts
    /// they cause, in one transaction, then drops the machine's oldest events beyond
    /// [`appfence_core::records::MAX_EVENTS_PER_MACHINE`].
    async fn record_denials(
        &self,
        machine: &MachineRecord,
        events: &[DenialEvent],
        alerts: &[AlertCandidate],
        received: Timestamp,
    ) -> Result<()>;
    /// One page of the tenant's denial events on machines within `scope`, newest first
    /// unless the query orders otherwise.
    async fn list_denials(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<EventField>,
    ) -> Result<Page<DenialRecord>>;

    // --- alerts ---

    /// Raises each candidate as a new alert, or folds it into the alert it groups with
    /// (see [`AlertCandidate::join_since`]), in one transaction; returns how many alerts
    /// are new. A new alert's `alertCreationTime` is unique in the tenant and grows in
    /// commit order (max(now, the newest + 1 tick)), so paging with
    /// `alertCreationTime gt` never misses or repeats an alert.
    async fn raise_alerts(
        &self,
        tenant_id: &str,
        alerts: &[AlertCandidate],
        now: Timestamp,
    ) -> Result<usize>;
    /// One page of the tenant's alerts on machines within `scope`, newest first unless
    /// the query orders otherwise; evidence only with `$expand=evidence`.
    async fn list_alerts(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<AlertField>,
    ) -> Result<Page<AlertRecord>>;
    /// One alert of the tenant, with its evidence, if it exists within `scope`.
    async fn get_alert(
        &self,
        tenant_id: &str,
        id: &str,
        scope: &DeviceScope,
    ) -> Result<Option<AlertRecord>>;
    /// Applies `change` to every alert in `ids` (see [`AlertRecord::apply`]), all or
    /// nothing: an id missing from the tenant or outside `scope` is `ResourceNotFound`,
    /// a change refused for one alert is its error, and nothing changes. Each change is
    /// in the audit log (`AlertUpdated`, with `actor`) in the same transaction.
    async fn update_alerts(
        &self,
        tenant_id: &str,
        ids: &[String],
        change: &AlertChange,
        scope: &DeviceScope,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<AlertRecord>>;
    /// Retention: deletes at most `limit` alerts last updated before `before`, oldest
    /// first; returns how many.
    async fn delete_old_alerts(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Onboarded machines whose agent last reported them restricted and that have not
    /// checked in since `last_seen_before`, which have no alert for this silence yet;
    /// at most `limit`, longest silent first.
    async fn silent_restricted_machines(
        &self,
        last_seen_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<MachineRecord>>;
}
