//! Denial events reported by agents: a batch per transaction, at most
//! `MAX_EVENTS_PER_MACHINE` per machine (the oldest go first).

use appfence_core::alerts::AlertCandidate;
use appfence_core::odata::{EventField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{DenialRecord, MachineRecord, MAX_EVENTS_PER_MACHINE};
use appfence_core::Result;
use appfence_proto::agent::DenialEvent;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;

use super::list::{self, Collection};
use super::{begin, commit, ctx, retry};
use crate::odata_sql::{Column, SortKey};
use crate::rows::{self, kind_name, EVENT_COLUMNS};
use appfence_core::odata::Direction;

fn column(f: EventField) -> Column {
    match f {
        EventField::Time => Column::Int("time"),
        EventField::Path => Column::Text("path"),
        EventField::Sha256 => Column::NoCaseText("sha256"),
        EventField::Pid => Column::Int("pid"),
        EventField::Uid => Column::Int("uid"),
        EventField::Parent => Column::Text("parent"),
        EventField::Kind => Column::Text("kind"),
        EventField::MachineId => Column::Text("machine_id"),
        EventField::ComputerDnsName => Column::NoCaseText("computer_dns_name"),
    }
}

const COLLECTION: Collection<EventField> = Collection {
    table: "machine_events",
    columns: EVENT_COLUMNS,
    column,
    default_order: "time DESC, seq DESC",
    default_keys: &[
        SortKey {
            col: Column::Int("time"),
            dir: Direction::Desc,
            nullable: false,
        },
        SortKey {
            col: Column::Int("seq"),
            dir: Direction::Desc,
            nullable: false,
        },
    ],
    tiebreak_key: SortKey {
        col: Column::Int("seq"),
        dir: Direction::Desc,
        nullable: false,
    },
    nullable: &["sha256", "uid", "parent"],
    implied: &[],
    what: "cannot list denial events",
    device_group: "rbac_group_id",
};

pub(super) async fn record(
    pool: &PgPool,
    machine: &MachineRecord,
    events: &[DenialEvent],
    alerts: &[AlertCandidate],
    received: Timestamp,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    retry(|| async {
        let mut tx = begin(pool).await?;
        super::alerts::raise_in(&mut tx, &machine.tenant_id, alerts, received).await?;
        for e in events {
            sqlx::query(
                "INSERT INTO denial_events (tenant_id, machine_id, time, path, sha256, pid, uid, \
                     parent, kind, monitor, received, rule, indicator_id, alert) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&machine.tenant_id)
            .bind(&machine.id)
            .bind(e.time.ticks())
            .bind(&e.path)
            .bind(&e.sha256)
            .bind(i64::from(e.pid))
            .bind(e.uid.map(i64::from))
            .bind(&e.parent)
            .bind(kind_name(e.kind))
            .bind(e.monitor)
            .bind(received.ticks())
            .bind(crate::rows::rule_name(e.rule))
            .bind(&e.indicator_id)
            .bind(e.alert)
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot store a denial event"))?;
        }
        sqlx::query(
            "DELETE FROM denial_events WHERE machine_id = $1 AND seq NOT IN \
             (SELECT seq FROM denial_events WHERE machine_id = $1 \
              ORDER BY time DESC, seq DESC LIMIT $2)",
        )
        .bind(&machine.id)
        .bind(MAX_EVENTS_PER_MACHINE as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("cannot drop old denial events"))?;
        commit(tx).await
    })
    .await
}

pub(super) async fn list(
    pool: &PgPool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<EventField>,
) -> Result<Page<DenialRecord>> {
    list::page(pool, &COLLECTION, tenant_id, scope, query, rows::denial).await
}

/// Deletes at most `limit` denial events received before `before`, oldest first, in one
/// short statement. Returns how many.
pub(super) async fn delete_old(pool: &PgPool, before: Timestamp, limit: u32) -> Result<u64> {
    super::retry(|| async {
        let done = sqlx::query(
            "DELETE FROM denial_events WHERE seq IN \
             (SELECT seq FROM denial_events WHERE received < $1 ORDER BY received LIMIT $2)",
        )
        .bind(before.ticks())
        .bind(i64::from(limit))
        .execute(pool)
        .await
        .map_err(super::ctx("cannot delete old denial events"))?;
        Ok(done.rows_affected())
    })
    .await
}
