//! Machine actions: creation under the duplicate rule (a partial unique index, so it
//! holds across replicas), lifecycle transitions as compare-and-set updates with their
//! audit rows, the sweeper's timeouts (each action once, whichever replica sweeps), and
//! the queries over actions.

use appfence_core::odata::{ActionField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    offboards, transition_allowed, ActionRecord, AuditRecord, StatusChange, TransitionOutcome,
};
use appfence_core::{Error, Result};
use appfence_proto::{ActionStatus, Timestamp};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::list::{self, Collection};
use super::{begin, commit, ctx, read, retry, violates, Fail, PgResult};
use crate::odata_sql::{Column, Implied, SortKey};
use crate::rows::{self, ACTION_COLUMNS, AUDIT_COLUMNS};
use appfence_core::odata::Direction;

/// The partial unique index of the duplicate rule.
const ONE_OPEN_RESTRICT_FAMILY: &str = "actions_one_open_restrict_family";
/// The partial unique index of the duplicate rule for offboarding.
const ONE_OPEN_OFFBOARD: &str = "actions_one_open_offboard";

/// Who moves stale actions to `TimeOut`.
const SWEEPER: &str = "sweeper";

fn column(f: ActionField) -> Column {
    match f {
        ActionField::Id => Column::Text("id"),
        ActionField::Status => Column::Text("status"),
        ActionField::MachineId => Column::Text("machine_id"),
        ActionField::Type => Column::Text("action_type"),
        ActionField::Requestor => Column::NoCaseText("requestor"),
        ActionField::CreationDateTimeUtc => Column::Int("created"),
        ActionField::LastUpdateDateTimeUtc => Column::Int("last_update"),
        ActionField::ComputerDnsName => Column::NoCaseText("computer_dns_name"),
        ActionField::ExternalId => Column::Text("external_id"),
    }
}

const COLLECTION: Collection<ActionField> = Collection {
    table: "actions",
    columns: ACTION_COLUMNS,
    column,
    default_order: "created DESC, seq DESC",
    default_keys: &[
        SortKey {
            col: Column::Int("created"),
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
    nullable: &["external_id"],
    // An action's last update is never before its creation (`apply` keeps it so),
    // so a bound on it bounds the creation time the default order starts from; and
    // an equality on `external_id` may use its partial index (migration 0012).
    implied: &[
        Implied::AtLeast {
            upper: "last_update",
            lower: "created",
        },
        Implied::NotNullWhenEqual("external_id"),
    ],
    what: "cannot list machine actions",
    device_group: "(SELECT m.rbac_group_id FROM machines m WHERE m.id = actions.machine_id)",
};

pub(super) async fn create(pool: &PgPool, a: &ActionRecord) -> Result<()> {
    if a.status != ActionStatus::Pending {
        return Err(Error::Internal(format!(
            "a new action must be Pending, not {}",
            a.status.as_str()
        )));
    }
    retry(|| async {
        // One statement; the trigger appends the creation to the audit trail with it.
        let inserted = sqlx::query(&format!(
            "INSERT INTO actions ({ACTION_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ))
        .bind(&a.id)
        .bind(&a.tenant_id)
        .bind(a.action_type.as_str())
        .bind(&a.title)
        .bind(&a.requestor)
        .bind(&a.requestor_comment)
        .bind(a.status.as_str())
        .bind(&a.machine_id)
        .bind(&a.computer_dns_name)
        .bind(a.created.ticks())
        .bind(a.last_update.ticks())
        .bind(&a.cancellation_requestor)
        .bind(&a.cancellation_comment)
        .bind(a.cancellation_time.map(Timestamp::ticks))
        .bind(a.error_h_result)
        .bind(&a.external_id)
        .bind(&a.request_source)
        .bind(&a.troubleshoot_info)
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if violates(&e, ONE_OPEN_RESTRICT_FAMILY) || violates(&e, ONE_OPEN_OFFBOARD) => {
                Err(Fail::App(Error::ActiveRequestAlreadyExists))
            }
            Err(e) => Err(ctx("cannot insert a machine action")(e)),
        }
    })
    .await
}

pub(super) async fn get(pool: &PgPool, tenant_id: &str, id: &str) -> Result<Option<ActionRecord>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read a machine action"))?;
        Ok(row.as_ref().map(rows::action).transpose()?)
    })
    .await
}

pub(super) async fn list(
    pool: &PgPool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<ActionField>,
) -> Result<Page<ActionRecord>> {
    list::page(pool, &COLLECTION, tenant_id, scope, query, rows::action).await
}

pub(super) async fn transition(
    pool: &PgPool,
    action_id: &str,
    change: &StatusChange,
) -> Result<TransitionOutcome> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        let row = sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1 FOR UPDATE"
        ))
        .bind(action_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("cannot read a machine action"))?;
        let current = row
            .as_ref()
            .map(rows::action)
            .transpose()?
            .ok_or_else(|| Fail::App(Error::action_not_found(action_id)))?;
        let outcome = match apply(&mut tx, &current, change, None).await? {
            Some(updated) => TransitionOutcome::Applied(updated),
            None => TransitionOutcome::Refused(current),
        };
        commit(tx).await?;
        Ok(outcome)
    })
    .await
}

/// An extra condition the row must still meet for a change to apply.
struct Guard {
    column: &'static str,
    before: Timestamp,
}

/// Applies `change` to `current` if the lifecycle allows it, conditional on the stored
/// status still being `current.status` (and the guard), with its audit row; an offboard
/// action that ends this way offboards its machine (`records::offboards`), in the same
/// transaction.
async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    current: &ActionRecord,
    change: &StatusChange,
    guard: Option<Guard>,
) -> PgResult<Option<ActionRecord>> {
    if !transition_allowed(current.status, change.to) {
        return Ok(None);
    }
    let cancelled = change.to == ActionStatus::Cancelled;
    let guard_sql = match &guard {
        Some(g) => format!(" AND {} < $10", g.column),
        None => String::new(),
    };
    let sql = format!(
        "UPDATE actions SET status = $1, last_update = GREATEST($2, created), \
             error_h_result = COALESCE($3, error_h_result), \
             troubleshoot_info = COALESCE($4, troubleshoot_info), \
             cancellation_requestor = COALESCE($5, cancellation_requestor), \
             cancellation_comment = COALESCE($6, cancellation_comment), \
             cancellation_time = COALESCE($7, cancellation_time) \
         WHERE id = $8 AND status = $9{guard_sql} \
         RETURNING {ACTION_COLUMNS}"
    );
    let mut q = sqlx::query(&sql)
        .bind(change.to.as_str())
        .bind(change.at.ticks())
        .bind(change.error_h_result)
        .bind(&change.troubleshoot_info)
        .bind(cancelled.then(|| change.actor.clone()))
        .bind(if cancelled {
            change.cancellation_comment.clone()
        } else {
            None
        })
        .bind(cancelled.then_some(change.at.ticks()))
        .bind(&current.id)
        .bind(current.status.as_str());
    if let Some(g) = &guard {
        q = q.bind(g.before.ticks());
    }
    let row = q
        .fetch_optional(&mut **tx)
        .await
        .map_err(ctx("cannot update a machine action"))?;
    let Some(row) = row else { return Ok(None) };
    let updated = rows::action(&row)?;
    sqlx::query(&format!(
        "INSERT INTO action_audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .bind(&current.id)
    .bind(change.at.ticks())
    .bind(&change.actor)
    .bind(current.status.as_str())
    .bind(change.to.as_str())
    .bind(&change.reason)
    .execute(&mut **tx)
    .await
    .map_err(ctx("cannot append to the audit trail"))?;
    if offboards(updated.action_type, updated.status) {
        super::machines::offboard_on(tx, &updated, change.at).await?;
    }
    Ok(Some(updated))
}

pub(super) async fn open_for_machine(pool: &PgPool, machine_id: &str) -> Result<Vec<ActionRecord>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE machine_id = $1 AND status IN ('Pending', 'InProgress') ORDER BY created, seq"
        ))
        .bind(machine_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot list open machine actions"))?;
        Ok(found.iter().map(rows::action).collect::<Result<Vec<_>>>()?)
    })
    .await
}

pub(super) async fn last_succeeded_restrict_family(
    pool: &PgPool,
    machine_id: &str,
) -> Result<Option<ActionRecord>> {
    read(async {
        let row = sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE machine_id = $1 AND status = 'Succeeded' \
               AND action_type IN ('RestrictCodeExecution', 'UnrestrictCodeExecution') \
             ORDER BY seq DESC LIMIT 1"
        ))
        .bind(machine_id)
        .fetch_optional(pool)
        .await
        .map_err(ctx("cannot read the last succeeded restrict-family action"))?;
        Ok(row.as_ref().map(rows::action).transpose()?)
    })
    .await
}

pub(super) async fn time_out(
    pool: &PgPool,
    pending_before: Timestamp,
    in_progress_before: Timestamp,
    now: Timestamp,
) -> Result<Vec<ActionRecord>> {
    retry(|| async {
        let mut tx = begin(pool).await?;
        // SKIP LOCKED: replicas sweeping at once take different actions; the
        // conditional update makes each change happen once anyway.
        let stale = sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE (status = 'Pending' AND created < $1) \
                OR (status = 'InProgress' AND last_update < $2) \
             ORDER BY seq FOR UPDATE SKIP LOCKED"
        ))
        .bind(pending_before.ticks())
        .bind(in_progress_before.ticks())
        .fetch_all(&mut *tx)
        .await
        .map_err(ctx("cannot find stale machine actions"))?;
        let mut changed = Vec::with_capacity(stale.len());
        for row in &stale {
            let current = rows::action(row)?;
            let (guard, reason) = match current.status {
                ActionStatus::Pending => (
                    Guard { column: "created", before: pending_before },
                    format!("pending timeout: not started by the device before {pending_before}"),
                ),
                _ => (
                    Guard { column: "last_update", before: in_progress_before },
                    format!("in-progress timeout: no result from the device since before {in_progress_before}"),
                ),
            };
            let change = StatusChange {
                to: ActionStatus::TimeOut,
                at: now,
                actor: SWEEPER.to_string(),
                reason: Some(reason),
                error_h_result: None,
                troubleshoot_info: None,
                cancellation_comment: None,
            };
            if let Some(updated) = apply(&mut tx, &current, &change, Some(guard)).await? {
                changed.push(updated);
            }
        }
        commit(tx).await?;
        Ok(changed)
    })
    .await
}

pub(super) async fn audit_trail(pool: &PgPool, action_id: &str) -> Result<Vec<AuditRecord>> {
    read(async {
        let found = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM action_audit WHERE action_id = $1 ORDER BY seq"
        ))
        .bind(action_id)
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot read the audit trail"))?;
        Ok(found.iter().map(rows::audit).collect::<Result<Vec<_>>>()?)
    })
    .await
}

/// Deletes at most `limit` final actions last updated before `before`, oldest first, in
/// one short statement; their audit rows stay. Returns the ids deleted.
pub(super) async fn delete_old(
    pool: &PgPool,
    before: Timestamp,
    limit: u32,
) -> Result<Vec<String>> {
    retry(|| async {
        sqlx::query_scalar(
            "DELETE FROM actions WHERE seq IN \
             (SELECT seq FROM actions WHERE status IN ('Succeeded', 'Failed', 'TimeOut', 'Cancelled') \
              AND last_update < $1 ORDER BY last_update LIMIT $2) RETURNING id",
        )
        .bind(before.ticks())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(ctx("cannot delete old machine actions"))
    })
    .await
}
