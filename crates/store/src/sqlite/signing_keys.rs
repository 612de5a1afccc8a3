//! Signing keys: sealed private parts, rotation as a compare-and-add, retirement that
//! destroys the private part, and the one-time sealing of keys earlier versions stored
//! in plain form.

use appfence_core::audit::{self, AuditEvent};
use appfence_core::records::{SealedSigningKey, SigningKey, UnsealedSigningKey};
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};

use super::{audit_log, commit, db_err, write_tx};
use crate::rows::SIGNING_KEY_COLUMNS;

/// Newest first: by activation, then creation; rowid breaks ties between keys made in
/// the same tick (the later insert wins).
const NEWEST_FIRST: &str = "ORDER BY activates DESC, created DESC, rowid DESC";

pub(super) async fn list(reader: &SqlitePool) -> Result<Vec<SigningKey>> {
    let rows = sqlx::query(&format!(
        "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys {NEWEST_FIRST}"
    ))
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot list signing keys"))?;
    rows.iter().map(crate::rows::signing_key).collect()
}

pub(super) async fn add(
    writer: &SqlitePool,
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
    let mut tx = write_tx(writer).await?;
    let newest: Option<String> = sqlx::query_scalar(&format!(
        "SELECT kid FROM signing_keys WHERE retired IS NULL {NEWEST_FIRST} LIMIT 1"
    ))
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err("cannot read the newest signing key"))?;
    if newest.as_deref() != replacing {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE signing_keys SET verify_until = ? WHERE retired IS NULL AND verify_until IS NULL",
    )
    .bind(superseded_until.ticks())
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot end the replaced signing keys"))?;
    insert(&mut tx, key).await?;
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
}

async fn insert(tx: &mut Transaction<'static, Sqlite>, key: &SigningKey) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
    .execute(&mut **tx)
    .await
    .map_err(db_err("cannot insert a signing key"))?;
    Ok(())
}

pub(super) async fn retire(
    writer: &SqlitePool,
    kid: &str,
    at: Timestamp,
    actor: &str,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    let changed = sqlx::query(
        "UPDATE signing_keys SET retired = ?, sealed_private_key = NULL, \
         verify_until = MIN(COALESCE(verify_until, ?), ?) \
         WHERE kid = ? AND retired IS NULL",
    )
    .bind(at.ticks())
    .bind(at.ticks())
    .bind(at.ticks())
    .bind(kid)
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot retire a signing key"))?
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
}

pub(super) async fn unsealed(reader: &SqlitePool) -> Result<Vec<UnsealedSigningKey>> {
    let rows = sqlx::query("SELECT kid, private_key FROM signing_keys_unsealed ORDER BY kid")
        .fetch_all(reader)
        .await
        .map_err(db_err("cannot read the unsealed signing keys"))?;
    let err = || db_err("cannot decode an unsealed signing key");
    rows.iter()
        .map(|r| {
            Ok(UnsealedSigningKey {
                kid: r.try_get("kid").map_err(err())?,
                private_key: r.try_get("private_key").map_err(err())?,
            })
        })
        .collect()
}

pub(super) async fn seal(
    writer: &SqlitePool,
    sealed: &[SealedSigningKey],
    at: Timestamp,
) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    for key in sealed {
        let updated =
            sqlx::query("UPDATE signing_keys SET sealed_private_key = ?, kek_id = ? WHERE kid = ?")
                .bind(&key.sealed_private_key)
                .bind(&key.kek_id)
                .bind(&key.kid)
                .execute(&mut *tx)
                .await
                .map_err(db_err("cannot store a sealed signing key"))?
                .rows_affected();
        if updated != 1 {
            return Err(Error::internal(format!(
                "there is no signing key {} to seal",
                key.kid
            )));
        }
        // secure_delete is on for the writer: the deleted row's bytes are zeroed.
        sqlx::query("DELETE FROM signing_keys_unsealed WHERE kid = ?")
            .bind(&key.kid)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot delete an unsealed signing key"))?;
    }
    audit_log::append(
        &mut tx,
        &AuditEvent {
            at,
            tenant_id: None,
            event: audit::SIGNING_KEYS_SEALED.into(),
            subject: sealed
                .iter()
                .map(|k| k.kid.as_str())
                .collect::<Vec<_>>()
                .join(","),
            actor: audit::ACTOR_SERVER.into(),
            detail: Some("stored in plain form by an earlier version; now sealed".into()),
        },
    )
    .await?;
    commit(tx).await?;
    // The log still holds the pages as they were before: copy them into the database
    // and truncate it, so no file of the database keeps the plain bytes.
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(writer)
        .await
        .map_err(db_err("cannot checkpoint the database log"))?;
    if busy != 0 {
        tracing::warn!(
            "the database log could not be truncated after sealing the signing keys \
             (a reader was busy); it is overwritten as the server runs"
        );
    }
    Ok(())
}
