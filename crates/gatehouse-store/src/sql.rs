//! The SQL both databases share: one generic store over a sqlx pool. SQLite and
//! PostgreSQL accept the same statements (`$N` parameters, `ON CONFLICT … WHERE`);
//! only opening the pool and the migrations' column types differ. [`AnyStore`] is the
//! one `[store]` names.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::{postgres, sqlite, Record, Store, StoreBackend, StoreConfig, StoreError};

/// A [`Store`] on a sqlx pool of any database that speaks this SQL.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
        }
    }
}

const LOAD: &str = "SELECT version, data FROM saves WHERE key = $1";

/// Writes a record unless the stored one is at least as new.
const SAVE: &str = "INSERT INTO saves (key, version, data, saved_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (key) DO UPDATE SET version = excluded.version, \
     data = excluded.data, saved_at = excluded.saved_at \
     WHERE excluded.version > saves.version";

impl<DB> Store for SqlStore<DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query::<DB>(LOAD)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Record {
            key: key.to_owned(),
            version: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
            data: row.try_get::<Vec<u8>, _>(1)?.into(),
        }))
    }

    async fn save_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = unix_millis();
        for record in records {
            sqlx::query::<DB>(SAVE)
                .bind(record.key.as_str())
                .bind(i64::try_from(record.version).unwrap_or(i64::MAX))
                .bind(record.data.as_ref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Box::new(e))
    }
}
