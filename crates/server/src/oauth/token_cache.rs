//! Tokens already verified, so that a client re-using its token (as every MDE client
//! does for an hour) costs one hash-map lookup instead of an Ed25519 verification per
//! request. Keyed by the whole token text: a different signature is a different key.
//! Validity in time is still checked on every use, against the injected clock.

use std::collections::HashMap;
use std::sync::Mutex;

use super::verify::VerifiedToken;

/// Bound on remembered tokens; when full, the cache starts over (a miss only costs a
/// verification).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct TokenCache {
    verified: Mutex<HashMap<String, VerifiedToken>>,
}

impl TokenCache {
    pub fn get(&self, token: &str) -> Option<VerifiedToken> {
        self.verified
            .lock()
            .expect("token cache lock")
            .get(token)
            .cloned()
    }

    pub fn insert(&self, token: &str, verified: VerifiedToken) {
        let mut map = self.verified.lock().expect("token cache lock");
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(token.to_string(), verified);
    }

    /// Forgets every token (the access policy changed).
    pub fn clear(&self) {
        self.verified.lock().expect("token cache lock").clear();
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_core::authz::Principal;

    fn verified(expires: i64) -> VerifiedToken {
        VerifiedToken {
            principal: Principal::application("t", "c", "App", vec![]),
            expires,
            not_before: None,
            own_client: None,
        }
    }

    #[test]
    fn remembers_by_exact_token_and_stays_bounded() {
        let cache = TokenCache::default();
        cache.insert("a.b.c", verified(10));
        assert_eq!(cache.get("a.b.c"), Some(verified(10)));
        assert_eq!(cache.get("a.b.d"), None);
        for i in 0..CAPACITY + 1 {
            cache.insert(&format!("t{i}"), verified(1));
        }
        assert!(cache.verified.lock().unwrap().len() <= CAPACITY);
        assert_eq!(cache.get("a.b.c"), None);
        let expired = verified(5);
        assert!(expired
            .check_time(appfence_proto::Timestamp::from_ticks(5))
            .is_err());
        assert!(expired
            .check_time(appfence_proto::Timestamp::from_ticks(4))
            .is_ok());
    }
}
