//! Counters of failed sign-ins per account and per source address. The arithmetic is
//! `appfence_core::sign_in_throttle`'s; this reads and writes it in one transaction.

use appfence_core::audit::{self, AuditEvent};
use appfence_core::sign_in_throttle::{
    AccountFailure, SignInAccount, ThrottlePolicy, ThrottleRecord,
};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};

use super::{audit_log, commit, db_err, write_tx};
use crate::rows::THROTTLE_COLUMNS;

pub(super) async fn read(reader: &SqlitePool, keys: &[String]) -> Result<Vec<ThrottleRecord>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; keys.len()].join(", ");
    let sql = format!("SELECT {THROTTLE_COLUMNS} FROM sign_in_throttle WHERE key IN ({marks})");
    let mut query = sqlx::query(&sql);
    for k in keys {
        query = query.bind(k);
    }
    let rows = query
        .fetch_all(reader)
        .await
        .map_err(db_err("cannot read sign-in counters"))?;
    rows.iter().map(crate::rows::throttle).collect()
}

async fn read_one(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
) -> Result<Option<ThrottleRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {THROTTLE_COLUMNS} FROM sign_in_throttle WHERE key = ?"
    ))
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err("cannot read a sign-in counter"))?;
    row.as_ref().map(crate::rows::throttle).transpose()
}

async fn upsert(
    tx: &mut Transaction<'static, Sqlite>,
    r: &ThrottleRecord,
    tenant_id: Option<&str>,
    subject: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sign_in_throttle (key, tenant_id, subject, failures, window_start, \
         locked_until, lockouts, lock_end_recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, \
         window_start = excluded.window_start, locked_until = excluded.locked_until, \
         lockouts = excluded.lockouts, lock_end_recorded = excluded.lock_end_recorded",
    )
    .bind(&r.key)
    .bind(tenant_id)
    .bind(subject)
    .bind(i64::from(r.failures))
    .bind(r.window_start.ticks())
    .bind(r.locked_until.map(Timestamp::ticks))
    .bind(i64::from(r.lockouts))
    .bind(r.lock_end_recorded)
    .execute(&mut **tx)
    .await
    .map_err(db_err("cannot write a sign-in counter"))?;
    Ok(())
}

pub(super) async fn record_failure(
    writer: &SqlitePool,
    account: Option<&SignInAccount>,
    address_key: &str,
    address: &str,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Result<Option<AccountFailure>> {
    let mut tx = write_tx(writer).await?;
    let previous = read_one(&mut tx, address_key).await?;
    let counted = policy.after_address_failure(address_key, previous, now);
    upsert(&mut tx, &counted, None, address).await?;
    let mut outcome = None;
    if let Some(account) = account {
        let key = account.key();
        let previous = read_one(&mut tx, &key).await?;
        let failure = policy.after_account_failure(&key, previous, now);
        upsert(
            &mut tx,
            &failure.record,
            Some(&account.tenant_id),
            &account.name,
        )
        .await?;
        if let Some(until) = failure.locked_until {
            audit_log::append(
                &mut tx,
                &AuditEvent {
                    at: now,
                    tenant_id: Some(account.tenant_id.clone()),
                    event: audit::SIGN_IN_LOCKOUT_STARTED.into(),
                    subject: account.name.clone(),
                    actor: audit::ACTOR_SERVER.into(),
                    detail: Some(format!(
                        "locked until {until} after {} failed sign-ins (lockout {} in a row; last from {address})",
                        policy.account_failures, failure.record.lockouts
                    )),
                },
            )
            .await?;
        }
        outcome = Some(failure);
    }
    commit(tx).await?;
    Ok(outcome)
}

/// Deletes an account's counters; a lockout that ended without its end in the audit log
/// gets it now, so deleting never loses an end.
pub(super) async fn clear(writer: &SqlitePool, account: &SignInAccount) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    record_unrecorded_end(&mut tx, account, None).await?;
    sqlx::query("DELETE FROM sign_in_throttle WHERE key = ?")
        .bind(account.key())
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot clear a sign-in counter"))?;
    commit(tx).await
}

/// Appends the end of the account's last lockout if it is over (by `now`, or at all
/// when `now` is `None`) and not yet in the audit log.
async fn record_unrecorded_end(
    tx: &mut Transaction<'static, Sqlite>,
    account: &SignInAccount,
    now: Option<Timestamp>,
) -> Result<()> {
    let Some(r) = read_one(tx, &account.key()).await? else {
        return Ok(());
    };
    match r.locked_until {
        Some(until) if !r.lock_end_recorded && now.is_none_or(|n| until <= n) => {
            audit_log::append(
                tx,
                &AuditEvent {
                    at: until,
                    tenant_id: Some(account.tenant_id.clone()),
                    event: audit::SIGN_IN_LOCKOUT_ENDED.into(),
                    subject: account.name.clone(),
                    actor: audit::ACTOR_SERVER.into(),
                    detail: None,
                },
            )
            .await
        }
        _ => Ok(()),
    }
}

pub(super) async fn unlock(
    writer: &SqlitePool,
    account: &SignInAccount,
    actor: &str,
    now: Timestamp,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    let key = account.key();
    let locked = read_one(&mut tx, &key)
        .await?
        .and_then(|r| r.locked_until)
        .is_some_and(|until| now < until);
    // A lockout that is already over ended by itself, not by this unlock.
    record_unrecorded_end(&mut tx, account, Some(now)).await?;
    sqlx::query("DELETE FROM sign_in_throttle WHERE key = ?")
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot clear a sign-in counter"))?;
    if locked {
        audit_log::append(
            &mut tx,
            &AuditEvent {
                at: now,
                tenant_id: Some(account.tenant_id.clone()),
                event: audit::ACCOUNT_UNLOCKED.into(),
                subject: account.name.clone(),
                actor: actor.to_string(),
                detail: None,
            },
        )
        .await?;
    }
    commit(tx).await?;
    Ok(locked)
}

pub(super) async fn sweep(
    writer: &SqlitePool,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Result<Vec<SignInAccount>> {
    let mut tx = write_tx(writer).await?;
    let ended = sqlx::query(
        "SELECT key, tenant_id, subject, locked_until FROM sign_in_throttle \
         WHERE lock_end_recorded = 0 AND locked_until <= ? ORDER BY locked_until LIMIT 1000",
    )
    .bind(now.ticks())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err("cannot read ended lockouts"))?;
    let mut accounts = Vec::with_capacity(ended.len());
    for row in &ended {
        let err = || db_err("cannot decode an ended lockout");
        let key: String = row.try_get("key").map_err(err())?;
        let tenant_id: Option<String> = row.try_get("tenant_id").map_err(err())?;
        let subject: String = row.try_get("subject").map_err(err())?;
        let until = Timestamp::from_ticks(row.try_get("locked_until").map_err(err())?);
        sqlx::query("UPDATE sign_in_throttle SET lock_end_recorded = 1 WHERE key = ?")
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot record the end of a lockout"))?;
        audit_log::append(
            &mut tx,
            &AuditEvent {
                at: until,
                tenant_id: tenant_id.clone(),
                event: audit::SIGN_IN_LOCKOUT_ENDED.into(),
                subject: subject.clone(),
                actor: audit::ACTOR_SERVER.into(),
                detail: None,
            },
        )
        .await?;
        accounts.push(SignInAccount {
            tenant_id: tenant_id.unwrap_or_default(),
            name: subject,
        });
    }
    // The same rule as ThrottlePolicy::is_stale, in SQL.
    let window = policy.failure_window.max(policy.address_window);
    sqlx::query(
        "DELETE FROM sign_in_throttle WHERE lock_end_recorded = 1 AND window_start <= ? \
         AND (locked_until IS NULL OR locked_until <= ?)",
    )
    .bind(now.minus(window).ticks())
    .bind(now.minus(policy.forget_after).ticks())
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot delete stale sign-in counters"))?;
    commit(tx).await?;
    Ok(accounts)
}
