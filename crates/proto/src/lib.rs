//! Wire types shared by the server, the agent and the clients.
//!
//! Everything here is serialised exactly as Microsoft Defender for Endpoint does
//! (field names, key order, timestamp precision), so these types are the contract.

pub mod action;
pub mod agent;
pub mod alert;
pub mod error;
pub mod indicator;
pub mod machine;
pub mod oauth;
pub mod odata;
pub mod secret;
pub mod timestamp;

pub use action::{ActionStatus, ActionType, MachineAction};
pub use alert::{Alert, AlertComment, AlertEvidence, RelatedUser};
pub use error::{ErrorBody, ErrorDetail};
pub use indicator::{
    Indicator, IndicatorImportResponse, IndicatorImportResult, MachineEnforcement, MachineEvent,
};
pub use machine::{IpAddress, Machine};
pub use odata::Collection;
pub use secret::Secret;
pub use timestamp::Timestamp;

/// `Content-Type` of every JSON response of the public API, as MDE sends it.
pub const ODATA_CONTENT_TYPE: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";
/// Value of the `OData-Version` response header.
pub const ODATA_VERSION: &str = "4.0";
