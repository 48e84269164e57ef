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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use gatehouse_protocol::KickReason;
use tokio_util::sync::CancellationToken;

use crate::connection::OutboundBudget;

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
    /// Set while deliveries (or an overflow) wait to be drained: lets the connection
    /// check for mail without taking the lock.
    mail: AtomicBool,
    budget: Arc<OutboundBudget>,
    /// The connection task, woken when mail arrives.
    waker: AtomicWaker,
    /// Cancelled by a kick, so that a kick also interrupts a handler that is running.
    interrupt: CancellationToken,
}

struct MailboxState<M> {
    queue: VecDeque<Delivery<M>>,
    /// A delivery was refused for lack of budget: the connection must close.
    overflowed: bool,
    /// The connection ended; deliveries are dropped.
    closed: bool,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(budget: Arc<OutboundBudget>, interrupt: CancellationToken) -> Self {
        Mailbox {
            state: Mutex::new(MailboxState {
                queue: VecDeque::new(),
                overflowed: false,
                closed: false,
            }),
            mail: AtomicBool::new(false),
            budget,
            waker: AtomicWaker::new(),
            interrupt,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState<M>> {
        // Nothing panics while holding this lock (no user code runs under it).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a delivery. Returns false if it was dropped: the connection is gone, or
    /// over budget (then it is marked to close as a slow consumer). Never waits.
    pub(crate) fn deliver(&self, delivery: Delivery<M>) -> bool {
        let kick = matches!(delivery, Delivery::Kick(..));
        let cost = match &delivery {
            Delivery::Frame(frame) => frame.len(),
            Delivery::Message(_) => MESSAGE_COST,
            Delivery::Kick(..) => 0, // a kick must always get through
        };
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if cost > 0 && !self.budget.reserve(cost) {
            state.overflowed = true;
            self.mail.store(true, Ordering::Release);
            drop(state);
            self.waker.wake();
            return false;
        }
        state.queue.push_back(delivery);
        self.mail.store(true, Ordering::Release);
        let first = state.queue.len() == 1;
        drop(state);
        // The connection drains everything on each wakeup: only the first needs one.
        if first {
            self.waker.wake();
        }
        if kick {
            self.interrupt.cancel();
        }
        true
    }

    /// Gives back the budget of a frame taken out of the mailbox and not queued.
    pub(crate) fn release_frame(&self, len: usize) {
        self.budget.release(len);
    }

    /// Gives back the budget of a message taken out of the mailbox.
    pub(crate) fn release_message(&self) {
        self.budget.release(MESSAGE_COST);
    }

    /// Ready when mail waits to be drained; otherwise the task is woken when it comes.
    pub(crate) fn poll_mail(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // Registered before looking, so that mail arriving in between still wakes.
        self.waker.register(cx.waker());
        if self.has_mail() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Whether deliveries wait to be drained (no lock taken).
    pub(crate) fn has_mail(&self) -> bool {
        self.mail.load(Ordering::Acquire)
    }

    /// Takes everything queued; returns whether a delivery was refused (the
    /// connection must then close as a slow consumer).
    pub(crate) fn drain(&self, into: &mut Vec<Delivery<M>>) -> bool {
        let mut state = self.lock();
        self.mail.store(false, Ordering::Release);
        into.extend(state.queue.drain(..));
        if state.queue.capacity() > 8 {
            state.queue = VecDeque::new(); // give a burst's memory back
        }
        state.overflowed
    }

    /// Marks the connection ended; later deliveries are dropped, and so is what is
    /// still queued (its budget given back).
    pub(crate) fn close(&self) {
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
