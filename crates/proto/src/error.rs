//! The MDE error envelope: `{"error":{"code","message","target"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `ActiveRequestAlreadyExists`.
    pub code: String,
    /// Human-readable explanation, e.g. `Action is already in progress`.
    pub message: String,
    /// A fresh GUID per error, also written to the server log.
    pub target: String,
}
