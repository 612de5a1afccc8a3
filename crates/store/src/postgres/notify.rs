//! Changes every replica must hear about (an action for a device, the allowlist, device
//! groups), over PostgreSQL's LISTEN/NOTIFY. A listener task per replica forwards them
//! to its subscribers. When its connection is lost it reports [`Change::Everything`] at
//! once (waiting devices re-read the store rather than wait on a deaf feed: while the
//! database is down they get a clean 503) and again once it has reconnected, so
//! subscribers re-read the store and no wake-up is lost for good.

use std::sync::Arc;
use std::time::Duration;

use appfence_core::Result;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use super::{ctx, read};
pub use crate::Change;

/// The channel of appfence's notifications.
const CHANNEL: &str = "appfence_changes";

#[derive(Clone, Debug)]
pub(super) struct Changes {
    sender: broadcast::Sender<Change>,
    task: Arc<tokio::task::AbortHandle>,
}

impl Changes {
    pub(super) fn start(pool: PgPool) -> Changes {
        let (sender, _) = broadcast::channel(1024);
        let tx = sender.clone();
        let task = tokio::spawn(listen(pool, tx)).abort_handle();
        Changes {
            sender,
            task: Arc::new(task),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
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
                                tracing::warn!("lost the change listener's connection; reconnecting");
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

/// Publishes `change` to every replica (this one included), after the caller's
/// transaction committed.
pub(super) async fn publish(pool: &PgPool, change: &Change) -> Result<()> {
    read(async {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(change.payload())
            .execute(pool)
            .await
            .map_err(ctx("cannot publish a change"))?;
        Ok(())
    })
    .await
}
