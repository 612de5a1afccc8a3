//! Runs the store contract against SQLite, each check on a fresh database file, plus
//! the checks only SQLite can answer (pragmas, the append-only trigger, reopening).

use std::sync::Arc;

use appfence_core::Error;
use appfence_proto::ActionStatus;
use sqlx::Row;

use super::SqliteStore;
use crate::contract::{self, at};
use crate::Store;

async fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("appfence.db"))
        .await
        .expect("open");
    (dir, Arc::new(store))
}

macro_rules! contract_checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $check() {
            let (_dir, store) = fresh().await;
            contract::$check(store.as_ref()).await;
        }
    )*};
}

contract_checks!(
    fleet_summary,
    tenants_apps_secrets_keys,
    password_grant_switch,
    signing_keys,
    sign_in_throttle,
    audit_log,
    address_history,
    machine_tags,
    rate_limits,
    machine_lookups,
    tenant_isolation,
    heartbeat,
    reenrollment,
    duplicate_rule,
    other_types_not_blocked,
    transition_rules,
    audit_trail,
    time_out_actions,
    offboarding,
    list_actions,
    list_machines,
    open_actions,
    last_succeeded_restrict_family,
    device_group_scopes,
    users,
    app_lifecycle,
    user_lifecycle,
    enroll_secret_lifecycle,
    console_sessions,
    prune_console_sessions,
    oauth_grants,
    indicators,
    file_policy,
    protected_files,
    update_machine,
    denial_events,
    alerts,
    keyset_pages,
    implied_filters,
    retention,
);

#[tokio::test(flavor = "multi_thread")]
async fn enroll_secret_claims_under_concurrency() {
    let (_dir, store) = fresh().await;
    contract::enroll_secret_claims_under_concurrency(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_rule_under_concurrency() {
    let (_dir, store) = fresh().await;
    contract::duplicate_rule_under_concurrency(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_heartbeats() {
    let (_dir, store) = fresh().await;
    contract::concurrent_heartbeats(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creations_on_many_devices() {
    let (_dir, store) = fresh().await;
    contract::concurrent_creations_on_many_devices(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_under_concurrency() {
    let (_dir, store) = fresh().await;
    contract::rate_limits_under_concurrency(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_rotations() {
    let (_dir, store) = fresh().await;
    contract::concurrent_rotations(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cancel_and_complete() {
    let (_dir, store) = fresh().await;
    contract::concurrent_cancel_and_complete(store).await;
}

/// The checks also hold when they share one database.
#[tokio::test(flavor = "multi_thread")]
async fn run_all_on_one_database() {
    let (_dir, store) = fresh().await;
    contract::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appfence.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let written = contract::durability_write(&store).await;
    store.close().await;
    drop(store);

    // Reopening runs the migrations again, which must be a no-op.
    let store = SqliteStore::open(&path).await.unwrap();
    contract::durability_check(&store, &written).await;
    store.close().await;
}

/// The offboarding migration is 0016 while 0015 belongs to a change not merged yet: a
/// database migrated across the gap takes 0015 when it arrives, and refuses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_migration_below_the_newest_applied_one_is_applied_when_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appfence.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;
    drop(store);

    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let later = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        names.push(entry.file_name().to_string_lossy().into_owned());
        std::fs::copy(entry.path(), later.path().join(entry.file_name())).unwrap();
    }
    assert!(names.iter().any(|n| n.starts_with("0016_")), "{names:?}");
    if names.iter().any(|n| n.starts_with("0015_")) {
        return; // merged meanwhile: nothing left to show
    }
    std::fs::write(
        later.path().join("0015_arrives_later.sql"),
        "CREATE TABLE arrived_later (x INTEGER);",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(later.path()).await.unwrap();
    let pool = sqlx::sqlite::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
    )
    .await
    .unwrap();
    migrator.run(&pool).await.expect("0015 applied after 0016");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        versions.contains(&15) && versions.contains(&16),
        "{versions:?}"
    );
    assert_eq!(versions.len(), names.len() + 1, "{versions:?}");
    sqlx::query("SELECT x FROM arrived_later")
        .fetch_all(&pool)
        .await
        .unwrap();
    migrator.run(&pool).await.expect("and again: a no-op");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_durable_and_checked() {
    let (_dir, store) = fresh().await;
    for pool in [&store.writer, &store.reader] {
        let pragma = |name: &'static str| async move {
            let row = sqlx::query(&format!("PRAGMA {name}"))
                .fetch_one(pool)
                .await
                .unwrap();
            row.try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|i| i.to_string()))
                .unwrap()
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        assert_eq!(pragma("synchronous").await, "2", "FULL");
        assert_eq!(pragma("foreign_keys").await, "1");
        assert_eq!(pragma("busy_timeout").await, "10000");
    }
    let secure_delete: i64 = sqlx::query_scalar("PRAGMA secure_delete")
        .fetch_one(&store.writer)
        .await
        .unwrap();
    assert_eq!(secure_delete, 1, "deleted secrets are overwritten");
    assert_eq!(
        store.writer.options().get_max_connections(),
        1,
        "one writer"
    );
    // Readers cannot write, even by mistake.
    let write = sqlx::query("INSERT INTO tenants (id, name) VALUES ('x', 'y')")
        .execute(&store.reader)
        .await;
    assert!(write.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_table_is_append_only() {
    let (_dir, store) = fresh().await;
    let t = contract::new_tenant(store.as_ref()).await;
    let m = contract::new_machine(store.as_ref(), &t, "audit.example").await;
    let a = contract::new_action(
        store.as_ref(),
        &m,
        appfence_proto::ActionType::RestrictCodeExecution,
        at(1),
    )
    .await;
    for sql in [
        "UPDATE action_audit SET actor = 'mallory'",
        "DELETE FROM action_audit",
    ] {
        let err = sqlx::query(sql).execute(&store.writer).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.audit_trail(&a.id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_action_checks_its_input() {
    let (_dir, store) = fresh().await;
    let t = contract::new_tenant(store.as_ref()).await;
    let m = contract::new_machine(store.as_ref(), &t, "input.example").await;
    let kind = appfence_proto::ActionType::RunAntiVirusScan;

    let mut not_pending = contract::action_record(&m, kind, at(1));
    not_pending.status = ActionStatus::Succeeded;
    let r = store.create_action(&not_pending).await;
    assert!(matches!(r, Err(Error::Internal(_))), "{r:?}");

    // The machine must exist (foreign keys are on).
    let mut orphan = contract::action_record(&m, kind, at(1));
    orphan.machine_id = appfence_core::ids::new_machine_id();
    let r = store.create_action(&orphan).await;
    assert!(
        matches!(&r, Err(Error::Internal(msg)) if msg.contains("FOREIGN KEY")),
        "{r:?}"
    );
    assert!(store.audit_trail(&orphan.id).await.unwrap().is_empty());
}

/// A database of the version before credential lifecycles (migrations up to 0014) with
/// an application, an enrolment secret and a user: 0015 keeps them working. The
/// application's secret becomes its first secret with an id and no expiry; the
/// enrolment secret gets an id, no expiry, no limit and no uses.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_of_the_previous_version_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appfence.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: super::MIGRATOR
            .iter()
            .filter(|m| m.version < 15)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    for statement in [
        "INSERT INTO tenants (id, name) VALUES ('t-1', 'Contoso')",
        "INSERT INTO apps (tenant_id, client_id, display_name, secret_hash, roles, created) \
         VALUES ('t-1', 'c-1', 'SOAR', '$argon2id$legacy', '[\"Machine.Read.All\"]', 42)",
        "INSERT INTO apps (tenant_id, client_id, display_name, secret_hash, roles, created) \
         VALUES ('t-1', 'c-2', 'Other', 'sha256:abcd', '[]', 43)",
        "INSERT INTO enroll_secrets (secret_sha256, tenant_id, created) VALUES ('e-hash', 't-1', 43)",
        "INSERT INTO users (tenant_id, object_id, upn, password_hash, groups, created) \
         VALUES ('t-1', 'oid-1', 'ana@example.com', 'x', '[]', 44)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let app = store.app("t-1", "c-1").await.unwrap().unwrap();
    assert_eq!((app.display_name.as_str(), app.disabled), ("SOAR", None));
    let secrets = store.app_secrets("t-1", "c-1").await.unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].secret_hash, "$argon2id$legacy");
    assert_eq!((secrets[0].expires, secrets[0].hint.clone()), (None, None));
    assert_eq!(secrets[0].created.ticks(), 42);
    assert!(
        appfence_core::ids::parse_guid(&secrets[0].id).is_some(),
        "{}",
        secrets[0].id
    );
    let other = store.app_secrets("t-1", "c-2").await.unwrap();
    assert_eq!(other[0].secret_hash, "sha256:abcd");
    assert_ne!(other[0].id, secrets[0].id);
    let enroll = store.enroll_secret("e-hash").await.unwrap().unwrap();
    assert!(
        appfence_core::ids::parse_guid(&enroll.id).is_some(),
        "{}",
        enroll.id
    );
    assert_eq!(
        (enroll.expires, enroll.max_uses, enroll.uses, enroll.revoked),
        (None, None, 0, None)
    );
    let user = store.user("t-1", "ana@example.com").await.unwrap().unwrap();
    assert_eq!(user.disabled, None);
    // Deleting the application takes its secrets with it.
    assert!(store.delete_app("t-1", "c-1", "test", at(1)).await.unwrap());
    assert!(store.app_secrets("t-1", "c-1").await.unwrap().is_empty());
    store.close().await;
}

/// The database and the log files SQLite makes beside it are readable by their owner
/// only, whatever the process umask (the server also sets one, but a library must not
/// count on it).
#[tokio::test(flavor = "multi_thread")]
async fn the_database_and_its_logs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appfence.db");
    let store = SqliteStore::open(&path).await.unwrap();
    // A write, so the log and shared-memory files exist.
    contract::new_tenant(&store).await;
    for name in ["appfence.db", "appfence.db-wal", "appfence.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
    store.close().await;
}

/// A write whose SQLite transaction ended underneath it (as SQLite does by itself on
/// SQLITE_FULL or an I/O error) fails to commit, and sqlx's own rollback then fails
/// too; the writer's pool must not hand that connection out again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_commit_does_not_poison_the_writer() {
    let (_dir, store) = fresh().await;
    for _ in 0..3 {
        let mut tx = super::write_tx(&store.writer).await.unwrap();
        sqlx::query("INSERT INTO tenants (id, name) VALUES ('gone', 'gone')")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
        super::commit(tx).await.expect_err("nothing to commit");
        // Every later write works, on the same pool.
        contract::new_tenant(store.as_ref()).await;
    }
    assert!(store.tenant("gone").await.unwrap().is_none());
}

/// A failure at each step of a write transaction: BEGIN (the write lock held elsewhere
/// past the busy timeout: a storage fault, 503), a statement (refused), COMMIT (as
/// above). After each, the next write on the same pool succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_at_any_step_leaves_the_pool_healthy() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appfence.db");
    let store = SqliteStore::open_with(&path, std::time::Duration::from_millis(200))
        .await
        .unwrap();
    let tenant = contract::new_tenant(&store).await;

    // BEGIN: another process holds the write lock.
    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let e = store
        .ensure_tenant(&appfence_core::records::Tenant {
            id: "t2".into(),
            name: "t2".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Storage {
                fault: appfence_core::StorageFault::Unavailable,
                ..
            }
        ),
        "{e:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    contract::new_tenant(&store).await;

    // A statement: a second user of the same name is refused inside the transaction.
    let user = |object_id: &str| appfence_core::records::UserRecord {
        tenant_id: tenant.id.clone(),
        object_id: object_id.into(),
        upn: "same@corp.example".into(),
        password_hash: "x".into(),
        groups: vec![],
        created: at(1),
        disabled: None,
    };
    store.insert_user(&user("a")).await.unwrap();
    assert!(matches!(
        store.insert_user(&user("b")).await,
        Err(Error::BadRequest(_))
    ));
    contract::new_tenant(&store).await;

    // COMMIT: see a_failed_commit_does_not_poison_the_writer.
    let mut tx = super::write_tx(&store.writer).await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
    assert!(super::commit(tx).await.is_err());
    contract::new_tenant(&store).await;
    store.close().await;
}

#[test]
fn sqlite_errors_are_classified_by_their_primary_code() {
    use appfence_core::StorageFault::*;
    // (extended code, fault): SQLITE_FULL, SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED,
    // SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_BUSY, SQLITE_CONSTRAINT_UNIQUE.
    for (code, fault) in [
        (13, Some(Full)),
        (778, Some(Unavailable)),
        (1032, Some(ReadOnly)),
        (11, Some(Corrupt)),
        (26, Some(Corrupt)),
        (5, Some(Unavailable)),
        (2067, None),
    ] {
        assert_eq!(super::classify_code(code), fault, "code {code}");
    }
}
