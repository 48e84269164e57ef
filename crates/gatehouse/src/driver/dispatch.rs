//! Calling the service: one handler at a time, in arrival order, each under
//! `catch_unwind`, a timeout and the connection's cancellation; the framework's own
//! routes; and what the mailbox delivers.
//!
//! A request or notify is first offered to the service's fast path (`request_now`,
//! `notify_now`: no future, no allocation); otherwise its handler's future is boxed
//! where it is made (the one allocation such a request costs), so that a large handler future does not enlarge every idle connection's
//! task; it is polled once before any timer or cancellation waiter is armed, since
//! most handlers finish without waiting.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use gatehouse_protocol::{
    Status, RESERVED_ROUTES_START, ROUTE_FAULT_CRASH_HUB, ROUTE_FAULT_PANIC_HANDLER,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{Connection, Transport};
use crate::connection::{Close, DisconnectReason, Event};
use crate::guard::panic_message;
use crate::mailbox::{Delivery, Verdict};
use crate::metrics::latency;
use crate::service::{Context, Reply, Service};

/// A handler's future on the heap (so that a large handler future does not enlarge
/// every idle connection's task), resolving to its output or, if it panicked, the
/// panic's message. Boxed once where it is made: wrapping it moves only the pointer.
pub(super) struct Guarded<'f, T>(Pin<Box<dyn Future<Output = T> + Send + 'f>>);

/// Boxes `future` under [`Guarded`].
#[inline(always)]
pub(super) fn guarded<'f, F: Future + Send + 'f>(future: F) -> Guarded<'f, F::Output> {
    Guarded(Box::pin(future))
}

impl<T> Future for Guarded<'_, T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // A panic leaves the future unusable; it is never polled again (the caller
        // ends the connection).
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
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
/// or a hub restart, nor keep a dead connection open. Also returns, if the handler
/// had to wait, the latency batch it set aside meanwhile (for the caller to resume).
async fn run_handler<T: Send>(
    cancel: &CancellationToken,
    timeout: Duration,
    mut handler: Guarded<'_, T>,
) -> (Outcome<T>, Option<latency::Suspended>) {
    let settled = |result: Result<T, String>| match result {
        Ok(value) => Outcome::Done(value),
        Err(panic) => Outcome::Panicked(panic),
    };
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut handler).poll(cx))).await;
    if let Poll::Ready(result) = first_poll {
        return (settled(result), None);
    }
    // The slow path is boxed too: its timer and waiter would otherwise enlarge every
    // idle connection's task, which is sized for its largest await point. Other tasks
    // run on this thread while it waits: the batch being timed is set aside.
    let batch = latency::suspend();
    let (outcome, batch) = Box::pin(async move {
        let outcome = tokio::select! {
            result = tokio::time::timeout(timeout, handler) => match result {
                Ok(result) => settled(result),
                Err(_) => Outcome::TimedOut,
            },
            () = cancel.cancelled() => Outcome::Cancelled,
        };
        (outcome, batch)
    })
    .await;
    (outcome, Some(batch))
}

/// What a handler answers, whichever kind it is.
enum Answer {
    Reply(Reply),
    Status(Status),
    Nothing,
}

/// What a handler call answers to, kept beside it so its outcome lands right.
#[derive(Debug, Clone, Copy)]
enum Call {
    Request { id: u32, route: u16, len: usize },
    Notify { route: u16, len: usize },
    Message,
    Checkpoint,
}

impl Call {
    fn kind(self) -> &'static str {
        match self {
            Call::Request { .. } => "request",
            Call::Notify { .. } => "notify",
            Call::Message => "message",
            Call::Checkpoint => "checkpoint",
        }
    }

    fn route(self) -> Option<u16> {
        match self {
            Call::Request { route, .. } | Call::Notify { route, .. } => Some(route),
            Call::Message | Call::Checkpoint => None,
        }
    }
}

/// Makes the handler call for `event`, boxed, not yet polled. The handler's context
/// and the service's future live inside the box (made at the first poll), so neither
/// is copied nor held in the connection's task.
fn start<'f, S: Service>(
    service: &'f S,
    mut ctx: Context<'f, S::Message>,
    session: &'f mut S::Session,
    event: Event,
    fault_injection: bool,
) -> (Call, Guarded<'f, Answer>) {
    match event {
        Event::Request { id, route, payload } => {
            let call = Call::Request {
                id,
                route,
                len: payload.len(),
            };
            if route >= RESERVED_ROUTES_START {
                return (call, framework_request(ctx, route, fault_injection));
            }
            let answer = async move {
                Answer::Reply(service.request(session, &mut ctx, route, payload).await)
            };
            (call, guarded(answer))
        }
        Event::Notify { route, payload } => {
            let call = Call::Notify {
                route,
                len: payload.len(),
            };
            let answer = async move {
                Answer::Status(service.notify(session, &mut ctx, route, payload).await)
            };
            (call, guarded(answer))
        }
    }
}

/// The framework's own routes: fault injection.
fn framework_request<M: Send + 'static>(
    ctx: Context<'_, M>,
    route: u16,
    enabled: bool,
) -> Guarded<'_, Answer> {
    let fault = matches!(route, ROUTE_FAULT_CRASH_HUB | ROUTE_FAULT_PANIC_HANDLER);
    if !fault {
        return guarded(async move { Answer::Reply(Reply::unknown_route(route)) });
    }
    if !enabled {
        warn!(route, "fault injection requested but disabled");
        return guarded(async {
            Answer::Reply(Reply::error(
                Status::FORBIDDEN,
                "fault injection is disabled (server.allow_fault_injection)",
            ))
        });
    }
    if route == ROUTE_FAULT_PANIC_HANDLER {
        return guarded(async { panic!("fault injection: handler panic requested") });
    }
    let (hub, id) = (ctx.hub, ctx.id);
    guarded(async move {
        Answer::Reply(match hub.crash(id).await {
            Ok(()) => Reply::empty(),
            Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
        })
    })
}

impl<S: Service, T: Transport> Connection<S, T> {
    /// Runs the handler of one event to its end and puts its answer in the output;
    /// returns whether it had to wait. Kept flat (its only nested futures are tiny or
    /// boxed), since this runs once per request and its state is part of every
    /// connection's task.
    pub(super) async fn dispatch(&mut self, event: Event, session: &mut S::Session) -> bool {
        let Some(event) = self.answer_now(event, session) else {
            return false;
        };
        let limits = &self.shared.config;
        let (timeout, faults) = (
            limits.limits.handler_timeout,
            limits.server.allow_fault_injection,
        );
        let ctx = context!(self);
        let (call, handler) = start(&self.shared.service, ctx, session, event, faults);
        let (outcome, set_aside) = run_handler(&self.cancel, timeout, handler).await;
        let waited = set_aside.is_some();
        if let Some(batch) = set_aside {
            latency::resume(&self.shared.latency, batch);
        }
        self.conclude(call, outcome);
        waited
    }

    /// The fast path: offers the event to the service's `request_now` or `notify_now`
    /// (no future, no allocation). Returns the event if the service left it to its
    /// async handler.
    fn answer_now(&mut self, event: Event, session: &mut S::Session) -> Option<Event> {
        let (call, payload) = match &event {
            Event::Request { id, route, payload } if *route < RESERVED_ROUTES_START => {
                let call = Call::Request {
                    id: *id,
                    route: *route,
                    len: payload.len(),
                };
                (call, payload)
            }
            Event::Notify { route, payload } => {
                let call = Call::Notify {
                    route: *route,
                    len: payload.len(),
                };
                (call, payload)
            }
            Event::Request { .. } => return Some(event), // the framework's routes
        };
        let service = &self.shared.service;
        let mut ctx = context!(self);
        let answered = std::panic::catch_unwind(AssertUnwindSafe(|| match call {
            Call::Request { route, .. } => service
                .request_now(session, &mut ctx, route, payload)
                .map(Answer::Reply),
            Call::Notify { route, .. } => service
                .notify_now(session, &mut ctx, route, payload)
                .map(Answer::Status),
            Call::Message | Call::Checkpoint => None,
        }));
        match answered {
            Ok(Some(answer)) => self.answered(call, answer),
            Ok(None) => return Some(event),
            Err(panic) => self.conclude(call, Outcome::Panicked(panic_message(&*panic))),
        }
        None
    }

    /// Runs the service's checkpoint of the session, under the panic guard.
    pub(super) fn checkpoint(&mut self, session: &mut S::Session) {
        let service = &self.shared.service;
        let mut ctx = context!(self);
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
            service.checkpoint(session, &mut ctx);
        }));
        self.shared.stats.count_checkpoint();
        if let Err(panic) = done {
            self.conclude(Call::Checkpoint, Outcome::Panicked(panic_message(&*panic)));
        }
    }

    /// Puts a handler's answer where it belongs, or closes the connection if it gave
    /// none.
    fn conclude(&mut self, call: Call, outcome: Outcome<Answer>) {
        // A handler that failed is timed too, to when the server gave up on it (a
        // cancelled one is not: its connection is ending for another reason).
        if let (Outcome::Panicked(_) | Outcome::TimedOut, Some(route)) = (&outcome, call.route()) {
            latency::answered(&self.shared.latency, route);
        }
        if let Some(answer) = self.settle(call.kind(), call.route(), outcome) {
            self.answered(call, answer);
        }
    }

    /// Puts an answer in the output (and logs an unknown route).
    fn answered(&mut self, call: Call, answer: Answer) {
        if let Some(route) = call.route() {
            latency::answered(&self.shared.latency, route);
        }
        match (call, answer) {
            (Call::Request { id, route, len }, Answer::Reply(reply)) => {
                if reply.status == Status::UNKNOWN_ROUTE {
                    self.core.unknown_route("request", route, len);
                }
                self.core.respond(id, reply.status, &reply.payload);
            }
            (Call::Notify { route, len }, Answer::Status(Status::UNKNOWN_ROUTE)) => {
                self.core.unknown_route("notify", route, len);
            }
            _ => {}
        }
    }

    /// A handler's result, or `None` with the connection marked to close when the
    /// handler panicked, was cancelled, or timed out.
    fn settle<R>(
        &mut self,
        kind: &'static str,
        route: Option<u16>,
        outcome: Outcome<R>,
    ) -> Option<R> {
        let reason = match outcome {
            Outcome::Done(value) => return Some(value),
            Outcome::Panicked(panic) => {
                let name = route.and_then(|r| self.shared.service.route_name(r));
                error!(panic = %panic, kind, route, name, "handler panicked");
                DisconnectReason::HandlerPanic
            }
            Outcome::Cancelled => {
                let close = self.stop_reason();
                self.core.close(close.reason, close.text);
                return None;
            }
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
        self.core.close(reason, None);
        None
    }

    /// Takes what the mailbox holds: a kick or an overflow decides the close first
    /// (before any message handler runs, so that the handler a kick interrupts cannot
    /// be mistaken for a shutdown); frames are queued, to leave before the kick;
    /// messages are returned in order for [`Connection::handle_messages`] (an empty
    /// `Vec` costs nothing, so a broadcast's wakeup allocates nothing).
    pub(super) fn take_mail(&mut self) -> Vec<S::Message> {
        match self.mailbox.verdict() {
            Verdict::Kicked(reason, text) => self.core.kick(reason, text),
            Verdict::Overflowed => self.core.close(DisconnectReason::SlowConsumer, None),
            Verdict::Open => {}
        }
        let mut messages = Vec::new();
        while let Some(delivery) = self.mailbox.next() {
            match delivery {
                Delivery::Frame(frame) => self.core.queue_reserved_frame(frame),
                Delivery::Message(message) => {
                    self.mailbox.release_message();
                    if !self.core.is_closing() {
                        messages.push(message);
                    }
                }
                Delivery::Kick(..) => {} // the mailbox keeps kicks apart
            }
        }
        messages
    }

    /// Runs the service's `message` handler for each message, in order, while the
    /// connection stays open.
    pub(super) async fn handle_messages(
        &mut self,
        messages: Vec<S::Message>,
        session: &mut S::Session,
    ) {
        for message in messages {
            if self.core.is_closing() {
                break;
            }
            let timeout = self.shared.config.limits.handler_timeout;
            let mut ctx = context!(self);
            let (service, session) = (&self.shared.service, &mut *session);
            let handler = guarded(async move {
                service.message(session, &mut ctx, message).await;
                Answer::Nothing
            });
            let (outcome, _) = run_handler(&self.cancel, timeout, handler).await;
            self.conclude(Call::Message, outcome);
        }
    }

    /// Why the connection was cancelled: a kick in its mailbox (frames delivered
    /// before still go out first), an overflow, else the connection group's reason.
    pub(super) fn stop_reason(&mut self) -> Close {
        let verdict = self.mailbox.verdict();
        while let Some(delivery) = self.mailbox.next() {
            match delivery {
                Delivery::Frame(frame) => self.core.queue_reserved_frame(frame),
                Delivery::Message(_) => self.mailbox.release_message(),
                Delivery::Kick(..) => {}
            }
        }
        match verdict {
            Verdict::Kicked(reason, text) => Close {
                reason: DisconnectReason::Kicked(reason),
                text: Some(text),
            },
            Verdict::Overflowed => Close::from(DisconnectReason::SlowConsumer),
            Verdict::Open => Close::from(self.group.stop_reason()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_finishes_at_once_costs_no_wait() {
        let cancel = CancellationToken::new();
        let (outcome, waited) = run_handler(&cancel, TIMEOUT, guarded(async { 7 })).await;
        assert!(matches!(outcome, Outcome::Done(7)));
        assert!(waited.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_never_finishes_is_dropped_exactly_at_its_timeout() {
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let never = guarded(std::future::pending::<()>());
        let (outcome, waited) = run_handler(&cancel, TIMEOUT, never).await;
        assert!(matches!(outcome, Outcome::TimedOut));
        assert!(waited.is_some());
        assert_eq!(start.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_within_its_timeout_finishes() {
        let cancel = CancellationToken::new();
        let slow = guarded(async {
            tokio::time::sleep(TIMEOUT - Duration::from_millis(1)).await;
            "done"
        });
        let (outcome, waited) = run_handler(&cancel, TIMEOUT, slow).await;
        assert!(matches!(outcome, Outcome::Done("done")));
        assert!(waited.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_interrupts_a_waiting_handler_when_it_happens() {
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            canceller.cancel();
        });
        let start = Instant::now();
        let never = guarded(std::future::pending::<()>());
        let (outcome, _) = run_handler(&cancel, TIMEOUT, never).await;
        assert!(matches!(outcome, Outcome::Cancelled));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_before_or_after_a_wait_is_caught_with_its_message() {
        let cancel = CancellationToken::new();
        let at_once = guarded(async { panic!("boom") });
        let (outcome, waited) = run_handler::<()>(&cancel, TIMEOUT, at_once).await;
        assert!(matches!(outcome, Outcome::Panicked(ref m) if m == "boom"));
        assert!(waited.is_none());
        let later = guarded(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            panic!("late {}", 42)
        });
        let (outcome, waited) = run_handler::<()>(&cancel, TIMEOUT, later).await;
        assert!(matches!(outcome, Outcome::Panicked(ref m) if m == "late 42"));
        assert!(waited.is_some());
    }
}
