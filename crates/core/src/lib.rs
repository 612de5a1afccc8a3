//! appfence's domain: no I/O, no async. Everything here is decided from its inputs,
//! including the time, which comes from an injected [`Clock`].

pub mod authz;
pub mod capability;
pub mod clock;
pub mod error;
pub mod ids;
pub mod indicators;
pub mod odata;
pub mod ratelimit;
pub mod rbac;
pub mod records;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use ids::MachineRef;
pub use records::{ActionRecord, AppRegistration, IndicatorRecord, MachineRecord, Tenant};
