//! Authenticates a device by its credential (`Authorization: Bearer <credential>`).
//! The credential of an offboarded machine is refused like an unknown one (the same
//! 401, so a caller learns nothing from it), and logged: a device that still presents
//! it after its offboarding may be a lost or stolen one.

use appfence_core::records::MachineRecord;
use appfence_core::Error;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::oauth::secrets::sha256_hex;
use crate::{ApiError, AppState};

#[derive(Clone)]
pub struct Device(pub MachineRecord);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Authenticated already on this request (the event batch gate does it first).
        if let Some(device) = parts.extensions.get::<Device>() {
            return Ok(device.clone());
        }
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
        let refused =
            || Error::Unauthorized("Device credential is not valid (revoked or unknown)".into());
        let machine = state
            .store
            .machine_by_credential(&sha256_hex(credential))
            .await?
            .ok_or_else(refused)?;
        if let Some(when) = machine.offboarded {
            tracing::warn!(
                machine = %machine.id,
                host = %machine.computer_dns_name,
                tenant = %machine.tenant_id,
                offboarded = %when,
                path = %parts.uri.path(),
                "an offboarded device presented its revoked credential; refused"
            );
            metrics::counter!("appfence_agent_revoked_credential_total").increment(1);
            return Err(refused().into());
        }
        Ok(Device(machine))
    }
}
