//! OAuth 2.0 token endpoint wire types (Entra ID compatible).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Successful token response. `expires_in` is a JSON number, as clients parse it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub token_type: String,
    pub expires_in: u64,
    pub ext_expires_in: u64,
    pub access_token: String,
}

/// RFC 6749 §5.2 error response (`invalid_client`, `invalid_request`, ...), with
/// Entra ID's `error_codes` (the `AADSTS` numbers) when one applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u32>,
}
