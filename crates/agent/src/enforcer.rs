//! What puts a device into (or out of) the restricted state.
//!
//! The command loop only says *which* state it wants; an [`Enforcer`] makes it so. Two
//! implementations are planned: [`crate::simulated::SimulatedEnforcer`] (pretends, for
//! `serve --demo` and tests) and the fanotify enforcer on Linux, which holds a fanotify
//! group while restricted and drops it to unrestrict. The loop persists the state and
//! reports to the server; an enforcer keeps no state on disk of its own (the fanotify
//! enforcer's saved `vm.memfd_noexec` value aside).
//!
//! Beyond the restricted state, the loop hands the enforcer the server's allowlist and
//! mode, collects its denials for the server, and reports its coverage. Those methods
//! have defaults so that an enforcer without the notion (a test double) needs nothing.

use std::sync::Arc;

use appfence_proto::agent::{
    Capabilities, Command, DenialEvent, EnforcementMode, FileRule, ProtectedFile,
};
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

    /// Replaces the server's allowlist: SHA-256 hashes in lower-case hex, already
    /// validated. In force when this returns; cached decisions are dropped.
    async fn set_allowlist(&self, _sha256: &[String]) {}

    /// Replaces the block and audit rules (hashes already checked, expired rules
    /// already dropped, block beating audit). Blocks apply whether the device is
    /// restricted or not, so an enforcer may have to start watching executions for
    /// them. In force when this returns.
    async fn set_file_rules(&self, _block: &[FileRule], _audit: &[FileRule]) {}

    /// The files no block may touch (the agent, the dynamic loader, PID 1's
    /// executable), hashed. Computed once; empty for an enforcer that blocks nothing.
    fn protected_files(&self) -> Vec<ProtectedFile> {
        Vec::new()
    }

    /// Enforce (deny) or only monitor (report what would be denied). Takes effect at once.
    fn set_mode(&self, _mode: EnforcementMode) {}

    /// The denials (or would-be denials) since the last call, oldest first.
    fn drain_denials(&self) -> Vec<DenialEvent> {
        Vec::new()
    }

    /// Mount points of the filesystems under enforcement (empty when not restricted).
    fn coverage(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An enforcer with restriction switched off for this boot (`appfence.disable=1` on the
/// kernel command line, the escape for a host that an enforcement bug keeps from
/// booting): every restriction is refused with a clear message, the rest passes through,
/// and the device reports that it cannot restrict.
pub struct DisabledAtBoot(pub Arc<dyn Enforcer>);

pub const DISABLED_AT_BOOT: &str =
    "enforcement is disabled for this boot (appfence.disable=1 on the kernel command line)";

#[async_trait]
impl Enforcer for DisabledAtBoot {
    async fn apply(&self, restricted: bool) -> Result<EnforcementReport, EnforceError> {
        if restricted {
            Err(EnforceError::failed(DISABLED_AT_BOOT))
        } else {
            self.0.apply(false).await
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_restrict_execution: false,
            ..self.0.capabilities()
        }
    }

    fn is_restricted(&self) -> bool {
        self.0.is_restricted()
    }

    async fn set_allowlist(&self, sha256: &[String]) {
        self.0.set_allowlist(sha256).await
    }

    // Blocks are not forwarded: watching executions for them is what the boot-time
    // escape switches off.
    async fn set_file_rules(&self, block: &[FileRule], _audit: &[FileRule]) {
        if !block.is_empty() {
            tracing::warn!(
                block = block.len(),
                "{DISABLED_AT_BOOT}: block rules are not enforced"
            );
        }
    }

    fn protected_files(&self) -> Vec<ProtectedFile> {
        self.0.protected_files()
    }

    fn set_mode(&self, mode: EnforcementMode) {
        self.0.set_mode(mode)
    }

    fn drain_denials(&self) -> Vec<DenialEvent> {
        self.0.drain_denials()
    }

    fn coverage(&self) -> Vec<String> {
        self.0.coverage()
    }
}

/// Whether `text` is a SHA-256 in lower-case hex, as the protocol writes them.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_64_lower_case_digits() {
        let ok = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(is_sha256_hex(ok));
        assert!(!is_sha256_hex(&ok.to_uppercase()));
        assert!(!is_sha256_hex(&ok[1..]));
        assert!(!is_sha256_hex(&ok.replace('b', "g")));
    }

    #[tokio::test]
    async fn disabled_at_boot_refuses_restriction_only() {
        use crate::simulated::{SimTimings, SimulatedEnforcer};
        let inner = Arc::new(SimulatedEnforcer::new(SimTimings::IMMEDIATE));
        let disabled = DisabledAtBoot(inner.clone());
        let err = disabled.apply(true).await.unwrap_err();
        assert_eq!(err.message, DISABLED_AT_BOOT);
        assert!(!disabled.is_restricted() && inner.apply_count() == 0);
        disabled.apply(false).await.unwrap();
        assert!(!disabled.capabilities().can_restrict_execution);
        disabled.set_mode(EnforcementMode::Monitor);
        assert_eq!(inner.mode(), EnforcementMode::Monitor);
    }
}
