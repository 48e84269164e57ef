//! [`NatsLink`]: the connection to NATS and the [`ClusterLink`] calls over it
//! (publish, subscribe, request; the key-value calls go to [`crate::kv`]).

use std::future::Future;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use gatehouse::cluster::{ClusterLink, KvChange, LinkError, LinkFuture, LinkMessage, LinkStream};
use tokio::sync::watch;

use crate::kv::Buckets;

/// How often the client pings the server. A server that stops answering (hung, or
/// cut off without a reset) is noticed after two unanswered pings: short, so that
/// `connected()` turns false well within the runtime's `dead_after` (6 s by default)
/// and the node declares nobody dead over a link that is not there.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long [`NatsLink::round_trip`] waits; the runtime's own deadline on the call
/// is usually shorter.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// One node's link to a NATS server (or cluster of servers), for
/// [`Server::with_cluster`](gatehouse::Server::with_cluster).
///
/// Made whether or not NATS is up; it connects in the background, reconnects
/// forever, and every call fails with [`LinkError::Disconnected`] while it is not
/// connected. The connection is named after the node (as `nats server report
/// connections` shows it) and is made with `no_echo`: a node never hears what it
/// publishes itself.
pub struct NatsLink {
    client: Client,
    buckets: Buckets,
}

impl NatsLink {
    /// A link for the node `node_name` to the NATS server at `url`
    /// (`nats://host:port`, or several separated by commas).
    ///
    /// Returns at once, connected or not: it fails only when `url` cannot be
    /// parsed. Needs a Tokio runtime (the connection runs in tasks of its own).
    pub async fn connect(url: &str, node_name: &str) -> Result<NatsLink, LinkError> {
        let (losses, lost) = watch::channel(0_u64);
        let client = ConnectOptions::new()
            .name(node_name)
            .no_echo()
            // The node serves alone until NATS comes; then it joins.
            .retry_on_initial_connect()
            .max_reconnects(None)
            .ping_interval(PING_INTERVAL)
            .event_callback(move |event| {
                if event == Event::Disconnected {
                    losses.send_modify(|n| *n += 1);
                }
                async {}
            })
            .connect(url)
            .await
            .map_err(|e| LinkError::Other(format!("cannot use NATS at {url}: {e}")))?;
        let buckets = Buckets::new(async_nats::jetstream::new(client.clone()), lost);
        Ok(NatsLink { client, buckets })
    }

    /// The NATS client underneath (to look at its statistics or server info).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Returns once the server has read everything this link sent before (the
    /// client's `flush` only writes to the socket).
    ///
    /// A request to a fresh inbox nobody subscribes to: the server reads a
    /// connection's messages in order and answers this one at once with "no
    /// responders". `subscribe` waits for it, so that a message another node
    /// publishes once `subscribe` returned is heard, as with the in-process bus.
    async fn round_trip(&self) -> Result<(), LinkError> {
        let probe = async_nats::Request::new().timeout(Some(ROUND_TRIP_TIMEOUT));
        match self
            .client
            .send_request(self.client.new_inbox(), probe)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                RequestErrorKind::NoResponders => Ok(()),
                RequestErrorKind::TimedOut => Err(LinkError::TimedOut),
                _ => Err(other("subscribe", e)),
            },
        }
    }

    /// Runs one call: at once [`LinkError::Disconnected`] when not connected (not
    /// queued for later, as the client would: the runtime counts it as dropped,
    /// and the other nodes resynchronise from the buckets), and so too when it
    /// failed because the connection went meanwhile.
    async fn call<T>(
        &self,
        work: impl Future<Output = Result<T, LinkError>>,
    ) -> Result<T, LinkError> {
        if !self.connected() {
            return Err(LinkError::Disconnected);
        }
        match work.await {
            Err(LinkError::Other(_)) if !self.connected() => Err(LinkError::Disconnected),
            done => done,
        }
    }
}

impl std::fmt::Debug for NatsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLink")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

/// Why a call failed, for [`LinkError::Other`]: what was done, and NATS' words.
pub(crate) fn other(what: &str, error: impl std::fmt::Display) -> LinkError {
    LinkError::Other(format!("{what}: {error}"))
}

impl ClusterLink for NatsLink {
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn publish(&self, subject: String, payload: Bytes) -> LinkFuture<'_, ()> {
        Box::pin(self.call(async move {
            self.client
                .publish(subject, payload)
                .await
                .map_err(|e| other("publish", e))
        }))
    }

    fn subscribe(&self, subject: String) -> LinkFuture<'_, LinkStream<LinkMessage>> {
        Box::pin(self.call(async move {
            let subscriber = self
                .client
                .subscribe(subject)
                .await
                .map_err(|e| other("subscribe", e))?;
            self.round_trip().await?;
            // The client resubscribes by itself after a reconnect, so the stream ends
            // only when the client closes; dropping it drops the `Subscriber`, which
            // unsubscribes.
            let messages = subscriber.map(|message| LinkMessage {
                subject: message.subject.to_string(),
                payload: message.payload,
                reply: message.reply.map(|reply| reply.to_string()),
            });
            Ok(Box::pin(messages) as LinkStream<LinkMessage>)
        }))
    }

    fn request(&self, subject: String, payload: Bytes, timeout: Duration) -> LinkFuture<'_, Bytes> {
        Box::pin(self.call(async move {
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            // The server answers a request nobody subscribes to with a 503 status at
            // once (the client announces `no_responders` when it connects), and the
            // client reports it as NoResponders. With `no_echo`, a subject only this
            // node subscribes to has nobody either.
            match self.client.send_request(subject, request).await {
                Ok(answer) => Ok(answer.payload),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::NoResponders => LinkError::NoResponders,
                    RequestErrorKind::TimedOut => LinkError::TimedOut,
                    _ => other("request", e),
                }),
            }
        }))
    }

    fn kv_put(&self, bucket: &'static str, key: String, value: Bytes) -> LinkFuture<'_, u64> {
        Box::pin(self.call(self.buckets.put(bucket, key, value)))
    }

    fn kv_put_if(
        &self,
        bucket: &'static str,
        key: String,
        value: Bytes,
        expected: Option<u64>,
    ) -> LinkFuture<'_, u64> {
        Box::pin(self.call(self.buckets.put_if(bucket, key, value, expected)))
    }

    fn kv_get(&self, bucket: &'static str, key: String) -> LinkFuture<'_, Option<(Bytes, u64)>> {
        Box::pin(self.call(self.buckets.get(bucket, key)))
    }

    fn kv_delete(
        &self,
        bucket: &'static str,
        key: String,
        if_revision: Option<u64>,
    ) -> LinkFuture<'_, ()> {
        Box::pin(self.call(self.buckets.delete(bucket, key, if_revision)))
    }

    fn kv_watch(&self, bucket: &'static str) -> LinkFuture<'_, LinkStream<KvChange>> {
        Box::pin(self.call(self.buckets.watch(bucket)))
    }
}
