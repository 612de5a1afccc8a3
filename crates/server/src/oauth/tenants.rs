//! Tenant lookups of the authorization server: by the path segment of the token and
//! discovery endpoints, and the existence check of every verified token.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

use appfence_core::ids::parse_guid;
use appfence_core::{Error, Tenant};
use appfence_store::Store;

/// Tenant ids known to exist. Only positive answers are remembered: tenants are never
/// deleted (the store has no operation for it), so an entry can never become stale,
/// and the set is bounded by the number of real tenants.
#[derive(Default)]
pub struct TenantCache {
    known: RwLock<HashSet<String>>,
}

impl TenantCache {
    /// Whether the tenant exists; asks the store only for ids not yet seen.
    pub async fn exists(&self, store: &dyn Store, tenant_id: &str) -> Result<bool, Error> {
        if self.contains(tenant_id) {
            return Ok(true);
        }
        match store.tenant(tenant_id).await? {
            Some(t) => {
                self.remember(&t.id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn contains(&self, tenant_id: &str) -> bool {
        // A poisoned lock only means a panic elsewhere while inserting into a set of
        // strings; the set itself is still sound.
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(tenant_id)
    }

    pub fn remember(&self, tenant_id: &str) {
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant_id.to_string());
    }
}

/// The tenant a path segment names: its GUID (any case) or, for convenience, its name
/// (ASCII case-insensitive).
pub async fn resolve_tenant(store: &dyn Store, segment: &str) -> Result<Option<Tenant>, Error> {
    if let Some(id) = parse_guid(segment) {
        if let Some(t) = store.tenant(&id).await? {
            return Ok(Some(t));
        }
    }
    Ok(store
        .tenants()
        .await?
        .into_iter()
        .find(|t| t.name.eq_ignore_ascii_case(segment)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sqlite_store;

    #[tokio::test]
    async fn tenants_resolve_by_guid_or_name() {
        let (_dir, store) = sqlite_store().await;
        let store = store.as_ref();
        let t = Tenant {
            id: "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69".into(),
            name: "Contoso".into(),
        };
        store.ensure_tenant(&t).await.unwrap();
        let by_id = resolve_tenant(store, "0B5F7A31-8D2C-4C3E-9A55-1E2D3C4B5A69").await;
        assert_eq!(by_id.unwrap(), Some(t.clone()));
        assert_eq!(resolve_tenant(store, "contoso").await.unwrap(), Some(t));
        assert_eq!(resolve_tenant(store, "fabrikam").await.unwrap(), None);
        assert_eq!(
            resolve_tenant(store, "11111111-2222-3333-4444-555555555555")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn the_cache_answers_known_tenants_without_the_store() {
        let (_dir, sqlite) = sqlite_store().await;
        let store = sqlite.as_ref();
        let t = Tenant {
            id: "t-1".into(),
            name: "one".into(),
        };
        store.ensure_tenant(&t).await.unwrap();
        let cache = TenantCache::default();
        assert!(!cache.exists(store, "t-2").await.unwrap());
        assert!(cache.exists(store, "t-1").await.unwrap());
        // Unknown ids are not remembered: a tenant created later is found.
        store
            .ensure_tenant(&Tenant {
                id: "t-2".into(),
                name: "two".into(),
            })
            .await
            .unwrap();
        assert!(cache.exists(store, "t-2").await.unwrap());
        // With the store closed, only the cache can answer.
        sqlite.close().await;
        assert!(
            cache.exists(store, "t-1").await.unwrap(),
            "answered from the cache"
        );
        assert!(cache.exists(store, "t-3").await.is_err());
    }
}
