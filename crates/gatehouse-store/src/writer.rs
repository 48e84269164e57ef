//! The save writer: the one task every save goes through.
//!
//! A session loads through the writer and gets a [`SaveSlot`]: its key and the version
//! its state builds on. Each save through the slot is queued as "this data, as version
//! n + 1, over version n"; the store applies it only if it still holds version n. Saves
//! are queued per key, newest wins: a newer save of the same session replaces the queued
//! one and keeps its base, so the queue is bounded by the number of keys (players) and a
//! database that is down for a while costs one state per player, not one per save.
//!
//! The task writes the keys queued longest first, in batches of one transaction each,
//! every database call under `call_timeout`. A batch that fails is retried in halves
//! until the failing record is alone; a record that fails alone is retried with backoff
//! and, after the database has refused it `max_attempts` times, written to the store's
//! dead letters (only if that write works). A database that cannot be reached or does
//! not answer refuses nothing: such failures are retried forever, never counted. A state is
//! removed from the queue only once that exact version has landed (or been
//! dead-lettered). Loads look in the queue first, so a load always sees the latest save.
//!
//! A slot is also a fence. A session that must know its save landed (a login claiming
//! the player before it serves) uses [`SaveWriter::land`]; and when one of a slot's
//! saves loses to another session's (another node took the player over and saved
//! first), the slot is marked lost and the callback given to [`SaveSlot::on_lost`]
//! runs once, so that the session still holding it can be ended. (A store takes a
//! write of the very version and bytes it holds for a retry of its own, so a claim
//! must differ in its bytes from what the displaced session would write: arena's
//! counts the login, a shared room's names its node.)
//!
//! A call that fails may still have committed (a timeout, a lost acknowledgement):
//! the versions such calls carried are remembered per key. If a later write of the
//! key then conflicts with one of those very versions, the writer reads the stored
//! record, and if it is that write of its own, builds on it instead of losing to it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::{next_version, DeadLetter, DeadReason, Outcome, Record, Store, StoreError, Write};

/// Records written per transaction at most.
const BATCH: usize = 256;
/// Versions of one key remembered from failed calls (which may have committed).
const UNCONFIRMED: usize = 8;
/// First and longest pause between failed attempts of a record alone.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the writer treats a database that fails or hangs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// The longest any one database call (a batch, a load, a dead letter) may take
    /// before it counts as failed.
    pub call_timeout: Duration,
    /// Failed attempts of a record alone before it is dead-lettered.
    pub max_attempts: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            call_timeout: Duration::from_secs(5),
            max_attempts: 5,
        }
    }
}

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

/// Where a session's saves go: its key and the version its state builds on. Made
/// only by [`SaveWriter::load`], so that every save builds on what was loaded.
/// Clones share the slot's fence: whether its saves landed or lost.
#[derive(Debug, Clone)]
pub struct SaveSlot {
    key: String,
    version: u64,
    fence: Arc<Fence>,
}

impl PartialEq for SaveSlot {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.version == other.version
    }
}

impl Eq for SaveSlot {}

impl SaveSlot {
    /// The key saved.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version of the state this slot last loaded or saved (0: none yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether one of this slot's saves lost to another session's: the stored state
    /// is someone else's now, and this slot's saves will all be dead letters.
    pub fn is_lost(&self) -> bool {
        lock(&self.fence.state).ended == Some(Ended::Lost)
    }

    /// Runs `callback` once when one of this slot's saves loses to another session's
    /// (at once if one already has), outside the writer's locks; the one callback
    /// given last counts. The session holding the slot should end: another has the
    /// key now.
    pub fn on_lost(&self, callback: impl FnOnce() + Send + 'static) {
        let mut state = lock(&self.fence.state);
        if state.ended == Some(Ended::Lost) {
            drop(state);
            callback();
        } else {
            state.on_lost = Some(Box::new(callback));
        }
    }
}

/// What the saves of one slot share with the writer: the newest of them that landed,
/// whether one lost or was refused, and what to do when one loses.
#[derive(Default)]
struct Fence {
    state: Mutex<FenceState>,
    /// Something above changed.
    changed: Notify,
}

#[derive(Default)]
struct FenceState {
    /// The newest version of this slot known to have landed (0: none).
    landed: u64,
    ended: Option<Ended>,
    on_lost: Option<Box<dyn FnOnce() + Send>>,
}

/// Why a slot's saves stopped landing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Another session's save won.
    Lost,
    /// The database kept refusing a save of it; it was dead-lettered.
    Refused,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Fence")
            .field("landed", &state.landed)
            .field("ended", &state.ended)
            .finish_non_exhaustive()
    }
}

impl Fence {
    fn landed(&self, version: u64) {
        lock(&self.state).landed = version;
        self.changed.notify_waiters();
    }

    /// Marks the slot ended; a loss runs its callback. Call with no writer lock held.
    fn end(&self, ended: Ended) {
        let callback = {
            let mut state = lock(&self.state);
            state.ended.get_or_insert(ended);
            match ended {
                Ended::Lost => state.on_lost.take(),
                Ended::Refused => None,
            }
        };
        self.changed.notify_waiters();
        if let Some(callback) = callback {
            callback();
        }
    }

    /// What became of `version`, if anything yet.
    fn outcome(&self, version: u64) -> Option<Result<(), LandError>> {
        let state = lock(&self.state);
        match state.ended {
            Some(Ended::Lost) => Some(Err(LandError::Lost)),
            Some(Ended::Refused) => Some(Err(LandError::Refused)),
            None if state.landed == version => Some(Ok(())),
            None => None,
        }
    }
}

/// What [`SaveWriter::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The latest state, if the key was ever saved.
    pub data: Option<Bytes>,
    /// Where this session's saves of the key go.
    pub slot: SaveSlot,
}

/// A save refused because the writer was closed: it would never have landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the save writer is closed; the save was not queued")]
pub struct WriterClosed;

/// Why [`SaveWriter::land`] did not see its save land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LandError {
    /// Another session saved the key first: its state wins, this one is a dead letter.
    #[error("another session saved this key first; its state wins")]
    Lost,
    /// The database kept refusing the save; it was written to the dead letters.
    #[error("the database kept refusing the save; it was dead-lettered")]
    Refused,
    /// The save had not landed in time. It stays queued and may land later.
    #[error("the save had not landed within {0:?}; it stays queued")]
    TimedOut(Duration),
    /// The writer was closed; the save was not queued.
    #[error("the save writer is closed; the save was not queued")]
    Closed,
}

/// Saves that had not landed when the writer was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} saves had not landed when the writer stopped")]
pub struct Unsaved(pub usize);

/// The writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records that landed in the database.
    pub saved: u64,
    /// Database calls that failed or timed out (and were retried).
    pub failed_attempts: u64,
    /// Saves that did not apply because another session saved the key first.
    pub conflicts: u64,
    /// Saves written to the dead letters (conflicts and records refused too often).
    pub dead_letters: u64,
    /// Keys whose latest state has not landed yet, plus dead letters not written yet.
    pub queued: usize,
    /// How long the longest-waiting queued state has waited.
    pub oldest_unsaved: Option<Duration>,
}

struct Inner<S> {
    store: S,
    config: WriterConfig,
    state: Mutex<State>,
    /// New work.
    wake: Notify,
    /// Nothing is left to write.
    drained: Notify,
    saved: AtomicU64,
    failed_attempts: AtomicU64,
    conflicts: AtomicU64,
    dead_letters: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    queued: HashMap<String, Queued>,
    /// The queued keys by when their oldest unsaved state arrived.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    /// Dead letters to write, the newest per key.
    letters: HashMap<String, DeadLetter>,
    closed: bool,
}

impl State {
    fn pending(&self) -> usize {
        self.queued.len() + self.letters.len()
    }

    /// `version` of `key` is stored: it leaves the queue, unless a newer save of the
    /// same session replaced it while it was being written; that one now builds on
    /// the stored version.
    fn landed(&mut self, key: &str, version: u64) {
        if let Some(queued) = self.queued.get(key) {
            queued.fence.landed(version);
        }
        match self.queued.get_mut(key) {
            Some(queued) if queued.version != version => {
                queued.expected = version;
                queued.unconfirmed.clear();
            }
            _ => self.settle(key, version),
        }
    }

    /// Removes `key` from the queue if `version` is still what is queued for it (a
    /// newer save that arrived meanwhile stays).
    fn settle(&mut self, key: &str, version: u64) {
        if let Some(queued) = self.queued.get(key).filter(|q| q.version == version) {
            self.order.remove(&queued.seq);
            self.queued.remove(key);
        }
    }
}

struct Queued {
    /// Position in `State::order`.
    seq: u64,
    /// The stored version this state builds on.
    expected: u64,
    version: u64,
    data: Bytes,
    /// Failed attempts of this record alone.
    attempts: u32,
    /// Versions (and their data) sent in calls that failed, which may have committed
    /// all the same: the newest [`UNCONFIRMED`].
    unconfirmed: VecDeque<(u64, Bytes)>,
    /// When the oldest state of this key still queued arrived.
    since: Instant,
    /// The fence of the slot whose save this is.
    fence: Arc<Fence>,
}

impl<S: Store> SaveWriter<S> {
    /// Starts the writer task on `store`.
    pub fn start(store: S, config: WriterConfig) -> SaveWriter<S> {
        let inner = Arc::new(Inner {
            store,
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            drained: Notify::new(),
            saved: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(inner.clone()));
        *lock(&inner.task) = Some(task);
        SaveWriter { inner }
    }

    /// The latest state of `key` (queued if it has not landed yet, else the
    /// database's) and the slot to save it through.
    pub async fn load(&self, key: &str) -> Result<Loaded, StoreError> {
        if let Some(queued) = lock(&self.inner.state).queued.get(key) {
            return Ok(Loaded {
                data: Some(queued.data.clone()),
                slot: SaveSlot {
                    key: key.to_owned(),
                    version: queued.version,
                    fence: Arc::default(),
                },
            });
        }
        let record = guarded(self.inner.config.call_timeout, self.inner.store.load(key)).await?;
        Ok(Loaded {
            slot: SaveSlot {
                key: key.to_owned(),
                version: record.as_ref().map_or(0, |r| r.version),
                fence: Arc::default(),
            },
            data: record.map(|r| r.data),
        })
    }

    /// Queues `data` as the slot's next version. Never waits; replaces an older
    /// state of the same session still queued. A save from a second session of the
    /// same key that built on another version is a conflict: the state queued first
    /// stays, this one becomes a dead letter, and the slot is lost; so is every save
    /// through a slot that has lost.
    pub fn save(&self, slot: &mut SaveSlot, data: Bytes) -> Result<(), WriterClosed> {
        let version = next_version(slot.version);
        let mut guard = lock(&self.inner.state);
        if guard.closed {
            return Err(WriterClosed);
        }
        let state = &mut *guard;
        // Why this save cannot land, if it cannot: then it is kept as a dead letter.
        let conflict = match state.queued.get(&slot.key) {
            // Once lost, always lost: the slot's versions are another session's now.
            _ if slot.is_lost() => Some("this session's earlier save lost to another's".to_owned()),
            Some(queued) if queued.version != slot.version => Some(format!(
                "built on version {}; a save at version {} was queued first",
                slot.version, queued.version
            )),
            _ => None,
        };
        let lost = conflict.is_some();
        match (conflict, state.queued.get_mut(&slot.key)) {
            (Some(detail), _) => {
                self.inner.conflicts.fetch_add(1, Relaxed);
                warn!(
                    key = %slot.key,
                    built_on = slot.version,
                    detail,
                    "save conflict: another session has this key; its state wins, this one is kept as a dead letter"
                );
                let record = Record {
                    key: slot.key.clone(),
                    version,
                    data,
                };
                let letter = DeadLetter {
                    record,
                    reason: DeadReason::Conflict,
                    detail,
                };
                state.letters.insert(slot.key.clone(), letter);
            }
            (None, Some(queued)) => {
                // The same session, or a new one that loaded this very state: it
                // goes on from here.
                queued.version = version;
                queued.data = data;
                queued.fence = slot.fence.clone();
            }
            (None, None) => {
                let seq = state.next_seq;
                state.next_seq += 1;
                state.order.insert(seq, slot.key.clone());
                state.queued.insert(
                    slot.key.clone(),
                    Queued {
                        seq,
                        expected: slot.version,
                        version,
                        data,
                        attempts: 0,
                        unconfirmed: VecDeque::new(),
                        since: Instant::now(),
                        fence: slot.fence.clone(),
                    },
                );
            }
        }
        slot.version = version;
        self.inner.wake.notify_one();
        drop(guard);
        if lost {
            slot.fence.end(Ended::Lost);
        }
        Ok(())
    }

    /// Saves like [`SaveWriter::save`], then waits (at most `timeout`) until that
    /// save has landed: for a session that must not go on unless its state is the
    /// stored one, like a login claiming a player that another node may still hold.
    /// [`LandError::Lost`] if another session saved the key first.
    pub async fn land(
        &self,
        slot: &mut SaveSlot,
        data: Bytes,
        timeout: Duration,
    ) -> Result<(), LandError> {
        self.save(slot, data)
            .map_err(|WriterClosed| LandError::Closed)?;
        let (fence, version) = (&slot.fence, slot.version);
        let landed = tokio::time::timeout(timeout, async {
            loop {
                let changed = fence.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(outcome) = fence.outcome(version) {
                    return outcome;
                }
                changed.await;
            }
        })
        .await;
        landed.unwrap_or(Err(LandError::TimedOut(timeout)))
    }

    /// The writer's counters.
    pub fn stats(&self) -> WriterStats {
        let state = lock(&self.inner.state);
        let oldest_unsaved = state
            .order
            .values()
            .next()
            .and_then(|key| state.queued.get(key))
            .map(|queued| queued.since.elapsed());
        WriterStats {
            saved: self.inner.saved.load(Relaxed),
            failed_attempts: self.inner.failed_attempts.load(Relaxed),
            conflicts: self.inner.conflicts.load(Relaxed),
            dead_letters: self.inner.dead_letters.load(Relaxed),
            queued: state.pending(),
            oldest_unsaved,
        }
    }

    /// Waits until every queued save has landed, for at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Unsaved> {
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let drained = self.inner.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if lock(&self.inner.state).pending() == 0 {
                    return;
                }
                drained.await;
            }
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(_) => Err(Unsaved(lock(&self.inner.state).pending())),
        }
    }

    /// Lands what is queued (for at most `timeout`) and stops the task. From then on
    /// [`SaveWriter::save`] refuses; the error counts what did not land.
    pub async fn close(&self, timeout: Duration) -> Result<(), Unsaved> {
        let _ = self.flush(timeout).await;
        let unsaved = {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            state.pending()
        };
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            task.abort(); // it may be sleeping in a retry; what it held is counted above
            let _ = task.await;
        }
        if unsaved > 0 {
            error!(unsaved, "save writer closed with saves not landed");
            return Err(Unsaved(unsaved));
        }
        info!(
            saved = self.inner.saved.load(Relaxed),
            "save writer flushed"
        );
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A store call under the timeout; a store that panics is treated like one that fails.
async fn guarded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Err(_) => Err(StoreError::Timeout(timeout)),
        Ok(Err(_)) => Err(StoreError::Other("the store panicked".into())),
        Ok(Ok(result)) => result,
    }
}

/// The pause between failed attempts: doubling from [`MIN_BACKOFF`] to [`MAX_BACKOFF`],
/// back to the start once something lands.
struct Backoff(Duration);

impl Backoff {
    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

async fn run<S: Store>(inner: Arc<Inner<S>>) {
    let mut backoff = Backoff(MIN_BACKOFF);
    // The keys of a failed batch, in halves, to retry before anything newer.
    let mut retry: VecDeque<Vec<String>> = VecDeque::new();
    loop {
        let wake = inner.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        let letter = {
            let mut state = lock(&inner.state);
            let key = state.letters.keys().next().cloned();
            key.and_then(|key| state.letters.remove(&key))
        };
        if let Some(letter) = letter {
            if !inner.write_letter(letter).await {
                backoff.wait().await;
            }
            continue;
        }

        let keys = retry.pop_front().unwrap_or_else(|| inner.oldest());
        let writes = inner.writes(&keys);
        if writes.is_empty() {
            if retry.is_empty() {
                inner.drained.notify_waiters();
                wake.await;
            }
            continue;
        }
        let outcomes = guarded(inner.config.call_timeout, inner.store.save_batch(&writes))
            .await
            .and_then(|outcomes| {
                if outcomes.len() == writes.len() {
                    Ok(outcomes)
                } else {
                    Err(StoreError::Other(format!(
                        "the store answered {} outcomes for {} writes",
                        outcomes.len(),
                        writes.len()
                    )))
                }
            });
        match outcomes {
            Ok(outcomes) => {
                backoff.reset();
                for (write, stored, data) in inner.settle(&writes, &outcomes) {
                    if !inner.own_or_lost(&write, stored, data).await {
                        backoff.wait().await;
                    }
                }
            }
            Err(e) => {
                inner.failed_attempts.fetch_add(1, Relaxed);
                inner.unconfirmed(&writes);
                if writes.len() > 1 {
                    // Find the record that fails (if one does) by halving the batch.
                    warn!(records = writes.len(), error = %e, "saving a batch failed; retrying it in halves");
                    let mut keys: Vec<String> = writes.into_iter().map(|w| w.record.key).collect();
                    let second = keys.split_off(keys.len() / 2);
                    retry.push_front(second);
                    retry.push_front(keys);
                    continue;
                }
                let write = &writes[0];
                if inner.give_up_on(write, &e).await {
                    backoff.reset();
                    continue;
                }
                warn!(key = %write.record.key, error = %e, retry_in = ?backoff.0, "saving failed; will retry");
                retry.push_front(keys);
                backoff.wait().await;
            }
        }
    }
}

impl<S: Store> Inner<S> {
    /// The keys queued longest, a batch of them.
    fn oldest(&self) -> Vec<String> {
        lock(&self.state)
            .order
            .values()
            .take(BATCH)
            .cloned()
            .collect()
    }

    /// What is queued now for `keys` (a key whose state landed meanwhile is skipped).
    fn writes(&self, keys: &[String]) -> Vec<Write> {
        let state = lock(&self.state);
        keys.iter()
            .filter_map(|key| {
                let queued = state.queued.get(key)?;
                Some(Write {
                    record: Record {
                        key: key.clone(),
                        version: queued.version,
                        data: queued.data.clone(),
                    },
                    expected: queued.expected,
                })
            })
            .collect()
    }

    /// A batch went through: each write landed or lost a conflict. Returns the
    /// conflicts with a version this writer itself sent in a call that failed (with
    /// that version's data): those may be its own write, to be checked.
    fn settle(&self, writes: &[Write], outcomes: &[Outcome]) -> Vec<(Write, u64, Bytes)> {
        let mut state = lock(&self.state);
        let mut maybe_own = Vec::new();
        let mut lost = Vec::new();
        for (write, outcome) in writes.iter().zip(outcomes) {
            let record = &write.record;
            match *outcome {
                Outcome::Applied => {
                    state.landed(&record.key, record.version);
                    self.saved.fetch_add(1, Relaxed);
                }
                Outcome::Conflict { stored } => {
                    let sent = state.queued.get(&record.key).and_then(|queued| {
                        queued
                            .unconfirmed
                            .iter()
                            .find(|(version, _)| *version == stored)
                    });
                    match sent {
                        Some((_, data)) => maybe_own.push((write.clone(), stored, data.clone())),
                        None => lost.extend(self.lose(&mut state, write, stored)),
                    }
                }
            }
        }
        drop(state);
        for fence in lost {
            fence.end(Ended::Lost);
        }
        maybe_own
    }

    /// `write` lost to the stored version `stored`: the stored state wins, this one
    /// becomes a dead letter. Returns the fence of the slot that lost, to be ended
    /// once the lock is released.
    #[must_use]
    fn lose(&self, state: &mut State, write: &Write, stored: u64) -> Option<Arc<Fence>> {
        let record = &write.record;
        let fence = state.queued.get(&record.key).map(|q| q.fence.clone());
        // A newer save of the same session builds on this losing one: it stays
        // queued, and will lose too.
        state.settle(&record.key, record.version);
        self.conflicts.fetch_add(1, Relaxed);
        warn!(
            key = %record.key,
            built_on = write.expected,
            version = record.version,
            stored,
            "save conflict: the stored state wins; this one is kept as a dead letter"
        );
        let letter = DeadLetter {
            record: record.clone(),
            reason: DeadReason::Conflict,
            detail: format!(
                "built on version {}; the database held version {stored}",
                write.expected
            ),
        };
        state.letters.insert(record.key.clone(), letter);
        fence
    }

    /// Remembers what a failed call carried: it may have committed.
    fn unconfirmed(&self, writes: &[Write]) {
        let mut state = lock(&self.state);
        for write in writes {
            let Some(queued) = state.queued.get_mut(&write.record.key) else {
                continue;
            };
            let version = write.record.version;
            if queued.unconfirmed.iter().any(|(v, _)| *v == version) {
                continue;
            }
            if queued.unconfirmed.len() == UNCONFIRMED {
                queued.unconfirmed.pop_front();
            }
            queued
                .unconfirmed
                .push_back((version, write.record.data.clone()));
        }
    }

    /// `write` conflicted with `stored`, a version this writer sent (with `data`) in
    /// a call that failed. If the stored record is that very write, it did commit:
    /// the queued state builds on it and is written again. If it is not, the
    /// conflict is real. If the record cannot be read now, nothing is decided: the
    /// state stays queued and the next attempt asks again (false: after a pause).
    async fn own_or_lost(&self, write: &Write, stored: u64, data: Bytes) -> bool {
        let key = &write.record.key;
        match guarded(self.config.call_timeout, self.store.load(key)).await {
            Ok(Some(record)) if record.version == stored && record.data == data => {
                let mut state = lock(&self.state);
                if let Some(queued) = state.queued.get_mut(key) {
                    queued.expected = stored;
                    queued.unconfirmed.clear();
                    queued.fence.landed(stored);
                }
                self.saved.fetch_add(1, Relaxed);
                info!(key = %key, version = stored, "a save whose acknowledgement was lost had landed; the newer one builds on it");
                true
            }
            Ok(_) => {
                let lost = self.lose(&mut lock(&self.state), write, stored);
                if let Some(fence) = lost {
                    fence.end(Ended::Lost);
                }
                true
            }
            Err(e) => {
                self.failed_attempts.fetch_add(1, Relaxed);
                warn!(key = %key, error = %e, "cannot read back a possibly landed save; will retry");
                false
            }
        }
    }

    /// Writes a dead letter; one that cannot be written goes back to be tried again
    /// (unless a newer one of its key arrived meanwhile).
    async fn write_letter(&self, letter: DeadLetter) -> bool {
        match self.dead_letter(&letter).await {
            Ok(()) => true,
            Err(e) => {
                self.failed_attempts.fetch_add(1, Relaxed);
                warn!(key = %letter.record.key, error = %e, "writing a dead letter failed; will retry");
                let mut state = lock(&self.state);
                let key = letter.record.key.clone();
                state.letters.entry(key).or_insert(letter);
                false
            }
        }
    }

    /// Writes one dead letter under the call timeout, and counts it if it landed.
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        guarded(self.config.call_timeout, self.store.dead_letter(letter)).await?;
        self.dead_letters.fetch_add(1, Relaxed);
        Ok(())
    }

    /// A record failed alone: counts the attempt and, after `max_attempts`, moves it
    /// to the dead letters if the database takes them. True if it left the queue. A
    /// database that could not be reached refused nothing: that is not counted.
    async fn give_up_on(&self, write: &Write, e: &StoreError) -> bool {
        if e.is_unreachable() {
            return false;
        }
        let record = &write.record;
        let attempts = {
            let mut state = lock(&self.state);
            let Some(queued) = state.queued.get_mut(&record.key) else {
                return true;
            };
            queued.attempts += 1;
            queued.attempts
        };
        if attempts < self.config.max_attempts {
            return false;
        }
        let letter = DeadLetter {
            record: record.clone(),
            reason: DeadReason::Failed,
            detail: e.to_string(),
        };
        // If the dead letter cannot be written either, the database is down rather
        // than refusing this record: it stays queued.
        if self.dead_letter(&letter).await.is_err() {
            return false;
        }
        error!(
            key = %record.key,
            version = record.version,
            attempts,
            error = %e,
            "the database keeps refusing this save; it was written to the dead letters"
        );
        let fence = {
            let mut state = lock(&self.state);
            let fence = state.queued.get(&record.key).map(|q| q.fence.clone());
            state.settle(&record.key, record.version);
            fence
        };
        if let Some(fence) = fence {
            fence.end(Ended::Refused);
        }
        true
    }
}
