//! The SQL both databases share: one generic store over a sqlx pool. SQLite and
//! PostgreSQL accept the same statements (`$N` parameters, `ON CONFLICT … WHERE`);
//! only opening the pool and the migrations' column types differ. [`AnyStore`] is the
//! one `[store]` names.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::{
    postgres, sqlite, DeadLetter, DeadReason, Outcome, Record, Store, StoreBackend, StoreConfig,
    StoreError, Write,
};

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

/// The first save of a key: lands only if there is no row yet.
const INSERT: &str = "INSERT INTO saves (key, version, data, saved_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (key) DO NOTHING RETURNING version";

/// Any later save: lands only over the version it was built on ($5).
const UPDATE: &str = "UPDATE saves SET version = $2, data = $3, saved_at = $4 \
     WHERE key = $1 AND version = $5 RETURNING version";

const DEAD_LETTER: &str = "INSERT INTO dead_letters (key, version, data, reason, detail, at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

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
        row.map(|row| read_record(key, &row)).transpose()
    }

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = unix_millis();
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let record = &write.record;
            let query = if write.expected == 0 {
                sqlx::query::<DB>(INSERT)
            } else {
                sqlx::query::<DB>(UPDATE)
            };
            let query = query
                .bind(record.key.as_str())
                .bind(stored(record.version))
                .bind(record.data.as_ref())
                .bind(now);
            let query = if write.expected == 0 {
                query
            } else {
                query.bind(stored(write.expected))
            };
            if query.fetch_optional(&mut *tx).await?.is_some() {
                outcomes.push(Outcome::Applied);
                continue;
            }
            // Not applied: the very same record already stored is a retry of a batch
            // whose commit was lost; anything else is a conflict.
            let row = sqlx::query::<DB>(LOAD)
                .bind(record.key.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let found = row.map(|row| read_record(&record.key, &row)).transpose()?;
            outcomes.push(match found {
                Some(found) if found == *record => Outcome::Applied,
                found => Outcome::Conflict {
                    stored: found.map_or(0, |found| found.version),
                },
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query::<DB>(DEAD_LETTER)
            // Bytes, not text: a key the database refused as text must still fit.
            .bind(letter.record.key.as_bytes())
            .bind(stored(letter.record.version))
            .bind(letter.record.data.as_ref())
            .bind(letter.reason.as_str())
            .bind(letter.detail.as_str())
            .bind(unix_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl<DB> SqlStore<DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The dead letters of `key`, oldest first: for an operator (or a test) to see
    /// what did not land and why.
    pub async fn dead_letters(&self, key: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query::<DB>(
            "SELECT version, data, reason, detail FROM dead_letters WHERE key = $1 ORDER BY id",
        )
        .bind(key.as_bytes())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    record: read_record(key, row)?,
                    reason: match row.try_get::<String, _>(2)?.as_str() {
                        "conflict" => DeadReason::Conflict,
                        _ => DeadReason::Failed,
                    },
                    detail: row.try_get(3)?,
                })
            })
            .collect()
    }
}

fn read_record<R: Row>(key: &str, row: &R) -> Result<Record, StoreError>
where
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    usize: ColumnIndex<R>,
{
    Ok(Record {
        key: key.to_owned(),
        version: u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
        data: row.try_get::<Vec<u8>, _>(1)?.into(),
    })
}

/// Versions are stored as signed 64-bit integers; [`crate::next_version`] keeps
/// them in range.
fn stored(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
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
            StoreBackend::Postgres => AnyStore::Postgres(
                postgres::connect(&config.postgres_url, config.call_timeout).await?,
            ),
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

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.save_batch(writes).await,
            AnyStore::Postgres(s) => s.save_batch(writes).await,
        }
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.dead_letter(letter).await,
            AnyStore::Postgres(s) => s.dead_letter(letter).await,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error::{Io, PoolClosed, PoolTimedOut, Protocol, Tls, WorkerCrashed};
        match e {
            Io(_) | Tls(_) | Protocol(_) | PoolTimedOut | PoolClosed | WorkerCrashed => {
                StoreError::Unreachable(Box::new(e))
            }
            e => StoreError::Database(Box::new(e)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Box::new(e))
    }
}
