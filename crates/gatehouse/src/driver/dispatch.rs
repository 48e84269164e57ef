//! Calling the service: one handler at a time, in arrival order, each under
//! `catch_unwind`, a timeout and the connection's cancellation; the framework's own
//! routes; and what the mailbox delivers.
//!
//! A handler's future is boxed where it is made (the one allocation a request
//! costs), so that a large handler future does not enlarge every idle connection's
//! task; it is polled once before any timer or cancellation waiter is armed, since
//! most handlers finish without waiting.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::{
    Status, RESERVED_ROUTES_START, ROUTE_FAULT_CRASH_HUB, ROUTE_FAULT_PANIC_HANDLER,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{Connection, Transport};
use crate::connection::{Close, DisconnectReason, Event};
use crate::mailbox::Delivery;
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
/// or a hub restart, nor keep a dead connection open. Also returns whether the
/// handler had to wait.
async fn run_handler<T: Send>(
    cancel: &CancellationToken,
    timeout: Duration,
    mut handler: Guarded<'_, T>,
) -> (Outcome<T>, bool) {
    let settled = |result: Result<T, String>| match result {
        Ok(value) => Outcome::Done(value),
        Err(panic) => Outcome::Panicked(panic),
    };
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut handler).poll(cx))).await;
    if let Poll::Ready(result) = first_poll {
        return (settled(result), false);
    }
    // The slow path is boxed too: its timer and waiter would otherwise enlarge every
    // idle connection's task, which is sized for its largest await point.
    let outcome = Box::pin(async move {
        tokio::select! {
            result = tokio::time::timeout(timeout, handler) => match result {
                Ok(result) => settled(result),
                Err(_) => Outcome::TimedOut,
            },
            () = cancel.cancelled() => Outcome::Cancelled,
        }
    })
    .await;
    (outcome, true)
}

/// What running a handler needs, borrowed side by side from the connection.
pub(super) struct HandlerParts<'c, S: Service> {
    pub(super) service: &'c S,
    pub(super) ctx: Context<'c, S::Message>,
    cancel: &'c CancellationToken,
    timeout: Duration,
}

impl<S: Service, T: Transport> Connection<S, T> {
    /// The service, a handler's context, and what bounds the handler.
    pub(super) fn handler_parts(&mut self) -> HandlerParts<'_, S> {
        HandlerParts {
            service: &self.shared.service,
            ctx: Context {
                id: self.id,
                peer: self.peer,
                hub: &self.group.hub,
                core: &mut self.core,
            },
            cancel: &self.cancel,
            timeout: self.shared.config.limits.handler_timeout,
        }
    }

    /// Runs the handler of one event; returns whether it had to wait.
    pub(super) async fn dispatch(&mut self, event: Event, session: &mut S::Session) -> bool {
        match event {
            Event::Request { id, route, payload } => {
                let (reply, waited) = if route >= RESERVED_ROUTES_START {
                    Box::pin(self.framework_request(route)).await
                } else {
                    self.service_request(session, route, payload).await
                };
                if let Some(reply) = reply {
                    self.core.respond(id, reply.status, reply.payload);
                }
                waited
            }
            Event::Notify { route, payload } => {
                let len = payload.len();
                let mut parts = self.handler_parts();
                let handler = guarded(parts.service.notify(
                    session,
                    &mut parts.ctx,
                    route,
                    payload,
                ));
                let (outcome, waited) = run_handler(parts.cancel, parts.timeout, handler).await;
                if self.settle("notify", Some(route), outcome) == Some(Status::UNKNOWN_ROUTE) {
                    self.core.unknown_route("notify", route, len);
                }
                waited
            }
        }
    }

    /// Runs the service's request handler; `None` if it did not answer (it panicked,
    /// timed out or was cancelled, and the connection is closing).
    async fn service_request(
        &mut self,
        session: &mut S::Session,
        route: u16,
        payload: Bytes,
    ) -> (Option<Reply>, bool) {
        let len = payload.len();
        let mut parts = self.handler_parts();
        let handler = guarded(
            parts
                .service
                .request(session, &mut parts.ctx, route, payload),
        );
        let (outcome, waited) = run_handler(parts.cancel, parts.timeout, handler).await;
        let reply = self.settle("request", Some(route), outcome);
        if reply
            .as_ref()
            .is_some_and(|reply| reply.status == Status::UNKNOWN_ROUTE)
        {
            self.core.unknown_route("request", route, len);
        }
        (reply, waited)
    }

    /// The framework's own routes: fault injection.
    async fn framework_request(&mut self, route: u16) -> (Option<Reply>, bool) {
        let fault = matches!(route, ROUTE_FAULT_CRASH_HUB | ROUTE_FAULT_PANIC_HANDLER);
        if !fault {
            self.core.unknown_route("request", route, 0);
            return (Some(Reply::unknown_route(route)), false);
        }
        if !self.shared.config.server.allow_fault_injection {
            warn!(route, "fault injection requested but disabled");
            let refused = Reply::error(
                Status::FORBIDDEN,
                "fault injection is disabled (server.allow_fault_injection)",
            );
            return (Some(refused), false);
        }
        if route == ROUTE_FAULT_CRASH_HUB {
            let reply = match self.group.hub.crash(self.id).await {
                Ok(()) => Reply::empty(),
                Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
            };
            return (Some(reply), true);
        }
        let parts = self.handler_parts();
        let panicking = guarded(async {
            panic!("fault injection: handler panic requested");
        });
        let (outcome, waited) = run_handler(parts.cancel, parts.timeout, panicking).await;
        (self.settle("request", Some(route), outcome), waited)
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

    /// Takes what the mailbox holds: frames are queued, a kick closes the connection
    /// (frames delivered before it still go out), messages go to the service's
    /// `message` handler in order.
    pub(super) async fn take_deliveries(&mut self, session: &mut S::Session) {
        let mut deliveries = Vec::new();
        if self.mailbox.drain(&mut deliveries) {
            self.core.close(DisconnectReason::SlowConsumer, None);
        }
        // A kick is decided before any message handler runs, so that the handler it
        // interrupts cannot be mistaken for a shutdown.
        let kick = deliveries
            .iter()
            .position(|d| matches!(d, Delivery::Kick(..)));
        if let Some(at) = kick {
            if let Some(Delivery::Kick(reason, text)) = deliveries.get(at) {
                self.core.kick(*reason, text.clone());
            }
        }
        for (index, delivery) in deliveries.into_iter().enumerate() {
            match delivery {
                Delivery::Frame(frame) if kick.is_none_or(|at| index < at) => {
                    self.core.queue_reserved_frame(frame);
                }
                Delivery::Frame(frame) => self.mailbox.release_frame(frame.len()),
                Delivery::Message(message) => {
                    self.mailbox.release_message();
                    if self.core.is_closing() {
                        continue;
                    }
                    let mut parts = self.handler_parts();
                    let handler = guarded(parts.service.message(session, &mut parts.ctx, message));
                    let (outcome, _) = run_handler(parts.cancel, parts.timeout, handler).await;
                    self.settle("message", None, outcome);
                }
                Delivery::Kick(..) => {}
            }
        }
    }

    /// Why the connection was cancelled: a kick waiting in its mailbox (frames queued
    /// before it still go out first), else the connection group's reason.
    pub(super) fn stop_reason(&mut self) -> Close {
        let mut deliveries = Vec::new();
        self.mailbox.drain(&mut deliveries);
        let mut kick = None;
        for delivery in deliveries {
            match delivery {
                Delivery::Frame(frame) if kick.is_none() => self.core.queue_reserved_frame(frame),
                Delivery::Frame(frame) => self.mailbox.release_frame(frame.len()),
                Delivery::Kick(reason, text) => {
                    kick.get_or_insert((reason, text));
                }
                Delivery::Message(_) => self.mailbox.release_message(),
            }
        }
        match kick {
            Some((reason, text)) => Close {
                reason: DisconnectReason::Kicked(reason),
                text: Some(text),
            },
            None => Close::from(self.group.stop_reason()),
        }
    }
}
