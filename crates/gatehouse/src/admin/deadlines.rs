//! The deadlines of one admin connection, kept where its bytes pass: [`Watched`]
//! wraps the socket and fails a read or a write that is late, which ends the
//! connection (hyper gives up on an I/O error).
//!
//! Which deadline a read has depends on where the connection is between its requests
//! ([`Phase`]): a head being read has `header_timeout` (from the accept for the first
//! request, from its first byte for the next ones), a kept-alive connection waiting
//! for its next request has `idle_timeout`, and a request being answered has none
//! (its body's deadline is the router's, and the answer may be a long-lived event
//! stream). The service marks a request's start ([`Activity::begin_exchange`]); its
//! answer's body ([`Answer`]) marks the end when hyper has sent it and drops it.
//! Writes, whatever the phase, may stall `send_timeout` at most.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use super::AdminLimits;

/// Where a connection is between its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted; its first request's head is not whole yet.
    FirstHead,
    /// Kept alive after an answer, no byte of the next request yet.
    Idle,
    /// A later request's head has begun.
    Head,
    /// This many requests are being answered (one, for HTTP/1.1 without pipelining).
    Busy(usize),
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// The connection's task, if its last read is waiting. hyper reads again only
    /// when woken: an exchange that ends wakes it, so that the idle deadline is armed.
    reader: Option<Waker>,
    /// Bytes of the next request came while this one was answered: its head has
    /// begun, and the header deadline, not the idle one, follows the answer.
    next_head_begun: bool,
}

/// One connection's phase, shared by its socket ([`Watched`]) and its service.
#[derive(Debug)]
pub(super) struct Activity {
    state: Mutex<State>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Activity {
    /// A connection accepted now.
    pub(super) fn new(limits: &AdminLimits) -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                phase: Phase::FirstHead,
                since: Instant::now(),
                reader: None,
                next_head_begun: false,
            }),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain fields, whole after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request's head has been read: no read deadline until the returned exchange
    /// (kept by the answer's body) is dropped.
    pub(super) fn begin_exchange(self: &Arc<Self>) -> Exchange {
        let mut state = self.state();
        state.phase = match state.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        Exchange(self.clone())
    }

    fn end_exchange(&self) {
        let mut state = self.state();
        let reader = match state.phase {
            Phase::Busy(n) if n > 1 => {
                state.phase = Phase::Busy(n - 1);
                None
            }
            _ => {
                state.phase = if std::mem::take(&mut state.next_head_begun) {
                    Phase::Head
                } else {
                    Phase::Idle
                };
                state.since = Instant::now();
                state.reader.take()
            }
        };
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Bytes came in: on an idle connection, the next request's head has begun (on
    /// a busy one, once the answer is sent).
    fn bytes_arrived(&self) {
        let mut state = self.state();
        match state.phase {
            Phase::Idle => {
                state.phase = Phase::Head;
                state.since = Instant::now();
            }
            Phase::Busy(_) => state.next_head_begun = true,
            Phase::FirstHead | Phase::Head => {}
        }
    }

    /// A read is waiting: when it fails, and why (`None` while a request is
    /// answered). `waker` is woken when that changes.
    fn read_deadline(&self, waker: &Waker) -> Option<(Instant, &'static str)> {
        let mut state = self.state();
        if !state.reader.as_ref().is_some_and(|r| r.will_wake(waker)) {
            state.reader = Some(waker.clone());
        }
        match state.phase {
            Phase::FirstHead | Phase::Head => Some((
                state.since + self.header_timeout,
                "request head not whole within admin.limits.header_timeout",
            )),
            Phase::Idle => Some((
                state.since + self.idle_timeout,
                "kept-alive connection idle past admin.limits.idle_timeout",
            )),
            Phase::Busy(_) => None,
        }
    }
}

/// A request being answered; dropped, the connection is idle again.
#[derive(Debug)]
pub(super) struct Exchange(Arc<Activity>);

impl Drop for Exchange {
    fn drop(&mut self) {
        self.0.end_exchange();
    }
}

/// An answer's body, holding its [`Exchange`] until hyper has sent the body and
/// dropped it. It passes everything through, so lengths and streams stay as they were.
#[derive(Debug)]
pub(super) struct Answer {
    body: Body,
    _exchange: Exchange,
}

impl Answer {
    pub(super) fn new(body: Body, exchange: Exchange) -> Answer {
        Answer {
            body,
            _exchange: exchange,
        }
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An admin connection's socket, failing reads and writes that are past their
/// deadline with [`io::ErrorKind::TimedOut`].
#[derive(Debug)]
pub(super) struct Watched {
    socket: TcpStream,
    activity: Arc<Activity>,
    send_timeout: Duration,
    /// Wakes the connection at its read deadline (made at the first wait).
    read_timer: Option<Pin<Box<Sleep>>>,
    /// Wakes the connection when its stalled writes run out of time.
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Since when the writes have made no progress, if they are stalled.
    stalled_since: Option<Instant>,
}

impl Watched {
    pub(super) fn new(socket: TcpStream, activity: Arc<Activity>, send_timeout: Duration) -> Self {
        Watched {
            socket,
            activity,
            send_timeout,
            read_timer: None,
            write_timer: None,
            stalled_since: None,
        }
    }

    /// Passes a write (or flush, or shutdown) through; if it cannot proceed, fails it
    /// once the writes have stalled `send_timeout`.
    fn write_within<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match write(Pin::new(&mut self.socket), cx) {
            Poll::Pending => {
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                if passed(&mut self.write_timer, since + self.send_timeout, cx) {
                    Poll::Ready(Err(late(
                        "answer's writes stalled past admin.limits.send_timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            done => {
                self.stalled_since = None;
                done
            }
        }
    }
}

/// Whether `deadline` has passed; if not, `timer` wakes the task when it does.
fn passed(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

fn late(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        match Pin::new(&mut this.socket).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > filled => {
                this.activity.bytes_arrived();
                Poll::Ready(Ok(()))
            }
            // Input is taken as long as it comes: a deadline only fails a wait.
            Poll::Pending => match this.activity.read_deadline(cx.waker()) {
                Some((deadline, what)) if passed(&mut this.read_timer, deadline, cx) => {
                    Poll::Ready(Err(late(what)))
                }
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_within(cx, |socket, cx| socket.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .write_within(cx, |socket, cx| socket.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .write_within(cx, |socket, cx| socket.poll_shutdown(cx))
    }

    // Vectored, so that hyper writes an answer's head and body without copying them
    // into its own buffer first.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_within(cx, |socket, cx| socket.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdminLimits {
        AdminLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ..AdminLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_between_requests_has_its_read_deadline() {
        let accepted = Instant::now();
        let activity = Activity::new(&limits());
        let waker = futures_util::task::noop_waker();
        let deadline = || activity.read_deadline(&waker).map(|(at, _)| at);
        // The first head counts from the accept, whatever bytes come in.
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.bytes_arrived();
        assert_eq!(deadline(), Some(accepted + Duration::from_secs(10)));
        let exchange = activity.begin_exchange();
        assert_eq!(deadline(), None, "no read deadline while answering");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(exchange);
        let answered = Instant::now();
        assert_eq!(deadline(), Some(answered + Duration::from_secs(30)));
        // The next head counts from its first byte.
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.bytes_arrived();
        assert_eq!(
            deadline(),
            Some(answered + Duration::from_secs(20 + 10)),
            "header_timeout from the first byte, not the idle deadline"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_arrived();
        assert_eq!(
            deadline(),
            Some(answered + Duration::from_secs(30)),
            "later bytes of the same head do not extend it"
        );
        // Bytes of the next head that come while a request is answered: the head's
        // deadline follows the answer, not the idle one.
        let exchange = activity.begin_exchange();
        activity.bytes_arrived();
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(exchange);
        assert_eq!(
            deadline(),
            Some(Instant::now() + Duration::from_secs(10)),
            "header_timeout after an answer during which the next head began"
        );
    }
}
