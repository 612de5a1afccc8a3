//! Local users of the built-in issuer: creating them, and checking a user name and
//! password. Passwords are stored as Argon2id hashes (`password_pool`); the token
//! endpoint's checks, with lockouts, are in `sign_in`.

use appfence_core::audit::{AuditEvent, ACTOR_SERVER, USER_CREATED};
use appfence_core::ids::new_guid;
use appfence_core::records::UserRecord;
use appfence_core::{Clock, Error};
use appfence_store::Store;

use super::password_pool::{hash_once, PasswordPool};

/// Shorter passwords are refused at creation.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer user names are refused at creation.
pub const MAX_UPN_CHARS: usize = 256;

/// Creates a user in `tenant_id`. The UPN is stored trimmed and in lower case (lookups
/// are case-insensitive); the groups, trimmed and without repeats, in the order given.
pub async fn create_user(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    upn: &str,
    password: &str,
    groups: &[String],
) -> Result<UserRecord, Error> {
    create_user_as(store, clock, tenant_id, upn, password, groups, ACTOR_SERVER).await
}

/// [`create_user`], audited (`UserCreated`) as done by `actor`.
pub async fn create_user_as(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    upn: &str,
    password: &str,
    groups: &[String],
    actor: &str,
) -> Result<UserRecord, Error> {
    let upn = validate_upn(upn)?;
    validate_password(password)?;
    let groups = validate_groups(groups)?;
    if store.tenant(tenant_id).await?.is_none() {
        return Err(Error::ResourceNotFound(format!(
            "Tenant {tenant_id} was not found"
        )));
    }
    let password_hash = hash_password(password).await?;
    let user = UserRecord {
        tenant_id: tenant_id.to_string(),
        object_id: new_guid(),
        upn,
        password_hash,
        groups,
        created: clock.now(),
        disabled: None,
    };
    store.insert_user(&user).await?;
    store
        .append_audit_event(&AuditEvent {
            at: user.created,
            tenant_id: Some(user.tenant_id.clone()),
            event: USER_CREATED.into(),
            subject: user.upn.clone(),
            actor: actor.to_string(),
            detail: Some(format!(
                "oid {}; groups [{}]",
                user.object_id,
                user.groups.join(", ")
            )),
        })
        .await?;
    Ok(user)
}

/// Argon2id takes tens of milliseconds of CPU: kept off the async workers.
async fn hash_password(password: &str) -> Result<String, Error> {
    let to_hash = password.to_string();
    tokio::task::spawn_blocking(move || hash_once(&to_hash))
        .await
        .map_err(Error::internal)
}

fn no_such_user(upn: &str) -> Error {
    Error::ResourceNotFound(format!(
        "There is no user '{}' in this tenant",
        appfence_core::ids::truncate(upn.trim(), 100)
    ))
}

/// Gives the user a new password (the same rules as at creation); their console
/// sessions end. Audited as done by `actor`.
pub async fn set_password(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    upn: &str,
    password: &str,
    actor: &str,
) -> Result<(), Error> {
    validate_password(password)?;
    if store.user(tenant_id, upn.trim()).await?.is_none() {
        return Err(no_such_user(upn));
    }
    let hash = hash_password(password).await?;
    if !store
        .set_user_password(tenant_id, upn.trim(), &hash, actor, clock.now())
        .await?
    {
        return Err(no_such_user(upn));
    }
    Ok(())
}

/// Replaces the user's groups (the same rules as at creation), which decide their
/// roles and device groups; their console sessions end. Audited as done by `actor`.
pub async fn set_groups(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    upn: &str,
    groups: &[String],
    actor: &str,
) -> Result<UserRecord, Error> {
    let groups = validate_groups(groups)?;
    store
        .set_user_groups(tenant_id, upn.trim(), &groups, actor, clock.now())
        .await?
        .ok_or_else(|| no_such_user(upn))
}

/// Disables or enables the user, audited as done by `actor`; disabling ends their
/// console sessions. Their tokens are refused within
/// [`crate::oauth::principal_state::STATE_TTL`].
pub async fn set_disabled(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    upn: &str,
    disabled: bool,
    actor: &str,
) -> Result<UserRecord, Error> {
    store
        .set_user_disabled(tenant_id, upn.trim(), disabled, actor, clock.now())
        .await?
        .ok_or_else(|| no_such_user(upn))
}

/// Deletes the user and their console sessions, audited as done by `actor`.
pub async fn delete(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    upn: &str,
    actor: &str,
) -> Result<(), Error> {
    if !store
        .delete_user(tenant_id, upn.trim(), actor, clock.now())
        .await?
    {
        return Err(no_such_user(upn));
    }
    Ok(())
}

/// The user of `tenant_id` with this UPN (any case) if `password` is theirs and the user
/// is not disabled, checked on `pool` (an unknown user costs the same work). No
/// lockout: for the server's own checks (the demo's users); the token endpoint goes
/// through `sign_in`.
pub async fn authenticate_user(
    store: &dyn Store,
    pool: &PasswordPool,
    tenant_id: &str,
    upn: &str,
    password: &str,
) -> Result<Option<UserRecord>, Error> {
    let user = store.user(tenant_id, upn.trim()).await?;
    let matches = pool
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
        .map_err(|_| Error::internal("every password check is busy"))?;
    Ok(user.filter(|u| matches && u.disabled.is_none()))
}

fn validate_upn(upn: &str) -> Result<String, Error> {
    let upn = upn.trim();
    if upn.is_empty() {
        return Err(Error::BadRequest("The user name must not be empty".into()));
    }
    if upn.chars().any(char::is_whitespace) {
        return Err(Error::BadRequest(format!(
            "The user name '{}' must not contain whitespace",
            appfence_core::ids::truncate(upn, 100)
        )));
    }
    if upn.chars().count() > MAX_UPN_CHARS {
        return Err(Error::BadRequest(format!(
            "The user name must be at most {MAX_UPN_CHARS} characters"
        )));
    }
    Ok(upn.to_lowercase())
}

fn validate_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::BadRequest(format!(
            "The password must be at least {MIN_PASSWORD_CHARS} characters long"
        )));
    }
    Ok(())
}

fn validate_groups(groups: &[String]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(groups.len());
    for group in groups {
        let group = group.trim();
        if group.is_empty() {
            return Err(Error::BadRequest("Group names must not be empty".into()));
        }
        if !out.iter().any(|g| g == group) {
            out.push(group.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_core::{ManualClock, Tenant};
    use appfence_proto::Timestamp;
    use appfence_store::SqliteStore;

    const PASSWORD: &str = "correct horse battery";

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
        tenant: Tenant,
        clock: ManualClock,
        pool: PasswordPool,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("appfence.db"))
            .await
            .unwrap();
        let tenant = Tenant {
            id: new_guid(),
            name: "default".into(),
        };
        store.ensure_tenant(&tenant).await.unwrap();
        Fixture {
            _dir: dir,
            store,
            tenant,
            clock: ManualClock::new(Timestamp::from_unix_seconds(1_700_000_000)),
            pool: PasswordPool::new(1, 8),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn users_are_stored_lower_case_with_a_hash_and_unique_groups() {
        let f = fixture().await;
        let user = create_user(
            &f.store,
            &f.clock,
            &f.tenant.id,
            "  Ana@Example.COM ",
            PASSWORD,
            &strings(&["tier2", " servers ", "tier2"]),
        )
        .await
        .unwrap();
        assert_eq!(user.upn, "ana@example.com");
        assert_eq!(user.groups, ["tier2", "servers"]);
        assert!(appfence_core::ids::parse_guid(&user.object_id).is_some());
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert!(!user.password_hash.contains(PASSWORD));
        assert_eq!(user.created, Timestamp::from_unix_seconds(1_700_000_000));
        let stored = f
            .store
            .user(&f.tenant.id, "ana@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.object_id, user.object_id);
        assert_eq!(stored.groups, user.groups);

        // The same UPN, in any case, is taken.
        let again = create_user(
            &f.store,
            &f.clock,
            &f.tenant.id,
            "ANA@example.com",
            PASSWORD,
            &[],
        )
        .await
        .unwrap_err();
        assert!(matches!(again, Error::BadRequest(m) if m.contains("already exists")));
    }

    async fn refused(f: &Fixture, upn: &str, password: &str, groups: &[&str]) -> Error {
        create_user(
            &f.store,
            &f.clock,
            &f.tenant.id,
            upn,
            password,
            &strings(groups),
        )
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn bad_users_are_refused_with_a_reason() {
        let f = fixture().await;
        assert_eq!(
            refused(&f, "  ", PASSWORD, &[]).await,
            Error::BadRequest("The user name must not be empty".into())
        );
        assert_eq!(
            refused(&f, "ana @example.com", PASSWORD, &[]).await,
            Error::BadRequest(
                "The user name 'ana @example.com' must not contain whitespace".into()
            )
        );
        let long = format!("{}@x", "a".repeat(MAX_UPN_CHARS));
        assert_eq!(
            refused(&f, &long, PASSWORD, &[]).await,
            Error::BadRequest("The user name must be at most 256 characters".into())
        );
        assert_eq!(
            refused(&f, "ana@example.com", "elevenchars", &[]).await,
            Error::BadRequest("The password must be at least 12 characters long".into())
        );
        assert_eq!(
            refused(&f, "ana@example.com", PASSWORD, &["ok", " "]).await,
            Error::BadRequest("Group names must not be empty".into())
        );
        assert!(matches!(
            create_user(
                &f.store,
                &f.clock,
                "no-such-tenant",
                "ana@example.com",
                PASSWORD,
                &[]
            )
            .await
            .unwrap_err(),
            Error::ResourceNotFound(_)
        ));
        // Twelve characters are enough, counted as characters, not bytes.
        create_user(
            &f.store,
            &f.clock,
            &f.tenant.id,
            "bo@example.com",
            "éééééééééééé",
            &[],
        )
        .await
        .unwrap();
        assert!(f
            .store
            .user(&f.tenant.id, "ana@example.com")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn only_the_right_password_authenticates() {
        let f = fixture().await;
        let user = create_user(
            &f.store,
            &f.clock,
            &f.tenant.id,
            "ana@example.com",
            PASSWORD,
            &strings(&["tier2"]),
        )
        .await
        .unwrap();
        let found = authenticate_user(&f.store, &f.pool, &f.tenant.id, "Ana@Example.com", PASSWORD)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.object_id, user.object_id);
        assert_eq!(found.groups, ["tier2"]);
        for (upn, password) in [
            ("ana@example.com", "correct horse battery!"),
            ("ana@example.com", ""),
            ("nobody@example.com", PASSWORD),
        ] {
            assert_eq!(
                authenticate_user(&f.store, &f.pool, &f.tenant.id, upn, password)
                    .await
                    .unwrap(),
                None,
                "{upn} {password}"
            );
        }
        // Users belong to one tenant.
        let other = Tenant {
            id: new_guid(),
            name: "other".into(),
        };
        f.store.ensure_tenant(&other).await.unwrap();
        assert_eq!(
            authenticate_user(&f.store, &f.pool, &other.id, "ana@example.com", PASSWORD)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn passwords_groups_and_state_change_by_the_same_rules() {
        let f = fixture().await;
        create_user(
            &f.store,
            &f.clock,
            &f.tenant.id,
            "ana@example.com",
            PASSWORD,
            &strings(&["tier2"]),
        )
        .await
        .unwrap();
        let t = &f.tenant.id;
        // A new password: the old one stops working.
        let new_password = "another long passphrase";
        assert!(matches!(
            set_password(&f.store, &f.clock, t, "ana@example.com", "short", "cli:root").await,
            Err(Error::BadRequest(m)) if m.contains("at least 12")
        ));
        assert!(matches!(
            set_password(&f.store, &f.clock, t, "nobody@example.com", new_password, "cli:root")
                .await,
            Err(Error::ResourceNotFound(m)) if m.contains("nobody@example.com")
        ));
        set_password(
            &f.store,
            &f.clock,
            t,
            " Ana@example.com ",
            new_password,
            "cli:root",
        )
        .await
        .unwrap();
        assert!(
            authenticate_user(&f.store, &f.pool, t, "ana@example.com", PASSWORD)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            authenticate_user(&f.store, &f.pool, t, "ana@example.com", new_password)
                .await
                .unwrap()
                .is_some()
        );
        // New groups, trimmed and without repeats.
        let user = set_groups(
            &f.store,
            &f.clock,
            t,
            "ana@example.com",
            &strings(&["viewers", " servers", "viewers"]),
            "cli:root",
        )
        .await
        .unwrap();
        assert_eq!(user.groups, ["viewers", "servers"]);
        assert!(matches!(
            set_groups(
                &f.store,
                &f.clock,
                t,
                "ana@example.com",
                &strings(&[" "]),
                "cli:root"
            )
            .await,
            Err(Error::BadRequest(_))
        ));
        // Disabled: the right password no longer authenticates.
        let disabled = set_disabled(&f.store, &f.clock, t, "ana@example.com", true, "cli:root")
            .await
            .unwrap();
        assert!(disabled.disabled.is_some());
        assert!(
            authenticate_user(&f.store, &f.pool, t, "ana@example.com", new_password)
                .await
                .unwrap()
                .is_none()
        );
        set_disabled(&f.store, &f.clock, t, "ana@example.com", false, "cli:root")
            .await
            .unwrap();
        assert!(
            authenticate_user(&f.store, &f.pool, t, "ana@example.com", new_password)
                .await
                .unwrap()
                .is_some()
        );
        delete(&f.store, &f.clock, t, "ana@example.com", "cli:root")
            .await
            .unwrap();
        assert!(matches!(
            delete(&f.store, &f.clock, t, "ana@example.com", "cli:root").await,
            Err(Error::ResourceNotFound(_))
        ));
        // Every change is in the audit log.
        let events: Vec<String> = f
            .store
            .audit_events(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.event)
            .collect();
        assert_eq!(
            events,
            [
                "UserCreated",
                "UserPasswordChanged",
                "UserGroupsChanged",
                "UserDisabled",
                "UserEnabled",
                "UserDeleted"
            ]
        );
    }
}
