//! The save writer: the one task every save goes through.
//!
//! Saves are queued per key, newest wins: a key has at most one queued state, its
//! latest, so the queue is bounded by the number of keys (players) and a database
//! that is down for a while costs one state per player, not one per save. The task
//! writes batches in one transaction each, retries with backoff while the database
//! fails, and removes a queued state only once that exact version has landed. Loads
//! look in the queue first, so a load always sees the latest save.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::{Record, Store, StoreError};

/// Records written per transaction at most.
const BATCH: usize = 256;
/// First and longest pause between failed attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A handle to the save writer; clones share it.
pub struct SaveWriter<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for SaveWriter<S> {
    fn clone(&self) -> Self {
        SaveWriter {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: S,
    state: Mutex<State>,
    /// New work, or closing.
    wake: Notify,
    /// The queue became empty.
    drained: Notify,
    saved: AtomicU64,
    failed_attempts: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    queued: HashMap<String, Queued>,
    last_version: u64,
    closing: bool,
}

struct Queued {
    version: u64,
    data: Bytes,
}

/// The writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records that landed in the database.
    pub saved: u64,
    /// Batches that failed (and were retried).
    pub failed_attempts: u64,
    /// Keys whose latest state has not landed yet.
    pub queued: usize,
}

/// Saves that had not landed when the writer was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} saves had not landed when the writer stopped")]
pub struct Unsaved(pub usize);

impl<S: Store> SaveWriter<S> {
    /// Starts the writer task on `store`.
    pub fn start(store: S) -> SaveWriter<S> {
        let inner = Arc::new(Inner {
            store,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            drained: Notify::new(),
            saved: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(inner.clone()));
        *lock(&inner.task) = Some(task);
        SaveWriter { inner }
    }

    /// Queues the latest state of `key`. Never waits; replaces a queued older state.
    pub fn save(&self, key: &str, data: Bytes) {
        let mut state = lock(&self.inner.state);
        // Versions only grow, across restarts too: the clock, or one past the last.
        let version = unix_micros().max(state.last_version + 1);
        state.last_version = version;
        state
            .queued
            .insert(key.to_owned(), Queued { version, data });
        drop(state);
        self.inner.wake.notify_one();
    }

    /// The latest state of `key`: queued if it has not landed yet, else the database's.
    pub async fn load(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(queued) = lock(&self.inner.state).queued.get(key) {
            return Ok(Some(queued.data.clone()));
        }
        Ok(self.inner.store.load(key).await?.map(|record| record.data))
    }

    /// The writer's counters.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            saved: self.inner.saved.load(Relaxed),
            failed_attempts: self.inner.failed_attempts.load(Relaxed),
            queued: lock(&self.inner.state).queued.len(),
        }
    }

    /// Waits until every queued save has landed, for at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Unsaved> {
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let drained = self.inner.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if lock(&self.inner.state).queued.is_empty() {
                    return;
                }
                drained.await;
            }
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(_) => Err(Unsaved(lock(&self.inner.state).queued.len())),
        }
    }

    /// Lands what is queued (for at most `timeout`) and stops the task. Saves queued
    /// after this are not written.
    pub async fn close(&self, timeout: Duration) -> Result<(), Unsaved> {
        let result = self.flush(timeout).await;
        lock(&self.inner.state).closing = true;
        self.inner.wake.notify_one();
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            task.abort(); // it may be sleeping in a retry; its queue was reported above
            let _ = task.await;
        }
        match result {
            Ok(()) => info!(
                saved = self.inner.saved.load(Relaxed),
                "save writer flushed"
            ),
            Err(Unsaved(n)) => error!(unsaved = n, "save writer closed with saves not landed"),
        }
        result
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

async fn run<S: Store>(inner: Arc<Inner<S>>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let wake = inner.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let batch: Vec<Record> = {
            let state = lock(&inner.state);
            if state.closing {
                return;
            }
            state
                .queued
                .iter()
                .take(BATCH)
                .map(|(key, queued)| Record {
                    key: key.clone(),
                    version: queued.version,
                    data: queued.data.clone(),
                })
                .collect()
        };
        if batch.is_empty() {
            inner.drained.notify_waiters();
            wake.await;
            continue;
        }
        // A store that panics is treated like one that fails: retried, never fatal.
        let attempt = AssertUnwindSafe(inner.store.save_batch(&batch))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(StoreError::Other("the store panicked".into())));
        match attempt {
            Ok(()) => {
                let mut state = lock(&inner.state);
                for record in &batch {
                    // Remove only the version that landed; a newer one stays queued.
                    if state
                        .queued
                        .get(&record.key)
                        .is_some_and(|q| q.version == record.version)
                    {
                        state.queued.remove(&record.key);
                    }
                }
                inner.saved.fetch_add(batch.len() as u64, Relaxed);
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                inner.failed_attempts.fetch_add(1, Relaxed);
                let queued = lock(&inner.state).queued.len();
                warn!(error = %e, queued, retry_in = ?backoff, "saving failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
