//! The agent gateway, `/agent/v1`: enrolment, heartbeats, the command long-poll,
//! acknowledgements and result reports. The protocol's types live in
//! `appfence_proto::agent`.

mod device;
mod enroll;
mod handlers;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

pub use device::Device;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/enroll", post(enroll::enroll))
        .route("/heartbeat", post(handlers::heartbeat))
        .route("/commands", get(handlers::commands))
        .route("/actions/{id}/ack", post(handlers::ack))
        .route("/actions/{id}/result", post(handlers::result))
}
