//! Enrolment: a device presents its tenant's enrolment secret and gets its own
//! credential, shown once and stored only as a hash.

use appfence_core::ids::{new_guid, new_machine_id};
use appfence_core::records::MachineRecord;
use appfence_core::{Error, MachineRef};
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
        .enroll_secret(&sha256_hex(&req.enroll_secret))
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
    };
    let mut machine = machine;
    (machine.rbac_group_id, machine.rbac_group_name) = state
        .access
        .current()
        .rbac(&machine.tenant_id)
        .group_of(&machine);
    state.store.insert_machine(&machine).await?;
    tracing::info!(machine = %machine.id, host = %machine.computer_dns_name, tenant = %machine.tenant_id, "device enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            machine_id: machine.id,
            aad_device_id: machine.aad_device_id,
            credential,
        }),
    ))
}
