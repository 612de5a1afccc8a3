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
/// A device was offboarded: its credential is refused from now on. The subject is the
/// machine id; the actor is who requested the offboarding; the detail names the action
/// and how it ended.
pub const DEVICE_OFFBOARDED: &str = "DeviceOffboarded";
