//! One task per connection (the seed's `connection` process): read frames, dispatch
//! them to the service in arrival order, write what is queued, keep its timers, and
//! close with a kick and exactly one disconnect hook, whatever ends it.
//!
//! The task owns its socket outright and waits on four things at once: the
//! connection group's cancellation (shutdown, hub restart), its mailbox, socket
//! readiness, and a single timer. The timer is armed at the earliest of the
//! connection's deadlines (first frame or idle, and a stuck write) and re-armed
//! lazily when it fires, so an idle connection costs no wakeups until its deadline.
//! While waiting for input it holds no read buffer (see [`FrameReader`]).

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::limits::{DosChecker, Permit};
use crate::outbound::{Delivery, Mailbox, WriteQueue, MESSAGE_COST};
use crate::service::{ConnId, Context, Disconnect, DisconnectReason, Outbox, Reply, Service};
use crate::supervisor::{Generation, Shared};
use gatehouse_protocol::{
    Message, Status, HEADER_LEN, RESERVED_ROUTES_START, ROUTE_FAULT_CRASH_HUB,
    ROUTE_FAULT_PANIC_HANDLER,
};

/// A handler's context, borrowing only the fields it needs (so the service, the
/// cancellation token and the rest of the connection stay borrowable beside it).
macro_rules! context {
    ($conn:ident) => {
        Context {
            id: $conn.id,
            peer: $conn.peer,
            hub: &$conn.generation.hub,
            out: &mut $conn.out,
        }
    };
}

/// Runs one accepted connection to its end. `permit` holds its admission slot.
///
/// Not an `async fn`: everything is moved into the [`Connection`] first, so the task
/// holds each value once (an async fn keeps its arguments for its whole life, beside
/// the futures they were moved into).
pub(crate) fn serve<S: Service>(
    socket: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    shared: Arc<Shared<S>>,
    generation: Arc<Generation<S::Message>>,
    permit: Permit,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("conn", id = %id, %peer);
    let limits = &shared.config.limits;
    // Its own token, cancelled with the group or by a kick: waiting on it touches no
    // lock shared with other connections.
    let cancel = generation.token.child_token();
    let mailbox = Arc::new(Mailbox::new(limits.outbound_queue_bytes, cancel.clone()));
    let conn = Connection {
        id,
        peer,
        cancel,
        unknown_route_warnings: 0,
        reader: FrameReader::new(limits.max_frame_bytes),
        dos: DosChecker::new(limits),
        out: Outbox {
            queue: WriteQueue::default(),
            mailbox,
            close: None,
            close_text: String::new(),
        },
        socket,
        shared,
        generation,
        _permit: permit,
    };
    conn.run().instrument(span)
}

fn log_close(reason: &DisconnectReason) {
    match reason {
        DisconnectReason::PeerClosed | DisconnectReason::Shutdown => {
            debug!(%reason, "closed")
        }
        DisconnectReason::Dos
        | DisconnectReason::FrameTooLarge
        | DisconnectReason::ProtocolError
        | DisconnectReason::SlowConsumer
        | DisconnectReason::SendTimeout
        | DisconnectReason::HandlerPanic
        | DisconnectReason::HandlerTimeout => warn!(%reason, "closed"),
        _ => info!(%reason, "closed"),
    }
}

/// A handler's future on the heap (so a large handler future does not enlarge every
/// idle connection), resolving to its output or, if it panicked, the panic's message.
fn guarded<'f, F: Future + Send + 'f>(
    future: F,
) -> Pin<Box<dyn Future<Output = Result<F::Output, String>> + Send + 'f>> {
    Box::pin(async move {
        AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .map_err(|panic| panic_message(&*panic))
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// How a handler ended.
enum Outcome<T> {
    Done(T),
    Panicked(String),
    /// The connection was cancelled (shutdown, hub restart, kick) first; the handler
    /// was dropped.
    Cancelled,
    /// It ran past `limits.handler_timeout`; it was dropped.
    TimedOut,
}

/// Runs a handler to its end unless the connection is cancelled first or the handler
/// takes too long: a handler that never returns must not hold up a kick, a shutdown
/// or a hub restart, nor keep a dead connection open.
///
/// Most handlers finish without ever waiting: they are polled once first, and only
/// one that waits pays for a timer and a cancellation waiter (a timer per request
/// would cost a timer-wheel registration on the hot path).
async fn cancellable<'f, F: Future + Send + 'f>(
    cancel: &CancellationToken,
    timeout: std::time::Duration,
    future: F,
) -> Outcome<F::Output>
where
    F::Output: Send,
{
    let settled = |result: Result<F::Output, String>| match result {
        Ok(value) => Outcome::Done(value),
        Err(panic) => Outcome::Panicked(panic),
    };
    let mut handler = guarded(future);
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(handler.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first_poll {
        return settled(result);
    }
    // The slow path is boxed too: its timer and waiter would otherwise enlarge every
    // idle connection's task, which is sized for its largest await point.
    Box::pin(async move {
        tokio::select! {
            result = tokio::time::timeout(timeout, handler) => match result {
                Ok(result) => settled(result),
                Err(_) => Outcome::TimedOut,
            },
            () = cancel.cancelled() => Outcome::Cancelled,
        }
    })
    .await
}

/// What woke the main loop.
enum Event {
    Cancelled,
    Delivered,
    Readable,
    Writable,
    Timer,
    Failed(io::Error),
}

struct Connection<S: Service> {
    id: ConnId,
    peer: SocketAddr,
    /// Cancelled with the connection group (shutdown, hub restart) or by a kick.
    cancel: CancellationToken,
    /// Unknown routes logged at warn so far; past a few, a client cannot flood the log.
    unknown_route_warnings: u8,
    socket: TcpStream,
    reader: FrameReader,
    /// The seed's DoS checker: inbound byte and frame rates.
    dos: DosChecker,
    out: Outbox<S::Message>,
    shared: Arc<Shared<S>>,
    generation: Arc<Generation<S::Message>>,
    /// The admission slot, given back when the connection (and this) is dropped.
    _permit: Permit,
}

/// The connection's deadlines, folded into one timer.
struct Deadlines {
    /// Last inbound frame; `None` until the first one (then the first-frame timeout
    /// applies instead of the idle timeout).
    last_input: Option<Instant>,
    accepted: Instant,
    /// Since when queued output has made no progress.
    stalled_since: Option<Instant>,
}

impl<S: Service> Connection<S> {
    /// The connection's whole life: register, connect, serve, close, hook, linger.
    async fn run(mut self) {
        debug!("accepted");
        let (id, peer) = (self.id, self.peer);
        let mailbox = self.out.mailbox.clone();
        let registered = Box::pin(self.generation.hub.register(id, peer, mailbox)).await;
        let reason = if registered.is_err() {
            // The hub died between accept and now; the group is being cancelled.
            Err(DisconnectReason::ServerRestart)
        } else {
            let service = &self.shared.service;
            let mut ctx = context!(self);
            match guarded(service.connect(&mut ctx)).await {
                Ok(mut session) => {
                    let reason = self.serve(&mut session).await;
                    Ok((session, reason))
                }
                Err(panic) => {
                    error!(panic = %panic, "connect handler panicked; no session, no disconnect hook");
                    Err(DisconnectReason::HandlerPanic)
                }
            }
        };

        self.out.mailbox.close();
        Box::pin(self.generation.hub.unregister(id)).await;
        let (session, reason) = match reason {
            Ok((session, reason)) => (Some(session), reason),
            Err(reason) => (None, reason),
        };
        self.begin_close(&reason);
        self.shared.stats.count_close(&reason);
        if let Some(session) = session {
            let info = Disconnect {
                id,
                peer,
                reason: reason.clone(),
            };
            if let Err(panic) = guarded(self.shared.service.disconnect(session, info)).await {
                error!(panic = %panic, "disconnect hook panicked");
            }
            self.shared.stats.count_disconnect_hook();
        }
        // Boxed, like every await that is not the hot loop: the task is sized for its
        // largest await point, and this runs once.
        Box::pin(self.finish_close(&reason)).await;
        log_close(&reason);
    }

    /// The main loop; returns why the connection must end.
    ///
    /// It waits on readiness by polling (the socket's read and write readiness, the
    /// mailbox, the group's cancellation, the timer) rather than on a `select!` of
    /// futures: no future per wait, nothing but the pinned waiters held while idle.
    async fn serve(&mut self, session: &mut S::Session) -> DisconnectReason {
        let shared = self.shared.clone();
        let limits = &shared.config.limits;
        let mut deadlines = Deadlines {
            last_input: None,
            accepted: Instant::now(),
            stalled_since: None,
        };
        let mailbox = self.out.mailbox.clone();
        let timer = sleep_until(deadlines.next(limits));
        let cancelled = self.cancel.clone().cancelled_owned();
        let delivered = mailbox.delivered();
        tokio::pin!(timer, cancelled, delivered);
        // Alternates which of mailbox and socket is looked at first, so that neither
        // can starve the other.
        let mut mailbox_first = false;
        loop {
            if let Some(reason) = self.out.close.take() {
                return reason;
            }
            // Frames already buffered are handled before anything is written, so the
            // answers to pipelined requests leave in one write.
            match self.reader.buffered_frame() {
                Ok(Some(frame)) => {
                    let first = deadlines.last_input.is_none();
                    deadlines.last_input = Some(Instant::now());
                    if first {
                        // From now on the idle timeout applies, which may be sooner.
                        timer.as_mut().reset(deadlines.next(limits));
                    }
                    Box::pin(self.on_frame(frame, session)).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => return self.read_failed(e),
            }
            if let Err(e) = self.write_now(&mut deadlines, timer.as_mut()) {
                return DisconnectReason::SocketError(e.kind());
            }
            mailbox_first = !mailbox_first;
            let socket = &self.socket;
            let writing = !self.out.queue.is_empty();
            let event = std::future::poll_fn(|cx| {
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Cancelled);
                }
                if mailbox_first && delivered.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Delivered);
                }
                if let Poll::Ready(ready) = socket.poll_read_ready(cx) {
                    return Poll::Ready(ready.map_or_else(Event::Failed, |()| Event::Readable));
                }
                if !mailbox_first && delivered.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Delivered);
                }
                if writing {
                    if let Poll::Ready(ready) = socket.poll_write_ready(cx) {
                        return Poll::Ready(ready.map_or_else(Event::Failed, |()| Event::Writable));
                    }
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Cancelled => return self.stop_reason(),
                Event::Delivered => {
                    delivered.set(mailbox.delivered());
                    let mut deliveries = Vec::new();
                    if self.out.mailbox.drain(&mut deliveries) {
                        return DisconnectReason::SlowConsumer;
                    }
                    for delivery in deliveries {
                        if let Some(reason) = Box::pin(self.deliver(delivery, session)).await {
                            return reason;
                        }
                    }
                }
                Event::Readable => match self.reader.read_ready(&self.socket) {
                    Ok(Some(0)) => return DisconnectReason::PeerClosed,
                    Ok(_) => {} // the frames are taken at the top of the loop
                    Err(e) => return DisconnectReason::SocketError(e.kind()),
                },
                Event::Writable => {} // written at the top of the loop
                Event::Timer => {
                    if let Some(reason) = deadlines.expired(Instant::now(), limits) {
                        return reason;
                    }
                    timer.as_mut().reset(deadlines.next(limits));
                }
                Event::Failed(e) => return DisconnectReason::SocketError(e.kind()),
            }
        }
    }

    /// Why the connection was cancelled: a kick waiting in its mailbox (frames queued
    /// before it still go out first), else the connection group's reason.
    fn stop_reason(&mut self) -> DisconnectReason {
        let mut deliveries = Vec::new();
        self.out.mailbox.drain(&mut deliveries);
        let mut kick = None;
        for delivery in deliveries {
            match delivery {
                Delivery::Frame(frame) => self.out.queue.push(frame),
                Delivery::Kick(reason, text) => {
                    kick.get_or_insert((reason, text));
                }
                Delivery::Message(_) => self.out.mailbox.release(MESSAGE_COST),
            }
        }
        match kick {
            Some((reason, text)) => {
                self.out.close_text = text;
                DisconnectReason::Kicked(reason)
            }
            None => self.generation.stop_reason(),
        }
    }

    fn read_failed(&self, error: ReadError) -> DisconnectReason {
        match error {
            ReadError::TooLarge(announced) => {
                let max = self.shared.config.limits.max_frame_bytes;
                warn!(announced, max, "frame header over the maximum");
                DisconnectReason::FrameTooLarge
            }
            ReadError::Io(e) => DisconnectReason::SocketError(e.kind()),
        }
    }

    /// Writes what the socket takes now and keeps the stall clock.
    fn write_now(
        &mut self,
        deadlines: &mut Deadlines,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> io::Result<()> {
        if self.out.queue.is_empty() {
            return Ok(());
        }
        let written = self.out.queue.write_now(&self.socket)?;
        self.out.mailbox.release(written);
        if self.out.queue.is_empty() {
            deadlines.stalled_since = None;
        } else if written > 0 || deadlines.stalled_since.is_none() {
            let now = Instant::now();
            deadlines.stalled_since = Some(now);
            let stuck_at = now + self.shared.config.limits.send_timeout;
            if stuck_at < timer.deadline() {
                timer.reset(stuck_at);
            }
        }
        Ok(())
    }

    async fn deliver(
        &mut self,
        delivery: Delivery<S::Message>,
        session: &mut S::Session,
    ) -> Option<DisconnectReason> {
        match delivery {
            // Its bytes were reserved by whoever delivered it.
            Delivery::Frame(frame) => self.out.queue.push(frame),
            Delivery::Kick(reason, text) => {
                self.out.close_text = text;
                return Some(DisconnectReason::Kicked(reason));
            }
            Delivery::Message(message) => {
                self.out.mailbox.release(MESSAGE_COST); // charged when it was queued
                let service = &self.shared.service;
                let mut ctx = context!(self);
                let handled = cancellable(
                    &self.cancel,
                    self.shared.config.limits.handler_timeout,
                    service.message(session, &mut ctx, message),
                );
                let outcome = handled.await;
                self.settle("message", None, outcome);
                return self.out.close.take();
            }
        }
        None
    }

    /// A handler's result, or `None` with the connection marked to close when the
    /// handler panicked, was cancelled, or timed out.
    fn settle<T>(
        &mut self,
        kind: &'static str,
        route: Option<u16>,
        outcome: Outcome<T>,
    ) -> Option<T> {
        let close = match outcome {
            Outcome::Done(value) => return Some(value),
            Outcome::Panicked(panic) => {
                let name = route.and_then(|r| self.shared.service.route_name(r));
                error!(panic = %panic, kind, route, name, "handler panicked");
                DisconnectReason::HandlerPanic
            }
            Outcome::Cancelled => self.stop_reason(),
            Outcome::TimedOut => {
                let timeout = self.shared.config.limits.handler_timeout;
                error!(
                    kind,
                    route,
                    ?timeout,
                    "handler ran past limits.handler_timeout; dropped"
                );
                DisconnectReason::HandlerTimeout
            }
        };
        self.out.close.get_or_insert(close);
        None
    }

    /// Accounts, decodes and dispatches one inbound frame. Sets `out.close` when the
    /// connection must end.
    async fn on_frame(&mut self, frame: Bytes, session: &mut S::Session) {
        if let Err(violation) = self.dos.on_frame(frame.len() + HEADER_LEN) {
            warn!(?violation, "inbound rate exceeded");
            self.out.close = Some(DisconnectReason::Dos);
            return;
        }
        let message = match Message::decode(frame) {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %e, "malformed envelope");
                self.out.close = Some(DisconnectReason::ProtocolError);
                return;
            }
        };
        match message {
            Message::Empty | Message::Pong(_) => {}
            Message::Ping(nonce) => {
                self.out.enqueue(Message::Pong(nonce).to_frame());
            }
            Message::Request { id, route, payload } => {
                let reply = if route >= RESERVED_ROUTES_START {
                    Box::pin(self.framework_request(route)).await
                } else {
                    self.service_request(session, route, payload).await
                };
                if let Some(reply) = reply {
                    let frame = Message::Response {
                        id,
                        status: reply.status,
                        payload: reply.payload,
                    }
                    .to_frame();
                    self.out.enqueue(frame);
                }
            }
            Message::Notify { route, payload } if route >= RESERVED_ROUTES_START => {
                self.warn_unknown_route("notify", route, payload.len());
            }
            Message::Notify { route, payload } => {
                let service = &self.shared.service;
                let len = payload.len();
                let mut ctx = context!(self);
                let handled = cancellable(
                    &self.cancel,
                    self.shared.config.limits.handler_timeout,
                    service.notify(session, &mut ctx, route, payload),
                );
                let outcome = handled.await;
                if self.settle("notify", Some(route), outcome) == Some(Status::UNKNOWN_ROUTE) {
                    self.warn_unknown_route("notify", route, len);
                }
            }
            other @ (Message::Response { .. } | Message::Push { .. } | Message::Kick { .. }) => {
                warn!(kind = other.kind_name(), "a client may not send this kind");
                self.out.close = Some(DisconnectReason::ProtocolError);
            }
        }
    }

    /// Runs the service's request handler; `None` if it panicked (the connection then
    /// closes and no response is sent).
    async fn service_request(
        &mut self,
        session: &mut S::Session,
        route: u16,
        payload: Bytes,
    ) -> Option<Reply> {
        let service = &self.shared.service;
        let len = payload.len();
        let mut ctx = context!(self);
        let handled = cancellable(
            &self.cancel,
            self.shared.config.limits.handler_timeout,
            service.request(session, &mut ctx, route, payload),
        );
        let outcome = handled.await;
        let reply = self.settle("request", Some(route), outcome)?;
        if reply.status == Status::UNKNOWN_ROUTE {
            self.warn_unknown_route("request", route, len);
        }
        Some(reply)
    }

    /// The seed's "Unknown msg", as a warning naming what arrived; after a few from
    /// one connection, at debug level, so that no client can flood the log.
    fn warn_unknown_route(&mut self, kind: &'static str, route: u16, len: usize) {
        const LOUD: u8 = 3;
        if self.unknown_route_warnings < LOUD {
            self.unknown_route_warnings += 1;
            warn!(kind, route, len, "unknown route");
            if self.unknown_route_warnings == LOUD {
                warn!("further unknown routes from this connection are logged at debug level");
            }
        } else {
            debug!(kind, route, len, "unknown route");
        }
    }

    /// The framework's own routes: fault injection.
    async fn framework_request(&mut self, route: u16) -> Option<Reply> {
        let fault = matches!(route, ROUTE_FAULT_CRASH_HUB | ROUTE_FAULT_PANIC_HANDLER);
        if !fault {
            self.warn_unknown_route("request", route, 0);
            return Some(Reply::unknown_route(route));
        }
        if !self.shared.config.server.allow_fault_injection {
            warn!(route, "fault injection requested but disabled");
            return Some(Reply::error(
                Status::FORBIDDEN,
                "fault injection is disabled (server.allow_fault_injection)",
            ));
        }
        if route == ROUTE_FAULT_CRASH_HUB {
            return Some(match self.generation.hub.crash(self.id).await {
                Ok(()) => Reply::empty(),
                Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
            });
        }
        let timeout = self.shared.config.limits.handler_timeout;
        let panicking = cancellable(&self.cancel, timeout, async {
            panic!("fault injection: handler panic requested");
        });
        let outcome = panicking.await;
        self.settle("request", Some(route), outcome)
    }

    /// Queues the kick (if the reason has one) and writes what goes without waiting.
    /// The disconnect hook runs after this, so a slow socket never delays a save.
    fn begin_close(&mut self, reason: &DisconnectReason) {
        let Some(kick) = reason.kick() else {
            return;
        };
        if *reason == DisconnectReason::SlowConsumer {
            // What is queued cannot be delivered in time; the kick can.
            let dropped = self.out.queue.discard_unstarted();
            self.out.mailbox.release(dropped);
        }
        let text = std::mem::take(&mut self.out.close_text);
        let text = if text.is_empty() {
            self.describe(reason)
        } else {
            text
        };
        self.out.queue.push(kick.frame(&text));
        let _ = self.out.queue.write_now(&self.socket);
    }

    fn describe(&self, reason: &DisconnectReason) -> String {
        let limits = &self.shared.config.limits;
        match reason {
            DisconnectReason::Idle => format!("no frame for {:?}", limits.idle_timeout),
            DisconnectReason::LoginTimeout => {
                format!("no first frame within {:?}", limits.first_frame_timeout)
            }
            DisconnectReason::Dos => "inbound rate limit exceeded".into(),
            DisconnectReason::FrameTooLarge => {
                format!("frame larger than {} bytes", limits.max_frame_bytes)
            }
            DisconnectReason::ProtocolError => "malformed or unexpected frame".into(),
            DisconnectReason::SlowConsumer => format!(
                "outbound queue over {} bytes: the client does not read",
                limits.outbound_queue_bytes
            ),
            DisconnectReason::Shutdown => "server shutting down".into(),
            DisconnectReason::ServerRestart => "server restarting, reconnect".into(),
            DisconnectReason::HandlerPanic | DisconnectReason::HandlerTimeout => {
                "internal server error".into()
            }
            other => other.to_string(),
        }
    }

    /// Delivers the rest of the output and the kick, closes our side, and waits for
    /// the peer to close (discarding what it still sends), within `close_linger`.
    /// Waiting for the peer's FIN keeps the kernel from answering late input with a
    /// reset that could destroy the kick before the client read it.
    async fn finish_close(&mut self, reason: &DisconnectReason) {
        let linger = self.shared.config.limits.close_linger;
        match reason {
            DisconnectReason::SocketError(_) | DisconnectReason::SendTimeout => return,
            DisconnectReason::PeerClosed => {
                // The client may only have shut its sending side: what it was owed
                // still goes out, within the linger.
                let _ = tokio::time::timeout(linger, self.flush()).await;
                return;
            }
            _ => {}
        }
        let _ = tokio::time::timeout(linger, async {
            self.flush().await?;
            self.socket.shutdown().await?;
            let mut sink = vec![0u8; 4096];
            loop {
                self.socket.readable().await?;
                match self.socket.try_read(&mut sink) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map(|r: io::Result<()>| r.ok());
    }
}

impl<S: Service> Connection<S> {
    /// Writes everything queued, waiting for the socket as needed.
    async fn flush(&mut self) -> io::Result<()> {
        while !self.out.queue.is_empty() {
            self.socket.writable().await?;
            self.out.queue.write_now(&self.socket)?;
        }
        Ok(())
    }
}

impl Deadlines {
    fn input_deadline(&self, limits: &crate::config::LimitsConfig) -> Instant {
        match self.last_input {
            None => self.accepted + limits.first_frame_timeout,
            Some(at) => at + limits.idle_timeout,
        }
    }

    fn next(&self, limits: &crate::config::LimitsConfig) -> Instant {
        let input = self.input_deadline(limits);
        match self.stalled_since {
            Some(at) => input.min(at + limits.send_timeout),
            None => input,
        }
    }

    fn expired(
        &self,
        now: Instant,
        limits: &crate::config::LimitsConfig,
    ) -> Option<DisconnectReason> {
        if now >= self.input_deadline(limits) {
            return Some(match self.last_input {
                None => DisconnectReason::LoginTimeout,
                Some(_) => DisconnectReason::Idle,
            });
        }
        match self.stalled_since {
            Some(at) if now >= at + limits.send_timeout => Some(DisconnectReason::SendTimeout),
            _ => None,
        }
    }
}

/// Why reading a frame failed.
enum ReadError {
    /// The header announced this many bytes, over the maximum.
    TooLarge(u64),
    Io(io::Error),
}

/// Most bytes read per `read` call while no large frame is in progress.
const READ_CHUNK: usize = 4096;

/// Reads `{packet, 4}` frames: tokio-util's length-delimited decoder over a buffer
/// that is only allocated while bytes are in flight. Cancel-safe: all progress lives
/// in `self`, and the only await is socket readiness.
struct FrameReader {
    codec: LengthDelimitedCodec,
    buf: BytesMut,
}

impl FrameReader {
    fn new(max_frame_len: usize) -> Self {
        FrameReader {
            codec: LengthDelimitedCodec::builder()
                .length_field_length(HEADER_LEN)
                .big_endian()
                .max_frame_length(max_frame_len)
                .new_codec(),
            buf: BytesMut::new(),
        }
    }

    /// A frame already in the buffer, without reading the socket.
    fn buffered_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => {
                if self.buf.is_empty() {
                    self.buf = BytesMut::new(); // the frame keeps its bytes alive
                }
                Ok(Some(frame.freeze()))
            }
            Ok(None) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // The decoder rejected the header without consuming it.
                let announced = self
                    .buf
                    .get(..HEADER_LEN)
                    .and_then(|h| <[u8; 4]>::try_from(h).ok())
                    .map_or(0, |h| u64::from(u32::from_be_bytes(h)));
                Err(ReadError::TooLarge(announced))
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// Reads what the socket has now: `Some(0)` means the peer closed (a close in the
    /// middle of a frame is still just the peer leaving), `None` that nothing was
    /// there after all. Called on read readiness.
    ///
    /// A short read means the socket is drained, and tokio is told so: the read runs
    /// inside `try_io`, whose closure then reports `WouldBlock`, which clears the
    /// readiness (as tokio's own `poll_read` does). `try_read_buf` alone would leave
    /// it set and cost one more `recv` per wakeup that only returns EAGAIN.
    fn read_ready(&mut self, socket: &TcpStream) -> io::Result<Option<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let mut read = None;
        let result = socket.try_io(Interest::READABLE, || {
            let n = socket.try_read_buf(&mut self.buf)?;
            read = Some(n);
            if 0 < n && n < spare {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (read, result) {
            (Some(n), _) => Ok(Some(n)),
            (None, Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                if self.buf.is_empty() {
                    self.buf = BytesMut::new(); // a spurious wakeup: hold nothing
                }
                Ok(None)
            }
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_service::BenchService;
    use crate::limits::Admission;

    /// An idle connection costs its task: the future below, plus tokio's task header
    /// and the socket's registration. Every await point shares this space, so a
    /// large one (a timer, a nested handler) would enlarge every idle connection.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, peer) = listener.accept().await.unwrap();
        let shared = Arc::new(Shared::new(crate::Config::default(), BenchService));
        let (hub, _hub_task) = crate::hub::spawn::<()>(16);
        let generation = Arc::new(Generation::new_for_test(hub));
        let permit = Admission::new(1, 1).try_admit(peer.ip()).unwrap();
        let task = serve(socket, peer, ConnId(1), shared, generation, permit);
        let size = std::mem::size_of_val(&task);
        println!("connection task future: {size} bytes");
        assert!(size <= 1600, "the connection future grew to {size} bytes");
    }
}
