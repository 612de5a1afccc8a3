//! What puts a device into (or out of) the restricted state.
//!
//! The command loop only says *which* state it wants; an [`Enforcer`] makes it so. Two
//! implementations are planned: [`crate::simulated::SimulatedEnforcer`] (pretends, for
//! `serve --demo` and tests) and the fanotify enforcer on Linux, which holds a fanotify
//! group while restricted and drops it to unrestrict. The loop persists the state and
//! reports to the server; an enforcer keeps no state on disk of its own.

use appfence_proto::agent::{Capabilities, Command};
use async_trait::async_trait;

/// HRESULT values reported as `errorHResult` when an action fails (signed 32-bit, as MDE
/// prints them).
pub mod hresult {
    /// Unspecified failure (`0x80004005`).
    pub const E_FAIL: i64 = 0x8000_4005_u32 as i32 as i64;
    /// Not implemented (`0x80004001`): the action type is not supported by this agent.
    pub const E_NOTIMPL: i64 = 0x8000_4001_u32 as i32 as i64;
    /// Access denied (`0x80070005`), e.g. the agent lacks `CAP_SYS_ADMIN` for fanotify.
    pub const E_ACCESSDENIED: i64 = 0x8007_0005_u32 as i32 as i64;
}

/// What an enforcer did, for the logs and the action's `troubleshootInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnforcementReport {
    /// A short human-readable account ("marked 3 filesystems"), if there is one.
    pub detail: Option<String>,
}

/// Why an enforcer could not reach the requested state. Reported to the server as the
/// action's `errorHResult` and `troubleshootInfo`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (HRESULT {hresult:#x})")]
pub struct EnforceError {
    pub hresult: i64,
    pub message: String,
}

impl EnforceError {
    pub fn new(hresult: i64, message: impl Into<String>) -> Self {
        EnforceError {
            hresult,
            message: message.into(),
        }
    }

    /// An unspecified failure (`E_FAIL`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(hresult::E_FAIL, message)
    }
}

#[async_trait]
pub trait Enforcer: Send + Sync {
    /// Puts the device into the restricted (`true`) or unrestricted (`false`) state.
    /// Idempotent: asking for the state already in force succeeds without side effects
    /// beyond re-checking it. On error the enforcer is left in whatever state
    /// [`Enforcer::is_restricted`] then reports, and the loop converges from there.
    async fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError>;

    /// What this device can do, sent at enrolment and in every heartbeat.
    fn capabilities(&self) -> Capabilities;

    /// The state actually in force right now (not what was last asked for).
    fn is_restricted(&self) -> bool;

    /// Pacing hook, awaited before a command is acknowledged. Real enforcers return at
    /// once (the default); the simulated one waits to mimic a device's reaction time.
    async fn before_ack(&self, _command: &Command) {}
}
