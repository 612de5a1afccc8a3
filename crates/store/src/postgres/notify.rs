//! Changes every replica must hear about (an action for a device, the allowlist, device
//! groups), over PostgreSQL's LISTEN/NOTIFY. A listener task per replica forwards them
//! to its subscribers. When its connection is lost it reports [`Change::Everything`] at
//! once (waiting devices re-read the store rather than wait on a deaf feed: while the
//! database is down they get a clean 503) and again once it has reconnected, so
//! subscribers re-read the store and no wake-up is lost for good.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appfence_core::Result;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{broadcast, Notify};

use super::{ctx, read};
pub use crate::Change;

/// The channel of appfence's notifications.
const CHANNEL: &str = "appfence_changes";

/// Most distinct changes waiting to be sent; past that they become one `Everything`.
const OUTBOX_LIMIT: usize = 10_000;
/// Changes received and not yet taken by a subscriber. A subscriber that falls further
/// behind must treat it as `Everything` and wake every waiting device, each of which
/// then reads the store again: with 1,024, a burst of 1,000 restricts (3,000 changes)
/// did that twice on each replica, 20,000 reads for 1,000 actions
/// (`dispatch_bench --postgres`, pg_stat_statements).
const RECEIVED_BUFFER: usize = 16_384;

#[derive(Clone, Debug)]
pub(super) struct Changes {
    sender: broadcast::Sender<Change>,
    outbox: Arc<Outbox>,
    tasks: Arc<[tokio::task::AbortHandle; 2]>,
}

impl Changes {
    pub(super) fn start(pool: PgPool) -> Changes {
        let (sender, _) = broadcast::channel(RECEIVED_BUFFER);
        let outbox = Arc::new(Outbox::default());
        let listener = tokio::spawn(listen(pool.clone(), sender.clone())).abort_handle();
        let publisher = tokio::spawn(publish_loop(pool, outbox.clone())).abort_handle();
        Changes {
            sender,
            outbox,
            tasks: Arc::new([listener, publisher]),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// Queues `change` for every replica; the publisher sends it shortly.
    pub(super) fn publish(&self, change: &Change) {
        self.outbox.put(change.payload());
    }

    /// Sends what is still queued (at a clean stop), then stops both tasks.
    pub(super) async fn stop(&self, pool: &PgPool) {
        self.tasks[1].abort();
        let rest = self.outbox.take();
        if !rest.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(2), send(pool, &rest)).await;
        }
        self.tasks[0].abort();
    }
}

/// Changes waiting to be sent, each once.
#[derive(Debug, Default)]
struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    payloads: HashSet<String>,
    everything: bool,
}

impl Outbox {
    fn put(&self, payload: String) {
        {
            let mut p = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !p.everything {
                if p.payloads.len() >= OUTBOX_LIMIT {
                    p.everything = true;
                    p.payloads.clear();
                } else {
                    p.payloads.insert(payload);
                }
            }
        }
        // Stores a permit when the publisher is busy: no change waits for the next one.
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<String> {
        let mut p = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = std::mem::take(&mut *p);
        if taken.everything {
            vec![Change::Everything.payload()]
        } else {
            taken.payloads.into_iter().collect()
        }
    }
}

async fn publish_loop(pool: PgPool, outbox: Arc<Outbox>) {
    loop {
        outbox.ready.notified().await;
        let batch = outbox.take();
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = send(&pool, &batch).await {
            tracing::warn!(error = %e, changes = batch.len(), "cannot tell the other replicas about changes; retrying");
            for payload in batch {
                outbox.put(payload);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One statement, one notification per payload.
async fn send(pool: &PgPool, payloads: &[String]) -> Result<()> {
    read(async {
        sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(pool)
            .await
            .map_err(ctx("cannot publish changes"))?;
        Ok(())
    })
    .await
}

async fn listen(pool: PgPool, tx: broadcast::Sender<Change>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "cannot listen for changes; retrying");
                } else {
                    // Whatever happened while not listening is re-read.
                    let _ = tx.send(Change::Everything);
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) => {
                                if let Some(change) = Change::parse(n.payload()) {
                                    let _ = tx.send(change);
                                }
                            }
                            // The connection was lost: reconnect (and re-read).
                            Ok(None) => {
                                tracing::warn!(
                                    "lost the change listener's connection; reconnecting"
                                );
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "the change listener failed; reconnecting");
                                break;
                            }
                        }
                    }
                    let _ = tx.send(Change::Everything);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect the change listener; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
