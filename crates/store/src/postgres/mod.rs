//! The PostgreSQL store, for several replicas of the server on one database.
//!
//! Everything that must hold across replicas is the database's job: the duplicate rule
//! is a partial unique index, status changes are conditional updates, read-modify-write
//! operations lock the rows they change (`SELECT ... FOR UPDATE`) under READ COMMITTED,
//! and rate-limit counters are rows. Operations that can meet a deadlock or a
//! serialization failure are retried. Nothing is cached in the process (unlike the
//! SQLite store's recent actions): another replica may have changed it.
//!
//! Errors are classified once (`fail`): connection loss and timeouts are
//! "storage unavailable" (503), a full disk "storage full", a read-only database
//! "storage read-only"; the rest is internal.

mod actions;
mod addresses;
mod alerts;
mod audit_log;
mod console_sessions;
mod credentials;
mod events;
mod heartbeats;
mod indicators;
mod list;
mod machines;
mod notify;
mod oauth_grants;
mod outage;
mod rate_windows;
mod signing_keys;
mod store;
#[cfg(test)]
mod tests;
mod throttle;

use std::future::Future;
use std::time::Duration;

use appfence_core::{Error, Result, StorageFault};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

pub use notify::Change;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a request waits for a connection before the store answers "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run: nothing hangs on a stuck database.
const STATEMENT_TIMEOUT_MS: u64 = 15_000;
/// Connections per replica.
const MAX_CONNECTIONS: u32 = 16;
/// Attempts of an operation that met a deadlock or a serialization failure.
const ATTEMPTS: u32 = 5;

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    changes: notify::Changes,
    outage: std::sync::Arc<outage::Outage>,
    heartbeats: heartbeats::HeartbeatQueue,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and applies pending
    /// migrations (sqlx holds an advisory lock while it does, so replicas starting
    /// together migrate once). Errors name the problem, never the password.
    pub async fn open(url: &str) -> Result<PgStore> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::Internal(format!(
                "the database URL {} is not valid: it must start with postgres://",
                redact(url)
            )));
        }
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            Error::Internal(format!(
                "the database URL {} is not valid: {}",
                redact(url),
                redact_text(&e.to_string(), url)
            ))
        })?;
        let options = options
            .application_name("appfence")
            .options([("statement_timeout", STATEMENT_TIMEOUT_MS.to_string())]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection a failed transaction left inside one is closed, not reused.
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot connect to the database {}: {}",
                    redact(url),
                    redact_text(&e.to_string(), url)
                ))
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            MigrateError::VersionMissing(v) => Error::Internal(format!(
                "the database {} has schema version {v}, which this appfence does not know: \
                 it was migrated by a newer version; run that version (or a newer one)",
                redact(url)
            )),
            other => Error::Internal(format!(
                "cannot migrate the database {}: {}",
                redact(url),
                redact_text(&other.to_string(), url)
            )),
        })?;
        let changes = notify::Changes::start(pool.clone());
        Ok(PgStore {
            heartbeats: heartbeats::HeartbeatQueue::start(pool.clone()),
            pool,
            changes,
            outage: Default::default(),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.changes.stop(&self.pool).await;
        self.pool.close().await;
    }

    /// Changes other replicas published (and this one: a replica hears its own).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// `postgres://user:***@host/db`: a URL fit for a log line or an error.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => "(not a URL)".to_string(),
    }
}

/// `text` with any password of `url` replaced.
fn redact_text(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(p, "***"),
        None => text.to_string(),
    }
}

/// Why an operation failed: the database's own error (classified when it becomes an
/// [`Error`], and retried when it is a deadlock or a serialization failure), or a
/// decision of the operation.
pub(super) enum Fail {
    Db(&'static str, sqlx::Error),
    App(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::App(e)
    }
}

type PgResult<T> = std::result::Result<T, Fail>;

/// Maps a database error to a [`Fail`] naming what was being done.
fn ctx(context: &'static str) -> impl FnOnce(sqlx::Error) -> Fail {
    move |e| Fail::Db(context, e)
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

fn retryable(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001" | "40P01"))
}

/// The one classification of PostgreSQL errors.
pub(super) fn classify(context: &str, e: sqlx::Error) -> Error {
    let fault = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Some(StorageFault::Unreachable),
        sqlx::Error::Database(_) => match sqlstate(&e).as_deref() {
            // disk_full, insufficient_resources, out_of_memory
            Some("53100" | "53000" | "53200") => Some(StorageFault::Full),
            // read_only_sql_transaction
            Some("25006") => Some(StorageFault::ReadOnly),
            // admin/crash shutdown, cannot connect now, connection failures
            Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006") => {
                Some(StorageFault::Unreachable)
            }
            // statement timeout
            Some("57014") => Some(StorageFault::Unavailable),
            // serialization failure or deadlock that outlived the retries
            Some("40001" | "40P01") => Some(StorageFault::Unavailable),
            _ => None,
        },
        _ => None,
    };
    match fault {
        Some(fault) => Error::storage(fault, format!("{context}: {e}")),
        None => Error::Internal(format!("{context}: {e}")),
    }
}

impl Fail {
    fn into_error(self) -> Error {
        match self {
            Fail::Db(context, e) => classify(context, e),
            Fail::App(e) => e,
        }
    }
}

/// Runs `op`, again when it met a deadlock or a serialization failure.
async fn retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = PgResult<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(Fail::Db(_, e)) if retryable(&e) && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            Err(f) => return Err(f.into_error()),
        }
    }
}

async fn begin(pool: &PgPool) -> PgResult<Transaction<'static, Postgres>> {
    pool.begin()
        .await
        .map_err(ctx("cannot begin a transaction"))
}

async fn commit(tx: Transaction<'static, Postgres>) -> PgResult<()> {
    tx.commit()
        .await
        .map_err(ctx("cannot commit a transaction"))
}

/// Whether `e` violates the unique constraint or index `name`.
fn violates(e: &sqlx::Error, name: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.constraint() == Some(name),
        _ => false,
    }
}

/// Reads are not retried: a failed read fails the request, classified.
async fn read<T, Fut>(fut: Fut) -> Result<T>
where
    Fut: Future<Output = PgResult<T>>,
{
    fut.await.map_err(Fail::into_error)
}
