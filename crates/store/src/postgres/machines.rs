//! Enrolled devices: insertion, re-enrolment, lookups, heartbeats, listing, device
//! groups and tags. JSONB columns are written from text and read `::text`.

use appfence_core::odata::{MachineField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, GroupAssignment, MachineRecord, HEALTH_INACTIVE, ONBOARDING_OFFBOARDED,
};
use appfence_core::{Error, MachineRef, Result};
use appfence_proto::agent::{DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};
use subtle::ConstantTimeEq;

use super::list::{self, Collection};
use super::{addresses, begin, commit, ctx, read, retry, violates, Fail, PgResult};
use crate::odata_sql::{Column, SortKey};
use crate::rows::{self, to_json};
use crate::GroupOf;
use appfence_core::odata::Direction;

pub(super) const MACHINE_COLUMNS: &str = "id, tenant_id, aad_device_id, computer_dns_name, \
     first_seen, last_seen, os_platform, os_version, kernel_version, os_architecture, \
     agent_version, last_ip_address, ip_addresses::text AS ip_addresses, health_status, \
     onboarding_status, machine_tags::text AS machine_tags, rbac_group_id, rbac_group_name, \
     risk_score, exposure_level, device_value, capabilities::text AS capabilities, \
     enforcement::text AS enforcement, credential_sha256, enrollment_key_sha256, offboarded";

fn column(f: MachineField) -> Column {
    match f {
        MachineField::ComputerDnsName => Column::NoCaseText("computer_dns_name"),
        MachineField::Id => Column::Text("id"),
        MachineField::AadDeviceId => Column::Text("aad_device_id"),
        MachineField::Version => Column::Text("os_version"),
        MachineField::HealthStatus => Column::Text("health_status"),
        MachineField::OsPlatform => Column::Text("os_platform"),
        MachineField::OnboardingStatus => Column::Text("onboarding_status"),
        MachineField::LastSeen => Column::Int("last_seen"),
        MachineField::FirstSeen => Column::Int("first_seen"),
        MachineField::MachineTags => Column::JsonTextArray("machine_tags"),
        MachineField::RbacGroupId => Column::Int("rbac_group_id"),
        MachineField::LastIpAddress => Column::Text("last_ip_address"),
        MachineField::RiskScore => Column::Text("risk_score"),
        MachineField::ExposureLevel => Column::Text("exposure_level"),
        MachineField::DeviceValue => Column::Text("device_value"),
        MachineField::AgentVersion => Column::Text("agent_version"),
        // The agent's report, inside the enforcement JSON (a console filter).
        MachineField::Restricted => Column::Int("(enforcement->>'restricted')::boolean::int::int8"),
    }
}

const COLLECTION: Collection<MachineField> = Collection {
    table: "machines",
    columns: MACHINE_COLUMNS,
    column,
    default_order: "first_seen DESC, computer_dns_name, id",
    default_keys: &[
        SortKey {
            col: Column::Int("first_seen"),
            dir: Direction::Desc,
            nullable: false,
        },
        SortKey {
            col: Column::Text("computer_dns_name"),
            dir: Direction::Asc,
            nullable: false,
        },
        SortKey {
            col: Column::Text("id"),
            dir: Direction::Asc,
            nullable: false,
        },
    ],
    tiebreak_key: SortKey {
        col: Column::Text("id"),
        dir: Direction::Asc,
        nullable: false,
    },
    nullable: &["last_seen", "last_ip_address"],
    implied: &[],
    what: "cannot list machines",
    device_group: "rbac_group_id",
};

pub(super) async fn insert(pool: &PgPool, m: &MachineRecord) -> Result<()> {
    let dns_name = m.computer_dns_name.to_ascii_lowercase();
    let (ips, tags, caps, enf) = (
        to_json(&m.ip_addresses)?,
        to_json(&m.machine_tags)?,
        to_json(&m.capabilities)?,
        to_json(&m.enforcement)?,
    );
    retry(|| async {
        let mut tx = begin(pool).await?;
        let inserted = sqlx::query(
            "INSERT INTO machines (id, tenant_id, aad_device_id, computer_dns_name, first_seen, \
             last_seen, os_platform, os_version, kernel_version, os_architecture, agent_version, \
             last_ip_address, ip_addresses, health_status, onboarding_status, machine_tags, \
             rbac_group_id, rbac_group_name, risk_score, exposure_level, device_value, \
             capabilities, enforcement, credential_sha256, enrollment_key_sha256, offboarded) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, $15, \
              $16::jsonb, $17, $18, $19, $20, $21, $22::jsonb, $23::jsonb, $24, $25, $26)",
        )
        .bind(&m.id)
        .bind(&m.tenant_id)
        .bind(&m.aad_device_id)
        .bind(&dns_name)
        .bind(m.first_seen.ticks())
        .bind(m.last_seen.map(Timestamp::ticks))
        .bind(&m.os_platform)
        .bind(&m.os_version)
        .bind(&m.kernel_version)
        .bind(&m.os_architecture)
        .bind(&m.agent_version)
        .bind(&m.last_ip_address)
        .bind(&ips)
        .bind(&m.health_status)
        .bind(&m.onboarding_status)
        .bind(&tags)
        .bind(m.rbac_group_id)
        .bind(&m.rbac_group_name)
        .bind(&m.risk_score)
        .bind(&m.exposure_level)
        .bind(&m.device_value)
        .bind(&caps)
        .bind(&enf)
        .bind(&m.credential_sha256)
        .bind(&m.enrollment_key_sha256)
        .bind(m.offboarded.map(Timestamp::ticks))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if violates(&e, "machines_dns_name_in_tenant") => {
                return Err(Fail::App(Error::BadRequest(format!(
                    "A machine named {dns_name} already exists"
                ))))
            }
            Err(e) => return Err(ctx("cannot insert a machine")(e)),
        }
        let seen = m.last_seen.unwrap_or(m.first_seen);
        addresses::record(&mut tx, &m.id, &m.tenant_id, &m.ip_addresses, seen).await?;
        commit(tx).await
    })
    .await
}

/// Offboards the machine of `action`, an offboard action that just ended, inside the
/// caller's transaction: its credential is refused from now on (the gateway checks
/// `offboarded`), its enrolment key can no longer enrol it again, and it shows as MDE
/// shows an offboarded device. Appends `DeviceOffboarded` to the audit log. A machine
/// offboarded already is left as it is.
pub(super) async fn offboard_on(
    tx: &mut Transaction<'static, Postgres>,
    action: &ActionRecord,
    at: Timestamp,
) -> PgResult<()> {
    let done = sqlx::query(
        "UPDATE machines SET offboarded = $1, onboarding_status = $2, health_status = $3, \
             enrollment_key_sha256 = NULL \
         WHERE id = $4 AND offboarded IS NULL",
    )
    .bind(at.ticks())
    .bind(ONBOARDING_OFFBOARDED)
    .bind(HEALTH_INACTIVE)
    .bind(&action.machine_id)
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot offboard a machine"))?;
    if done.rows_affected() == 0 {
        return Ok(());
    }
    super::audit_log::append(tx, &crate::offboarded_event(action, at)).await
}

/// Compares two hashes in time independent of where they differ.
fn same_hash(stored: &str, given: &str) -> bool {
    stored.as_bytes().ct_eq(given.as_bytes()).into()
}

pub(super) async fn reenroll(
    pool: &PgPool,
    tenant_id: &str,
    hostname: &str,
    key_sha256: &str,
    new_credential_sha256: &str,
    info: &DeviceInfo,
    at: Timestamp,
) -> Result<Option<MachineRecord>> {
    let (ips, caps) = (to_json(&info.ip_addresses)?, to_json(&info.capabilities)?);
    retry(|| async {
        let mut tx = begin(pool).await?;
        let found = sqlx::query(
            "SELECT id, enrollment_key_sha256 FROM machines \
             WHERE tenant_id = $1 AND computer_dns_name = $2 AND offboarded IS NULL FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(hostname.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read a machine"))?;
        let Some(found) = found else { return Ok(None) };
        let id: String = found
            .try_get("id")
            .map_err(ctx("cannot decode a machine"))?;
        let stored: Option<String> = found
            .try_get("enrollment_key_sha256")
            .map_err(ctx("cannot decode a machine"))?;
        if !stored.is_some_and(|stored| same_hash(&stored, key_sha256)) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "UPDATE machines SET credential_sha256 = $1, os_platform = $2, os_version = $3, \
                 kernel_version = $4, os_architecture = $5, agent_version = $6, \
                 ip_addresses = $7::jsonb, last_ip_address = $8, capabilities = $9::jsonb, \
                 last_seen = $10, health_status = 'Active' \
             WHERE id = $11 RETURNING {MACHINE_COLUMNS}"
        ))
        .bind(new_credential_sha256)
        .bind(&info.os_platform)
        .bind(&info.os_version)
        .bind(&info.kernel_version)
        .bind(&info.os_architecture)
        .bind(&info.agent_version)
        .bind(&ips)
        .bind(info.ip_addresses.first())
        .bind(&caps)
        .bind(at.ticks())
        .bind(&id)
        .fetch_one(&mut *tx)
        .await
        .map_err(ctx("cannot re-enrol a machine"))?;
        let machine = rows::machine(&row)?;
        addresses::record(&mut tx, &id, tenant_id, &info.ip_addresses, at).await?;
        commit(tx).await?;
        Ok(Some(machine))
    })
    .await
}

pub(super) async fn get(
    pool: &PgPool,
    tenant_id: &str,
    by: &MachineRef,
) -> Result<Option<MachineRecord>> {
    let (condition, value) = match by {
        MachineRef::Id(id) => ("id = $2", id.clone()),
        MachineRef::AadDeviceId(g) => ("aad_device_id = $2", g.to_ascii_lowercase()),
        MachineRef::DnsName(n) => ("computer_dns_name = $2", n.to_ascii_lowercase()),
    };
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND {condition}"
        ))
        .bind(tenant_id)
        .bind(value)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a machine"))?;
        Ok(row.as_ref().map(rows::machine).transpose()?)
    })
    .await
}

pub(super) async fn by_credential(
    pool: &PgPool,
    credential_sha256: &str,
) -> Result<Option<MachineRecord>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_sha256 = $1"
        ))
        .bind(credential_sha256)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a machine by credential"))?;
        Ok(row.as_ref().map(rows::machine).transpose()?)
    })
    .await
}

pub(super) async fn record_heartbeat(
    pool: &PgPool,
    machine_id: &str,
    info: &DeviceInfo,
    enforcement: &EnforcementState,
    at: Timestamp,
) -> Result<()> {
    let (ips, caps, enf) = (
        to_json(&info.ip_addresses)?,
        to_json(&info.capabilities)?,
        to_json(enforcement)?,
    );
    retry(|| async {
        let mut tx = begin(pool).await?;
        let tenant_id: Option<String> = sqlx::query_scalar(
            "UPDATE machines SET os_platform = $1, os_version = $2, kernel_version = $3, \
                 os_architecture = $4, agent_version = $5, ip_addresses = $6::jsonb, \
                 last_ip_address = $7, capabilities = $8::jsonb, enforcement = $9::jsonb, \
                 last_seen = $10, \
                 health_status = CASE WHEN offboarded IS NULL THEN 'Active' ELSE health_status END \
             WHERE id = $11 RETURNING tenant_id",
        )
        .bind(&info.os_platform)
        .bind(&info.os_version)
        .bind(&info.kernel_version)
        .bind(&info.os_architecture)
        .bind(&info.agent_version)
        .bind(&ips)
        .bind(info.ip_addresses.first())
        .bind(&caps)
        .bind(&enf)
        .bind(at.ticks())
        .bind(machine_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot record a heartbeat"))?;
        let Some(tenant_id) = tenant_id else {
            return Err(Fail::App(Error::machine_not_found(machine_id)));
        };
        addresses::record(&mut tx, machine_id, &tenant_id, &info.ip_addresses, at).await?;
        commit(tx).await
    })
    .await
}

pub(super) async fn list(
    pool: &PgPool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<MachineField>,
) -> Result<Page<MachineRecord>> {
    list::page(pool, &COLLECTION, tenant_id, scope, query, rows::machine).await
}

pub(super) async fn set_groups(
    pool: &PgPool,
    tenant_id: &str,
    changes: &[GroupAssignment],
) -> Result<()> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        for c in changes {
            sqlx::query(
                "UPDATE machines SET rbac_group_id = $1, rbac_group_name = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(c.rbac_group_id)
            .bind(&c.rbac_group_name)
            .bind(tenant_id)
            .bind(&c.machine_id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot move a machine to its device group"))?;
        }
        if !changes.is_empty() {
            super::indicators::bump_version(&mut tx, tenant_id).await?;
        }
        commit(tx).await
    })
    .await
}

pub(super) async fn with_tag(
    pool: &PgPool,
    tenant_id: &str,
    tag: &str,
    prefix: bool,
) -> Result<Vec<MachineRecord>> {
    let matches = if prefix {
        "starts_with(lower(t), lower($2))"
    } else {
        "lower(t) = lower($2)"
    };
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND EXISTS \
             (SELECT 1 FROM jsonb_array_elements_text(machines.machine_tags) t WHERE {matches}) \
             ORDER BY computer_dns_name, id LIMIT 10000"
        ))
        .bind(tenant_id)
        .bind(tag)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot find machines by tag"))?;
        Ok(found
            .iter()
            .map(rows::machine)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}

async fn change_one(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: &str,
    id: &str,
    tag: &str,
    add: bool,
    group_of: &GroupOf,
) -> PgResult<(MachineRecord, bool)> {
    let row = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(ctx("cannot read a machine"))?;
    let Some(row) = row else {
        return Err(Fail::App(Error::machine_not_found(id)));
    };
    let mut m = rows::machine(&row)?;
    let has = m.machine_tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
    if add && !has {
        m.machine_tags.push(tag.to_string());
    } else if !add {
        m.machine_tags.retain(|t| !t.eq_ignore_ascii_case(tag));
    }
    let moved = regroup(&mut m, group_of);
    write_tags_and_value(tx, &m).await?;
    Ok((m, moved))
}

/// Puts `m` in the device group `group_of` computes; true if that moved it.
fn regroup(m: &mut MachineRecord, group_of: &GroupOf) -> bool {
    let before = m.rbac_group_id;
    (m.rbac_group_id, m.rbac_group_name) = group_of(m);
    before != m.rbac_group_id
}

async fn write_tags_and_value(
    tx: &mut Transaction<'static, Postgres>,
    m: &MachineRecord,
) -> PgResult<()> {
    sqlx::query(
        "UPDATE machines SET machine_tags = $1::jsonb, rbac_group_id = $2, rbac_group_name = $3, \
             device_value = $4 \
         WHERE id = $5",
    )
    .bind(to_json(&m.machine_tags)?)
    .bind(m.rbac_group_id)
    .bind(&m.rbac_group_name)
    .bind(&m.device_value)
    .bind(&m.id)
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot change a machine's tags"))?;
    Ok(())
}

pub(super) async fn update(
    pool: &PgPool,
    tenant_id: &str,
    id: &str,
    tags: Option<&[String]>,
    device_value: Option<&str>,
    group_of: &GroupOf,
) -> Result<MachineRecord> {
    let id = id.to_ascii_lowercase();
    retry(|| async {
        let mut tx = begin(pool).await?;
        let row = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant_id)
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read a machine"))?;
        let Some(row) = row else {
            return Err(Fail::App(Error::machine_not_found(&id)));
        };
        let mut m = rows::machine(&row)?;
        let mut moved = false;
        if let Some(tags) = tags {
            m.machine_tags = tags.to_vec();
            moved = regroup(&mut m, group_of);
        }
        if let Some(value) = device_value {
            m.device_value = value.to_string();
        }
        write_tags_and_value(&mut tx, &m).await?;
        if moved {
            super::indicators::bump_version(&mut tx, tenant_id).await?;
        }
        commit(tx).await?;
        Ok(m)
    })
    .await
}

pub(super) async fn change_tag(
    pool: &PgPool,
    tenant_id: &str,
    ids: &[String],
    tag: &str,
    add: bool,
    group_of: &GroupOf,
) -> Result<Vec<MachineRecord>> {
    let ids: Vec<String> = ids.iter().map(|id| id.to_ascii_lowercase()).collect();
    // Rows are locked in one order (sorted), so two changes of overlapping sets cannot
    // deadlock; the answer keeps the caller's order.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|a, b| ids[*a].cmp(&ids[*b]));
    retry(|| async {
        let mut tx = begin(pool).await?;
        let mut changed: Vec<Option<MachineRecord>> = vec![None; ids.len()];
        let mut moved = false;
        for &i in &order {
            let (m, one_moved) =
                change_one(&mut tx, tenant_id, &ids[i], tag, add, group_of).await?;
            moved |= one_moved;
            changed[i] = Some(m);
        }
        if moved {
            super::indicators::bump_version(&mut tx, tenant_id).await?;
        }
        commit(tx).await?;
        Ok(changed.into_iter().flatten().collect())
    })
    .await
}

pub(super) async fn fleet_summary(pool: &PgPool, since: Timestamp) -> Result<crate::FleetSummary> {
    read(async {
        let (seen, restricted): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE last_seen >= $1), \
                    COUNT(*) FILTER (WHERE (enforcement->>'restricted')::boolean) FROM machines",
        )
        .bind(since.ticks())
        .fetch_one(pool)
        .await
        .map_err(ctx("cannot count the machines"))?;
        Ok(crate::FleetSummary {
            seen: seen.max(0) as u64,
            restricted: restricted.max(0) as u64,
        })
    })
    .await
}
