//! Shared state of the request handlers.

use std::sync::Arc;

use appfence_core::authz::{Api, Principal};
use appfence_core::rbac::DeviceScope;
use appfence_core::{ActionRecord, Clock, MachineRef};
use appfence_store::{Change, Store};

use crate::access::{self, AccessHolder, AccessSpec, MachineGroups};
use crate::dispatch::Dispatcher;
use crate::oauth::external::{ExternalIssuers, FETCH_TIMEOUT};
use crate::oauth::keyring::KeyRing;
use crate::oauth::password_pool::PasswordPool;
use crate::oauth::principal_state::PrincipalStates;
use crate::oauth::tenants::TenantCache;
use crate::oauth::token_cache::TokenCache;
use crate::ratelimit::{MemoryRateLimiter, RateLimiter, StoreRateLimiter};
use crate::ServerConfig;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    /// The signing keys, kept current with the store.
    pub keys: Arc<KeyRing>,
    /// Tokens already verified (cleared when keys or access settings change).
    pub verified_tokens: Arc<TokenCache>,
    /// Tenant ids known to exist.
    pub tenants: Arc<TenantCache>,
    /// Whether the applications and users of this server's tokens may still act,
    /// re-read from the store within `principal_state::STATE_TTL`.
    pub principals: Arc<PrincipalStates>,
    /// Argon2id for passwords, bounded.
    pub passwords: Arc<PasswordPool>,
    pub dispatch: Arc<Dispatcher>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Roles, device groups and external issuers; replaced on reload.
    pub access: Arc<AccessHolder>,
    /// Verifiers of the external issuers in `access`, with their cached keys.
    pub external: Arc<ExternalIssuers>,
    /// Device groups of machines, for authorizing users' calls on actions.
    pub machine_groups: Arc<MachineGroups>,
    /// The data directory's free space, watched by the sweeper.
    pub disk_space: Arc<crate::disk_space::DiskSpace>,
    /// Enforce or monitor, as sent to agents; reloadable (SIGHUP), so not read from
    /// `config`.
    pub agent_mode: Arc<std::sync::RwLock<appfence_proto::agent::EnforcementMode>>,
    /// The certificate served, when serving HTTPS (reloaded on SIGHUP).
    pub tls: Arc<std::sync::OnceLock<Arc<appfence_tls::server::ReloadableCert>>>,
    /// The last readiness probe: when, and its verdict.
    pub readiness: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>>,
    /// The console's live views, told of every change.
    pub watchers: Arc<crate::watchers::Watchers>,
    /// When the sweeper last refreshed the store's planner statistics (injected clock).
    pub statistics_refreshed: Arc<std::sync::Mutex<Option<appfence_proto::Timestamp>>>,
}

impl AppState {
    pub async fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        crate::storage_health::global().set_location(if store.is_shared() {
            "the PostgreSQL database".to_string()
        } else {
            format!("the database in {}", config.data_dir.display())
        });
        let keys = KeyRing::open(
            store.as_ref(),
            clock.as_ref(),
            &config.key_file(),
            config.allow_group_read,
            config.rotation_timing(),
        )
        .await?;
        // Replicas share their counters through the store; one process counts in memory.
        let limiter: Arc<dyn RateLimiter> = if store.is_shared() {
            Arc::new(StoreRateLimiter::new(store.clone(), config.rate_limits))
        } else {
            Arc::new(MemoryRateLimiter::new(config.rate_limits))
        };
        // The access config may name "the only tenant", so there must be one.
        crate::oauth::apps::ensure_default_tenant(store.as_ref())
            .await
            .map_err(|e| format!("cannot prepare the default tenant: {e}"))?;
        let tenants = store
            .tenants()
            .await
            .map_err(|e| format!("cannot read the tenants: {e}"))?;
        let policy =
            access::resolve(&config.access, &tenants).map_err(|e| format!("config: {e}"))?;
        access::regroup_all(store.as_ref(), &policy)
            .await
            .map_err(|e| format!("cannot assign device groups: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client for key fetches: {e}"))?;
        let external = Arc::new(ExternalIssuers::new(http, clock.clone()));
        external.configure(policy.issuers.clone());
        Ok(AppState {
            machine_groups: Arc::new(MachineGroups::default()),
            disk_space: Arc::new(crate::disk_space::DiskSpace::new(config.disk_free_warning)),
            readiness: Arc::default(),
            statistics_refreshed: Arc::default(),
            watchers: Arc::default(),
            tls: Arc::default(),
            agent_mode: Arc::new(std::sync::RwLock::new(config.agent_mode)),
            external,
            access: Arc::new(AccessHolder::new(policy)),
            limiter,
            store,
            clock,
            config: Arc::new(config),
            keys: Arc::new(keys),
            verified_tokens: Arc::default(),
            tenants: Arc::default(),
            principals: Arc::default(),
            passwords: Arc::new(PasswordPool::for_this_machine()),
            dispatch: Arc::new(Dispatcher::default()),
        })
    }

    /// Enforce or monitor, in force now.
    pub fn agent_mode(&self) -> appfence_proto::agent::EnforcementMode {
        *self.agent_mode.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the settings that take effect without a restart (SIGHUP): the agents'
    /// mode (devices waiting on a long-poll hear of a change at once) and the rate
    /// limits. Says what changed.
    pub fn reload_runtime(
        &self,
        mode: appfence_proto::agent::EnforcementMode,
        limits: appfence_core::ratelimit::RateLimitPolicy,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        let before = std::mem::replace(
            &mut *self.agent_mode.write().unwrap_or_else(|e| e.into_inner()),
            mode,
        );
        if before != mode {
            changed.push(format!("agent_mode {before:?} -> {mode:?}"));
            self.dispatch.notify_all();
        }
        let old = self.limiter.policy();
        if old != limits {
            changed.push(format!(
                "rate limits {}/min {}/h -> {}/min {}/h",
                old.per_minute, old.per_hour, limits.per_minute, limits.per_hour
            ));
            self.limiter.set_policy(limits);
        }
        changed
    }

    /// Records the certificate being served (once, at start).
    pub fn set_tls(&self, cert: Option<Arc<appfence_tls::server::ReloadableCert>>) {
        if let Some(cert) = cert {
            let _ = self.tls.set(cert);
        }
    }

    /// Reads the certificate and key files again; `Ok(None)` when not serving HTTPS. A
    /// pair that does not load is refused and the one in force stays.
    pub fn reload_tls(&self) -> Result<Option<appfence_tls::server::Loaded>, String> {
        let Some(cert) = self.tls.get() else {
            return Ok(None);
        };
        cert.reload(
            self.clock.now().to_offset_date_time(),
            self.config.allow_group_read,
        )
        .map(Some)
    }

    pub fn public_url(&self) -> String {
        self.config.public_url()
    }

    /// Whether `principal` may call `api` (application role; or delegated scope, portal
    /// permission), and on which devices.
    pub fn authorize(
        &self,
        principal: &Principal,
        api: Api,
    ) -> Result<DeviceScope, appfence_core::Error> {
        self.access
            .current()
            .rbac(&principal.tenant_id)
            .authorize(principal, api)
    }

    /// `Forbidden` unless `scope` covers the machine an action is about.
    pub async fn check_action_device(
        &self,
        scope: &DeviceScope,
        action: &ActionRecord,
    ) -> Result<(), appfence_core::Error> {
        if *scope == DeviceScope::All {
            return Ok(());
        }
        let (group_id, group_name) = match self.machine_groups.get(&action.machine_id) {
            Some(known) => known,
            None => {
                let generation = self.machine_groups.generation();
                let machine = self
                    .store
                    .machine(
                        &action.tenant_id,
                        &MachineRef::Id(action.machine_id.clone()),
                    )
                    .await?
                    .ok_or_else(|| appfence_core::Error::action_not_found(&action.id))?;
                let group = (machine.rbac_group_id, machine.rbac_group_name);
                self.machine_groups
                    .remember(generation, &machine.id, group.clone());
                group
            }
        };
        scope.check_group(&action.machine_id, group_id, group_name.as_deref())
    }

    /// Something changed that waiting devices (or cached device groups) must hear
    /// about: acted on here at once, and published to every other replica sharing the
    /// store (which act on it when it arrives). A failed publication is logged: the
    /// change itself is committed, and other replicas' long-polls end within
    /// `long_poll_max` anyway.
    pub async fn announce(&self, change: Change) {
        self.apply_change(&change);
        if let Err(e) = self.store.publish(&change).await {
            tracing::warn!(error = %e, change = %change.payload(), "cannot tell the other replicas about a change");
        }
    }

    /// Acts on a change, whichever replica made it.
    pub fn apply_change(&self, change: &Change) {
        self.watchers.tell(change);
        match change {
            Change::Machine(id) => self.dispatch.notify(id),
            Change::Observed(_) => {}
            Change::Tenant(_) => self.dispatch.notify_all(),
            Change::Groups => self.machine_groups.clear(),
            Change::Everything => {
                self.machine_groups.clear();
                self.dispatch.notify_all();
            }
        }
    }

    /// Replaces the access policy (SIGHUP). A spec that does not validate is refused with
    /// a message naming the config line, and the policy in force stays.
    pub async fn reload_access(&self, spec: &AccessSpec) -> Result<ReloadSummary, String> {
        let tenants = self
            .store
            .tenants()
            .await
            .map_err(|e| format!("cannot read the tenants: {e}"))?;
        let policy = access::resolve(spec, &tenants)?;
        let summary = ReloadSummary {
            issuers: policy.issuers.len(),
            roles: spec.roles.len(),
            device_groups: spec.device_groups.len(),
            machines_regrouped: 0,
        };
        self.external.configure(policy.issuers.clone());
        self.access.replace(policy.clone());
        // Cached verifications may name issuers or claims the new policy refuses.
        self.verified_tokens.clear();
        let moved = access::regroup_all(self.store.as_ref(), &policy).await;
        // Cleared after the regrouping (even a partial one), so that no lookup in between
        // keeps a group from before it; other replicas clear theirs too. Devices that
        // moved have a new file policy (the store bumped the version): wake them all.
        let change = if matches!(moved, Ok(0)) {
            Change::Groups
        } else {
            Change::Everything
        };
        self.announce(change).await;
        let moved = moved.map_err(|e| {
            format!("the new policy is in force, but regrouping devices failed: {e}")
        })?;
        Ok(ReloadSummary {
            machines_regrouped: moved,
            ..summary
        })
    }
}

/// What a reload changed, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadSummary {
    pub issuers: usize,
    pub roles: usize,
    pub device_groups: usize,
    pub machines_regrouped: usize,
}
