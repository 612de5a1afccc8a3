//! The signing keys of one external issuer: fetched on first use, refetched when a
//! token names a key not seen yet (at most once a minute, so tokens with made-up key
//! ids cannot make us hammer the identity provider), and refreshed once they are a day
//! old so that withdrawn keys stop verifying. One fetch at a time: concurrent requests
//! wait for it and use its result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use appfence_core::ids::truncate;
use appfence_core::{Clock, Error};
use appfence_proto::Timestamp;
use jsonwebtoken::DecodingKey;

use super::fetch::{discover_jwks_uri, fetch_json};
use super::keys::{Accepted, IssuerKeys, Miss};
use crate::oauth::claims::{refuse, QUOTE_MAX};

/// The least time between two fetches of an issuer's keys after the first.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Keys older than this are fetched again when next used.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// What one fetch produced.
struct FetchedKeys {
    keys: IssuerKeys,
    fetched: Timestamp,
}

/// Guarded by the fetch lock.
#[derive(Default)]
struct FetchLog {
    /// Whether the first fetch was tried; it is not rate limited.
    tried_first: bool,
    /// When the last fetch other than the first one started.
    last_refetch: Option<Timestamp>,
    /// Why the latest fetch failed, if it did.
    last_error: Option<String>,
}

pub struct KeyCache {
    /// The configured `jwks_uri`; otherwise discovered on every fetch.
    jwks_uri: Option<String>,
    current: RwLock<Option<Arc<FetchedKeys>>>,
    fetching: tokio::sync::Mutex<FetchLog>,
    /// Fetches finished, so that a request that waited for the lock knows a fetch
    /// happened meanwhile and uses its result instead of fetching again.
    completed: AtomicU64,
}

/// What a fetch needs besides the cache.
pub struct Fetcher<'a> {
    pub http: &'a reqwest::Client,
    pub clock: &'a dyn Clock,
    pub issuer: &'a str,
}

impl KeyCache {
    pub fn new(jwks_uri: Option<String>) -> KeyCache {
        KeyCache {
            jwks_uri,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(FetchLog::default()),
            completed: AtomicU64::new(0),
        }
    }

    /// Whether this cache serves an issuer configured with `jwks_uri`.
    pub fn serves(&self, jwks_uri: &Option<String>) -> bool {
        &self.jwks_uri == jwks_uri
    }

    fn current(&self) -> Option<Arc<FetchedKeys>> {
        self.current.read().expect("issuer key cache lock").clone()
    }

    /// Runs `verify` with the key that checks a token signed with `alg` by `kid`,
    /// fetching the issuer's keys first when they are missing, unknown or old.
    pub async fn with_key<T>(
        &self,
        fetcher: &Fetcher<'_>,
        kid: Option<&str>,
        alg: Accepted,
        verify: impl FnOnce(&DecodingKey) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let seen_fetches = self.completed.load(Ordering::SeqCst);
        let current = self.current();
        let now = fetcher.clock.now();
        let wait_for_fetch = match current.as_deref().map(|c| (c, c.keys.select(kid, alg))) {
            Some((c, Ok(key))) if now < c.fetched.plus(MAX_KEY_AGE) => return verify(key),
            Some((_, Err(Miss::Unsuitable(reason)))) => return Err(refuse(reason)),
            // Old but usable: refresh unless someone already is, and never wait for it.
            Some((_, Ok(_))) => false,
            Some((_, Err(Miss::Unknown))) | None => true,
        };
        let log = if wait_for_fetch {
            Some(self.fetching.lock().await)
        } else {
            self.fetching.try_lock().ok()
        };
        let last_error = match log {
            Some(mut log) => {
                if self.completed.load(Ordering::SeqCst) == seen_fetches {
                    self.fetch_if_allowed(&mut log, fetcher).await;
                }
                log.last_error.clone()
            }
            None => None,
        };

        let fetch_failed = |detail: Option<String>| {
            refuse(format!(
                "The signing keys of issuer '{}' could not be fetched: {}",
                truncate(fetcher.issuer, QUOTE_MAX),
                detail.unwrap_or_else(|| "none are available yet".into())
            ))
        };
        let Some(current) = self.current() else {
            return Err(fetch_failed(last_error));
        };
        match current.keys.select(kid, alg) {
            Ok(key) => verify(key),
            Err(Miss::Unsuitable(reason)) => Err(refuse(reason)),
            Err(Miss::Unknown) if last_error.is_some() => Err(fetch_failed(last_error)),
            Err(Miss::Unknown) => Err(refuse(match kid {
                Some(kid) => format!(
                    "The token's signing key '{}' is not published by issuer '{}'",
                    truncate(kid, QUOTE_MAX),
                    truncate(fetcher.issuer, QUOTE_MAX)
                ),
                None => format!(
                    "The token's header has no key id (kid) and issuer '{}' publishes no {} key",
                    truncate(fetcher.issuer, QUOTE_MAX),
                    alg.name()
                ),
            })),
        }
    }

    /// Fetches the keys unless a fetch other than the first happened less than
    /// [`REFETCH_INTERVAL`] ago. A failed fetch keeps the keys fetched before.
    async fn fetch_if_allowed(&self, log: &mut FetchLog, fetcher: &Fetcher<'_>) {
        let now = fetcher.clock.now();
        if log.tried_first {
            if log
                .last_refetch
                .is_some_and(|last| now < last.plus(REFETCH_INTERVAL))
            {
                return;
            }
            log.last_refetch = Some(now);
        }
        log.tried_first = true;
        match self.fetch(fetcher).await {
            Ok(keys) => {
                tracing::info!(
                    issuer = fetcher.issuer,
                    usable_keys = keys.usable_count(),
                    "fetched the signing keys of an external issuer"
                );
                *self.current.write().expect("issuer key cache lock") =
                    Some(Arc::new(FetchedKeys { keys, fetched: now }));
                log.last_error = None;
            }
            Err(error) => {
                tracing::warn!(
                    issuer = fetcher.issuer,
                    %error,
                    "could not fetch the signing keys of an external issuer"
                );
                log.last_error = Some(error);
            }
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
    }

    async fn fetch(&self, fetcher: &Fetcher<'_>) -> Result<IssuerKeys, String> {
        let jwks_uri = match &self.jwks_uri {
            Some(configured) => configured.clone(),
            None => discover_jwks_uri(fetcher.http, fetcher.issuer).await?,
        };
        let document: serde_json::Value = fetch_json(fetcher.http, &jwks_uri).await?;
        IssuerKeys::from_jwks(&document).map_err(|e| format!("{jwks_uri}: {e}"))
    }
}
