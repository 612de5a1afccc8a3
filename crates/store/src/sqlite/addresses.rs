//! The history of devices' internal addresses: stretches of time during which a device
//! reported an address, extended by each heartbeat, for MDE's find-by-IP lookups.

use std::net::IpAddr;

use appfence_core::records::MachineRecord;
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};

use super::db_err;
use super::rows::{self, MACHINE_COLUMNS};

/// A report more than this long after the last one starts a new stretch.
const MAX_GAP_SECONDS: i64 = 15 * 60;
/// A stretch is extended at most this often (heartbeats come every 30 s; the lookups
/// work in 15-minute windows, so a minute's precision costs nothing and saves writes).
const EXTEND_EVERY_SECONDS: i64 = 60;
const TICKS_PER_SECOND: i64 = 10_000_000;

/// The canonical text of an address the agent reported; `None` if it is not one.
pub fn canonical(ip: &str) -> Option<String> {
    let ip: IpAddr = ip.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    })
}

/// Records that `machine_id` reports `ips` at `at`, inside the caller's transaction.
pub(super) async fn record(
    tx: &mut Transaction<'static, Sqlite>,
    machine_id: &str,
    tenant_id: &str,
    ips: &[String],
    at: Timestamp,
) -> Result<()> {
    let mut seen: Vec<String> = ips.iter().filter_map(|ip| canonical(ip)).collect();
    seen.sort();
    seen.dedup();
    for ip in seen {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(last_seen) FROM machine_addresses WHERE machine_id = ? AND ip = ?",
        )
        .bind(machine_id)
        .bind(&ip)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err("cannot read a machine's addresses"))?;
        let now = at.ticks();
        match last {
            Some(last) if now - last < EXTEND_EVERY_SECONDS * TICKS_PER_SECOND && now >= last => {}
            Some(last) if now - last <= MAX_GAP_SECONDS * TICKS_PER_SECOND && now >= last => {
                sqlx::query(
                    "UPDATE machine_addresses SET last_seen = ? \
                     WHERE machine_id = ? AND ip = ? AND last_seen = ?",
                )
                .bind(now)
                .bind(machine_id)
                .bind(&ip)
                .bind(last)
                .execute(&mut **tx)
                .await
                .map_err(db_err("cannot record a machine's address"))?;
            }
            _ => {
                sqlx::query(
                    "INSERT INTO machine_addresses (machine_id, tenant_id, ip, first_seen, last_seen) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(machine_id)
                .bind(tenant_id)
                .bind(&ip)
                .bind(now)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(db_err("cannot record a machine's address"))?;
            }
        }
    }
    Ok(())
}

/// The tenant's machines that reported `ip` at some time between `from` and `to`.
pub(super) async fn machines_seen(
    reader: &SqlitePool,
    tenant_id: &str,
    ip: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<MachineRecord>> {
    let Some(ip) = canonical(ip) else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ? AND id IN \
         (SELECT machine_id FROM machine_addresses \
          WHERE tenant_id = ? AND ip = ? AND last_seen >= ? AND first_seen <= ?) \
         ORDER BY computer_dns_name, id LIMIT 10000"
    ))
    .bind(tenant_id)
    .bind(tenant_id)
    .bind(&ip)
    .bind(from.ticks())
    .bind(to.ticks())
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot find machines by address"))?;
    rows.iter().map(rows::machine).collect()
}

/// Deletes stretches that ended before `before`; returns how many.
pub(super) async fn prune(writer: &SqlitePool, before: Timestamp) -> Result<u64> {
    let done = sqlx::query("DELETE FROM machine_addresses WHERE last_seen < ?")
        .bind(before.ticks())
        .execute(writer)
        .await
        .map_err(db_err("cannot prune the address history"))?;
    Ok(done.rows_affected())
}
