//! Enrolment: a device presents its tenant's enrolment secret and gets its own
//! credential, shown once and stored only as a hash.
//!
//! A device also sends an enrolment key of its own, stored as a hash with the machine.
//! Enrolling again under a host name already taken in the tenant succeeds only with that
//! key: the device then gets a new credential for the same machine (the old one stops
//! working), so an agent that never received or never saved the answer is not locked
//! out. Without the key a taken host name stays refused, and so does the name of an
//! offboarded machine, with any key (a lost or stolen device holding the tenant's
//! enrolment secret must not get its identity back).

use appfence_core::ids::{new_guid, new_machine_id};
use appfence_core::records::MachineRecord;
use appfence_core::{Error, MachineRef, Result};
use appfence_proto::agent::{EnforcementState, EnrollRequest, EnrollResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::agent_gateway::handlers::AgentJson;
use crate::oauth::secrets::{generate_secret, sha256_hex};
use crate::{ApiError, AppState};

pub async fn enroll(
    State(state): State<AppState>,
    AgentJson(req): AgentJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let secret = state
        .store
        .enroll_secret(&sha256_hex(req.enroll_secret.expose()))
        .await?
        .ok_or_else(|| Error::Unauthorized("The enrolment secret is not valid".into()))?;
    let hostname = match MachineRef::parse(req.hostname.trim()) {
        Ok(MachineRef::DnsName(h)) => h,
        _ => {
            return Err(Error::InvalidInput(format!(
                "'{}' is not a valid host name",
                appfence_core::ids::truncate(&req.hostname, 80)
            ))
            .into())
        }
    };
    let key_sha256 = req
        .enrollment_key
        .as_ref()
        .map(|k| enrollment_key_sha256(k.expose()))
        .transpose()?;
    let credential = generate_secret();
    let now = state.clock.now();
    let info = req.info;
    let machine = MachineRecord {
        tenant_id: secret.tenant_id.clone(),
        id: new_machine_id(),
        aad_device_id: new_guid(),
        computer_dns_name: hostname,
        first_seen: now,
        last_seen: Some(now),
        os_platform: info.os_platform.clone(),
        os_version: info.os_version.clone(),
        kernel_version: info.kernel_version.clone(),
        os_architecture: info.os_architecture.clone(),
        agent_version: info.agent_version.clone(),
        last_ip_address: info.ip_addresses.first().cloned(),
        ip_addresses: info.ip_addresses.clone(),
        health_status: "Active".into(),
        onboarding_status: "Onboarded".into(),
        machine_tags: info.machine_tags.clone(),
        rbac_group_id: 0,
        rbac_group_name: None,
        risk_score: "None".into(),
        exposure_level: "None".into(),
        device_value: "Normal".into(),
        capabilities: info.capabilities.clone(),
        enforcement: EnforcementState::default(),
        credential_sha256: sha256_hex(&credential),
        enrollment_key_sha256: key_sha256.clone(),
        offboarded: None,
    };
    let mut machine = machine;
    (machine.rbac_group_id, machine.rbac_group_name) = state
        .access
        .current()
        .rbac(&machine.tenant_id)
        .group_of(&machine);
    let machine = match (state.store.insert_machine(&machine).await, key_sha256) {
        (Ok(()), _) => {
            tracing::info!(machine = %machine.id, host = %machine.computer_dns_name, tenant = %machine.tenant_id, "device enrolled");
            machine
        }
        // The host name is an offboarded machine's: it stays so, whatever key comes.
        (Err(Error::BadRequest(_)), _) if offboarded(&state, &machine).await? => {
            tracing::warn!(host = %machine.computer_dns_name, tenant = %machine.tenant_id, "enrolment refused: the host name is an offboarded machine's");
            return Err(Error::BadRequest(format!(
                "A machine named {} was offboarded: its name cannot be enrolled again",
                machine.computer_dns_name
            ))
            .into());
        }
        // The host name is taken: by this very device, if it holds the key.
        (Err(taken @ Error::BadRequest(_)), Some(key_sha256)) => {
            let reenrolled = state
                .store
                .reenroll_machine(
                    &machine.tenant_id,
                    &machine.computer_dns_name,
                    &key_sha256,
                    &machine.credential_sha256,
                    &info,
                    now,
                )
                .await?;
            let Some(machine) = reenrolled else {
                return Err(taken.into());
            };
            tracing::info!(machine = %machine.id, host = %machine.computer_dns_name, tenant = %machine.tenant_id, "device enrolled again with its enrolment key; its previous credential no longer works");
            machine
        }
        (Err(e), _) => return Err(e.into()),
    };
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            machine_id: machine.id,
            aad_device_id: machine.aad_device_id,
            credential: credential.into(),
        }),
    ))
}

/// Whether the tenant's machine named like `machine` is offboarded.
async fn offboarded(state: &AppState, machine: &MachineRecord) -> Result<bool> {
    let existing = state
        .store
        .machine(
            &machine.tenant_id,
            &MachineRef::DnsName(machine.computer_dns_name.clone()),
        )
        .await?;
    Ok(existing.is_some_and(|m| m.offboarded.is_some()))
}

/// Shortest enrolment key accepted: the key alone stands between a holder of the
/// tenant's enrolment secret and another device's identity, so it must be as hard to
/// guess as a credential (the agent sends 32 random bytes, 43 base64url characters).
const MIN_ENROLLMENT_KEY_CHARS: usize = 43;
/// Longest enrolment key accepted (it is hashed; this only bounds the work).
const MAX_ENROLLMENT_KEY_CHARS: usize = 256;

/// The stored form of an enrolment key, after checking its length.
fn enrollment_key_sha256(key: &str) -> Result<String> {
    let chars = key.chars().count();
    if !(MIN_ENROLLMENT_KEY_CHARS..=MAX_ENROLLMENT_KEY_CHARS).contains(&chars) {
        return Err(Error::InvalidInput(format!(
            "The enrolment key must be {MIN_ENROLLMENT_KEY_CHARS} to \
             {MAX_ENROLLMENT_KEY_CHARS} characters long"
        )));
    }
    Ok(sha256_hex(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_keys_must_be_as_strong_as_a_credential() {
        let key = generate_secret();
        assert_eq!(key.len(), MIN_ENROLLMENT_KEY_CHARS);
        assert_eq!(enrollment_key_sha256(&key).unwrap(), sha256_hex(&key));
        for weak in ["", "guessable", &key[1..]] {
            assert!(matches!(
                enrollment_key_sha256(weak),
                Err(Error::InvalidInput(_))
            ));
        }
        let long = "k".repeat(MAX_ENROLLMENT_KEY_CHARS + 1);
        assert!(enrollment_key_sha256(&long).is_err());
        assert!(enrollment_key_sha256(&long[1..]).is_ok());
    }
}
