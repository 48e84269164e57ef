//! The PostgreSQL store, for servers whose saves must outlive the machine.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Postgres;

use crate::{SqlStore, StoreError};

/// A PostgreSQL-backed store.
pub type PostgresStore = SqlStore<Postgres>;

/// Connects to `url` and migrates the schema. Every statement runs under
/// `statement_timeout` on the server too, so that a lock or a stuck query cannot hold
/// a connection after the writer has given up on it.
pub async fn connect(url: &str, statement_timeout: Duration) -> Result<PostgresStore, StoreError> {
    let options = PgConnectOptions::from_str(url)?.options([(
        "statement_timeout",
        format!("{}ms", statement_timeout.as_millis().max(1)),
    )]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        // Fail fast while the database is down: the writer retries with backoff.
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore { pool })
}
