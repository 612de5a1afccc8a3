//! Authorization codes, device codes, refresh tokens and client registrations, shared
//! by every replica. Every change of status is one conditional statement, so one use
//! wins across replicas.

use appfence_core::grants::{status, ClientRegistration, OAuthGrant};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;

use super::{ctx, read, retry};
use crate::grant_rows::{self, GRANT_COLUMNS};
use crate::rows::to_json;

pub(super) async fn insert(pool: &PgPool, g: &OAuthGrant) -> Result<()> {
    retry(|| async {
        sqlx::query(&format!(
            "INSERT INTO oauth_grants ({GRANT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
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
        .execute(pool)
        .await
        .map_err(ctx("cannot insert a sign-in grant"))?;
        Ok(())
    })
    .await
}

pub(super) async fn get(
    pool: &PgPool,
    column: &'static str,
    value: &str,
) -> Result<Option<OAuthGrant>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants WHERE {column} = $1"
        ))
        .bind(value)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a sign-in grant"))?;
        Ok(row.as_ref().map(grant_rows::grant).transpose()?)
    })
    .await
}

pub(super) async fn set_status(
    pool: &PgPool,
    id_sha256: &str,
    from: &str,
    to: &str,
    user: Option<(&str, &str)>,
) -> Result<bool> {
    let (oid, upn) = user.unzip();
    retry(|| async {
        let done = sqlx::query(
            "UPDATE oauth_grants SET status = $1, user_object_id = COALESCE($2, user_object_id), \
             upn = COALESCE($3, upn) WHERE id_sha256 = $4 AND status = $5",
        )
        .bind(to)
        .bind(oid)
        .bind(upn)
        .bind(id_sha256)
        .bind(from)
        .execute(pool)
        .await
        .map_err(ctx("cannot change a sign-in grant"))?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub(super) async fn poll(
    pool: &PgPool,
    id_sha256: &str,
    previous: Option<Timestamp>,
    at: Timestamp,
    interval_secs: u32,
) -> Result<bool> {
    retry(|| async {
        let done = sqlx::query(
            "UPDATE oauth_grants SET last_poll = $1, poll_interval = $4 \
             WHERE id_sha256 = $2 AND last_poll IS NOT DISTINCT FROM $3",
        )
        .bind(at.ticks())
        .bind(id_sha256)
        .bind(previous.map(Timestamp::ticks))
        .bind(i64::from(interval_secs))
        .execute(pool)
        .await
        .map_err(ctx("cannot record a device code poll"))?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub(super) async fn revoke_family(pool: &PgPool, family: &str) -> Result<u64> {
    retry(|| async {
        let done =
            sqlx::query("UPDATE oauth_grants SET status = $1 WHERE family = $2 AND status <> $1")
                .bind(status::REVOKED)
                .bind(family)
                .execute(pool)
                .await
                .map_err(ctx("cannot revoke a sign-in grant family"))?;
        Ok(done.rows_affected())
    })
    .await
}

pub(super) async fn prune(pool: &PgPool, before: Timestamp) -> Result<u64> {
    retry(|| async {
        let done = sqlx::query("DELETE FROM oauth_grants WHERE expires <= $1")
            .bind(before.ticks())
            .execute(pool)
            .await
            .map_err(ctx("cannot prune sign-in grants"))?;
        Ok(done.rows_affected())
    })
    .await
}

pub(super) async fn upsert_client(pool: &PgPool, c: &ClientRegistration) -> Result<()> {
    let uris = to_json(&c.redirect_uris)?;
    retry(|| async {
        sqlx::query(
            "INSERT INTO oauth_clients (tenant_id, client_id, public, redirect_uris) \
             VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (tenant_id, client_id) \
             DO UPDATE SET public = excluded.public, redirect_uris = excluded.redirect_uris",
        )
        .bind(&c.tenant_id)
        .bind(&c.client_id)
        .bind(c.public)
        .bind(&uris)
        .execute(pool)
        .await
        .map_err(ctx("cannot store a client registration"))?;
        Ok(())
    })
    .await
}

pub(super) async fn client(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Option<ClientRegistration>> {
    read(async {
        let row = sqlx::query(
            "SELECT tenant_id, client_id, public, redirect_uris::text AS redirect_uris \
             FROM oauth_clients WHERE tenant_id = $1 AND client_id = $2",
        )
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a client registration"))?;
        Ok(row.as_ref().map(grant_rows::client).transpose()?)
    })
    .await
}
