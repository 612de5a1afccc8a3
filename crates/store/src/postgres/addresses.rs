//! The history of devices' internal addresses (see the SQLite store's `addresses`).

use appfence_core::records::MachineRecord;
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::machines::MACHINE_COLUMNS;
use super::{ctx, read, retry, PgResult};
use crate::addresses::{canonical, stretch, Stretch};
use crate::rows;

/// Records that `machine_id` reports `ips` at `at`, inside the caller's transaction
/// (which holds the machine's row lock, so one device's reports do not race).
pub(super) async fn record(
    tx: &mut Transaction<'static, Postgres>,
    machine_id: &str,
    tenant_id: &str,
    ips: &[String],
    at: Timestamp,
) -> PgResult<()> {
    let mut seen: Vec<String> = ips.iter().filter_map(|ip| canonical(ip)).collect();
    seen.sort();
    seen.dedup();
    for ip in seen {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(last_seen) FROM machine_addresses WHERE machine_id = $1 AND ip = $2",
        )
        .bind(machine_id)
        .bind(&ip)
        .fetch_one(&mut **tx)
        .await
        .map_err(ctx("cannot read a machine's addresses"))?;
        match stretch(last, at) {
            Stretch::Keep => {}
            Stretch::Extend(last) => {
                sqlx::query(
                    "UPDATE machine_addresses SET last_seen = $1 \
                     WHERE machine_id = $2 AND ip = $3 AND last_seen = $4",
                )
                .bind(at.ticks())
                .bind(machine_id)
                .bind(&ip)
                .bind(last)
                .execute(&mut **tx)
                .await
                .map_err(ctx("cannot record a machine's address"))?;
            }
            Stretch::Start => {
                sqlx::query(
                    "INSERT INTO machine_addresses (machine_id, tenant_id, ip, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(machine_id)
                .bind(tenant_id)
                .bind(&ip)
                .bind(at.ticks())
                .execute(&mut **tx)
                .await
                .map_err(ctx("cannot record a machine's address"))?;
            }
        }
    }
    Ok(())
}

pub(super) async fn machines_seen(
    pool: &PgPool,
    tenant_id: &str,
    ip: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<MachineRecord>> {
    let Some(ip) = canonical(ip) else {
        return Ok(Vec::new());
    };
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = $1 AND id IN \
             (SELECT machine_id FROM machine_addresses \
              WHERE tenant_id = $1 AND ip = $2 AND last_seen >= $3 AND first_seen <= $4) \
             ORDER BY computer_dns_name, id LIMIT 10000"
        ))
        .bind(tenant_id)
        .bind(&ip)
        .bind(from.ticks())
        .bind(to.ticks())
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot find machines by address"))?;
        Ok(found
            .iter()
            .map(rows::machine)
            .collect::<Result<Vec<_>>>()?)
    })
    .await
}

pub(super) async fn prune(pool: &PgPool, before: Timestamp) -> Result<u64> {
    retry(|| async {
        let done = sqlx::query("DELETE FROM machine_addresses WHERE last_seen < $1")
            .bind(before.ticks())
            .execute(pool)
            .await
            .map_err(ctx("cannot prune the address history"))?;
        Ok(done.rows_affected())
    })
    .await
}
