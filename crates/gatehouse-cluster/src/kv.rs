//! The key-value side of [`NatsLink`](crate::NatsLink): JetStream KV buckets, made
//! on first use and kept open, and their puts (conditional ones too), gets, deletes
//! and watches.
//!
//! A bucket is a stream `KV_<bucket>` on subjects `$KV.<bucket>.>` keeping one
//! message per subject: a key's value, or the delete marker that replaced it. The
//! stream's sequence numbers are the revisions.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_nats::jetstream::context::{CreateStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{
    CreateErrorKind, EntryErrorKind, Operation, Store, UpdateErrorKind, Watch, WatchErrorKind,
};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures_util::{stream as streams, StreamExt};
use gatehouse::cluster::{KvChange, LinkError, LinkStream};
use tokio::sync::watch;
use tracing::debug;

use crate::link::other;

/// The buckets this link has opened, by name.
pub(crate) struct Buckets {
    jetstream: Context,
    open: Mutex<HashMap<&'static str, Store>>,
    /// How many times the connection was lost: a watch ends at the next loss.
    lost: watch::Receiver<u64>,
}

/// The stream of a bucket, as `nats kv add` would make it with history 1.
///
/// Made by hand rather than with `Context::create_key_value`: that first asks for
/// the account's JetStream details (`$JS.API.INFO`), and async-nats 0.52 cannot
/// parse nats-server 2.9's answer (Debian's), so it fails there. The stream itself
/// is the one `create_key_value` makes, and works on every server from 2.9 on.
fn bucket_stream(bucket: &str) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(format!("gatehouse cluster bucket {bucket}")),
        subjects: vec![format!("$KV.{bucket}.>")],
        // A key is its latest message: a value or a delete marker.
        max_messages_per_subject: 1,
        storage: StorageType::File,
        num_replicas: 1,
        discard: DiscardPolicy::New,
        allow_rollup: true,
        // Keys go by delete markers (which watches see), never by deleting
        // messages from the stream (which they would not).
        deny_delete: true,
        deny_purge: false,
        // Direct gets (2.9 and later): `Store::get` reads from any replica.
        allow_direct: true,
        ..Default::default()
    }
}

impl Buckets {
    pub(crate) fn new(jetstream: Context, lost: watch::Receiver<u64>) -> Buckets {
        Buckets {
            jetstream,
            open: Mutex::default(),
            lost,
        }
    }

    fn open(&self) -> MutexGuard<'_, HashMap<&'static str, Store>> {
        // Nothing that can panic runs under this lock.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `bucket`, made if it is not there yet.
    async fn bucket(&self, bucket: &'static str) -> Result<Store, LinkError> {
        if let Some(store) = self.open().get(bucket) {
            return Ok(store.clone());
        }
        // Two calls may both get here: making the stream is idempotent (same
        // config), so both succeed and one's store is kept.
        self.jetstream
            .get_or_create_stream(bucket_stream(bucket))
            .await
            .map_err(|e| match e.kind() {
                CreateStreamErrorKind::TimedOut => LinkError::TimedOut,
                _ => other(&format!("cannot make the bucket {bucket}"), e),
            })?;
        let store = self
            .jetstream
            .get_key_value(bucket)
            .await
            .map_err(|e| other(&format!("cannot open the bucket {bucket}"), e))?;
        self.open().insert(bucket, store.clone());
        Ok(store)
    }

    /// After a failure other than a conflict or a timeout, the bucket is looked up
    /// (and made) again on the next call: a server that lost its store (a new one,
    /// or its directory wiped) has no stream any more.
    fn forget_on(&self, bucket: &'static str, error: LinkError) -> LinkError {
        if !matches!(error, LinkError::Conflict | LinkError::TimedOut) {
            self.open().remove(bucket);
        }
        error
    }

    pub(crate) async fn put(
        &self,
        bucket: &'static str,
        key: String,
        value: Bytes,
    ) -> Result<u64, LinkError> {
        let store = self.bucket(bucket).await?;
        store.put(&key, value).await.map_err(|e| {
            // The kind says only publish or ack; what went wrong is underneath.
            let error = match publish_kind(&e) {
                Some(PublishErrorKind::TimedOut) => LinkError::TimedOut,
                _ => other(&format!("put to {bucket}"), e),
            };
            self.forget_on(bucket, error)
        })
    }

    pub(crate) async fn put_if(
        &self,
        bucket: &'static str,
        key: String,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, LinkError> {
        let store = self.bucket(bucket).await?;
        let timed_out = |e: &(dyn StdError + 'static)| {
            matches!(publish_kind(e), Some(PublishErrorKind::TimedOut))
        };
        match expected {
            // `create` also takes a key whose latest change is a delete marker.
            None => store.create(&key, value).await.map_err(|e| {
                let error = match e.kind() {
                    CreateErrorKind::AlreadyExists => LinkError::Conflict,
                    _ if timed_out(&e) => LinkError::TimedOut,
                    _ => other(&format!("create in {bucket}"), e),
                };
                self.forget_on(bucket, error)
            }),
            Some(revision) => store.update(&key, value, revision).await.map_err(|e| {
                let error = match e.kind() {
                    UpdateErrorKind::WrongLastRevision => LinkError::Conflict,
                    UpdateErrorKind::TimedOut => LinkError::TimedOut,
                    _ => other(&format!("update in {bucket}"), e),
                };
                self.forget_on(bucket, error)
            }),
        }
    }

    pub(crate) async fn get(
        &self,
        bucket: &'static str,
        key: String,
    ) -> Result<Option<(Bytes, u64)>, LinkError> {
        let store = self.bucket(bucket).await?;
        let entry = store.entry(key).await.map_err(|e| {
            let error = match e.kind() {
                EntryErrorKind::TimedOut => LinkError::TimedOut,
                _ => other(&format!("get from {bucket}"), e),
            };
            self.forget_on(bucket, error)
        })?;
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .map(|entry| (entry.value, entry.revision)))
    }

    pub(crate) async fn delete(
        &self,
        bucket: &'static str,
        key: String,
        if_revision: Option<u64>,
    ) -> Result<(), LinkError> {
        let store = self.bucket(bucket).await?;
        // With a revision, the server checks it is the subject's last sequence (the
        // key's latest change, a delete marker included) and refuses otherwise.
        store
            .delete_expect_revision(&key, if_revision)
            .await
            .map_err(|e| {
                let error = match e.kind() {
                    UpdateErrorKind::WrongLastRevision => LinkError::Conflict,
                    UpdateErrorKind::TimedOut => LinkError::TimedOut,
                    _ => other(&format!("delete from {bucket}"), e),
                };
                self.forget_on(bucket, error)
            })
    }

    pub(crate) async fn watch(
        &self,
        bucket: &'static str,
    ) -> Result<LinkStream<KvChange>, LinkError> {
        // Marked seen before the consumer is made: a loss while it is made ends the
        // watch at once.
        let mut lost = self.lost.clone();
        lost.mark_unchanged();
        let store = self.bucket(bucket).await?;
        // "With history": the consumer starts with the last message of every key
        // (values and delete markers alike), then follows every new one.
        let watch = store.watch_with_history(">").await.map_err(|e| {
            let error = match e.kind() {
                WatchErrorKind::TimedOut => LinkError::TimedOut,
                _ => other(&format!("watch {bucket}"), e),
            };
            self.forget_on(bucket, error)
        })?;
        Ok(changes(bucket, watch, lost))
    }
}

/// The kind of the JetStream publish error somewhere under `error`, if any.
fn publish_kind(error: &(dyn StdError + 'static)) -> Option<PublishErrorKind> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(publish) = error.downcast_ref::<PublishError>() {
            return Some(publish.kind());
        }
        cause = error.source();
    }
    None
}

/// A watch as [`KvChange`]s: every key that has a value now, then every change.
struct Changes {
    bucket: &'static str,
    watch: Watch,
    /// Ends the watch when the connection is lost (or the link dropped). The
    /// server's consumer may not outlive the loss (a restarted server has none), and
    /// the client's ordered consumer notices that only after missing its heartbeats
    /// for many seconds; meanwhile the node would hear no other node's heartbeat.
    /// Ended at once, the runtime watches again as soon as the link is back, and
    /// gets every key's latest value.
    lost: watch::Receiver<u64>,
    catch_up: CatchUp,
}

fn changes(bucket: &'static str, watch: Watch, lost: watch::Receiver<u64>) -> LinkStream<KvChange> {
    let state = Changes {
        bucket,
        watch,
        lost,
        catch_up: CatchUp::default(),
    };
    Box::pin(streams::unfold(state, |mut state| async move {
        let change = state.next_change().await?;
        Some((change, state))
    }))
}

impl Changes {
    /// The next change to give; `None` ends the stream: the watch ended or failed
    /// (the runtime watches again, and starts over with every key).
    async fn next_change(&mut self) -> Option<KvChange> {
        loop {
            let next = tokio::select! {
                next = self.watch.next() => next?,
                _ = self.lost.changed() => {
                    debug!(bucket = self.bucket, "cluster: NATS connection lost; ending a watch");
                    return None;
                }
            };
            let entry = match next {
                Ok(entry) => entry,
                Err(e) => {
                    debug!(bucket = self.bucket, error = %e, "cluster: a NATS watch failed; ending it");
                    return None;
                }
            };
            let value = match entry.operation {
                Operation::Put => Some(entry.value),
                Operation::Delete | Operation::Purge => None,
            };
            // `seen_current`: nothing was pending after this entry when it came.
            if self
                .catch_up
                .admit(&entry.key, value.is_some(), entry.seen_current)
            {
                return Some(KvChange {
                    key: entry.key,
                    value,
                    revision: entry.revision,
                });
            }
        }
    }
}

/// Which entries a watch gives while it catches up with the bucket.
///
/// The consumer starts with every key's last message, delete markers included (a
/// bucket keeps one per deleted key), and the trait wants only the keys that have a
/// value. So until the watch has caught up, a delete marker is given only if it
/// deletes a key given before it (one deleted while the watch catches up); after,
/// every entry is.
#[derive(Debug)]
struct CatchUp {
    /// The keys given a value so far; `None` once caught up.
    given: Option<HashSet<String>>,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp {
            given: Some(HashSet::new()),
        }
    }
}

impl CatchUp {
    /// Whether to give the entry of `key` (a value, or a delete marker); `last`:
    /// it is the last of the bucket as the watch found it.
    fn admit(&mut self, key: &str, has_value: bool, last: bool) -> bool {
        let Some(given) = &mut self.given else {
            return true;
        };
        let admit = if has_value {
            given.insert(key.to_owned());
            true
        } else {
            given.remove(key)
        };
        if last {
            self.given = None;
        }
        admit
    }
}

#[cfg(test)]
mod tests {
    use super::CatchUp;

    #[test]
    fn catching_up_leaves_out_the_markers_of_keys_it_never_gave() {
        let mut catch_up = CatchUp::default();
        assert!(catch_up.admit("a", true, false));
        assert!(!catch_up.admit("gone", false, false), "deleted before");
        assert!(catch_up.admit("b", true, false));
        assert!(
            catch_up.admit("a", false, false),
            "deleted while catching up"
        );
        assert!(
            !catch_up.admit("a", false, true),
            "already given as deleted"
        );
        // Caught up: every change, deletes of unknown keys included.
        assert!(catch_up.admit("never", false, false));
        assert!(catch_up.admit("b", false, false));
        assert!(catch_up.admit("c", true, false));
    }

    #[test]
    fn a_watch_of_an_empty_bucket_is_caught_up_with_its_first_entry() {
        let mut catch_up = CatchUp::default();
        // The first entry is already current: the bucket was empty.
        assert!(!catch_up.admit("x", false, true));
        assert!(catch_up.admit("x", false, false));
    }
}
