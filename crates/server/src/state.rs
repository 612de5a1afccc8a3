//! Shared state of the request handlers.

use std::sync::Arc;

use appfence_core::Clock;
use appfence_store::Store;

use crate::dispatch::Dispatcher;
use crate::oauth::keys::KeySet;
use crate::ratelimit::{MemoryRateLimiter, RateLimiter};
use crate::ServerConfig;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    pub keys: Arc<KeySet>,
    pub dispatch: Arc<Dispatcher>,
    pub limiter: Arc<dyn RateLimiter>,
}

impl AppState {
    pub async fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let keys = KeySet::load_or_create(store.as_ref(), clock.as_ref())
            .await
            .map_err(|e| format!("cannot prepare signing keys: {e}"))?;
        let limiter = Arc::new(MemoryRateLimiter::new(config.rate_limits));
        Ok(AppState {
            limiter,
            store,
            clock,
            config: Arc::new(config),
            keys: Arc::new(keys),
            dispatch: Arc::new(Dispatcher::default()),
        })
    }

    pub fn public_url(&self) -> String {
        self.config.public_url()
    }
}
