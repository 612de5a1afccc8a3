//! The public, MDE-compatible API. Routes and their OpenAPI description are declared
//! together (utoipa-axum), served under `/api` and `/api/v1.0`.

mod actions;
mod alerts;
mod body;
mod enforcement;
pub mod guard;
mod indicator_body;
mod indicators;
mod machine_lookups;
mod machine_tags;
mod machine_update;
mod machines;
mod query;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub use body::ActionRequest;
pub use indicator_body::IndicatorRequest;
pub use indicators::MAX_IMPORT_BODY_BYTES;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "appfence",
        description = "Microsoft Defender for Endpoint compatible machine-actions API: restrict and unrestrict code execution on devices, update machines, and the indicators API for files every device blocks or audits and restricted devices let run."
    ),
    modifiers(&BearerAuth),
    components(schemas(appfence_proto::ErrorBody, appfence_proto::ErrorDetail, appfence_proto::AlertEvidence, appfence_proto::AlertComment, appfence_proto::RelatedUser))
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
        .routes(routes!(actions::offboard))
        .routes(routes!(actions::get_action))
        .routes(routes!(actions::list_actions))
        .routes(routes!(actions::cancel_action))
        .routes(routes!(machines::list_machines))
        .routes(routes!(
            machines::get_machine,
            machine_update::update_machine
        ))
        .routes(routes!(machine_lookups::find_by_tag))
        .routes(routes!(machine_tags::tag_machine))
        .routes(routes!(machine_tags::tag_machines))
        .routes(routes!(enforcement::list_machine_events))
        .routes(routes!(enforcement::get_machine_enforcement))
        .routes(routes!(
            indicators::submit_indicator,
            indicators::list_indicators
        ))
        // 500 indicators are larger than the API's body limit.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(indicators::import_indicators))
                .layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BODY_BYTES)),
        )
        .routes(routes!(indicators::delete_indicator))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert, alerts::update_alert))
        .routes(routes!(alerts::batch_update_alerts))
        .routes(routes!(alerts::get_alert_machine))
        .routes(routes!(alerts::list_machine_alerts))
}

/// A page of a collection as MDE sends it: context, optional count, values, and the
/// next link when more results remain.
pub(crate) fn collection<T, W>(
    state: &AppState,
    uri: &axum::http::Uri,
    entity_set: &str,
    pairs: &[(String, String)],
    page: appfence_core::odata::Page<T>,
    wire: impl Fn(&T) -> W,
) -> crate::response::OData<appfence_proto::Collection<W>> {
    let base = format!("{}{}", state.public_url(), uri.path());
    let next = query::next_page_link(&base, pairs, &page);
    crate::response::OData(
        axum::http::StatusCode::OK,
        appfence_proto::Collection {
            odata_context: odata_context(state, entity_set, false),
            odata_count: page.total,
            value: page.items.iter().map(wire).collect(),
            odata_next_link: next,
        },
    )
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
