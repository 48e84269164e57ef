//! The outbound side of a connection: its mailbox and its write queue.
//!
//! - [`Mailbox`] is how the hub (and anything else) reaches a connection without ever
//!   waiting on it: a delivery is queued, or refused when the connection's unsent
//!   bytes would pass `limits.outbound_queue_bytes`, and the refusal marks the
//!   connection a slow consumer. A tokio mpsc channel would do the queueing, but it
//!   allocates a block of slots per channel up front and bounds by count, not bytes;
//!   an idle connection here costs an empty `VecDeque` (no allocation).
//! - [`WriteQueue`] is owned by the connection task: the frames being written, sent
//!   with as few `writev` calls as the socket allows (coalescing).
//!
//! The byte budget covers both: bytes are reserved when queued (by the hub or by the
//! connection itself) and released only once the kernel took them.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use gatehouse_protocol::KickReason;

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
    /// Unsent bytes: queued here, or moved to the write queue and not yet written.
    unsent: AtomicUsize,
    limit: usize,
    notify: Notify,
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
    pub(crate) fn new(limit: usize, interrupt: CancellationToken) -> Self {
        Mailbox {
            state: Mutex::new(MailboxState {
                queue: VecDeque::new(),
                overflowed: false,
                closed: false,
            }),
            unsent: AtomicUsize::new(0),
            limit,
            notify: Notify::new(),
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
        if cost > 0 && !self.reserve(cost) {
            state.overflowed = true;
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.queue.push_back(delivery);
        let first = state.queue.len() == 1;
        drop(state);
        // The connection drains everything on each wakeup: only the first needs one.
        if first {
            self.notify.notify_one();
        }
        if kick {
            self.interrupt.cancel();
        }
        true
    }

    /// Reserves `n` bytes of the unsent budget, or returns false if over it.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        let before = self.unsent.fetch_add(n, Ordering::AcqRel);
        if before + n > self.limit {
            self.unsent.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back `n` bytes the kernel has taken.
    pub(crate) fn release(&self, n: usize) {
        self.unsent.fetch_sub(n, Ordering::AcqRel);
    }

    /// Resolves when something may have been delivered. Keep it pinned across waits
    /// and replace it once it has resolved.
    pub(crate) fn delivered(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Takes everything queued; `overflowed` tells whether a delivery was refused.
    pub(crate) fn drain(&self, into: &mut Vec<Delivery<M>>) -> bool {
        let mut state = self.lock();
        into.extend(state.queue.drain(..));
        if state.queue.capacity() > 8 {
            state.queue = VecDeque::new(); // give a burst's memory back
        }
        state.overflowed
    }

    /// Marks the connection ended; later deliveries are dropped.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue = VecDeque::new();
    }
}

/// Most frames handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Frames waiting for the socket, front first; the front may be partly written.
#[derive(Default)]
pub(crate) struct WriteQueue {
    frames: VecDeque<Bytes>,
    /// The front frame is partly written: it must be finished to keep the framing.
    front_started: bool,
}

impl WriteQueue {
    pub(crate) fn push(&mut self, frame: Bytes) {
        self.frames.push_back(frame);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every frame not yet started (keeping a partly written one, so the stream
    /// stays well framed) and returns the bytes dropped.
    pub(crate) fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.front_started);
        self.frames.drain(keep..).map(|f| f.len()).sum()
    }

    /// Writes as much as the socket takes now, without waiting. Returns the bytes
    /// written; `Ok(0)` with frames left means the socket is full.
    pub(crate) fn write_now(&mut self, socket: &TcpStream) -> io::Result<usize> {
        let mut written = 0;
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.frames.len().min(MAX_IOVECS);
            for (slot, frame) in slices.iter_mut().zip(self.frames.iter()) {
                *slot = IoSlice::new(frame);
            }
            match socket.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.frames.is_empty() {
            self.frames = VecDeque::new(); // nothing held at rest
        }
        Ok(written)
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.frames.pop_front();
                self.front_started = false;
            } else {
                front.advance(n);
                self.front_started = true;
                n = 0;
            }
        }
    }
}
