//! Signing keys: sealed private parts, rotation as a compare-and-add (under a
//! transaction-scoped advisory lock, so replicas rotating at once add one key), and
//! retirement that destroys the private part. A PostgreSQL database never held plain
//! keys: there is nothing to seal.

use appfence_core::audit::{self, AuditEvent};
use appfence_core::records::{SealedSigningKey, SigningKey, UnsealedSigningKey};
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;

use super::{audit_log, begin, commit, ctx, read, retry, Fail};
use crate::rows::{self, SIGNING_KEY_COLUMNS};

/// Newest first: by activation, then creation, then insertion.
const NEWEST_FIRST: &str = "ORDER BY activates DESC, created DESC, seq DESC";
/// Serialises rotations (any 64-bit number of our own: "appfence keys").
const ROTATION_LOCK: i64 = 0x6170_6b65_7973;

pub(super) async fn list(pool: &PgPool) -> Result<Vec<SigningKey>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys {NEWEST_FIRST}"
        ))
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot list signing keys"))?;
        Ok(found
            .iter()
            .map(rows::signing_key)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}

pub(super) async fn add(
    pool: &PgPool,
    key: &SigningKey,
    replacing: Option<&str>,
    superseded_until: Timestamp,
) -> Result<bool> {
    if key.sealed_private_key.is_none() || key.kek_id.is_none() {
        return Err(Error::internal(format!(
            "signing key {} must be sealed before it is stored",
            key.kid
        )));
    }
    retry(|| async {
        let mut tx = begin(pool).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROTATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot lock the signing keys"))?;
        let newest: Option<String> = sqlx::query_scalar(&format!(
            "SELECT kid FROM signing_keys WHERE retired IS NULL {NEWEST_FIRST} LIMIT 1"
        ))
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read the newest signing key"))?;
        if newest.as_deref() != replacing {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE signing_keys SET verify_until = $1 WHERE retired IS NULL AND verify_until IS NULL",
        )
        .bind(superseded_until.ticks())
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot end the replaced signing keys"))?;
        sqlx::query(&format!(
            "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.public_key)
        .bind(&key.sealed_private_key)
        .bind(&key.kek_id)
        .bind(key.created.ticks())
        .bind(key.activates.ticks())
        .bind(key.verify_until.map(Timestamp::ticks))
        .bind(key.retired.map(Timestamp::ticks))
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot insert a signing key"))?;
        audit_log::append(
            &mut tx,
            &AuditEvent {
                at: key.created,
                tenant_id: None,
                event: audit::SIGNING_KEY_ADDED.into(),
                subject: key.kid.clone(),
                actor: audit::ACTOR_SERVER.into(),
                detail: Some(match replacing {
                    Some(old) => format!(
                        "signs from {}; replaces {old}, which verifies until {}",
                        key.activates, superseded_until
                    ),
                    None => format!("signs from {}", key.activates),
                }),
            },
        )
        .await?;
        commit(tx).await?;
        Ok(true)
    })
    .await
}

pub(super) async fn retire(pool: &PgPool, kid: &str, at: Timestamp, actor: &str) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let changed = sqlx::query(
            "UPDATE signing_keys SET retired = $1, sealed_private_key = NULL, \
             verify_until = LEAST(COALESCE(verify_until, $1), $1) \
             WHERE kid = $2 AND retired IS NULL",
        )
        .bind(at.ticks())
        .bind(kid)
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot retire a signing key"))?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        audit_log::append(
            &mut tx,
            &AuditEvent {
                at,
                tenant_id: None,
                event: audit::SIGNING_KEY_RETIRED.into(),
                subject: kid.to_string(),
                actor: actor.to_string(),
                detail: None,
            },
        )
        .await?;
        commit(tx).await?;
        Ok(true)
    })
    .await
}

pub(super) fn unsealed() -> Vec<UnsealedSigningKey> {
    Vec::new()
}

pub(super) fn seal(sealed: &[SealedSigningKey]) -> Result<()> {
    match sealed.first() {
        None => Ok(()),
        Some(k) => Err(Fail::App(Error::internal(format!(
            "there is no plain signing key {} to seal in a PostgreSQL database",
            k.kid
        )))
        .into_error()),
    }
}
