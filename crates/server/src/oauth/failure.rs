//! Errors of the token and discovery endpoints. These speak OAuth 2.0 (RFC 6749 §5.2,
//! `{"error":"invalid_client","error_description":...}`), not the MDE envelope: token
//! clients parse this shape.

use appfence_proto::oauth::OAuthError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthFailure {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// The client tried HTTP Basic authentication and failed: RFC 6749 §5.2 then
    /// requires a `WWW-Authenticate` challenge.
    pub basic_challenge: bool,
    /// Entra ID's `AADSTS` numbers for this error, if any.
    pub error_codes: Vec<u32>,
    /// Seconds for `Retry-After` (throttled or busy).
    pub retry_after: Option<u64>,
}

impl OAuthFailure {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthFailure {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
            error_codes: Vec::new(),
            retry_after: None,
        }
    }

    /// The account is locked after too many wrong passwords (Entra's AADSTS50053); even
    /// the right password is refused until `retry_after` seconds have passed.
    pub fn account_locked(retry_after: u64) -> Self {
        OAuthFailure {
            error_codes: vec![50053],
            retry_after: Some(retry_after),
            ..Self::invalid_grant(format!(
                "AADSTS50053: The account is locked because the user tried to sign in too many \
                 times with an incorrect user ID or password. Try again in {retry_after} seconds."
            ))
        }
    }

    /// Too many failed sign-ins from the caller's address: 429 until its window ends.
    pub fn address_throttled(retry_after: u64) -> Self {
        OAuthFailure {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                format!(
                    "Too many failed sign-ins from this address. Try again in {retry_after} seconds."
                ),
            )
        }
    }

    /// Every password check is busy: 429, try again in a second.
    pub fn busy() -> Self {
        OAuthFailure {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "The server is busy checking other sign-ins. Try again in 1 second.",
            )
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn missing(parameter: &str) -> Self {
        Self::invalid_request(format!("Parameter '{parameter}' is missing"))
    }

    pub fn invalid_client(description: impl Into<String>, basic_challenge: bool) -> Self {
        OAuthFailure {
            basic_challenge,
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    /// No application with this client id in the tenant (never registered, or
    /// deleted): Entra's AADSTS700016, `unauthorized_client`. Client ids are not secret
    /// (every token names its client), so saying so tells an attacker nothing.
    pub fn unknown_client(client_id: &str, tenant_id: &str) -> Self {
        OAuthFailure {
            error_codes: vec![700016],
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                format!(
                    "AADSTS700016: Application with identifier '{}' was not found in the \
                     directory '{tenant_id}'. This can happen if the application was never \
                     registered in this tenant or was deleted (appfence app list shows the \
                     tenant's applications), or if the request was sent to the wrong tenant.",
                    appfence_core::ids::truncate(client_id, 100)
                ),
            )
        }
    }

    /// The client secret matches none of the application's secrets: Entra's
    /// AADSTS7000215.
    pub fn wrong_client_secret(client_id: &str, basic_challenge: bool) -> Self {
        OAuthFailure {
            error_codes: vec![7000215],
            ..Self::invalid_client(
                format!(
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being \
                     sent in the request is the client secret value, not the client secret \
                     ID, for a secret added to app '{client_id}'."
                ),
                basic_challenge,
            )
        }
    }

    /// The client secret is one of the application's, but expired: Entra's
    /// AADSTS7000222.
    pub fn expired_client_secret(client_id: &str, basic_challenge: bool) -> Self {
        OAuthFailure {
            error_codes: vec![7000222],
            ..Self::invalid_client(
                format!(
                    "AADSTS7000222: The provided client secret keys for app '{client_id}' are \
                     expired. Create a new secret for the app (appfence app secret add \
                     {client_id}), use it, then remove the expired one (appfence app secret \
                     remove)."
                ),
                basic_challenge,
            )
        }
    }

    /// The application is disabled: Entra's AADSTS7000112, `unauthorized_client`.
    pub fn app_disabled(client_id: &str, display_name: &str) -> Self {
        OAuthFailure {
            error_codes: vec![7000112],
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                format!(
                    "AADSTS7000112: Application '{client_id}'({}) is disabled. An \
                     administrator can enable it again (appfence app enable {client_id}).",
                    appfence_core::ids::truncate(display_name, 100)
                ),
            )
        }
    }

    /// The user's password is right but the account is disabled: Entra's AADSTS50057.
    pub fn user_disabled() -> Self {
        OAuthFailure {
            error_codes: vec![50057],
            ..Self::invalid_grant(
                "AADSTS50057: The user account is disabled. Ask an administrator to enable \
                 it (appfence user enable).",
            )
        }
    }

    /// `grant_type=password` to a tenant that has it off: Entra's AADSTS70003
    /// (unsupported grant type), with both ways forward.
    pub fn password_grant_off(tenant_id: &str) -> Self {
        OAuthFailure {
            error_codes: vec![70003],
            ..Self::unsupported_grant_type(format!(
                "AADSTS70003: The password grant (grant_type=password) is turned off for \
                 tenant '{tenant_id}'. People sign in with the authorization code or device \
                 code flow (appfence login); an administrator can turn the password grant on \
                 for existing scripts (appfence tenant set --password-grant on)."
            ))
        }
    }

    /// The resource owner's credentials are wrong (RFC 6749 §5.2).
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    pub fn invalid_resource(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_resource", description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request", description)
    }

    /// An internal failure: logged in full with a trace id; the caller gets only the id.
    pub fn server_error(cause: impl std::fmt::Display) -> Self {
        let trace_id = appfence_core::ids::new_guid();
        tracing::error!(%trace_id, error = %cause, "token endpoint failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("An internal error occurred. Trace ID: {trace_id}"),
        )
    }
}

impl From<appfence_core::Error> for OAuthFailure {
    fn from(e: appfence_core::Error) -> Self {
        match e {
            // The store cannot answer now: try again, as any other 503.
            appfence_core::Error::Storage { fault, detail } if fault.is_transient() => {
                crate::storage_health::global().failed(fault, &detail);
                OAuthFailure {
                    retry_after: fault.retry_after().map(|d| d.as_secs()),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        fault.public_message(),
                    )
                }
            }
            other => {
                crate::storage_health::report(&other);
                OAuthFailure::server_error(other)
            }
        }
    }
}

impl IntoResponse for OAuthFailure {
    fn into_response(self) -> Response {
        if !self.status.is_server_error() {
            tracing::info!(error = self.error, status = self.status.as_u16(), description = %self.description, "token request refused");
        }
        let body = OAuthError {
            error: self.error.to_string(),
            error_description: self.description,
            error_codes: self.error_codes,
        };
        let mut resp = (self.status, json_bytes(&body)).into_response();
        let h = resp.headers_mut();
        no_store(h);
        if let Some(seconds) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if self.basic_challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"appfence\""),
            );
        }
        resp
    }
}

/// JSON body bytes of a value that always serialises (plain structs of strings and numbers).
pub(crate) fn json_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("OAuth bodies serialise")
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub(crate) fn no_store(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
