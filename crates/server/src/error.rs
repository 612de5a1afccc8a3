//! The one place where errors become HTTP responses: status, the MDE envelope
//! `{"error":{"code","message","target"}}` with a fresh target GUID, and a log line
//! carrying the same target.

use appfence_core::Error;
use appfence_proto::{ErrorBody, ErrorDetail};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest(_)
        | Error::OData(_)
        | Error::InvalidInput(_)
        | Error::InvalidRequestBody(_)
        | Error::MissingRequiredParameter(_)
        | Error::ActiveRequestAlreadyExists
        | Error::ActionAlreadyFinal(_)
        | Error::OsPlatformNotSupported(_)
        | Error::ClientVersionNotSupported(_) => StatusCode::BAD_REQUEST,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::UriTooLong(_) => StatusCode::URI_TOO_LONG,
        Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::ResourceNotFound(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Storage { fault, .. } if fault.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        Error::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = status_of(&e);
        let target = appfence_core::ids::new_guid();
        if crate::storage_health::report(&e) {
            // Logged once per episode there, not once per request.
            tracing::debug!(%target, code = e.code(), error = %e, "request refused: storage fault");
        } else if status.is_server_error() {
            tracing::error!(%target, code = e.code(), error = %e, "request failed");
        } else {
            tracing::info!(%target, code = e.code(), status = status.as_u16(), reason = %e, "request refused");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: e.code().to_string(),
                message: e.public_message(),
                target,
            },
        };
        let json = serde_json::to_vec(&body).expect("error envelope serialises");
        let mut resp = (status, json).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let retry_after = match &e {
            Error::TooManyRequests { retry_after, .. } => Some(*retry_after),
            Error::Storage { fault, .. } => fault.retry_after(),
            _ => None,
        };
        if let Some(after) = retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
