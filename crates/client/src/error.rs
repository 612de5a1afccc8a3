//! What can go wrong talking to the API, with the MDE error envelope kept intact.

use std::time::Duration;

use appfence_proto::oauth::OAuthError;
use appfence_proto::ErrorBody;
use reqwest::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. `code`, `message` and `target` come from
    /// the MDE envelope (`{"error":{"code","message","target"}}`), or from the OAuth error
    /// body (`{"error","error_description"}`, no target) of the token endpoint.
    #[error("{code}: {message}{}", target.as_deref().map(|t| format!(" (target {t})")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: String,
        target: Option<String>,
        /// `Retry-After` of a 429, in whole seconds as MDE sends it.
        retry_after: Option<Duration>,
    },
    /// The request did not complete: connection refused, timeout, bad URL.
    #[error("{0}")]
    Transport(String),
    /// The server answered success with a body that is not what the contract says.
    #[error("{0}")]
    Decode(String),
    /// A person's session gave no token: its sign-in ended, or where it is kept cannot
    /// be read or written. The message says what to do.
    #[error("{0}")]
    Session(String),
}

impl ClientError {
    /// The HTTP status of an `Api` error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The MDE (or OAuth) error code of an `Api` error, e.g. `ActiveRequestAlreadyExists`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Builds the error of a non-success response from its status, headers and body.
    pub(crate) fn from_response(
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Self {
        let (code, message, target) = if let Ok(env) = serde_json::from_slice::<ErrorBody>(body) {
            let target = Some(env.error.target).filter(|t| !t.is_empty());
            (env.error.code, env.error.message, target)
        } else if let Ok(oauth) = serde_json::from_slice::<OAuthError>(body) {
            (oauth.error, oauth.error_description, None)
        } else {
            // Not from appfence (a proxy, a wrong URL): keep what little there is.
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                "no error body".to_string()
            } else {
                text.chars().take(300).collect()
            };
            let code = status
                .canonical_reason()
                .map(|r| r.replace(' ', ""))
                .unwrap_or_else(|| format!("HTTP{}", status.as_u16()));
            (code, message, None)
        };
        ClientError::Api {
            status: status.as_u16(),
            code,
            message,
            target,
            retry_after,
        }
    }

    /// Flattens reqwest's error and its causes ("connection refused" is three levels down).
    pub(crate) fn transport(e: reqwest::Error) -> Self {
        if let Some(words) = appfence_tls::client::explain(&e) {
            return ClientError::Transport(format!("{e}: {words}"));
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        ClientError::Transport(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_mde_envelope() {
        let body = br#"{"error":{"code":"ActiveRequestAlreadyExists","message":"Action is already in progress","target":"1fa66c0f-18bd-4133-b378-36d76f3a2ba0"}}"#;
        let e = ClientError::from_response(StatusCode::BAD_REQUEST, None, body);
        assert_eq!(e.code(), Some("ActiveRequestAlreadyExists"));
        assert_eq!(e.status(), Some(400));
        assert_eq!(
            e.to_string(),
            "ActiveRequestAlreadyExists: Action is already in progress (target 1fa66c0f-18bd-4133-b378-36d76f3a2ba0)"
        );
    }

    #[test]
    fn parses_the_oauth_error_body() {
        let body = br#"{"error":"invalid_client","error_description":"bad secret"}"#;
        let e = ClientError::from_response(StatusCode::UNAUTHORIZED, None, body);
        assert_eq!(e.to_string(), "invalid_client: bad secret");
        assert_eq!(e.status(), Some(401));
    }

    #[test]
    fn keeps_a_foreign_body() {
        let e = ClientError::from_response(
            StatusCode::BAD_GATEWAY,
            None,
            b"<html>upstream down</html>\n",
        );
        match e {
            ClientError::Api {
                code,
                message,
                target,
                ..
            } => {
                assert_eq!(code, "BadGateway");
                assert_eq!(message, "<html>upstream down</html>");
                assert_eq!(target, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
