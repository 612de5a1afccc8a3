//! appfence's domain: no I/O, no async. Everything here is decided from its inputs,
//! including the time, which comes from an injected [`Clock`].

pub mod alerts;
pub mod audit;
pub mod authz;
pub mod capability;
pub mod clock;
pub mod error;
pub mod grants;
pub mod ids;
pub mod indicators;
pub mod machine_lookup;
pub mod odata;
pub mod private_files;
pub mod ratelimit;
pub mod rbac;
pub mod records;
pub mod sign_in_throttle;
pub mod signing_keys;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result, StorageFault};
pub use ids::MachineRef;
pub use records::{ActionRecord, AppRegistration, IndicatorRecord, MachineRecord, Tenant};
