//! Checking who signs in at the token endpoints, under attack: the source address's
//! limit first, then the client's secret (microseconds; Argon2 only for a hash of an
//! earlier version, re-stored in the fast form on success), then the user's lockout,
//! then the user's password on the bounded Argon2 pool. Every failure is counted in the
//! store (per address; per account for passwords), so limits hold across replicas.
//!
//! Client ids are never locked: they are not secret (they travel in every token), so a
//! lockout would let anyone shut a playbook out; their secrets are 256-bit, which no
//! guessing rate reaches, and wrong ones (and unknown clients) count against the
//! caller's address. Refusals are Entra's: AADSTS700016 (no such application),
//! AADSTS7000215 (wrong secret), AADSTS7000222 (expired secret), AADSTS7000112
//! (application disabled), AADSTS50057 (user disabled), AADSTS70003 (the password
//! grant is off for the tenant: new tenants start so; `appfence tenant set`).

use std::net::IpAddr;

use appfence_core::ids::truncate;
use appfence_core::records::{AppRegistration, AppSecret, UserRecord};
use appfence_core::sign_in_throttle::{address_key, SignInAccount, ThrottleRecord, Verdict};
use appfence_core::Tenant;
use appfence_proto::Timestamp;

use super::failure::OAuthFailure;
use super::password_pool::Busy;
use super::request::{ClientAuth, Grant, TokenRequest, UserCredentials};
use super::secrets::{hash_generated_secret, verify_generated_secret, StoredSecret};
use crate::AppState;

/// Who signed in.
#[derive(Debug)]
pub struct SignedIn {
    pub app: AppRegistration,
    /// For the password grant.
    pub user: Option<UserRecord>,
}

/// Why a token request was refused, for the metric's label.
fn refused(reason: &'static str) {
    metrics::counter!("appfence_token_requests_refused_total", "reason" => reason).increment(1);
}

pub async fn sign_in(
    state: &AppState,
    tenant: &Tenant,
    address: IpAddr,
    request: &TokenRequest,
) -> Result<SignedIn, OAuthFailure> {
    if matches!(request.grant, Grant::Password(_))
        && state.store.password_grant(&tenant.id).await? != Some(true)
    {
        // Before any counting or hashing: nothing is checked, so nothing is learnt.
        refused("password grant off");
        return Err(OAuthFailure::password_grant_off(&tenant.id));
    }
    let now = state.clock.now();
    let account = match &request.grant {
        Grant::Password(c) => Some(SignInAccount::new(&tenant.id, &c.username)),
        Grant::ClientCredentials => None,
    };
    let (addr_key, counters) = admitted_address(state, address, account.as_ref(), now).await?;
    let counter = |key: &str| counters.iter().find(|r| r.key == key);
    let failures = Failures {
        state,
        address,
        addr_key: &addr_key,
        now,
    };
    let app = authenticate_client(state, tenant, &request.client, &failures).await?;
    let user = match (&request.grant, &account) {
        (Grant::Password(credentials), Some(account)) => Some(
            authenticate_user(
                state,
                tenant,
                credentials,
                account,
                counter(&account.key()),
                &failures,
            )
            .await?,
        ),
        _ => None,
    };
    Ok(SignedIn { app, user })
}

/// A person signing in to the web console with a local user's name and password: the
/// same address limit, account lockout and failure counting as the password grant, with
/// no client (the console is the server's own).
pub async fn sign_in_person(
    state: &AppState,
    tenant: &Tenant,
    address: IpAddr,
    credentials: &UserCredentials,
) -> Result<UserRecord, OAuthFailure> {
    let now = state.clock.now();
    let account = SignInAccount::new(&tenant.id, &credentials.username);
    let (addr_key, counters) = admitted_address(state, address, Some(&account), now).await?;
    let counter = |key: &str| counters.iter().find(|r| r.key == key);
    let failures = Failures {
        state,
        address,
        addr_key: &addr_key,
        now,
    };
    authenticate_user(
        state,
        tenant,
        credentials,
        &account,
        counter(&account.key()),
        &failures,
    )
    .await
}

/// A person's sign-in to the web console through an external issuer, before anything
/// is checked: refused while the address is throttled, like a password sign-in.
pub async fn check_address(state: &AppState, address: IpAddr) -> Result<(), OAuthFailure> {
    admitted_address(state, address, None, state.clock.now())
        .await
        .map(drop)
}

/// Counts a failed external sign-in (a forged or stale answer, a refused code or ID
/// token) against the address, as a wrong password is. No account: the person is not
/// known until the ID token verifies.
pub async fn count_address_failure(state: &AppState, address: IpAddr) -> Result<(), OAuthFailure> {
    let addr_key = address_key(address);
    Failures {
        state,
        address,
        addr_key: &addr_key,
        now: state.clock.now(),
    }
    .count(None)
    .await
    .map(|_| ())
}

/// The address's throttle key and the failure counters of it (and of `account`);
/// refused while the address is throttled.
async fn admitted_address(
    state: &AppState,
    address: IpAddr,
    account: Option<&SignInAccount>,
    now: Timestamp,
) -> Result<(String, Vec<ThrottleRecord>), OAuthFailure> {
    let addr_key = address_key(address);
    let mut keys = vec![addr_key.clone()];
    keys.extend(account.map(SignInAccount::key));
    let counters = state.store.sign_in_throttle(&keys).await?;
    let counter = counters.iter().find(|r| r.key == addr_key);
    if let Verdict::Throttled(until) = state.config.sign_in_throttle.address_verdict(counter, now) {
        refused("address_throttled");
        return Err(OAuthFailure::address_throttled(seconds_until(now, until)));
    }
    Ok((addr_key, counters))
}

/// Counts failures for one request.
struct Failures<'a> {
    state: &'a AppState,
    address: IpAddr,
    addr_key: &'a str,
    now: Timestamp,
}

impl Failures<'_> {
    /// Counts a failure from the address (and the account); returns when the account
    /// got locked by it.
    async fn count(
        &self,
        account: Option<&SignInAccount>,
    ) -> Result<Option<Timestamp>, OAuthFailure> {
        let outcome = self
            .state
            .store
            .record_sign_in_failure(
                account,
                self.addr_key,
                &self.address.to_string(),
                &self.state.config.sign_in_throttle,
                self.now,
            )
            .await?;
        let locked = outcome.and_then(|f| f.locked_until);
        if let (Some(until), Some(account)) = (locked, account) {
            metrics::counter!("appfence_sign_in_lockouts_total").increment(1);
            tracing::warn!(tenant_id = %account.tenant_id, user = %truncate(&account.name, 100), address = %self.address, %until, "sign-in lockout: too many wrong passwords");
        }
        Ok(locked)
    }
}

/// The registered application presenting `client`, read from the store itself (never a
/// cache: a removed secret or a disabled application gets no token, on any replica, at
/// once). With a secret, the secret must be one of the application's (any of them:
/// rotation) and not expired; without one (a public client of the password grant), the
/// client must exist. Then the application must not be disabled.
async fn authenticate_client(
    state: &AppState,
    tenant: &Tenant,
    client: &ClientAuth,
    failures: &Failures<'_>,
) -> Result<AppRegistration, OAuthFailure> {
    let log = |reason: &str| {
        // The log says why; the caller gets Entra's answer.
        tracing::info!(
            tenant_id = %tenant.id,
            client_id = %truncate(&client.client_id, 100),
            address = %failures.address,
            reason,
            "client authentication failed"
        );
    };
    let Some(app) = state.store.app(&tenant.id, &client.client_id).await? else {
        failures.count(None).await?;
        refused("unknown_client");
        log("unknown client");
        return Err(OAuthFailure::unknown_client(&client.client_id, &tenant.id));
    };
    if let Some(secret) = &client.client_secret {
        match match_secret(state, &app, secret.expose()).await? {
            Some(stored) if stored.is_expired(failures.now) => {
                refused("expired_secret");
                log("expired secret");
                return Err(OAuthFailure::expired_client_secret(
                    &app.client_id,
                    client.basic_auth,
                ));
            }
            Some(_) => {}
            None => {
                failures.count(None).await?;
                refused("invalid_client");
                log("wrong secret");
                return Err(OAuthFailure::wrong_client_secret(
                    &app.client_id,
                    client.basic_auth,
                ));
            }
        }
    }
    if app.disabled.is_some() {
        refused("app_disabled");
        log("application disabled");
        return Err(OAuthFailure::app_disabled(
            &app.client_id,
            &app.display_name,
        ));
    }
    Ok(app)
}

/// The application's secret that `presented` is, if any: the fast forms first (each
/// compared in constant time), then any legacy Argon2id hash on the password pool,
/// which is re-stored in the fast form when it matches.
async fn match_secret(
    state: &AppState,
    app: &AppRegistration,
    presented: &str,
) -> Result<Option<AppSecret>, OAuthFailure> {
    let secrets = state
        .store
        .app_secrets(&app.tenant_id, &app.client_id)
        .await?;
    let mut found = None;
    for stored in &secrets {
        if let StoredSecret::Fast(hex) = StoredSecret::of(&stored.secret_hash) {
            // No early exit: every secret costs the same.
            if verify_generated_secret(presented, Some(hex)) {
                found = Some(stored.clone());
            }
        }
    }
    if found.is_some() {
        return Ok(found);
    }
    for stored in &secrets {
        if let StoredSecret::Legacy(phc) = StoredSecret::of(&stored.secret_hash) {
            let ok = state
                .passwords
                .verify(presented, Some(phc))
                .await
                .map_err(busy)?;
            if ok {
                restore_fast(state, app, phc, presented).await;
                return Ok(Some(stored.clone()));
            }
        }
    }
    Ok(None)
}

/// A client secret of an earlier version, just verified: stored again in the fast form
/// (if nobody changed it meanwhile). A failure here costs only speed.
async fn restore_fast(state: &AppState, app: &AppRegistration, legacy: &str, secret: &str) {
    match state
        .store
        .replace_app_secret_hash(
            &app.tenant_id,
            &app.client_id,
            legacy,
            &hash_generated_secret(secret),
        )
        .await
    {
        Ok(true) => {
            tracing::info!(client_id = %app.client_id, "client secret hash re-stored in the fast form")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(client_id = %app.client_id, error = %e, "cannot re-store a client secret hash")
        }
    }
}

/// The user whose name and password these are, unless the account is locked. An
/// unknown user and a wrong password get the same answer after the same work, and are
/// counted the same way (so a lockout tells nothing about who exists).
async fn authenticate_user(
    state: &AppState,
    tenant: &Tenant,
    credentials: &UserCredentials,
    account: &SignInAccount,
    counter: Option<&ThrottleRecord>,
    failures: &Failures<'_>,
) -> Result<UserRecord, OAuthFailure> {
    let policy = &state.config.sign_in_throttle;
    if let Verdict::Locked(until) = policy.account_verdict(counter, failures.now) {
        refused("account_locked");
        return Err(OAuthFailure::account_locked(seconds_until(
            failures.now,
            until,
        )));
    }
    let user = state.store.user(&tenant.id, &account.name).await?;
    let matches = state
        .passwords
        .verify(
            credentials.password.expose(),
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await
        .map_err(busy)?;
    match user {
        Some(user) if matches => {
            if counter.is_some_and(|c| c.failures > 0 || c.lockouts > 0) {
                state.store.clear_sign_in_failures(account).await?;
            }
            // Only someone with the right password learns that the account is disabled.
            if user.disabled.is_some() {
                refused("user_disabled");
                tracing::info!(
                    tenant_id = %tenant.id,
                    upn = %user.upn,
                    address = %failures.address,
                    "sign-in of a disabled user refused"
                );
                return Err(OAuthFailure::user_disabled());
            }
            Ok(user)
        }
        _ => {
            let locked = failures.count(Some(account)).await?;
            tracing::info!(
                tenant_id = %tenant.id,
                username = %truncate(&credentials.username, 100),
                address = %failures.address,
                "user authentication failed"
            );
            match locked {
                Some(until) => {
                    refused("account_locked");
                    Err(OAuthFailure::account_locked(seconds_until(
                        failures.now,
                        until,
                    )))
                }
                None => {
                    refused("invalid_grant");
                    Err(OAuthFailure::invalid_grant(
                        "The user name or password is incorrect",
                    ))
                }
            }
        }
    }
}

fn busy(_: Busy) -> OAuthFailure {
    refused("busy");
    OAuthFailure::busy()
}

/// Whole seconds from `now` until `until`, rounded up, at least 1.
fn seconds_until(now: Timestamp, until: Timestamp) -> u64 {
    const TICKS_PER_SECOND: i64 = 10_000_000;
    let ticks = (until.ticks() - now.ticks()).max(1);
    ((ticks + TICKS_PER_SECOND - 1) / TICKS_PER_SECOND) as u64
}
