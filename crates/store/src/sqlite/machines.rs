//! Enrolled devices: insertion, re-enrolment, the three ways to name one, heartbeats and
//! listing.

use appfence_core::odata::{MachineField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    ActionRecord, GroupAssignment, MachineRecord, HEALTH_INACTIVE, ONBOARDING_OFFBOARDED,
};
use appfence_core::{Error, MachineRef, Result};
use appfence_proto::agent::{DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Row;
use subtle::ConstantTimeEq;

use super::addresses;
use super::list::{self, Collection};
use super::rows::{self, to_json, MACHINE_COLUMNS};
use super::{commit, db_err, violates_unique, write_tx};
use crate::odata_sql::{Column, SortKey};
use crate::GroupOf;
use appfence_core::odata::Direction;

/// The unique constraint on a DNS name within a tenant, as SQLite names it.
const DNS_NAME_IN_TENANT: &str = "machines.tenant_id, machines.computer_dns_name";

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
        MachineField::Restricted => Column::Int("json_extract(enforcement, '$.restricted')"),
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
    what: "machines",
    device_group: "rbac_group_id",
};

pub(super) async fn insert(writer: &SqlitePool, m: &MachineRecord) -> Result<()> {
    // Names are compared in lower case; store them so whatever the caller passed.
    let dns_name = m.computer_dns_name.to_ascii_lowercase();
    let mut tx = write_tx(writer).await?;
    let inserted = sqlx::query(&format!(
        "INSERT INTO machines ({MACHINE_COLUMNS}) VALUES \
         (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
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
    .bind(to_json(&m.ip_addresses)?)
    .bind(&m.health_status)
    .bind(&m.onboarding_status)
    .bind(to_json(&m.machine_tags)?)
    .bind(m.rbac_group_id)
    .bind(&m.rbac_group_name)
    .bind(&m.risk_score)
    .bind(&m.exposure_level)
    .bind(&m.device_value)
    .bind(to_json(&m.capabilities)?)
    .bind(to_json(&m.enforcement)?)
    .bind(&m.credential_sha256)
    .bind(&m.enrollment_key_sha256)
    .bind(m.offboarded.map(Timestamp::ticks))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            let seen = m.last_seen.unwrap_or(m.first_seen);
            addresses::record(&mut tx, &m.id, &m.tenant_id, &m.ip_addresses, seen).await?;
            commit(tx).await
        }
        Err(e) if violates_unique(&e, DNS_NAME_IN_TENANT) => Err(Error::BadRequest(format!(
            "A machine named {dns_name} already exists"
        ))),
        Err(e) => Err(db_err("cannot insert a machine")(e)),
    }
}

/// Gives the machine named `hostname` the new credential and the device's facts, if it
/// was enrolled with the key whose SHA-256 is `key_sha256`; `None` (nothing changed) if
/// there is no such machine or it was enrolled with another key or none.
pub(super) async fn reenroll(
    writer: &SqlitePool,
    tenant_id: &str,
    hostname: &str,
    key_sha256: &str,
    new_credential_sha256: &str,
    info: &DeviceInfo,
    at: Timestamp,
) -> Result<Option<MachineRecord>> {
    let mut tx = write_tx(writer).await?;
    let found = sqlx::query(
        "SELECT id, enrollment_key_sha256 FROM machines \
         WHERE tenant_id = ? AND computer_dns_name = ? AND offboarded IS NULL",
    )
    .bind(tenant_id)
    .bind(hostname.to_ascii_lowercase())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err("cannot read a machine"))?;
    // Returning early drops the transaction, which rolls it back.
    let Some(found) = found else { return Ok(None) };
    let decode = || db_err("cannot decode a machine");
    let id: String = found.try_get("id").map_err(decode())?;
    let stored: Option<String> = found.try_get("enrollment_key_sha256").map_err(decode())?;
    if !stored.is_some_and(|stored| same_hash(&stored, key_sha256)) {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE machines SET credential_sha256 = ?, os_platform = ?, os_version = ?, \
             kernel_version = ?, os_architecture = ?, agent_version = ?, ip_addresses = ?, \
             last_ip_address = ?, capabilities = ?, last_seen = ?, health_status = 'Active' \
         WHERE id = ?",
    )
    .bind(new_credential_sha256)
    .bind(&info.os_platform)
    .bind(&info.os_version)
    .bind(&info.kernel_version)
    .bind(&info.os_architecture)
    .bind(&info.agent_version)
    .bind(to_json(&info.ip_addresses)?)
    .bind(info.ip_addresses.first())
    .bind(to_json(&info.capabilities)?)
    .bind(at.ticks())
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot re-enrol a machine"))?;
    addresses::record(&mut tx, &id, tenant_id, &info.ip_addresses, at).await?;
    let row = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?"
    ))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err("cannot read a re-enrolled machine"))?;
    let machine = rows::machine(&row)?;
    commit(tx).await?;
    Ok(Some(machine))
}

/// Offboards the machine of `action`, an offboard action that just ended, inside the
/// caller's transaction (or savepoint): its credential is refused from now on (the
/// gateway checks `offboarded`), its enrolment key can no longer enrol it again, and it
/// shows as MDE shows an offboarded device. Appends `DeviceOffboarded` to the audit log.
/// A machine offboarded already is left as it is.
pub(super) async fn offboard_on(
    conn: &mut SqliteConnection,
    action: &ActionRecord,
    at: Timestamp,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE machines SET offboarded = ?, onboarding_status = ?, health_status = ?, \
             enrollment_key_sha256 = NULL \
         WHERE id = ? AND offboarded IS NULL",
    )
    .bind(at.ticks())
    .bind(ONBOARDING_OFFBOARDED)
    .bind(HEALTH_INACTIVE)
    .bind(&action.machine_id)
    .execute(&mut *conn)
    .await
    .map_err(db_err("cannot offboard a machine"))?;
    if done.rows_affected() == 0 {
        return Ok(());
    }
    super::audit_log::append(conn, &crate::offboarded_event(action, at)).await
}

/// Compares two hashes in time independent of where they differ, so that response
/// times tell nothing about a stored key hash.
fn same_hash(stored: &str, given: &str) -> bool {
    stored.as_bytes().ct_eq(given.as_bytes()).into()
}

pub(super) async fn get(
    reader: &SqlitePool,
    tenant_id: &str,
    by: &MachineRef,
) -> Result<Option<MachineRecord>> {
    let (condition, value) = match by {
        MachineRef::Id(id) => ("id = ?", id.clone()),
        // GUIDs and DNS names are stored in lower case.
        MachineRef::AadDeviceId(g) => ("aad_device_id = ?", g.to_ascii_lowercase()),
        MachineRef::DnsName(n) => ("computer_dns_name = ?", n.to_ascii_lowercase()),
    };
    let row = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ? AND {condition}"
    ))
    .bind(tenant_id)
    .bind(value)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a machine"))?;
    row.as_ref().map(rows::machine).transpose()
}

pub(super) async fn by_credential(
    reader: &SqlitePool,
    credential_sha256: &str,
) -> Result<Option<MachineRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_sha256 = ?"
    ))
    .bind(credential_sha256)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a machine by credential"))?;
    row.as_ref().map(rows::machine).transpose()
}

pub(super) async fn record_heartbeat(
    writer: &SqlitePool,
    machine_id: &str,
    info: &DeviceInfo,
    enforcement: &EnforcementState,
    at: Timestamp,
) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    record_heartbeat_on(&mut tx, machine_id, info, enforcement, at).await?;
    commit(tx).await
}

/// A heartbeat inside the caller's transaction (or savepoint).
pub(super) async fn record_heartbeat_on(
    conn: &mut SqliteConnection,
    machine_id: &str,
    info: &DeviceInfo,
    enforcement: &EnforcementState,
    at: Timestamp,
) -> Result<()> {
    let tenant_id: Option<String> = sqlx::query_scalar(
        "UPDATE machines SET os_platform = ?, os_version = ?, kernel_version = ?, \
             os_architecture = ?, agent_version = ?, ip_addresses = ?, last_ip_address = ?, \
             capabilities = ?, enforcement = ?, last_seen = ?, \
             health_status = CASE WHEN offboarded IS NULL THEN 'Active' ELSE health_status END \
         WHERE id = ? RETURNING tenant_id",
    )
    .bind(&info.os_platform)
    .bind(&info.os_version)
    .bind(&info.kernel_version)
    .bind(&info.os_architecture)
    .bind(&info.agent_version)
    .bind(to_json(&info.ip_addresses)?)
    .bind(info.ip_addresses.first())
    .bind(to_json(&info.capabilities)?)
    .bind(to_json(enforcement)?)
    .bind(at.ticks())
    .bind(machine_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("cannot record a heartbeat"))?;
    let Some(tenant_id) = tenant_id else {
        return Err(Error::machine_not_found(machine_id));
    };
    addresses::record(conn, machine_id, &tenant_id, &info.ip_addresses, at).await
}

/// The tenant's machines with a tag equal to `tag` (or, with `prefix`, starting with
/// it), ASCII case-insensitively; at most 10,000.
pub(super) async fn with_tag(
    reader: &SqlitePool,
    tenant_id: &str,
    tag: &str,
    prefix: bool,
) -> Result<Vec<MachineRecord>> {
    let matches = if prefix {
        "substr(lower(t.value), 1, length(?2)) = lower(?2)"
    } else {
        "lower(t.value) = lower(?2)"
    };
    let rows = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ?1 AND EXISTS \
         (SELECT 1 FROM json_each(machines.machine_tags) t WHERE {matches}) \
         ORDER BY computer_dns_name, id LIMIT 10000"
    ))
    .bind(tenant_id)
    .bind(tag)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot find machines by tag"))?;
    rows.iter().map(rows::machine).collect()
}

/// Adds (or removes) `tag` on the tenant's machines `ids`, all or none in one
/// transaction, each then put in the device group `group_of` computes from its new
/// tags. Tags compare ASCII case-insensitively; adding one a machine has, or removing
/// one it lacks, changes nothing. `ResourceNotFound` naming the first unknown id.
pub(super) async fn change_tag(
    writer: &SqlitePool,
    tenant_id: &str,
    ids: &[String],
    tag: &str,
    add: bool,
    group_of: &GroupOf,
) -> Result<Vec<MachineRecord>> {
    let mut tx = write_tx(writer).await?;
    let mut changed = Vec::with_capacity(ids.len());
    let mut moved = false;
    for id in ids {
        let row = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant_id)
        .bind(id.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("cannot read a machine"))?;
        let Some(row) = row else {
            return Err(Error::machine_not_found(id));
        };
        let mut m = rows::machine(&row)?;
        let has = m.machine_tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
        if add && !has {
            m.machine_tags.push(tag.to_string());
        } else if !add {
            m.machine_tags.retain(|t| !t.eq_ignore_ascii_case(tag));
        }
        moved |= regroup(&mut m, group_of);
        write_tags_and_value(&mut tx, &m).await?;
        changed.push(m);
    }
    if moved {
        super::indicators::bump_version(&mut tx, tenant_id).await?;
    }
    commit(tx).await?;
    Ok(changed)
}

/// Puts `m` in the device group `group_of` computes; true if that moved it.
fn regroup(m: &mut MachineRecord, group_of: &GroupOf) -> bool {
    let before = m.rbac_group_id;
    (m.rbac_group_id, m.rbac_group_name) = group_of(m);
    before != m.rbac_group_id
}

async fn write_tags_and_value(tx: &mut SqliteConnection, m: &MachineRecord) -> Result<()> {
    sqlx::query(
        "UPDATE machines SET machine_tags = ?, rbac_group_id = ?, rbac_group_name = ?, \
             device_value = ? \
         WHERE id = ?",
    )
    .bind(to_json(&m.machine_tags)?)
    .bind(m.rbac_group_id)
    .bind(&m.rbac_group_name)
    .bind(&m.device_value)
    .bind(&m.id)
    .execute(&mut *tx)
    .await
    .map_err(db_err("cannot change a machine's tags"))?;
    Ok(())
}

pub(super) async fn update(
    writer: &SqlitePool,
    tenant_id: &str,
    id: &str,
    tags: Option<&[String]>,
    device_value: Option<&str>,
    group_of: &GroupOf,
) -> Result<MachineRecord> {
    let mut tx = write_tx(writer).await?;
    let row = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant_id)
    .bind(id.to_ascii_lowercase())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err("cannot read a machine"))?;
    let Some(row) = row else {
        return Err(Error::machine_not_found(id));
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
}

pub(super) async fn list(
    reader: &SqlitePool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<MachineField>,
) -> Result<Page<MachineRecord>> {
    list::page(reader, &COLLECTION, tenant_id, scope, query, rows::machine).await
}

/// Moves machines into device groups, all in one transaction.
pub(super) async fn set_groups(
    writer: &SqlitePool,
    tenant_id: &str,
    assignments: &[GroupAssignment],
) -> Result<()> {
    let mut tx = write_tx(writer).await?;
    for a in assignments {
        sqlx::query(
            "UPDATE machines SET rbac_group_id = ?, rbac_group_name = ? \
             WHERE tenant_id = ? AND id = ?",
        )
        .bind(a.rbac_group_id)
        .bind(&a.rbac_group_name)
        .bind(tenant_id)
        .bind(&a.machine_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("cannot change a machine's device group"))?;
    }
    if !assignments.is_empty() {
        super::indicators::bump_version(&mut tx, tenant_id).await?;
    }
    commit(tx).await
}

pub(super) async fn fleet_summary(
    pool: &SqlitePool,
    since: Timestamp,
) -> Result<crate::FleetSummary> {
    let (seen, restricted): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(last_seen >= ?), 0), \
                COALESCE(SUM(json_extract(enforcement, '$.restricted') = 1), 0) FROM machines",
    )
    .bind(since.ticks())
    .fetch_one(pool)
    .await
    .map_err(db_err("cannot count the machines"))?;
    Ok(crate::FleetSummary {
        seen: seen.max(0) as u64,
        restricted: restricted.max(0) as u64,
    })
}
