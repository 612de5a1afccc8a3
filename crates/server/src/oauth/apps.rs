//! Registering OAuth clients (applications), their secrets (several at once, each
//! with an expiry, so a secret is rotated without downtime), and the default tenant.

use std::time::Duration;

use appfence_core::audit::{AuditEvent, ACTOR_SERVER, APP_CREATED};
use appfence_core::authz::KNOWN_APP_ROLES;
use appfence_core::ids::new_guid;
use appfence_core::records::AppSecret;
use appfence_core::{AppRegistration, Clock, Error, Tenant};
use appfence_store::Store;

use super::secrets::{generate_secret, hash_generated_secret};

/// Name of the tenant created when there is none.
pub const DEFAULT_TENANT_NAME: &str = "default";

/// How long a new client secret works unless told otherwise: 180 days, as Entra ID
/// recommends.
pub const DEFAULT_SECRET_LIFETIME: Duration = Duration::from_secs(180 * 86_400);
/// The longest a client secret may work: two years, Entra's longest.
pub const MAX_SECRET_LIFETIME: Duration = Duration::from_secs(730 * 86_400);
/// The most secrets an application holds at once (rotation needs two); each token
/// request checks them all.
pub const MAX_SECRETS_PER_APP: usize = 10;
/// Characters of a secret kept in the clear to tell secrets apart (Entra's `hint`).
pub const HINT_CHARS: usize = 3;

/// Registers an application in `tenant_id` with the given roles and a first secret
/// valid for the default lifetime. Returns the registration and its client secret,
/// which exists only in this return value: the store keeps a hash.
pub async fn create_app(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    name: &str,
    roles: &[String],
) -> Result<(AppRegistration, String), Error> {
    register_app(
        store,
        clock,
        tenant_id,
        name,
        roles,
        DEFAULT_SECRET_LIFETIME,
        ACTOR_SERVER,
    )
    .await
    .map(|(app, _, secret)| (app, secret))
}

/// [`create_app`] with the first secret's lifetime, audited (`AppCreated`) as done by
/// `actor`. Returns the registration, the stored secret and the secret itself.
pub async fn register_app(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    name: &str,
    roles: &[String],
    secret_lifetime: Duration,
    actor: &str,
) -> Result<(AppRegistration, AppSecret, String), Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::BadRequest(
            "The application name must not be empty".into(),
        ));
    }
    let roles = validate_roles(roles)?;
    check_lifetime(secret_lifetime)?;
    if store.tenant(tenant_id).await?.is_none() {
        return Err(Error::ResourceNotFound(format!(
            "Tenant {tenant_id} was not found"
        )));
    }
    let now = clock.now();
    let app = AppRegistration {
        tenant_id: tenant_id.to_string(),
        client_id: new_guid(),
        display_name: name.to_string(),
        roles,
        created: now,
        disabled: None,
    };
    let (stored, secret) = new_secret(&app, now, secret_lifetime);
    store.insert_app(&app, Some(&stored)).await?;
    store
        .append_audit_event(&AuditEvent {
            at: now,
            tenant_id: Some(app.tenant_id.clone()),
            event: APP_CREATED.into(),
            subject: app.client_id.clone(),
            actor: actor.to_string(),
            detail: Some(format!(
                "name {:?}, roles [{}], secret {}",
                app.display_name,
                app.roles.join(", "),
                stored.id
            )),
        })
        .await?;
    Ok((app, stored, secret))
}

/// Adds a secret to the tenant's application `client_id`, valid for `lifetime`,
/// audited as done by `actor`. The secret exists only in the return value.
pub async fn add_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    client_id: &str,
    lifetime: Duration,
    actor: &str,
) -> Result<(AppSecret, String), Error> {
    check_lifetime(lifetime)?;
    let app = store.app(tenant_id, client_id).await?.ok_or_else(|| {
        Error::ResourceNotFound(format!(
            "Application {} was not found",
            appfence_core::ids::truncate(client_id, 100)
        ))
    })?;
    let (stored, secret) = new_secret(&app, clock.now(), lifetime);
    store
        .add_app_secret(&stored, MAX_SECRETS_PER_APP, actor)
        .await?;
    Ok((stored, secret))
}

/// A fresh secret of `app`, created at `now`, and its stored form.
fn new_secret(
    app: &AppRegistration,
    now: appfence_proto::Timestamp,
    lifetime: Duration,
) -> (AppSecret, String) {
    let secret = generate_secret();
    let stored = AppSecret {
        id: new_guid(),
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        // 256 random bits: a fast hash is enough (see `secrets`).
        secret_hash: hash_generated_secret(&secret),
        hint: Some(secret.chars().take(HINT_CHARS).collect()),
        created: now,
        expires: Some(now.plus(lifetime)),
    };
    (stored, secret)
}

fn check_lifetime(lifetime: Duration) -> Result<(), Error> {
    if lifetime < Duration::from_secs(60) || lifetime > MAX_SECRET_LIFETIME {
        return Err(Error::BadRequest(
            "A client secret must expire between 1 minute and 730 days (2 years) from now".into(),
        ));
    }
    Ok(())
}

/// The roles, each one known, without repeats, in the order given.
fn validate_roles(roles: &[String]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let role = role.trim();
        if !KNOWN_APP_ROLES.contains(&role) {
            return Err(Error::BadRequest(format!(
                "Unknown application role '{}'; known roles are: {}",
                appfence_core::ids::truncate(role, 100),
                KNOWN_APP_ROLES.join(", ")
            )));
        }
        if !out.iter().any(|r| r == role) {
            out.push(role.to_string());
        }
    }
    Ok(out)
}

/// The tenant to use when none is named: the only one, or a new one named "default"
/// (with a fresh GUID) when there is none. With several tenants it is the oldest, i.e.
/// the first that `Store::tenants` lists (stores list tenants in creation order).
/// Re-reading after the insert makes concurrent first starts agree on one tenant.
pub async fn ensure_default_tenant(store: &dyn Store) -> Result<Tenant, Error> {
    if let Some(t) = store.tenants().await?.into_iter().next() {
        return Ok(t);
    }
    let tenant = Tenant {
        id: new_guid(),
        name: DEFAULT_TENANT_NAME.into(),
    };
    store.ensure_tenant(&tenant).await?;
    tracing::info!(tenant_id = %tenant.id, "created the default tenant");
    store
        .tenants()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("the default tenant was created but cannot be read"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::secrets::{verify_generated_secret, StoredSecret};
    use crate::test_support::sqlite_store;
    use appfence_core::authz::{ROLE_READ_ALL, ROLE_RESTRICT};
    use appfence_core::ManualClock;
    use appfence_proto::Timestamp;

    fn clock() -> ManualClock {
        ManualClock::new(Timestamp::from_unix_seconds(1_700_000_000))
    }

    #[tokio::test]
    async fn apps_get_a_guid_a_hashed_secret_and_known_roles() {
        let (_dir, store) = sqlite_store().await;
        let store = store.as_ref();
        let tenant = ensure_default_tenant(store).await.unwrap();
        let roles = vec![
            ROLE_RESTRICT.to_string(),
            ROLE_READ_ALL.to_string(),
            ROLE_RESTRICT.to_string(),
        ];
        let (app, secret) = create_app(store, &clock(), &tenant.id, " SOAR ", &roles)
            .await
            .unwrap();
        assert!(appfence_core::ids::parse_guid(&app.client_id).is_some());
        assert_eq!(app.display_name, "SOAR");
        assert_eq!(
            app.roles,
            vec![ROLE_RESTRICT.to_string(), ROLE_READ_ALL.to_string()]
        );
        assert_eq!(app.created, Timestamp::from_unix_seconds(1_700_000_000));
        assert_eq!(app.disabled, None);
        let stored = store
            .app(&tenant.id, &app.client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, app);
        let secrets = store.app_secrets(&tenant.id, &app.client_id).await.unwrap();
        assert_eq!(secrets.len(), 1);
        let first = &secrets[0];
        let StoredSecret::Fast(hex) = StoredSecret::of(&first.secret_hash) else {
            panic!(
                "a new secret is stored in the fast form: {}",
                first.secret_hash
            )
        };
        assert!(verify_generated_secret(&secret, Some(hex)));
        assert!(!first.secret_hash.contains(&secret));
        assert_eq!(first.hint.as_deref(), Some(&secret[..HINT_CHARS]));
        assert_eq!(
            first.expires,
            Some(app.created.plus(DEFAULT_SECRET_LIFETIME)),
            "180 days"
        );
        // Its creation is audited.
        let events = store.audit_events(0, 100).await.unwrap();
        let (_, created) = events.last().unwrap();
        assert_eq!(created.event, APP_CREATED);
        assert_eq!(created.subject, app.client_id);
        assert_eq!(created.actor, ACTOR_SERVER);
    }

    #[tokio::test]
    async fn secrets_are_added_with_their_expiry_up_to_a_bound() {
        let (_dir, store) = sqlite_store().await;
        let store = store.as_ref();
        let tenant = ensure_default_tenant(store).await.unwrap();
        let clock = clock();
        let (app, _) = create_app(store, &clock, &tenant.id, "SOAR", &[])
            .await
            .unwrap();
        let day = Duration::from_secs(86_400);
        let (added, secret) = add_secret(
            store,
            &clock,
            &tenant.id,
            &app.client_id,
            90 * day,
            "cli:ana",
        )
        .await
        .unwrap();
        assert_eq!(added.expires, Some(added.created.plus(90 * day)));
        assert_eq!(added.hint.as_deref(), Some(&secret[..HINT_CHARS]));
        for lifetime in [Duration::from_secs(59), MAX_SECRET_LIFETIME + day] {
            let e = add_secret(
                store,
                &clock,
                &tenant.id,
                &app.client_id,
                lifetime,
                "cli:ana",
            )
            .await
            .unwrap_err();
            assert!(
                matches!(e, Error::BadRequest(ref m) if m.contains("730 days")),
                "{e:?}"
            );
        }
        let e = add_secret(store, &clock, &tenant.id, &new_guid(), day, "cli:ana")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ResourceNotFound(_)), "{e:?}");
        for _ in 2..MAX_SECRETS_PER_APP {
            add_secret(store, &clock, &tenant.id, &app.client_id, day, "cli:ana")
                .await
                .unwrap();
        }
        let e = add_secret(store, &clock, &tenant.id, &app.client_id, day, "cli:ana")
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::BadRequest(ref m) if m.contains("remove one first")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn bad_apps_are_refused() {
        let (_dir, store) = sqlite_store().await;
        let store = store.as_ref();
        let tenant = ensure_default_tenant(store).await.unwrap();
        let err = create_app(
            store,
            &clock(),
            &tenant.id,
            "x",
            &["Machine.Isolate".to_string()],
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            Error::BadRequest(
                "Unknown application role 'Machine.Isolate'; known roles are: \
                 Machine.RestrictExecution, Machine.Offboard, Machine.Read.All, \
                 Machine.ReadWrite.All, Ti.ReadWrite.All, Ti.ReadWrite, Alert.Read.All, \
                 Alert.ReadWrite.All"
                    .into()
            )
        );
        let err = create_app(store, &clock(), &tenant.id, "  ", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(m) if m.contains("name")));
        let err = create_app(store, &clock(), "no-such-tenant", "x", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ResourceNotFound(_)));
    }

    #[tokio::test]
    async fn the_default_tenant_is_created_once() {
        let (_dir, store) = sqlite_store().await;
        let store = store.as_ref();
        let first = ensure_default_tenant(store).await.unwrap();
        assert_eq!(first.name, "default");
        assert!(appfence_core::ids::parse_guid(&first.id).is_some());
        assert_eq!(ensure_default_tenant(store).await.unwrap(), first);
        assert_eq!(store.tenants().await.unwrap().len(), 1);
        // With several tenants, the oldest.
        store
            .ensure_tenant(&Tenant {
                id: new_guid(),
                name: "second".into(),
            })
            .await
            .unwrap();
        assert_eq!(ensure_default_tenant(store).await.unwrap(), first);
    }
}
