//! Authorization codes, device codes, refresh tokens and client registrations. Every
//! change of status is one conditional statement, so one use wins.

use appfence_core::grants::{status, ClientRegistration, OAuthGrant};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;

use super::db_err;
use crate::grant_rows::{self, GRANT_COLUMNS};
use crate::rows::to_json;

pub(super) async fn insert(writer: &SqlitePool, g: &OAuthGrant) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO oauth_grants ({GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&g.id_sha256)
    .bind(&g.kind)
    .bind(&g.tenant_id)
    .bind(&g.client_id)
    .bind(&g.family)
    .bind(&g.user_code_sha256)
    .bind(&g.user_object_id)
    .bind(&g.upn)
    .bind(&g.status)
    .bind(&g.detail)
    .bind(g.created.ticks())
    .bind(g.expires.ticks())
    .bind(g.last_poll.map(Timestamp::ticks))
    .bind(g.poll_interval.map(i64::from))
    .execute(writer)
    .await
    .map_err(db_err("cannot insert a sign-in grant"))?;
    Ok(())
}

pub(super) async fn get(
    reader: &SqlitePool,
    column: &'static str,
    value: &str,
) -> Result<Option<OAuthGrant>> {
    let row = sqlx::query(&format!(
        "SELECT {GRANT_COLUMNS} FROM oauth_grants WHERE {column} = ?"
    ))
    .bind(value)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a sign-in grant"))?;
    row.as_ref().map(grant_rows::grant).transpose()
}

pub(super) async fn set_status(
    writer: &SqlitePool,
    id_sha256: &str,
    from: &str,
    to: &str,
    user: Option<(&str, &str)>,
) -> Result<bool> {
    let (oid, upn) = user.unzip();
    let done = sqlx::query(
        "UPDATE oauth_grants SET status = ?, user_object_id = COALESCE(?, user_object_id), \
         upn = COALESCE(?, upn) WHERE id_sha256 = ? AND status = ?",
    )
    .bind(to)
    .bind(oid)
    .bind(upn)
    .bind(id_sha256)
    .bind(from)
    .execute(writer)
    .await
    .map_err(db_err("cannot change a sign-in grant"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn poll(
    writer: &SqlitePool,
    id_sha256: &str,
    previous: Option<Timestamp>,
    at: Timestamp,
    interval_secs: u32,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE oauth_grants SET last_poll = ?, poll_interval = ? \
         WHERE id_sha256 = ? AND last_poll IS ?",
    )
    .bind(at.ticks())
    .bind(i64::from(interval_secs))
    .bind(id_sha256)
    .bind(previous.map(Timestamp::ticks))
    .execute(writer)
    .await
    .map_err(db_err("cannot record a device code poll"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn revoke_family(writer: &SqlitePool, family: &str) -> Result<u64> {
    let done = sqlx::query("UPDATE oauth_grants SET status = ? WHERE family = ? AND status <> ?")
        .bind(status::REVOKED)
        .bind(family)
        .bind(status::REVOKED)
        .execute(writer)
        .await
        .map_err(db_err("cannot revoke a sign-in grant family"))?;
    Ok(done.rows_affected())
}

pub(super) async fn prune(writer: &SqlitePool, before: Timestamp) -> Result<u64> {
    let done = sqlx::query("DELETE FROM oauth_grants WHERE expires <= ?")
        .bind(before.ticks())
        .execute(writer)
        .await
        .map_err(db_err("cannot prune sign-in grants"))?;
    Ok(done.rows_affected())
}

pub(super) async fn upsert_client(writer: &SqlitePool, c: &ClientRegistration) -> Result<()> {
    sqlx::query(
        "INSERT INTO oauth_clients (tenant_id, client_id, public, redirect_uris) \
         VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, client_id) \
         DO UPDATE SET public = excluded.public, redirect_uris = excluded.redirect_uris",
    )
    .bind(&c.tenant_id)
    .bind(&c.client_id)
    .bind(c.public)
    .bind(to_json(&c.redirect_uris)?)
    .execute(writer)
    .await
    .map_err(db_err("cannot store a client registration"))?;
    Ok(())
}

pub(super) async fn client(
    reader: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Option<ClientRegistration>> {
    let row = sqlx::query(
        "SELECT tenant_id, client_id, public, redirect_uris FROM oauth_clients \
         WHERE tenant_id = ? AND client_id = ?",
    )
    .bind(tenant_id)
    .bind(client_id)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a client registration"))?;
    row.as_ref().map(grant_rows::client).transpose()
}
