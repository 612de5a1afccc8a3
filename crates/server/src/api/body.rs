//! Request bodies of restrict / unrestrict / cancel. Keys are PascalCase and
//! case-sensitive as in MDE; every problem gets its own precise error. (The indicator
//! body, camelCase as in MDE, is in `indicator_body`.)

use appfence_core::Error;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

use crate::ApiError;

/// Longest accepted `Comment`, `Title`, `ExternalId`, and indicator texts.
pub(super) const MAX_TEXT: usize = 4096;

/// The raw JSON object of a POST body, read within the configured size limit.
pub struct JsonObject(pub Option<Map<String, Value>>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge("Request body is too large".into())
            } else {
                Error::InvalidRequestBody(format!("Request body could not be read: {rejection}"))
            }
        })?;
        parse_object(&bytes).map(JsonObject).map_err(ApiError)
    }
}

/// `None` for an empty body; otherwise the body must be a JSON object.
pub(super) fn parse_object(bytes: &[u8]) -> Result<Option<Map<String, Value>>, Error> {
    // Some Windows clients prefix their JSON with a UTF-8 byte-order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(Error::InvalidRequestBody(
            "Request body is incorrect: expected a JSON object".into(),
        )),
        Err(e) => Err(Error::InvalidRequestBody(format!(
            "Request body is incorrect: not valid JSON ({e})"
        ))),
    }
}

/// The body of restrict / unrestrict.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = ActionRequest)]
pub struct ActionRequest {
    #[schema(rename = "Comment")]
    pub comment: String,
    #[schema(rename = "ExternalId")]
    pub external_id: Option<String>,
    #[schema(rename = "Title")]
    pub title: Option<String>,
    #[schema(rename = "RequestSource")]
    pub request_source: Option<String>,
}

impl ActionRequest {
    pub fn from_body(body: Option<Map<String, Value>>) -> Result<Self, Error> {
        let map = body.ok_or_else(|| {
            Error::InvalidRequestBody(
                "Request body is empty: expected a JSON object with a Comment".into(),
            )
        })?;
        let comment = optional_text(&map, "Comment")?
            .ok_or_else(|| Error::MissingRequiredParameter("Comment".into()))?;
        if comment.trim().is_empty() {
            return Err(Error::MissingRequiredParameter("Comment".into()));
        }
        Ok(ActionRequest {
            comment,
            external_id: optional_text(&map, "ExternalId")?,
            title: optional_text(&map, "Title")?,
            request_source: optional_text(&map, "RequestSource")?,
        })
    }
}

/// The optional `Comment` of a cancel request.
pub fn cancel_comment(body: Option<Map<String, Value>>) -> Result<Option<String>, Error> {
    match body {
        None => Ok(None),
        Some(map) => optional_text(&map, "Comment"),
    }
}

/// A key that may be absent or `null`, otherwise a string of bounded length.
pub(super) fn optional_text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() > MAX_TEXT => Err(Error::InvalidRequestBody(
            format!("Parameter {key} is longer than {MAX_TEXT} characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::InvalidRequestBody(format!(
            "Parameter {key} must be a string, not {}",
            json_kind(other)
        ))),
    }
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<ActionRequest, Error> {
        ActionRequest::from_body(parse_object(json.as_bytes())?)
    }

    #[test]
    fn accepts_pascal_case_and_explicit_nulls() {
        let r =
            req(r#"{"Comment":"c","ExternalId":null,"Title":"t","RequestSource":null}"#).unwrap();
        assert_eq!(r.comment, "c");
        assert_eq!(r.title.as_deref(), Some("t"));
        assert_eq!(r.external_id, None);
    }

    #[test]
    fn each_problem_has_its_code() {
        assert_eq!(
            req(r#"{"comment":"x"}"#),
            Err(Error::MissingRequiredParameter("Comment".into()))
        );
        assert_eq!(
            req(r#"{"Comment":"  "}"#),
            Err(Error::MissingRequiredParameter("Comment".into()))
        );
        assert_eq!(
            req(r#"{"Comment":null}"#),
            Err(Error::MissingRequiredParameter("Comment".into()))
        );
        assert!(
            matches!(req(r#"{"Comment":5}"#), Err(Error::InvalidRequestBody(m)) if m.contains("must be a string"))
        );
        assert!(matches!(req("not json"), Err(Error::InvalidRequestBody(_))));
        assert!(matches!(req("[1]"), Err(Error::InvalidRequestBody(_))));
        assert!(matches!(req(""), Err(Error::InvalidRequestBody(_))));
        let long = format!(r#"{{"Comment":"{}"}}"#, "a".repeat(MAX_TEXT + 1));
        assert!(matches!(req(&long), Err(Error::InvalidRequestBody(m)) if m.contains("longer")));
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let body = b"\xEF\xBB\xBF{\"Comment\":\"c\"}";
        let r = ActionRequest::from_body(parse_object(body).unwrap()).unwrap();
        assert_eq!(r.comment, "c");
    }

    #[test]
    fn cancel_comment_is_optional() {
        assert_eq!(cancel_comment(None), Ok(None));
        assert_eq!(cancel_comment(parse_object(b"{}").unwrap()), Ok(None));
        assert_eq!(
            cancel_comment(parse_object(br#"{"Comment":"oops"}"#).unwrap()),
            Ok(Some("oops".into()))
        );
    }
}
