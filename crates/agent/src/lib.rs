//! The device side of appfence: enrolment, the long-poll command loop, the persisted
//! state, and the enforcers (simulated, and fanotify on Linux: [`linux`]).
//!
//! - [`client::GatewayClient`] speaks the `/agent/v1` protocol of `appfence_proto::agent`.
//! - [`runner::run`] is one device's loop; [`simulated::spawn_fleet`] runs many in-process.
//! - [`state::StateDir`] holds the credential and the enforcement record on disk.
//! - [`enforcer::Enforcer`] is what actually restricts a device.
//! - [`events`] sends the enforcer's denials to the server in batches.

pub mod backoff;
pub mod client;
pub mod enforcer;
pub mod events;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod plan;
pub mod runner;
pub mod simulated;
pub mod state;

pub use client::{ClientError, GatewayClient};
pub use enforcer::{EnforceError, EnforcementReport, Enforcer};
pub use runner::{run, AgentConfig, AgentError};
pub use simulated::{spawn_fleet, spawn_fleet_on, SimTimings, SimulatedEnforcer};

// The loop against a fake gateway, inside the crate: no extra test binary to link.
#[cfg(test)]
mod fake_gateway_tests;
