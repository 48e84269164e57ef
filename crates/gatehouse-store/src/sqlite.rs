//! The embedded default store: one SQLite file, `DATA_DIR/gatehouse.db`, created (with
//! its directory) on first run, in WAL mode so loads do not wait for saves.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Sqlite;

use crate::{SqlStore, StoreError};

/// Name of the database file inside the data directory.
pub const FILE_NAME: &str = "gatehouse.db";

/// A SQLite-backed store.
pub type SqliteStore = SqlStore<Sqlite>;

/// Opens `data_dir/gatehouse.db`, creating both if needed, and migrates it.
pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(data_dir.join(FILE_NAME))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL: a commit survives a process crash; an OS crash may lose the
        // last moments, never corrupt the file.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&pool).await?;
    Ok(SqlStore { pool })
}
