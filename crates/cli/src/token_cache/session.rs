//! A cached sign-in as the API client's token source: its access token while it has
//! more than a minute left, else a refresh under the cache's lock, the rotated refresh
//! token saved before anything else. A refresh the server refuses ends the sign-in.

use appfence_client::flows;
use appfence_client::{ClientError, TokenFuture, UserSession};

use super::{unix_now, CacheFile, CachedLogin, TokenCache};
use crate::error::CliError;

/// The sign-in to one server and tenant in a token cache.
pub struct CachedSession {
    cache: TokenCache,
    server: String,
    tenant: String,
    /// The token in use and its expiry, so that a long `--wait` does not read the file
    /// before every call.
    current: tokio::sync::Mutex<Option<(String, u64)>>,
}

impl CachedSession {
    pub fn new(cache: TokenCache, login: &CachedLogin) -> Self {
        CachedSession {
            cache,
            server: login.server.clone(),
            tenant: login.tenant.clone(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    fn ended(&self, why: &str) -> ClientError {
        ClientError::Session(format!(
            "your sign-in has ended: run `appfence login` again (to {} (tenant {})). {why}",
            self.server, self.tenant
        ))
    }

    fn find(&self, file: &CacheFile) -> Result<Option<usize>, ClientError> {
        file.position(&self.server, Some(&self.tenant))
            .map_err(cache_error)
    }

    async fn token(
        &self,
        http: &reqwest::Client,
        refused: Option<&str>,
    ) -> Result<String, ClientError> {
        let mut current = self.current.lock().await;
        let now = unix_now();
        let usable = |token: &str, expires_at: u64| {
            expires_at > now.saturating_add(super::MIN_TIME_LEFT) && Some(token) != refused
        };
        if let Some((token, expires_at)) = current.as_ref() {
            if usable(token, *expires_at) {
                return Ok(token.clone());
            }
        }
        // Another process may have refreshed already: the file first, without the lock
        // (it is only ever replaced whole).
        let file = self.cache.load().map_err(cache_error)?;
        let Some(i) = self.find(&file)? else {
            return Err(self.ended("It was removed from the token cache (`appfence logout`)."));
        };
        let login = &file.sessions[i];
        if usable(&login.access_token, login.expires_at) {
            *current = Some((login.access_token.clone(), login.expires_at));
            return Ok(login.access_token.clone());
        }

        let held = self.cache.lock().await.map_err(cache_error)?;
        // Read again under the lock: whoever held it may have just refreshed.
        let mut file = self.cache.load().map_err(cache_error)?;
        let Some(i) = self.find(&file)? else {
            return Err(self.ended("It was removed from the token cache (`appfence logout`)."));
        };
        let login = &file.sessions[i];
        if usable(&login.access_token, login.expires_at) {
            *current = Some((login.access_token.clone(), login.expires_at));
            return Ok(login.access_token.clone());
        }
        let refreshed = match &login.refresh_token {
            Some(refresh_token) => {
                flows::refresh(http, &login.token_endpoint, &login.client_id, refresh_token).await
            }
            None => Err(ClientError::Session(
                "The server gave this sign-in no refresh token.".into(),
            )),
        };
        match refreshed {
            Ok(tokens) => {
                let login = &mut file.sessions[i];
                login.renew(tokens, now);
                let (token, expires_at) = (login.access_token.clone(), login.expires_at);
                // At once: the old refresh token is spent, and the new one exists only here.
                self.cache.save(&held, &file).map_err(|e| {
                    ClientError::Session(format!(
                        "the sign-in was refreshed but cannot be saved, so the next command \
                         will need `appfence login` again: {e}"
                    ))
                })?;
                *current = Some((token.clone(), expires_at));
                Ok(token)
            }
            Err(e) if ends_the_sign_in(&e) => {
                file.sessions.remove(i);
                self.cache.save(&held, &file).map_err(cache_error)?;
                *current = None;
                let why = match &e {
                    ClientError::Session(m) => m.clone(),
                    other => format!("The server said: {other}"),
                };
                Err(self.ended(&why))
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether a failed refresh means the refresh token is worth nothing any more (revoked,
/// expired, reused, its user disabled or deleted, its client gone), rather than a
/// server or network that may answer better later.
fn ends_the_sign_in(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Session(_)
            | ClientError::Api {
                status: 400 | 401,
                ..
            }
    )
}

fn cache_error(e: CliError) -> ClientError {
    ClientError::Session(e.to_string())
}

impl UserSession for CachedSession {
    fn access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        refused: Option<&'a str>,
    ) -> TokenFuture<'a> {
        Box::pin(self.token(http, refused))
    }
}
