//! Persistence: both stores keep the newest version of each key across reopening,
//! and the save writer lands every save, in order per key, through a database
//! outage, while loads see the latest state at all times.
//!
//! PostgreSQL runs when `GATEHOUSE_TEST_POSTGRES_URL` is set (`.ci/run` sets it);
//! otherwise those tests print a notice and pass.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_store::{postgres, sqlite, Record, SaveWriter, Store, StoreError};

/// A scratch directory, removed when the last holder lets go.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-store-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A unique key prefix, so tests sharing one PostgreSQL database do not collide.
fn key(name: &str) -> String {
    format!("{name}-{}", rand_suffix())
}

fn postgres_url() -> Option<String> {
    let url = std::env::var("GATEHOUSE_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        println!("GATEHOUSE_TEST_POSTGRES_URL is unset: skipping the PostgreSQL test");
    }
    url
}

async fn newest_version_wins_and_older_ones_are_skipped(store: &impl Store) {
    let k = key("player");
    assert_eq!(store.load(&k).await.unwrap(), None);
    let record = |version, data: &'static str| Record {
        key: k.clone(),
        version,
        data: Bytes::from_static(data.as_bytes()),
    };
    store.save_batch(&[record(10, "ten")]).await.unwrap();
    store.save_batch(&[record(5, "five, late")]).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), Some(record(10, "ten")));
    store.save_batch(&[record(11, "eleven")]).await.unwrap();
    // Retrying the same version changes nothing.
    store.save_batch(&[record(11, "eleven")]).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), Some(record(11, "eleven")));
}

#[tokio::test]
async fn sqlite_creates_its_file_on_first_run_and_keeps_the_newest_version() {
    let dir = scratch("sqlite");
    let store = sqlite::open(&dir).await.unwrap();
    assert!(dir.join(sqlite::FILE_NAME).exists());
    newest_version_wins_and_older_ones_are_skipped(&store).await;

    store
        .save_batch(&[Record {
            key: "kept".into(),
            version: 1,
            data: "state".into(),
        }])
        .await
        .unwrap();
    drop(store);
    let reopened = sqlite::open(&dir).await.unwrap();
    assert_eq!(reopened.load("kept").await.unwrap().unwrap().data, "state");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_keeps_the_newest_version() {
    let Some(url) = postgres_url() else { return };
    let store = postgres::connect(&url).await.unwrap();
    newest_version_wins_and_older_ones_are_skipped(&store).await;
    // Connecting again re-runs the migrations harmlessly.
    let again = postgres::connect(&url).await.unwrap();
    newest_version_wins_and_older_ones_are_skipped(&again).await;
}

/// A store that can be switched off, and counts what landed; clones share it.
#[derive(Clone)]
struct Flaky<S> {
    inner: S,
    down: Arc<AtomicBool>,
    landed: Arc<AtomicUsize>,
    _dir: Arc<Scratch>,
}

impl<S: Store> Store for Flaky<S> {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Other("down".into()));
        }
        self.inner.load(key).await
    }

    async fn save_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Other("down".into()));
        }
        self.inner.save_batch(records).await?;
        self.landed.fetch_add(records.len(), Ordering::SeqCst);
        Ok(())
    }
}

async fn flaky_sqlite(name: &str) -> Flaky<sqlite::SqliteStore> {
    let dir = scratch(name);
    Flaky {
        inner: sqlite::open(&dir).await.unwrap(),
        down: Arc::default(),
        landed: Arc::default(),
        _dir: Arc::new(Scratch(dir)),
    }
}

#[tokio::test]
async fn saves_made_while_the_database_is_down_land_once_it_is_back() {
    let store = flaky_sqlite("outage").await;
    let writer = SaveWriter::start(store.clone());
    store.down.store(true, Ordering::SeqCst);
    for i in 0..50 {
        writer.save(&format!("p{i}"), Bytes::from(format!("state {i}")));
    }
    // The writer tries, fails, and keeps every save queued.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while writer.stats().failed_attempts == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer never tried: {:?}",
            writer.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(writer.stats().queued, 50);
    // While down, loads still see every queued save.
    assert_eq!(writer.load("p7").await.unwrap().unwrap(), "state 7");

    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(writer.stats().queued, 0);
    for i in 0..50 {
        let record = store.inner.load(&format!("p{i}")).await.unwrap().unwrap();
        assert_eq!(record.data, format!("state {i}"));
    }
}

#[tokio::test]
async fn only_the_latest_state_of_a_key_is_kept_and_landed_in_order() {
    let store = flaky_sqlite("order").await;
    let writer = SaveWriter::start(store.clone());
    store.down.store(true, Ordering::SeqCst);
    for i in 0..100 {
        writer.save("same", Bytes::from(format!("v{i}")));
        assert_eq!(writer.load("same").await.unwrap().unwrap(), format!("v{i}"));
    }
    assert_eq!(writer.stats().queued, 1, "one queued state per key");
    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(store.inner.load("same").await.unwrap().unwrap().data, "v99");
    assert_eq!(
        store.landed.load(Ordering::SeqCst),
        1,
        "written once, not 100 times"
    );
}

#[tokio::test]
async fn close_lands_what_is_queued_and_reports_what_could_not_land() {
    let store = flaky_sqlite("close").await;
    let writer = SaveWriter::start(store.clone());
    writer.save("a", "1".into());
    writer.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.inner.load("a").await.unwrap().unwrap().data, "1");

    let writer = SaveWriter::start(store.clone());
    store.down.store(true, Ordering::SeqCst);
    writer.save("b", "2".into());
    let result = writer.close(Duration::from_millis(300)).await;
    assert_eq!(result.unwrap_err().0, 1);
}
