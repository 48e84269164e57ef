//! Calling the service: one handler at a time, in arrival order, each under
//! `catch_unwind` and a timeout; the framework's own routes; and what the mailbox
//! delivers.
//!
//! A request or notify is first offered to the service's fast path (`request_now`,
//! `notify_now`: no future, no allocation); otherwise its handler's future is boxed
//! where it is made and polled once at once, since most handlers finish without
//! waiting. One that waits becomes the connection's [`InFlight`] handler, which the
//! connection loop polls beside its socket, mailbox and timer: while it waits, the
//! connection goes on writing what is queued, taking its mail, answering pings and
//! minding its limits and deadlines. Only the next handler calls wait for it
//! (requests and notifies are held, a few at most, then reading stops; messages are
//! kept in [`Busy`], bounded by the budget), so answers keep their order.
//!
//! A handler that may wait owns what it needs of its connection (the shared state,
//! the hub, the mailbox: reference-counted clones) and holds the session, which it
//! hands back when it finishes; it reaches its own connection through [`Staged`]
//! effects, which are moved into the core after every poll of it.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use gatehouse_protocol::{
    Status, RESERVED_ROUTES_START, ROUTE_END_SESSION, ROUTE_FAULT_CRASH_HUB,
    ROUTE_FAULT_PANIC_HANDLER,
};
use tracing::{error, warn};

use super::{clock, Connection, Transport};
use crate::connection::{Close, ConnId, ConnectionCore, DisconnectReason, Event, NoRoom, Staged};
use crate::group::{Group, Shared};
use crate::guard::panic_message;
use crate::mailbox::{Delivery, Mailbox, Verdict};
use crate::metrics::latency;
use crate::service::{Context, Own, Reply, Service};
use crate::sessions::Refusal;

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

/// How a handler ended (one dropped because its connection ended has no outcome).
enum Outcome<T> {
    Done(T),
    Panicked(String),
    /// It ran past `limits.handler_timeout`; it was dropped.
    TimedOut,
}

/// What a handler answers, whichever kind it is.
pub(super) enum Answer {
    Reply(Reply),
    Status(Status),
    Nothing,
    /// The framework's end session request: the session ends with the connection.
    EndSession,
}

/// What a handler call answers to, kept beside it so its outcome lands right.
#[derive(Debug, Clone, Copy)]
enum Call {
    Request {
        id: u32,
        route: u16,
        len: usize,
    },
    Notify {
        route: u16,
        len: usize,
    },
    Message,
    Checkpoint,
    /// The `detached` or `resumed` hook.
    Moved,
}

impl Call {
    fn kind(self) -> &'static str {
        match self {
            Call::Request { .. } => "request",
            Call::Notify { .. } => "notify",
            Call::Message => "message",
            Call::Checkpoint => "checkpoint",
            Call::Moved => "detached or resumed hook",
        }
    }

    fn route(self) -> Option<u16> {
        match self {
            Call::Request { route, .. } | Call::Notify { route, .. } => Some(route),
            Call::Message | Call::Checkpoint | Call::Moved => None,
        }
    }
}

/// What a handler is called for.
pub(super) enum Work<M> {
    Event(Event),
    Message(M),
}

/// What a handler call that may wait resolves to: its answer, and the session it
/// held, handed back.
pub(super) type Done<'s, S> = (Answer, &'s mut <S as Service>::Session);

/// A handler that had to wait: the connection loop polls it.
pub(super) struct InFlight<'s, S: Service> {
    call: Call,
    handler: Guarded<'s, Done<'s, S>>,
    staged: Arc<Staged>,
    /// `limits.handler_timeout` after its first poll.
    pub(super) deadline: Instant,
    /// When the input that brought it was read: its latency runs from there.
    read_at: Instant,
    /// What it resolved to, once it has (kept here rather than carried through the
    /// loop's wakeup, which would grow every wakeup's value).
    result: Option<Result<Done<'s, S>, String>>,
}

/// What a poll of the [`InFlight`] handler found.
pub(super) enum Polled {
    /// It resolved: its result waits in it for [`Connection::finish_in_flight`].
    Finished,
    /// Still waiting, and what it did changed the core (output queued, a deadline
    /// moved, a close decided): the loop must look again before it sleeps.
    Changed,
    Waiting,
}

impl<'s, S: Service> InFlight<'s, S> {
    /// Polls the handler, then moves what it did into `core`.
    pub(super) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        core: &mut ConnectionCore,
    ) -> Polled {
        let polled = Pin::new(&mut self.handler).poll(cx);
        let changed = self.staged.apply(core);
        match polled {
            Poll::Ready(result) => {
                self.result = Some(result);
                Polled::Finished
            }
            Poll::Pending if changed => Polled::Changed,
            Poll::Pending => Polled::Waiting,
        }
    }
}

/// The connection's handler work beyond the one at hand: the handler that waits, and
/// what arrived for handlers meanwhile, in the order it came. Boxed, and kept only
/// while there is such work, so that an idle connection holds none of it.
pub(super) struct Busy<'s, S: Service> {
    pub(super) in_flight: Option<InFlight<'s, S>>,
    /// Requests, notifies and messages that came meanwhile, in order, each with when
    /// it was read or delivered (a request's latency runs from there). Messages stay
    /// charged to the connection's budget (which bounds them) until their handler
    /// runs; requests and notifies are bounded by [`HELD_EVENTS`] and [`HELD_BYTES`].
    held: VecDeque<(Work<S::Message>, Instant)>,
    /// Requests and notifies in `held`, and their frames' bytes.
    held_events: usize,
    held_bytes: usize,
    /// The next frame of the input is over what may still be held: it waits there,
    /// uncut, until `held` is worked through.
    no_room: bool,
    /// A checkpoint came due while the session was lent out.
    pub(super) checkpoint_owed: bool,
    /// To give back the charge of the messages left when the connection ends.
    mailbox: Arc<Mailbox<S::Message>>,
}

/// Requests and notifies held behind a handler that waits, at most.
const HELD_EVENTS: usize = 16;

/// Bytes of the frames held behind a handler that waits, at most: a larger frame
/// waits in the input, where it is charged like any other (to the memory budget,
/// past the connection's free share).
const HELD_BYTES: usize = 16 * 1024;

impl<S: Service> Busy<'_, S> {
    fn new(mailbox: Arc<Mailbox<S::Message>>) -> Box<Self> {
        Box::new(Busy {
            in_flight: None,
            held: VecDeque::new(),
            held_events: 0,
            held_bytes: 0,
            no_room: false,
            checkpoint_owed: false,
            mailbox,
        })
    }

    /// Whether input may be cut for another event to hold (and the socket read).
    pub(super) fn can_hold(&self) -> bool {
        self.held_events < HELD_EVENTS && !self.no_room
    }

    /// The largest frame body that may still be held.
    fn room(&self) -> usize {
        HELD_BYTES.saturating_sub(self.held_bytes)
    }

    fn hold_event(&mut self, event: Event, read_at: Instant) {
        self.held_events += 1;
        self.held_bytes += event.body_len();
        self.held.push_back((Work::Event(event), read_at));
    }

    fn hold_message(&mut self, message: S::Message, delivered_at: Instant) {
        self.held.push_back((Work::Message(message), delivered_at));
    }

    /// The oldest work held, its charge or its place given back.
    fn next_held(&mut self) -> Option<(Work<S::Message>, Instant)> {
        let (work, at) = self.held.pop_front()?;
        match &work {
            Work::Event(event) => {
                self.held_events -= 1;
                self.held_bytes -= event.body_len();
                self.no_room = false;
            }
            Work::Message(_) => self.mailbox.release_message(),
        }
        Some((work, at))
    }
}

impl<S: Service> Drop for Busy<'_, S> {
    fn drop(&mut self) {
        for (work, _) in self.held.drain(..) {
            if let Work::Message(_) = work {
                self.mailbox.release_message();
            }
        }
    }
}

/// What a handler call that may wait owns of its connection, so that while it waits
/// it borrows nothing the connection loop uses.
struct Owned<S: Service> {
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
    mailbox: Arc<Mailbox<S::Message>>,
    staged: Arc<Staged>,
    id: ConnId,
    peer: SocketAddr,
}

impl<S: Service> Owned<S> {
    /// The context of a handler that may wait: what it does to its own connection
    /// is staged for the loop.
    fn context(&self) -> Context<'_, S::Message> {
        Context::new(
            self.id,
            self.peer,
            &self.shared.handle,
            &self.mailbox,
            Own::Staged(&self.staged),
        )
    }
}

/// Makes the handler call for `work`, boxed, not yet polled. The handler's context
/// lives inside the box, over what the call owns.
fn start<'s, S: Service>(
    owned: Owned<S>,
    session: &'s mut S::Session,
    work: Work<S::Message>,
    fault_injection: bool,
) -> (Call, Guarded<'s, Done<'s, S>>) {
    match work {
        Work::Event(Event::Request {
            id: rid,
            route,
            payload,
        }) => {
            let call = Call::Request {
                id: rid,
                route,
                len: payload.len(),
            };
            if route >= RESERVED_ROUTES_START {
                return (
                    call,
                    framework_request::<S>(owned.group, owned.id, session, route, fault_injection),
                );
            }
            let handler = guarded(async move {
                let mut ctx = owned.context();
                let reply = owned
                    .shared
                    .service
                    .request(session, &mut ctx, route, payload)
                    .await;
                (Answer::Reply(reply), session)
            });
            (call, handler)
        }
        Work::Event(Event::Notify { route, payload }) => {
            let call = Call::Notify {
                route,
                len: payload.len(),
            };
            let handler = guarded(async move {
                let mut ctx = owned.context();
                let status = owned
                    .shared
                    .service
                    .notify(session, &mut ctx, route, payload)
                    .await;
                (Answer::Status(status), session)
            });
            (call, handler)
        }
        Work::Message(message) => {
            let handler = guarded(async move {
                let mut ctx = owned.context();
                owned
                    .shared
                    .service
                    .message(session, &mut ctx, message)
                    .await;
                (Answer::Nothing, session)
            });
            (Call::Message, handler)
        }
    }
}

/// The framework's own routes: ending a session on purpose (answered here; the
/// driver marks the session when it answers: [`Connection::answered`]), and fault
/// injection.
fn framework_request<'s, S: Service>(
    group: Arc<Group<S::Message>>,
    id: ConnId,
    session: &'s mut S::Session,
    route: u16,
    enabled: bool,
) -> Guarded<'s, Done<'s, S>> {
    if route == ROUTE_END_SESSION {
        return guarded(async move { (Answer::EndSession, session) });
    }
    let fault = matches!(route, ROUTE_FAULT_CRASH_HUB | ROUTE_FAULT_PANIC_HANDLER);
    if !fault {
        return guarded(async move { (Answer::Reply(Reply::unknown_route(route)), session) });
    }
    if !enabled {
        warn!(route, "fault injection requested but disabled");
        let refusal = Reply::error(
            Status::FORBIDDEN,
            "fault injection is disabled (server.allow_fault_injection)",
        );
        return guarded(async move { (Answer::Reply(refusal), session) });
    }
    if route == ROUTE_FAULT_PANIC_HANDLER {
        return guarded(async { panic!("fault injection: handler panic requested") });
    }
    guarded(async move {
        let reply = match group.hub.crash(id).await {
            Ok(()) => Reply::empty(),
            Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
        };
        (Answer::Reply(reply), session)
    })
}

impl<S: Service, T: Transport> Connection<S, T> {
    /// Runs, in order, what is ready for handlers, until one has to wait or the
    /// connection closes: first what came while the last one waited (a checkpoint,
    /// then requests, notifies and messages in the order they came), then new input
    /// read at `read_at`. While a handler waits, input is still cut (so pings are
    /// answered and every limit applies) and its requests and notifies held, a few
    /// at most.
    #[inline(always)] // into the connection loop: this is the hot path
    pub(super) fn run_ready<'s>(
        &mut self,
        session: &mut Option<&'s mut S::Session>,
        busy: &mut Option<Box<Busy<'s, S>>>,
        read_at: Instant,
    ) {
        // Nothing held, no handler waiting, most requests answered by the fast path.
        while busy.is_none() {
            let Some(event) = self.core.poll_event(read_at) else {
                return;
            };
            let Some(at_hand) = session.as_deref_mut() else {
                return self.lent_out();
            };
            if let Some(event) = self.answer_now(event, at_hand, 0) {
                self.dispatch(Work::Event(event), session, busy, read_at);
            }
        }
        self.run_busy(session, busy, read_at);
    }

    /// [`Connection::run_ready`] once a handler waits, or work is held.
    fn run_busy<'s>(
        &mut self,
        session: &mut Option<&'s mut S::Session>,
        busy: &mut Option<Box<Busy<'s, S>>>,
        read_at: Instant,
    ) {
        while !self.core.is_closing() {
            let (work, at) = match busy.as_deref_mut() {
                Some(waiting) if waiting.in_flight.is_some() => {
                    while waiting.can_hold() {
                        match self.core.poll_event_within(read_at, waiting.room()) {
                            Ok(Some(event)) => waiting.hold_event(event, read_at),
                            Ok(None) => break,
                            Err(NoRoom) => waiting.no_room = true,
                        }
                    }
                    return;
                }
                Some(backlog) => {
                    if std::mem::take(&mut backlog.checkpoint_owed) {
                        if let Some(session) = session.as_deref_mut() {
                            self.checkpoint(session);
                        }
                        continue;
                    }
                    let Some(held) = backlog.next_held() else {
                        *busy = None;
                        continue;
                    };
                    held
                }
                None => match self.core.poll_event(read_at) {
                    Some(event) => (Work::Event(event), read_at),
                    None => return,
                },
            };
            let held = at != read_at && matches!(work, Work::Event(_));
            if held {
                // A held request: timed from its own read, in a batch of its own.
                latency::end(&self.shared.latency);
                latency::begin(&self.shared.latency, at);
            }
            self.offer(work, session, busy, at);
            if held {
                latency::end(&self.shared.latency);
                latency::begin(&self.shared.latency, read_at);
            }
        }
    }

    /// Offers `work` to the fast path (a request or notify), then, unless it was
    /// answered there, makes the handler call.
    fn offer<'s>(
        &mut self,
        work: Work<S::Message>,
        session: &mut Option<&'s mut S::Session>,
        busy: &mut Option<Box<Busy<'s, S>>>,
        read_at: Instant,
    ) {
        let Some(at_hand) = session.as_deref_mut() else {
            return self.lent_out();
        };
        let work = match work {
            Work::Event(event) => match self.answer_now(event, at_hand, held_behind(busy)) {
                Some(event) => Work::Event(event),
                None => return,
            },
            message => message,
        };
        self.dispatch(work, session, busy, read_at);
    }

    /// Makes the handler call for `work` (which the fast path declined), polled once;
    /// it becomes the connection's [`InFlight`] handler if it has to wait. Only
    /// called while the session is at hand (no handler waits).
    fn dispatch<'s>(
        &mut self,
        work: Work<S::Message>,
        session: &mut Option<&'s mut S::Session>,
        busy: &mut Option<Box<Busy<'s, S>>>,
        read_at: Instant,
    ) {
        let Some(lent) = session.take() else {
            return self.lent_out();
        };
        let budget = self.core.budget().clone();
        let staged = Arc::new(Staged::new(self.core.max_frame_bytes(), budget));
        let owned = Owned {
            shared: self.shared.clone(),
            group: self.group.clone(),
            mailbox: self.mailbox.clone(),
            staged: staged.clone(),
            id: self.id,
            peer: self.peer,
        };
        let faults = self.shared.config.server.allow_fault_injection;
        let (call, mut handler) = start(owned, lent, work, faults);
        // Polled with a waker that wakes nothing: if it waits, the connection loop
        // polls it again with the task's own before it sleeps.
        let mut cx = std::task::Context::from_waker(Waker::noop());
        let polled = Pin::new(&mut handler).poll(&mut cx);
        staged.apply(&mut self.core);
        match polled {
            Poll::Ready(result) => {
                let held = held_behind(busy);
                self.finish(call, result, &staged, session, held);
            }
            Poll::Pending => {
                // The answers so far are ready now; this one will be timed from the
                // same read when it comes.
                latency::end(&self.shared.latency);
                let deadline = clock() + self.shared.config.limits.handler_timeout;
                let mailbox = &self.mailbox;
                let backlog = busy.get_or_insert_with(|| Busy::new(mailbox.clone()));
                backlog.in_flight = Some(InFlight {
                    call,
                    handler,
                    staged,
                    deadline,
                    read_at,
                    result: None,
                });
            }
        }
    }

    /// A handler call was about to be made while the session is lent out, which
    /// `run_ready` never does: closed rather than run two handlers at once.
    #[cold]
    fn lent_out(&mut self) {
        error!("a handler call with the session lent out; closing");
        self.core.close(DisconnectReason::HandlerPanic, None);
    }

    /// The handler that waited has finished: its answer is queued, timed from the
    /// read that brought it, and the session is back.
    pub(super) fn finish_in_flight<'s>(
        &mut self,
        busy: &mut Option<Box<Busy<'s, S>>>,
        session: &mut Option<&'s mut S::Session>,
    ) {
        let Some(InFlight {
            call,
            handler,
            staged,
            read_at,
            result: Some(result),
            ..
        }) = busy.as_deref_mut().and_then(|b| b.in_flight.take())
        else {
            return;
        };
        drop(handler);
        latency::begin(&self.shared.latency, read_at);
        let held = held_behind(busy);
        self.finish(call, result, &staged, session, held);
        latency::end(&self.shared.latency);
    }

    /// Whether the handler that waits has run past `limits.handler_timeout` at
    /// `now`: then it is dropped (what it did before, its kick included, still
    /// counts) and the connection closes.
    pub(super) fn time_out_in_flight(&mut self, busy: &mut Option<Box<Busy<'_, S>>>, now: Instant) {
        let Some(in_flight) = busy
            .as_deref_mut()
            .and_then(|waiting| waiting.in_flight.take_if(|f| now >= f.deadline))
        else {
            return;
        };
        let InFlight {
            call,
            handler,
            staged,
            read_at,
            ..
        } = in_flight;
        drop(handler);
        staged.finish(&mut self.core);
        latency::begin(&self.shared.latency, read_at);
        self.conclude(call, Outcome::TimedOut, 0);
        latency::end(&self.shared.latency);
    }

    /// The connection was cancelled while a handler waits: a kick that handler made
    /// came first, so it is the reason (the first close decided wins).
    pub(super) fn cancel_in_flight(&mut self, busy: &mut Option<Box<Busy<'_, S>>>) {
        if let Some(in_flight) = busy.as_deref_mut().and_then(|b| b.in_flight.take()) {
            drop(in_flight.handler);
            in_flight.staged.finish(&mut self.core);
        }
    }

    /// A handler call ended with `result`: what it did last and its own kick are
    /// decided first (so that a kick comes before its panic), then the answer goes
    /// out and the session comes back.
    fn finish<'s>(
        &mut self,
        call: Call,
        result: Result<Done<'s, S>, String>,
        staged: &Staged,
        session: &mut Option<&'s mut S::Session>,
        held: u64,
    ) {
        staged.finish(&mut self.core);
        let outcome = match result {
            Ok((answer, lent)) => {
                *session = Some(lent);
                Outcome::Done(answer)
            }
            Err(panic) => Outcome::Panicked(panic),
        };
        self.conclude(call, outcome, held);
    }

    /// The fast path: offers the event to the service's `request_now` or `notify_now`
    /// (no future, no allocation). Returns the event if the service left it to its
    /// async handler. `held`: the requests and notifies held behind it.
    fn answer_now(&mut self, event: Event, session: &mut S::Session, held: u64) -> Option<Event> {
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
            Call::Message | Call::Checkpoint | Call::Moved => None,
        }));
        match answered {
            Ok(Some(answer)) => self.answered(call, answer, held),
            Ok(None) => return Some(event),
            Err(panic) => self.conclude(call, Outcome::Panicked(panic_message(&*panic)), held),
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
            self.conclude(
                Call::Checkpoint,
                Outcome::Panicked(panic_message(&*panic)),
                0,
            );
        }
    }

    /// Runs the service's `resumed` (else `detached`) hook, under the panic guard.
    #[cold]
    pub(super) fn moved(&mut self, resumed: bool) {
        let service = &self.shared.service;
        let mut ctx = context!(self);
        let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if resumed {
                service.resumed(&mut ctx);
            } else {
                service.detached(&mut ctx);
            }
        }));
        if let Err(panic) = done {
            self.conclude(Call::Moved, Outcome::Panicked(panic_message(&*panic)), 0);
        }
    }

    /// Puts a handler's answer where it belongs, or closes the connection if it gave
    /// none. `held`: the requests and notifies held behind the call.
    fn conclude(&mut self, call: Call, outcome: Outcome<Answer>, held: u64) {
        // A handler that failed is timed too, to when the server gave up on it (a
        // cancelled one is not: its connection is ending for another reason).
        if let (Outcome::Panicked(_) | Outcome::TimedOut, Some(route)) = (&outcome, call.route()) {
            latency::answered(&self.shared.latency, route);
        }
        if let Some(answer) = self.settle(call.kind(), call.route(), outcome) {
            self.answered(call, answer, held);
        }
    }

    /// Puts an answer in the output (and logs an unknown route). A request whose
    /// handler logged a resumable service's connection in is answered after the
    /// session's offer (`held`: the requests and notifies held behind it, which the
    /// client numbers after it). A request to end the session marks it here, in its
    /// turn after the requests before it.
    fn answered(&mut self, call: Call, answer: Answer, held: u64) {
        if let Some(route) = call.route() {
            latency::answered(&self.shared.latency, route);
        }
        match (call, answer) {
            (Call::Request { id, .. }, Answer::EndSession) => {
                // The session ends with this connection: a resume meanwhile is
                // refused.
                self.core.leave_session();
                self.core.respond(id, Status::OK, &[]);
            }
            (Call::Request { id, route, len }, Answer::Reply(reply)) => {
                if S::RESUMABLE && self.core.session_due() {
                    self.offer_session(held);
                }
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
    /// handler panicked or timed out.
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

    /// Offers the session a resume, unless `resume.window` is 0 (or the server
    /// has no secret to make tokens with, which was logged at its start). The
    /// session's id is the connection's.
    #[cold]
    fn offer_session(&mut self, held: u64) {
        let resume = &self.shared.config.resume;
        if resume.window.is_zero() {
            return;
        }
        let id = self.id.0;
        let Some(token) = self.shared.sessions.token(id, 0) else {
            return;
        };
        let window_ms = u32::try_from(resume.window.as_millis()).unwrap_or(u32::MAX);
        let buffer_bytes = resume.buffer_bytes;
        self.core
            .offer_session(id, window_ms, token, held, buffer_bytes);
    }

    /// Takes what the mailbox holds: a kick or an overflow decides the close first
    /// (before any message handler runs); frames are queued, to leave before the
    /// kick; messages join the `busy` backlog, in order, for
    /// [`Connection::run_ready`] (still charged to the budget until their handler
    /// runs, so that messages piling up behind a handler that waits stay bounded);
    /// a new connection's transport resumes the session, or is refused. True if the
    /// session was resumed.
    pub(super) fn take_mail<'s>(
        &mut self,
        busy: &mut Option<Box<Busy<'s, S>>>,
        delivered_at: Instant,
    ) -> bool {
        let mut resumed = false;
        match self.mailbox.verdict() {
            Verdict::Kicked(reason, text) => self.core.kick(reason, text),
            Verdict::Overflowed => self.core.close(DisconnectReason::SlowConsumer, None),
            Verdict::Open => {}
        }
        while let Some(delivery) = self.mailbox.next() {
            match delivery {
                Delivery::Frame(frame) => self.core.queue_reserved_frame(frame),
                Delivery::Message(_) if self.core.is_closing() => self.mailbox.release_message(),
                Delivery::Message(message) => {
                    let mailbox = &self.mailbox;
                    busy.get_or_insert_with(|| Busy::new(mailbox.clone()))
                        .hold_message(message, delivered_at);
                }
                Delivery::Kick(..) => {} // the mailbox keeps kicks apart
                Delivery::Resume(handoff) => {
                    resumed |= self.take_handoff(handoff, delivered_at);
                }
            }
        }
        resumed
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
                // The connection is stopping (a shutdown, a hub restart).
                Delivery::Resume(handoff) => self.turn_away(handoff, Refusal::Unknown),
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

/// The requests and notifies held behind the call being answered.
fn held_behind<S: Service>(busy: &Option<Box<Busy<'_, S>>>) -> u64 {
    busy.as_ref().map_or(0, |b| b.held_events as u64)
}
