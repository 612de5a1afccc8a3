//! Group commit for action creation. SQLite makes a commit durable with an fsync of its
//! log, and with one writer those fsyncs come one after another: that, not the insert,
//! bounds how many actions a second can be created. Creations that arrive while the
//! writer is busy wait in a queue; the next time it is free, one task takes everything
//! queued (up to [`MAX_BATCH`]) and inserts it in one transaction, so one fsync makes
//! the whole batch durable. Each caller is answered only after its batch has committed,
//! and with its own outcome.
//!
//! The duplicate rule still holds row by row: SQLite undoes only the statement that
//! breaks a constraint (its default `ABORT` resolution) and keeps the transaction, so
//! the one creation refused by `actions_one_open_restrict_family` gets "already in
//! progress" while the rest of its batch commits. Any other error (a full disk, an I/O
//! error) can end the transaction by itself, so it fails the whole batch, and every
//! caller in it gets that error: nothing is reported created that was not.
//!
//! A creation alone in the queue is one autocommit statement, as without batching: a
//! quiet server pays nothing for this.

use appfence_core::records::ActionRecord;
use appfence_core::{Error, Result, StorageFault};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::{actions, commit, write_tx};

/// The most creations committed together. A batch holds the write lock while it
/// inserts (tens of microseconds a row), so this bounds how long other writes wait.
const MAX_BATCH: usize = 256;
/// Creations that may wait for the writer; further callers wait to join the queue.
const QUEUE: usize = 4096;

/// SQLite's primary result code for a broken constraint (`SQLITE_CONSTRAINT`), which
/// undoes the statement and leaves the transaction open.
const SQLITE_CONSTRAINT: i32 = 19;

struct Creation {
    action: ActionRecord,
    done: oneshot::Sender<Result<()>>,
}

/// The queue in front of the writer for new actions; cloning shares it.
#[derive(Clone, Debug)]
pub(super) struct CreationQueue {
    creations: mpsc::Sender<Creation>,
}

impl CreationQueue {
    /// Starts the task that writes what is queued; it ends when every handle is gone.
    pub(super) fn start(writer: SqlitePool) -> CreationQueue {
        let (creations, queued) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(writer, queued));
        CreationQueue { creations }
    }

    /// Creates `action`, answering once it is durable (or refused).
    pub(super) async fn create(&self, action: &ActionRecord) -> Result<()> {
        actions::check_new(action)?;
        let (done, outcome) = oneshot::channel();
        self.creations
            .send(Creation {
                action: action.clone(),
                done,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::storage(
        StorageFault::Unavailable,
        "the writer of new actions has stopped (the store is closing)",
    )
}

async fn write_batches(writer: SqlitePool, mut queued: mpsc::Receiver<Creation>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = match batch.as_slice() {
            [one] => vec![actions::insert(&writer, &one.action)
                .await
                .map_err(actions::insert_failed)],
            many => insert_together(&writer, many)
                .await
                .unwrap_or_else(|e| vec![Err(e); many.len()]),
        };
        for (creation, outcome) in batch.drain(..).zip(outcomes) {
            // A caller that has gone away (its request was dropped) is not waiting.
            let _ = creation.done.send(outcome);
        }
    }
}

/// Inserts every creation in one transaction: each one's own outcome, or the error
/// that failed them all.
async fn insert_together(writer: &SqlitePool, batch: &[Creation]) -> Result<Vec<Result<()>>> {
    let mut tx = write_tx(writer).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for creation in batch {
        match actions::insert(&mut *tx, &creation.action).await {
            Ok(()) => outcomes.push(Ok(())),
            Err(e) if broke_a_constraint(&e) => outcomes.push(Err(actions::insert_failed(e))),
            // Dropping the transaction rolls back whatever is left of it.
            Err(e) => return Err(actions::insert_failed(e)),
        }
    }
    commit(tx).await?;
    Ok(outcomes)
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
    use appfence_proto::ActionType::{CollectInvestigationPackage, RestrictCodeExecution};

    use super::*;
    use crate::contract::{action_record, at, new_machine, new_tenant};
    use crate::sqlite::SqliteStore;
    use crate::Store;

    fn creation(action: ActionRecord) -> (Creation, oneshot::Receiver<Result<()>>) {
        let (done, outcome) = oneshot::channel();
        (Creation { action, done }, outcome)
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
            .map(|a| creation(a.clone()).0)
            .collect();

        let outcomes = insert_together(&store.writer, &batch).await.unwrap();
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
