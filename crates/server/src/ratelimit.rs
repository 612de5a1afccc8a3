//! Rate limiting per tenant, caller and API. The counters sit behind a trait so that
//! several replicas can share them (PostgreSQL); the in-memory implementation is exact
//! under concurrency because each decision and its count happen under one lock.

use std::collections::HashMap;
use std::sync::Mutex;

use appfence_core::authz::Api;
use appfence_core::ratelimit::{decide, window_start, Decision, RateLimitPolicy};
use appfence_proto::Timestamp;

/// Whose calls are counted together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub tenant_id: String,
    pub caller: String,
    pub api: Api,
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts the call if it is admitted, and says so.
    async fn acquire(&self, key: &RateKey, now: Timestamp) -> appfence_core::Result<Decision>;
    fn policy(&self) -> RateLimitPolicy;
    /// New limits (SIGHUP): counts so far stay, the new limits apply to the next call.
    fn set_policy(&self, policy: RateLimitPolicy);
}

/// The limits in force, replaceable while calls are counted.
#[derive(Debug)]
struct PolicyCell(std::sync::RwLock<RateLimitPolicy>);

impl PolicyCell {
    fn new(policy: RateLimitPolicy) -> Self {
        PolicyCell(std::sync::RwLock::new(policy))
    }

    fn get(&self) -> RateLimitPolicy {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, policy: RateLimitPolicy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }
}

/// Counters of one key: the start of each window and the calls admitted in it.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    starts: [i64; 2],
    counts: [u32; 2],
}

pub struct MemoryRateLimiter {
    policy: PolicyCell,
    counters: Mutex<HashMap<RateKey, Counters>>,
}

impl MemoryRateLimiter {
    pub fn new(policy: RateLimitPolicy) -> Self {
        MemoryRateLimiter {
            policy: PolicyCell::new(policy),
            counters: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, key: &RateKey, now: Timestamp) -> appfence_core::Result<Decision> {
        let policy = key.api.rate_limits(self.policy.get());
        let windows = policy.windows();
        let mut map = self.counters.lock().expect("rate limiter lock");
        // Forget keys whose hour is over, so the map does not grow without bound.
        if map.len() > 10_000 {
            let hour = window_start(now, windows[1].length);
            map.retain(|_, c| c.starts[1] >= hour);
        }
        let c = map.entry(key.clone()).or_default();
        for (i, w) in windows.iter().enumerate() {
            let start = window_start(now, w.length);
            if c.starts[i] != start {
                c.starts[i] = start;
                c.counts[i] = 0;
            }
        }
        let decision = decide(&policy, c.counts, now);
        if decision.admitted {
            c.counts[0] += 1;
            c.counts[1] += 1;
        }
        Ok(decision)
    }

    fn policy(&self) -> RateLimitPolicy {
        self.policy.get()
    }

    fn set_policy(&self, policy: RateLimitPolicy) {
        self.policy.set(policy);
    }
}

/// Counters in the store, shared by every replica on it (PostgreSQL): exact across
/// replicas because the store decides and counts under the counters' row locks.
pub struct StoreRateLimiter {
    store: std::sync::Arc<dyn appfence_store::Store>,
    policy: PolicyCell,
}

impl StoreRateLimiter {
    pub fn new(store: std::sync::Arc<dyn appfence_store::Store>, policy: RateLimitPolicy) -> Self {
        StoreRateLimiter {
            store,
            policy: PolicyCell::new(policy),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for StoreRateLimiter {
    async fn acquire(&self, key: &RateKey, now: Timestamp) -> appfence_core::Result<Decision> {
        let policy = key.api.rate_limits(self.policy.get());
        let key = format!("{}|{}|{}", key.tenant_id, key.caller, key.api.name());
        self.store.rate_limit(&key, &policy, now).await
    }

    fn policy(&self) -> RateLimitPolicy {
        self.policy.get()
    }

    fn set_policy(&self, policy: RateLimitPolicy) {
        self.policy.set(policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(api: &'static str) -> RateKey {
        let api = if api == "a" {
            Api::ListMachines
        } else {
            Api::GetMachine
        };
        RateKey {
            tenant_id: "t".into(),
            caller: "app".into(),
            api,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exact_under_concurrency_and_per_api() {
        let limiter = Arc::new(MemoryRateLimiter::new(RateLimitPolicy::default()));
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move { l.acquire(&key("a"), now).await.unwrap().admitted })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 100);
        // Another API has its own bucket.
        assert!(limiter.acquire(&key("b"), now).await.unwrap().admitted);
    }

    #[tokio::test]
    async fn a_new_minute_admits_again_until_the_hour_is_full() {
        let limiter = MemoryRateLimiter::new(RateLimitPolicy {
            per_minute: 2,
            per_hour: 3,
        });
        let t0 = Timestamp::from_unix_seconds(3600 * 1000);
        assert!(limiter.acquire(&key("a"), t0).await.unwrap().admitted);
        assert!(limiter.acquire(&key("a"), t0).await.unwrap().admitted);
        let refused = limiter.acquire(&key("a"), t0).await.unwrap();
        assert!(!refused.admitted);
        assert_eq!(refused.reset, std::time::Duration::from_secs(60));
        let t1 = t0.plus(std::time::Duration::from_secs(60));
        assert!(limiter.acquire(&key("a"), t1).await.unwrap().admitted);
        let refused = limiter.acquire(&key("a"), t1).await.unwrap();
        assert!(!refused.admitted);
        assert_eq!(refused.window.name, "hour");
        assert_eq!(refused.reset, std::time::Duration::from_secs(3540));
    }
}
