//! Whether the application or user a token of the built-in issuer names may still act.
//!
//! Tokens are JWTs checked by signature (and cached by text, `token_cache`), so a token
//! issued before its application or user was disabled or deleted would otherwise work
//! until it expires. Every request with such a token also asks here: the application
//! (tenant + client id) and, for a user token, the user (tenant + object id) must
//! exist and not be disabled. The answer comes from the store and is remembered for
//! [`STATE_TTL`] by the injected clock, so a change made anywhere (another replica,
//! `appfence app disable` on the data directory) refuses the tokens on every replica
//! within that bound, at the cost of one store read per principal per bound. A user
//! token also takes the user's current groups from here: a change of groups applies to
//! tokens already issued within the same bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use appfence_core::authz::{Caller, Principal};
use appfence_core::ids::truncate;
use appfence_core::records::{AppRegistration, UserRecord};
use appfence_core::Error;
use appfence_proto::Timestamp;
use appfence_store::Store;

/// How long an answer is trusted: a disabled or deleted application or user is
/// refused by every replica within this (plus the time a request takes).
pub const STATE_TTL: Duration = Duration::from_secs(30);

/// Bound on remembered answers; when full, expired ones go, and if that is not enough
/// the cache starts over (a miss costs one store read).
const CAPACITY: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    App {
        tenant_id: String,
        client_id: String,
    },
    User {
        tenant_id: String,
        object_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// May act; for users, with their current groups.
    Active { groups: Option<Vec<String>> },
    /// Why not: the message of the 401.
    Refused(String),
}

#[derive(Clone, Debug)]
struct Entry {
    state: State,
    read_at: Timestamp,
}

#[derive(Default)]
pub struct PrincipalStates {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for PrincipalStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalStates").finish_non_exhaustive()
    }
}

impl PrincipalStates {
    /// Checks the principal of a token of the built-in issuer obtained by the client
    /// `client_id` (`appid`), at `now`: `Unauthorized` if the application or the user
    /// is disabled or gone. For a user, returns their groups as the store has them now
    /// (at most [`STATE_TTL`] old).
    pub async fn check(
        &self,
        store: &dyn Store,
        principal: &Principal,
        client_id: &str,
        now: Timestamp,
    ) -> Result<Option<Vec<String>>, Error> {
        let tenant_id = &principal.tenant_id;
        let app = Key::App {
            tenant_id: tenant_id.clone(),
            client_id: client_id.to_string(),
        };
        if let State::Refused(why) = self.state(store, app, now).await? {
            return Err(Error::Unauthorized(why));
        }
        let Caller::User { object_id, .. } = &principal.caller else {
            return Ok(None);
        };
        let user = Key::User {
            tenant_id: tenant_id.clone(),
            object_id: object_id.clone(),
        };
        match self.state(store, user, now).await? {
            State::Refused(why) => Err(Error::Unauthorized(why)),
            State::Active { groups } => Ok(groups),
        }
    }

    /// Records that `app` (and `user`) were read from the store at `now` and may act:
    /// the token endpoint, which has just checked them, tells the cache, so a token it
    /// issues works on this replica at once even after a refusal was remembered.
    pub fn remember_active(
        &self,
        app: &AppRegistration,
        user: Option<&UserRecord>,
        now: Timestamp,
    ) {
        let mut fresh = vec![(
            Key::App {
                tenant_id: app.tenant_id.clone(),
                client_id: app.client_id.clone(),
            },
            State::Active { groups: None },
        )];
        if let Some(user) = user {
            fresh.push((
                Key::User {
                    tenant_id: user.tenant_id.clone(),
                    object_id: user.object_id.clone(),
                },
                State::Active {
                    groups: Some(user.groups.clone()),
                },
            ));
        }
        let mut entries = self.lock();
        for (key, state) in fresh {
            if entries.len() >= CAPACITY {
                entries.retain(|_, e| fresh_at(e.read_at, now));
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(
                key,
                Entry {
                    state,
                    read_at: now,
                },
            );
        }
    }

    /// Forgets every answer (tests; a store known to have changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn state(&self, store: &dyn Store, key: Key, now: Timestamp) -> Result<State, Error> {
        if let Some(entry) = self.lock().get(&key) {
            if fresh_at(entry.read_at, now) {
                return Ok(entry.state.clone());
            }
        }
        // A store that cannot answer refuses the request (503): a stale answer could
        // let a revoked principal act past the bound.
        let state = read(store, &key).await?;
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| fresh_at(e.read_at, now));
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                state: state.clone(),
                read_at: now,
            },
        );
        Ok(state)
    }
}

/// Whether an answer read at `read_at` may still be used at `now`. A clock that went
/// back does not make an answer trusted for longer than the bound.
fn fresh_at(read_at: Timestamp, now: Timestamp) -> bool {
    now >= read_at && now < read_at.plus(STATE_TTL)
}

async fn read(store: &dyn Store, key: &Key) -> Result<State, Error> {
    Ok(match key {
        // The built-in public client of the CLI is no stored application: it always
        // exists, and what its tokens may do is decided by their user.
        Key::App { client_id, .. }
            if client_id.eq_ignore_ascii_case(crate::oauth::flows::CLI_CLIENT_ID) =>
        {
            State::Active { groups: None }
        }
        Key::App {
            tenant_id,
            client_id,
        } => match store.app(tenant_id, client_id).await? {
            None => State::Refused(format!(
                "The token's application '{}' no longer exists",
                truncate(client_id, 100)
            )),
            Some(app) if app.disabled.is_some() => State::Refused(format!(
                "The token's application '{}' is disabled",
                truncate(client_id, 100)
            )),
            Some(_) => State::Active { groups: None },
        },
        Key::User {
            tenant_id,
            object_id,
        } => match store.user_by_object_id(tenant_id, object_id).await? {
            None => State::Refused(format!(
                "The token's user '{}' no longer exists",
                truncate(object_id, 100)
            )),
            Some(user) if user.disabled.is_some() => State::Refused(format!(
                "The token's user '{}' is disabled",
                truncate(&user.upn, 100)
            )),
            Some(user) => State::Active {
                groups: Some(user.groups),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sqlite_store;
    use appfence_core::Tenant;

    const T: &str = "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69";

    fn t0() -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000)
    }

    #[tokio::test]
    async fn a_disabled_or_deleted_principal_is_refused_within_the_bound() {
        let (_dir, store) = sqlite_store().await;
        let store = store.as_ref();
        store
            .ensure_tenant(&Tenant {
                id: T.into(),
                name: "t".into(),
            })
            .await
            .unwrap();
        let app = AppRegistration {
            tenant_id: T.into(),
            client_id: "c-1".into(),
            display_name: "SOAR".into(),
            roles: vec![],
            created: t0(),
            disabled: None,
        };
        store.insert_app(&app, None).await.unwrap();
        let user = UserRecord {
            tenant_id: T.into(),
            object_id: "oid-1".into(),
            upn: "ana@example.com".into(),
            password_hash: "x".into(),
            groups: vec!["g1".into()],
            created: t0(),
            disabled: None,
        };
        store.insert_user(&user).await.unwrap();
        let states = PrincipalStates::default();
        let as_app = Principal::application(T, "c-1", "SOAR", vec![]);
        let mut as_user = as_app.clone();
        as_user.caller = Caller::User {
            object_id: "oid-1".into(),
            upn: "ana@example.com".into(),
        };

        assert_eq!(
            states.check(store, &as_app, "c-1", t0()).await.unwrap(),
            None
        );
        assert_eq!(
            states.check(store, &as_user, "c-1", t0()).await.unwrap(),
            Some(vec!["g1".to_string()])
        );

        // Disabled and regrouped: the answers stand until the bound, then change.
        store
            .set_user_groups(T, "ana@example.com", &["g2".into()], "test", t0())
            .await
            .unwrap();
        store
            .set_app_disabled(T, "c-1", true, "test", t0())
            .await
            .unwrap();
        let almost = t0().plus(STATE_TTL - Duration::from_millis(1));
        assert!(states.check(store, &as_app, "c-1", almost).await.is_ok());
        let later = t0().plus(STATE_TTL);
        assert_eq!(
            states
                .check(store, &as_app, "c-1", later)
                .await
                .unwrap_err(),
            Error::Unauthorized("The token's application 'c-1' is disabled".into())
        );
        // The user's token needs its client too.
        assert!(states.check(store, &as_user, "c-1", later).await.is_err());
        store
            .set_app_disabled(T, "c-1", false, "test", later)
            .await
            .unwrap();
        let much_later = later.plus(STATE_TTL);
        assert_eq!(
            states
                .check(store, &as_user, "c-1", much_later)
                .await
                .unwrap(),
            Some(vec!["g2".to_string()]),
            "the current groups"
        );

        // A disabled user, then a deleted one.
        store
            .set_user_disabled(T, "ana@example.com", true, "test", much_later)
            .await
            .unwrap();
        states.clear();
        assert_eq!(
            states
                .check(store, &as_user, "c-1", much_later)
                .await
                .unwrap_err(),
            Error::Unauthorized("The token's user 'ana@example.com' is disabled".into())
        );
        store
            .delete_user(T, "ana@example.com", "test", much_later)
            .await
            .unwrap();
        store
            .delete_app(T, "c-1", "test", much_later)
            .await
            .unwrap();
        states.clear();
        assert_eq!(
            states
                .check(store, &as_app, "c-1", much_later)
                .await
                .unwrap_err(),
            Error::Unauthorized("The token's application 'c-1' no longer exists".into())
        );
        // The token endpoint's word replaces a remembered refusal.
        let recreated = AppRegistration {
            client_id: "c-1".into(),
            ..app.clone()
        };
        store.insert_app(&recreated, None).await.unwrap();
        assert!(states
            .check(store, &as_app, "c-1", much_later)
            .await
            .is_err());
        states.remember_active(&recreated, None, much_later);
        assert!(states
            .check(store, &as_app, "c-1", much_later)
            .await
            .is_ok());
        // A clock that goes back does not extend an answer.
        states.clear();
        let _ = states.check(store, &as_app, "c-1", much_later).await;
        assert!(!fresh_at(
            much_later,
            much_later.minus(Duration::from_secs(1))
        ));
    }

    #[tokio::test]
    async fn the_built_in_cli_client_acts_without_a_row_its_user_still_checked() {
        let (_dir, store) = sqlite_store().await;
        let cli = crate::oauth::flows::CLI_CLIENT_ID;
        let mut as_user = Principal::application(T, cli, "appfence CLI", vec![]);
        as_user.caller = Caller::User {
            object_id: "oid-1".into(),
            upn: "ana@example.com".into(),
        };
        let states = PrincipalStates::default();
        // The application passes; the user, who does not exist, does not.
        assert_eq!(
            states
                .check(store.as_ref(), &as_user, cli, t0())
                .await
                .unwrap_err(),
            Error::Unauthorized("The token's user 'oid-1' no longer exists".into())
        );
        let as_app = Principal::application(T, cli, "appfence CLI", vec![]);
        assert_eq!(
            states
                .check(store.as_ref(), &as_app, &cli.to_uppercase(), t0())
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let states = PrincipalStates::default();
        {
            let mut entries = states.lock();
            for i in 0..CAPACITY {
                entries.insert(
                    Key::App {
                        tenant_id: T.into(),
                        client_id: format!("c-{i}"),
                    },
                    Entry {
                        state: State::Active { groups: None },
                        read_at: t0(),
                    },
                );
            }
        }
        // Inserting at capacity drops what expired.
        let (_dir, store) = sqlite_store().await;
        let app = Principal::application(T, "new", "x", vec![]);
        let _ = states
            .check(store.as_ref(), &app, "new", t0().plus(STATE_TTL))
            .await;
        assert_eq!(states.lock().len(), 1);
    }
}
