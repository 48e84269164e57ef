//! The connection task (the seed's `connection` process): one [`ConnectionCore`] run
//! over one [`Transport`], calling the service's handlers, and ending with exactly
//! one disconnect hook, whatever ends it.
//!
//! The task waits on five things at once: the connection group's cancellation
//! (shutdown, hub restart, a kick), its mailbox, input, the transport's room for
//! output (only while output is queued), and a single timer armed at the core's one
//! deadline (re-armed lazily: an idle connection costs no wakeups until its
//! deadline). It polls them directly rather than through a `select!` of futures, so
//! a waiting connection holds nothing but those waiters.
//!
//! - this file: the task's life (register, connect, serve, close, hook, linger) and
//!   its loop.
//! - [`dispatch`]: handler calls (panics, timeouts, cancellation), framework routes,
//!   mailbox deliveries.
//! - [`resume`]: a lost connection's session waiting for a resume, and a new
//!   connection's transport handed to it (found in `crate::sessions`).
//! - [`transport`]: the [`Transport`] trait; [`tcp`]: TCP; `stream` (feature `tls`):
//!   any byte stream with its own buffers (TLS); `websocket` (feature `websocket`):
//!   WebSocket.
//! - [`spare`]: buffers shared between the connections of a thread.

/// The handler [`Context`] over a connection's fields, borrowed one by one so that
/// the service and the session stay usable beside it.
macro_rules! context {
    ($conn:expr) => {
        Context::new(
            $conn.id,
            $conn.peer,
            &$conn.shared.handle,
            &$conn.mailbox,
            Own::Core(&mut $conn.core),
        )
    };
}

mod dispatch;
pub(crate) mod resume;
mod spare;
#[cfg(feature = "tls")]
pub(crate) mod stream;
pub(crate) mod tcp;
pub(crate) mod transport;
#[cfg(feature = "websocket")]
pub(crate) mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use tokio::task::coop;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn, Instrument};

use self::dispatch::{guarded, Busy, Polled};
pub(crate) use self::transport::{Goodbye, Received, Transport};
use gatehouse_protocol::KickReason;

use crate::config::{LimitsConfig, TransportKind};
use crate::connection::{
    Close, ConnId, ConnectionCore, CoreConfig, DisconnectReason, FirstFrame, Meter, OutboundBudget,
    ResumeRequest, Severity,
};
use crate::group::{Group, Shared};
use crate::limits::Permit;
use crate::logs::{Admit, LogLimiter};
use crate::mailbox::Mailbox;
use crate::metrics::latency;
use crate::service::{Context, Disconnect, Own, Service};

/// A busy connection looks at its cancellation before anything else once in this
/// many wakeups (an idle one, every time it waits).
const CANCEL_EVERY: u32 = 16;

/// The time, for the core. Read once per wakeup; tokio's clock, so that tests with
/// paused time drive every deadline.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs one accepted connection to its end. `permit` holds its admission slot.
///
/// Not an `async fn`: everything is moved into the [`Connection`] first, so the task
/// holds each value once (an async fn keeps its arguments beside the futures they
/// were moved into).
pub(crate) fn serve<S: Service, T: Transport>(
    transport: T,
    kind: TransportKind,
    peer: SocketAddr,
    id: ConnId,
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
    permit: Permit,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("conn", id = %id, %peer);
    // Its own token, cancelled with the group or by a kick: waiting on it touches no
    // lock shared with other connections.
    let cancel = group.token.child_token();
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let meter = Meter::new(kind, peer, since, shared.config.metrics.enabled);
    let budget = Arc::new(OutboundBudget::metered(
        shared.config.limits.outbound_queue_bytes,
        shared.core_config.memory.clone(),
        meter,
    ));
    let mailbox = Arc::new(Mailbox::new(budget.clone(), cancel.clone()));
    let core = ConnectionCore::new(shared.core_config.clone(), budget, clock());
    let mut conn = Connection {
        id,
        peer,
        cancel,
        transport,
        core,
        mailbox,
        shared,
        group,
        _permit: permit,
    };
    // `run` borrows the connection rather than taking it: an `async fn`'s by-value
    // argument would be stored twice in the task (as the argument and as the local).
    async move {
        if let Some(resume) = conn.run().await {
            let input = conn.core.take_input();
            let handing = Box::pin(resume::hand_over(
                conn.shared,
                conn.group,
                conn.transport,
                conn.peer,
                input,
                resume,
            ));
            handing.await;
        }
    }
    .instrument(span)
}

/// One connection's task state.
struct Connection<S: Service, T> {
    id: ConnId,
    peer: SocketAddr,
    /// Cancelled with the connection group (shutdown, hub restart) or by a kick.
    cancel: CancellationToken,
    transport: T,
    core: ConnectionCore,
    /// How the hub and the game reach this connection.
    mailbox: Arc<Mailbox<S::Message>>,
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
    /// The admission slot, given back when the connection (and this) is dropped.
    _permit: Permit,
}

/// What woke the loop.
enum Wake {
    /// The handler that waited has finished (its result waits in it).
    Finished,
    Cancelled,
    Delivered,
    Received(Received),
    /// Output went out, or the handler that waits queued some: the loop looks again
    /// (stall clock, buffers, what to send).
    Sent,
    Timer,
    Failed(std::io::Error),
}

impl<S: Service, T: Transport> Connection<S, T> {
    /// The connection's whole life: register, connect, serve, close, hook, linger.
    /// A resumable service's connection that opens with `resume` connects nothing:
    /// it ends at once, returning the resume for its transport to be handed over.
    ///
    /// Awaits that run once per connection are boxed: a task is as large as its
    /// largest await point, and only the loop's should count.
    async fn run(&mut self) -> Option<ResumeRequest> {
        debug!("accepted");
        // Each boxed future is bound before it is awaited: a temporary in the awaiting
        // statement would stay in the task beside its box for the whole await.
        let registering = Box::pin(self.group.hub.register(
            self.id,
            self.peer,
            self.mailbox.clone(),
        ));
        let registered = registering.await;
        let first = if registered.is_err() {
            // The hub died between accept and now; the group is being cancelled.
            Err(Close::from(DisconnectReason::ServerRestart))
        } else if self.shared.core_config.resumable {
            // Not boxed: smaller than the loop's await, it costs the task nothing.
            self.first_frame().await
        } else {
            Ok(None)
        };
        if let Ok(Some(resume)) = first {
            self.close_mailbox();
            let unregistering = Box::pin(self.group.hub.unregister(self.id));
            unregistering.await;
            self.count_traffic();
            return Some(resume);
        }
        let (session, close) = if let Err(close) = first {
            (None, close)
        } else {
            let service = &self.shared.service;
            let timeout = self.shared.config.limits.connect_timeout;
            let mut ctx = context!(self);
            let connecting =
                guarded(
                    async move { tokio::time::timeout(timeout, service.connect(&mut ctx)).await },
                );
            match connecting.await {
                Ok(Ok(mut session)) => {
                    let close = self.serve(&mut session).await;
                    (Some(session), close)
                }
                Ok(Err(_)) => {
                    self.shared.stats.count_hook_timeout();
                    error!(?timeout, "connect hook ran past limits.connect_timeout; no session, no disconnect hook");
                    (None, Close::from(DisconnectReason::HandlerTimeout))
                }
                Err(panic) => {
                    error!(panic = %panic, "connect handler panicked; no session, no disconnect hook");
                    (None, Close::from(DisconnectReason::HandlerPanic))
                }
            }
        };

        self.close_mailbox();
        let unregistering = Box::pin(self.group.hub.unregister(self.id));
        unregistering.await;
        // What it carried moves to the server's totals now that the hub no longer
        // lists it (and again below for the last bytes), so that the metrics do not
        // miss it while its hook runs.
        self.count_traffic();
        // A session that ended waiting for a resume has no connection to close.
        let connected = !self.core.is_detached();
        // The kick is queued and written as far as it goes now; the hook runs next,
        // so a slow socket never delays a save.
        if connected {
            self.core.queue_kick(&close);
            let _ = self.send_now().await; // a failure here shows in finish_close
        }
        self.shared.stats.count_close(&close.reason);
        if let Some(session) = session {
            let info = Disconnect {
                id: self.id,
                peer: self.peer,
                reason: close.reason.clone(),
            };
            let timeout = self.shared.config.limits.disconnect_timeout;
            let hook = self.shared.service.disconnect(session, info);
            let hook = guarded(async move { tokio::time::timeout(timeout, hook).await });
            match hook.await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    self.shared.stats.count_hook_timeout();
                    error!(
                        ?timeout,
                        "disconnect hook ran past limits.disconnect_timeout; dropped"
                    );
                }
                Err(panic) => error!(panic = %panic, "disconnect hook panicked"),
            }
            self.shared.stats.count_disconnect_hook();
        }
        // Its player (if it logged in) is free only now: a login taking it over waits
        // for this, so that it loads what the hook saved.
        self.shared.hub_slot.players.release(self.id);
        if connected {
            let finishing = Box::pin(self.finish_close(&close));
            finishing.await;
        }
        self.count_traffic();
        log_close(&close.reason, &self.shared.close_logs);
        None
    }

    /// For a resumable service, before its connect hook: waits for the first frame
    /// to tell whether it is a `resume` (`Ok(Some)`) or anything else (`Ok(None)`:
    /// connect and serve as usual). `Err` if the connection ends first (no hooks
    /// run for it).
    async fn first_frame(&mut self) -> Result<Option<ResumeRequest>, Close> {
        let mut now = clock();
        let timer = tokio::time::sleep_until(self.core.poll_timeout(now, false).into());
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(timer, cancelled);
        loop {
            match self.core.first_frame() {
                FirstFrame::Other => return Ok(None),
                FirstFrame::Resume => {
                    return match self.core.take_resume(now) {
                        Some(resume) => Ok(Some(resume)),
                        None => Err(self
                            .core
                            .take_close()
                            .unwrap_or_else(|| Close::from(DisconnectReason::ProtocolError))),
                    };
                }
                FirstFrame::Pending => {}
            }
            let (transport, core) = (&mut self.transport, &mut self.core);
            let wake = std::future::poll_fn(|cx| {
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if let Poll::Ready(received) = transport.poll_receive(cx, core) {
                    return Poll::Ready(Some(received));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Ok(Received::Input)));
                }
                Poll::Pending
            })
            .await;
            now = clock();
            match wake {
                None => return Err(self.stop_reason()),
                Some(Ok(Received::Input)) => {}
                Some(Ok(Received::Closed)) => {
                    return Err(Close::from(DisconnectReason::PeerClosed))
                }
                Some(Err(e)) => return Err(Close::from(DisconnectReason::SocketError(e.kind()))),
            }
            self.core.handle_timeout(now, false);
            if let Some(close) = self.core.take_close() {
                return Err(close);
            }
            timer
                .as_mut()
                .reset(self.core.poll_timeout(now, false).into());
        }
    }

    /// The loop; returns why the connection must end.
    async fn serve(&mut self, session: &mut S::Session) -> Close {
        // The session, lent to the handler that waits while it waits (then `None`).
        let mut session = Some(session);
        // The handler that waits and what waits for it; `None` while there is none.
        let mut busy: Option<Box<Busy<'_, S>>> = None;
        // The peer closed its side while work was held: the connection closes once
        // that work is done (the peer is owed its answers).
        let mut input_ended = false;
        let mut now = clock();
        let mut armed = self.core.poll_timeout(now, false);
        let timer = tokio::time::sleep_until(armed.into());
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(timer, cancelled);
        // Alternates which of mailbox and input is looked at first, so that neither
        // can starve the other.
        let mut mailbox_first = false;
        // Wakeups since the cancellation was last looked at first. Looking costs a
        // lock (tokio-util's token), so a busy connection looks first only every
        // `CANCEL_EVERY` wakeups and otherwise only when nothing else is ready: a
        // stop is still seen within a few batches, and an idle connection at once.
        let mut since_cancel_check = 0u32;
        loop {
            // What arrived, in order: each handler runs to its end (or waits, in
            // flight) before the next is called. Answers pile up in the output, to
            // leave together, and are timed together from the read
            // (`metrics::latency`).
            // Looked at every turn, so that a handler that is always ready (and takes
            // the task's whole budget of work) still runs out of time.
            if busy.is_some() {
                self.time_out_in_flight(&mut busy, now);
            }
            latency::begin(&self.shared.latency, now);
            self.run_ready(&mut session, &mut busy, now);
            latency::end(&self.shared.latency);
            match &busy {
                None if input_ended => self.core.close(DisconnectReason::PeerClosed, None),
                // Not reading, on our side: the peer is not idle meanwhile.
                Some(waiting) if !waiting.can_hold() => self.core.input_held(now),
                _ => {}
            }
            if let Some(close) = self.core.take_close() {
                // A resumable session outlives its connection (for `resume.window`).
                match self.detach_or_end(close, now) {
                    Some(close) => return close,
                    None => input_ended = false,
                }
            }
            let detached = self.core.is_detached();
            if detached {
                self.core.discard_output();
            } else if let Poll::Ready(Err(e)) = self.send_now().await {
                self.core
                    .close(DisconnectReason::SocketError(e.kind()), None);
                continue;
            }
            spare::shed(&mut self.core);
            let due = self.deadline(now, busy.as_deref());
            if due < armed {
                armed = due;
                timer.as_mut().reset(armed.into());
            }

            mailbox_first = !mailbox_first;
            since_cancel_check += 1;
            let cancel_first = since_cancel_check >= CANCEL_EVERY;
            if cancel_first {
                since_cancel_check = 0;
            }
            let sending = !detached && (self.core.has_output() || self.transport.holds_output());
            // Behind as much as a handler that waits may hold, input waits in the socket.
            let reading = !detached
                && !self.core.input_paused()
                && !input_ended
                && busy.as_ref().is_none_or(|b| b.can_hold());
            let mut in_flight = busy.as_deref_mut().and_then(|b| b.in_flight.as_mut());
            // A handler may spend the task's budget of work (tokio's cooperative
            // scheduling) before the timer and the cancellation are looked at: those
            // two are then looked at outside it, as `tokio::time::timeout` does.
            let unbudgeted = in_flight.is_some();
            let (transport, core, mailbox) = (&mut self.transport, &mut self.core, &self.mailbox);
            let mail = |cx: &mut std::task::Context<'_>| mailbox.poll_mail(cx).is_ready();
            let wake = std::future::poll_fn(|cx| {
                let mut changed = false;
                if let Some(handler) = in_flight.as_deref_mut() {
                    match handler.poll(cx, core) {
                        Polled::Finished => return Poll::Ready(Wake::Finished),
                        Polled::Changed => changed = true,
                        Polled::Waiting => {}
                    }
                }
                let mut stopped = |cx: &mut std::task::Context<'_>| {
                    if unbudgeted {
                        let unconstrained = coop::unconstrained(cancelled.as_mut());
                        std::pin::pin!(unconstrained).poll(cx).is_ready()
                    } else {
                        cancelled.as_mut().poll(cx).is_ready()
                    }
                };
                if cancel_first && stopped(cx) {
                    return Poll::Ready(Wake::Cancelled);
                }
                if mailbox_first && mail(cx) {
                    return Poll::Ready(Wake::Delivered);
                }
                if reading {
                    if let Poll::Ready(received) = transport.poll_receive(cx, core) {
                        return Poll::Ready(received.map_or_else(Wake::Failed, Wake::Received));
                    }
                }
                if !mailbox_first && mail(cx) {
                    return Poll::Ready(Wake::Delivered);
                }
                if sending {
                    if let Poll::Ready(sent) = transport.poll_send(cx, core) {
                        return Poll::Ready(sent.map_or_else(Wake::Failed, |()| Wake::Sent));
                    }
                }
                let due = if unbudgeted {
                    let unconstrained = coop::unconstrained(timer.as_mut());
                    std::pin::pin!(unconstrained).poll(cx).is_ready()
                } else {
                    timer.as_mut().poll(cx).is_ready()
                };
                if due {
                    return Poll::Ready(Wake::Timer);
                }
                if !cancel_first && stopped(cx) {
                    return Poll::Ready(Wake::Cancelled);
                }
                if changed {
                    return Poll::Ready(Wake::Sent);
                }
                Poll::Pending
            })
            .await;
            now = clock();
            match wake {
                Wake::Cancelled => {
                    self.cancel_in_flight(&mut busy);
                    let stopped = self.stop_reason();
                    return self.core.take_close().unwrap_or(stopped);
                }
                Wake::Delivered => {
                    if self.take_mail(&mut busy, now) {
                        // A new connection: its input, its deadlines.
                        input_ended = false;
                        armed = self.deadline(now, busy.as_deref());
                        timer.as_mut().reset(armed.into());
                    }
                }
                Wake::Received(Received::Input) => spare::lend_send(&mut self.core),
                Wake::Sent => {}
                Wake::Finished => self.finish_in_flight(&mut busy, &mut session),
                Wake::Received(Received::Closed) if busy.is_some() => input_ended = true,
                Wake::Received(Received::Closed) => {
                    self.core.close(DisconnectReason::PeerClosed, None);
                }
                Wake::Timer => {
                    if busy.as_ref().is_some_and(|b| !b.can_hold()) {
                        self.core.input_held(now);
                    }
                    self.core.handle_timeout(now, self.transport.holds_output());
                    if self.core.take_checkpoint(now) && !self.core.is_closing() {
                        match (session.as_deref_mut(), busy.as_deref_mut()) {
                            (Some(session), _) => self.checkpoint(session),
                            // The handler that waits has the session: after it.
                            (None, Some(waiting)) => waiting.checkpoint_owed = true,
                            (None, None) => {}
                        }
                    }
                    armed = self.deadline(now, busy.as_deref());
                    timer.as_mut().reset(armed.into());
                }
                Wake::Failed(e) => {
                    self.core
                        .close(DisconnectReason::SocketError(e.kind()), None);
                }
            }
        }
    }

    /// The one instant the loop's timer is armed at: the core's deadline, or the
    /// handler that waits running out of time.
    fn deadline(&mut self, now: Instant, busy: Option<&Busy<'_, S>>) -> Instant {
        let due = self.core.poll_timeout(now, self.transport.holds_output());
        match busy.and_then(|b| b.in_flight.as_ref()) {
            Some(in_flight) => due.min(in_flight.deadline),
            None => due,
        }
    }

    /// Moves what the connection carried since the last call to the server's totals.
    fn count_traffic(&self) {
        let meter = &self.mailbox.budget().meter;
        self.shared
            .stats
            .count_closed_traffic(meter.transport, meter.take());
    }

    /// Sends what the transport takes now, without waiting for more room.
    async fn send_now(&mut self) -> Poll<std::io::Result<()>> {
        if !self.core.has_output() && !self.transport.holds_output() {
            return Poll::Ready(Ok(()));
        }
        let (transport, core) = (&mut self.transport, &mut self.core);
        std::future::poll_fn(|cx| Poll::Ready(transport.poll_send(cx, core))).await
    }

    async fn finish_close(&mut self, close: &Close) {
        finish_close(
            &mut self.transport,
            &mut self.core,
            close,
            &self.shared.config.limits,
        )
        .await;
    }
}

/// The close's log line: info and warn lines within the server's budget (a flood of
/// bad clients must not fill the disk), with a count of those left out.
fn log_close(reason: &DisconnectReason, limiter: &LogLimiter) {
    if reason.severity() != Severity::Debug {
        match limiter.admit(clock()) {
            Admit::Skip => return,
            Admit::Write { suppressed } if suppressed > 0 => {
                warn!(
                    suppressed,
                    "close log lines left out in the last second (a flood)"
                );
            }
            Admit::Write { .. } => {}
        }
    }
    reason.log();
}

/// Delivers the rest of the output and the kick, closes our side (with the kick's code
/// where the transport's close has one), and, for a close we decided, waits for the
/// peer to close (discarding what it still sends), all within `close_linger`. A peer
/// that closed first may only have shut its sending side: it still gets what it was
/// owed, and our close (a TLS close_notify, which a client waiting for a clean end
/// expects).
async fn finish_close<T: Transport>(
    transport: &mut T,
    core: &mut ConnectionCore,
    close: &Close,
    limits: &LimitsConfig,
) {
    if matches!(
        close.reason,
        DisconnectReason::SocketError(_) | DisconnectReason::SendTimeout
    ) {
        return;
    }
    let peer_closed = close.reason == DisconnectReason::PeerClosed;
    let text = close.reason.kick().map(|_| close.kick_text(limits));
    let goodbye = close
        .reason
        .kick()
        .zip(text.as_deref())
        .map(|(reason, text)| Goodbye { reason, text });
    let _ = tokio::time::timeout(limits.close_linger, async move {
        std::future::poll_fn(|cx| transport.poll_send(cx, core)).await?;
        std::future::poll_fn(|cx| transport.poll_shutdown(cx, goodbye)).await?;
        if peer_closed {
            return Ok(());
        }
        std::future::poll_fn(|cx| transport.poll_drain_until_closed(cx)).await
    })
    .await;
}

/// Kicks a connection refused at accept (`server_full`, `too_many_from_ip`) over its
/// own transport, once its handshake is done, and closes it. The caller bounds the
/// time it takes.
pub(crate) async fn refuse<T: Transport>(
    mut transport: T,
    core_config: Arc<CoreConfig>,
    reason: KickReason,
    text: &str,
) {
    let limits = core_config.limits.clone();
    let budget = Arc::new(OutboundBudget::new(
        limits.outbound_queue_bytes,
        core_config.memory.clone(),
    ));
    let mut core = ConnectionCore::new(core_config, budget, clock());
    let close = Close {
        reason: DisconnectReason::Kicked(reason),
        text: Some(text.to_owned()),
    };
    core.queue_kick(&close);
    finish_close(&mut transport, &mut core, &close, &limits).await;
}
