//! What the server's unit tests share: the real SQLite store in a temporary directory
//! (never a stand-in), and an `AppState` on it with a manual clock.

use std::sync::Arc;

use appfence_core::records::Tenant;
use appfence_core::ManualClock;
use appfence_proto::Timestamp;
use appfence_store::{SqliteStore, Store};
use tempfile::TempDir;

use crate::{AppState, ServerConfig};

/// The tenant of [`test_state`], named "default".
pub const TENANT: &str = "0b5f7a31-8d2c-4c3e-9a55-1e2d3c4b5a69";

/// A fresh store; the directory goes when the returned guard does.
pub async fn sqlite_store() -> (TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("appfence.db"))
        .await
        .expect("open the store");
    (dir, Arc::new(store))
}

/// A server state holding the tenant [`TENANT`], with a manual clock.
pub struct TestState {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub _dir: TempDir,
}

pub async fn test_state() -> TestState {
    let (dir, store) = sqlite_store().await;
    store
        .ensure_tenant(&Tenant {
            id: TENANT.into(),
            name: "default".into(),
        })
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
        1_700_000_000,
    )));
    let config = ServerConfig {
        public_url: Some("https://appfence.test/".into()),
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let state = AppState::new(config, store, clock.clone()).await.unwrap();
    TestState {
        state,
        clock,
        _dir: dir,
    }
}
