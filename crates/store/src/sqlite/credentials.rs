//! Tenants, application registrations, users and enrolment secrets.

use appfence_core::records::{AppRegistration, EnrollSecret, Tenant, UserRecord};
use appfence_core::{Error, Result};
use sqlx::sqlite::SqlitePool;

use super::{db_err, rows};

pub(super) async fn ensure_tenant(writer: &SqlitePool, tenant: &Tenant) -> Result<()> {
    sqlx::query("INSERT INTO tenants (id, name) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .execute(writer)
        .await
        .map_err(db_err("cannot insert a tenant"))?;
    Ok(())
}

pub(super) async fn tenants(reader: &SqlitePool) -> Result<Vec<Tenant>> {
    let rows = sqlx::query("SELECT id, name FROM tenants ORDER BY name, id")
        .fetch_all(reader)
        .await
        .map_err(db_err("cannot list tenants"))?;
    rows.iter().map(crate::rows::tenant).collect()
}

pub(super) async fn tenant(reader: &SqlitePool, id: &str) -> Result<Option<Tenant>> {
    let row = sqlx::query("SELECT id, name FROM tenants WHERE id = ?")
        .bind(id)
        .fetch_optional(reader)
        .await
        .map_err(db_err("cannot read a tenant"))?;
    row.as_ref().map(crate::rows::tenant).transpose()
}

pub(super) async fn insert_app(writer: &SqlitePool, app: &AppRegistration) -> Result<()> {
    sqlx::query(
        "INSERT INTO apps (tenant_id, client_id, display_name, secret_hash, roles, created) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&app.tenant_id)
    .bind(&app.client_id)
    .bind(&app.display_name)
    .bind(&app.secret_hash)
    .bind(rows::to_json(&app.roles)?)
    .bind(app.created.ticks())
    .execute(writer)
    .await
    .map_err(db_err("cannot insert an application registration"))?;
    Ok(())
}

pub(super) async fn app(
    reader: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Option<AppRegistration>> {
    let row = sqlx::query(
        "SELECT tenant_id, client_id, display_name, secret_hash, roles, created \
         FROM apps WHERE tenant_id = ? AND client_id = ?",
    )
    .bind(tenant_id)
    .bind(client_id)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read an application registration"))?;
    row.as_ref().map(crate::rows::app).transpose()
}

pub(super) async fn insert_enroll_secret(writer: &SqlitePool, secret: &EnrollSecret) -> Result<()> {
    sqlx::query("INSERT INTO enroll_secrets (secret_sha256, tenant_id, created) VALUES (?, ?, ?)")
        .bind(&secret.secret_sha256)
        .bind(&secret.tenant_id)
        .bind(secret.created.ticks())
        .execute(writer)
        .await
        .map_err(db_err("cannot insert an enrolment secret"))?;
    Ok(())
}

pub(super) async fn enroll_secret(
    reader: &SqlitePool,
    secret_sha256: &str,
) -> Result<Option<EnrollSecret>> {
    let row = sqlx::query(
        "SELECT secret_sha256, tenant_id, created FROM enroll_secrets WHERE secret_sha256 = ?",
    )
    .bind(secret_sha256)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read an enrolment secret"))?;
    row.as_ref().map(crate::rows::enroll_secret).transpose()
}

pub(super) async fn replace_app_secret_hash(
    writer: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
    expected: &str,
    new_hash: &str,
) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE apps SET secret_hash = ? WHERE tenant_id = ? AND client_id = ? AND secret_hash = ?",
    )
    .bind(new_hash)
    .bind(tenant_id)
    .bind(client_id)
    .bind(expected)
    .execute(writer)
    .await
    .map_err(db_err("cannot replace an application's secret hash"))?
    .rows_affected();
    Ok(changed == 1)
}

/// The unique constraint on a UPN within a tenant, as SQLite names it.
const UPN_IN_TENANT: &str = "users.tenant_id, users.upn";

pub(super) async fn insert_user(writer: &SqlitePool, user: &UserRecord) -> Result<()> {
    let upn = user.upn.to_lowercase();
    sqlx::query(
        "INSERT INTO users (tenant_id, object_id, upn, password_hash, groups, created) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&user.tenant_id)
    .bind(&user.object_id)
    .bind(&upn)
    .bind(&user.password_hash)
    .bind(rows::to_json(&user.groups)?)
    .bind(user.created.ticks())
    .execute(writer)
    .await
    .map_err(|e| {
        if super::violates_unique(&e, UPN_IN_TENANT) {
            Error::BadRequest(format!(
                "A user named '{upn}' already exists in this tenant"
            ))
        } else {
            db_err("cannot insert a user")(e)
        }
    })?;
    Ok(())
}

pub(super) async fn user(
    reader: &SqlitePool,
    tenant_id: &str,
    upn: &str,
) -> Result<Option<UserRecord>> {
    let row = sqlx::query(
        "SELECT tenant_id, object_id, upn, password_hash, groups, created \
         FROM users WHERE tenant_id = ? AND upn = ?",
    )
    .bind(tenant_id)
    .bind(upn.to_lowercase())
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a user"))?;
    row.as_ref().map(rows::user).transpose()
}
