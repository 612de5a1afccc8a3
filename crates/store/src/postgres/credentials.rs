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
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::{audit_log, begin, commit, ctx, read, retry, violates, Fail, PgResult};
use crate::lifecycle;
use crate::rows::{self, to_json};

const APP_COLUMNS: &str =
    "tenant_id, client_id, display_name, roles::text AS roles, created, disabled";
const SECRET_COLUMNS: &str = "id, tenant_id, client_id, secret_hash, hint, created, expires";
const USER_COLUMNS: &str =
    "tenant_id, object_id, upn, password_hash, groups::text AS groups, created, disabled";
const ENROLL_COLUMNS: &str =
    "id, secret_sha256, tenant_id, created, expires, max_uses, uses, revoked";

pub(super) async fn ensure_tenant(pool: &PgPool, tenant: &Tenant) -> Result<()> {
    retry(|| async {
        // New tenants refuse the password grant until it is turned on.
        sqlx::query(
            "INSERT INTO tenants (id, name, password_grant) VALUES ($1, $2, FALSE) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .execute(pool)
        .await
        .map_err(ctx("cannot insert a tenant"))?;
        Ok(())
    })
    .await
}

pub(super) async fn password_grant(pool: &PgPool, tenant_id: &str) -> Result<Option<bool>> {
    read(async {
        let row: Option<(bool,)> =
            sqlx::query_as("SELECT password_grant FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_optional(pool)
                .await
                .map_err(ctx("cannot read a tenant"))?;
        Ok(row.map(|(on,)| on))
    })
    .await
}

pub(super) async fn set_password_grant(
    pool: &PgPool,
    tenant_id: &str,
    allowed: bool,
    actor: &str,
    at: Timestamp,
) -> Result<Option<bool>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let exists: Option<(bool,)> =
            sqlx::query_as("SELECT password_grant FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ctx("cannot read a tenant"))?;
        let Some((before,)) = exists else {
            return Ok(None);
        };
        if before != allowed {
            sqlx::query("UPDATE tenants SET password_grant = $1 WHERE id = $2")
                .bind(allowed)
                .bind(tenant_id)
                .execute(&mut *tx)
                .await
                .map_err(ctx("cannot change a tenant"))?;
            let kind = if allowed {
                PASSWORD_GRANT_ENABLED
            } else {
                PASSWORD_GRANT_DISABLED
            };
            let event = lifecycle::event(tenant_id, kind, tenant_id, actor, at, None);
            audit_log::append(&mut tx, &event).await?;
        }
        commit(tx).await?;
        Ok(Some(allowed))
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

pub(super) async fn insert_app(
    pool: &PgPool,
    app: &AppRegistration,
    secret: Option<&AppSecret>,
) -> Result<()> {
    let roles = to_json(&app.roles)?;
    retry(|| async {
        let mut tx = begin(pool).await?;
        sqlx::query(
            "INSERT INTO apps (tenant_id, client_id, display_name, roles, created, disabled) \
             VALUES ($1, $2, $3, $4::jsonb, $5, $6)",
        )
        .bind(&app.tenant_id)
        .bind(&app.client_id)
        .bind(&app.display_name)
        .bind(&roles)
        .bind(app.created.ticks())
        .bind(app.disabled.map(|t| t.ticks()))
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot insert an application registration"))?;
        if let Some(secret) = secret {
            insert_secret(&mut tx, secret).await?;
        }
        commit(tx).await
    })
    .await
}

async fn insert_secret(
    tx: &mut Transaction<'static, Postgres>,
    secret: &AppSecret,
) -> PgResult<()> {
    sqlx::query(&format!(
        "INSERT INTO app_secrets ({SECRET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
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
    .map_err(ctx("cannot insert an application secret"))?;
    Ok(())
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

pub(super) async fn apps(pool: &PgPool, tenant_id: &str) -> Result<Vec<AppRegistration>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 \
             ORDER BY display_name COLLATE \"C\", client_id COLLATE \"C\""
        ))
        .bind(tenant_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot list application registrations"))?;
        Ok(found.iter().map(rows::app).collect::<Result<Vec<_>>>()?)
    })
    .await
}

pub(super) async fn app_secrets(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
) -> Result<Vec<AppSecret>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {SECRET_COLUMNS} FROM app_secrets WHERE tenant_id = $1 AND client_id = $2 \
             ORDER BY created, id COLLATE \"C\""
        ))
        .bind(tenant_id)
        .bind(client_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot read an application's secrets"))?;
        Ok(found
            .iter()
            .map(rows::app_secret)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}

/// Locks the application's row for the transaction; false if there is none.
async fn lock_app(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: &str,
    client_id: &str,
) -> PgResult<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM apps WHERE tenant_id = $1 AND client_id = $2 FOR UPDATE")
            .bind(tenant_id)
            .bind(client_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(ctx("cannot read an application registration"))?;
    Ok(found.is_some())
}

pub(super) async fn add_app_secret(
    pool: &PgPool,
    secret: &AppSecret,
    max: usize,
    actor: &str,
) -> Result<()> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        if !lock_app(&mut tx, &secret.tenant_id, &secret.client_id).await? {
            return Err(Fail::App(lifecycle::no_such_app(&secret.client_id)));
        }
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM app_secrets WHERE tenant_id = $1 AND client_id = $2",
        )
        .bind(&secret.tenant_id)
        .bind(&secret.client_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(ctx("cannot count an application's secrets"))?;
        lifecycle::check_secret_count(held, max)?;
        insert_secret(&mut tx, secret).await?;
        audit_log::append(&mut tx, &lifecycle::secret_added(secret, actor)).await?;
        commit(tx).await
    })
    .await
}

pub(super) async fn remove_app_secret(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
    secret_id: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let done = sqlx::query(
            "DELETE FROM app_secrets WHERE tenant_id = $1 AND client_id = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(client_id)
        .bind(secret_id)
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot remove an application secret"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let event = lifecycle::event(
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
    })
    .await
}

pub(super) async fn set_app_disabled(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
    disabled: bool,
    actor: &str,
    at: Timestamp,
) -> Result<Option<AppRegistration>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let changed = sqlx::query(
            "UPDATE apps SET disabled = $1 WHERE tenant_id = $2 AND client_id = $3 \
             AND (disabled IS NULL) = $4",
        )
        .bind(disabled.then_some(at.ticks()))
        .bind(tenant_id)
        .bind(client_id)
        .bind(disabled)
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot disable or enable an application"))?
        .rows_affected()
            == 1;
        let row = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND client_id = $2"
        ))
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read an application registration"))?;
        let app = row.as_ref().map(rows::app).transpose()?;
        if changed {
            let event = lifecycle::event(
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
    })
    .await
}

pub(super) async fn delete_app(
    pool: &PgPool,
    tenant_id: &str,
    client_id: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        sqlx::query("DELETE FROM app_secrets WHERE tenant_id = $1 AND client_id = $2")
            .bind(tenant_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot delete an application's secrets"))?;
        let done = sqlx::query("DELETE FROM apps WHERE tenant_id = $1 AND client_id = $2")
            .bind(tenant_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot delete an application registration"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let event = lifecycle::event(tenant_id, APP_DELETED, client_id, actor, at, None);
        audit_log::append(&mut tx, &event).await?;
        commit(tx).await?;
        Ok(true)
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
            "UPDATE app_secrets SET secret_hash = $1 \
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
        sqlx::query(&format!(
            "INSERT INTO enroll_secrets ({ENROLL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&secret.id)
        .bind(&secret.secret_sha256)
        .bind(&secret.tenant_id)
        .bind(secret.created.ticks())
        .bind(secret.expires.map(|t| t.ticks()))
        .bind(secret.max_uses.map(i64::from))
        .bind(i64::from(secret.uses))
        .bind(secret.revoked.map(|t| t.ticks()))
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
        let row = sqlx::query(&format!(
            "SELECT {ENROLL_COLUMNS} FROM enroll_secrets WHERE secret_sha256 = $1"
        ))
        .bind(secret_sha256)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read an enrolment secret"))?;
        Ok(row.as_ref().map(rows::enroll_secret).transpose()?)
    })
    .await
}

pub(super) async fn enroll_secrets(pool: &PgPool, tenant_id: &str) -> Result<Vec<EnrollSecret>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {ENROLL_COLUMNS} FROM enroll_secrets WHERE tenant_id = $1 \
             ORDER BY created, id COLLATE \"C\""
        ))
        .bind(tenant_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot list enrolment secrets"))?;
        Ok(found
            .iter()
            .map(rows::enroll_secret)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}

pub(super) async fn revoke_enroll_secret(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    actor: &str,
    at: Timestamp,
) -> Result<Option<EnrollSecret>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let changed = sqlx::query(
            "UPDATE enroll_secrets SET revoked = $1 \
             WHERE tenant_id = $2 AND id = $3 AND revoked IS NULL",
        )
        .bind(at.ticks())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot revoke an enrolment secret"))?
        .rows_affected()
            == 1;
        let row = sqlx::query(&format!(
            "SELECT {ENROLL_COLUMNS} FROM enroll_secrets WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read an enrolment secret"))?;
        let secret = row.as_ref().map(rows::enroll_secret).transpose()?;
        if changed {
            let event = lifecycle::event(tenant_id, ENROLL_SECRET_REVOKED, id, actor, at, None);
            audit_log::append(&mut tx, &event).await?;
        }
        commit(tx).await?;
        Ok(secret)
    })
    .await
}

pub(super) async fn claim_enroll_secret_use(
    pool: &PgPool,
    id: &str,
    now: Timestamp,
) -> Result<bool> {
    retry(|| async {
        let done = sqlx::query(
            "UPDATE enroll_secrets SET uses = uses + 1 WHERE id = $1 AND revoked IS NULL \
             AND (expires IS NULL OR expires > $2) AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(id)
        .bind(now.ticks())
        .execute(pool)
        .await
        .map_err(ctx("cannot count a use of an enrolment secret"))?;
        Ok(done.rows_affected() == 1)
    })
    .await
}

pub(super) async fn release_enroll_secret_use(pool: &PgPool, id: &str) -> Result<()> {
    retry(|| async {
        sqlx::query("UPDATE enroll_secrets SET uses = uses - 1 WHERE id = $1 AND uses > 0")
            .bind(id)
            .execute(pool)
            .await
            .map_err(ctx("cannot give back a use of an enrolment secret"))?;
        Ok(())
    })
    .await
}

pub(super) async fn insert_user(pool: &PgPool, user: &UserRecord) -> Result<()> {
    let upn = user.upn.to_lowercase();
    let groups = to_json(&user.groups)?;
    retry(|| async {
        let inserted = sqlx::query(
            "INSERT INTO users \
             (tenant_id, object_id, upn, password_hash, groups, created, disabled) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        )
        .bind(&user.tenant_id)
        .bind(&user.object_id)
        .bind(&upn)
        .bind(&user.password_hash)
        .bind(&groups)
        .bind(user.created.ticks())
        .bind(user.disabled.map(|t| t.ticks()))
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

pub(super) async fn user_by_object_id(
    pool: &PgPool,
    tenant_id: &str,
    object_id: &str,
) -> Result<Option<UserRecord>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND object_id = $2"
        ))
        .bind(tenant_id)
        .bind(object_id)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a user"))?;
        Ok(row.as_ref().map(rows::user).transpose()?)
    })
    .await
}

pub(super) async fn users(pool: &PgPool, tenant_id: &str) -> Result<Vec<UserRecord>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY upn COLLATE \"C\""
        ))
        .bind(tenant_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot list users"))?;
        Ok(found.iter().map(rows::user).collect::<Result<Vec<_>>>()?)
    })
    .await
}

/// The user, its row locked for the transaction.
async fn lock_user(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: &str,
    upn: &str,
) -> PgResult<Option<UserRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND upn = $2 FOR UPDATE"
    ))
    .bind(tenant_id)
    .bind(upn.to_lowercase())
    .fetch_optional(&mut **tx)
    .await
    .map_err(ctx("cannot read a user"))?;
    Ok(row.as_ref().map(rows::user).transpose()?)
}

async fn end_sessions(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: &str,
    object_id: &str,
) -> PgResult<()> {
    sqlx::query("DELETE FROM console_sessions WHERE tenant_id = $1 AND user_object_id = $2")
        .bind(tenant_id)
        .bind(object_id)
        .execute(&mut **tx)
        .await
        .map_err(ctx("cannot delete a user's console sessions"))?;
    Ok(())
}

pub(super) async fn set_user_disabled(
    pool: &PgPool,
    tenant_id: &str,
    upn: &str,
    disabled: bool,
    actor: &str,
    at: Timestamp,
) -> Result<Option<UserRecord>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let Some(before) = lock_user(&mut tx, tenant_id, upn).await? else {
            return Ok(None);
        };
        if before.disabled.is_some() == disabled {
            return Ok(Some(before));
        }
        sqlx::query("UPDATE users SET disabled = $1 WHERE tenant_id = $2 AND object_id = $3")
            .bind(disabled.then_some(at.ticks()))
            .bind(tenant_id)
            .bind(&before.object_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot disable or enable a user"))?;
        if disabled {
            end_sessions(&mut tx, tenant_id, &before.object_id).await?;
        }
        let event = lifecycle::user_event(
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
    })
    .await
}

pub(super) async fn delete_user(
    pool: &PgPool,
    tenant_id: &str,
    upn: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let Some(user) = lock_user(&mut tx, tenant_id, upn).await? else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND object_id = $2")
            .bind(tenant_id)
            .bind(&user.object_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot delete a user"))?;
        end_sessions(&mut tx, tenant_id, &user.object_id).await?;
        let event = lifecycle::user_event(&user, USER_DELETED, actor, at, None);
        audit_log::append(&mut tx, &event).await?;
        commit(tx).await?;
        Ok(true)
    })
    .await
}

pub(super) async fn set_user_password(
    pool: &PgPool,
    tenant_id: &str,
    upn: &str,
    password_hash: &str,
    actor: &str,
    at: Timestamp,
) -> Result<bool> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let Some(user) = lock_user(&mut tx, tenant_id, upn).await? else {
            return Ok(false);
        };
        sqlx::query("UPDATE users SET password_hash = $1 WHERE tenant_id = $2 AND object_id = $3")
            .bind(password_hash)
            .bind(tenant_id)
            .bind(&user.object_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot change a user's password"))?;
        end_sessions(&mut tx, tenant_id, &user.object_id).await?;
        let event = lifecycle::user_event(&user, USER_PASSWORD_CHANGED, actor, at, None);
        audit_log::append(&mut tx, &event).await?;
        commit(tx).await?;
        Ok(true)
    })
    .await
}

pub(super) async fn set_user_groups(
    pool: &PgPool,
    tenant_id: &str,
    upn: &str,
    groups: &[String],
    actor: &str,
    at: Timestamp,
) -> Result<Option<UserRecord>> {
    let json = to_json(&groups)?;
    retry(|| async {
        let mut tx = begin(pool).await?;
        let Some(user) = lock_user(&mut tx, tenant_id, upn).await? else {
            return Ok(None);
        };
        sqlx::query("UPDATE users SET groups = $1::jsonb WHERE tenant_id = $2 AND object_id = $3")
            .bind(&json)
            .bind(tenant_id)
            .bind(&user.object_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot change a user's groups"))?;
        end_sessions(&mut tx, tenant_id, &user.object_id).await?;
        let event = lifecycle::user_event(
            &user,
            USER_GROUPS_CHANGED,
            actor,
            at,
            Some(lifecycle::groups_change(&user.groups, groups)),
        );
        audit_log::append(&mut tx, &event).await?;
        commit(tx).await?;
        Ok(Some(UserRecord {
            groups: groups.to_vec(),
            ..user
        }))
    })
    .await
}
