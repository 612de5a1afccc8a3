//! Counters of failed sign-ins per account and per source address; the arithmetic is
//! `appfence_core::sign_in_throttle`'s. Each failure locks the counters it changes
//! (created first if missing), so replicas counting at once lose no failure.

use appfence_core::audit::{self, AuditEvent};
use appfence_core::sign_in_throttle::{
    AccountFailure, SignInAccount, ThrottlePolicy, ThrottleRecord,
};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};

use super::{audit_log, begin, commit, ctx, read, retry, PgResult};
use crate::rows::{self, THROTTLE_COLUMNS};

pub(super) async fn read_keys(pool: &PgPool, keys: &[String]) -> Result<Vec<ThrottleRecord>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {THROTTLE_COLUMNS} FROM sign_in_throttle WHERE key = ANY($1)"
        ))
        .bind(keys)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot read sign-in counters"))?;
        Ok(found
            .iter()
            .map(rows::throttle)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}

/// The counters of `key`, locked for the rest of the transaction (`None`: none yet).
async fn lock_one(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
) -> PgResult<Option<ThrottleRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {THROTTLE_COLUMNS} FROM sign_in_throttle WHERE key = $1 FOR UPDATE"
    ))
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(ctx("cannot read a sign-in counter"))?;
    Ok(row.as_ref().map(rows::throttle).transpose()?)
}

/// Makes sure a row exists, so that `lock_one` has something to lock.
async fn ensure_row(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
    tenant_id: Option<&str>,
    subject: &str,
    now: Timestamp,
) -> PgResult<()> {
    sqlx::query(
        "INSERT INTO sign_in_throttle (key, tenant_id, subject, failures, window_start, \
         locked_until, lockouts, lock_end_recorded) VALUES ($1, $2, $3, 0, $4, NULL, 0, TRUE) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(tenant_id)
    .bind(subject)
    .bind(now.ticks())
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot create a sign-in counter"))?;
    Ok(())
}

async fn write(tx: &mut Transaction<'static, Postgres>, r: &ThrottleRecord) -> PgResult<()> {
    sqlx::query(
        "UPDATE sign_in_throttle SET failures = $2, window_start = $3, locked_until = $4, \
         lockouts = $5, lock_end_recorded = $6 WHERE key = $1",
    )
    .bind(&r.key)
    .bind(i64::from(r.failures))
    .bind(r.window_start.ticks())
    .bind(r.locked_until.map(Timestamp::ticks))
    .bind(i64::from(r.lockouts))
    .bind(r.lock_end_recorded)
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot write a sign-in counter"))?;
    Ok(())
}

/// A freshly created row reads as "no counters yet" for the arithmetic.
fn existing(r: Option<ThrottleRecord>) -> Option<ThrottleRecord> {
    r.filter(|r| !(r.failures == 0 && r.locked_until.is_none() && r.lockouts == 0))
}

pub(super) async fn record_failure(
    pool: &PgPool,
    account: Option<&SignInAccount>,
    address_key: &str,
    address: &str,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Result<Option<AccountFailure>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        // Always the address first, then the account: one order, no deadlock.
        ensure_row(&mut tx, address_key, None, address, now).await?;
        let previous = existing(lock_one(&mut tx, address_key).await?);
        write(&mut tx, &policy.after_address_failure(address_key, previous, now)).await?;
        let mut outcome = None;
        if let Some(account) = account {
            let key = account.key();
            ensure_row(&mut tx, &key, Some(&account.tenant_id), &account.name, now).await?;
            let previous = existing(lock_one(&mut tx, &key).await?);
            let failure = policy.after_account_failure(&key, previous, now);
            write(&mut tx, &failure.record).await?;
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
    })
    .await
}

/// Appends the end of the account's last lockout if it is over (by `now`, or at all
/// with `None`) and not yet in the audit log.
async fn record_unrecorded_end(
    tx: &mut Transaction<'static, Postgres>,
    account: &SignInAccount,
    now: Option<Timestamp>,
) -> PgResult<()> {
    let Some(r) = lock_one(tx, &account.key()).await? else {
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

async fn delete(tx: &mut Transaction<'static, Postgres>, key: &str) -> PgResult<()> {
    sqlx::query("DELETE FROM sign_in_throttle WHERE key = $1")
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(ctx("cannot clear a sign-in counter"))?;
    Ok(())
}

pub(super) async fn clear(pool: &PgPool, account: &SignInAccount) -> Result<()> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        record_unrecorded_end(&mut tx, account, None).await?;
        delete(&mut tx, &account.key()).await?;
        commit(tx).await
    })
    .await
}

pub(super) async fn unlock(
    pool: &PgPool,
    account: &SignInAccount,
    actor: &str,
    now: Timestamp,
) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let locked = lock_one(&mut tx, &account.key())
            .await?
            .and_then(|r| r.locked_until)
            .is_some_and(|until| now < until);
        record_unrecorded_end(&mut tx, account, Some(now)).await?;
        delete(&mut tx, &account.key()).await?;
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
    })
    .await
}

pub(super) async fn sweep(
    pool: &PgPool,
    policy: &ThrottlePolicy,
    now: Timestamp,
) -> Result<Vec<SignInAccount>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        // SKIP LOCKED: two replicas sweeping at once record each end once.
        let ended = sqlx::query(
            "SELECT key, tenant_id, subject, locked_until FROM sign_in_throttle \
             WHERE NOT lock_end_recorded AND locked_until <= $1 \
             ORDER BY locked_until LIMIT 1000 FOR UPDATE SKIP LOCKED",
        )
        .bind(now.ticks())
        .fetch_all(&mut *tx)
        .await
        .map_err(ctx("cannot read ended lockouts"))?;
        let mut accounts = Vec::with_capacity(ended.len());
        for row in &ended {
            let get = |c: &str| {
                row.try_get::<Option<String>, _>(c)
                    .map_err(ctx("cannot decode an ended lockout"))
            };
            let key: String = row
                .try_get("key")
                .map_err(ctx("cannot decode an ended lockout"))?;
            let tenant_id = get("tenant_id")?;
            let subject: String = row
                .try_get("subject")
                .map_err(ctx("cannot decode an ended lockout"))?;
            let until: i64 = row
                .try_get("locked_until")
                .map_err(ctx("cannot decode an ended lockout"))?;
            sqlx::query("UPDATE sign_in_throttle SET lock_end_recorded = TRUE WHERE key = $1")
                .bind(&key)
                .execute(&mut *tx)
                .await
                .map_err(ctx("cannot record the end of a lockout"))?;
            audit_log::append(
                &mut tx,
                &AuditEvent {
                    at: Timestamp::from_ticks(until),
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
            "DELETE FROM sign_in_throttle WHERE lock_end_recorded AND window_start <= $1 \
             AND (locked_until IS NULL OR locked_until <= $2)",
        )
        .bind(now.minus(window).ticks())
        .bind(now.minus(policy.forget_after).ticks())
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot delete stale sign-in counters"))?;
        commit(tx).await?;
        Ok(accounts)
    })
    .await
}
