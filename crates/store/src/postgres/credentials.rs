//! Tenants, application registrations, users and enrolment secrets.

use appfence_core::records::{AppRegistration, EnrollSecret, Tenant, UserRecord};
use appfence_core::{Error, Result};
use sqlx::postgres::PgPool;

use super::{ctx, read, retry, violates, Fail, PgResult};
use crate::rows::{self, to_json};

const APP_COLUMNS: &str =
    "tenant_id, client_id, display_name, secret_hash, roles::text AS roles, created";
const USER_COLUMNS: &str =
    "tenant_id, object_id, upn, password_hash, groups::text AS groups, created";

pub(super) async fn ensure_tenant(pool: &PgPool, tenant: &Tenant) -> Result<()> {
    retry(|| async {
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .execute(pool)
            .await
            .map_err(ctx("cannot insert a tenant"))?;
        Ok(())
    })
    .await
}

pub(super) async fn tenants(pool: &PgPool) -> Result<Vec<Tenant>> {
    read(async {
        let found = sqlx::query("SELECT id, name FROM tenants ORDER BY name, id")
            .fetch_all(pool)
            .await
            .map_err(ctx("cannot list tenants"))?;
        Ok(found.iter().map(rows::tenant).collect::<Result<Vec<_>>>()?)
    })
    .await
}

pub(super) async fn tenant(pool: &PgPool, id: &str) -> Result<Option<Tenant>> {
    read(async {
        let row = sqlx::query("SELECT id, name FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(ctx("cannot read a tenant"))?;
        Ok(row.as_ref().map(rows::tenant).transpose()?)
    })
    .await
}

pub(super) async fn insert_app(pool: &PgPool, app: &AppRegistration) -> Result<()> {
    let roles = to_json(&app.roles)?;
    retry(|| async {
        sqlx::query(
            "INSERT INTO apps (tenant_id, client_id, display_name, secret_hash, roles, created) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        )
        .bind(&app.tenant_id)
        .bind(&app.client_id)
        .bind(&app.display_name)
        .bind(&app.secret_hash)
        .bind(&roles)
        .bind(app.created.ticks())
        .execute(pool)
        .await
        .map_err(ctx("cannot insert an application registration"))?;
        Ok(())
    })
    .await
}

pub(super) async fn app(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Option<AppRegistration>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND client_id = $2"
        ))
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read an application registration"))?;
        Ok(row.as_ref().map(rows::app).transpose()?)
    })
    .await
}

pub(super) async fn replace_app_secret_hash(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
    expected: &str,
    new_hash: &str,
) -> Result<bool> {
    retry(|| async {
        let done = sqlx::query(
            "UPDATE apps SET secret_hash = $1 \
             WHERE tenant_id = $2 AND client_id = $3 AND secret_hash = $4",
        )
        .bind(new_hash)
        .bind(tenant_id)
        .bind(client_id)
        .bind(expected)
        .execute(pool)
        .await
        .map_err(ctx("cannot replace an application's secret hash"))?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub(super) async fn insert_enroll_secret(pool: &PgPool, secret: &EnrollSecret) -> Result<()> {
    retry(|| async {
        sqlx::query(
            "INSERT INTO enroll_secrets (secret_sha256, tenant_id, created) VALUES ($1, $2, $3)",
        )
        .bind(&secret.secret_sha256)
        .bind(&secret.tenant_id)
        .bind(secret.created.ticks())
        .execute(pool)
        .await
        .map_err(ctx("cannot insert an enrolment secret"))?;
        Ok(())
    })
    .await
}

pub(super) async fn enroll_secret(
    pool: &PgPool,
    secret_sha256: &str,
) -> Result<Option<EnrollSecret>> {
    read(async {
        let row = sqlx::query(
            "SELECT secret_sha256, tenant_id, created FROM enroll_secrets WHERE secret_sha256 = $1",
        )
        .bind(secret_sha256)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read an enrolment secret"))?;
        Ok(row.as_ref().map(rows::enroll_secret).transpose()?)
    })
    .await
}

pub(super) async fn insert_user(pool: &PgPool, user: &UserRecord) -> Result<()> {
    let upn = user.upn.to_lowercase();
    let groups = to_json(&user.groups)?;
    retry(|| async {
        let inserted = sqlx::query(
            "INSERT INTO users (tenant_id, object_id, upn, password_hash, groups, created) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        )
        .bind(&user.tenant_id)
        .bind(&user.object_id)
        .bind(&upn)
        .bind(&user.password_hash)
        .bind(&groups)
        .bind(user.created.ticks())
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if violates(&e, "users_pkey") => Err(Fail::App(Error::BadRequest(format!(
                "A user named '{upn}' already exists in this tenant"
            )))),
            Err(e) => Err(ctx("cannot insert a user")(e)),
        }
    })
    .await
}

pub(super) async fn user(pool: &PgPool, tenant_id: &str, upn: &str) -> Result<Option<UserRecord>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND upn = $2"
        ))
        .bind(tenant_id)
        .bind(upn.to_lowercase())
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a user"))?;
        let user: PgResult<_> = row.as_ref().map(rows::user).transpose().map_err(Fail::App);
        user
    })
    .await
}
