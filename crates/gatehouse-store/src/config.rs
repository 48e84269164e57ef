//! `[store]`: which database, where, and how long shutdown waits for saves.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[store]`: the database of saved states.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (embedded, a file in `data_dir`) or `postgres` (`postgres_url`).
    pub backend: StoreBackend,
    /// Directory of the SQLite file, created on first run.
    pub data_dir: PathBuf,
    /// PostgreSQL connection URL, for `backend = "postgres"`.
    pub postgres_url: String,
    /// On shutdown, how long to wait for queued saves to land.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
}

/// Which database `[store]` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A SQLite file in `data_dir`: no server needed.
    Sqlite,
    /// A PostgreSQL server at `postgres_url`.
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            data_dir: PathBuf::from("data"),
            postgres_url: String::new(),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// A `[store]` value that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct StoreConfigError {
    /// The offending key, e.g. `store.postgres_url`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl StoreConfig {
    /// Checks the values that serde's types alone do not.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        if self.flush_timeout.is_zero() {
            return Err(StoreConfigError {
                key: "store.flush_timeout",
                message: "must be longer than zero".into(),
            });
        }
        if self.backend == StoreBackend::Postgres && self.postgres_url.is_empty() {
            return Err(StoreConfigError {
                key: "store.postgres_url",
                message: "must be set when store.backend = \"postgres\"".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_without_a_url_and_a_zero_flush_timeout_are_refused_by_key() {
        let postgres = StoreConfig {
            backend: StoreBackend::Postgres,
            ..StoreConfig::default()
        };
        assert_eq!(postgres.validate().unwrap_err().key, "store.postgres_url");
        let zero = StoreConfig {
            flush_timeout: Duration::ZERO,
            ..StoreConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().key, "store.flush_timeout");
        assert_eq!(StoreConfig::default().validate(), Ok(()));
    }
}
