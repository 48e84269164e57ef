//! One game across several gatehouse processes (nodes): the seam between the
//! runtime and whatever carries messages between nodes.
//!
//! The runtime keeps the cluster's logic: what crosses to other nodes and how it is
//! encoded (`wire`), which nodes are alive (heartbeats and local timers), who owns
//! which player (a key per player, the newest login wins), which groups this node
//! listens to (the cluster task, `cluster_task`, which sits above the hub and the
//! handle it delivers to). A [`ClusterLink`] only carries bytes: publish and subscribe
//! on subjects, requests with a deadline, and a key-value store with revisions and
//! watches. `gatehouse-cluster` implements it over NATS (JetStream KV); [`LocalBus`]
//! implements it in one process, for tests. Without a link (no
//! [`Server::with_cluster`](crate::Server::with_cluster)) the server is one node and
//! none of this runs: a handle call pays one branch.
//!
//! The hub and the connections never wait on a link: what a handle call sends to
//! other nodes goes into a bounded outbox (`node`), dropped and counted when it is
//! full or the link is down; one task (`cluster_task`, in the supervision tree
//! beside the hub) drains it, and hands what other nodes send to the hub.

mod bus;
mod config;
pub(crate) mod node;
pub(crate) mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

pub use bus::{LinkSwitch, LocalBus, LocalLink};
pub use config::ClusterConfig;
pub use node::{ClusterCounts, ClusterStats, Located, NodeCounts};
pub(crate) use node::{ClusterNode, SharedKind, Target};

/// A future a [`ClusterLink`] returns.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LinkError>> + Send + 'a>>;

/// A stream a [`ClusterLink`] returns; it ends when the link loses what feeds it (a
/// subscription or a watch), and the runtime makes it again.
pub type LinkStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// A message another node published on a subject this node subscribed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMessage {
    /// The subject it was published on.
    pub subject: String,
    /// What it carries.
    pub payload: Bytes,
    /// Where to answer, if it is a request.
    pub reply: Option<String>,
}

/// A change of one key of a key-value bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The key.
    pub key: String,
    /// Its new value; `None`: deleted.
    pub value: Option<Bytes>,
    /// The bucket's revision of this change (increasing across the bucket's keys).
    pub revision: u64,
}

/// Why a [`ClusterLink`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link is not connected.
    #[error("not connected to the cluster")]
    Disconnected,
    /// Nobody subscribes to the subject a request went to (a node that is gone).
    #[error("no node answers on that subject")]
    NoResponders,
    /// The call took longer than its deadline.
    #[error("timed out")]
    TimedOut,
    /// A delete that expected a revision found another one.
    #[error("the key has another revision")]
    Conflict,
    /// Anything else the link reports.
    #[error("{0}")]
    Other(String),
}

/// What carries the cluster's messages: subjects to publish and subscribe to,
/// requests, and key-value buckets with revisions and watches (NATS' model).
///
/// Implementations must not block; every call may take as long as the network
/// does (the runtime puts its own deadline, `cluster.request_timeout`, on each).
/// Subjects are dot-separated tokens of `[A-Za-z0-9_-]`; bucket names and keys are
/// `[A-Za-z0-9_-]` (the runtime encodes what is not). A message a node publishes
/// must not come back to its own subscriptions.
pub trait ClusterLink: Send + Sync + 'static {
    /// Whether the link is connected now (the runtime declares no node dead while it
    /// is not).
    fn connected(&self) -> bool;

    /// Publishes `payload` on `subject`.
    fn publish(&self, subject: String, payload: Bytes) -> LinkFuture<'_, ()>;

    /// Every message published on `subject` from now on, until the stream is
    /// dropped (which unsubscribes).
    fn subscribe(&self, subject: String) -> LinkFuture<'_, LinkStream<LinkMessage>>;

    /// Publishes `payload` on `subject` and waits at most `timeout` for one answer;
    /// [`LinkError::NoResponders`] at once when nobody subscribes to it.
    fn request(&self, subject: String, payload: Bytes, timeout: Duration) -> LinkFuture<'_, Bytes>;

    /// Sets `key` in `bucket` (made on first use) and returns the change's revision.
    fn kv_put(&self, bucket: &'static str, key: String, value: Bytes) -> LinkFuture<'_, u64>;

    /// Sets `key` in `bucket` only if it has no value now (`expected` is `None`) or
    /// `expected` is its latest revision; [`LinkError::Conflict`] otherwise. Returns
    /// the change's revision. What makes one node, of many asking at once, the one.
    fn kv_put_if(
        &self,
        bucket: &'static str,
        key: String,
        value: Bytes,
        expected: Option<u64>,
    ) -> LinkFuture<'_, u64>;

    /// The value of `key` in `bucket` now and its revision, if it has one.
    fn kv_get(&self, bucket: &'static str, key: String) -> LinkFuture<'_, Option<(Bytes, u64)>>;

    /// Deletes `key` from `bucket`; with `if_revision`, only if that is still the
    /// key's latest revision ([`LinkError::Conflict`] otherwise).
    fn kv_delete(
        &self,
        bucket: &'static str,
        key: String,
        if_revision: Option<u64>,
    ) -> LinkFuture<'_, ()>;

    /// Every key of `bucket` as it is now (one change per key, deleted ones left
    /// out), then every change from then on.
    fn kv_watch(&self, bucket: &'static str) -> LinkFuture<'_, LinkStream<KvChange>>;
}

/// How long a link call may take: `cluster.request_timeout`.
pub(crate) async fn within<T>(timeout: Duration, call: LinkFuture<'_, T>) -> Result<T, LinkError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(LinkError::TimedOut))
}
