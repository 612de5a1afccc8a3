//! Machine actions: creation under the duplicate rule, lifecycle transitions with their
//! audit rows, the sweeper's timeouts, and the queries over actions.

use appfence_core::odata::{ActionField, Page, Query};
use appfence_core::rbac::DeviceScope;
use appfence_core::records::{
    offboards, transition_allowed, ActionRecord, AuditRecord, StatusChange, TransitionOutcome,
};
use appfence_core::{Error, Result};
use appfence_proto::{ActionStatus, Timestamp};
use sqlx::sqlite::{SqliteConnection, SqliteExecutor, SqlitePool};

use super::list::{self, Collection};
use super::rows::{self, ACTION_COLUMNS, AUDIT_COLUMNS};
use super::{commit, db_err, violates_unique, write_tx};
use crate::odata_sql::{Column, Implied, SortKey};
use appfence_core::odata::Direction;

/// The columns of the partial unique index `actions_one_open_restrict_family`, as
/// SQLite names them when the index refuses a row.
const ONE_OPEN_RESTRICT_FAMILY: &str = "actions.machine_id";

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
    what: "machine actions",
    device_group: "(SELECT m.rbac_group_id FROM machines m WHERE m.id = actions.machine_id)",
};

/// Refuses a new action that is not `Pending`: creation is where every action starts.
pub(super) fn check_new(a: &ActionRecord) -> Result<()> {
    if a.status != ActionStatus::Pending {
        return Err(Error::Internal(format!(
            "a new action must be Pending, not {}",
            a.status.as_str()
        )));
    }
    Ok(())
}

/// The `INSERT` of a new action. The trigger `actions_audit_creation` appends the
/// creation to the audit trail atomically with it.
pub(super) async fn insert<'e>(
    conn: impl SqliteExecutor<'e>,
    a: &ActionRecord,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO actions ({ACTION_COLUMNS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
    .execute(conn)
    .await
    .map(|_| ())
}

/// What a failed [`insert`] means to the caller: the duplicate rule, or a database error.
pub(super) fn insert_failed(e: sqlx::Error) -> Error {
    if violates_unique(&e, ONE_OPEN_RESTRICT_FAMILY) {
        Error::ActiveRequestAlreadyExists
    } else {
        db_err("cannot insert a machine action")(e)
    }
}

pub(super) async fn get(
    reader: &SqlitePool,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ActionRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(reader)
    .await
    .map_err(db_err("cannot read a machine action"))?;
    row.as_ref().map(rows::action).transpose()
}

pub(super) async fn list(
    reader: &SqlitePool,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<ActionField>,
) -> Result<Page<ActionRecord>> {
    list::page(reader, &COLLECTION, tenant_id, scope, query, rows::action).await
}

pub(super) async fn transition(
    writer: &SqlitePool,
    action_id: &str,
    change: &StatusChange,
) -> Result<TransitionOutcome> {
    let mut tx = write_tx(writer).await?;
    let outcome = transition_on(&mut tx, action_id, change).await?;
    commit(tx).await?;
    Ok(outcome)
}

/// A transition inside the caller's transaction (or savepoint).
pub(super) async fn transition_on(
    conn: &mut SqliteConnection,
    action_id: &str,
    change: &StatusChange,
) -> Result<TransitionOutcome> {
    let current = select_for_update(conn, action_id)
        .await?
        .ok_or_else(|| Error::action_not_found(action_id))?;
    Ok(match apply(conn, &current, change, None).await? {
        Some(updated) => TransitionOutcome::Applied(updated),
        None => TransitionOutcome::Refused(current),
    })
}

/// An extra condition the row must still meet for a change to apply, e.g. that a
/// `Pending` action is still older than the pending timeout.
struct Guard {
    column: &'static str,
    before: Timestamp,
}

async fn select_for_update(conn: &mut SqliteConnection, id: &str) -> Result<Option<ActionRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("cannot read a machine action"))?;
    row.as_ref().map(rows::action).transpose()
}

/// Applies `change` to `current` if the lifecycle allows it, conditional on the stored
/// status still being `current.status` (and the guard), and appends the audit row; an
/// offboard action that ends this way offboards its machine (`records::offboards`), in
/// the same transaction. Returns the updated action, or `None` if nothing changed.
async fn apply(
    conn: &mut SqliteConnection,
    current: &ActionRecord,
    change: &StatusChange,
    guard: Option<Guard>,
) -> Result<Option<ActionRecord>> {
    if !transition_allowed(current.status, change.to) {
        return Ok(None);
    }
    let cancelled = change.to == ActionStatus::Cancelled;
    let guard_sql = match &guard {
        Some(g) => format!(" AND {} < ?", g.column),
        None => String::new(),
    };
    // The status condition makes this a compare-and-set: correct even without the
    // write lock (e.g. on a database with weaker transaction isolation).
    let sql = format!(
        "UPDATE actions SET status = ?, last_update = MAX(?, created), \
             error_h_result = COALESCE(?, error_h_result), \
             troubleshoot_info = COALESCE(?, troubleshoot_info), \
             cancellation_requestor = COALESCE(?, cancellation_requestor), \
             cancellation_comment = COALESCE(?, cancellation_comment), \
             cancellation_time = COALESCE(?, cancellation_time) \
         WHERE id = ? AND status = ?{guard_sql} \
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
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err("cannot update a machine action"))?;
    let Some(row) = row else { return Ok(None) };
    let updated = rows::action(&row)?;
    insert_audit(
        conn,
        &AuditRecord {
            action_id: current.id.clone(),
            at: change.at,
            actor: change.actor.clone(),
            from: Some(current.status),
            to: change.to,
            reason: change.reason.clone(),
        },
    )
    .await?;
    if offboards(updated.action_type, updated.status) {
        super::machines::offboard_on(conn, &updated, change.at).await?;
    }
    Ok(Some(updated))
}

async fn insert_audit(conn: &mut SqliteConnection, r: &AuditRecord) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO action_audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .bind(&r.action_id)
    .bind(r.at.ticks())
    .bind(&r.actor)
    .bind(r.from.map(ActionStatus::as_str))
    .bind(r.to.as_str())
    .bind(&r.reason)
    .execute(&mut *conn)
    .await
    .map_err(db_err("cannot append to the audit trail"))?;
    Ok(())
}

pub(super) async fn open_for_machine(
    reader: &SqlitePool,
    machine_id: &str,
) -> Result<Vec<ActionRecord>> {
    let found = sqlx::query(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions \
         WHERE machine_id = ? AND status IN ('Pending', 'InProgress') \
         ORDER BY created, seq"
    ))
    .bind(machine_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot list open machine actions"))?;
    found.iter().map(rows::action).collect()
}

pub(super) async fn last_succeeded_restrict_family(
    reader: &SqlitePool,
    machine_id: &str,
) -> Result<Option<ActionRecord>> {
    // Restrict-family actions on a device are never open together and complete in
    // creation order, so the latest created is the latest completed.
    let row = sqlx::query(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions \
         WHERE machine_id = ? AND status = 'Succeeded' \
           AND action_type IN ('RestrictCodeExecution', 'UnrestrictCodeExecution') \
         ORDER BY seq DESC LIMIT 1"
    ))
    .bind(machine_id)
    .fetch_optional(reader)
    .await
    .map_err(db_err(
        "cannot read the last succeeded restrict-family action",
    ))?;
    row.as_ref().map(rows::action).transpose()
}

pub(super) async fn time_out(
    writer: &SqlitePool,
    pending_before: Timestamp,
    in_progress_before: Timestamp,
    now: Timestamp,
) -> Result<Vec<ActionRecord>> {
    let mut tx = write_tx(writer).await?;
    let stale = sqlx::query(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions \
         WHERE (status = 'Pending' AND created < ?) \
            OR (status = 'InProgress' AND last_update < ?) \
         ORDER BY seq"
    ))
    .bind(pending_before.ticks())
    .bind(in_progress_before.ticks())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err("cannot find stale machine actions"))?;

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
}

pub(super) async fn audit_trail(reader: &SqlitePool, action_id: &str) -> Result<Vec<AuditRecord>> {
    let found = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM action_audit WHERE action_id = ? ORDER BY seq"
    ))
    .bind(action_id)
    .fetch_all(reader)
    .await
    .map_err(db_err("cannot read the audit trail"))?;
    found.iter().map(rows::audit).collect()
}

/// Deletes at most `limit` final actions last updated before `before`, oldest first, in
/// one short statement (the partial index `actions_final_by_last_update` finds them);
/// their audit rows stay. Returns the ids deleted.
pub(super) async fn delete_old(
    writer: &SqlitePool,
    before: Timestamp,
    limit: u32,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "DELETE FROM actions WHERE seq IN \
         (SELECT seq FROM actions WHERE status IN ('Succeeded', 'Failed', 'TimeOut', 'Cancelled') \
          AND last_update < ? ORDER BY last_update LIMIT ?) RETURNING id",
    )
    .bind(before.ticks())
    .bind(i64::from(limit))
    .fetch_all(writer)
    .await
    .map_err(db_err("cannot delete old machine actions"))
}
