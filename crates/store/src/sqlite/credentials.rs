//! Tenants, application registrations and their secrets, users and enrolment secrets,
//! and their lifecycle (each change audited in its own transaction).

use appfence_core::audit::{
    APP_DELETED, APP_DISABLED, APP_ENABLED, APP_SECRET_REMOVED, ENROLL_SECRET_REVOKED,
    PASSWORD_GRANT_DISABLED, PASSWORD_GRANT_ENABLED, USER_DELETED, USER_DISABLED, USER_ENABLED,
    USER_GROUPS_CHANGED, USER_PASSWORD_CHANGED,
};
use appfence_core::records::{AppRegistration, AppSecret, EnrollSecret, Tenant, UserRecord};
use appfence_core::{Error, Result};
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};

use super::{audit_log, commit, db_err, rows, write_tx};

pub(super) async fn ensure_tenant(writer: &SqlitePool, tenant: &Tenant) -> Result<()> {
    // New tenants refuse the password grant until it is turned on.
    sqlx::query(
        "INSERT INTO tenants (id, name, password_grant) VALUES (?, ?, 0) \
         ON CONFLICT (id) DO NOTHING",
    )
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

pub(super) async fn password_grant(reader: &SqlitePool, tenant_id: &str) -> Result<Option<bool>> {
    let row: Option<(bool,)> = sqlx::query_as("SELECT password_grant FROM tenants WHERE id = ?")
        .bind(tenant_id)
        .fetch_optional(reader)
        .await
        .map_err(db_err("cannot read a tenant"))?;
    Ok(row.map(|(on,)| on))
}

pub(super) async fn set_password_grant(
    writer: &SqlitePool,
    tenant_id: &str,
    allowed: bool,
    actor: &str,
    at: Timestamp,
) -> Result<Option<bool>> {
    let mut tx = write_tx(writer).await?;
    let exists: Option<(bool,)> = sqlx::query_as("SELECT password_grant FROM tenants WHERE id = ?")
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("cannot read a tenant"))?;
    let Some((before,)) = exists else {
        return Ok(None);
    };
    if before != allowed {
        sqlx::query("UPDATE tenants SET password_grant = ? WHERE id = ?")
            .bind(allowed)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot change a tenant"))?;
        let kind = if allowed {
            PASSWORD_GRANT_ENABLED
        } else {
            PASSWORD_GRANT_DISABLED
        };
        let event = crate::lifecycle::event(tenant_id, kind, tenant_id, actor, at, None);
        audit_log::append(&mut tx, &event).await?;
    }
    commit(tx).await?;
    Ok(Some(allowed))
}

const APP_COLUMNS: &str = "tenant_id, client_id, display_name, roles, created, disabled";
const SECRET_COLUMNS: &str = "id, tenant_id, client_id, secret_hash, hint, created, expires";
const USER_COLUMNS: &str = "tenant_id, object_id, upn, password_hash, groups, created, disabled";
const ENROLL_COLUMNS: &str =
    "id, secret_sha256, tenant_id, created, expires, max_uses, uses, revoked";

pub(super) async fn insert_app(
    writer: &SqlitePool,
    app: &AppRegistration,
    secret: Option<&AppSecret>,
) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    sqlx::query(&format!(
        "INSERT INTO apps ({APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .bind(&app.tenant_id)
    .bind(&app.client_id)
    .bind(&app.display_name)
    .bind(rows::to_json(&app.roles)?)
    .bind(app.created.ticks())
    .bind(app.disabled.map(|t| t.ticks()))
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot insert an application registration"))?;
    if let Some(secret) = secret {
        insert_secret(&mut tx, secret).await?;
    }
    commit(tx).await
}

async fn insert_secret(tx: &mut Transaction<'static, Sqlite>, secret: &AppSecret) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO app_secrets ({SECRET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&secret.id)
    .bind(&secret.tenant_id)
    .bind(&secret.client_id)
    .bind(&secret.secret_hash)
    .bind(&secret.hint)
    .bind(secret.created.ticks())
    .bind(secret.expires.map(|t| t.ticks()))
    .execute(&mut **tx)
    .await
    .map_err(db_err("cannot insert an application secret"))?;
    Ok(())
}

pub(super) async fn app(
    reader: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Option<AppRegistration>> {
    let row = sqlx::query(&format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = ? AND client_id = ?"
    ))
    .bind(tenant_id)
    .bind(client_id)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read an application registration"))?;
    row.as_ref().map(crate::rows::app).transpose()
}

pub(super) async fn apps(reader: &SqlitePool, tenant_id: &str) -> Result<Vec<AppRegistration>> {
    let found = sqlx::query(&format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = ? ORDER BY display_name, client_id"
    ))
    .bind(tenant_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot list application registrations"))?;
    found.iter().map(crate::rows::app).collect()
}

pub(super) async fn app_secrets(
    reader: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Vec<AppSecret>> {
    let found = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM app_secrets WHERE tenant_id = ? AND client_id = ? \
         ORDER BY created, id"
    ))
    .bind(tenant_id)
    .bind(client_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot read an application's secrets"))?;
    found.iter().map(crate::rows::app_secret).collect()
}

/// Whether the tenant has this application, inside a write transaction.
async fn app_exists(
    tx: &mut Transaction<'static, Sqlite>,
    tenant_id: &str,
    client_id: &str,
) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM apps WHERE tenant_id = ? AND client_id = ?")
            .bind(tenant_id)
            .bind(client_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err("cannot read an application registration"))?;
    Ok(found.is_some())
}

pub(super) async fn add_app_secret(
    writer: &SqlitePool,
    secret: &AppSecret,
    max: usize,
    actor: &str,
) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    if !app_exists(&mut tx, &secret.tenant_id, &secret.client_id).await? {
        return Err(crate::lifecycle::no_such_app(&secret.client_id));
    }
    let held: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM app_secrets WHERE tenant_id = ? AND client_id = ?",
    )
    .bind(&secret.tenant_id)
    .bind(&secret.client_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err("cannot count an application's secrets"))?;
    crate::lifecycle::check_secret_count(held, max)?;
    insert_secret(&mut tx, secret).await?;
    audit_log::append(&mut tx, &crate::lifecycle::secret_added(secret, actor)).await?;
    commit(tx).await
}

pub(super) async fn remove_app_secret(
    writer: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
    secret_id: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    let done =
        sqlx::query("DELETE FROM app_secrets WHERE tenant_id = ? AND client_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(client_id)
            .bind(secret_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("cannot remove an application secret"))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let event = crate::lifecycle::event(
        tenant_id,
        APP_SECRET_REMOVED,
        client_id,
        actor,
        at,
        Some(format!("secret {secret_id}")),
    );
    audit_log::append(&mut tx, &event).await?;
    commit(tx).await?;
    Ok(true)
}

pub(super) async fn set_app_disabled(
    writer: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
    disabled: bool,
    actor: &str,
    at: Timestamp,
) -> Result<Option<AppRegistration>> {
    let mut tx = write_tx(writer).await?;
    let changed = sqlx::query(
        "UPDATE apps SET disabled = ? WHERE tenant_id = ? AND client_id = ? \
         AND (disabled IS NULL) = ?",
    )
    .bind(disabled.then_some(at.ticks()))
    .bind(tenant_id)
    .bind(client_id)
    .bind(disabled)
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot disable or enable an application"))?
    .rows_affected()
        == 1;
    let row = sqlx::query(&format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = ? AND client_id = ?"
    ))
    .bind(tenant_id)
    .bind(client_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err("cannot read an application registration"))?;
    let app = row.as_ref().map(crate::rows::app).transpose()?;
    if changed {
        let event = crate::lifecycle::event(
            tenant_id,
            if disabled { APP_DISABLED } else { APP_ENABLED },
            client_id,
            actor,
            at,
            None,
        );
        audit_log::append(&mut tx, &event).await?;
    }
    commit(tx).await?;
    Ok(app)
}

pub(super) async fn delete_app(
    writer: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    sqlx::query("DELETE FROM app_secrets WHERE tenant_id = ? AND client_id = ?")
        .bind(tenant_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot delete an application's secrets"))?;
    let done = sqlx::query("DELETE FROM apps WHERE tenant_id = ? AND client_id = ?")
        .bind(tenant_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot delete an application registration"))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let event = crate::lifecycle::event(tenant_id, APP_DELETED, client_id, actor, at, None);
    audit_log::append(&mut tx, &event).await?;
    commit(tx).await?;
    Ok(true)
}

pub(super) async fn insert_enroll_secret(writer: &SqlitePool, secret: &EnrollSecret) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO enroll_secrets ({ENROLL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&secret.id)
    .bind(&secret.secret_sha256)
    .bind(&secret.tenant_id)
    .bind(secret.created.ticks())
    .bind(secret.expires.map(|t| t.ticks()))
    .bind(secret.max_uses.map(i64::from))
    .bind(i64::from(secret.uses))
    .bind(secret.revoked.map(|t| t.ticks()))
    .execute(writer)
    .await
    .map_err(db_err("cannot insert an enrolment secret"))?;
    Ok(())
}

pub(super) async fn enroll_secret(
    reader: &SqlitePool,
    secret_sha256: &str,
) -> Result<Option<EnrollSecret>> {
    let row = sqlx::query(&format!(
        "SELECT {ENROLL_COLUMNS} FROM enroll_secrets WHERE secret_sha256 = ?"
    ))
    .bind(secret_sha256)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read an enrolment secret"))?;
    row.as_ref().map(crate::rows::enroll_secret).transpose()
}

pub(super) async fn enroll_secrets(
    reader: &SqlitePool,
    tenant_id: &str,
) -> Result<Vec<EnrollSecret>> {
    let found = sqlx::query(&format!(
        "SELECT {ENROLL_COLUMNS} FROM enroll_secrets WHERE tenant_id = ? ORDER BY created, id"
    ))
    .bind(tenant_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot list enrolment secrets"))?;
    found.iter().map(crate::rows::enroll_secret).collect()
}

pub(super) async fn revoke_enroll_secret(
    writer: &SqlitePool,
    tenant_id: &str,
    id: &str,
    actor: &str,
    at: Timestamp,
) -> Result<Option<EnrollSecret>> {
    let mut tx = write_tx(writer).await?;
    let changed = sqlx::query(
        "UPDATE enroll_secrets SET revoked = ? WHERE tenant_id = ? AND id = ? AND revoked IS NULL",
    )
    .bind(at.ticks())
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot revoke an enrolment secret"))?
    .rows_affected()
        == 1;
    let row = sqlx::query(&format!(
        "SELECT {ENROLL_COLUMNS} FROM enroll_secrets WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err("cannot read an enrolment secret"))?;
    let secret = row.as_ref().map(crate::rows::enroll_secret).transpose()?;
    if changed {
        let event = crate::lifecycle::event(tenant_id, ENROLL_SECRET_REVOKED, id, actor, at, None);
        audit_log::append(&mut tx, &event).await?;
    }
    commit(tx).await?;
    Ok(secret)
}

pub(super) async fn claim_enroll_secret_use(
    writer: &SqlitePool,
    id: &str,
    now: Timestamp,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE enroll_secrets SET uses = uses + 1 WHERE id = ? AND revoked IS NULL \
         AND (expires IS NULL OR expires > ?) AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(id)
    .bind(now.ticks())
    .execute(writer)
    .await
    .map_err(db_err("cannot count a use of an enrolment secret"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn release_enroll_secret_use(writer: &SqlitePool, id: &str) -> Result<()> {
    sqlx::query("UPDATE enroll_secrets SET uses = uses - 1 WHERE id = ? AND uses > 0")
        .bind(id)
        .execute(writer)
        .await
        .map_err(db_err("cannot give back a use of an enrolment secret"))?;
    Ok(())
}

pub(super) async fn replace_app_secret_hash(
    writer: &SqlitePool,
    tenant_id: &str,
    client_id: &str,
    expected: &str,
    new_hash: &str,
) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE app_secrets SET secret_hash = ? \
         WHERE tenant_id = ? AND client_id = ? AND secret_hash = ?",
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
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&user.tenant_id)
    .bind(&user.object_id)
    .bind(&upn)
    .bind(&user.password_hash)
    .bind(rows::to_json(&user.groups)?)
    .bind(user.created.ticks())
    .bind(user.disabled.map(|t| t.ticks()))
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
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND upn = ?"
    ))
    .bind(tenant_id)
    .bind(upn.to_lowercase())
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a user"))?;
    row.as_ref().map(rows::user).transpose()
}

pub(super) async fn user_by_object_id(
    reader: &SqlitePool,
    tenant_id: &str,
    object_id: &str,
) -> Result<Option<UserRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND object_id = ?"
    ))
    .bind(tenant_id)
    .bind(object_id)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a user"))?;
    row.as_ref().map(rows::user).transpose()
}

pub(super) async fn users(reader: &SqlitePool, tenant_id: &str) -> Result<Vec<UserRecord>> {
    let found = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? ORDER BY upn"
    ))
    .bind(tenant_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot list users"))?;
    found.iter().map(rows::user).collect()
}

async fn user_in_tx(
    tx: &mut Transaction<'static, Sqlite>,
    tenant_id: &str,
    upn: &str,
) -> Result<Option<UserRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND upn = ?"
    ))
    .bind(tenant_id)
    .bind(upn.to_lowercase())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err("cannot read a user"))?;
    row.as_ref().map(rows::user).transpose()
}

async fn end_sessions(
    tx: &mut Transaction<'static, Sqlite>,
    tenant_id: &str,
    object_id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE tenant_id = ? AND user_object_id = ?")
        .bind(tenant_id)
        .bind(object_id)
        .execute(&mut **tx)
        .await
        .map_err(db_err("cannot delete a user's console sessions"))?;
    Ok(())
}

pub(super) async fn set_user_disabled(
    writer: &SqlitePool,
    tenant_id: &str,
    upn: &str,
    disabled: bool,
    actor: &str,
    at: Timestamp,
) -> Result<Option<UserRecord>> {
    let mut tx = write_tx(writer).await?;
    let Some(before) = user_in_tx(&mut tx, tenant_id, upn).await? else {
        return Ok(None);
    };
    if before.disabled.is_some() == disabled {
        return Ok(Some(before));
    }
    sqlx::query("UPDATE users SET disabled = ? WHERE tenant_id = ? AND object_id = ?")
        .bind(disabled.then_some(at.ticks()))
        .bind(tenant_id)
        .bind(&before.object_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot disable or enable a user"))?;
    if disabled {
        end_sessions(&mut tx, tenant_id, &before.object_id).await?;
    }
    let event = crate::lifecycle::user_event(
        &before,
        if disabled {
            USER_DISABLED
        } else {
            USER_ENABLED
        },
        actor,
        at,
        None,
    );
    audit_log::append(&mut tx, &event).await?;
    commit(tx).await?;
    Ok(Some(UserRecord {
        disabled: disabled.then_some(at),
        ..before
    }))
}

pub(super) async fn delete_user(
    writer: &SqlitePool,
    tenant_id: &str,
    upn: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    let Some(user) = user_in_tx(&mut tx, tenant_id, upn).await? else {
        return Ok(false);
    };
    sqlx::query("DELETE FROM users WHERE tenant_id = ? AND object_id = ?")
        .bind(tenant_id)
        .bind(&user.object_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot delete a user"))?;
    end_sessions(&mut tx, tenant_id, &user.object_id).await?;
    let event = crate::lifecycle::user_event(&user, USER_DELETED, actor, at, None);
    audit_log::append(&mut tx, &event).await?;
    commit(tx).await?;
    Ok(true)
}

pub(super) async fn set_user_password(
    writer: &SqlitePool,
    tenant_id: &str,
    upn: &str,
    password_hash: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    let mut tx = write_tx(writer).await?;
    let Some(user) = user_in_tx(&mut tx, tenant_id, upn).await? else {
        return Ok(false);
    };
    sqlx::query("UPDATE users SET password_hash = ? WHERE tenant_id = ? AND object_id = ?")
        .bind(password_hash)
        .bind(tenant_id)
        .bind(&user.object_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot change a user's password"))?;
    end_sessions(&mut tx, tenant_id, &user.object_id).await?;
    let event = crate::lifecycle::user_event(&user, USER_PASSWORD_CHANGED, actor, at, None);
    audit_log::append(&mut tx, &event).await?;
    commit(tx).await?;
    Ok(true)
}

pub(super) async fn set_user_groups(
    writer: &SqlitePool,
    tenant_id: &str,
    upn: &str,
    groups: &[String],
    actor: &str,
    at: Timestamp,
) -> Result<Option<UserRecord>> {
    let mut tx = write_tx(writer).await?;
    let Some(user) = user_in_tx(&mut tx, tenant_id, upn).await? else {
        return Ok(None);
    };
    sqlx::query("UPDATE users SET groups = ? WHERE tenant_id = ? AND object_id = ?")
        .bind(rows::to_json(&groups)?)
        .bind(tenant_id)
        .bind(&user.object_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot change a user's groups"))?;
    end_sessions(&mut tx, tenant_id, &user.object_id).await?;
    let event = crate::lifecycle::user_event(
        &user,
        USER_GROUPS_CHANGED,
        actor,
        at,
        Some(crate::lifecycle::groups_change(&user.groups, groups)),
    );
    audit_log::append(&mut tx, &event).await?;
    commit(tx).await?;
    Ok(Some(UserRecord {
        groups: groups.to_vec(),
        ..user
    }))
}
