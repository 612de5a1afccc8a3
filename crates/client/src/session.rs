//! Where the client's access tokens come from: an application's client credentials
//! (fetched here and kept in memory), or a person's session kept by the caller (the
//! CLI's token cache), which refreshes and stores its own tokens.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;

use crate::error::ClientError;
use crate::token::{self, CachedToken};

/// The future of [`UserSession::access_token`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, ClientError>> + Send + 'a>>;

/// A person's signed-in session, kept outside the client.
pub trait UserSession: Send + Sync {
    /// An access token to call the API with: the current one while it has time left,
    /// else a refreshed one (the implementation keeps the rotated refresh token).
    /// `refused` is a token the API has just refused (401): give another one. `http` is
    /// the client's own, with its TLS settings, for the token endpoint.
    fn access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        refused: Option<&'a str>,
    ) -> TokenFuture<'a>;
}

/// How an [`crate::MdeClient`] gets its tokens.
pub(crate) enum TokenSource {
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        cached: Mutex<Option<CachedToken>>,
    },
    User(Arc<dyn UserSession>),
}

impl fmt::Debug for TokenSource {
    // Neither the secret nor a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::ClientCredentials {
                token_url,
                client_id,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            TokenSource::User(_) => f.write_str("UserSession"),
        }
    }
}

impl TokenSource {
    pub(crate) fn client_credentials(
        token_url: String,
        client_id: String,
        client_secret: String,
    ) -> Self {
        TokenSource::ClientCredentials {
            token_url,
            client_id,
            client_secret,
            cached: Mutex::new(None),
        }
    }

    /// A token for the next call, and whether it was just obtained (a fresh token that
    /// is refused is not worth another try). `refused`: the API refused this one.
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        refused: Option<&str>,
    ) -> Result<(String, bool), ClientError> {
        match self {
            TokenSource::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                cached,
            } => {
                // Holding the lock across the fetch makes concurrent callers share one
                // request.
                let mut slot = cached.lock().await;
                if refused.is_some() {
                    *slot = None;
                }
                if let Some(t) = slot.as_ref().filter(|t| t.is_fresh(Instant::now())) {
                    return Ok((t.value.clone(), false));
                }
                let resp = token::fetch(http, token_url, client_id, client_secret).await?;
                let fresh = CachedToken::new(resp.access_token, resp.expires_in, Instant::now());
                let value = fresh.value.clone();
                *slot = Some(fresh);
                Ok((value, true))
            }
            TokenSource::User(session) => {
                let value = session.access_token(http, refused).await?;
                Ok((value, refused.is_some()))
            }
        }
    }
}
