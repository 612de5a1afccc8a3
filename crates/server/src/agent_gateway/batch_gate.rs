//! Back-pressure on event batches: at most [`MAX_CONCURRENT_EVENT_BATCHES`] are read and
//! stored at once per replica. A batch may be 8 MiB, so this bounds the memory batches
//! take however many devices send at once; a batch beyond it is answered 429 with
//! `Retry-After` before its body is read, and the agent keeps it and sends it again
//! after its backoff (its own buffer is bounded too).

use std::sync::Arc;
use std::time::Duration;

use appfence_core::Error;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// Batches read and stored at once per replica (8 × 8 MiB of bodies at most).
pub const MAX_CONCURRENT_EVENT_BATCHES: usize = 8;

/// How long a refused agent is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct BatchGate {
    permits: Arc<Semaphore>,
}

impl BatchGate {
    pub fn new(concurrent: usize) -> Self {
        BatchGate {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }

    /// A place for one batch, or `TooManyRequests` at once (never a wait: a waiting
    /// request would still hold its connection and, soon, its body).
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("appfence_event_batches_refused_total").increment(1);
            Error::TooManyRequests {
                message: format!(
                    "The server is storing {MAX_CONCURRENT_EVENT_BATCHES} other event batches; send this one again after {} s",
                    RETRY_AFTER.as_secs()
                ),
                retry_after: RETRY_AFTER,
            }
        })
    }

    /// The middleware: holds a place while the batch's body is read and stored.
    pub async fn guard(self, req: Request, next: Next) -> Response {
        match self.enter() {
            Ok(_permit) => next.run(req).await,
            Err(e) => ApiError(e).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_refuses_at_once_and_reopens() {
        let gate = BatchGate::new(2);
        let a = gate.enter().unwrap();
        let _b = gate.enter().unwrap();
        match gate.enter() {
            Err(Error::TooManyRequests {
                retry_after,
                message,
            }) => {
                assert_eq!(retry_after, Duration::from_secs(1));
                assert!(message.contains("send this one again"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(gate.enter().is_ok());
    }
}
