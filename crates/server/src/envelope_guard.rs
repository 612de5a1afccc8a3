//! Every error answer carries the MDE envelope, including those written by the
//! framework before a handler runs: axum's extractor rejections (a path segment that is
//! not UTF-8, a body over the limit on an endpoint with a stock extractor, a wrong
//! content type) are plain text. This outer layer turns any error response that is not
//! JSON into the envelope with the same status and the framework's message (which names
//! the input, never a secret), and refuses request lines longer than [`MAX_URI_BYTES`]
//! with a 414 envelope. `/healthz` and `/readyz` keep their plain-text answers.
//!
//! Request lines over hyper's own limit (64 KiB) never reach the application: hyper
//! answers those 414 itself, without a body.

use appfence_core::Error;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The longest request line (path and query) served.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// An oversized body declared by `Content-Length` is read and discarded up to this
/// much (and this long) before the 413, so that a client that writes its whole body
/// before reading the answer gets the answer rather than a reset connection.
const DRAIN_BYTES: u64 = 32 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// How much of a framework message is kept.
const MESSAGE_BYTES: usize = 1024;

/// JSON (an envelope or an OAuth error), or one of our own HTML pages (the console's,
/// and the authorization endpoint's error pages, which people read in a browser): the
/// framework's rejections are plain text, never these.
fn is_ours(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"))
}

/// Route layer: a body whose declared length is over `max` is refused with a 413
/// envelope after being drained (bounded); the handler never sees it.
pub async fn refuse_oversized(
    axum::extract::State(max): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = crate::agent_gateway::body_limit(req.uri().path(), max);
    let Some(length) = declared.filter(|l| *l > max as u64) else {
        return next.run(req).await;
    };
    let drained = length <= DRAIN_BYTES && drain(req.into_body()).await;
    let mut resp =
        ApiError(Error::PayloadTooLarge("Request body is too large".into())).into_response();
    if !drained {
        // The rest of the body is not read: the connection cannot be reused.
        resp.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Reads and discards `body`, at most [`DRAIN_BYTES`] within [`DRAIN_TIME`]; says
/// whether it was read to its end.
async fn drain(body: axum::body::Body) -> bool {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let reading = async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    read += bytes.len() as u64;
                    if read > DRAIN_BYTES {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, reading)
        .await
        .unwrap_or(false)
}

pub async fn ensure_envelope(req: Request, next: Next) -> Response {
    let length = req.uri().path().len() + req.uri().query().map_or(0, |q| q.len() + 1);
    if length > MAX_URI_BYTES {
        return ApiError(Error::UriTooLong(format!(
            "The request URI is {length} bytes long; at most {MAX_URI_BYTES} are served"
        )))
        .into_response();
    }
    // The probes' plain text and the console's own HTML pages stay as they are.
    let probes = matches!(req.uri().path(), "/healthz" | "/readyz")
        || req.uri().path().starts_with("/console/");
    let resp = next.run(req).await;
    let status = resp.status();
    if probes || !(status.is_client_error() || status.is_server_error()) || is_ours(&resp) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MESSAGE_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge("Request body is too large".into()),
        StatusCode::URI_TOO_LONG => Error::UriTooLong("The request URI is too long".into()),
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed(text),
        StatusCode::NOT_FOUND => Error::NotFound(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
            Error::InvalidRequestBody(text)
        }
        s if s.is_server_error() => Error::Internal(text),
        _ => Error::InvalidInput(text),
    };
    let mut envelope = ApiError(error).into_response();
    // The framework's status stands (e.g. 415), and so do headers such as `Allow`.
    *envelope.status_mut() = parts.status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            envelope.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    envelope
}
