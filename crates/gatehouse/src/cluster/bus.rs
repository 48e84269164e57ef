//! [`LocalBus`]: a cluster inside one process, for tests. Several servers in one
//! test, each with a [`LocalLink`] of the same bus, are nodes of one cluster with no
//! NATS: subjects, requests and buckets behave as the NATS link's do (a publisher
//! never hears itself; a request nobody subscribes to fails at once; a watch starts
//! with every key), and a link can be cut off and reconnected.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use tokio::sync::mpsc;

use super::{ClusterLink, KvChange, LinkError, LinkFuture, LinkMessage, LinkStream};

/// How many messages a subscription or a watch holds for a slow reader; past it a
/// subscription drops (as NATS drops for a slow consumer) and a watch ends (its
/// reader watches again and gets every key).
const QUEUE: usize = 4096;

/// One in-process cluster; [`LocalBus::link`] makes a node's link to it.
#[derive(Clone, Default)]
pub struct LocalBus {
    state: Arc<Mutex<BusState>>,
}

#[derive(Default)]
struct BusState {
    next_member: u64,
    next_inbox: u64,
    subscriptions: Vec<Subscription>,
    buckets: HashMap<&'static str, Bucket>,
}

struct Subscription {
    member: u64,
    subject: String,
    tx: mpsc::Sender<LinkMessage>,
}

#[derive(Default)]
struct Bucket {
    revision: u64,
    keys: BTreeMap<String, (Bytes, u64)>,
    watchers: Vec<(u64, mpsc::Sender<KvChange>)>,
}

/// One node's link to a [`LocalBus`].
pub struct LocalLink {
    bus: LocalBus,
    member: u64,
    connected: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    carried: Arc<AtomicU64>,
}

impl LocalBus {
    /// An empty cluster.
    pub fn new() -> Self {
        LocalBus::default()
    }

    fn state(&self) -> MutexGuard<'_, BusState> {
        // Nothing that can panic runs under this lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many nodes listen to `group`'s broadcasts now (those with a member).
    pub fn group_listeners(&self, group: &str) -> usize {
        let subject = super::wire::group_subject(group);
        let mut state = self.state();
        state.subscriptions.retain(|s| !s.tx.is_closed());
        state
            .subscriptions
            .iter()
            .filter(|s| s.subject == subject)
            .count()
    }

    /// Publishes `payload` on the subject every node listens to, as a node that is
    /// not one of the cluster's (a test's forged message).
    pub fn publish_to_all(&self, payload: Bytes) {
        let stranger = self.link();
        stranger.deliver(super::wire::ALL_SUBJECT, payload, None);
    }

    /// A new node's link, connected.
    pub fn link(&self) -> LocalLink {
        let member = {
            let mut state = self.state();
            state.next_member += 1;
            state.next_member
        };
        LocalLink {
            bus: self.clone(),
            member,
            connected: Arc::new(AtomicBool::new(true)),
            published: Arc::default(),
            carried: Arc::default(),
        }
    }
}

/// A switch on a [`LocalLink`], kept by a test after the link went to its server.
#[derive(Clone)]
pub struct LinkSwitch {
    bus: LocalBus,
    member: u64,
    connected: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    carried: Arc<AtomicU64>,
}

impl LinkSwitch {
    /// Cuts the node off (`false`: its subscriptions and watches end, every call
    /// fails) or connects it again.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Relaxed);
        if !connected {
            let mut state = self.bus.state();
            state.subscriptions.retain(|s| s.member != self.member);
            for bucket in state.buckets.values_mut() {
                bucket.watchers.retain(|(member, _)| *member != self.member);
            }
        }
    }

    /// Messages the node published (requests and answers included).
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }

    /// The cluster messages those carried: a batch counts as its messages.
    pub fn carried(&self) -> u64 {
        self.carried.load(Relaxed)
    }
}

impl LocalLink {
    /// A switch to cut this link off and connect it again.
    pub fn switch(&self) -> LinkSwitch {
        LinkSwitch {
            bus: self.bus.clone(),
            member: self.member,
            connected: self.connected.clone(),
            published: self.published.clone(),
            carried: self.carried.clone(),
        }
    }

    fn check(&self) -> Result<(), LinkError> {
        if self.connected.load(Relaxed) {
            Ok(())
        } else {
            Err(LinkError::Disconnected)
        }
    }

    /// Delivers to every subscriber of `subject` but this member; how many got it.
    fn deliver(&self, subject: &str, payload: Bytes, reply: Option<String>) -> usize {
        self.published.fetch_add(1, Relaxed);
        let carried = super::wire::unbatch(payload.clone()).map_or(1, |parts| parts.len());
        self.carried.fetch_add(carried as u64, Relaxed);
        let mut state = self.bus.state();
        state.subscriptions.retain(|s| !s.tx.is_closed());
        let mut delivered = 0;
        for sub in &state.subscriptions {
            if sub.subject == subject && sub.member != self.member {
                let message = LinkMessage {
                    subject: subject.to_owned(),
                    payload: payload.clone(),
                    reply: reply.clone(),
                };
                // A full subscriber misses it, as a slow NATS consumer does.
                let _ = sub.tx.try_send(message);
                delivered += 1;
            }
        }
        delivered
    }

    fn subscribe_now(&self, subject: String, member: u64) -> mpsc::Receiver<LinkMessage> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.bus.state().subscriptions.push(Subscription {
            member,
            subject,
            tx,
        });
        rx
    }
}

fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> LinkStream<T> {
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

impl ClusterLink for LocalLink {
    fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    fn publish(&self, subject: String, payload: Bytes) -> LinkFuture<'_, ()> {
        Box::pin(async move {
            self.check()?;
            self.deliver(&subject, payload, None);
            Ok(())
        })
    }

    fn subscribe(&self, subject: String) -> LinkFuture<'_, LinkStream<LinkMessage>> {
        Box::pin(async move {
            self.check()?;
            Ok(receiver_stream(self.subscribe_now(subject, self.member)))
        })
    }

    fn request(&self, subject: String, payload: Bytes, timeout: Duration) -> LinkFuture<'_, Bytes> {
        Box::pin(async move {
            self.check()?;
            let inbox = {
                let mut state = self.bus.state();
                state.next_inbox += 1;
                format!("_INBOX.{}", state.next_inbox)
            };
            // The answer comes from another member; its own member id (0) hears it.
            let mut answers = self.subscribe_now(inbox.clone(), 0);
            if self.deliver(&subject, payload, Some(inbox)) == 0 {
                return Err(LinkError::NoResponders);
            }
            match tokio::time::timeout(timeout, answers.recv()).await {
                Ok(Some(answer)) => Ok(answer.payload),
                Ok(None) => Err(LinkError::Disconnected),
                Err(_) => Err(LinkError::TimedOut),
            }
        })
    }

    fn kv_put(&self, bucket: &'static str, key: String, value: Bytes) -> LinkFuture<'_, u64> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.bus.state();
            Ok(state.buckets.entry(bucket).or_default().set(key, value))
        })
    }

    fn kv_put_if(
        &self,
        bucket: &'static str,
        key: String,
        value: Bytes,
        expected: Option<u64>,
    ) -> LinkFuture<'_, u64> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.bus.state();
            let bucket = state.buckets.entry(bucket).or_default();
            let latest = bucket.keys.get(&key).map(|(_, revision)| *revision);
            if latest != expected {
                return Err(LinkError::Conflict);
            }
            Ok(bucket.set(key, value))
        })
    }

    fn kv_get(&self, bucket: &'static str, key: String) -> LinkFuture<'_, Option<(Bytes, u64)>> {
        Box::pin(async move {
            self.check()?;
            let state = self.bus.state();
            Ok(state
                .buckets
                .get(bucket)
                .and_then(|bucket| bucket.keys.get(&key).cloned()))
        })
    }

    fn kv_delete(
        &self,
        bucket: &'static str,
        key: String,
        if_revision: Option<u64>,
    ) -> LinkFuture<'_, ()> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.bus.state();
            let bucket = state.buckets.entry(bucket).or_default();
            let latest = bucket.keys.get(&key).map(|(_, revision)| *revision);
            if if_revision.is_some() && if_revision != latest {
                return Err(LinkError::Conflict);
            }
            if bucket.keys.remove(&key).is_none() {
                return Ok(());
            }
            bucket.revision += 1;
            let revision = bucket.revision;
            bucket.notify(KvChange {
                key,
                value: None,
                revision,
            });
            Ok(())
        })
    }

    fn kv_watch(&self, bucket: &'static str) -> LinkFuture<'_, LinkStream<KvChange>> {
        Box::pin(async move {
            self.check()?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let mut state = self.bus.state();
            let bucket = state.buckets.entry(bucket).or_default();
            for (key, (value, revision)) in &bucket.keys {
                let change = KvChange {
                    key: key.clone(),
                    value: Some(value.clone()),
                    revision: *revision,
                };
                if tx.try_send(change).is_err() {
                    break; // more keys than a watch holds: it ends, and is made again
                }
            }
            bucket.watchers.push((self.member, tx));
            Ok(receiver_stream(rx))
        })
    }
}

impl Bucket {
    /// Sets `key` and tells the watchers; the change's revision.
    fn set(&mut self, key: String, value: Bytes) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        self.keys.insert(key.clone(), (value.clone(), revision));
        self.notify(KvChange {
            key,
            value: Some(value),
            revision,
        });
        revision
    }

    fn notify(&mut self, change: KvChange) {
        // A watcher that cannot take the change is ended (its reader watches again).
        self.watchers
            .retain(|(_, tx)| tx.try_send(change.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_publisher_does_not_hear_itself_and_others_do() {
        let bus = LocalBus::new();
        let (a, b) = (bus.link(), bus.link());
        let mut at_a = a.subscribe("s".into()).await.unwrap();
        let mut at_b = b.subscribe("s".into()).await.unwrap();
        a.publish("s".into(), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(at_b.next().await.unwrap().payload, Bytes::from_static(b"x"));
        b.publish("s".into(), Bytes::from_static(b"y"))
            .await
            .unwrap();
        assert_eq!(at_a.next().await.unwrap().payload, Bytes::from_static(b"y"));
    }

    #[tokio::test]
    async fn a_request_nobody_hears_fails_at_once_and_an_answer_comes_back() {
        let bus = LocalBus::new();
        let (a, b) = (bus.link(), bus.link());
        let long = Duration::from_secs(60);
        let refused = a.request("nobody".into(), Bytes::new(), long).await;
        assert_eq!(refused, Err(LinkError::NoResponders));
        let mut at_b = b.subscribe("b".into()).await.unwrap();
        let answering = tokio::spawn(async move {
            let request = at_b.next().await.unwrap();
            let reply = request.reply.unwrap();
            b.publish(reply, Bytes::from_static(b"yes")).await.unwrap();
        });
        let answer = a.request("b".into(), Bytes::new(), long).await;
        assert_eq!(answer, Ok(Bytes::from_static(b"yes")));
        answering.await.unwrap();
    }

    #[tokio::test]
    async fn a_watch_starts_with_every_key_and_a_conditional_delete_checks_the_revision() {
        let bus = LocalBus::new();
        let a = bus.link();
        let first = a
            .kv_put("b", "k".into(), Bytes::from_static(b"1"))
            .await
            .unwrap();
        let second = a
            .kv_put("b", "k".into(), Bytes::from_static(b"2"))
            .await
            .unwrap();
        assert!(second > first);
        let mut watch = a.kv_watch("b").await.unwrap();
        let now = watch.next().await.unwrap();
        assert_eq!(
            (now.value, now.revision),
            (Some(Bytes::from_static(b"2")), second)
        );
        let stale = a.kv_delete("b", "k".into(), Some(first)).await;
        assert_eq!(stale, Err(LinkError::Conflict));
        a.kv_delete("b", "k".into(), Some(second)).await.unwrap();
        assert_eq!(watch.next().await.unwrap().value, None);
    }

    #[tokio::test]
    async fn a_cut_off_link_fails_its_calls_and_loses_its_subscriptions() {
        let bus = LocalBus::new();
        let (a, b) = (bus.link(), bus.link());
        let mut at_a = a.subscribe("s".into()).await.unwrap();
        let switch = a.switch();
        switch.set_connected(false);
        assert!(!a.connected());
        assert!(at_a.next().await.is_none(), "the subscription ended");
        assert_eq!(
            a.publish("s".into(), Bytes::new()).await,
            Err(LinkError::Disconnected)
        );
        b.publish("s".into(), Bytes::new()).await.unwrap();
        switch.set_connected(true);
        assert!(a.subscribe("s".into()).await.is_ok());
    }
}
