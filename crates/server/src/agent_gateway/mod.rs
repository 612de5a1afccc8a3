//! The agent gateway, `/agent/v1`: enrolment, heartbeats, the command long-poll,
//! acknowledgements and result reports, the allowlist and denial events. The protocol's
//! types live in `appfence_proto::agent`.

mod batch_gate;
mod device;
pub mod enroll;
mod handlers;
mod reports;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

pub use batch_gate::{BATCH_DEADLINE, MAX_CONCURRENT_EVENT_BATCHES};
pub use device::Device;
pub(crate) use handlers::desired;
pub use reports::{MAX_EVENT_BATCH_BYTES, MAX_PATH_BYTES};

/// The body limit of a request to `path` (the gateway's event batches and the API's
/// indicator imports have their own).
pub fn body_limit(path: &str, default: usize) -> usize {
    if path == "/agent/v1/events" {
        default.max(MAX_EVENT_BATCH_BYTES)
    } else if path == "/api/indicators/import" || path == "/api/v1.0/indicators/import" {
        default.max(crate::api::MAX_IMPORT_BODY_BYTES)
    } else {
        default
    }
}

pub fn routes(state: &AppState) -> Router<AppState> {
    let gate = batch_gate::BatchGate::new(
        batch_gate::MAX_CONCURRENT_EVENT_BATCHES,
        batch_gate::BATCH_DEADLINE,
    );
    Router::new()
        .route("/enroll", post(enroll::enroll))
        .route("/heartbeat", post(handlers::heartbeat))
        .route("/commands", get(handlers::commands))
        .route("/actions/{id}/ack", post(handlers::ack))
        .route("/actions/{id}/result", post(handlers::result))
        .route("/allowlist", get(reports::allowlist))
        // A full batch is larger than the API's body limit; the gate bounds how many
        // are in memory at once.
        .route(
            "/events",
            post(reports::events)
                .layer(DefaultBodyLimit::max(MAX_EVENT_BATCH_BYTES))
                .layer(axum::middleware::from_fn_with_state(
                    (state.clone(), gate),
                    batch_gate::BatchGate::guard,
                )),
        )
}
