//! The PostgreSQL store, for servers whose saves must outlive the machine.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Postgres;

use crate::{SqlStore, StoreError};

/// A PostgreSQL-backed store.
pub type PostgresStore = SqlStore<Postgres>;

/// Connects to `url` and migrates the schema.
pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        // Fail fast while the database is down: the writer retries with backoff.
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore { pool })
}
