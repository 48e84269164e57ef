//! Test support: a real server on 127.0.0.1:0 with a recording service, and a raw
//! client that speaks the wire protocol over a real socket.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod chat;
pub mod counter;
pub mod proxy;
pub mod resources;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gatehouse::stats::Stats;
use gatehouse::{
    Config, ConnId, Context, Disconnect, DisconnectReason, KickReason, Message, Reply, Server,
    ServerError, Service, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Routes of the [`Recorder`] service.
pub mod routes {
    pub const ECHO: u16 = 1;
    /// Payload: a group name; joins it.
    pub const JOIN: u16 = 10;
    /// Payload: a group name; leaves it.
    pub const LEAVE: u16 = 11;
    /// Payload: `group\0text`; pushes text on PUSH to the group except the sender.
    pub const GROUP_SAY: u16 = 12;
    /// Payload: anything; broadcast on PUSH to everyone.
    pub const BROADCAST: u16 = 13;
    /// Payload: u64 BE connection id; pushes "hello" to it.
    pub const SEND_TO: u16 = 14;
    /// Payload: u64 BE connection id; kicks it with DUPLICATE_LOGIN.
    pub const KICK: u16 = 15;
    /// Answers this connection's id, u64 BE.
    pub const WHOAMI: u16 = 16;
    /// Payload: u32 BE count n, u32 BE size s: pushes n frames of s bytes to itself.
    pub const SPAM: u16 = 17;
    /// Sends a service message to itself through the hub.
    pub const MESSAGE_SELF: u16 = 18;
    /// Panics.
    pub const PANIC: u16 = 19;
    /// Answers the group's size; payload: group name.
    pub const GROUP_COUNT: u16 = 20;
    /// Answers hub.count(), u32 BE.
    pub const COUNT: u16 = 21;
    /// Never answers; counts in [`Record::hangs`](super::Record::hangs) once it runs.
    pub const HANG: u16 = 22;
    /// Answered on the fast path (`request_now`): the payload, reversed.
    pub const REVERSE_NOW: u16 = 23;
    /// Panics on the fast path.
    pub const PANIC_NOW: u16 = 24;
    /// Payload: u32 BE size s; broadcasts s bytes on PUSH; a refusal by the hub is
    /// answered with its text and status INTERNAL_ERROR.
    pub const BROADCAST_SIZED: u16 = 25;
    /// Payload: a player name; logs in as it, taking it over.
    pub const LOGIN: u16 = 26;
    /// Payload: `player\0text`; pushes text on PUSH to the player, wherever it is.
    pub const PUSH_TO_PLAYER: u16 = 27;
    /// Payload: a player name; kicks it `kicked`, wherever it is.
    pub const KICK_PLAYER: u16 = 28;
    /// Push route for everything the service pushes.
    pub const PUSH: u16 = 100;
}

/// What the recording service saw.
#[derive(Default)]
pub struct Record {
    pub connects: AtomicUsize,
    pub disconnects: Mutex<Vec<(ConnId, DisconnectReason)>>,
    /// Resumable sessions' `detached` and `resumed` hooks, in order.
    pub moves: Mutex<Vec<(ConnId, &'static str)>>,
    pub messages: AtomicUsize,
    /// HANG handlers that have started (and hang).
    pub hangs: AtomicUsize,
    hang_started: Notify,
}

impl Record {
    pub fn hooks(&self) -> Vec<(ConnId, DisconnectReason)> {
        self.disconnects.lock().unwrap().clone()
    }

    /// Waits until `n` disconnect hooks ran.
    pub async fn wait_hooks(&self, n: usize) -> Vec<(ConnId, DisconnectReason)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let hooks = self.hooks();
            if hooks.len() >= n {
                return hooks;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} disconnect hooks ran: {hooks:?}",
                hooks.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` HANG handlers are running.
    pub async fn wait_hangs(&self, n: usize) {
        let started = async {
            loop {
                let notified = self.hang_started.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.hangs.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(PATIENCE, started).await.is_err() {
            panic!(
                "only {} of {n} HANG handlers started",
                self.hangs.load(Ordering::SeqCst)
            );
        }
    }
}

// Tests of deadlines run on paused time: tokio moves the clock on whenever every task
// waits, to the next timer due, so a deadline is met exactly, whatever the machine's
// load, and a test of a 60-second timeout takes no minute.

/// How long, on the paused clock, a test waits for what must happen well before.
pub const VIRTUAL_PATIENCE: Duration = Duration::from_secs(300);

/// How far the paused clock may move at a time while the test waits on sockets.
pub const CLOCK_STEP: Duration = Duration::from_millis(10);

/// With real sockets, tokio moves a paused clock to the next timer whenever it waits
/// for I/O, even I/O that is ready: without a near timer, a connect could move it
/// past a deadline the test has not reached yet. This task keeps one due every
/// [`CLOCK_STEP`]; it ends with the test's runtime.
pub fn keep_the_clock_stepping() {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(CLOCK_STEP).await;
        }
    });
}

/// Whether `elapsed` is the deadline `limit`, give or take the clock's steps: never
/// before it, and within a second after.
pub fn at_deadline(elapsed: Duration, limit: Duration) -> bool {
    elapsed >= limit && elapsed < limit + Duration::from_secs(1)
}

/// Polls `check` (every 10 ms) until it gives a value, for at most [`PATIENCE`];
/// `what` names the awaited condition in the failure.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async `check` (every 10 ms) until it holds, for at most [`PATIENCE`];
/// `what` names the awaited condition in the failure.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A service that records connects and disconnects and offers routes to exercise
/// the hub.
#[derive(Clone, Default)]
pub struct Recorder {
    pub record: Arc<Record>,
}

pub struct Session {
    pub id: ConnId,
}

impl Service for Recorder {
    type Session = Session;
    type Message = String;

    async fn connect(&self, ctx: &mut Context<'_, String>) -> Session {
        self.record.connects.fetch_add(1, Ordering::SeqCst);
        Session { id: ctx.id() }
    }

    fn request_now(
        &self,
        _session: &mut Session,
        _ctx: &mut Context<'_, String>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Reply> {
        match route {
            routes::REVERSE_NOW => Some(Reply::ok(
                payload.iter().rev().copied().collect::<Vec<u8>>(),
            )),
            routes::PANIC_NOW => panic!("test fast-path panic"),
            _ => None,
        }
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, String>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        let text = || String::from_utf8_lossy(&payload).into_owned();
        let id_of = |p: &Bytes| ConnId(u64::from_be_bytes(p[..8].try_into().unwrap()));
        let server = ctx.server().clone();
        let done = |r: Result<(), gatehouse::HandleError>| match r {
            Ok(()) => Reply::empty(),
            Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
        };
        match route {
            routes::ECHO => Reply::ok(payload),
            routes::JOIN => done(server.join_group(session.id, &text()).await),
            routes::LEAVE => done(server.leave_group(session.id, &text()).await),
            routes::GROUP_SAY => {
                let t = text();
                let (group, said) = t.split_once('\0').unwrap();
                done(
                    server
                        .group_broadcast_except(group, session.id, routes::PUSH, said.to_owned())
                        .await,
                )
            }
            routes::BROADCAST => done(server.broadcast(routes::PUSH, payload).await),
            routes::BROADCAST_SIZED => {
                let size = payload.clone().get_u32() as usize;
                match server.broadcast(routes::PUSH, vec![b'x'; size]).await {
                    Ok(()) => Reply::empty(),
                    Err(e) => Reply::error(Status::INTERNAL_ERROR, e.to_string()),
                }
            }
            routes::SEND_TO => done(server.push_to(id_of(&payload), routes::PUSH, "hello").await),
            routes::KICK => done(
                server
                    .kick(
                        id_of(&payload),
                        KickReason::DUPLICATE_LOGIN,
                        "logged in elsewhere",
                    )
                    .await,
            ),
            routes::WHOAMI => Reply::ok(Bytes::copy_from_slice(&session.id.0.to_be_bytes())),
            routes::LOGIN => {
                let name = text();
                let login = async {
                    let turn = ctx.login_turn(&name).await?;
                    ctx.take_over(&turn).await?;
                    ctx.logged_in(&name).await
                };
                done(login.await)
            }
            routes::PUSH_TO_PLAYER => {
                let t = text();
                let (player, said) = t.split_once('\0').unwrap();
                done(
                    server
                        .push_to_player(player, routes::PUSH, said.to_owned())
                        .await,
                )
            }
            routes::KICK_PLAYER => done(
                server
                    .kick_player(&text(), KickReason::KICKED, "kicked by a test")
                    .await,
            ),
            routes::SPAM => {
                let mut p = payload.clone();
                let (n, size) = (p.get_u32(), p.get_u32() as usize);
                for _ in 0..n {
                    if !ctx.push(routes::PUSH, vec![b'x'; size]) {
                        break;
                    }
                }
                Reply::empty()
            }
            routes::MESSAGE_SELF => done(server.send_message(session.id, text()).await),
            routes::PANIC => panic!("test handler panic"),
            routes::HANG => {
                self.record.hangs.fetch_add(1, Ordering::SeqCst);
                self.record.hang_started.notify_waiters();
                std::future::pending().await
            }
            routes::GROUP_COUNT => {
                let n = server.group_count(&text()).await.unwrap() as u32;
                Reply::ok(Bytes::copy_from_slice(&n.to_be_bytes()))
            }
            routes::COUNT => {
                let n = server.count().await.unwrap() as u32;
                Reply::ok(Bytes::copy_from_slice(&n.to_be_bytes()))
            }
            other => Reply::unknown_route(other),
        }
    }

    async fn message(
        &self,
        _session: &mut Session,
        ctx: &mut Context<'_, String>,
        message: String,
    ) {
        self.record.messages.fetch_add(1, Ordering::SeqCst);
        ctx.push(routes::PUSH, format!("message: {message}"));
    }

    async fn disconnect(&self, session: Session, info: Disconnect) {
        assert_eq!(session.id, info.id);
        self.record
            .disconnects
            .lock()
            .unwrap()
            .push((info.id, info.reason));
    }
}

/// A scratch directory unique to one test, removed when dropped.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Scratch(
            std::env::temp_dir().join(format!("gatehouse-{name}-{}-{nanos}", std::process::id())),
        )
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub record: Arc<Record>,
    pub stats: Arc<Stats>,
    /// The server's handle, typed for the [`Recorder`]'s messages (`None` for other
    /// services).
    pub handle: Option<gatehouse::ServerHandle<String>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let recorder = Recorder::default();
        let record = recorder.record.clone();
        let (mut started, handle) =
            TestServer::start_service_with_handle(config, recorder, record).await;
        started.handle = Some(handle);
        started
    }

    /// As [`TestServer::start_service`], with the server's handle.
    pub async fn start_service_with_handle<S: Service>(
        config: Config,
        service: S,
        record: Arc<Record>,
    ) -> (TestServer, gatehouse::ServerHandle<S::Message>) {
        let server = Server::new(config, service).expect("valid config");
        let handle = server.handle();
        (TestServer::serve(server, record).await, handle)
    }

    /// Serves any service; `record` is whatever the test wants to keep with it.
    pub async fn start_service<S: Service>(
        config: Config,
        service: S,
        record: Arc<Record>,
    ) -> TestServer {
        let server = Server::new(config, service).expect("valid config");
        TestServer::serve(server, record).await
    }

    /// Serves a server the test built; `record` is whatever the test keeps with it.
    pub async fn serve<S: Service>(server: Server<S>, record: Arc<Record>) -> TestServer {
        let stats = server.stats();
        let listener = gatehouse::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(listener, shutdown.clone().cancelled_owned()));
        TestServer {
            addr,
            record,
            stats,
            handle: None,
            shutdown,
            task,
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Requests shutdown and waits for `run` to return.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic")
    }

    /// Waits for `run` to return by itself.
    pub async fn join(self) -> Result<(), ServerError> {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic")
    }
}

/// A config with fault injection on and generous limits, for tests to adjust.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.allow_fault_injection = true;
    config.server.max_connections_per_ip = 5_000;
    config.limits.inbound_frames_per_sec = 100_000;
    config.limits.inbound_frames_burst = 100_000;
    config.limits.inbound_bytes_per_sec = 1 << 30;
    config.limits.inbound_bytes_burst = 1 << 30;
    // Tests stop their servers at once; the grace has tests of its own.
    config.supervisor.drain_grace = std::time::Duration::ZERO;
    config
}

/// A raw protocol client.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    next_id: u32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let connecting = TcpStream::connect(addr);
        let stream = tokio::time::timeout(PATIENCE, connecting)
            .await
            .expect("connected in time")
            .expect("connect");
        Client::from_stream(stream)
    }

    /// Connects from a chosen loopback source address (127.0.0.x).
    pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = tokio::time::timeout(PATIENCE, socket.connect(addr))
            .await
            .expect("connected in time")
            .expect("connect");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    pub async fn send(&mut self, message: &Message) {
        self.stream
            .write_all(&message.to_frame())
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send raw");
    }

    /// The next frame, or `None` at EOF (or reset).
    pub async fn recv(&mut self) -> Option<Message> {
        self.recv_within(PATIENCE).await
    }

    /// The next frame within `patience`, for answers the server may take longer than
    /// [`PATIENCE`] to give by design.
    pub async fn recv_within(&mut self, patience: Duration) -> Option<Message> {
        tokio::time::timeout(patience, self.recv_forever())
            .await
            .expect("a frame or EOF in time")
    }

    async fn recv_forever(&mut self) -> Option<Message> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let body = self.buf.split_to(len).freeze();
                    return Some(Message::decode(body).expect("server sends valid frames"));
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends a request without waiting for its answer (which may never come: a
    /// crash, a panic, a handler that hangs).
    pub async fn fire(&mut self, route: u16) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Request {
            id,
            route,
            payload: Bytes::new(),
        })
        .await;
    }

    /// Sends a request and waits for its response, skipping pushes.
    pub async fn request(&mut self, route: u16, payload: impl Into<Bytes>) -> (Status, Bytes) {
        let (status, payload, _) = self.request_seeing_pushes(route, payload).await;
        (status, payload)
    }

    /// Sends a request and waits for its response; also returns the pushes that
    /// arrived before it, in order. A connection answers in order, so a request
    /// sent after something was pushed to it is a barrier: whatever was queued for
    /// it by then shows up here.
    pub async fn request_seeing_pushes(
        &mut self,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> (Status, Bytes, Vec<(u16, Bytes)>) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Message::Request {
            id,
            route,
            payload: payload.into(),
        })
        .await;
        let mut pushes = Vec::new();
        loop {
            match self.recv().await {
                Some(Message::Response {
                    id: rid,
                    status,
                    payload,
                }) if rid == id => return (status, payload, pushes),
                Some(Message::Push { route, payload }) => pushes.push((route, payload)),
                // A resumable game's session offer and acks: this client does not resume.
                Some(Message::Session { .. } | Message::Ack { .. }) => {}
                other => panic!("expected response {id}, got {other:?}"),
            }
        }
    }

    /// Ends a resumable session on purpose (`ROUTE_END_SESSION`): a close that
    /// follows ends it at once instead of leaving it for a resume.
    pub async fn leave(&mut self) {
        let (status, _) = self
            .request(gatehouse::protocol::ROUTE_END_SESSION, Bytes::new())
            .await;
        assert_eq!(status, Status::OK);
    }

    /// Reads until a kick arrives (skipping other frames), then expects EOF.
    pub async fn expect_kick(&mut self) -> KickReason {
        loop {
            match self.recv().await {
                Some(Message::Kick { reason, .. }) => {
                    assert_eq!(self.recv().await, None, "the server closes after a kick");
                    return reason;
                }
                Some(_) => continue,
                None => panic!("connection closed without a kick"),
            }
        }
    }

    /// Resumes session `id` with `token` on this connection, expecting the server
    /// to refuse it `resume_failed`; the refusal's text.
    pub async fn resume_refused(&mut self, id: u64, token: gatehouse::protocol::Token) -> String {
        self.send(&Message::Resume {
            id,
            received: 0,
            token,
        })
        .await;
        match self.recv().await {
            Some(Message::Kick { reason, text }) => {
                assert_eq!(reason, KickReason::RESUME_FAILED, "{text}");
                text
            }
            other => panic!("{other:?}"),
        }
    }

    /// Reads the next push's payload, skipping nothing.
    pub async fn expect_push(&mut self) -> (u16, Bytes) {
        match self.recv().await {
            Some(Message::Push { route, payload }) => (route, payload),
            other => panic!("expected a push, got {other:?}"),
        }
    }

    pub async fn whoami(&mut self) -> ConnId {
        let (status, payload) = self.request(routes::WHOAMI, Bytes::new()).await;
        assert!(status.is_ok());
        ConnId(u64::from_be_bytes(payload[..8].try_into().unwrap()))
    }
}
