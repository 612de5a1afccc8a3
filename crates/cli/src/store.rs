//! The store a command works on: PostgreSQL when a database URL is configured
//! (`--database-url`, `APPFENCE_DATABASE_URL`, `database_url`), else SQLite in the data
//! directory. Opened the same way by `serve` and by the offline commands.

use std::ops::Deref;
use std::sync::Arc;

use appfence_proto::Secret;
use appfence_server::ServerConfig;
use appfence_store::{PgStore, SqliteStore, Store};

use crate::config::DB_FILE;
use crate::error::CliError;

/// An open store of either engine.
#[derive(Clone)]
pub enum OpenStore {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl OpenStore {
    /// Prepares the data directory (private; it holds the key file even when the
    /// database is PostgreSQL) and opens the store.
    pub async fn open(
        config: &ServerConfig,
        database_url: Option<&Secret>,
    ) -> Result<Self, CliError> {
        appfence_server::at_rest::private_paths::prepare_data_dir(
            &config.data_dir,
            config.allow_group_read,
        )
        .map_err(CliError::Failed)?;
        match database_url {
            Some(url) => PgStore::open(url.expose())
                .await
                .map(|s| OpenStore::Postgres(Arc::new(s)))
                .map_err(|e| CliError::Failed(e.to_string())),
            None => SqliteStore::open(&config.data_dir.join(DB_FILE))
                .await
                .map(|s| OpenStore::Sqlite(Arc::new(s)))
                .map_err(|e| CliError::Failed(e.to_string())),
        }
    }

    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            OpenStore::Sqlite(s) => s.clone(),
            OpenStore::Postgres(s) => s.clone(),
        }
    }

    pub async fn close(&self) {
        match self {
            OpenStore::Sqlite(s) => s.close().await,
            OpenStore::Postgres(s) => s.close().await,
        }
    }
}

impl Deref for OpenStore {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        match self {
            OpenStore::Sqlite(s) => s.as_ref(),
            OpenStore::Postgres(s) => s.as_ref(),
        }
    }
}
