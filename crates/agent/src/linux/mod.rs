//! The real enforcer on Linux: a fanotify group with `FAN_OPEN_EXEC_PERM` and
//! `FAN_OPEN_PERM` filesystem marks, denying the execution of anything outside the
//! predefined set and the loading of untrusted ELF objects; plus `vm.memfd_noexec=2`.
//!
//! - [`enforcer`]: [`FanotifyEnforcer`], its configuration and its lifecycle.
//! - `engine`: the decision loop (reader thread, workers, deadlines).
//! - `trust`, `dpkg`, `rpm`, `digest`: the predefined set and how a file is checked
//!   against it.
//! - `cache`: decisions per file version; `denials`: what is reported to the server;
//!   `passwd`: user names from `/etc/passwd`.
//! - `memfd`, `mounts`, `sys`: the sysctl, the mount table (and the watcher that marks
//!   new mounts), the system calls.
//! - [`host`]: what the device says about itself; the boot-time escape.

mod cache;
mod denials;
mod digest;
mod dpkg;
pub mod enforcer;
mod engine;
pub mod host;
mod memfd;
mod mounts;
mod passwd;
mod protected;
mod rpm;
#[cfg(test)]
mod rpm_real_tests;
mod sys;
mod trust;

#[cfg(test)]
mod tests;

pub use denials::{AccessKind, DenialRecord};
pub use digest::{parse_sha256_hex, Sha256Hash};
pub use enforcer::{
    denial_event, probe_capabilities, DeadlineAnswer, FanotifyConfig, FanotifyEnforcer,
};
pub use engine::EnforcerStats;
// For the trust-data benchmark: the package indexes as the enforcer loads them.
pub use dpkg::PackageIndex;
pub use rpm::{find_database, load_rpm, load_rpm_cached, RpmIndex};
