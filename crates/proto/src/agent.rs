//! The agent gateway protocol (`/agent/v1`): ours, not MDE's.
//!
//! Flow: `POST /agent/v1/enroll` once with the tenant's enrolment secret, which returns a
//! per-device credential; afterwards every call carries `Authorization: Bearer <credential>`.
//! An agent that lost the answer (or the credential) enrols again with the same
//! enrolment key and gets a new credential for the same machine.
//! The agent heartbeats, long-polls `GET /agent/v1/commands?waitSeconds=N`, acknowledges a
//! command (`POST /agent/v1/actions/{id}/ack`, which moves it to `InProgress` only if it is
//! still open; otherwise the agent must not apply it), applies it and reports the outcome
//! (`POST /agent/v1/actions/{id}/result`, idempotent).

use serde::{Deserialize, Serialize};

use crate::{ActionStatus, ActionType, Secret, Timestamp};

/// Version of this protocol; the server refuses agents that speak an older one.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest {
    pub enroll_secret: Secret,
    pub hostname: String,
    pub info: DeviceInfo,
    /// A random secret of this device (the agent sends 32 bytes, base64url), persisted
    /// before the first attempt. Enrolling again under a host name taken in the tenant
    /// succeeds only with the key the machine was enrolled with: the server then issues
    /// a new credential for that machine and the previous one stops working. Without a
    /// key (older agents) a taken host name is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_key: Option<Secret>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollResponse {
    pub machine_id: String,
    pub aad_device_id: String,
    /// The device credential: keep it secret, it is shown once.
    pub credential: Secret,
}

/// What the device says about itself, at enrolment and in every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// `Linux` for the appfence agent.
    pub os_platform: String,
    pub os_version: String,
    pub kernel_version: String,
    pub os_architecture: String,
    pub agent_version: String,
    pub ip_addresses: Vec<String>,
    pub capabilities: Capabilities,
    /// Tags declared by the device (`appfence agent --tag`), kept from enrolment; device
    /// groups can match on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_tags: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// The device can enforce a code-execution restriction.
    pub can_restrict_execution: bool,
    /// fanotify `FAN_OPEN_EXEC_PERM` is available.
    pub exec_permission_events: bool,
    /// fanotify `FAN_MARK_FILESYSTEM` is available.
    pub filesystem_marks: bool,
    /// The device is simulated (`serve --demo`): nothing is really enforced.
    pub simulated: bool,
}

/// How a restricted device treats programs outside the trusted set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnforcementMode {
    /// Deny them.
    #[default]
    Enforce,
    /// Allow them, but report what would have been denied.
    Monitor,
}

/// A time span during which the server wanted the device restricted but nothing
/// enforced it (the agent was down).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnprotectedPeriod {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// What the agent reports about its actual enforcement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementState {
    pub restricted: bool,
    pub since: Option<Timestamp>,
    /// Id of the action whose state is in force, if any.
    pub applied_action_id: Option<String>,
    #[serde(default)]
    pub mode: EnforcementMode,
    /// Mount points of the filesystems under enforcement (empty when not restricted).
    #[serde(default)]
    pub coverage: Vec<String>,
    /// The allowlist version in force.
    #[serde(default)]
    pub allowlist_version: u64,
    /// Seconds spent restricted-but-unenforced (agent down) since enrolment.
    #[serde(default)]
    pub unprotected_seconds: u64,
    /// The latest such period, if any.
    #[serde(default)]
    pub last_unprotected: Option<UnprotectedPeriod>,
    /// The agent cannot write its state directory (a full disk, a read-only mount): it
    /// goes on enforcing what it was told, but a restart would re-apply older state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_fault: Option<StateFault>,
    /// The files the host needs to stay manageable (the agent's own binary, the dynamic
    /// loader, PID 1's executable), hashed by the agent. The server refuses a block
    /// indicator for any of these hashes, and the agent never applies one that reaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<ProtectedFile>,
}

/// A file the host cannot do without, which no block indicator may touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedFile {
    /// Lower-case hex.
    pub sha256: String,
    pub path: String,
    pub role: ProtectedRole,
}

/// Why a file is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProtectedRole {
    /// The appfence agent's own executable.
    Agent,
    /// The dynamic loader (`ld-linux*.so`).
    Loader,
    /// PID 1's executable (systemd, init).
    Init,
}

impl ProtectedRole {
    pub fn describe(self) -> &'static str {
        match self {
            ProtectedRole::Agent => "the appfence agent",
            ProtectedRole::Loader => "the dynamic loader",
            ProtectedRole::Init => "PID 1's executable",
        }
    }
}

/// Why the agent's last write to its state directory failed, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateFault {
    pub path: String,
    pub error: String,
    pub since: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    pub info: DeviceInfo,
    pub enforcement: EnforcementState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// The state the server wants, derived from the last succeeded restrict-family action.
    pub desired: DesiredState,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    pub restricted: bool,
    /// The succeeded action that set this state, if any.
    pub action_id: Option<String>,
    /// Enforce or only monitor while restricted (server setting).
    #[serde(default)]
    pub mode: EnforcementMode,
    /// The tenant's allowlist version; when it differs from the agent's, the agent
    /// fetches `GET /agent/v1/allowlist`.
    #[serde(default)]
    pub allowlist_version: u64,
}

/// `GET /agent/v1/allowlist`: the device's file policy, compiled from the tenant's
/// unexpired `FileSha256` indicators that apply to the device's group. `sha256` is the
/// allowlist (action `Allowed`); `block` and `audit` carry the other actions. A hash is
/// in at most one of the three lists, block first: block beats allow for the same file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowlistResponse {
    /// The tenant's policy version: bumped by every indicator change, expiry, and
    /// device-group move.
    pub version: u64,
    /// Lower-case hex.
    pub sha256: Vec<String>,
    /// Files to deny executing (actions `Block`, `AlertAndBlock`, `BlockAndRemediate`),
    /// restricted or not. Sorted by hash. (Absent when empty, as from older servers.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<FileRule>,
    /// Files whose executions are allowed and reported (actions `Audit`, `Alert`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<FileRule>,
    /// The earliest expiration among the indicators of this policy: at that time the
    /// agent stops applying that rule and fetches the policy again (the server's
    /// sweeper also bumps the version when it deletes an expired indicator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_expiry: Option<Timestamp>,
}

/// One file rule of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRule {
    /// Lower-case hex.
    pub sha256: String,
    /// The indicator's action, as MDE spells it.
    pub action: String,
    /// The indicator's id, for the events the rule produces.
    pub indicator_id: String,
    /// Events of this rule are alerts.
    pub generate_alert: bool,
    /// When the rule stops applying, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

/// Why a program was (or, in monitor mode, would have been) stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DenialKind {
    /// Executing a file outside the trusted set.
    Exec,
    /// Opening an ELF object outside the trusted set (`ld.so ./x`, `dlopen`).
    ElfOpen,
}

/// One denied (or would-be denied) execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DenialEvent {
    pub time: Timestamp,
    pub path: String,
    /// Lower-case hex, when the file was hashed.
    pub sha256: Option<String>,
    pub pid: u32,
    pub uid: Option<u32>,
    /// The parent process's executable, if known.
    pub parent: Option<String>,
    pub kind: DenialKind,
    /// True when nothing was denied (monitor mode, or an audit rule).
    pub monitor: bool,
    /// The file rule that decided the event, if one did (absent for the restriction's
    /// own denials, and from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleOutcome>,
    /// The indicator behind `rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator_id: Option<String>,
    /// The indicator asked for alerts (`generateAlert`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alert: bool,
    /// The command line of process `pid` (arguments joined by spaces, at most
    /// [`MAX_COMMAND_LINE_BYTES`]), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// The name of user `uid`, from the host's `/etc/passwd`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Longest command line an agent reports (longer ones are cut at a character boundary).
pub const MAX_COMMAND_LINE_BYTES: usize = 4096;

/// What a file rule did to an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleOutcome {
    /// Denied by a block rule (restricted or not).
    Blocked,
    /// Allowed and reported by an audit rule.
    Audited,
}

/// `POST /agent/v1/events`: a batch of denials, oldest first (at most
/// [`MAX_EVENTS_PER_BATCH`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBatch {
    pub events: Vec<DenialEvent>,
}

pub const MAX_EVENTS_PER_BATCH: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBatchResponse {
    pub accepted: usize,
}

/// One command for the device: an open action, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub action_id: String,
    #[serde(rename = "type")]
    pub action_type: ActionType,
    pub status: ActionStatus,
    pub created: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandsResponse {
    /// Open actions for this device in creation order (empty when the wait expired).
    pub commands: Vec<Command>,
    pub desired: DesiredState,
}

/// Answer to an acknowledgement or a result report: the action's status after the call.
/// `applied` is false when the action was no longer open, in which case the agent must
/// not apply it (or must converge back to `desired`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionUpdateResponse {
    pub action_id: String,
    pub status: ActionStatus,
    pub applied: bool,
    pub desired: DesiredState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultRequest {
    pub outcome: Outcome,
    #[serde(default)]
    pub error_h_result: i64,
    #[serde(default)]
    pub troubleshoot_info: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_events_stay_wire_compatible() {
        // From an agent that predates file rules: the new fields default.
        let old = r#"{"time":"2026-12-07T10:00:00Z","path":"/tmp/x","sha256":null,
            "pid":7,"uid":0,"parent":null,"kind":"exec","monitor":false}"#;
        let event: DenialEvent = serde_json::from_str(old).unwrap();
        assert_eq!(
            (event.rule, event.indicator_id.as_deref(), event.alert),
            (None, None, false)
        );
        // Without a rule, nothing new is written, so an older server sees what it knows.
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("rule") && !text.contains("indicatorId") && !text.contains("alert"));
        let blocked = DenialEvent {
            rule: Some(RuleOutcome::Blocked),
            indicator_id: Some("42".into()),
            alert: true,
            ..event
        };
        let value = serde_json::to_value(&blocked).unwrap();
        assert_eq!(value["rule"], "blocked");
        assert_eq!(value["indicatorId"], "42");
        assert_eq!(value["alert"], true);
        let back: DenialEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, blocked);
    }
}
