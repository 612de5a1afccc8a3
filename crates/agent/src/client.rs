//! HTTP client for the agent gateway (`/agent/v1`), one method per endpoint.
//!
//! Errors are sorted by what the caller should do about them: [`ClientError::Transport`]
//! and 5xx answers are worth retrying with backoff, [`ClientError::Unauthorized`] means the
//! credential (or enrolment secret) is refused and retrying is pointless, and the other
//! server errors carry the code and message of the server's error envelope.

use std::fmt;
use std::time::Duration;

use appfence_proto::agent::{
    ActionUpdateResponse, AllowlistResponse, CommandsResponse, DeviceInfo, EnrollRequest,
    EnrollResponse, EventBatch, EventBatchResponse, HeartbeatRequest, HeartbeatResponse,
    ResultRequest,
};
use appfence_proto::ErrorBody;
use reqwest::{RequestBuilder, Url};
use serde::de::DeserializeOwned;

/// Deadline of every call except the long-poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than the requested wait a long-poll may take before we give up on it.
const POLL_GRACE: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest server error text kept when the body is not an error envelope.
const MAX_RAW_ERROR: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL cannot be used (not `http://`, no host, ...). Not retryable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The server could not be reached or the connection broke: retry with backoff.
    #[error("cannot reach the agent gateway: {0}")]
    Transport(String),
    /// HTTP 401: the device credential is revoked or unknown (or, at enrolment, the
    /// enrolment secret is wrong). Retrying will not help.
    #[error("the server refused the credential (HTTP 401): {0}")]
    Unauthorized(String),
    /// Any other non-success answer, with the code and message of the error envelope.
    #[error("the server answered HTTP {status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// A success status whose body is not what the protocol says.
    #[error("unexpected response from the server (HTTP {status}): {reason}")]
    InvalidResponse { status: u16, reason: String },
}

impl ClientError {
    /// Whether the same call may succeed later: network trouble, overload, server faults.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) | ClientError::InvalidResponse { .. } => true,
            ClientError::Server { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            ClientError::InvalidUrl { .. } | ClientError::Unauthorized(_) => false,
        }
    }

    /// Builds the error for a non-success answer from its status and body.
    pub fn from_response(status: u16, body: &[u8]) -> ClientError {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(envelope) => (envelope.error.code, envelope.error.message),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.trim().chars().take(MAX_RAW_ERROR).collect();
                let code = reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Unknown")
                    .to_string();
                (code, text)
            }
        };
        if status == 401 {
            ClientError::Unauthorized(if message.is_empty() { code } else { message })
        } else {
            ClientError::Server {
                status,
                code,
                message,
            }
        }
    }
}

/// The HTTP client the gateway calls share. One per process is enough: it pools
/// connections, which matters when a demo fleet runs thousands of devices.
pub fn http_client(tls: &appfence_tls::client::ClientTls) -> Result<reqwest::Client, ClientError> {
    let config = tls.rustls_config().map_err(ClientError::Transport)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("appfence-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Transport(error_chain(&e)))
}

/// The calls of an enrolled device, authenticated with its credential.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: Url,
    credential: String,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient")
            .field("base", &self.base.as_str())
            .field("credential", &"<redacted>")
            .finish()
    }
}

impl GatewayClient {
    /// A client for the device whose credential is `credential`, talking to `server_url`
    /// (e.g. `http://127.0.0.1:8080`, optionally with a path prefix).
    pub fn new(
        http: reqwest::Client,
        server_url: &str,
        credential: impl Into<String>,
    ) -> Result<Self, ClientError> {
        Ok(GatewayClient {
            http,
            base: parse_server_url(server_url)?,
            credential: credential.into(),
        })
    }

    /// `POST /agent/v1/enroll`: registers the device with the tenant's enrolment secret
    /// and returns its identity and credential (shown only once: persist it). The same
    /// `enrollment_key` enrols the device again as the same machine, with a new credential.
    pub async fn enroll(
        http: &reqwest::Client,
        server_url: &str,
        enroll_secret: &str,
        enrollment_key: &str,
        hostname: &str,
        info: &DeviceInfo,
    ) -> Result<EnrollResponse, ClientError> {
        let url = endpoint(&parse_server_url(server_url)?, &["enroll"]);
        let body = EnrollRequest {
            enroll_secret: enroll_secret.into(),
            hostname: hostname.to_string(),
            info: info.clone(),
            enrollment_key: Some(enrollment_key.into()),
        };
        send(http.post(url).timeout(CALL_TIMEOUT).json(&body)).await
    }

    /// `POST /agent/v1/heartbeat`: says the device is alive and what it enforces.
    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let url = endpoint(&self.base, &["heartbeat"]);
        send(self.authed(self.http.post(url).timeout(CALL_TIMEOUT).json(req))).await
    }

    /// `GET /agent/v1/commands?waitSeconds=N`: the open actions for this device, waiting
    /// up to `wait` (whole seconds) for one to appear.
    pub async fn poll_commands(&self, wait: Duration) -> Result<CommandsResponse, ClientError> {
        let mut url = endpoint(&self.base, &["commands"]);
        url.query_pairs_mut()
            .append_pair("waitSeconds", &wait.as_secs().to_string());
        let timeout = Duration::from_secs(wait.as_secs()) + POLL_GRACE;
        send(self.authed(self.http.get(url).timeout(timeout))).await
    }

    /// `POST /agent/v1/actions/{id}/ack`: claims the action. Apply it only if the answer
    /// says `applied`.
    pub async fn ack(&self, action_id: &str) -> Result<ActionUpdateResponse, ClientError> {
        let url = endpoint(&self.base, &["actions", action_id, "ack"]);
        let empty = serde_json::Map::new();
        send(self.authed(self.http.post(url).timeout(CALL_TIMEOUT).json(&empty))).await
    }

    /// `POST /agent/v1/actions/{id}/result`: reports the outcome. Idempotent.
    pub async fn report(
        &self,
        action_id: &str,
        result: &ResultRequest,
    ) -> Result<ActionUpdateResponse, ClientError> {
        let url = endpoint(&self.base, &["actions", action_id, "result"]);
        send(self.authed(self.http.post(url).timeout(CALL_TIMEOUT).json(result))).await
    }

    /// `GET /agent/v1/allowlist`: the tenant's allowlist and its version.
    pub async fn allowlist(&self) -> Result<AllowlistResponse, ClientError> {
        let url = endpoint(&self.base, &["allowlist"]);
        send(self.authed(self.http.get(url).timeout(CALL_TIMEOUT))).await
    }

    /// `POST /agent/v1/events`: a batch of denials (at most `MAX_EVENTS_PER_BATCH`).
    pub async fn send_events(&self, batch: &EventBatch) -> Result<EventBatchResponse, ClientError> {
        let url = endpoint(&self.base, &["events"]);
        send(self.authed(self.http.post(url).timeout(CALL_TIMEOUT).json(batch))).await
    }

    fn authed(&self, req: RequestBuilder) -> RequestBuilder {
        req.bearer_auth(&self.credential)
    }
}

/// Checks the server URL once, so that building endpoints later cannot fail.
fn parse_server_url(server_url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: server_url.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(server_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be https (or http on loopback)"));
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(invalid("the URL needs a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL must not have a query or a fragment"));
    }
    Ok(url)
}

/// `{base}/agent/v1/{segments...}`, each segment percent-encoded.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["agent", "v1"]).extend(segments);
    }
    url
}

async fn send<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, ClientError> {
    let resp = req.send().await.map_err(|e| transport(&e))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| transport(&e))?;
    if (200..300).contains(&status) {
        serde_json::from_slice(&body).map_err(|e| ClientError::InvalidResponse {
            status,
            reason: e.to_string(),
        })
    } else {
        Err(ClientError::from_response(status, &body))
    }
}

/// A call that got no answer; a TLS refusal is said in words a person can act on.
fn transport(e: &reqwest::Error) -> ClientError {
    match appfence_tls::client::explain(e) {
        Some(words) => ClientError::Transport(format!("{e}: {words}")),
        None => ClientError::Transport(error_chain(e)),
    }
}

/// reqwest's top-level message is vague ("error sending request"); the cause is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_append_to_the_base_path_and_encode_ids() {
        let base = parse_server_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            endpoint(&base, &["heartbeat"]).as_str(),
            "http://127.0.0.1:8080/agent/v1/heartbeat"
        );
        let prefixed = parse_server_url("http://h:1/appfence/").unwrap();
        assert_eq!(
            endpoint(&prefixed, &["actions", "a/b c", "ack"]).as_str(),
            "http://h:1/appfence/agent/v1/actions/a%2Fb%20c/ack"
        );
    }

    #[test]
    fn server_urls_are_checked_up_front() {
        assert!(parse_server_url("https://example.test").is_ok());
        assert!(parse_server_url("not a url").is_err());
        assert!(parse_server_url("http://h/?x=1").is_err());
        assert!(GatewayClient::new(reqwest::Client::new(), "ftp://h", "c").is_err());
    }

    #[test]
    fn error_envelope_gives_code_and_message() {
        let body = br#"{"error":{"code":"BadRequest","message":"Hostname is taken","target":"t"}}"#;
        match ClientError::from_response(400, body) {
            ClientError::Server {
                status,
                code,
                message,
            } => {
                assert_eq!((status, code.as_str()), (400, "BadRequest"));
                assert_eq!(message, "Hostname is taken");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn status_401_is_unauthorized_and_not_retryable() {
        let body =
            br#"{"error":{"code":"Unauthorized","message":"credential revoked","target":"t"}}"#;
        let e = ClientError::from_response(401, body);
        assert!(matches!(&e, ClientError::Unauthorized(m) if m == "credential revoked"));
        assert!(!e.is_retryable());
        assert!(matches!(
            ClientError::from_response(401, b""),
            ClientError::Unauthorized(m) if m == "Unauthorized"
        ));
    }

    #[test]
    fn non_envelope_bodies_are_kept_short() {
        let body = vec![b'x'; 5000];
        match ClientError::from_response(502, &body) {
            ClientError::Server { code, message, .. } => {
                assert_eq!(code, "Bad Gateway");
                assert_eq!(message.len(), MAX_RAW_ERROR);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn retryability_follows_the_status() {
        let server = |status| ClientError::Server {
            status,
            code: String::new(),
            message: String::new(),
        };
        assert!(server(500).is_retryable());
        assert!(server(503).is_retryable());
        assert!(server(429).is_retryable());
        assert!(!server(400).is_retryable());
        assert!(!server(404).is_retryable());
        assert!(ClientError::Transport("refused".into()).is_retryable());
    }

    #[test]
    fn debug_output_hides_the_credential() {
        let c = GatewayClient::new(reqwest::Client::new(), "http://h:1", "s3cret").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
