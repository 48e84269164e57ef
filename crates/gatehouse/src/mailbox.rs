//! A connection's mailbox: how the hub (and anything else) reaches a connection
//! without ever waiting on it.
//!
//! A delivery is queued, or refused when the connection's unsent bytes would pass its
//! budget, and the refusal marks the connection a slow consumer. The budget is the
//! one the connection's core charges for its own output ([`OutboundBudget`]), so
//! `limits.outbound_queue_bytes` bounds both together. A tokio mpsc channel would do
//! the queueing, but it allocates a block of slots per channel up front and bounds by
//! count, not bytes; an idle connection here costs an empty `VecDeque`.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::KickReason;
use tokio_util::sync::CancellationToken;

use crate::connection::OutboundBudget;
use crate::sessions::Resuming;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{AtomicWaker, Mutex, MutexGuard};
use crate::timer::{Timer, TimerError, Timers};

/// What can be delivered to a connection.
pub(crate) enum Delivery<M> {
    /// An encoded frame (a push, a broadcast), written as is.
    Frame(Bytes),
    /// A message for the service's `message` handler.
    Message(M),
    /// Close the connection with this reason.
    Kick(KickReason, String),
    /// A new connection resumes this connection's session
    /// ([`Mailbox::hand_over`]).
    Resume(Box<dyn Resuming>),
}

/// Budget charged for a [`Delivery::Message`], which has no byte size of its own, so
/// that messages are bounded too.
pub(crate) const MESSAGE_COST: usize = 64;

/// A connection's inbox, shared between its task and the hub.
pub(crate) struct Mailbox<M> {
    state: Mutex<MailboxState<M>>,
    /// Set while mail (a delivery, a kick, an overflow) waits to be taken: lets the
    /// connection check for mail without taking the lock.
    mail: AtomicBool,
    budget: Arc<OutboundBudget>,
    /// The connection task, woken when mail arrives.
    waker: AtomicWaker,
    /// Cancelled by a kick, so that a kick also interrupts a handler that is running.
    interrupt: CancellationToken,
    /// The session's timers, made at the first one (most sessions have none), all
    /// cancelled when the connection ends.
    timers: OnceLock<Timers>,
}

struct MailboxState<M> {
    /// Frames and messages, in the order they came.
    queue: VecDeque<Delivery<M>>,
    /// The first kick: kept apart from the queue, so that it is decided before any
    /// message handler could run (and be interrupted by it).
    kick: Option<(KickReason, String)>,
    /// A delivery was refused for lack of budget: the connection must close.
    overflowed: bool,
    /// The connection ended; deliveries are dropped.
    closed: bool,
}

/// What the connection finds in its mailbox besides frames and messages.
pub(crate) enum Verdict {
    /// Nothing that ends the connection.
    Open,
    /// Kicked, with this reason and text.
    Kicked(KickReason, String),
    /// A delivery did not fit the budget: the connection reads too slowly.
    Overflowed,
}

impl<M> Mailbox<M> {
    /// The connection's budget (and meter), shared with its core.
    pub(crate) fn budget(&self) -> &OutboundBudget {
        &self.budget
    }

    pub(crate) fn new(budget: Arc<OutboundBudget>, interrupt: CancellationToken) -> Self {
        Mailbox {
            state: Mutex::new(MailboxState {
                queue: VecDeque::new(),
                kick: None,
                overflowed: false,
                closed: false,
            }),
            mail: AtomicBool::new(false),
            budget,
            waker: AtomicWaker::new(),
            interrupt,
            timers: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MailboxState<M>> {
        // Nothing panics while holding this lock (no user code runs under it).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a delivery. Returns false if it was dropped: the connection is gone, or
    /// over budget (then it is marked to close as a slow consumer). Never waits.
    pub(crate) fn deliver(&self, delivery: Delivery<M>) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let cost = match &delivery {
            Delivery::Frame(frame) => frame.len(),
            Delivery::Message(_) => MESSAGE_COST,
            // A kick must always get through (a resume comes by `hand_over`).
            Delivery::Kick(..) | Delivery::Resume(_) => 0,
        };
        let mut kicked = false;
        let accepted = match delivery {
            Delivery::Kick(reason, text) => {
                state.kick.get_or_insert((reason, text));
                kicked = true;
                true
            }
            _ if !self.budget.reserve(cost) => {
                state.overflowed = true;
                false
            }
            delivery => {
                state.queue.push_back(delivery);
                true
            }
        };
        self.announce(state);
        if kicked {
            self.interrupt.cancel();
        }
        accepted
    }

    /// Hands a new connection's transport to this connection's session, in order
    /// with the rest of its mail and outside its budget; given back if the
    /// connection has ended.
    pub(crate) fn hand_over(&self, handoff: Box<dyn Resuming>) -> Result<(), Box<dyn Resuming>> {
        let mut state = self.lock();
        if state.closed {
            return Err(handoff);
        }
        state.queue.push_back(Delivery::Resume(handoff));
        self.announce(state);
        Ok(())
    }

    /// Raises the mail flag (under the lock that changed the mail), then wakes the
    /// connection outside it.
    fn announce(&self, state: MutexGuard<'_, MailboxState<M>>) {
        self.mail.store(true, Ordering::Release);
        drop(state);
        self.waker.wake();
    }

    /// Whether mail waits to be taken (no lock taken).
    pub(crate) fn has_mail(&self) -> bool {
        self.mail.load(Ordering::Acquire)
    }

    /// Ready when mail waits to be taken; otherwise the task is woken when it comes.
    pub(crate) fn poll_mail(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // Registered before looking, so that mail arriving in between still wakes.
        self.waker.register(cx.waker());
        if self.has_mail() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Whether the mail ends the connection: a kick (the first one) or an overflow.
    pub(crate) fn verdict(&self) -> Verdict {
        let mut state = self.lock();
        match state.kick.take() {
            Some((reason, text)) => Verdict::Kicked(reason, text),
            None if state.overflowed => Verdict::Overflowed,
            None => Verdict::Open,
        }
    }

    /// The next frame or message, in order; `None` once the queue is empty. The mail
    /// flag is cleared then, under the lock, so that a delivery racing with it is
    /// never missed; and only if no kick or overflow waits either: one that came
    /// after [`Mailbox::verdict`] looked keeps the flag up for the next wakeup. An
    /// overflow is never cleared, so the flag stays up from then on: every caller
    /// closes the connection on [`Verdict::Overflowed`] (one that did not would find
    /// its mailbox always ready).
    pub(crate) fn next(&self) -> Option<Delivery<M>> {
        let mut state = self.lock();
        let next = state.queue.pop_front();
        if next.is_none() {
            if state.kick.is_none() && !state.overflowed {
                self.mail.store(false, Ordering::Release);
            }
            if state.queue.capacity() > 8 {
                state.queue = VecDeque::new(); // give a burst's memory back
            }
        }
        next
    }

    /// Gives back the budget of a frame taken out of the mailbox and not queued.
    pub(crate) fn release_frame(&self, len: usize) {
        self.budget.release(len);
    }

    /// Gives back the budget of a message taken out of the mailbox.
    pub(crate) fn release_message(&self) {
        self.budget.release(MESSAGE_COST);
    }

    /// Marks the connection ended; later deliveries are dropped, and so is what is
    /// still queued (its budget given back), but for the resumes handed over, which
    /// are returned for the caller to refuse.
    #[must_use = "a resume handed over must be refused"]
    pub(crate) fn close(&self) -> Vec<Box<dyn Resuming>> {
        if let Some(timers) = self.timers.get() {
            timers.cancel_all();
        }
        let mut state = self.lock();
        state.closed = true;
        let mut resumes = Vec::new();
        for delivery in std::mem::take(&mut state.queue) {
            match delivery {
                Delivery::Frame(frame) => self.budget.release(frame.len()),
                Delivery::Message(_) => self.budget.release(MESSAGE_COST),
                Delivery::Kick(..) => {}
                Delivery::Resume(handoff) => resumes.push(handoff),
            }
        }
        resumes
    }
}

impl<M: Send + 'static> Mailbox<M> {
    /// Delivers `message` to the session after `delay`, then every `period` if given
    /// (`next` makes each one), until the connection ends or the timer is cancelled.
    pub(crate) fn start_timer(
        self: &Arc<Self>,
        delay: Duration,
        period: Option<Duration>,
        mut next: impl FnMut() -> Option<M> + Send + 'static,
    ) -> Result<Timer, TimerError> {
        let mailbox = Arc::downgrade(self);
        self.timers
            .get_or_init(Timers::new)
            .start(delay, period, move || {
                let delivered = match (mailbox.upgrade(), next()) {
                    (Some(mailbox), Some(message)) => mailbox.deliver(Delivery::Message(message)),
                    _ => false,
                };
                std::future::ready(delivered)
            })
    }
}

/// How a room reaches a member's connection: never waiting, as the hub does.
pub(crate) trait MemberSink: Send + Sync {
    /// Queues an encoded frame; false if the connection is gone or over its budget
    /// (then it closes as a slow consumer).
    fn deliver_frame(&self, frame: Bytes) -> bool;
    /// Closes the connection with `reason`.
    fn kick(&self, reason: KickReason, text: String);
}

impl<M: Send + 'static> MemberSink for Mailbox<M> {
    fn deliver_frame(&self, frame: Bytes) -> bool {
        self.deliver(Delivery::Frame(frame))
    }

    fn kick(&self, reason: KickReason, text: String) {
        self.deliver(Delivery::Kick(reason, text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(
        limit: usize,
    ) -> (
        Mailbox<&'static str>,
        Arc<OutboundBudget>,
        CancellationToken,
    ) {
        let budget = Arc::new(OutboundBudget::new(
            limit,
            Arc::new(crate::limits::MemoryBudget::new(usize::MAX)),
        ));
        let interrupt = CancellationToken::new();
        (
            Mailbox::new(budget.clone(), interrupt.clone()),
            budget,
            interrupt,
        )
    }

    fn frame(n: usize) -> Delivery<&'static str> {
        Delivery::Frame(Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn frames_and_messages_come_out_in_order_and_the_flag_clears_when_empty() {
        let (mailbox, budget, _) = mailbox(1000);
        assert!(!mailbox.has_mail());
        assert!(mailbox.deliver(frame(10)));
        assert!(mailbox.deliver(Delivery::Message("hello")));
        assert!(mailbox.has_mail());
        assert_eq!(budget.unsent(), 10 + MESSAGE_COST);
        assert!(matches!(mailbox.next(), Some(Delivery::Frame(f)) if f.len() == 10));
        assert!(mailbox.has_mail(), "still a message");
        assert!(matches!(mailbox.next(), Some(Delivery::Message("hello"))));
        assert!(mailbox.next().is_none());
        assert!(!mailbox.has_mail());
        assert!(matches!(mailbox.verdict(), Verdict::Open));
    }

    #[test]
    fn a_kick_is_kept_apart_interrupts_and_the_first_one_wins() {
        let (mailbox, _, interrupt) = mailbox(1000);
        assert!(mailbox.deliver(frame(10)));
        assert!(mailbox.deliver(Delivery::Kick(KickReason::DUPLICATE_LOGIN, "first".into())));
        assert!(mailbox.deliver(Delivery::Kick(KickReason::KICKED, "second".into())));
        assert!(interrupt.is_cancelled(), "a running handler is interrupted");
        assert!(
            matches!(mailbox.verdict(), Verdict::Kicked(KickReason::DUPLICATE_LOGIN, t) if t == "first")
        );
        assert!(
            matches!(mailbox.next(), Some(Delivery::Frame(_))),
            "frames still go out"
        );
    }

    #[test]
    fn over_budget_a_delivery_is_refused_and_the_connection_marked_slow() {
        let (mailbox, budget, _) = mailbox(100);
        assert!(mailbox.deliver(frame(60)));
        assert!(!mailbox.deliver(frame(60)));
        assert_eq!(budget.unsent(), 60, "the refused frame reserved nothing");
        assert!(mailbox.has_mail());
        assert!(matches!(mailbox.verdict(), Verdict::Overflowed));
        assert!(
            mailbox.deliver(Delivery::Kick(KickReason::KICKED, String::new())),
            "a kick always gets through"
        );
    }

    #[test]
    fn a_kick_or_an_overflow_arriving_while_the_mail_is_taken_keeps_the_flag_up() {
        // The connection's wakeup takes the verdict first, then the queue; another
        // thread's refused frame, or a kick, lands in between.
        let (slow, _, _) = mailbox(100);
        assert!(slow.deliver(frame(60)));
        assert!(matches!(slow.verdict(), Verdict::Open));
        assert!(!slow.deliver(frame(60)));
        assert!(slow.next().is_some() && slow.next().is_none());
        assert!(slow.has_mail(), "the overflow waits for the next wakeup");
        assert!(matches!(slow.verdict(), Verdict::Overflowed));

        let (kicked, _, _) = mailbox(100);
        assert!(kicked.deliver(frame(10)));
        assert!(matches!(kicked.verdict(), Verdict::Open));
        assert!(kicked.deliver(Delivery::Kick(KickReason::KICKED, "late".into())));
        assert!(kicked.next().is_some() && kicked.next().is_none());
        assert!(kicked.has_mail(), "the kick waits for the next wakeup");
        assert!(matches!(
            kicked.verdict(),
            Verdict::Kicked(KickReason::KICKED, _)
        ));
        assert!(kicked.next().is_none());
        assert!(!kicked.has_mail(), "cleared once nothing waits");
    }

    #[test]
    fn a_closed_mailbox_drops_deliveries_and_gives_their_budget_back() {
        let (mailbox, budget, _) = mailbox(1000);
        assert!(mailbox.deliver(frame(100)));
        assert!(mailbox.deliver(Delivery::Message("m")));
        assert!(mailbox.close().is_empty());
        assert_eq!(budget.unsent(), 0);
        assert!(!mailbox.deliver(frame(1)));
        assert!(mailbox.next().is_none());
    }
}

/// Every interleaving of small models of a mailbox between the threads that deliver
/// to it (the hub, rooms, timers) and its connection's task, which runs as the
/// driver does: it waits until [`Mailbox::poll_mail`] is ready, then takes the mail
/// (`take_mail` in `driver/dispatch.rs`: the verdict first, then every frame and
/// message). A lost wakeup leaves the connection parked for good, which loom reports
/// as a deadlock. Run with `--cfg gatehouse_loom` (README, "Model-checked
/// concurrency").
///
/// The interrupt is tokio-util's `CancellationToken`, which is not loom-aware and
/// stays the real one: inside these models it is only cancelled and checked, never
/// waited on, and loom runs the model's threads one at a time on one OS thread, so
/// the token's own lock is never contended and never held across a point where loom
/// switches threads; loom sees it as a plain call. What the interrupt is for (a
/// running handler stopped by a kick) is the driver's, tested there.
#[cfg(all(test, gatehouse_loom))]
mod loom_tests {
    use super::*;
    use crate::limits::MemoryBudget;
    use loom::thread;
    use std::task::Poll;

    fn mailbox(limit: usize) -> (Arc<Mailbox<&'static str>>, Arc<OutboundBudget>) {
        let budget = Arc::new(OutboundBudget::new(
            limit,
            Arc::new(MemoryBudget::new(usize::MAX)),
        ));
        let mailbox = Mailbox::new(budget.clone(), CancellationToken::new());
        (Arc::new(mailbox), budget)
    }

    fn frame(n: usize) -> Delivery<&'static str> {
        Delivery::Frame(Bytes::from(vec![0u8; n]))
    }

    /// What the connection has taken out of its mailbox.
    #[derive(Debug, Default)]
    struct Taken {
        frames: usize,
        messages: usize,
        kick: Option<KickReason>,
        overflowed: bool,
    }

    impl Taken {
        /// One wakeup's worth, as `take_mail` does it; the budget of each frame and
        /// message is given back as the transport and the handler would.
        fn take_mail(&mut self, mailbox: &Mailbox<&'static str>) {
            match mailbox.verdict() {
                // The core keeps the first close it decides (a later kick, which the
                // mailbox then holds, changes nothing).
                Verdict::Kicked(reason, _) => _ = self.kick.get_or_insert(reason),
                Verdict::Overflowed => self.overflowed = true,
                Verdict::Open => {}
            }
            while let Some(delivery) = mailbox.next() {
                match delivery {
                    Delivery::Frame(frame) => {
                        self.frames += 1;
                        mailbox.release_frame(frame.len());
                    }
                    Delivery::Message(_) => {
                        self.messages += 1;
                        mailbox.release_message();
                    }
                    Delivery::Kick(..) | Delivery::Resume(_) => panic!("not sent here"),
                }
            }
        }
    }

    /// The connection's task: waits for mail and takes it until `done`.
    fn serve_until(mailbox: &Mailbox<&'static str>, done: impl Fn(&Taken) -> bool) -> Taken {
        let mut taken = Taken::default();
        loom::future::block_on(std::future::poll_fn(|cx| loop {
            if mailbox.poll_mail(cx).is_pending() {
                return Poll::Pending;
            }
            taken.take_mail(mailbox);
            if done(&taken) {
                return Poll::Ready(());
            }
        }));
        taken
    }

    #[test]
    fn loom_a_delivery_racing_with_the_connection_emptying_its_mailbox_is_never_lost() {
        crate::sync::bounded_model(|| {
            let (mailbox, budget) = mailbox(1000);
            assert!(mailbox.deliver(frame(10)), "mail already waiting");
            let hub = {
                let mailbox = mailbox.clone();
                thread::spawn(move || mailbox.deliver(frame(20)))
            };
            let room = {
                let mailbox = mailbox.clone();
                thread::spawn(move || mailbox.deliver(Delivery::Message("tick")))
            };
            let taken = serve_until(&mailbox, |taken| taken.frames + taken.messages == 3);
            assert_eq!(
                (hub.join().ok(), room.join().ok()),
                (Some(true), Some(true))
            );
            assert_eq!((taken.frames, taken.messages), (2, 1));
            assert!(!taken.overflowed && taken.kick.is_none());
            assert!(!mailbox.has_mail(), "nothing left behind the flag");
            assert_eq!(budget.unsent(), 0, "every delivery's budget given back");
        });
    }

    #[test]
    fn loom_kicks_get_through_a_full_budget_and_interrupt_the_connection() {
        crate::sync::bounded_model(|| {
            let (mailbox, budget) = mailbox(10);
            assert!(mailbox.deliver(frame(4)), "mail already waiting");
            // The connection's own answers fill the rest: its peer reads nothing.
            assert!(budget.reserve(6));
            let kick = |reason: KickReason| {
                let mailbox = mailbox.clone();
                thread::spawn(move || mailbox.deliver(Delivery::Kick(reason, String::new())))
            };
            let (admin, hub) = (kick(KickReason::KICKED), kick(KickReason::DUPLICATE_LOGIN));
            let taken = serve_until(&mailbox, |taken| taken.kick.is_some());
            assert_eq!(
                (admin.join().ok(), hub.join().ok()),
                (Some(true), Some(true))
            );
            assert!(matches!(
                taken.kick,
                Some(KickReason::KICKED | KickReason::DUPLICATE_LOGIN)
            ));
            assert!(
                mailbox.interrupt.is_cancelled(),
                "a running handler is interrupted"
            );
            assert_eq!(budget.unsent(), 6, "the waiting frame's budget given back");
        });
    }

    #[test]
    fn loom_a_delivery_refused_while_the_connection_takes_its_mail_is_seen_as_an_overflow() {
        loom::model(|| {
            let (mailbox, budget) = mailbox(MESSAGE_COST + 10);
            assert!(mailbox.deliver(Delivery::Message("waiting")));
            // The connection's own answers fill the rest: its peer reads nothing.
            assert!(budget.reserve(10));
            let hub = {
                let mailbox = mailbox.clone();
                // Too big to fit even once the message's budget is given back.
                thread::spawn(move || mailbox.deliver(frame(100)))
            };
            let taken = serve_until(&mailbox, |taken| taken.overflowed);
            assert_eq!(hub.join().ok(), Some(false));
            assert!(taken.kick.is_none());
        });
    }

    #[test]
    fn loom_closing_while_deliveries_arrive_gives_every_byte_of_budget_back() {
        loom::model(|| {
            let (mailbox, budget) = mailbox(1000);
            let hub = {
                let mailbox = mailbox.clone();
                thread::spawn(move || {
                    mailbox.deliver(frame(10));
                    mailbox.deliver(Delivery::Message("m"));
                })
            };
            assert!(mailbox.close().is_empty());
            hub.join().unwrap_or(());
            assert_eq!(budget.unsent(), 0, "queued or refused, nothing is kept");
            assert!(mailbox.next().is_none());
            assert!(!mailbox.deliver(frame(1)), "closed for good");
        });
    }
}
