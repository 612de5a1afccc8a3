//! The public, MDE-compatible API. Routes and their OpenAPI description are declared
//! together (utoipa-axum), served under `/api` and `/api/v1.0`.

mod actions;
mod body;
pub mod guard;
mod machines;
mod query;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub use body::ActionRequest;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "appfence",
        description = "Microsoft Defender for Endpoint compatible machine-actions API: restrict and unrestrict code execution on devices."
    ),
    modifiers(&BearerAuth),
    components(schemas(appfence_proto::ErrorBody, appfence_proto::ErrorDetail))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API's routes, relative to the `/api` prefix.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(actions::restrict))
        .routes(routes!(actions::unrestrict))
        .routes(routes!(actions::get_action))
        .routes(routes!(actions::list_actions))
        .routes(routes!(actions::cancel_action))
        .routes(routes!(machines::list_machines))
        .routes(routes!(machines::get_machine))
}

/// `@odata.context` of a collection or a single entity.
pub(crate) fn odata_context(state: &AppState, entity_set: &str, single: bool) -> String {
    format!(
        "{}/api/$metadata#{}{}",
        state.public_url(),
        entity_set,
        if single { "/$entity" } else { "" }
    )
}
