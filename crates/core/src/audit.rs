//! Security events for the audit log, beside the per-action audit trail: lockouts, key
//! rotations and retirements. Appended by the store, never changed.

use appfence_proto::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    /// `None` for events of the whole server (signing keys).
    pub tenant_id: Option<String>,
    /// One of the constants below.
    pub event: String,
    /// What the event is about: a user name, an address, a key id.
    pub subject: String,
    /// Who caused it: `appfence` for the server itself, or the operator's command.
    pub actor: String,
    pub detail: Option<String>,
}

/// The actor of events the server causes by itself.
pub const ACTOR_SERVER: &str = "appfence";

pub const SIGN_IN_LOCKOUT_STARTED: &str = "SignInLockoutStarted";
pub const SIGN_IN_LOCKOUT_ENDED: &str = "SignInLockoutEnded";
pub const ACCOUNT_UNLOCKED: &str = "AccountUnlocked";
pub const SIGNING_KEY_ADDED: &str = "SigningKeyAdded";
pub const SIGNING_KEY_RETIRED: &str = "SigningKeyRetired";
pub const SIGNING_KEYS_SEALED: &str = "SigningKeysSealed";

// The lifecycle of credentials (subject: the client id, the UPN, the secret's id).
pub const APP_CREATED: &str = "AppCreated";
pub const APP_SECRET_ADDED: &str = "AppSecretAdded";
pub const APP_SECRET_REMOVED: &str = "AppSecretRemoved";
pub const APP_DISABLED: &str = "AppDisabled";
pub const APP_ENABLED: &str = "AppEnabled";
pub const APP_DELETED: &str = "AppDeleted";
pub const USER_CREATED: &str = "UserCreated";
pub const USER_DISABLED: &str = "UserDisabled";
pub const USER_ENABLED: &str = "UserEnabled";
pub const USER_DELETED: &str = "UserDeleted";
pub const USER_PASSWORD_CHANGED: &str = "UserPasswordChanged";
pub const USER_GROUPS_CHANGED: &str = "UserGroupsChanged";
pub const ENROLL_SECRET_CREATED: &str = "EnrollSecretCreated";
pub const ENROLL_SECRET_REVOKED: &str = "EnrollSecretRevoked";
/// The tenant's token endpoints accept (or refuse) `grant_type=password` from now on.
/// The subject is the tenant id.
pub const PASSWORD_GRANT_ENABLED: &str = "PasswordGrantEnabled";
pub const PASSWORD_GRANT_DISABLED: &str = "PasswordGrantDisabled";
/// A device was offboarded: its credential is refused from now on. The subject is the
/// machine id; the actor is who requested the offboarding; the detail names the action
/// and how it ended.
pub const DEVICE_OFFBOARDED: &str = "DeviceOffboarded";
/// An analyst changed an alert (subject: the alert id; detail: what changed).
pub const ALERT_UPDATED: &str = "AlertUpdated";
