//! Authenticates a device by its credential (`Authorization: Bearer <credential>`).

use appfence_core::records::MachineRecord;
use appfence_core::Error;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::oauth::secrets::sha256_hex;
use crate::{ApiError, AppState};

pub struct Device(pub MachineRecord);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Unauthorized("Device credential is missing".into()))?;
        let credential = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, c)| c.trim())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::Unauthorized("Expected 'Authorization: Bearer <device credential>'".into())
            })?;
        let machine = state
            .store
            .machine_by_credential(&sha256_hex(credential))
            .await?
            .ok_or_else(|| {
                Error::Unauthorized("Device credential is not valid (revoked or unknown)".into())
            })?;
        Ok(Device(machine))
    }
}
