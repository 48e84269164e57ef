//! gatehouse-store: where a game's state goes when a connection ends (the seed's
//! `save_on_end`), kept apart from the runtime so that a game with its own
//! persistence never compiles a database driver. A [`Store`] loads and saves
//! versioned records; the [`SaveWriter`] is the task every save goes through, which
//! outlives connections and hub restarts, keeps only the newest state per key queued,
//! retries while the database is down, serves loads from its queue first (a load
//! always sees the latest save), and is flushed at shutdown. With the default `sql`
//! feature it brings one SQL store for SQLite (the embedded default, a file created on
//! first run) and PostgreSQL, whose schemas are versioned migrations embedded in the
//! binary and applied when the store is opened.
//!
//! Crate map:
//! - the crate root: [`Store`], [`Record`], [`StoreError`], [`StoreConfig`] (`[store]`).
//! - `writer`: [`SaveWriter`].
//! - `sql` (feature `sql`): [`SqlStore`], one store over a sqlx pool, and [`AnyStore`],
//!   the store `[store]` names; [`sqlite`] and [`postgres`] open their pools.

mod config;
#[cfg(feature = "sql")]
pub mod postgres;
#[cfg(feature = "sql")]
mod sql;
#[cfg(feature = "sql")]
pub mod sqlite;
mod writer;

use std::future::Future;

use bytes::Bytes;

pub use config::{StoreBackend, StoreConfig, StoreConfigError};
#[cfg(feature = "sql")]
pub use sql::{AnyStore, SqlStore};
pub use writer::{SaveWriter, WriterStats};

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

/// A boxed error from a database driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A database failure. Saves that fail are retried by the [`SaveWriter`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[source] BoxError),
    /// The schema could not be brought up to date.
    #[error("migration: {0}")]
    Migrate(#[source] BoxError),
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
