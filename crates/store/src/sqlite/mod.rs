//! The embedded SQLite store.
//!
//! One file in WAL mode with `synchronous=FULL`, so an acknowledged write survives a
//! power cut. SQLite has a single writer, so all writes go through a pool of exactly one
//! connection (queueing in the pool instead of spinning on `SQLITE_BUSY`) and begin with
//! `BEGIN IMMEDIATE`; reads use a separate pool of read-only connections, which WAL lets
//! run alongside the writer.

mod action_cache;
mod actions;
mod addresses;
mod alerts;
mod audit_log;
mod console_sessions;
mod credentials;
mod events;
mod group_commit;
mod indicators;
mod list;
mod machines;
mod oauth_grants;
mod rate_windows;
mod rows;
mod signing_keys;
#[cfg(test)]
mod tests;
mod throttle;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
use appfence_core::{Error, MachineRef, Result, StorageFault};
use appfence_proto::agent::{AllowlistResponse, DenialEvent, DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::{Change, GroupOf, Store};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Read connections; the writer is always exactly one.
const READERS: u32 = 4;
/// How long a connection waits for a lock held by another process (e.g. a backup).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    recent: Arc<action_cache::ActionCache>,
    fleet_writes: group_commit::WriteQueue,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, BUSY_TIMEOUT).await
    }

    async fn open_with(path: &Path, busy_timeout: Duration) -> Result<SqliteStore> {
        create_private_file(path)?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_release(reusable)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // What is deleted (a sealed key, a plain key being sealed, a
                    // credential) is overwritten, not left in free pages of a copy.
                    .pragma("secure_delete", "ON"),
            )
            .await
            .map_err(|e| open_error("cannot open the database", path, &e))?;
        MIGRATOR.run(&writer).await.map_err(|e| {
            let fault = match &e {
                sqlx::migrate::MigrateError::Execute(e) => classify(e),
                _ => None,
            };
            let why = fault.map(|f| format!("{f}: ")).unwrap_or_default();
            Error::Internal(format!(
                "cannot migrate the database {}: {why}{e}",
                path.display()
            ))
        })?;
        // Statistics for the query planner (which index serves a filter): gathered now
        // for tables that never had them or changed much, and by `optimize` as the data
        // grows. Without them SQLite cannot tell a selective index from an ordered one.
        optimize(&writer).await?;
        // WAL mode is a property of the file, already set by the writer above.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .after_release(reusable)
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| open_error("cannot open the database", path, &e))?;
        Ok(SqliteStore {
            fleet_writes: group_commit::WriteQueue::start(writer.clone()),
            writer,
            reader,
            recent: Arc::default(),
        })
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// `PRAGMA optimize` with a bounded analysis (a sample of each index), so that it
/// stays quick on a large database: refreshes the planner's statistics of tables that
/// changed a lot since they were gathered, and does nothing otherwise.
async fn optimize(writer: &SqlitePool) -> Result<()> {
    sqlx::raw_sql("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")
        .execute(writer)
        .await
        .map_err(db_err("cannot refresh the query planner's statistics"))?;
    Ok(())
}

/// Why the database cannot be opened at start, with the kind of fault first when it is
/// one (`storage read-only: ...`).
fn open_error(what: &str, path: &Path, e: &sqlx::Error) -> Error {
    let why = classify(e).map(|f| format!("{f}: ")).unwrap_or_default();
    Error::Internal(format!("{what} {}: {why}{e}", path.display()))
}

/// Creates the database file `0600` if it does not exist: SQLite gives its log files
/// (`-wal`, `-shm`) the mode of the database file, so they are private too.
fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "cannot create the database {}: {e}",
            path.display()
        ))),
    }
}

/// A write transaction holding SQLite's write lock from its first statement, so that
/// a read inside it can never be invalidated by another writer.
async fn write_tx(writer: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_err("cannot begin a write transaction"))
}

async fn commit(tx: Transaction<'static, Sqlite>) -> Result<()> {
    tx.commit()
        .await
        .map_err(db_err("cannot commit a write transaction"))
}

/// Maps a database error to an [`Error`] naming what was being done: a storage fault
/// when it is one ([`classify`]), else `Internal`.
fn db_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| match classify(&e) {
        Some(fault) => Error::storage(fault, format!("{context}: {e}")),
        None => Error::Internal(format!("{context}: {e}")),
    }
}

/// The one classification of SQLite's errors into storage faults, from the primary
/// result code (the low byte of the extended code sqlx reports).
pub(crate) fn classify(e: &sqlx::Error) -> Option<StorageFault> {
    match e {
        sqlx::Error::Database(db) => classify_code(db.code()?.parse::<i32>().ok()?),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(StorageFault::Unavailable),
        _ => None,
    }
}

/// The fault of an extended SQLite result code, if it is one.
fn classify_code(code: i32) -> Option<StorageFault> {
    match code & 0xff {
        // SQLITE_FULL: no space for the database or its WAL.
        13 => Some(StorageFault::Full),
        // SQLITE_READONLY: a read-only mount or file.
        8 => Some(StorageFault::ReadOnly),
        // SQLITE_IOERR*, SQLITE_CANTOPEN, SQLITE_NOMEM, SQLITE_PROTOCOL, and
        // SQLITE_BUSY / SQLITE_LOCKED past the busy timeout.
        10 | 14 | 7 | 15 | 5 | 6 => Some(StorageFault::Unavailable),
        // SQLITE_CORRUPT, SQLITE_NOTADB.
        11 | 26 => Some(StorageFault::Corrupt),
        _ => None,
    }
}

/// Whether a connection coming back to a pool may be handed out again. A transaction
/// that failed can leave sqlx believing the connection is still inside one (SQLite
/// rolls back by itself on SQLITE_FULL or an I/O error, so sqlx's own ROLLBACK fails
/// and its depth stays up), and every later `BEGIN` on it would fail: such a
/// connection is closed instead, and the pool opens a fresh one.
///
/// Only a connection that looks inside a transaction costs a round trip: the ping goes
/// through the connection's queue, so the rollback a dropped transaction queued has run
/// (and lowered the depth) by the time it answers. The depth only rises through an
/// awaited `BEGIN`, so a connection at depth 0 is known to be outside one without
/// asking: the common case, every committed write, goes back to the pool at once.
fn reusable(
    conn: &mut sqlx::SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<bool, sqlx::Error>> + Send + '_>,
> {
    Box::pin(async move {
        use sqlx::Connection;
        if !conn.is_in_transaction() {
            return Ok(true);
        }
        conn.ping().await?;
        Ok(!conn.is_in_transaction())
    })
}

/// Whether `e` violates the unique constraint over exactly these columns. SQLite names
/// the columns rather than the index: `UNIQUE constraint failed: actions.machine_id`.
fn violates_unique(e: &sqlx::Error, columns: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                && db
                    .message()
                    .strip_prefix("UNIQUE constraint failed: ")
                    .is_some_and(|cols| cols == columns)
        }
        _ => false,
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ensure_tenant(&self, tenant: &Tenant) -> Result<()> {
        credentials::ensure_tenant(&self.writer, tenant).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        credentials::tenants(&self.reader).await
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        credentials::tenant(&self.reader, id).await
    }

    async fn password_grant(&self, tenant_id: &str) -> Result<Option<bool>> {
        credentials::password_grant(&self.reader, tenant_id).await
    }

    async fn set_password_grant(
        &self,
        tenant_id: &str,
        allowed: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<bool>> {
        credentials::set_password_grant(&self.writer, tenant_id, allowed, actor, at).await
    }

    async fn insert_app(&self, app: &AppRegistration, secret: Option<&AppSecret>) -> Result<()> {
        credentials::insert_app(&self.writer, app, secret).await
    }

    async fn app(&self, tenant_id: &str, client_id: &str) -> Result<Option<AppRegistration>> {
        credentials::app(&self.reader, tenant_id, client_id).await
    }

    async fn apps(&self, tenant_id: &str) -> Result<Vec<AppRegistration>> {
        credentials::apps(&self.reader, tenant_id).await
    }

    async fn app_secrets(&self, tenant_id: &str, client_id: &str) -> Result<Vec<AppSecret>> {
        credentials::app_secrets(&self.reader, tenant_id, client_id).await
    }

    async fn add_app_secret(&self, secret: &AppSecret, max: usize, actor: &str) -> Result<()> {
        credentials::add_app_secret(&self.writer, secret, max, actor).await
    }

    async fn remove_app_secret(
        &self,
        tenant_id: &str,
        client_id: &str,
        secret_id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        credentials::remove_app_secret(&self.writer, tenant_id, client_id, secret_id, actor, at)
            .await
    }

    async fn set_app_disabled(
        &self,
        tenant_id: &str,
        client_id: &str,
        disabled: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<AppRegistration>> {
        credentials::set_app_disabled(&self.writer, tenant_id, client_id, disabled, actor, at).await
    }

    async fn delete_app(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        credentials::delete_app(&self.writer, tenant_id, client_id, actor, at).await
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        credentials::insert_user(&self.writer, user).await
    }

    async fn user(&self, tenant_id: &str, upn: &str) -> Result<Option<UserRecord>> {
        credentials::user(&self.reader, tenant_id, upn).await
    }

    async fn user_by_object_id(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<UserRecord>> {
        credentials::user_by_object_id(&self.reader, tenant_id, object_id).await
    }

    async fn users(&self, tenant_id: &str) -> Result<Vec<UserRecord>> {
        credentials::users(&self.reader, tenant_id).await
    }

    async fn set_user_disabled(
        &self,
        tenant_id: &str,
        upn: &str,
        disabled: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<UserRecord>> {
        credentials::set_user_disabled(&self.writer, tenant_id, upn, disabled, actor, at).await
    }

    async fn delete_user(
        &self,
        tenant_id: &str,
        upn: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        credentials::delete_user(&self.writer, tenant_id, upn, actor, at).await
    }

    async fn set_user_password(
        &self,
        tenant_id: &str,
        upn: &str,
        password_hash: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        credentials::set_user_password(&self.writer, tenant_id, upn, password_hash, actor, at).await
    }

    async fn set_user_groups(
        &self,
        tenant_id: &str,
        upn: &str,
        groups: &[String],
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<UserRecord>> {
        credentials::set_user_groups(&self.writer, tenant_id, upn, groups, actor, at).await
    }

    async fn insert_enroll_secret(&self, secret: &EnrollSecret) -> Result<()> {
        credentials::insert_enroll_secret(&self.writer, secret).await
    }

    async fn enroll_secret(&self, secret_sha256: &str) -> Result<Option<EnrollSecret>> {
        credentials::enroll_secret(&self.reader, secret_sha256).await
    }

    async fn enroll_secrets(&self, tenant_id: &str) -> Result<Vec<EnrollSecret>> {
        credentials::enroll_secrets(&self.reader, tenant_id).await
    }

    async fn revoke_enroll_secret(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<EnrollSecret>> {
        credentials::revoke_enroll_secret(&self.writer, tenant_id, id, actor, at).await
    }

    async fn claim_enroll_secret_use(&self, id: &str, now: Timestamp) -> Result<bool> {
        credentials::claim_enroll_secret_use(&self.writer, id, now).await
    }

    async fn release_enroll_secret_use(&self, id: &str) -> Result<()> {
        credentials::release_enroll_secret_use(&self.writer, id).await
    }

    async fn replace_app_secret_hash(
        &self,
        tenant_id: &str,
        client_id: &str,
        expected: &str,
        new_hash: &str,
    ) -> Result<bool> {
        credentials::replace_app_secret_hash(&self.writer, tenant_id, client_id, expected, new_hash)
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        signing_keys::list(&self.reader).await
    }

    async fn add_signing_key(
        &self,
        key: &SigningKey,
        replacing: Option<&str>,
        superseded_until: Timestamp,
    ) -> Result<bool> {
        signing_keys::add(&self.writer, key, replacing, superseded_until).await
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp, actor: &str) -> Result<bool> {
        signing_keys::retire(&self.writer, kid, at, actor).await
    }

    async fn unsealed_signing_keys(&self) -> Result<Vec<UnsealedSigningKey>> {
        signing_keys::unsealed(&self.reader).await
    }

    async fn seal_signing_keys(&self, sealed: &[SealedSigningKey], at: Timestamp) -> Result<()> {
        signing_keys::seal(&self.writer, sealed, at).await
    }

    async fn sign_in_throttle(&self, keys: &[String]) -> Result<Vec<ThrottleRecord>> {
        throttle::read(&self.reader, keys).await
    }

    async fn record_sign_in_failure(
        &self,
        account: Option<&SignInAccount>,
        address_key: &str,
        address: &str,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Option<AccountFailure>> {
        throttle::record_failure(&self.writer, account, address_key, address, policy, now).await
    }

    async fn clear_sign_in_failures(&self, account: &SignInAccount) -> Result<()> {
        throttle::clear(&self.writer, account).await
    }

    async fn unlock_account(
        &self,
        account: &SignInAccount,
        actor: &str,
        now: Timestamp,
    ) -> Result<bool> {
        throttle::unlock(&self.writer, account, actor, now).await
    }

    async fn sweep_sign_in_throttle(
        &self,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Vec<SignInAccount>> {
        throttle::sweep(&self.writer, policy, now).await
    }

    async fn insert_oauth_grant(&self, grant: &OAuthGrant) -> Result<()> {
        oauth_grants::insert(&self.writer, grant).await
    }

    async fn oauth_grant(&self, id_sha256: &str) -> Result<Option<OAuthGrant>> {
        oauth_grants::get(&self.reader, "id_sha256", id_sha256).await
    }

    async fn oauth_grant_by_user_code(&self, user_code_sha256: &str) -> Result<Option<OAuthGrant>> {
        oauth_grants::get(&self.reader, "user_code_sha256", user_code_sha256).await
    }

    async fn set_oauth_grant_status(
        &self,
        id_sha256: &str,
        from: &str,
        to: &str,
        user: Option<(&str, &str)>,
    ) -> Result<bool> {
        oauth_grants::set_status(&self.writer, id_sha256, from, to, user).await
    }

    async fn record_oauth_poll(
        &self,
        id_sha256: &str,
        previous: Option<Timestamp>,
        at: Timestamp,
        interval_secs: u32,
    ) -> Result<bool> {
        oauth_grants::poll(&self.writer, id_sha256, previous, at, interval_secs).await
    }

    async fn revoke_oauth_family(&self, family: &str) -> Result<u64> {
        oauth_grants::revoke_family(&self.writer, family).await
    }

    async fn prune_oauth_grants(&self, before: Timestamp) -> Result<u64> {
        oauth_grants::prune(&self.writer, before).await
    }

    async fn upsert_client_registration(&self, registration: &ClientRegistration) -> Result<()> {
        oauth_grants::upsert_client(&self.writer, registration).await
    }

    async fn client_registration(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<ClientRegistration>> {
        oauth_grants::client(&self.reader, tenant_id, client_id).await
    }

    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<()> {
        console_sessions::insert(&self.writer, session).await
    }

    async fn console_session(&self, id_sha256: &str) -> Result<Option<ConsoleSession>> {
        console_sessions::get(&self.reader, id_sha256).await
    }

    async fn touch_console_session(&self, id_sha256: &str, at: Timestamp) -> Result<bool> {
        console_sessions::touch(&self.writer, id_sha256, at).await
    }

    async fn delete_console_session(&self, id_sha256: &str) -> Result<bool> {
        console_sessions::delete(&self.writer, id_sha256).await
    }

    async fn delete_console_sessions_of_user(
        &self,
        tenant_id: &str,
        user_object_id: &str,
    ) -> Result<u64> {
        console_sessions::delete_of_user(&self.writer, tenant_id, user_object_id).await
    }

    async fn count_console_sessions_of_user(
        &self,
        tenant_id: &str,
        user_object_id: &str,
    ) -> Result<u64> {
        console_sessions::count_of_user(&self.reader, tenant_id, user_object_id).await
    }

    async fn prune_console_sessions(&self, now: Timestamp, idle: Duration) -> Result<u64> {
        console_sessions::prune(&self.writer, now, idle).await
    }

    async fn check(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_err("cannot read the database"))?;
        // A write, since reads keep working on a full or read-only disk.
        let mut tx = write_tx(&self.writer).await?;
        sqlx::query("UPDATE store_probe SET checked = checked + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot write the database"))?;
        commit(tx).await
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn rate_limit(
        &self,
        key: &str,
        policy: &RateLimitPolicy,
        now: Timestamp,
    ) -> Result<Decision> {
        rate_windows::acquire(&self.writer, key, policy, now).await
    }

    async fn prune_rate_windows(&self, before: Timestamp) -> Result<u64> {
        rate_windows::prune(&self.writer, before).await
    }

    async fn publish(&self, _change: &Change) -> Result<()> {
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    async fn append_audit_event(&self, event: &AuditEvent) -> Result<()> {
        audit_log::append_alone(&self.writer, event).await
    }

    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditEvent)>> {
        audit_log::list(&self.reader, after, limit).await
    }

    async fn insert_machine(&self, machine: &MachineRecord) -> Result<()> {
        machines::insert(&self.writer, machine).await
    }

    async fn reenroll_machine(
        &self,
        tenant_id: &str,
        hostname: &str,
        key_sha256: &str,
        new_credential_sha256: &str,
        info: &DeviceInfo,
        at: Timestamp,
    ) -> Result<Option<MachineRecord>> {
        machines::reenroll(
            &self.writer,
            tenant_id,
            hostname,
            key_sha256,
            new_credential_sha256,
            info,
            at,
        )
        .await
    }

    async fn machine(&self, tenant_id: &str, by: &MachineRef) -> Result<Option<MachineRecord>> {
        machines::get(&self.reader, tenant_id, by).await
    }

    async fn machine_by_credential(
        &self,
        credential_sha256: &str,
    ) -> Result<Option<MachineRecord>> {
        machines::by_credential(&self.reader, credential_sha256).await
    }

    async fn record_heartbeat(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()> {
        self.fleet_writes
            .record_heartbeat(machine_id, info, enforcement, at)
            .await
    }

    async fn fleet_summary(&self, since: Timestamp) -> Result<crate::FleetSummary> {
        machines::fleet_summary(&self.reader, since).await
    }

    async fn list_machines(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<MachineField>,
    ) -> Result<Page<MachineRecord>> {
        machines::list(&self.reader, tenant_id, scope, query).await
    }

    async fn machines_seen_with_ip(
        &self,
        tenant_id: &str,
        ip: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MachineRecord>> {
        addresses::machines_seen(&self.reader, tenant_id, ip, from, to).await
    }

    async fn prune_address_history(&self, before: Timestamp) -> Result<u64> {
        addresses::prune(&self.writer, before).await
    }

    async fn machines_with_tag(
        &self,
        tenant_id: &str,
        tag: &str,
        prefix: bool,
    ) -> Result<Vec<MachineRecord>> {
        machines::with_tag(&self.reader, tenant_id, tag, prefix).await
    }

    async fn change_machine_tag(
        &self,
        tenant_id: &str,
        ids: &[String],
        tag: &str,
        add: bool,
        group_of: &GroupOf,
    ) -> Result<Vec<MachineRecord>> {
        machines::change_tag(&self.writer, tenant_id, ids, tag, add, group_of).await
    }

    async fn update_machine(
        &self,
        tenant_id: &str,
        id: &str,
        tags: Option<&[String]>,
        device_value: Option<&str>,
        group_of: &GroupOf,
    ) -> Result<MachineRecord> {
        machines::update(&self.writer, tenant_id, id, tags, device_value, group_of).await
    }

    async fn set_machine_groups(
        &self,
        tenant_id: &str,
        assignments: &[GroupAssignment],
    ) -> Result<()> {
        machines::set_groups(&self.writer, tenant_id, assignments).await
    }

    async fn create_action(&self, action: &ActionRecord) -> Result<()> {
        self.fleet_writes.create(action).await?;
        self.recent.written(action);
        Ok(())
    }

    async fn action(&self, tenant_id: &str, id: &str) -> Result<Option<ActionRecord>> {
        if let Some(a) = self.recent.get(tenant_id, id) {
            return Ok(Some(a));
        }
        actions::get(&self.reader, tenant_id, id).await
    }

    async fn list_actions(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<ActionField>,
    ) -> Result<Page<ActionRecord>> {
        actions::list(&self.reader, tenant_id, scope, query).await
    }

    async fn transition(
        &self,
        action_id: &str,
        change: &StatusChange,
    ) -> Result<TransitionOutcome> {
        let outcome = self.fleet_writes.transition(action_id, change).await?;
        if let TransitionOutcome::Applied(a) = &outcome {
            self.recent.written(a);
        }
        Ok(outcome)
    }

    async fn open_actions(&self, machine_id: &str) -> Result<Vec<ActionRecord>> {
        actions::open_for_machine(&self.reader, machine_id).await
    }

    async fn last_succeeded_restrict_family(
        &self,
        machine_id: &str,
    ) -> Result<Option<ActionRecord>> {
        actions::last_succeeded_restrict_family(&self.reader, machine_id).await
    }

    async fn time_out_actions(
        &self,
        pending_before: Timestamp,
        in_progress_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ActionRecord>> {
        let timed_out =
            actions::time_out(&self.writer, pending_before, in_progress_before, now).await?;
        for a in &timed_out {
            self.recent.written(a);
        }
        Ok(timed_out)
    }

    async fn audit_trail(&self, action_id: &str) -> Result<Vec<AuditRecord>> {
        actions::audit_trail(&self.reader, action_id).await
    }

    async fn delete_old_actions(&self, before: Timestamp, limit: u32) -> Result<u64> {
        let ids = actions::delete_old(&self.writer, before, limit).await?;
        self.recent.removed(&ids);
        Ok(ids.len() as u64)
    }

    async fn delete_old_denials(&self, before: Timestamp, limit: u32) -> Result<u64> {
        events::delete_old(&self.writer, before, limit).await
    }

    async fn refresh_statistics(&self) -> Result<()> {
        optimize(&self.writer).await
    }

    async fn submit_indicators(
        &self,
        submissions: &[IndicatorSubmission],
        scope: &IndicatorScope,
    ) -> Result<Vec<Result<IndicatorRecord>>> {
        indicators::submit_many(&self.writer, submissions, scope).await
    }

    async fn list_indicators(
        &self,
        tenant_id: &str,
        query: &Query<IndicatorField>,
    ) -> Result<Page<IndicatorRecord>> {
        indicators::list(&self.reader, tenant_id, query).await
    }

    async fn delete_indicator(
        &self,
        tenant_id: &str,
        id: i64,
        scope: &IndicatorScope,
    ) -> Result<bool> {
        indicators::delete(&self.writer, tenant_id, id, scope).await
    }

    async fn delete_expired_indicators(&self, now: Timestamp) -> Result<usize> {
        indicators::delete_expired(&self.writer, now).await
    }

    async fn allowlist_version(&self, tenant_id: &str) -> Result<u64> {
        indicators::version(&self.reader, tenant_id).await
    }

    async fn allowlist(
        &self,
        tenant_id: &str,
        rbac_group_id: i64,
        now: Timestamp,
    ) -> Result<AllowlistResponse> {
        indicators::allowlist(&self.reader, tenant_id, rbac_group_id, now).await
    }

    async fn protected_files(&self, tenant_id: &str) -> Result<Vec<ProtectedHit>> {
        indicators::protected_files(&self.reader, tenant_id).await
    }

    async fn record_denials(
        &self,
        machine: &MachineRecord,
        events: &[DenialEvent],
        alerts: &[AlertCandidate],
        received: Timestamp,
    ) -> Result<()> {
        events::record(&self.writer, machine, events, alerts, received).await
    }

    async fn list_denials(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<EventField>,
    ) -> Result<Page<DenialRecord>> {
        events::list(&self.reader, tenant_id, scope, query).await
    }

    async fn raise_alerts(
        &self,
        tenant_id: &str,
        alerts: &[AlertCandidate],
        now: Timestamp,
    ) -> Result<usize> {
        alerts::raise(&self.writer, tenant_id, alerts, now).await
    }

    async fn list_alerts(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<AlertField>,
    ) -> Result<Page<AlertRecord>> {
        alerts::list(&self.reader, tenant_id, scope, query).await
    }

    async fn get_alert(
        &self,
        tenant_id: &str,
        id: &str,
        scope: &DeviceScope,
    ) -> Result<Option<AlertRecord>> {
        alerts::get(&self.reader, tenant_id, id, scope).await
    }

    async fn update_alerts(
        &self,
        tenant_id: &str,
        ids: &[String],
        change: &AlertChange,
        scope: &DeviceScope,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<AlertRecord>> {
        alerts::update(&self.writer, tenant_id, ids, change, scope, actor, now).await
    }

    async fn delete_old_alerts(&self, before: Timestamp, limit: u32) -> Result<u64> {
        alerts::delete_old(&self.writer, before, limit).await
    }

    async fn silent_restricted_machines(
        &self,
        last_seen_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<MachineRecord>> {
        alerts::silent_restricted(&self.reader, last_seen_before, limit).await
    }
}
