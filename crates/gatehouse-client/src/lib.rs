//! An async client for gatehouse servers.
//!
//! [`Client::connect`] returns a [`Client`] (cheap to clone) and a [`Pushes`] stream.
//! Requests get ids and a timeout and may be issued concurrently from many tasks;
//! pushes arrive in order on the stream; a ping goes out every heartbeat interval so
//! the server's idle timer never fires on a quiet client; a kick from the server
//! ends the connection and surfaces as [`ClientError::Kicked`] with its reason, to
//! every waiting request and every later call.
//!
//! One background task owns the socket: it reads frames and routes responses to
//! their waiting requests, and writes what the handles queue (bounded; a full queue
//! makes callers wait).
//!
//! It speaks every transport a gatehouse server listens on ([`Target`]: TCP, TLS,
//! WebSocket, WebSocket over TLS; see `transport`). It depends on the protocol crate,
//! tokio, rustls and tungstenite: no server code comes with it.

mod transport;

pub use transport::{tls_config, Target};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gatehouse_protocol::{DecodeError, KickReason, Message, Status};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long a request waits for its response.
    pub request_timeout: Duration,
    /// How often a ping is sent (keep it well under the server's idle timeout).
    pub heartbeat: Duration,
    /// Largest frame accepted from the server (its `limits.max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// Pushes buffered for the application before the client stops reading.
    pub push_buffer: usize,
    /// TLS: trust only the certificates of this PEM file (a development certificate)
    /// instead of the system's roots.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            max_frame_bytes: gatehouse_protocol::DEFAULT_MAX_FRAME_LEN,
            push_buffer: 1024,
            tls_ca: None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Connecting or the socket failed.
    #[error("i/o: {0}")]
    Io(String),
    /// No response within `request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// The server answered with an error status (text: its explanation, if UTF-8).
    #[error("{status}: {text}")]
    Status {
        /// The status.
        status: Status,
        /// The response payload as text.
        text: String,
    },
    /// The server kicked this client.
    #[error("kicked ({reason}): {text}")]
    Kicked {
        /// Why.
        reason: KickReason,
        /// The server's explanation.
        text: String,
    },
    /// The server sent something this client cannot decode.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

/// A push from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The game's message id.
    pub route: u16,
    /// Its payload.
    pub payload: Bytes,
}

type Pending = HashMap<u32, oneshot::Sender<Result<Bytes, ClientError>>>;

struct Shared {
    pending: Mutex<Pending>,
    /// Why the connection ended, once it has.
    ended: Mutex<Option<ClientError>>,
    next_id: AtomicU32,
    config: ClientConfig,
    /// Cancelled when the connection ends, to stop the connection task.
    stop: CancellationToken,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self) -> Option<ClientError> {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records why the connection ended (the first reason wins) and fails every
    /// waiting request with it.
    fn end(&self, why: ClientError) {
        let why = {
            let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
            ended.get_or_insert(why).clone()
        };
        for (_, waiter) in self.pending().drain() {
            let _ = waiter.send(Err(why.clone()));
        }
        self.stop.cancel();
    }
}

/// A connected client; clones share the connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<Message>,
}

/// The pushes from the server, in order. Ends when the connection does; then
/// [`Client::ended`] says why.
pub struct Pushes {
    rx: mpsc::Receiver<Push>,
}

impl Pushes {
    /// The next push, or `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<Push> {
        self.rx.recv().await
    }
}

/// Frames the handles may queue for writing before callers wait.
const OUTBOX: usize = 1024;

impl Client {
    /// Connects to a gatehouse server over TCP.
    pub async fn connect(
        addr: SocketAddr,
        config: ClientConfig,
    ) -> Result<(Client, Pushes), ClientError> {
        Client::connect_to(&Target::Tcp(addr.to_string()), config).await
    }

    /// Connects to a gatehouse server over any transport (`"tls://host:7443"`,
    /// `"ws://host:7080/ws"`; see [`Target`]).
    pub async fn connect_to(
        target: &Target,
        config: ClientConfig,
    ) -> Result<(Client, Pushes), ClientError> {
        let (bodies, sink) = transport::open(target, &config).await?;
        Ok(Client::start(bodies, sink, config))
    }

    /// A client over a connected stream (for example one bound to a chosen source
    /// address, as a load generator does).
    pub fn from_stream(
        stream: TcpStream,
        config: ClientConfig,
    ) -> Result<(Client, Pushes), ClientError> {
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let (bodies, sink) = transport::framed(stream, &config);
        Ok(Client::start(bodies, sink, config))
    }

    fn start(
        bodies: transport::Bodies,
        sink: transport::BodySink,
        config: ClientConfig,
    ) -> (Client, Pushes) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            ended: Mutex::new(None),
            next_id: AtomicU32::new(1),
            config,
            stop: CancellationToken::new(),
        });
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let (push_tx, push_rx) = mpsc::channel(shared.config.push_buffer);
        tokio::spawn(run(bodies, sink, shared.clone(), outgoing, push_tx));
        (Client { shared, outbox }, Pushes { rx: push_rx })
    }

    /// Sends a request and waits for its response payload; a non-zero status is an
    /// error.
    pub async fn request(
        &self,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending().insert(id, tx);
        let sent = self.send(Message::Request {
            id,
            route,
            payload: payload.into(),
        });
        if let Err(e) = sent.await {
            self.shared.pending().remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(self.shared.config.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.shared.ended().unwrap_or(ClientError::Closed)),
            Err(_) => {
                self.shared.pending().remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Sends a notify (no response).
    pub async fn notify(&self, route: u16, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.send(Message::Notify {
            route,
            payload: payload.into(),
        })
        .await
    }

    async fn send(&self, message: Message) -> Result<(), ClientError> {
        if let Some(why) = self.shared.ended() {
            return Err(why);
        }
        self.outbox
            .send(message)
            .await
            .map_err(|_| self.shared.ended().unwrap_or(ClientError::Closed))
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn ended(&self) -> Option<ClientError> {
        self.shared.ended()
    }

    /// Closes the connection (other clones too).
    pub fn close(&self) {
        self.shared.end(ClientError::Closed);
    }
}

/// The connection task: reads, writes, heartbeats, until the socket or the client ends.
async fn run(
    mut frames: transport::Bodies,
    mut sink: transport::BodySink,
    shared: Arc<Shared>,
    mut outgoing: mpsc::Receiver<Message>,
    pushes: mpsc::Sender<Push>,
) {
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat);
    heartbeat.tick().await; // the first tick is immediate
    let why = loop {
        tokio::select! {
            () = shared.stop.cancelled() => break ClientError::Closed,
            frame = frames.next() => match frame {
                None => break ClientError::Closed,
                Some(Err(e)) => break e,
                Some(Ok(body)) => match Message::decode(body) {
                    Err(e) => break e.into(),
                    // A server's ping is answered with its payload (PROTOCOL.md).
                    Ok(Message::Ping(payload)) => {
                        let pong = Message::Pong(payload);
                        let mut body = bytes::BytesMut::with_capacity(pong.body_len());
                        pong.encode_body(&mut body);
                        if let Err(e) = sink.send(body.freeze()).await {
                            break e;
                        }
                    }
                    Ok(message) => {
                        if let Some(why) = dispatch(message, &shared, &pushes).await {
                            break why;
                        }
                    }
                },
            },
            message = outgoing.recv() => {
                let Some(message) = message else { break ClientError::Closed };
                let mut body = bytes::BytesMut::with_capacity(message.body_len());
                message.encode_body(&mut body);
                if let Err(e) = sink.send(body.freeze()).await {
                    break e;
                }
            }
            _ = heartbeat.tick() => {
                let mut body = bytes::BytesMut::new();
                Message::Ping(Bytes::new()).encode_body(&mut body);
                if let Err(e) = sink.send(body.freeze()).await {
                    break e;
                }
            }
        }
    };
    shared.end(why);
    // A clean close for the server (a WebSocket close frame, a TCP/TLS shutdown),
    // bounded: a peer that does not read cannot hold this task.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.close()).await;
}

/// Handles one frame from the server; returns why the connection ends, if it does.
async fn dispatch(
    message: Message,
    shared: &Shared,
    pushes: &mpsc::Sender<Push>,
) -> Option<ClientError> {
    match message {
        Message::Response {
            id,
            status,
            payload,
        } => {
            let result = if status.is_ok() {
                Ok(payload)
            } else {
                Err(ClientError::Status {
                    status,
                    text: String::from_utf8_lossy(&payload).into_owned(),
                })
            };
            // A response nobody waits for (timed out) is dropped.
            if let Some(waiter) = shared.pending().remove(&id) {
                let _ = waiter.send(result);
            }
        }
        Message::Push { route, payload } => {
            // If the application stops taking pushes, reading stops too (and the
            // server eventually kicks this client as a slow consumer).
            let _ = pushes.send(Push { route, payload }).await;
        }
        Message::Kick { reason, text } => return Some(ClientError::Kicked { reason, text }),
        Message::Ping(_) | Message::Pong(_) | Message::Empty => {} // pings: answered in `run`
        // This client does not resume: a session's offer and acks need nothing.
        Message::Session { .. } | Message::Ack { .. } => {}
        Message::Request { .. }
        | Message::Notify { .. }
        | Message::Resume { .. }
        | Message::Resumed { .. } => {
            return Some(ClientError::Protocol(format!(
                "the server sent a {} frame, which is not for a client",
                message.kind_name()
            )));
        }
    }
    None
}
