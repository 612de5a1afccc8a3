//! `impl Store for PgStore`: each operation delegates to its module.

use appfence_core::audit::AuditEvent;
use appfence_core::authz::IndicatorScope;
use appfence_core::odata::{ActionField, EventField, IndicatorField, MachineField, Page, Query};
use appfence_core::ratelimit::{Decision, RateLimitPolicy};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, AppRegistration, AuditRecord, DenialRecord, EnrollSecret, GroupAssignment,
    IndicatorRecord, IndicatorSubmission, MachineRecord, SealedSigningKey, SigningKey,
    StatusChange, Tenant, TransitionOutcome, UnsealedSigningKey, UserRecord,
};
use appfence_core::sign_in_throttle::{
    AccountFailure, SignInAccount, ThrottlePolicy, ThrottleRecord,
};
use appfence_core::{MachineRef, Result};
use appfence_proto::agent::{AllowlistResponse, DenialEvent, DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;

use super::{
    actions, addresses, audit_log, credentials, events, indicators, machines, rate_windows,
    signing_keys, throttle, PgStore,
};
use crate::{Change, GroupOf, Store};

#[async_trait::async_trait]
impl Store for PgStore {
    async fn ensure_tenant(&self, tenant: &Tenant) -> Result<()> {
        credentials::ensure_tenant(&self.pool, tenant).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        credentials::tenants(&self.pool).await
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        credentials::tenant(&self.pool, id).await
    }

    async fn insert_app(&self, app: &AppRegistration) -> Result<()> {
        credentials::insert_app(&self.pool, app).await
    }

    async fn app(&self, tenant_id: &str, client_id: &str) -> Result<Option<AppRegistration>> {
        credentials::app(&self.pool, tenant_id, client_id).await
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        credentials::insert_user(&self.pool, user).await
    }

    async fn user(&self, tenant_id: &str, upn: &str) -> Result<Option<UserRecord>> {
        credentials::user(&self.pool, tenant_id, upn).await
    }

    async fn insert_enroll_secret(&self, secret: &EnrollSecret) -> Result<()> {
        credentials::insert_enroll_secret(&self.pool, secret).await
    }

    async fn enroll_secret(&self, secret_sha256: &str) -> Result<Option<EnrollSecret>> {
        credentials::enroll_secret(&self.pool, secret_sha256).await
    }

    async fn replace_app_secret_hash(
        &self,
        tenant_id: &str,
        client_id: &str,
        expected: &str,
        new_hash: &str,
    ) -> Result<bool> {
        credentials::replace_app_secret_hash(&self.pool, tenant_id, client_id, expected, new_hash)
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        signing_keys::list(&self.pool).await
    }

    async fn add_signing_key(
        &self,
        key: &SigningKey,
        replacing: Option<&str>,
        superseded_until: Timestamp,
    ) -> Result<bool> {
        signing_keys::add(&self.pool, key, replacing, superseded_until).await
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp, actor: &str) -> Result<bool> {
        signing_keys::retire(&self.pool, kid, at, actor).await
    }

    async fn unsealed_signing_keys(&self) -> Result<Vec<UnsealedSigningKey>> {
        Ok(signing_keys::unsealed())
    }

    async fn seal_signing_keys(&self, sealed: &[SealedSigningKey], _at: Timestamp) -> Result<()> {
        signing_keys::seal(sealed)
    }

    async fn sign_in_throttle(&self, keys: &[String]) -> Result<Vec<ThrottleRecord>> {
        throttle::read_keys(&self.pool, keys).await
    }

    async fn record_sign_in_failure(
        &self,
        account: Option<&SignInAccount>,
        address_key: &str,
        address: &str,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Option<AccountFailure>> {
        throttle::record_failure(&self.pool, account, address_key, address, policy, now).await
    }

    async fn clear_sign_in_failures(&self, account: &SignInAccount) -> Result<()> {
        throttle::clear(&self.pool, account).await
    }

    async fn unlock_account(
        &self,
        account: &SignInAccount,
        actor: &str,
        now: Timestamp,
    ) -> Result<bool> {
        throttle::unlock(&self.pool, account, actor, now).await
    }

    async fn sweep_sign_in_throttle(
        &self,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Vec<SignInAccount>> {
        throttle::sweep(&self.pool, policy, now).await
    }

    async fn check(&self) -> Result<()> {
        super::read(async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(super::ctx("cannot reach the database"))?;
            Ok(())
        })
        .await
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
        rate_windows::acquire(&self.pool, key, policy, now).await
    }

    async fn prune_rate_windows(&self, before: Timestamp) -> Result<u64> {
        rate_windows::prune(&self.pool, before).await
    }

    async fn publish(&self, change: &Change) -> Result<()> {
        self.changes.publish(change);
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn append_audit_event(&self, event: &AuditEvent) -> Result<()> {
        audit_log::append_alone(&self.pool, event).await
    }

    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditEvent)>> {
        audit_log::list(&self.pool, after, limit).await
    }

    async fn insert_machine(&self, machine: &MachineRecord) -> Result<()> {
        machines::insert(&self.pool, machine).await
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
        machines::reenroll(
            &self.pool,
            tenant_id,
            hostname,
            key_sha256,
            new_credential_sha256,
            info,
            at,
        )
        .await
    }

    async fn machine(&self, tenant_id: &str, by: &MachineRef) -> Result<Option<MachineRecord>> {
        machines::get(&self.pool, tenant_id, by).await
    }

    async fn machine_by_credential(
        &self,
        credential_sha256: &str,
    ) -> Result<Option<MachineRecord>> {
        machines::by_credential(&self.pool, credential_sha256).await
    }

    async fn record_heartbeat(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()> {
        machines::record_heartbeat(&self.pool, machine_id, info, enforcement, at).await
    }

    async fn list_machines(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<MachineField>,
    ) -> Result<Page<MachineRecord>> {
        machines::list(&self.pool, tenant_id, scope, query).await
    }

    async fn machines_seen_with_ip(
        &self,
        tenant_id: &str,
        ip: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MachineRecord>> {
        addresses::machines_seen(&self.pool, tenant_id, ip, from, to).await
    }

    async fn prune_address_history(&self, before: Timestamp) -> Result<u64> {
        addresses::prune(&self.pool, before).await
    }

    async fn machines_with_tag(
        &self,
        tenant_id: &str,
        tag: &str,
        prefix: bool,
    ) -> Result<Vec<MachineRecord>> {
        machines::with_tag(&self.pool, tenant_id, tag, prefix).await
    }

    async fn change_machine_tag(
        &self,
        tenant_id: &str,
        ids: &[String],
        tag: &str,
        add: bool,
        group_of: &GroupOf,
    ) -> Result<Vec<MachineRecord>> {
        machines::change_tag(&self.pool, tenant_id, ids, tag, add, group_of).await
    }

    async fn set_machine_groups(
        &self,
        tenant_id: &str,
        assignments: &[GroupAssignment],
    ) -> Result<()> {
        machines::set_groups(&self.pool, tenant_id, assignments).await
    }

    async fn create_action(&self, action: &ActionRecord) -> Result<()> {
        actions::create(&self.pool, action).await
    }

    async fn action(&self, tenant_id: &str, id: &str) -> Result<Option<ActionRecord>> {
        actions::get(&self.pool, tenant_id, id).await
    }

    async fn list_actions(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<ActionField>,
    ) -> Result<Page<ActionRecord>> {
        actions::list(&self.pool, tenant_id, scope, query).await
    }

    async fn transition(
        &self,
        action_id: &str,
        change: &StatusChange,
    ) -> Result<TransitionOutcome> {
        actions::transition(&self.pool, action_id, change).await
    }

    async fn open_actions(&self, machine_id: &str) -> Result<Vec<ActionRecord>> {
        actions::open_for_machine(&self.pool, machine_id).await
    }

    async fn last_succeeded_restrict_family(
        &self,
        machine_id: &str,
    ) -> Result<Option<ActionRecord>> {
        actions::last_succeeded_restrict_family(&self.pool, machine_id).await
    }

    async fn time_out_actions(
        &self,
        pending_before: Timestamp,
        in_progress_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ActionRecord>> {
        actions::time_out(&self.pool, pending_before, in_progress_before, now).await
    }

    async fn audit_trail(&self, action_id: &str) -> Result<Vec<AuditRecord>> {
        actions::audit_trail(&self.pool, action_id).await
    }

    async fn submit_indicator(
        &self,
        submission: &IndicatorSubmission,
        scope: &IndicatorScope,
    ) -> Result<IndicatorRecord> {
        indicators::submit(&self.pool, submission, scope).await
    }

    async fn list_indicators(
        &self,
        tenant_id: &str,
        query: &Query<IndicatorField>,
    ) -> Result<Page<IndicatorRecord>> {
        indicators::list(&self.pool, tenant_id, query).await
    }

    async fn delete_indicator(
        &self,
        tenant_id: &str,
        id: i64,
        scope: &IndicatorScope,
    ) -> Result<bool> {
        indicators::delete(&self.pool, tenant_id, id, scope).await
    }

    async fn delete_expired_indicators(&self, now: Timestamp) -> Result<usize> {
        indicators::delete_expired(&self.pool, now).await
    }

    async fn allowlist_version(&self, tenant_id: &str) -> Result<u64> {
        indicators::version(&self.pool, tenant_id).await
    }

    async fn allowlist(&self, tenant_id: &str, now: Timestamp) -> Result<AllowlistResponse> {
        indicators::allowlist(&self.pool, tenant_id, now).await
    }

    async fn record_denials(
        &self,
        machine: &MachineRecord,
        events: &[DenialEvent],
        received: Timestamp,
    ) -> Result<()> {
        events::record(&self.pool, machine, events, received).await
    }

    async fn list_denials(
        &self,
        tenant_id: &str,
        scope: &DeviceScope,
        query: &Query<EventField>,
    ) -> Result<Page<DenialRecord>> {
        events::list(&self.pool, tenant_id, scope, query).await
    }
}
