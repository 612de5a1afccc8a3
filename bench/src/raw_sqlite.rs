//! The baseline for action creation: the same action row inserted straight into SQLite,
//! in a separate database with the store's schema and the store's durability settings
//! (WAL, `synchronous=FULL`, foreign keys on), one autocommit `INSERT` per row over one
//! connection. This is what one durable row costs on this disk, with nothing above it.
//!
//! A second, informative way writes what the store's transaction writes (`BEGIN
//! IMMEDIATE`, the action row, its audit row, `COMMIT`) over the same single connection,
//! to tell the cost of the transaction's shape from that of the store's pool and tasks.

use std::path::Path;
use std::time::{Duration, Instant};

use appfence_core::records::{ActionRecord, MachineRecord};
use appfence_core::{Clock, SystemClock, Tenant};
use appfence_proto::Timestamp;
use appfence_store::{SqliteStore, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::setup::machine_record;
use crate::stats::Sample;

/// The `actions` columns in the order the store inserts them
/// (crates/store/src/sqlite/rows.rs, `ACTION_COLUMNS`).
const ACTION_COLUMNS: &str = "id, tenant_id, action_type, title, requestor, \
     requestor_comment, status, machine_id, computer_dns_name, created, last_update, \
     cancellation_requestor, cancellation_comment, cancellation_time, error_h_result, \
     external_id, request_source, troubleshoot_info";

/// The store's audit insert (crates/store/src/sqlite/actions.rs, `insert_audit`).
const INSERT_AUDIT: &str = "INSERT INTO action_audit \
     (action_id, at, actor, from_status, to_status, reason) VALUES (?, ?, ?, ?, ?, ?)";

/// Rows inserted and discarded before measuring. Closing the setup store checkpoints
/// and deletes the WAL file, and while the WAL grows every fsync must also commit the
/// file's new size, which makes commits several times slower than in the steady state
/// of a long-running server, whose WAL has reached its size and is overwritten in place
/// after each automatic checkpoint (1000 pages; an action row dirties about 6).
pub const WARM_UP_ROWS: usize = 500;

/// The store's busy timeout (crates/store/src/sqlite/mod.rs); irrelevant with one
/// connection, set only so the connection is configured exactly alike.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RawSqlite {
    conn: SqliteConnection,
    devices: Vec<MachineRecord>,
    next: usize,
    tenant_id: String,
    requestor: String,
    /// `journal_mode`, `synchronous` and `foreign_keys` as the connection reports them.
    pub pragmas: String,
}

impl RawSqlite {
    /// Creates the database at `path` through `SqliteStore::open` (so the schema is the
    /// store's own), adds the tenant and `devices` devices the rows will reference (plus
    /// [`WARM_UP_ROWS`] more; each row needs a device of its own), reopens it as one plain connection and inserts the warm-up
    /// rows.
    pub async fn prepare(
        path: &Path,
        tenant: &Tenant,
        requestor: &str,
        devices: usize,
    ) -> Result<RawSqlite, String> {
        let store = SqliteStore::open(path)
            .await
            .map_err(|e| format!("cannot create the baseline database: {e}"))?;
        store
            .ensure_tenant(tenant)
            .await
            .map_err(|e| format!("baseline tenant: {e}"))?;
        let now = SystemClock.now();
        let mut records = Vec::with_capacity(WARM_UP_ROWS + devices);
        for i in 0..WARM_UP_ROWS + devices {
            let m = machine_record(&tenant.id, "bench-raw", i, now);
            store
                .insert_machine(&m)
                .await
                .map_err(|e| format!("baseline device: {e}"))?;
            records.push(m);
        }
        store.close().await;

        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .journal_mode(SqliteJournalMode::Wal)
            .connect()
            .await
            .map_err(|e| format!("cannot open the baseline database: {e}"))?;
        let pragmas = describe_pragmas(&mut conn).await?;
        let mut raw = RawSqlite {
            conn,
            devices: records,
            next: 0,
            tenant_id: tenant.id.clone(),
            requestor: requestor.to_string(),
            pragmas,
        };
        let warm = raw.insert(WARM_UP_ROWS).await?;
        eprintln!(
            "baseline warm-up: {WARM_UP_ROWS} rows at {:.0}/s (not counted)",
            warm.per_second()
        );
        Ok(raw)
    }

    /// Inserts a pending restrict action for each of the next `n` devices, one
    /// autocommit statement (so one commit, one WAL fsync) per row, back to back.
    pub async fn insert(&mut self, n: usize) -> Result<Sample, String> {
        self.write(n, false).await
    }

    /// As [`RawSqlite::insert`], but each row in the store's transaction shape:
    /// `BEGIN IMMEDIATE`, the action, its creation audit row, `COMMIT`.
    pub async fn insert_with_audit(&mut self, n: usize) -> Result<Sample, String> {
        self.write(n, true).await
    }

    async fn write(&mut self, n: usize, with_audit: bool) -> Result<Sample, String> {
        let sql = format!(
            "INSERT INTO actions ({ACTION_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        let end = self.next + n;
        if end > self.devices.len() {
            return Err(format!(
                "the baseline has {} devices, {} rows were asked for",
                self.devices.len(),
                end
            ));
        }
        let mut latencies_ns = Vec::with_capacity(n);
        let started = Instant::now();
        for i in self.next..end {
            let t0 = Instant::now();
            let m = &self.devices[i];
            let a = crate::setup::pending_restrict(
                &self.tenant_id,
                &self.requestor,
                &m.id,
                &m.computer_dns_name,
                SystemClock.now(),
            );
            if with_audit {
                let mut tx = self
                    .conn
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| format!("baseline begin: {e}"))?;
                insert_action(&mut tx, &sql, &a).await?;
                insert_audit(&mut tx, &a).await?;
                tx.commit()
                    .await
                    .map_err(|e| format!("baseline commit: {e}"))?;
            } else {
                insert_action(&mut self.conn, &sql, &a).await?;
            }
            latencies_ns.push(t0.elapsed().as_nanos() as u64);
        }
        self.next = end;
        Ok(Sample {
            latencies_ns,
            elapsed: started.elapsed(),
        })
    }

    pub async fn close(self) -> Result<(), String> {
        self.conn
            .close()
            .await
            .map_err(|e| format!("cannot close the baseline database: {e}"))
    }
}

/// Binds the columns exactly as the store does (crates/store/src/sqlite/actions.rs).
async fn insert_action(
    conn: &mut SqliteConnection,
    sql: &str,
    a: &ActionRecord,
) -> Result<(), String> {
    sqlx::query(sql)
        .bind(&a.id)
        .bind(&a.tenant_id)
        .bind(a.action_type.as_str())
        .bind(&a.title)
        .bind(&a.requestor)
        .bind(&a.requestor_comment)
        .bind(a.status.as_str())
        .bind(&a.machine_id)
        .bind(&a.computer_dns_name)
        .bind(a.created.ticks())
        .bind(a.last_update.ticks())
        .bind(&a.cancellation_requestor)
        .bind(&a.cancellation_comment)
        .bind(a.cancellation_time.map(Timestamp::ticks))
        .bind(a.error_h_result)
        .bind(&a.external_id)
        .bind(&a.request_source)
        .bind(&a.troubleshoot_info)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| format!("baseline insert: {e}"))
}

/// The creation audit row, bound as the store binds it.
async fn insert_audit(conn: &mut SqliteConnection, a: &ActionRecord) -> Result<(), String> {
    sqlx::query(INSERT_AUDIT)
        .bind(&a.id)
        .bind(a.created.ticks())
        .bind(&a.requestor)
        .bind(None::<&str>)
        .bind(a.status.as_str())
        .bind(None::<&str>)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| format!("baseline audit insert: {e}"))
}

async fn describe_pragmas(conn: &mut SqliteConnection) -> Result<String, String> {
    let mut parts = Vec::new();
    for pragma in ["journal_mode", "synchronous", "foreign_keys"] {
        let value: String = sqlx::query_scalar(&format!(
            "SELECT CAST({pragma} AS TEXT) FROM pragma_{pragma}"
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("cannot read PRAGMA {pragma}: {e}"))?;
        parts.push(format!("{pragma}={value}"));
    }
    Ok(parts.join(", "))
}
