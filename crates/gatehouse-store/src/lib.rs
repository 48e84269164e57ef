//! gatehouse-store: where a game's state goes (the seed's `save_on_end`, plus
//! checkpoints while a session lives), kept apart from the runtime so that a game with
//! its own persistence never compiles a database driver.
//!
//! A [`Store`] loads and saves versioned records. Versions come from the store: a
//! session saves the version it loaded plus one, and a save lands only over the version
//! it was built on (compare-and-set), so no clock step, restart or second server on the
//! same database can make a save silently go backwards. A save that does not apply is a
//! conflict: the stored state wins, and the losing one is kept as a [`DeadLetter`].
//!
//! The [`SaveWriter`] is the task every save goes through: it outlives connections and
//! hub restarts, keeps only the newest state per key queued, writes the oldest first,
//! puts every database call under a timeout, retries while the database fails, isolates
//! a record the database keeps refusing and after a bounded number of attempts
//! dead-letters it, serves loads from its queue first (a load always sees the latest
//! save), and at shutdown says how many saves did not land. With the default `sql`
//! feature the crate brings one SQL store for SQLite (the embedded default, a file
//! created on first run) and PostgreSQL, whose schemas are versioned migrations embedded
//! in the binary and applied when the store is opened.
//!
//! Crate map:
//! - the crate root: [`Store`] and what it speaks ([`Record`], [`Write`], [`Outcome`],
//!   [`DeadLetter`], [`StoreError`]); `config`: [`StoreConfig`] (`[store]`).
//! - `writer`: [`SaveWriter`] and the [`SaveSlot`] a session saves through, which is
//!   also its fence: [`SaveWriter::land`] waits for a save to land ([`LandError`]), and
//!   [`SaveSlot::on_lost`] hears when another session's save won.
//! - `memory`: [`MemoryStore`], a store in memory for tests and examples.
//! - `metrics` (feature `metrics`): `SaveWriter::collector`, the writer's numbers for
//!   Prometheus.
//! - `sql` (feature `sql`): [`SqlStore`], one store over a sqlx pool, and [`AnyStore`],
//!   the store `[store]` names; [`sqlite`] and [`postgres`] open their pools.

mod config;
mod memory;
#[cfg(feature = "metrics")]
mod metrics;
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
pub use memory::MemoryStore;
#[cfg(feature = "sql")]
pub use sql::{AnyStore, SqlStore};
pub use writer::{
    LandError, Loaded, SaveSlot, SaveWriter, Unsaved, WriterClosed, WriterConfig, WriterStats,
};

/// One saved state, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What is saved (a player's name).
    pub key: String,
    /// How many times this key has been saved: each save is the version it was built
    /// on plus one ([`next_version`]), so versions come from the store, never a clock.
    pub version: u64,
    /// The state, opaque to the store.
    pub data: Bytes,
}

/// One write of a batch: `record` lands only over the stored version `expected`
/// (0: the key has no row yet). That compare-and-set is what keeps a save from
/// silently going backwards, across restarts and across servers sharing a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// What to store.
    pub record: Record,
    /// The version the state was built on.
    pub expected: u64,
}

/// What became of one [`Write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It is stored (or it already was: the very same version and data, as when a
    /// batch whose commit was lost is retried).
    Applied,
    /// The stored version was not the expected one: someone else saved the key in
    /// between. The stored state stays.
    Conflict {
        /// The version found (0: no row).
        stored: u64,
    },
}

/// A save that did not land and never will, kept for an operator instead of being
/// dropped: a conflict's losing state, or a record the database keeps refusing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record that did not land.
    pub record: Record,
    /// Why: `conflict` or `failed`.
    pub reason: DeadReason,
    /// The details: both versions of a conflict, or the last error.
    pub detail: String,
}

/// Why a save became a [`DeadLetter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Another session saved the key first; its state wins.
    Conflict,
    /// The database refused this record, alone, `max_attempts` times.
    Failed,
}

impl DeadReason {
    /// The name stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Conflict => "conflict",
            DeadReason::Failed => "failed",
        }
    }
}

/// The version a save built on `version` gets. Versions are stored as signed 64-bit
/// integers; after the largest the count starts again at 1 (the compare-and-set
/// needs versions to differ from the previous one, not to grow).
pub fn next_version(version: u64) -> u64 {
    if version >= i64::MAX as u64 {
        1
    } else {
        version + 1
    }
}

/// A boxed error from a database driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A database failure. Saves that fail are retried by the [`SaveWriter`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused the request (a constraint, a type, a statement timeout).
    #[error("database: {0}")]
    Database(#[source] BoxError),
    /// The database could not be reached (connection refused, reset, pool empty).
    #[error("database unreachable: {0}")]
    Unreachable(#[source] BoxError),
    /// The database did not answer in time.
    #[error("the database did not answer within {0:?}")]
    Timeout(std::time::Duration),
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

impl StoreError {
    /// Whether the database could not be reached or did not answer, as opposed to
    /// refusing: such a failure says nothing about the record, so the writer never
    /// counts it toward dead-lettering one.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_) | StoreError::Timeout(_))
    }
}

/// A database for saved states.
pub trait Store: Send + Sync + 'static {
    /// The latest record of `key`, if any.
    fn load(&self, key: &str) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Applies every write in one transaction, each only over its expected version,
    /// and says what became of each, in order. An error means none of them landed.
    fn save_batch(
        &self,
        writes: &[Write],
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;

    /// Keeps a save that will never land where an operator can find it.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
