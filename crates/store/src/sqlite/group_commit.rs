//! Group commit for the writes that come at fleet rate: action creations, status
//! changes and heartbeats. SQLite makes a commit durable with an fsync of its log, and
//! with one writer those fsyncs come one after another: that, not the statements,
//! bounds how many actions a second can be created, acknowledged or completed (and
//! 10,000 devices heartbeating every 30 s are 333 commits a second by themselves). Writes that arrive while the writer
//! is busy wait in a queue; the next time it is free, one task takes everything queued
//! (up to [`MAX_BATCH`]) and applies it in one transaction, so one fsync makes the whole
//! batch durable. Each caller is answered only after its batch has committed, and with
//! its own outcome.
//!
//! Each write keeps its own outcome inside the batch:
//! - a creation is one statement, and SQLite undoes only the statement that breaks a
//!   constraint (its default `ABORT` resolution) and keeps the transaction, so the one
//!   creation refused by `actions_one_open_restrict_family` gets "already in progress"
//!   while the rest of its batch commits;
//! - a status change or a heartbeat is several statements, run inside a savepoint of
//!   its own, rolled back alone when it fails.
//!
//! A storage fault (a full disk, an I/O error) can end the transaction by itself, so it
//! fails the whole batch and every caller in it gets that error: nothing is reported
//! written that was not. A write alone in the queue runs as it would without batching
//! (one autocommit statement, or its own transaction): a quiet server pays nothing.

use appfence_core::records::{ActionRecord, StatusChange, TransitionOutcome};
use appfence_core::{Error, Result, StorageFault};
use appfence_proto::agent::{DeviceInfo, EnforcementState};
use appfence_proto::Timestamp;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{actions, commit, machines, write_tx};

/// The most writes committed together. A batch holds the write lock while it runs
/// (tens of microseconds a row), so this bounds how long other writes wait.
const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer; further callers wait to join the queue.
const QUEUE: usize = 4096;

/// SQLite's primary result code for a broken constraint (`SQLITE_CONSTRAINT`), which
/// undoes the statement and leaves the transaction open.
const SQLITE_CONSTRAINT: i32 = 19;

enum Write {
    Create(ActionRecord),
    Transition {
        action_id: String,
        change: StatusChange,
    },
    Heartbeat(Box<Heartbeat>),
}

struct Heartbeat {
    machine_id: String,
    info: DeviceInfo,
    enforcement: EnforcementState,
    at: Timestamp,
}

enum Written {
    Created,
    Transitioned(TransitionOutcome),
    HeartbeatRecorded,
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Result<Written>>,
}

/// The queue in front of the writer for the action lifecycle; cloning shares it.
#[derive(Clone, Debug)]
pub(super) struct WriteQueue {
    writes: mpsc::Sender<Queued>,
}

impl WriteQueue {
    /// Starts the task that applies what is queued; it ends when every handle is gone.
    pub(super) fn start(writer: SqlitePool) -> WriteQueue {
        let (writes, queued) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(writer, queued));
        WriteQueue { writes }
    }

    /// Creates `action`, answering once it is durable (or refused).
    pub(super) async fn create(&self, action: &ActionRecord) -> Result<()> {
        actions::check_new(action)?;
        match self.submit(Write::Create(action.clone())).await? {
            Written::Created => Ok(()),
            _ => Err(mismatch("a creation")),
        }
    }

    /// Applies `change` to the action, answering once it is durable.
    pub(super) async fn transition(
        &self,
        action_id: &str,
        change: &StatusChange,
    ) -> Result<TransitionOutcome> {
        let write = Write::Transition {
            action_id: action_id.to_string(),
            change: change.clone(),
        };
        match self.submit(write).await? {
            Written::Transitioned(outcome) => Ok(outcome),
            _ => Err(mismatch("a status change")),
        }
    }

    /// Records a device's heartbeat, answering once it is durable.
    pub(super) async fn record_heartbeat(
        &self,
        machine_id: &str,
        info: &DeviceInfo,
        enforcement: &EnforcementState,
        at: Timestamp,
    ) -> Result<()> {
        let write = Write::Heartbeat(Box::new(Heartbeat {
            machine_id: machine_id.to_string(),
            info: info.clone(),
            enforcement: enforcement.clone(),
            at,
        }));
        match self.submit(write).await? {
            Written::HeartbeatRecorded => Ok(()),
            _ => Err(mismatch("a heartbeat")),
        }
    }

    async fn submit(&self, write: Write) -> Result<Written> {
        let (done, outcome) = oneshot::channel();
        self.writes
            .send(Queued { write, done })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn mismatch(what: &str) -> Error {
    Error::Internal(format!(
        "{what} was answered with the outcome of another write"
    ))
}

fn stopped() -> Error {
    Error::storage(
        StorageFault::Unavailable,
        "the writer of machine actions has stopped (the store is closing)",
    )
}

async fn write_batches(writer: SqlitePool, mut queued: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = match batch.as_slice() {
            [one] => vec![write_alone(&writer, &one.write).await],
            many => write_together(&writer, many)
                .await
                .unwrap_or_else(|e| (0..many.len()).map(|_| Err(e.clone())).collect()),
        };
        for (queued, outcome) in batch.drain(..).zip(outcomes) {
            // A caller that has gone away (its request was dropped) is not waiting.
            let _ = queued.done.send(outcome);
        }
    }
}

async fn write_alone(writer: &SqlitePool, write: &Write) -> Result<Written> {
    match write {
        Write::Create(action) => actions::insert(writer, action)
            .await
            .map(|()| Written::Created)
            .map_err(actions::insert_failed),
        Write::Transition { action_id, change } => actions::transition(writer, action_id, change)
            .await
            .map(Written::Transitioned),
        Write::Heartbeat(h) => {
            machines::record_heartbeat(writer, &h.machine_id, &h.info, &h.enforcement, h.at)
                .await
                .map(|()| Written::HeartbeatRecorded)
        }
    }
}

/// Applies every write in one transaction: each one's own outcome, or the error that
/// failed them all.
async fn write_together(writer: &SqlitePool, batch: &[Queued]) -> Result<Vec<Result<Written>>> {
    let mut tx = write_tx(writer).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for queued in batch {
        let outcome = match &queued.write {
            Write::Create(action) => match actions::insert(&mut *tx, action).await {
                Ok(()) => Ok(Written::Created),
                Err(e) if broke_a_constraint(&e) => Err(actions::insert_failed(e)),
                // Dropping the transaction rolls back whatever is left of it.
                Err(e) => return Err(actions::insert_failed(e)),
            },
            several => in_savepoint(&mut tx, several).await?,
        };
        outcomes.push(outcome);
    }
    commit(tx).await?;
    Ok(outcomes)
}

/// A write of several statements inside its own savepoint: `Ok(outcome)` for the
/// caller, `Err` for a fault that must fail the whole batch.
async fn in_savepoint(conn: &mut SqliteConnection, write: &Write) -> Result<Result<Written>> {
    let mut savepoint = conn
        .begin()
        .await
        .map_err(super::db_err("cannot begin a savepoint"))?;
    let written = match write {
        Write::Create(action) => actions::insert(&mut *savepoint, action)
            .await
            .map(|()| Written::Created)
            .map_err(actions::insert_failed),
        Write::Transition { action_id, change } => {
            actions::transition_on(&mut savepoint, action_id, change)
                .await
                .map(Written::Transitioned)
        }
        Write::Heartbeat(h) => machines::record_heartbeat_on(
            &mut savepoint,
            &h.machine_id,
            &h.info,
            &h.enforcement,
            h.at,
        )
        .await
        .map(|()| Written::HeartbeatRecorded),
    };
    match written {
        Ok(written) => {
            savepoint
                .commit()
                .await
                .map_err(super::db_err("cannot release a savepoint"))?;
            Ok(Ok(written))
        }
        Err(e @ Error::Storage { .. }) => Err(e),
        Err(e) => {
            savepoint
                .rollback()
                .await
                .map_err(super::db_err("cannot roll back a savepoint"))?;
            Ok(Err(e))
        }
    }
}

fn broke_a_constraint(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == SQLITE_CONSTRAINT),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use appfence_proto::ActionStatus::{InProgress, Pending, Succeeded};
    use appfence_proto::ActionType::{CollectInvestigationPackage, RestrictCodeExecution};

    use super::*;
    use crate::contract::{action_record, at, change, new_action, new_machine, new_tenant};
    use crate::sqlite::SqliteStore;
    use crate::Store;
    use appfence_core::MachineRef;

    fn queued(write: Write) -> Queued {
        Queued {
            write,
            done: oneshot::channel().0,
        }
    }

    /// A batch's outcome without what was written: `Ok(())` or the caller's error.
    fn created(outcome: &Result<Written>) -> Result<()> {
        outcome.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// One batch holding a winner, its duplicate, a creation for a device that does not
    /// exist and an unrelated action: each gets its own outcome, the batch commits, and
    /// exactly the accepted rows (with their audit rows) are in the database after a
    /// reopen.
    #[tokio::test(flavor = "multi_thread")]
    async fn each_creation_of_a_batch_gets_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appfence.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let t = new_tenant(&store).await;
        let m = new_machine(&store, &t, "batch.corp.example").await;
        let other = new_machine(&store, &t, "other.corp.example").await;
        let winner = action_record(&m, RestrictCodeExecution, at(1));
        let duplicate = action_record(&m, RestrictCodeExecution, at(2));
        let mut orphan = action_record(&other, RestrictCodeExecution, at(3));
        orphan.machine_id = "0000000000000000000000000000000000000000".into();
        let unrelated = action_record(&m, CollectInvestigationPackage, at(4));
        let batch: Vec<_> = [&winner, &duplicate, &orphan, &unrelated]
            .into_iter()
            .map(|a| queued(Write::Create(a.clone())))
            .collect();

        let outcomes = write_together(&store.writer, &batch).await.unwrap();
        let outcomes: Vec<_> = outcomes.iter().map(created).collect();
        assert_eq!(outcomes[0], Ok(()));
        assert_eq!(outcomes[1], Err(Error::ActiveRequestAlreadyExists));
        assert!(
            matches!(&outcomes[2], Err(Error::Internal(m)) if m.contains("FOREIGN KEY")),
            "{:?}",
            outcomes[2]
        );
        assert_eq!(outcomes[3], Ok(()));
        store.close().await;

        let reopened = SqliteStore::open(&path).await.unwrap();
        for (a, kept) in [
            (&winner, true),
            (&duplicate, false),
            (&orphan, false),
            (&unrelated, true),
        ] {
            let found = reopened.action(&t.id, &a.id).await.unwrap();
            assert_eq!(found.is_some(), kept, "{}", a.id);
            let trail = reopened.audit_trail(&a.id).await.unwrap();
            assert_eq!(trail.len(), usize::from(kept), "{}", a.id);
        }
    }

    /// Creations and status changes in one batch, in queue order: a change sees the
    /// creation before it, a refused or failed change leaves the rest untouched, and
    /// after a reopen each action has exactly the audit rows of what was applied.
    #[tokio::test(flavor = "multi_thread")]
    async fn changes_in_a_batch_keep_their_own_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("appfence.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let t = new_tenant(&store).await;
        let m = new_machine(&store, &t, "changes.corp.example").await;
        let earlier = new_action(&store, &m, CollectInvestigationPackage, at(1)).await;
        let fresh = action_record(&m, RestrictCodeExecution, at(2));
        let batch = vec![
            queued(Write::Create(fresh.clone())),
            queued(Write::Transition {
                action_id: fresh.id.clone(),
                change: change(InProgress, at(3), "agent"),
            }),
            // Back to Pending is not a lifecycle step: refused, nothing written.
            queued(Write::Transition {
                action_id: fresh.id.clone(),
                change: change(Pending, at(4), "agent"),
            }),
            queued(Write::Transition {
                action_id: "no-such-action".into(),
                change: change(Succeeded, at(5), "agent"),
            }),
            queued(Write::Transition {
                action_id: earlier.id.clone(),
                change: change(Succeeded, at(6), "agent"),
            }),
            queued(heartbeat(&m.id, at(7))),
            queued(heartbeat("0000000000000000000000000000000000000000", at(8))),
        ];
        let outcomes = write_together(&store.writer, &batch).await.unwrap();
        assert!(matches!(outcomes[0], Ok(Written::Created)));
        assert!(
            matches!(&outcomes[1], Ok(Written::Transitioned(TransitionOutcome::Applied(a))) if a.status == InProgress)
        );
        assert!(
            matches!(&outcomes[2], Ok(Written::Transitioned(TransitionOutcome::Refused(a))) if a.status == InProgress)
        );
        assert!(
            matches!(
                &outcomes[3],
                Err(Error::NotFound(_) | Error::ResourceNotFound(_))
            ),
            "{:?}",
            outcomes[3].as_ref().err()
        );
        assert!(
            matches!(&outcomes[4], Ok(Written::Transitioned(TransitionOutcome::Applied(a))) if a.status == Succeeded)
        );
        assert!(matches!(outcomes[5], Ok(Written::HeartbeatRecorded)));
        assert!(
            matches!(
                &outcomes[6],
                Err(Error::ResourceNotFound(_) | Error::NotFound(_))
            ),
            "{:?}",
            outcomes[6].as_ref().err()
        );
        store.close().await;

        let reopened = SqliteStore::open(&path).await.unwrap();
        for (id, statuses) in [
            (&fresh.id, vec![Pending, InProgress]),
            (&earlier.id, vec![Pending, Succeeded]),
        ] {
            let trail = reopened.audit_trail(id).await.unwrap();
            let to: Vec<_> = trail.iter().map(|r| r.to).collect();
            assert_eq!(to, statuses, "{id}");
        }
        let seen = reopened
            .machine(&t.id, &MachineRef::Id(m.id.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.last_seen, Some(at(7)));
    }

    fn heartbeat(machine_id: &str, at: Timestamp) -> Write {
        Write::Heartbeat(Box::new(Heartbeat {
            machine_id: machine_id.into(),
            info: DeviceInfo::default(),
            enforcement: EnforcementState::default(),
            at,
        }))
    }

    /// Through the queue: callers answered with what happened to their own creation,
    /// whichever batch it fell into.
    #[tokio::test(flavor = "multi_thread")]
    async fn queued_creations_answer_their_callers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("appfence.db"))
            .await
            .unwrap();
        let t = new_tenant(&store).await;
        let m = new_machine(&store, &t, "queue.corp.example").await;
        let first = action_record(&m, RestrictCodeExecution, at(1));
        let second = action_record(&m, RestrictCodeExecution, at(2));
        let (a, b) = tokio::join!(store.create_action(&first), store.create_action(&second));
        // Whichever reached the queue first won; the other was refused.
        assert_eq!(
            [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "{a:?} {b:?}"
        );
        assert!([&a, &b].contains(&&Err(Error::ActiveRequestAlreadyExists)));
        let mut not_pending = action_record(&m, CollectInvestigationPackage, at(3));
        not_pending.status = appfence_proto::ActionStatus::InProgress;
        assert!(matches!(
            store.create_action(&not_pending).await,
            Err(Error::Internal(_))
        ));
    }
}
