//! `[store]`: which database, where, how long any call to it may take, and how long
//! shutdown waits for saves.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::WriterConfig;

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
    /// The longest one database call may take (also PostgreSQL's
    /// `statement_timeout`): a database that stops answering fails, never hangs.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How often a record the database refuses on its own is retried before it is
    /// written to the dead letters.
    pub max_attempts: u32,
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
            call_timeout: WriterConfig::default().call_timeout,
            max_attempts: WriterConfig::default().max_attempts,
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
        for (key, value) in [
            ("store.flush_timeout", self.flush_timeout),
            ("store.call_timeout", self.call_timeout),
        ] {
            if value.is_zero() {
                return Err(StoreConfigError {
                    key,
                    message: "must be longer than zero".into(),
                });
            }
        }
        if self.max_attempts == 0 {
            return Err(StoreConfigError {
                key: "store.max_attempts",
                message: "must be at least 1".into(),
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

    /// What the save writer takes from `[store]`.
    pub fn writer(&self) -> WriterConfig {
        WriterConfig {
            call_timeout: self.call_timeout,
            max_attempts: self.max_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_without_a_url_zero_timeouts_and_zero_attempts_are_refused_by_key() {
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
        let zero = StoreConfig {
            call_timeout: Duration::ZERO,
            ..StoreConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().key, "store.call_timeout");
        let none = StoreConfig {
            max_attempts: 0,
            ..StoreConfig::default()
        };
        assert_eq!(none.validate().unwrap_err().key, "store.max_attempts");
        assert_eq!(StoreConfig::default().validate(), Ok(()));
    }
}
