//! Persistence: where the seed's `save_on_end` goes.
//!
//! - [`Store`]: the trait a database implements: load the latest record of a key,
//!   save a batch of records. A save is conditional on its version being newer than
//!   the stored one, so a retried or late save can never overwrite a newer state.
//! - [`sqlite::SqliteStore`], the embedded default (a file in the data directory,
//!   created on first run), and [`postgres::PostgresStore`]: one generic SQL store
//!   (`sql.rs`) on two pools. Both migrate their schema (versioned migrations
//!   embedded in the binary) when opened.
//! - [`SaveWriter`]: the task that saves go through. It outlives connections and hub
//!   restarts, keeps saves in order per key (only the latest state of a key is kept
//!   queued), retries while the database is unavailable, serves loads from its queue
//!   first (a load always sees the latest save), and is flushed at shutdown.

pub mod postgres;
mod sql;
pub mod sqlite;
mod writer;

use std::future::Future;

use bytes::Bytes;

pub use sql::SqlStore;
pub use writer::{SaveWriter, WriterStats};

use crate::config::{StoreBackend, StoreConfig};

/// One saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What is saved (a player's name).
    pub key: String,
    /// Increases with every save of any key; a save lands only over an older version.
    pub version: u64,
    /// The state, opaque to the store.
    pub data: Bytes,
}

/// A database failure. Saves that fail are retried by the [`SaveWriter`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else (a store implemented by a game, a test double).
    #[error("{0}")]
    Other(String),
}

/// A database for saved states.
pub trait Store: Send + Sync + 'static {
    /// The latest record of `key`, if any.
    fn load(&self, key: &str) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Saves every record in one transaction; a record whose version is not newer
    /// than the stored one is skipped (that makes retries idempotent).
    fn save_batch(&self, records: &[Record])
        -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The store chosen by configuration.
pub enum AnyStore {
    /// The embedded default.
    Sqlite(sqlite::SqliteStore),
    /// A PostgreSQL server.
    Postgres(postgres::PostgresStore),
}

impl AnyStore {
    /// Opens (and migrates) the configured store.
    pub async fn open(config: &StoreConfig) -> Result<AnyStore, StoreError> {
        Ok(match config.backend {
            StoreBackend::Sqlite => AnyStore::Sqlite(sqlite::open(&config.data_dir).await?),
            StoreBackend::Postgres => {
                AnyStore::Postgres(postgres::connect(&config.postgres_url).await?)
            }
        })
    }
}

impl Store for AnyStore {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.load(key).await,
            AnyStore::Postgres(s) => s.load(key).await,
        }
    }

    async fn save_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.save_batch(records).await,
            AnyStore::Postgres(s) => s.save_batch(records).await,
        }
    }
}
