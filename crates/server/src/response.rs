//! Successful responses of the public API: JSON with MDE's OData headers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub struct OData<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for OData<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.1) {
            Ok(body) => {
                let mut resp = (self.0, body).into_response();
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(appfence_proto::ODATA_CONTENT_TYPE),
                );
                h.insert(
                    "OData-Version",
                    HeaderValue::from_static(appfence_proto::ODATA_VERSION),
                );
                resp
            }
            Err(e) => crate::ApiError(appfence_core::Error::internal(e)).into_response(),
        }
    }
}
