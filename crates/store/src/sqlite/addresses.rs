//! The history of devices' internal addresses: stretches of time during which a device
//! reported an address, extended by each heartbeat, for MDE's find-by-IP lookups.

use appfence_core::records::MachineRecord;
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::sqlite::SqliteConnection;
use sqlx::sqlite::SqlitePool;

use super::db_err;
use super::rows::{self, MACHINE_COLUMNS};
use crate::addresses::{canonical, stretch, Stretch};

/// Records that `machine_id` reports `ips` at `at`, inside the caller's transaction.
pub(super) async fn record(
    conn: &mut SqliteConnection,
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
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err("cannot read a machine's addresses"))?;
        match stretch(last, at) {
            Stretch::Keep => {}
            Stretch::Extend(last) => {
                sqlx::query(
                    "UPDATE machine_addresses SET last_seen = ? \
                     WHERE machine_id = ? AND ip = ? AND last_seen = ?",
                )
                .bind(at.ticks())
                .bind(machine_id)
                .bind(&ip)
                .bind(last)
                .execute(&mut *conn)
                .await
                .map_err(db_err("cannot record a machine's address"))?;
            }
            Stretch::Start => {
                sqlx::query(
                    "INSERT INTO machine_addresses (machine_id, tenant_id, ip, first_seen, last_seen) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(machine_id)
                .bind(tenant_id)
                .bind(&ip)
                .bind(at.ticks())
                .bind(at.ticks())
                .execute(&mut *conn)
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
