//! Enrolment: a device presents its tenant's enrolment secret and gets its own
//! credential, shown once and stored only as a hash.
//!
//! An enrolment secret may be revoked, may expire and may be good for a number of
//! devices: such a secret enrols nothing more, and the device is told why (401, the
//! MDE envelope). Each new device counts one use, claimed in the store before the
//! machine is added (so concurrent enrolments never exceed the maximum) and given back
//! if no device was added. Enrolling a known device again with its enrolment key (below)
//! counts no use, and works with a used-up secret, but not with a revoked or expired one.
//!
//! A device also sends an enrolment key of its own, stored as a hash with the machine.
//! Enrolling again under a host name already taken in the tenant succeeds only with that
//! key: the device then gets a new credential for the same machine (the old one stops
//! working), so an agent that never received or never saved the answer is not locked
//! out. Without the key a taken host name stays refused, and so does the name of an
//! offboarded machine, with any key (a lost or stolen device holding the tenant's
//! enrolment secret must not get its identity back).

use std::time::Duration;

use appfence_core::audit::{AuditEvent, ENROLL_SECRET_CREATED};
use appfence_core::ids::{new_guid, new_machine_id};
use appfence_core::records::{EnrollSecret, EnrollSecretRefusal, MachineRecord};
use appfence_core::{Clock, Error, MachineRef, Result};
use appfence_proto::agent::{EnforcementState, EnrollRequest, EnrollResponse};
use appfence_store::Store;
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
    let now = state.clock.now();
    let secret = state
        .store
        .enroll_secret(&sha256_hex(req.enroll_secret.expose()))
        .await?
        .ok_or_else(|| Error::Unauthorized("The enrolment secret is not valid".into()))?;
    match secret.usable(now) {
        Ok(()) | Err(EnrollSecretRefusal::UsedUp) => {}
        Err(why) => return Err(refusal(&secret, why).into()),
    }
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
    // A new device counts one use of the secret; a used-up secret can only enrol a
    // known device again.
    let inserted = if state.store.claim_enroll_secret_use(&secret.id, now).await? {
        let inserted = state.store.insert_machine(&machine).await;
        if inserted.is_err() {
            // No device was added (the host name is taken, or the store failed).
            state.store.release_enroll_secret_use(&secret.id).await?;
        }
        inserted
    } else {
        // Used up, or revoked or expired since it was read: say which.
        let now_read = state
            .store
            .enroll_secret(&secret.secret_sha256)
            .await?
            .unwrap_or_else(|| secret.clone());
        match now_read.usable(now) {
            Err(EnrollSecretRefusal::UsedUp) | Ok(()) => {
                Err(refusal(&now_read, EnrollSecretRefusal::UsedUp))
            }
            Err(why) => return Err(refusal(&now_read, why).into()),
        }
    };
    let machine = match (inserted, key_sha256) {
        (Ok(()), _) => {
            tracing::info!(machine = %machine.id, host = %machine.computer_dns_name, tenant = %machine.tenant_id, enroll_secret = %secret.id, "device enrolled");
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
        // The host name is taken, or the secret is used up: enrolling this very device
        // again works if it holds the key.
        (Err(refused @ (Error::BadRequest(_) | Error::Unauthorized(_))), Some(key_sha256)) => {
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
                return Err(refused.into());
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

/// Why `secret` enrols nothing, in words the agent's operator can act on.
fn refusal(secret: &EnrollSecret, why: EnrollSecretRefusal) -> Error {
    let fix = "create a new one with `appfence enroll-secret create`";
    Error::Unauthorized(match why {
        EnrollSecretRefusal::Revoked => format!(
            "The enrolment secret {} was revoked{}; {fix}",
            secret.id,
            secret
                .revoked
                .map(|t| format!(" at {t}"))
                .unwrap_or_default()
        ),
        EnrollSecretRefusal::Expired => format!(
            "The enrolment secret {} expired{}; {fix}",
            secret.id,
            secret
                .expires
                .map(|t| format!(" at {t}"))
                .unwrap_or_default()
        ),
        EnrollSecretRefusal::UsedUp => format!(
            "The enrolment secret {} has enrolled its maximum of {} devices; {fix}",
            secret.id,
            secret.max_uses.unwrap_or(secret.uses)
        ),
    })
}

/// The default lifetime of a new enrolment secret: 30 days, long enough to roll out a
/// fleet, short enough that a secret left in an image or a script stops working.
pub const DEFAULT_ENROLL_SECRET_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Creates an enrolment secret of the tenant, valid for `lifetime` (`None`: no expiry)
/// and for at most `max_uses` devices (`None`: any number), audited
/// (`EnrollSecretCreated`) as done by `actor`. The secret exists only in the return
/// value: the store keeps its SHA-256.
pub async fn create_enroll_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant_id: &str,
    lifetime: Option<Duration>,
    max_uses: Option<u32>,
    actor: &str,
) -> Result<(EnrollSecret, String)> {
    if max_uses == Some(0) {
        return Err(Error::BadRequest(
            "An enrolment secret must be good for at least one device".into(),
        ));
    }
    if lifetime.is_some_and(|l| l.is_zero()) {
        return Err(Error::BadRequest(
            "An enrolment secret must be valid for longer than 0".into(),
        ));
    }
    let now = clock.now();
    let secret = generate_secret();
    let record = EnrollSecret {
        id: new_guid(),
        tenant_id: tenant_id.to_string(),
        secret_sha256: sha256_hex(&secret),
        created: now,
        expires: lifetime.map(|l| now.plus(l)),
        max_uses,
        uses: 0,
        revoked: None,
    };
    store.insert_enroll_secret(&record).await?;
    let expires = record
        .expires
        .map_or_else(|| "never expires".to_string(), |t| format!("expires {t}"));
    let uses = record.max_uses.map_or_else(
        || "any number of devices".to_string(),
        |m| format!("at most {m} devices"),
    );
    store
        .append_audit_event(&AuditEvent {
            at: now,
            tenant_id: Some(tenant_id.to_string()),
            event: ENROLL_SECRET_CREATED.into(),
            subject: record.id.clone(),
            actor: actor.to_string(),
            detail: Some(format!("{expires}, {uses}")),
        })
        .await?;
    Ok((record, secret))
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
