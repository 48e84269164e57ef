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
            Delivery::Kick(..) => 0, // a kick must always get through
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
        self.mail.store(true, Ordering::Release);
        drop(state);
        self.waker.wake();
        if kicked {
            self.interrupt.cancel();
        }
        accepted
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

    /// The next frame or message, in order; `None` once the queue is empty (the mail
    /// flag is cleared then, under the lock, so that a delivery racing with it is
    /// never missed).
    pub(crate) fn next(&self) -> Option<Delivery<M>> {
        let mut state = self.lock();
        let next = state.queue.pop_front();
        if next.is_none() {
            self.mail.store(false, Ordering::Release);
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
    /// still queued (its budget given back).
    pub(crate) fn close(&self) {
        if let Some(timers) = self.timers.get() {
            timers.cancel_all();
        }
        let mut state = self.lock();
        state.closed = true;
        for delivery in std::mem::take(&mut state.queue) {
            match delivery {
                Delivery::Frame(frame) => self.budget.release(frame.len()),
                Delivery::Message(_) => self.budget.release(MESSAGE_COST),
                Delivery::Kick(..) => {}
            }
        }
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
    fn a_closed_mailbox_drops_deliveries_and_gives_their_budget_back() {
        let (mailbox, budget, _) = mailbox(1000);
        assert!(mailbox.deliver(frame(100)));
        assert!(mailbox.deliver(Delivery::Message("m")));
        mailbox.close();
        assert_eq!(budget.unsent(), 0);
        assert!(!mailbox.deliver(frame(1)));
        assert!(mailbox.next().is_none());
    }
}
