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

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL itself cancels a statement running past the call timeout, so a
    /// stuck query cannot hold a connection after the writer gave up on it; the
    /// cancellation is a refusal, not an unreachable database.
    #[tokio::test]
    async fn every_connection_runs_under_the_statement_timeout() {
        let Ok(url) = std::env::var("GATEHOUSE_TEST_POSTGRES_URL") else {
            println!("GATEHOUSE_TEST_POSTGRES_URL is unset: skipping the PostgreSQL test");
            return;
        };
        let store = connect(&url, Duration::from_millis(1500)).await.unwrap();
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(shown, "1500ms");
        let slow = sqlx::query("SELECT pg_sleep(3)").execute(&store.pool).await;
        let error = StoreError::from(slow.unwrap_err());
        assert!(!error.is_unreachable(), "{error}");
        assert!(error.to_string().contains("statement timeout"), "{error}");
    }
}
