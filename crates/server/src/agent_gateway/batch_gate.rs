//! Back-pressure on event batches: at most [`MAX_CONCURRENT_EVENT_BATCHES`] are read and
//! stored at once per replica. A batch may be 8 MiB, so this bounds the memory batches
//! take however many devices send at once; a batch beyond it is answered 429 with
//! `Retry-After` before its body is read, and the agent keeps it and sends it again
//! after its backoff (its own buffer is bounded too). Only an enrolled device takes a
//! place (the credential is checked first, so nobody else can fill the gate), and for
//! at most [`BATCH_DEADLINE`] (a device sending its body slowly cannot keep it).

use std::sync::Arc;
use std::time::Duration;

use appfence_core::Error;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Device;
use crate::{ApiError, AppState};

/// Batches read and stored at once per replica (8 × 8 MiB of bodies at most).
pub const MAX_CONCURRENT_EVENT_BATCHES: usize = 8;

/// How long a refused agent is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest a batch may take to arrive and be stored (8 MiB at about 1 Mbit/s).
pub const BATCH_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct BatchGate {
    permits: Arc<Semaphore>,
    deadline: Duration,
}

impl BatchGate {
    pub fn new(concurrent: usize, deadline: Duration) -> Self {
        BatchGate {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            deadline,
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

    /// The middleware: authenticates the device, then holds a place while its batch is
    /// read and stored, for at most its deadline ([`BATCH_DEADLINE`]; then 408: the agent sends the
    /// batch again; a batch cut short stored nothing). The device is handed on, so the
    /// handler does not look it up again.
    pub async fn guard(
        State((state, gate)): State<(AppState, BatchGate)>,
        req: Request,
        next: Next,
    ) -> Response {
        let (mut parts, body) = req.into_parts();
        let device = match Device::from_request_parts(&mut parts, &state).await {
            Ok(device) => device,
            Err(e) => return e.into_response(),
        };
        let _permit = match gate.enter() {
            Ok(permit) => permit,
            Err(e) => return ApiError(e).into_response(),
        };
        parts.extensions.insert(device);
        let req = Request::from_parts(parts, body);
        match tokio::time::timeout(gate.deadline, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError(Error::RequestTimeout(format!(
                "The event batch did not arrive and get stored within {:?}; send it again",
                gate.deadline
            )))
            .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_refuses_at_once_and_reopens() {
        let gate = BatchGate::new(2, BATCH_DEADLINE);
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

    /// A router with only the gated route, whose handler reads the whole body.
    fn gated(state: &AppState, gate: BatchGate) -> axum::Router {
        axum::Router::new()
            .route(
                "/events",
                axum::routing::post(|_: Device, body: axum::body::Bytes| async move {
                    body.len().to_string()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                (state.clone(), gate),
                BatchGate::guard,
            ))
            .with_state(state.clone())
    }

    fn post(credential: &str, body: axum::body::Body) -> Request {
        Request::post("/events")
            .header("authorization", format!("Bearer {credential}"))
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn only_devices_take_a_place_and_only_until_the_deadline() {
        use tower::ServiceExt;
        let t = crate::test_support::test_state().await;
        let mut machine =
            appfence_store::contract::machine_record(crate::test_support::TENANT, "gate.example");
        machine.credential_sha256 = crate::oauth::secrets::sha256_hex("the-credential");
        t.state.store.insert_machine(&machine).await.unwrap();
        let gate = BatchGate::new(1, Duration::from_millis(200));
        let app = gated(&t.state, gate.clone());

        // A stranger is refused before taking the only place.
        let never = || {
            axum::body::Body::from_stream(futures::stream::pending::<
                Result<axum::body::Bytes, std::io::Error>,
            >())
        };
        let r = app.clone().oneshot(post("forged", never())).await.unwrap();
        assert_eq!(r.status(), axum::http::StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(post("the-credential", axum::body::Body::from("[1]")))
            .await
            .unwrap();
        assert_eq!(r.status(), axum::http::StatusCode::OK);

        // A device whose body never comes holds its place until the deadline (another
        // batch meanwhile: 429), then gets 408 and the place is free again.
        let slow = tokio::spawn(app.clone().oneshot(post("the-credential", never())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = app
            .clone()
            .oneshot(post("the-credential", axum::body::Body::from("[2]")))
            .await
            .unwrap();
        assert_eq!(r.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        let r = slow.await.unwrap().unwrap();
        assert_eq!(r.status(), axum::http::StatusCode::REQUEST_TIMEOUT);
        assert!(gate.enter().is_ok(), "the place is free again");
    }
}
