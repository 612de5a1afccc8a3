//! `impl Store for PgStore`: each operation delegates to its module.

use appfence_core::alerts::{AlertCandidate, AlertChange, AlertRecord};
use appfence_core::audit::AuditEvent;
use appfence_core::authz::IndicatorScope;
use appfence_core::grants::{ClientRegistration, OAuthGrant};
use appfence_core::indicators::ProtectedHit;
use appfence_core::odata::{
    ActionField, AlertField, EventField, IndicatorField, MachineField, Page, Query,
};
use appfence_core::ratelimit::{Decision, RateLimitPolicy};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, AppRegistration, AppSecret, AuditRecord, ConsoleSession, DenialRecord,
    EnrollSecret, GroupAssignment, IndicatorRecord, IndicatorSubmission, MachineRecord,
    SealedSigningKey, SigningKey, StatusChange, Tenant, TransitionOutcome, UnsealedSigningKey,
    UserRecord,
};
use appfence_core::sign_in_throttle::{
    AccountFailure, SignInAccount, ThrottlePolicy, ThrottleRecord,
};
use appfence_core::{MachineRef, Result};
use appfence_proto::agent::{AllowlistResponse, DenialEvent, DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;

use super::outage::guarded;
use super::{
    actions, addresses, alerts, audit_log, console_sessions, credentials, events, indicators,
    machines, oauth_grants, rate_windows, signing_keys, throttle, PgStore,
};
use crate::{Change, GroupOf, Store};

#[async_trait::async_trait]
impl Store for PgStore {
    async fn ensure_tenant(&self, tenant: &Tenant) -> Result<()> {
        guarded!(self, credentials::ensure_tenant(&self.pool, tenant))
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        guarded!(self, credentials::tenants(&self.pool))
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        guarded!(self, credentials::tenant(&self.pool, id))
    }

    async fn password_grant(&self, tenant_id: &str) -> Result<Option<bool>> {
        guarded!(self, credentials::password_grant(&self.pool, tenant_id))
    }

    async fn set_password_grant(
        &self,
        tenant_id: &str,
        allowed: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<bool>> {
        guarded!(
            self,
            credentials::set_password_grant(&self.pool, tenant_id, allowed, actor, at)
        )
    }

    async fn insert_app(&self, app: &AppRegistration, secret: Option<&AppSecret>) -> Result<()> {
        guarded!(self, credentials::insert_app(&self.pool, app, secret))
    }

    async fn app(&self, tenant_id: &str, client_id: &str) -> Result<Option<AppRegistration>> {
        guarded!(self, credentials::app(&self.pool, tenant_id, client_id))
    }

    async fn apps(&self, tenant_id: &str) -> Result<Vec<AppRegistration>> {
        guarded!(self, credentials::apps(&self.pool, tenant_id))
    }

    async fn app_secrets(&self, tenant_id: &str, client_id: &str) -> Result<Vec<AppSecret>> {
        guarded!(
            self,
            credentials::app_secrets(&self.pool, tenant_id, client_id)
        )
    }

    async fn add_app_secret(&self, secret: &AppSecret, max: usize, actor: &str) -> Result<()> {
        guarded!(
            self,
            credentials::add_app_secret(&self.pool, secret, max, actor)
        )
    }

    async fn remove_app_secret(
        &self,
        tenant_id: &str,
        client_id: &str,
        secret_id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        guarded!(
            self,
            credentials::remove_app_secret(&self.pool, tenant_id, client_id, secret_id, actor, at)
        )
    }

    async fn set_app_disabled(
        &self,
        tenant_id: &str,
        client_id: &str,
        disabled: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<AppRegistration>> {
        guarded!(
            self,
            credentials::set_app_disabled(&self.pool, tenant_id, client_id, disabled, actor, at)
        )
    }

    async fn delete_app(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        guarded!(
            self,
            credentials::delete_app(&self.pool, tenant_id, client_id, actor, at)
        )
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        guarded!(self, credentials::insert_user(&self.pool, user))
    }

    async fn user(&self, tenant_id: &str, upn: &str) -> Result<Option<UserRecord>> {
        guarded!(self, credentials::user(&self.pool, tenant_id, upn))
    }

    async fn user_by_object_id(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<Option<UserRecord>> {
        guarded!(
            self,
            credentials::user_by_object_id(&self.pool, tenant_id, object_id)
        )
    }

    async fn users(&self, tenant_id: &str) -> Result<Vec<UserRecord>> {
        guarded!(self, credentials::users(&self.pool, tenant_id))
    }

    async fn set_user_disabled(
        &self,
        tenant_id: &str,
        upn: &str,
        disabled: bool,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<UserRecord>> {
        guarded!(
            self,
            credentials::set_user_disabled(&self.pool, tenant_id, upn, disabled, actor, at)
        )
    }

    async fn delete_user(
        &self,
        tenant_id: &str,
        upn: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        guarded!(
            self,
            credentials::delete_user(&self.pool, tenant_id, upn, actor, at)
        )
    }

    async fn set_user_password(
        &self,
        tenant_id: &str,
        upn: &str,
        password_hash: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<bool> {
        guarded!(
            self,
            credentials::set_user_password(&self.pool, tenant_id, upn, password_hash, actor, at)
        )
    }

    async fn set_user_groups(
        &self,
        tenant_id: &str,
        upn: &str,
        groups: &[String],
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<UserRecord>> {
        guarded!(
            self,
            credentials::set_user_groups(&self.pool, tenant_id, upn, groups, actor, at)
        )
    }

    async fn insert_enroll_secret(&self, secret: &EnrollSecret) -> Result<()> {
        guarded!(self, credentials::insert_enroll_secret(&self.pool, secret))
    }

    async fn enroll_secret(&self, secret_sha256: &str) -> Result<Option<EnrollSecret>> {
        guarded!(self, credentials::enroll_secret(&self.pool, secret_sha256))
    }

    async fn enroll_secrets(&self, tenant_id: &str) -> Result<Vec<EnrollSecret>> {
        guarded!(self, credentials::enroll_secrets(&self.pool, tenant_id))
    }

    async fn revoke_enroll_secret(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<EnrollSecret>> {
        guarded!(
            self,
            credentials::revoke_enroll_secret(&self.pool, tenant_id, id, actor, at)
        )
    }

    async fn claim_enroll_secret_use(&self, id: &str, now: Timestamp) -> Result<bool> {
        guarded!(
            self,
            credentials::claim_enroll_secret_use(&self.pool, id, now)
        )
    }

    async fn release_enroll_secret_use(&self, id: &str) -> Result<()> {
        guarded!(self, credentials::release_enroll_secret_use(&self.pool, id))
    }

    async fn replace_app_secret_hash(
        &self,
        tenant_id: &str,
        client_id: &str,
        expected: &str,
        new_hash: &str,
    ) -> Result<bool> {
        guarded!(
            self,
            credentials::replace_app_secret_hash(
                &self.pool, tenant_id, client_id, expected, new_hash
            )
        )
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        guarded!(self, signing_keys::list(&self.pool))
    }

    async fn add_signing_key(
        &self,
        key: &SigningKey,
        replacing: Option<&str>,
        superseded_until: Timestamp,
    ) -> Result<bool> {
        guarded!(
            self,
            signing_keys::add(&self.pool, key, replacing, superseded_until)
        )
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp, actor: &str) -> Result<bool> {
        guarded!(self, signing_keys::retire(&self.pool, kid, at, actor))
    }

    async fn unsealed_signing_keys(&self) -> Result<Vec<UnsealedSigningKey>> {
        Ok(signing_keys::unsealed())
    }

    async fn seal_signing_keys(&self, sealed: &[SealedSigningKey], _at: Timestamp) -> Result<()> {
        signing_keys::seal(sealed)
    }

    async fn sign_in_throttle(&self, keys: &[String]) -> Result<Vec<ThrottleRecord>> {
        guarded!(self, throttle::read_keys(&self.pool, keys))
    }

    async fn record_sign_in_failure(
        &self,
        account: Option<&SignInAccount>,
        address_key: &str,
        address: &str,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Option<AccountFailure>> {
        guarded!(
            self,
            throttle::record_failure(&self.pool, account, address_key, address, policy, now)
        )
    }

    async fn clear_sign_in_failures(&self, account: &SignInAccount) -> Result<()> {
        guarded!(self, throttle::clear(&self.pool, account))
    }

    async fn unlock_account(
        &self,
        account: &SignInAccount,
        actor: &str,
        now: Timestamp,
    ) -> Result<bool> {
        guarded!(self, throttle::unlock(&self.pool, account, actor, now))
    }

    async fn sweep_sign_in_throttle(
        &self,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Vec<SignInAccount>> {
        guarded!(self, throttle::sweep(&self.pool, policy, now))
    }

    async fn insert_oauth_grant(&self, grant: &OAuthGrant) -> Result<()> {
        guarded!(self, oauth_grants::insert(&self.pool, grant))
    }

    async fn oauth_grant(&self, id_sha256: &str) -> Result<Option<OAuthGrant>> {
        guarded!(self, oauth_grants::get(&self.pool, "id_sha256", id_sha256))
    }

    async fn oauth_grant_by_user_code(&self, user_code_sha256: &str) -> Result<Option<OAuthGrant>> {
        guarded!(
            self,
            oauth_grants::get(&self.pool, "user_code_sha256", user_code_sha256)
        )
    }

    async fn set_oauth_grant_status(
        &self,
        id_sha256: &str,
        from: &str,
        to: &str,
        user: Option<(&str, &str)>,
    ) -> Result<bool> {
        guarded!(
            self,
            oauth_grants::set_status(&self.pool, id_sha256, from, to, user)
        )
    }

    async fn record_oauth_poll(
        &self,
        id_sha256: &str,
        previous: Option<Timestamp>,
        at: Timestamp,
        interval_secs: u32,
    ) -> Result<bool> {
        guarded!(
            self,
            oauth_grants::poll(&self.pool, id_sha256, previous, at, interval_secs)
        )
    }

    async fn revoke_oauth_family(&self, family: &str) -> Result<u64> {
        guarded!(self, oauth_grants::revoke_family(&self.pool, family))
    }

    async fn prune_oauth_grants(&self, before: Timestamp) -> Result<u64> {
        guarded!(self, oauth_grants::prune(&self.pool, before))
    }

    async fn upsert_client_registration(&self, registration: &ClientRegistration) -> Result<()> {
        guarded!(self, oauth_grants::upsert_client(&self.pool, registration))
    }

    async fn client_registration(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<ClientRegistration>> {
        guarded!(self, oauth_grants::client(&self.pool, tenant_id, client_id))
    }

    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<()> {
        guarded!(self, console_sessions::insert(&self.pool, session))
    }

    async fn console_session(&self, id_sha256: &str) -> Result<Option<ConsoleSession>> {
        guarded!(self, console_sessions::get(&self.pool, id_sha256))
    }

    async fn touch_console_session(&self, id_sha256: &str, at: Timestamp) -> Result<bool> {
        guarded!(self, console_sessions::touch(&self.pool, id_sha256, at))
    }

    async fn delete_console_session(&self, id_sha256: &str) -> Result<bool> {
        guarded!(self, console_sessions::delete(&self.pool, id_sha256))
    }

    async fn delete_console_sessions_of_user(
        &self,
        tenant_id: &str,
        user_object_id: &str,
    ) -> Result<u64> {
        guarded!(
            self,
            console_sessions::delete_of_user(&self.pool, tenant_id, user_object_id)
        )
    }

    async fn count_console_sessions_of_user(
        &self,
        tenant_id: &str,
        user_object_id: &str,
    ) -> Result<u64> {
        guarded!(
            self,
            console_sessions::count_of_user(&self.pool, tenant_id, user_object_id)
        )
    }

    async fn prune_console_sessions(
        &self,
        now: Timestamp,
        idle: std::time::Duration,
    ) -> Result<u64> {
        guarded!(self, console_sessions::prune(&self.pool, now, idle))
    }

    async fn check(&self) -> Result<()> {
        guarded!(
            self,
            super::read(async {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(super::ctx("cannot reach the database"))?;
                Ok(())
            })
        )
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn rate_limit(
        &self,
        key: &str,
        policy: &RateLimitPolicy,
        now: Timestamp,
    ) -> Result<Decision> {
        guarded!(self, rate_windows::acquire(&self.pool, key, policy, now))
    }

    async fn prune_rate_windows(&self, before: Timestamp) -> Result<u64> {
        guarded!(self, rate_windows::prune(&self.pool, before))
    }

    async fn publish(&self, change: &Change) -> Result<()> {
        self.changes.publish(change);
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn append_audit_event(&self, event: &AuditEvent) -> Result<()> {
        guarded!(self, audit_log::append_alone(&self.pool, event))
    }

    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditEvent)>> {
        guarded!(self, audit_log::list(&self.pool, after, limit))
    }

    async fn insert_machine(&self, machine: &MachineRecord) -> Result<()> {
        guarded!(self, machines::insert(&self.pool, machine))
    }

    async fn reenroll_machine(
        &self,
        tenant_id: &str,
        hostname: &str,
        key_sha256: &str,
        new_credential_sha256: &str,
        info: &DeviceInfo,
        at: Timestamp,
    ) -> Result<Option<MachineRecord>> {
        guarded!(
            self,
            machines::reenroll(
                &self.pool,
                tenant_id,
                hostname,
                key_sha256,
                new_credential_sha256,
                info,
                at,
            )
        )
    }

    async fn machine(&self, tenant_id: &str, by: &MachineRef) -> Result<Option<MachineRecord>> {
        guarded!(self, machines::get(&self.pool, tenant_id, by))
    }

    async fn machine_by_credential(
        &self,
        credential_sha256: &str,
    ) -> Result<Option<MachineRecord>> {
        guarded!(self, machines::by_credential(&self.pool, credential_sha256))
    }

    async fn record_heartbeat(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()> {
        guarded!(
            self,
            self.heartbeats.record(machine_id, info, enforcement, at)
        )
    }

    async fn fleet_summary(&self, since: Timestamp) -> Result<crate::FleetSummary> {
        guarded!(self, machines::fleet_summary(&self.pool, since))
    }

    async fn list_machines(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<MachineField>,
    ) -> Result<Page<MachineRecord>> {
        guarded!(self, machines::list(&self.pool, tenant_id, scope, query))
    }

    async fn machines_seen_with_ip(
        &self,
        tenant_id: &str,
        ip: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MachineRecord>> {
        guarded!(
            self,
            addresses::machines_seen(&self.pool, tenant_id, ip, from, to)
        )
    }

    async fn prune_address_history(&self, before: Timestamp) -> Result<u64> {
        guarded!(self, addresses::prune(&self.pool, before))
    }

    async fn machines_with_tag(
        &self,
        tenant_id: &str,
        tag: &str,
        prefix: bool,
    ) -> Result<Vec<MachineRecord>> {
        guarded!(self, machines::with_tag(&self.pool, tenant_id, tag, prefix))
    }

    async fn change_machine_tag(
        &self,
        tenant_id: &str,
        ids: &[String],
        tag: &str,
        add: bool,
        group_of: &GroupOf,
    ) -> Result<Vec<MachineRecord>> {
        guarded!(
            self,
            machines::change_tag(&self.pool, tenant_id, ids, tag, add, group_of)
        )
    }

    async fn update_machine(
        &self,
        tenant_id: &str,
        id: &str,
        tags: Option<&[String]>,
        device_value: Option<&str>,
        group_of: &GroupOf,
    ) -> Result<MachineRecord> {
        guarded!(
            self,
            machines::update(&self.pool, tenant_id, id, tags, device_value, group_of)
        )
    }

    async fn set_machine_groups(
        &self,
        tenant_id: &str,
        assignments: &[GroupAssignment],
    ) -> Result<()> {
        guarded!(
            self,
            machines::set_groups(&self.pool, tenant_id, assignments)
        )
    }

    async fn create_action(&self, action: &ActionRecord) -> Result<()> {
        guarded!(self, actions::create(&self.pool, action))
    }

    async fn action(&self, tenant_id: &str, id: &str) -> Result<Option<ActionRecord>> {
        guarded!(self, actions::get(&self.pool, tenant_id, id))
    }

    async fn list_actions(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<ActionField>,
    ) -> Result<Page<ActionRecord>> {
        guarded!(self, actions::list(&self.pool, tenant_id, scope, query))
    }

    async fn transition(
        &self,
        action_id: &str,
        change: &StatusChange,
    ) -> Result<TransitionOutcome> {
        guarded!(self, actions::transition(&self.pool, action_id, change))
    }

    async fn open_actions(&self, machine_id: &str) -> Result<Vec<ActionRecord>> {
        guarded!(self, actions::open_for_machine(&self.pool, machine_id))
    }

    async fn last_succeeded_restrict_family(
        &self,
        machine_id: &str,
    ) -> Result<Option<ActionRecord>> {
        guarded!(
            self,
            actions::last_succeeded_restrict_family(&self.pool, machine_id)
        )
    }

    async fn time_out_actions(
        &self,
        pending_before: Timestamp,
        in_progress_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ActionRecord>> {
        guarded!(
            self,
            actions::time_out(&self.pool, pending_before, in_progress_before, now)
        )
    }

    async fn audit_trail(&self, action_id: &str) -> Result<Vec<AuditRecord>> {
        guarded!(self, actions::audit_trail(&self.pool, action_id))
    }

    async fn delete_old_actions(&self, before: Timestamp, limit: u32) -> Result<u64> {
        guarded!(self, async {
            actions::delete_old(&self.pool, before, limit)
                .await
                .map(|ids| ids.len() as u64)
        })
    }

    async fn delete_old_denials(&self, before: Timestamp, limit: u32) -> Result<u64> {
        guarded!(self, events::delete_old(&self.pool, before, limit))
    }

    async fn submit_indicators(
        &self,
        submissions: &[IndicatorSubmission],
        scope: &IndicatorScope,
    ) -> Result<Vec<Result<IndicatorRecord>>> {
        guarded!(
            self,
            indicators::submit_many(&self.pool, submissions, scope)
        )
    }

    async fn list_indicators(
        &self,
        tenant_id: &str,
        query: &Query<IndicatorField>,
    ) -> Result<Page<IndicatorRecord>> {
        guarded!(self, indicators::list(&self.pool, tenant_id, query))
    }

    async fn delete_indicator(
        &self,
        tenant_id: &str,
        id: i64,
        scope: &IndicatorScope,
    ) -> Result<bool> {
        guarded!(self, indicators::delete(&self.pool, tenant_id, id, scope))
    }

    async fn delete_expired_indicators(&self, now: Timestamp) -> Result<usize> {
        guarded!(self, indicators::delete_expired(&self.pool, now))
    }

    async fn allowlist_version(&self, tenant_id: &str) -> Result<u64> {
        guarded!(self, indicators::version(&self.pool, tenant_id))
    }

    async fn allowlist(
        &self,
        tenant_id: &str,
        rbac_group_id: i64,
        now: Timestamp,
    ) -> Result<AllowlistResponse> {
        guarded!(
            self,
            indicators::allowlist(&self.pool, tenant_id, rbac_group_id, now)
        )
    }

    async fn protected_files(&self, tenant_id: &str) -> Result<Vec<ProtectedHit>> {
        guarded!(self, indicators::protected_files(&self.pool, tenant_id))
    }

    async fn record_denials(
        &self,
        machine: &MachineRecord,
        events: &[DenialEvent],
        alerts: &[AlertCandidate],
        received: Timestamp,
    ) -> Result<()> {
        guarded!(
            self,
            events::record(&self.pool, machine, events, alerts, received)
        )
    }

    async fn list_denials(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<EventField>,
    ) -> Result<Page<DenialRecord>> {
        guarded!(self, events::list(&self.pool, tenant_id, scope, query))
    }

    async fn raise_alerts(
        &self,
        tenant_id: &str,
        alerts: &[AlertCandidate],
        now: Timestamp,
    ) -> Result<usize> {
        guarded!(self, alerts::raise(&self.pool, tenant_id, alerts, now))
    }

    async fn list_alerts(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<AlertField>,
    ) -> Result<Page<AlertRecord>> {
        guarded!(self, alerts::list(&self.pool, tenant_id, scope, query))
    }

    async fn get_alert(
        &self,
        tenant_id: &str,
        id: &str,
        scope: &DeviceScope,
    ) -> Result<Option<AlertRecord>> {
        guarded!(self, alerts::get(&self.pool, tenant_id, id, scope))
    }

    async fn update_alerts(
        &self,
        tenant_id: &str,
        ids: &[String],
        change: &AlertChange,
        scope: &DeviceScope,
        actor: &str,
        now: Timestamp,
    ) -> Result<Vec<AlertRecord>> {
        guarded!(
            self,
            alerts::update(&self.pool, tenant_id, ids, change, scope, actor, now)
        )
    }

    async fn delete_old_alerts(&self, before: Timestamp, limit: u32) -> Result<u64> {
        guarded!(self, alerts::delete_old(&self.pool, before, limit))
    }

    async fn silent_restricted_machines(
        &self,
        last_seen_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<MachineRecord>> {
        guarded!(
            self,
            alerts::silent_restricted(&self.pool, last_seen_before, limit)
        )
    }
}
