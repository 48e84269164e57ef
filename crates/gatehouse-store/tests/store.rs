//! Persistence: both stores apply a save only over the version it was built on and
//! keep what does not apply as a dead letter; the save writer lands every save through
//! an outage, writes the oldest first, isolates and dead-letters a record the database
//! keeps refusing, loses nothing to a clock that was ahead or to a second server on
//! the same database, fences out a session whose player a claim on another server
//! took, and refuses saves once closed.
//!
//! PostgreSQL runs when `GATEHOUSE_TEST_POSTGRES_URL` is set (`.ci/run` sets it);
//! otherwise those tests print a notice and pass.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_store::{
    postgres, sqlite, DeadLetter, DeadReason, LandError, Outcome, Record, SaveWriter, SqlStore,
    Store, StoreError, Write, WriterClosed, WriterConfig,
};

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

/// Compare-and-set, on either database: a first save lands only on no row, a later
/// one only over the version it was built on; a retry of what is stored is applied;
/// anything else is a conflict that changes nothing.
async fn a_save_lands_only_over_the_version_it_was_built_on(store: &impl Store) {
    let k = key("player");
    assert_eq!(store.load(&k).await.unwrap(), None);
    let write = |expected, version, data: &'static str| Write {
        record: Record {
            key: k.clone(),
            version,
            data: Bytes::from_static(data.as_bytes()),
        },
        expected,
    };
    let applied = vec![Outcome::Applied];
    assert_eq!(
        store.save_batch(&[write(0, 1, "one")]).await.unwrap(),
        applied
    );
    assert_eq!(
        store
            .save_batch(&[write(0, 1, "another first")])
            .await
            .unwrap(),
        vec![Outcome::Conflict { stored: 1 }]
    );
    assert_eq!(
        store.save_batch(&[write(1, 2, "two")]).await.unwrap(),
        applied
    );
    // A retry of a batch whose commit was lost: the same record is already there.
    assert_eq!(
        store.save_batch(&[write(1, 2, "two")]).await.unwrap(),
        applied
    );
    // A session that built on version 1 too, after "two" landed.
    assert_eq!(
        store.save_batch(&[write(1, 2, "stale")]).await.unwrap(),
        vec![Outcome::Conflict { stored: 2 }]
    );
    let stored = store.load(&k).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.data), (2, Bytes::from("two")));
}

/// Both kinds of dead letter are kept, with their data, even under a key the
/// database refuses as text.
async fn dead_letters_are_kept_with_their_data<DB>(store: &SqlStore<DB>)
where
    DB: sqlx::Database,
    SqlStore<DB>: Store,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let k = format!("{}\0nul", key("letter"));
    let letter = |reason| DeadLetter {
        record: Record {
            key: k.clone(),
            version: 7,
            data: Bytes::from_static(b"\x00\xffstate"),
        },
        reason,
        detail: "why".into(),
    };
    store
        .dead_letter(&letter(DeadReason::Conflict))
        .await
        .unwrap();
    store
        .dead_letter(&letter(DeadReason::Failed))
        .await
        .unwrap();
    assert_eq!(
        store.dead_letters(&k).await.unwrap(),
        vec![letter(DeadReason::Conflict), letter(DeadReason::Failed)]
    );
}

#[tokio::test]
async fn sqlite_creates_its_file_on_first_run_and_applies_saves_by_version() {
    let dir = scratch("sqlite");
    let _cleanup = Scratch(dir.clone());
    let store = sqlite::open(&dir).await.unwrap();
    assert!(dir.join(sqlite::FILE_NAME).exists());
    a_save_lands_only_over_the_version_it_was_built_on(&store).await;
    dead_letters_are_kept_with_their_data(&store).await;

    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let mut slot = writer.load("kept").await.unwrap().slot;
    writer.save(&mut slot, "state".into()).unwrap();
    writer.close(Duration::from_secs(5)).await.unwrap();
    drop(store);
    let reopened = sqlite::open(&dir).await.unwrap();
    assert_eq!(reopened.load("kept").await.unwrap().unwrap().data, "state");
}

#[tokio::test]
async fn postgres_applies_saves_by_version_and_keeps_dead_letters() {
    let Some(url) = postgres_url() else { return };
    let store = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    a_save_lands_only_over_the_version_it_was_built_on(&store).await;
    dead_letters_are_kept_with_their_data(&store).await;
    // Connecting again re-runs the migrations harmlessly.
    let again = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    a_save_lands_only_over_the_version_it_was_built_on(&again).await;
}

/// One attempted batch: its keys, and whether it landed.
type Batch = (Vec<String>, bool);

/// A store that can be switched off, refuses any batch holding a key that starts
/// with "poison", and records each batch's keys and whether it landed; clones share
/// it.
#[derive(Clone)]
struct Flaky<S> {
    inner: S,
    down: Arc<AtomicBool>,
    landed: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<Batch>>>,
    /// How long each batch takes, in milliseconds.
    slowness: Arc<AtomicU64>,
    /// Batches commit, then fail as if their acknowledgement was lost.
    lose_acks: Arc<AtomicBool>,
    _dir: Arc<Scratch>,
}

impl<S: Store> Store for Flaky<S> {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable("down".into()));
        }
        self.inner.load(key).await
    }

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        let keys: Vec<String> = writes.iter().map(|w| w.record.key.clone()).collect();
        let refused = if self.down.load(Ordering::SeqCst) {
            Some("down")
        } else if keys.iter().any(|key| key.starts_with("poison")) {
            Some("value too long for the column")
        } else {
            None
        };
        self.batches.lock().unwrap().push((keys, refused.is_none()));
        match refused {
            Some("down") => return Err(StoreError::Unreachable("down".into())),
            Some(why) => return Err(StoreError::Other(why.into())),
            None => {}
        }
        let slowness = self.slowness.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(slowness)).await;
        let outcomes = self.inner.save_batch(writes).await?;
        self.landed.fetch_add(writes.len(), Ordering::SeqCst);
        if self.lose_acks.load(Ordering::SeqCst) {
            return Err(StoreError::Timeout(Duration::from_millis(slowness)));
        }
        Ok(outcomes)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable("down".into()));
        }
        self.inner.dead_letter(letter).await
    }
}

async fn flaky_sqlite(name: &str) -> Flaky<sqlite::SqliteStore> {
    let dir = scratch(name);
    Flaky {
        inner: sqlite::open(&dir).await.unwrap(),
        down: Arc::default(),
        landed: Arc::default(),
        batches: Arc::default(),
        slowness: Arc::default(),
        lose_acks: Arc::default(),
        _dir: Arc::new(Scratch(dir)),
    }
}

/// Fast retries, so that a test sees a record given up on within a second.
fn quick() -> WriterConfig {
    WriterConfig {
        call_timeout: Duration::from_secs(2),
        max_attempts: 3,
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn saves_made_while_the_database_is_down_land_once_it_is_back() {
    let store = flaky_sqlite("outage").await;
    let writer = SaveWriter::start(store.clone(), quick());
    let mut slots = Vec::new();
    for i in 0..50 {
        slots.push(writer.load(&format!("p{i}")).await.unwrap().slot);
    }
    store.down.store(true, Ordering::SeqCst);
    for (i, slot) in slots.iter_mut().enumerate() {
        writer
            .save(slot, Bytes::from(format!("state {i}")))
            .unwrap();
    }
    // The writer tries, fails, and keeps every save queued: an outage, however long,
    // dead-letters nothing.
    until("failed attempts", || writer.stats().failed_attempts >= 10).await;
    let stats = writer.stats();
    assert_eq!((stats.queued, stats.dead_letters), (50, 0), "{stats:?}");
    // While down, loads still see every queued save.
    assert_eq!(writer.load("p7").await.unwrap().data.unwrap(), "state 7");

    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(writer.stats().queued, 0);
    for i in 0..50 {
        let record = store.inner.load(&format!("p{i}")).await.unwrap().unwrap();
        assert_eq!(record.data, format!("state {i}"));
    }
}

#[tokio::test]
async fn only_the_latest_state_of_a_key_is_kept_and_landed_once() {
    let store = flaky_sqlite("order").await;
    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let mut slot = writer.load("same").await.unwrap().slot;
    store.down.store(true, Ordering::SeqCst);
    for i in 0..100 {
        writer
            .save(&mut slot, Bytes::from(format!("v{i}")))
            .unwrap();
        let loaded = writer.load("same").await.unwrap();
        assert_eq!(loaded.data.unwrap(), format!("v{i}"));
        assert_eq!(loaded.slot, slot, "a load builds on the latest save");
    }
    assert_eq!(writer.stats().queued, 1, "one queued state per key");
    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    let stored = store.inner.load("same").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.data), (100, Bytes::from("v99")));
    assert_eq!(
        store.landed.load(Ordering::SeqCst),
        1,
        "written once, not 100 times"
    );
}

/// A save made while the session's previous one is being written lands after it
/// (it builds on it), and so do the session's later saves.
#[tokio::test]
async fn a_save_made_while_the_previous_one_is_written_builds_on_it() {
    let store = flaky_sqlite("inflight").await;
    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let mut slot = writer.load("moving").await.unwrap().slot;
    store.slowness.store(300, Ordering::SeqCst);
    writer.save(&mut slot, "one".into()).unwrap();
    until("the first save being written", || {
        !store.batches.lock().unwrap().is_empty()
    })
    .await;
    writer.save(&mut slot, "two".into()).unwrap();
    store.slowness.store(0, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    writer.save(&mut slot, "three".into()).unwrap();
    writer.flush(Duration::from_secs(10)).await.unwrap();
    let stats = writer.stats();
    assert_eq!((stats.saved, stats.conflicts), (3, 0), "{stats:?}");
    let stored = store.inner.load("moving").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.data), (3, Bytes::from("three")));
}

/// A save that committed but whose answer was lost (a timeout after the commit),
/// followed by a newer save of the same session: the newer one builds on it and
/// lands, instead of losing a "conflict" to its own older state.
#[tokio::test]
async fn a_save_whose_acknowledgement_was_lost_does_not_beat_the_next_one() {
    let store = flaky_sqlite("lostack").await;
    let writer = SaveWriter::start(store.clone(), quick());
    let mut slot = writer.load("walker").await.unwrap().slot;
    store.slowness.store(200, Ordering::SeqCst);
    store.lose_acks.store(true, Ordering::SeqCst);
    writer.save(&mut slot, "one".into()).unwrap();
    until("the first save being written", || {
        !store.batches.lock().unwrap().is_empty()
    })
    .await;
    writer.save(&mut slot, "two".into()).unwrap();
    until("the first save committed", || {
        store.landed.load(Ordering::SeqCst) == 1
    })
    .await;
    store.lose_acks.store(false, Ordering::SeqCst);
    store.slowness.store(0, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    let stats = writer.stats();
    assert_eq!((stats.conflicts, stats.dead_letters), (0, 0), "{stats:?}");
    let stored = store.inner.load("walker").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.data), (2, Bytes::from("two")));
    // And a real conflict is still one: another session's save of the same version.
    let mut other = writer.load("walker").await.unwrap().slot;
    writer.save(&mut slot, "three".into()).unwrap();
    writer.flush(Duration::from_secs(10)).await.unwrap();
    writer.save(&mut other, "stale".into()).unwrap();
    writer.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(writer.stats().conflicts, 1);
    let stored = store.inner.load("walker").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.data), (3, Bytes::from("three")));
}

#[tokio::test]
async fn the_keys_queued_longest_are_written_first() {
    let store = flaky_sqlite("oldest").await;
    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let mut slots = Vec::new();
    for i in 0..600 {
        slots.push(writer.load(&format!("k{i:03}")).await.unwrap().slot);
    }
    store.down.store(true, Ordering::SeqCst);
    for slot in &mut slots {
        writer.save(slot, "x".into()).unwrap();
    }
    until("a failed attempt", || writer.stats().failed_attempts >= 1).await;
    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(20)).await.unwrap();
    // However the failed batch was retried, the keys landed in the order they were
    // queued: every batch holds keys queued later than the one before.
    let batches = store.batches.lock().unwrap().clone();
    let landed: Vec<String> = batches
        .into_iter()
        .filter(|(_, landed)| *landed)
        .flat_map(|(keys, _)| keys)
        .collect();
    let mut sorted = landed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 600);
    assert_eq!(landed, sorted, "oldest first");
}

#[tokio::test]
async fn a_record_the_database_keeps_refusing_is_dead_lettered_and_blocks_no_other() {
    let store = flaky_sqlite("poison").await;
    let writer = SaveWriter::start(store.clone(), quick());
    let mut slots = Vec::new();
    for name in (0..40)
        .map(|i| format!("good{i}"))
        .chain(["poison".to_owned()])
    {
        slots.push(writer.load(&name).await.unwrap().slot);
    }
    slots.rotate_right(1); // the poisoned record first, among the good ones
    for slot in &mut slots {
        writer
            .save(slot, Bytes::from(format!("state of {}", slot.key())))
            .unwrap();
    }
    writer.flush(Duration::from_secs(20)).await.unwrap();
    let stats = writer.stats();
    assert_eq!(
        (stats.saved, stats.dead_letters, stats.queued),
        (40, 1, 0),
        "{stats:?}"
    );
    for i in 0..40 {
        let stored = store
            .inner
            .load(&format!("good{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.data, format!("state of good{i}"));
    }
    assert_eq!(store.inner.load("poison").await.unwrap(), None);
    let letters = store.inner.dead_letters("poison").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadReason::Failed);
    assert_eq!(letters[0].record.data, "state of poison");
    assert!(
        letters[0].detail.contains("too long"),
        "{}",
        letters[0].detail
    );
    // Tried alone as often as configured, no more.
    let alone = store
        .batches
        .lock()
        .unwrap()
        .iter()
        .filter(|(keys, _)| keys == &["poison"])
        .count();
    assert_eq!(alone, 3);
}

/// The writer versions of before: a state saved when the clock was an hour ahead (or
/// by a server whose clock was) had a version no later save from a correct clock
/// could beat, so those saves changed nothing and were counted as saved.
#[tokio::test]
async fn a_stored_version_from_a_clock_far_ahead_does_not_hide_later_saves() {
    let store = flaky_sqlite("clock").await;
    let hour_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        + 3_600_000_000;
    for (name, version) in [("ahead", hour_ahead), ("end", i64::MAX as u64)] {
        let first = Write {
            record: Record {
                key: name.into(),
                version,
                data: "from the old run".into(),
            },
            expected: 0,
        };
        store.inner.save_batch(&[first]).await.unwrap();
    }
    // A restart: a new writer, a correct clock.
    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    for name in ["ahead", "end"] {
        let loaded = writer.load(name).await.unwrap();
        assert_eq!(loaded.data.unwrap(), "from the old run");
        let mut slot = loaded.slot;
        writer.save(&mut slot, "from the new run".into()).unwrap();
    }
    writer.close(Duration::from_secs(10)).await.unwrap();
    let stats = writer.stats();
    assert_eq!((stats.saved, stats.conflicts), (2, 0));
    for name in ["ahead", "end"] {
        let stored = store.inner.load(name).await.unwrap().unwrap();
        assert_eq!(stored.data, "from the new run", "{name}");
    }
    // After the largest version the count starts again, and still applies.
    assert_eq!(store.inner.load("end").await.unwrap().unwrap().version, 1);
}

/// Two sessions of one key that both built on the same version, in one process
/// (the second save is refused at once) or on two servers sharing the database (the
/// second is refused by the database): the first wins, the second is a conflict,
/// counted, and kept as a dead letter rather than lost.
async fn two_sessions_of_one_player<S: Store + Clone>(
    a: SaveWriter<S>,
    b: SaveWriter<S>,
    letters: impl AsyncFn(&str) -> Vec<DeadLetter>,
) {
    let k = key("both");
    let mut first = a.load(&k).await.unwrap().slot;
    let mut second = b.load(&k).await.unwrap().slot;
    a.save(&mut first, "first".into()).unwrap();
    a.flush(Duration::from_secs(10)).await.unwrap();
    b.save(&mut second, "second".into()).unwrap();
    b.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(b.stats().conflicts, 1);
    let loaded = a.load(&k).await.unwrap();
    assert_eq!(loaded.data.unwrap(), "first");
    let kept = letters(&k).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].reason, kept[0].record.data.clone()),
        (DeadReason::Conflict, "second".into())
    );
    // A session that loads again builds on the winner and saves normally.
    let mut again = b.load(&k).await.unwrap().slot;
    b.save(&mut again, "third".into()).unwrap();
    b.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(a.load(&k).await.unwrap().data.unwrap(), "third");
}

#[tokio::test]
async fn a_second_session_of_a_key_in_one_process_conflicts_and_is_kept() {
    let store = flaky_sqlite("local").await;
    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let inner = store.inner.clone();
    two_sessions_of_one_player(writer.clone(), writer.clone(), async |k: &str| {
        inner.dead_letters(k).await.unwrap()
    })
    .await;
    // While the first save is still queued, the second is refused at once.
    let mut first = writer.load("queued").await.unwrap().slot;
    let mut second = writer.load("queued").await.unwrap().slot;
    store.down.store(true, Ordering::SeqCst);
    writer.save(&mut first, "first".into()).unwrap();
    writer.save(&mut second, "second".into()).unwrap();
    assert_eq!(writer.stats().conflicts, 2);
    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        store.inner.load("queued").await.unwrap().unwrap().data,
        "first"
    );
    let kept = store.inner.dead_letters("queued").await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].record.data, "second");
}

/// Fencing, with `a` and `b` two servers on one database: a session on `a` holds a
/// player; a login on `b` takes it over and lands a claim save. The session on `a`
/// saves once more: the database refuses it, `a` counts the conflict, keeps the state
/// as a dead letter and tells the session (once) that it lost; a later landing save
/// through its slot fails at once. The stored state is `b`'s.
async fn a_claim_fences_out_the_session_it_took_over<S: Store + Clone>(
    a: SaveWriter<S>,
    b: SaveWriter<S>,
) {
    let k = key("fenced");
    let patience = Duration::from_secs(10);
    let mut held = a.load(&k).await.unwrap().slot;
    a.land(&mut held, "on a".into(), patience).await.unwrap();
    let told = Arc::new(AtomicUsize::new(0));
    let count = told.clone();
    held.on_lost(move || {
        count.fetch_add(1, Ordering::SeqCst);
    });

    let loaded = b.load(&k).await.unwrap();
    assert_eq!(loaded.data.unwrap(), "on a");
    let mut claim = loaded.slot;
    b.land(&mut claim, "claimed on b".into(), patience)
        .await
        .unwrap();

    let conflicts = a.stats().conflicts;
    a.save(&mut held, "stale, from a".into()).unwrap();
    a.flush(patience).await.unwrap();
    assert_eq!(
        a.stats().conflicts,
        conflicts + 1,
        "the refused save is counted"
    );
    assert_eq!(told.load(Ordering::SeqCst), 1, "the session on a is told");
    assert!(held.is_lost());
    assert_eq!(
        a.land(&mut held, "again".into(), patience).await,
        Err(LandError::Lost)
    );
    a.flush(patience).await.unwrap();
    assert_eq!(told.load(Ordering::SeqCst), 1, "told once");
    assert_eq!(b.load(&k).await.unwrap().data.unwrap(), "claimed on b");
    // The session on b goes on saving over its claim.
    b.save(&mut claim, "played on b".into()).unwrap();
    b.flush(patience).await.unwrap();
    assert_eq!(a.load(&k).await.unwrap().data.unwrap(), "played on b");
    assert!(!claim.is_lost());
}

#[tokio::test]
async fn a_claim_on_another_server_fences_out_the_session_it_took_over_sqlite() {
    let store = flaky_sqlite("fence").await;
    let a = SaveWriter::start(store.clone(), WriterConfig::default());
    let b = SaveWriter::start(store.clone(), WriterConfig::default());
    a_claim_fences_out_the_session_it_took_over(a, b).await;
}

#[tokio::test]
async fn a_landing_save_returns_once_stored_and_times_out_while_the_database_is_down() {
    let store = flaky_sqlite("land").await;
    let writer = SaveWriter::start(store.clone(), quick());
    let mut slot = writer.load("lander").await.unwrap().slot;
    writer
        .land(&mut slot, "one".into(), Duration::from_secs(10))
        .await
        .unwrap();
    let stored = store.inner.load("lander").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.data), (1, "one".into()));

    store.down.store(true, Ordering::SeqCst);
    let waited = Duration::from_millis(200);
    assert_eq!(
        writer.land(&mut slot, "two".into(), waited).await,
        Err(LandError::TimedOut(waited))
    );
    // It stays queued, and lands once the database is back.
    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        store.inner.load("lander").await.unwrap().unwrap().data,
        "two"
    );
    assert!(!slot.is_lost());
}

#[tokio::test]
async fn two_servers_on_one_postgres_database_lose_nothing() {
    let Some(url) = postgres_url() else { return };
    let one = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    let two = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    let a = SaveWriter::start(one.clone(), WriterConfig::default());
    let b = SaveWriter::start(two.clone(), WriterConfig::default());
    // A player who moves from one server to the other keeps every save.
    let k = key("moving");
    for (writer, data) in [(&a, "on one"), (&b, "on two"), (&a, "back on one")] {
        let mut slot = writer.load(&k).await.unwrap().slot;
        writer
            .save(&mut slot, Bytes::from_static(data.as_bytes()))
            .unwrap();
        writer.flush(Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(b.load(&k).await.unwrap().data.unwrap(), "back on one");
    // One logged in on both at once: the first save wins, the other is kept.
    two_sessions_of_one_player(a.clone(), b.clone(), async |k: &str| {
        one.dead_letters(k).await.unwrap()
    })
    .await;
    // One taken over by a login on the other: the claim fences the first out.
    a_claim_fences_out_the_session_it_took_over(a, b).await;
}

#[tokio::test]
async fn close_lands_what_is_queued_reports_what_could_not_land_and_refuses_later_saves() {
    let store = flaky_sqlite("close").await;
    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let mut a = writer.load("a").await.unwrap().slot;
    writer.save(&mut a, "1".into()).unwrap();
    writer.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.inner.load("a").await.unwrap().unwrap().data, "1");
    assert_eq!(writer.save(&mut a, "2".into()), Err(WriterClosed));

    let writer = SaveWriter::start(store.clone(), WriterConfig::default());
    let mut b = writer.load("b").await.unwrap().slot;
    store.down.store(true, Ordering::SeqCst);
    writer.save(&mut b, "2".into()).unwrap();
    let result = writer.close(Duration::from_millis(300)).await;
    assert_eq!(result.unwrap_err().0, 1);
}
