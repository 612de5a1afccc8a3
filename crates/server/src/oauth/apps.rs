//! Registering OAuth clients (applications) and the default tenant.

use appfence_core::authz::KNOWN_APP_ROLES;
use appfence_core::ids::new_guid;
use appfence_core::{AppRegistration, Clock, Error, Tenant};
use appfence_store::Store;

use super::secrets::{generate_secret, hash_generated_secret};

/// Name of the tenant created when there is none.
pub const DEFAULT_TENANT_NAME: &str = "default";

/// Registers an application in `tenant_id` with the given roles. Returns the
/// registration and its client secret, which exists only in this return value: the
/// store keeps an Argon2id hash.
pub async fn create_app(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    name: &str,
    roles: &[String],
) -> Result<(AppRegistration, String), Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::BadRequest(
            "The application name must not be empty".into(),
        ));
    }
    let roles = validate_roles(roles)?;
    if store.tenant(tenant_id).await?.is_none() {
        return Err(Error::ResourceNotFound(format!(
            "Tenant {tenant_id} was not found"
        )));
    }
    let secret = generate_secret();
    let app = AppRegistration {
        tenant_id: tenant_id.to_string(),
        client_id: new_guid(),
        display_name: name.to_string(),
        // 256 random bits: a fast hash is enough (see `secrets`).
        secret_hash: hash_generated_secret(&secret),
        roles,
        created: clock.now(),
    };
    store.insert_app(&app).await?;
    Ok((app, secret))
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
        let StoredSecret::Fast(hex) = StoredSecret::of(&app.secret_hash) else {
            panic!(
                "a new secret is stored in the fast form: {}",
                app.secret_hash
            )
        };
        assert!(verify_generated_secret(&secret, Some(hex)));
        let stored = store
            .app(&tenant.id, &app.client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, app);
        assert!(!stored.secret_hash.contains(&secret));
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
                 Machine.ReadWrite.All, Ti.ReadWrite.All, Ti.ReadWrite"
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
