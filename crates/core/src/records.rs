//! Domain records as the store keeps them, and their wire form.

use appfence_proto::agent::{
    Capabilities, DenialEvent, DesiredState, EnforcementMode, EnforcementState,
};
use appfence_proto::{
    ActionStatus, ActionType, Indicator, IpAddress, Machine, MachineAction, MachineEvent, Timestamp,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// A GUID, as in Entra ID.
    pub id: String,
    pub name: String,
}

/// An OAuth client (application registration) of one tenant. Its secrets are
/// [`AppSecret`]s, kept apart: an application may hold several at once (rotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRegistration {
    pub tenant_id: String,
    /// A GUID.
    pub client_id: String,
    pub display_name: String,
    /// Application permissions, e.g. `Machine.RestrictExecution`.
    pub roles: Vec<String>,
    pub created: Timestamp,
    /// Since when the application is disabled: it gets no token, and its tokens are
    /// refused. `None` while enabled.
    pub disabled: Option<Timestamp>,
}

/// One client secret of an application (Entra's `passwordCredential`). The secret
/// itself is never stored: `sha256:<hex>` for generated secrets, or the Argon2id PHC
/// string of an earlier version (re-stored in the fast form at its first use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSecret {
    /// A GUID (Entra's `keyId`): what `app secret remove` names.
    pub id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub secret_hash: String,
    /// The secret's first characters (Entra's `hint`), to tell secrets apart; `None`
    /// for secrets from before secrets had ids (migrated).
    pub hint: Option<String>,
    pub created: Timestamp,
    /// When the secret stops working; `None`: never (secrets migrated from a version
    /// without expiry).
    pub expires: Option<Timestamp>,
}

impl AppSecret {
    /// Whether the secret is expired at `now` (at or past `expires`).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// A credential that lets agents enrol devices into a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollSecret {
    /// A GUID: what `enroll-secret revoke` names.
    pub id: String,
    pub tenant_id: String,
    /// SHA-256 (hex) of the secret: secrets are 256-bit random, so a fast hash suffices.
    pub secret_sha256: String,
    pub created: Timestamp,
    /// When it stops enrolling devices; `None`: never.
    pub expires: Option<Timestamp>,
    /// How many devices it may enrol; `None`: any number.
    pub max_uses: Option<u32>,
    /// How many devices it enrolled (enrolling a known device again is not counted).
    pub uses: u32,
    /// When it was revoked; a revoked secret enrols nothing.
    pub revoked: Option<Timestamp>,
}

/// Why an enrolment secret enrols nothing (more) at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollSecretRefusal {
    Revoked,
    Expired,
    UsedUp,
}

impl EnrollSecret {
    /// Whether it may enrol one more device at `now`, else why not (revoked first,
    /// then expired, then used up).
    pub fn usable(&self, now: Timestamp) -> Result<(), EnrollSecretRefusal> {
        if self.revoked.is_some() {
            return Err(EnrollSecretRefusal::Revoked);
        }
        if self.expires.is_some_and(|e| e <= now) {
            return Err(EnrollSecretRefusal::Expired);
        }
        if self.max_uses.is_some_and(|m| self.uses >= m) {
            return Err(EnrollSecretRefusal::UsedUp);
        }
        Ok(())
    }
}

/// A signing key of the built-in authorization server, as the store keeps it: the
/// private part only ever sealed (see `appfence_core::signing_keys` for its life).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// `EdDSA` (Ed25519).
    pub algorithm: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The private key sealed (AEAD) with the key-encryption key `kek_id`, which lives
    /// outside the database. `None` once the key is retired (the private part is
    /// destroyed), or, for a key written by a version before sealing, until the next
    /// start seals it.
    pub sealed_private_key: Option<Vec<u8>>,
    /// The id of the key-encryption key that sealed the private key.
    pub kek_id: Option<String>,
    pub created: Timestamp,
    /// New tokens are signed with the newest key activated by now: a rotation
    /// publishes the next key before it signs, so every replica and every verifier
    /// holding our JWKS knows it first.
    pub activates: Timestamp,
    /// Set when a newer key takes over: tokens signed with this one verify until then
    /// (their longest lifetime after the handover).
    pub verify_until: Option<Timestamp>,
    /// Retired (expired, or retired by hand): verifies nothing any more.
    pub retired: Option<Timestamp>,
}

/// A private key written in plain form by a version before sealing, waiting to be
/// sealed by the next start.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsealedSigningKey {
    pub kid: String,
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for UnsealedSigningKey {
    /// Never the key itself: this may end up in a log or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealedSigningKey")
            .field("kid", &self.kid)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The sealed form of an [`UnsealedSigningKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSigningKey {
    pub kid: String,
    pub sealed_private_key: Vec<u8>,
    pub kek_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MachineRecord {
    pub tenant_id: String,
    /// 40 lower-case hex characters.
    pub id: String,
    pub aad_device_id: String,
    /// Lower case.
    pub computer_dns_name: String,
    pub first_seen: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub os_platform: String,
    pub os_version: String,
    pub kernel_version: String,
    pub os_architecture: String,
    pub agent_version: String,
    pub last_ip_address: Option<String>,
    pub ip_addresses: Vec<String>,
    pub health_status: String,
    pub onboarding_status: String,
    pub machine_tags: Vec<String>,
    pub rbac_group_id: i64,
    pub rbac_group_name: Option<String>,
    pub risk_score: String,
    pub exposure_level: String,
    pub device_value: String,
    pub capabilities: Capabilities,
    pub enforcement: EnforcementState,
    /// SHA-256 (hex) of the device credential.
    pub credential_sha256: String,
    /// SHA-256 (hex) of the enrolment key the device enrolled with, if it sent one: the
    /// same key lets it enrol again (for a new credential) under the same identity.
    /// Cleared when the machine is offboarded.
    pub enrollment_key_sha256: Option<String>,
    /// When the machine was offboarded (its offboard action ended `Succeeded`, `Failed`
    /// or `TimeOut`): from then on its credential is refused, it takes no actions, and
    /// it shows `onboardingStatus` [`ONBOARDING_OFFBOARDED`], `healthStatus`
    /// [`HEALTH_INACTIVE`]. Never undone.
    pub offboarded: Option<Timestamp>,
}

/// `onboardingStatus` of an enrolled device.
pub const ONBOARDING_ONBOARDED: &str = "Onboarded";
/// `onboardingStatus` of an offboarded device (the value MDE's Machine documentation
/// listed beside `Onboarded`).
pub const ONBOARDING_OFFBOARDED: &str = "Offboarded";
/// `healthStatus` of a device that reports.
pub const HEALTH_ACTIVE: &str = "Active";
/// `healthStatus` of a device that stopped reporting for good (MDE: "Inactive").
pub const HEALTH_INACTIVE: &str = "Inactive";

/// Whether an offboard action that reached `status` offboards its machine: every final
/// status but `Cancelled`. `Succeeded`: the device lifted its enforcement and stops.
/// `Failed`: the device said it could not do everything, and stops anyway; a device
/// must not be able to decline its offboarding. `TimeOut`: the device never answered
/// (lost, stolen, switched off); its credential must not outlive the request.
pub fn offboards(action_type: ActionType, status: ActionStatus) -> bool {
    action_type == ActionType::Offboard
        && matches!(
            status,
            ActionStatus::Succeeded | ActionStatus::Failed | ActionStatus::TimeOut
        )
}

/// A machine's place in the device groups, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAssignment {
    pub machine_id: String,
    pub rbac_group_id: i64,
    pub rbac_group_name: Option<String>,
}

/// A user of the built-in issuer (password grant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub tenant_id: String,
    /// `oid`: a GUID, stable across renames.
    pub object_id: String,
    /// Lower case.
    pub upn: String,
    /// PHC string of a slow hash (Argon2id).
    pub password_hash: String,
    /// Group ids, matched against `[[rbac.roles]]` and `[[device_groups]]` user groups.
    pub groups: Vec<String>,
    pub created: Timestamp,
    /// Since when the user is disabled: no sign-in, and their tokens are refused.
    /// `None` while enabled.
    pub disabled: Option<Timestamp>,
}

/// A signed-in session of the web console. The cookie carries a random secret; only its
/// SHA-256 is stored, so a copy of the database signs nobody in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Hex SHA-256 of the cookie secret; the primary key. The secret is 256-bit random,
    /// so a fast hash suffices (as for enrolment secrets).
    pub id_sha256: String,
    pub tenant_id: String,
    /// The user's `oid`: a local user's `UserRecord::object_id`, else the external
    /// issuer's `oid` (or `sub`).
    pub user_object_id: String,
    pub upn: String,
    /// The user's groups at sign-in, mapped to portal roles and device groups.
    pub groups: Vec<String>,
    /// `local` for the built-in issuer, else the external issuer's URL.
    pub issuer: String,
    pub created: Timestamp,
    pub last_seen: Timestamp,
    /// Absolute expiry, however active the session.
    pub expires: Timestamp,
}

impl ConsoleSession {
    /// Whether the session is over at `now`: at or past its absolute expiry, or unused
    /// for `idle` (`last_seen + idle <= now`). The store's
    /// `prune_console_sessions` deletes exactly these, in SQL.
    pub fn is_over(&self, now: Timestamp, idle: std::time::Duration) -> bool {
        self.expires <= now || self.last_seen <= Self::idle_cutoff(now, idle)
    }

    /// The latest `last_seen` that is idle at `now`: `now - idle`, in ticks, without
    /// overflow (an idle time beyond the range of timestamps never ends a session).
    pub fn idle_cutoff(now: Timestamp, idle: std::time::Duration) -> Timestamp {
        let idle = i64::try_from(idle.as_nanos() / 100).unwrap_or(i64::MAX);
        Timestamp::from_ticks(now.ticks().saturating_sub(idle))
    }
}

impl MachineRecord {
    pub fn to_wire(&self, odata_context: Option<String>) -> Machine {
        Machine {
            odata_context,
            id: self.id.clone(),
            computer_dns_name: Some(self.computer_dns_name.clone()),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            os_platform: Some(self.os_platform.clone()),
            version: Some(self.os_version.clone()),
            os_processor: Some(self.os_architecture.clone()),
            last_ip_address: self.last_ip_address.clone(),
            last_external_ip_address: None,
            agent_version: Some(self.agent_version.clone()),
            os_build: None,
            health_status: self.health_status.clone(),
            device_value: Some(self.device_value.clone()),
            rbac_group_id: self.rbac_group_id,
            rbac_group_name: self.rbac_group_name.clone(),
            risk_score: Some(self.risk_score.clone()),
            exposure_level: Some(self.exposure_level.clone()),
            is_aad_joined: false,
            aad_device_id: Some(self.aad_device_id.clone()),
            machine_tags: self.machine_tags.clone(),
            onboarding_status: self.onboarding_status.clone(),
            os_architecture: Some(self.os_architecture.clone()),
            ip_addresses: self
                .ip_addresses
                .iter()
                .map(|ip| IpAddress {
                    ip_address: ip.clone(),
                    mac_address: None,
                    operational_status: "Up".into(),
                    kind: None,
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActionRecord {
    pub tenant_id: String,
    /// Lower-case GUID.
    pub id: String,
    pub action_type: ActionType,
    pub title: Option<String>,
    pub requestor: String,
    pub requestor_comment: String,
    pub status: ActionStatus,
    pub machine_id: String,
    pub computer_dns_name: String,
    pub created: Timestamp,
    pub last_update: Timestamp,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
    pub cancellation_time: Option<Timestamp>,
    pub error_h_result: i64,
    pub external_id: Option<String>,
    pub request_source: String,
    pub troubleshoot_info: Option<String>,
}

impl ActionRecord {
    pub fn to_wire(&self, odata_context: Option<String>) -> MachineAction {
        MachineAction {
            odata_context,
            id: self.id.clone(),
            action_type: self.action_type,
            title: self.title.clone(),
            requestor: Some(self.requestor.clone()),
            requestor_comment: Some(self.requestor_comment.clone()),
            status: self.status,
            machine_id: Some(self.machine_id.clone()),
            computer_dns_name: Some(self.computer_dns_name.clone()),
            creation_date_time_utc: self.created,
            last_update_date_time_utc: self.last_update,
            cancellation_requestor: self.cancellation_requestor.clone(),
            cancellation_comment: self.cancellation_comment.clone(),
            cancellation_date_time_utc: self.cancellation_time,
            error_h_result: self.error_h_result,
            scope: None,
            external_id: self.external_id.clone(),
            request_source: Some(self.request_source.clone()),
            related_file_info: None,
            commands: Vec::new(),
            troubleshoot_info: self.troubleshoot_info.clone(),
        }
    }
}

/// A requested change of an action's status. The store applies it only if the
/// transition is allowed from the action's current status (see [`transition_allowed`]),
/// atomically with an audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusChange {
    pub to: ActionStatus,
    pub at: Timestamp,
    /// Who made the change: a requestor, `agent:<machine id>`, or `sweeper`.
    pub actor: String,
    pub reason: Option<String>,
    pub error_h_result: Option<i64>,
    pub troubleshoot_info: Option<String>,
    /// For `Cancelled`: the cancellation comment.
    pub cancellation_comment: Option<String>,
}

/// The action lifecycle: `Pending → InProgress`, and any open status to a final one.
/// A final status never changes.
pub fn transition_allowed(from: ActionStatus, to: ActionStatus) -> bool {
    use ActionStatus::*;
    matches!(
        (from, to),
        (Pending, InProgress)
            | (
                Pending | InProgress,
                Succeeded | Failed | TimeOut | Cancelled
            )
    )
}

/// The statuses from which `to` may be reached.
pub fn allowed_sources(to: ActionStatus) -> Vec<ActionStatus> {
    ActionStatus::ALL
        .into_iter()
        .filter(|from| transition_allowed(*from, to))
        .collect()
}

/// The result of asking the store to change an action's status.
#[derive(Clone, Debug, PartialEq)]
pub enum TransitionOutcome {
    /// The change was made; the action as it is now.
    Applied(ActionRecord),
    /// The action's status did not allow it; the action unchanged.
    Refused(ActionRecord),
}

/// One row of the append-only audit trail of status changes.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub action_id: String,
    pub at: Timestamp,
    pub actor: String,
    /// `None` for the creation of the action.
    pub from: Option<ActionStatus>,
    pub to: ActionStatus,
    pub reason: Option<String>,
}

/// The enforcement state the server wants for a device: restricted or not from its last
/// succeeded restrict-family action, the server's enforcement mode, and the tenant's
/// allowlist version.
pub fn desired_state(
    last_succeeded: Option<&ActionRecord>,
    mode: EnforcementMode,
    allowlist_version: u64,
) -> DesiredState {
    DesiredState {
        restricted: last_succeeded
            .is_some_and(|a| a.action_type == ActionType::RestrictCodeExecution),
        action_id: last_succeeded.map(|a| a.id.clone()),
        mode,
        allowlist_version,
    }
}

/// An indicator as the store keeps it (MDE's Indicator entity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndicatorRecord {
    pub tenant_id: String,
    /// Assigned by the store, never reused.
    pub id: i64,
    /// For `FileSha256`: lower-case hex.
    pub indicator_value: String,
    pub indicator_type: String,
    pub action: String,
    pub application: Option<String>,
    /// Display name of the submitting application, or the user's UPN.
    pub source: String,
    /// `AadApp` or `User`.
    pub source_type: String,
    /// Client id of the submitting application, or the user's UPN.
    pub created_by: String,
    pub title: String,
    pub description: String,
    pub recommended_actions: Option<String>,
    pub severity: String,
    pub expiration_time: Option<Timestamp>,
    pub generate_alert: bool,
    pub created: Timestamp,
    pub last_update: Timestamp,
    pub last_updated_by: Option<String>,
    /// The device groups it applies to (their names when submitted); empty: every
    /// device of the tenant.
    pub rbac_group_names: Vec<String>,
    /// Their ids, in the same order: what devices are matched on.
    pub rbac_group_ids: Vec<i64>,
}

impl IndicatorRecord {
    pub fn to_wire(&self, odata_context: Option<String>) -> Indicator {
        Indicator {
            odata_context,
            id: self.id.to_string(),
            indicator_value: self.indicator_value.clone(),
            indicator_type: self.indicator_type.clone(),
            action: self.action.clone(),
            application: self.application.clone(),
            source: self.source.clone(),
            source_type: self.source_type.clone(),
            title: self.title.clone(),
            creation_time_date_time_utc: self.created,
            created_by: self.created_by.clone(),
            expiration_time: self.expiration_time,
            last_update_time: self.last_update,
            last_updated_by: self.last_updated_by.clone(),
            severity: self.severity.clone(),
            description: self.description.clone(),
            recommended_actions: self.recommended_actions.clone(),
            rbac_group_names: self.rbac_group_names.clone(),
            rbac_group_ids: self.rbac_group_ids.iter().map(i64::to_string).collect(),
            generate_alert: self.generate_alert,
        }
    }

    /// Whether the indicator is in force at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expiration_time.is_none_or(|t| t > now)
    }

    /// Whether it applies to devices of this device group.
    pub fn applies_to_group(&self, rbac_group_id: i64) -> bool {
        self.rbac_group_ids.is_empty() || self.rbac_group_ids.contains(&rbac_group_id)
    }
}

/// A submitted indicator: a new one, or new values for the tenant's indicator with the
/// same type and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndicatorSubmission {
    pub tenant_id: String,
    pub indicator_value: String,
    pub indicator_type: String,
    pub action: String,
    /// Kept from the first submission: MDE does not update it.
    pub application: Option<String>,
    pub title: String,
    pub description: String,
    pub recommended_actions: Option<String>,
    pub severity: String,
    pub expiration_time: Option<Timestamp>,
    pub generate_alert: bool,
    /// Device groups, as resolved against the access policy; empty: every device.
    pub rbac_group_names: Vec<String>,
    pub rbac_group_ids: Vec<i64>,
    /// `createdBy` when new.
    pub submitted_by: String,
    /// `source` when new, `lastUpdatedBy` when an update.
    pub submitter_name: String,
    pub source_type: String,
    pub at: Timestamp,
}

/// The most denial events kept per machine; older ones are dropped as new ones arrive.
pub const MAX_EVENTS_PER_MACHINE: usize = 10_000;

/// A denial event as stored, with the machine it happened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenialRecord {
    pub machine_id: String,
    pub computer_dns_name: String,
    pub event: DenialEvent,
}

impl DenialRecord {
    pub fn to_wire(&self) -> MachineEvent {
        let e = &self.event;
        MachineEvent {
            time: e.time,
            path: e.path.clone(),
            sha256: e.sha256.clone(),
            pid: e.pid,
            uid: e.uid,
            parent: e.parent.clone(),
            kind: e.kind,
            monitor: e.monitor,
            machine_id: self.machine_id.clone(),
            computer_dns_name: self.computer_dns_name.clone(),
            rule: e.rule,
            indicator_id: e.indicator_id.clone(),
            alert: e.alert,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionStatus::*;

    #[test]
    fn final_statuses_never_change() {
        for from in [Succeeded, Failed, TimeOut, Cancelled] {
            for to in ActionStatus::ALL {
                assert!(!transition_allowed(from, to), "{from:?} -> {to:?}");
            }
        }
        assert!(transition_allowed(Pending, InProgress));
        assert!(!transition_allowed(InProgress, Pending));
        assert!(!transition_allowed(InProgress, InProgress));
        assert_eq!(allowed_sources(Cancelled), vec![Pending, InProgress]);
        assert_eq!(allowed_sources(InProgress), vec![Pending]);
    }

    #[test]
    fn every_end_of_an_offboard_but_a_cancellation_offboards() {
        for status in ActionStatus::ALL {
            assert_eq!(
                offboards(ActionType::Offboard, status),
                matches!(status, Succeeded | Failed | TimeOut),
                "{status:?}"
            );
            for t in ActionType::ALL {
                if t != ActionType::Offboard {
                    assert!(!offboards(t, status));
                }
            }
        }
    }
}

/// A plain machine record for unit tests of the domain rules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn machine(dns_name: &str) -> MachineRecord {
        MachineRecord {
            tenant_id: "t".into(),
            id: "0123456789abcdef0123456789abcdef01234567".into(),
            aad_device_id: "6f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
            computer_dns_name: dns_name.into(),
            first_seen: Timestamp::from_unix_seconds(1),
            last_seen: None,
            os_platform: "Linux".into(),
            os_version: String::new(),
            kernel_version: String::new(),
            os_architecture: String::new(),
            agent_version: "0.1.0".into(),
            last_ip_address: None,
            ip_addresses: vec![],
            health_status: "Active".into(),
            onboarding_status: "Onboarded".into(),
            machine_tags: vec![],
            rbac_group_id: 0,
            rbac_group_name: None,
            risk_score: "None".into(),
            exposure_level: "None".into(),
            device_value: "Normal".into(),
            capabilities: Capabilities::default(),
            enforcement: EnforcementState::default(),
            credential_sha256: String::new(),
            enrollment_key_sha256: None,
            offboarded: None,
        }
    }

    pub fn indicator(id: i64, value: &str) -> IndicatorRecord {
        IndicatorRecord {
            tenant_id: "t".into(),
            id,
            indicator_value: value.into(),
            indicator_type: "FileSha256".into(),
            action: "Allowed".into(),
            application: None,
            source: "SOAR".into(),
            source_type: "AadApp".into(),
            created_by: "c".into(),
            title: "t".into(),
            description: "d".into(),
            recommended_actions: None,
            severity: "Informational".into(),
            expiration_time: None,
            generate_alert: false,
            created: Timestamp::from_unix_seconds(1),
            last_update: Timestamp::from_unix_seconds(1),
            last_updated_by: None,
            rbac_group_names: vec![],
            rbac_group_ids: vec![],
        }
    }
}
