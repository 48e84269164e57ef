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
//! When the server offers session resume (a game that opts in), the client resumes:
//! if the connection is lost (not kicked, not closed), it connects again within the
//! server's window, resumes the session, and sends again what the server did not
//! get; waiting requests get their answers and pushes go on, none lost or twice
//! ([`Client::resumes`] counts them). A resume the server refuses ends the client
//! with [`ClientError::Kicked`] and `resume_failed`: log in again on a new one.
//!
//! It speaks every transport a gatehouse server listens on ([`Target`]: TCP, TLS,
//! WebSocket, WebSocket over TLS; see `transport`). It depends on the protocol crate,
//! tokio, rustls and tungstenite: no server code comes with it.

mod session;
mod transport;

pub use transport::{tls_config, Target};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Resume a session the server offered when the connection is lost (a client
    /// made with [`Client::from_stream`] cannot: it does not know where it connected).
    pub resume: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            max_frame_bytes: gatehouse_protocol::DEFAULT_MAX_FRAME_LEN,
            push_buffer: 1024,
            tls_ca: None,
            resume: true,
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
    /// Sessions resumed on a new connection.
    resumes: AtomicU64,
    config: ClientConfig,
    /// Cancelled when the connection ends, to stop the connection task.
    stop: CancellationToken,
    /// Cancelled once the connection task has closed the connection.
    finished: CancellationToken,
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

/// How long [`Client::leave`] waits for the server's answer, then for the close.
pub const LEAVE_PATIENCE: Duration = Duration::from_secs(2);

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
        Ok(Client::start(bodies, sink, config, Some(target.clone())))
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
        Ok(Client::start(bodies, sink, config, None))
    }

    fn start(
        bodies: transport::Bodies,
        sink: transport::BodySink,
        config: ClientConfig,
        target: Option<Target>,
    ) -> (Client, Pushes) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            ended: Mutex::new(None),
            next_id: AtomicU32::new(1),
            resumes: AtomicU64::new(0),
            config,
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let (push_tx, push_rx) = mpsc::channel(shared.config.push_buffer);
        let target = target.filter(|_| shared.config.resume);
        let link = Link {
            frames: bodies,
            sink,
            target,
        };
        tokio::spawn(run(link, shared.clone(), outgoing, push_tx));
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

    /// Closes the connection (other clones too). Over WebSocket the close frame
    /// tells the server the client left; over TCP and TLS a close looks like a lost
    /// connection, and a session the server offered waits for a resume: end it with
    /// [`Client::leave`].
    pub fn close(&self) {
        self.shared.end(ClientError::Closed);
    }

    /// Leaves on purpose (a logout, a quit): asks the server to end the session now
    /// rather than wait its resume window for a client that will not come back
    /// (`docs/PROTOCOL.md`, "Framework-reserved routes"), closes, and returns once
    /// the connection is closed. Each step is bounded by [`LEAVE_PATIENCE`]; the
    /// server's answer is not required (without a session it has nothing to end).
    pub async fn leave(&self) {
        let asked = self.request(gatehouse_protocol::ROUTE_END_SESSION, Bytes::new());
        let _ = tokio::time::timeout(LEAVE_PATIENCE, asked).await;
        self.close();
        let _ = tokio::time::timeout(LEAVE_PATIENCE, self.shared.finished.cancelled()).await;
    }

    /// How many times the session was resumed on a new connection.
    pub fn resumes(&self) -> u64 {
        self.shared.resumes.load(Ordering::Relaxed)
    }
}

/// The connection the task runs over, and where to make the next one.
struct Link {
    frames: transport::Bodies,
    sink: transport::BodySink,
    /// Where to resume; `None`: never.
    target: Option<Target>,
}

/// Why the task's loop stopped: the connection is lost (it may be resumed), or the
/// client is done (kicked, closed, a protocol error).
enum Stop {
    Lost(ClientError),
    Done(ClientError),
}

/// Encodes a frame's body.
fn body_of(message: &Message) -> Bytes {
    let mut body = bytes::BytesMut::with_capacity(message.body_len());
    message.encode_body(&mut body);
    body.freeze()
}

/// The connection task: reads, writes, heartbeats and acknowledgements, until the
/// client ends; a lost connection whose session can be resumed is, within its window.
async fn run(
    mut link: Link,
    shared: Arc<Shared>,
    mut outgoing: mpsc::Receiver<Message>,
    pushes: mpsc::Sender<Push>,
) {
    let mut numbering = session::Numbering::default();
    let why = loop {
        match serve(&mut link, &shared, &mut outgoing, &pushes, &mut numbering).await {
            Stop::Done(why) => break why,
            Stop::Lost(why) => match resume(&mut link, &shared, &mut numbering).await {
                Ok(()) => {
                    shared.resumes.fetch_add(1, Ordering::Relaxed);
                }
                Err(None) => break why,
                Err(Some(refused)) => break refused,
            },
        }
    };
    shared.end(why);
    // A clean close for the server (a WebSocket close frame, a TCP/TLS shutdown),
    // bounded: a peer that does not read cannot hold this task.
    let _ = tokio::time::timeout(Duration::from_secs(1), link.sink.close()).await;
    shared.finished.cancel();
}

/// Serves one connection until it is lost or the client is done.
async fn serve(
    link: &mut Link,
    shared: &Shared,
    outgoing: &mut mpsc::Receiver<Message>,
    pushes: &mpsc::Sender<Push>,
    numbering: &mut session::Numbering,
) -> Stop {
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat);
    heartbeat.tick().await; // the first tick is immediate
    loop {
        let ack_due = numbering.ack_due();
        let acking = async {
            match ack_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.stop.cancelled() => return Stop::Done(ClientError::Closed),
            frame = link.frames.next() => match frame {
                None => return Stop::Lost(ClientError::Closed),
                Some(Err(e @ (ClientError::Io(_) | ClientError::Closed))) => return Stop::Lost(e),
                Some(Err(e)) => return Stop::Done(e),
                Some(Ok(body)) => match Message::decode(body) {
                    Err(e) => return Stop::Done(e.into()),
                    // A server's ping is answered with its payload (PROTOCOL.md).
                    Ok(Message::Ping(payload)) => {
                        if let Err(e) = link.sink.send(body_of(&Message::Pong(payload))).await {
                            return Stop::Lost(e);
                        }
                    }
                    Ok(message) => {
                        if let Some(why) = dispatch(message, shared, pushes, numbering).await {
                            return Stop::Done(why);
                        }
                    }
                },
            },
            message = outgoing.recv() => {
                let Some(message) = message else { return Stop::Done(ClientError::Closed) };
                let body = body_of(&message);
                match &message {
                    Message::Request { id, .. } => numbering.sent(Some(*id), body.clone()),
                    Message::Notify { .. } => numbering.sent(None, body.clone()),
                    _ => {}
                }
                if let Err(e) = link.sink.send(body).await {
                    return Stop::Lost(e);
                }
            }
            () = acking => {
                if let Some(ack) = numbering.take_ack() {
                    if let Err(e) = link.sink.send(body_of(&ack)).await {
                        return Stop::Lost(e);
                    }
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = link.sink.send(body_of(&Message::Ping(Bytes::new()))).await {
                    return Stop::Lost(e);
                }
            }
        }
    }
}

/// Resumes the session on a new connection, trying until the server's window
/// ends. `Err(None)`: no session, or no new connection in time; `Err(Some)`: the
/// server refused (a kick) or answered nonsense.
async fn resume(
    link: &mut Link,
    shared: &Shared,
    numbering: &mut session::Numbering,
) -> Result<(), Option<ClientError>> {
    let (Some(target), Some((resume, window))) = (link.target.clone(), numbering.resume()) else {
        return Err(None);
    };
    let deadline = tokio::time::Instant::now() + window;
    let mut backoff = Duration::from_millis(50);
    loop {
        if shared.stop.is_cancelled() || tokio::time::Instant::now() >= deadline {
            return Err(None);
        }
        let attempt = async {
            let (mut frames, mut sink) = transport::open(&target, &shared.config).await?;
            sink.send(body_of(&resume)).await?;
            let first = frames.next().await.ok_or(ClientError::Closed)??;
            Ok::<_, ClientError>((frames, sink, Message::decode(first)?))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok((frames, mut sink, Message::Resumed { received }))) => {
                let again = numbering.resumed(received).map_err(Some)?;
                for body in again {
                    sink.send(body).await.map_err(Some)?;
                }
                link.frames = frames;
                link.sink = sink;
                return Ok(());
            }
            Ok(Ok((_, _, Message::Kick { reason, text }))) => {
                return Err(Some(ClientError::Kicked { reason, text }));
            }
            Ok(Ok((_, _, other))) => {
                return Err(Some(ClientError::Protocol(format!(
                    "a {} frame in answer to a resume",
                    other.kind_name()
                ))));
            }
            // Not there yet (a network still down): again, a little later.
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Handles one frame from the server; returns why the connection ends, if it does.
async fn dispatch(
    message: Message,
    shared: &Shared,
    pushes: &mpsc::Sender<Push>,
    numbering: &mut session::Numbering,
) -> Option<ClientError> {
    let now = tokio::time::Instant::now();
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
            numbering.response(id, now, |id| shared.pending().contains_key(&id));
        }
        Message::Push { route, payload } => {
            numbering.push(now);
            // If the application stops taking pushes, reading stops too (and the
            // server eventually kicks this client as a slow consumer).
            let _ = pushes.send(Push { route, payload }).await;
        }
        Message::Kick { reason, text } => return Some(ClientError::Kicked { reason, text }),
        Message::Ping(_) | Message::Pong(_) | Message::Empty => {} // pings: answered in `run`
        Message::Session {
            id,
            window_ms,
            token,
        } => numbering.session(id, window_ms, token),
        Message::Ack { count } => {
            if let Err(e) = numbering.ack(count) {
                return Some(e);
            }
        }
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
