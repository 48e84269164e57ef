//! The PostgreSQL store, for servers whose saves must outlive the machine.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Postgres;

use crate::{SqlStore, StoreError};

/// A PostgreSQL-backed store.
pub type PostgresStore = SqlStore<Postgres>;

/// How long opening the store waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the database cannot be reached, from one connection attempt of our own.
async fn why_unreachable(options: &PgConnectOptions) -> StoreError {
    use sqlx::Connection as _;
    let attempt = sqlx::PgConnection::connect_with(options);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Err(cause)) => cause.into(),
        // It connects now, or hangs: the pool's own word is all there is.
        Ok(Ok(_)) | Err(_) => sqlx::Error::PoolTimedOut.into(),
    }
}

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
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await;
    let pool = match pool {
        Ok(pool) => pool,
        // The pool says only that it gave up waiting; one connection of our own says
        // why (connection refused, a wrong password, no such database).
        Err(sqlx::Error::PoolTimedOut) => return Err(why_unreachable(&options).await),
        Err(e) => return Err(e.into()),
    };
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore { pool })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that is not there is named as such, not as a pool that timed out.
    #[tokio::test]
    async fn an_unreachable_database_says_why_not_that_a_pool_timed_out() {
        // A port held by a socket that never listens: connecting is refused.
        let unused = tokio::net::TcpSocket::new_v4().unwrap();
        unused.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let port = unused.local_addr().unwrap().port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        let error = connect(&url, Duration::from_secs(1)).await.err().unwrap();
        assert!(error.is_unreachable(), "{error}");
        assert!(
            error.to_string().to_lowercase().contains("refused"),
            "{error}"
        );
    }

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
