//! Timers for sessions and rooms: a message after a delay ([`Context::after`],
//! [`RoomContext::after`]) or at an interval (`every`), delivered like any other
//! message to its owner and cancelled when the owner ends (the session's
//! connection closes; the room stops or restarts). Each timer is one small task;
//! an owner has at most [`MAX_TIMERS`] at once.
//!
//! [`Context::after`]: crate::Context::after
//! [`RoomContext::after`]: crate::room::RoomContext::after

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The most timers one session or one room may have running at once.
pub const MAX_TIMERS: usize = 64;

/// Why a timer was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// The owner already has [`MAX_TIMERS`] timers running.
    #[error("already {MAX_TIMERS} timers running")]
    TooMany,
    /// The owner has ended.
    #[error("the timer's owner has ended")]
    Ended,
    /// An interval of zero.
    #[error("a timer's period must be above zero")]
    ZeroPeriod,
}

/// A running timer. Dropping it lets it run; [`Timer::cancel`] stops it.
#[derive(Debug, Clone)]
pub struct Timer {
    token: CancellationToken,
}

impl Timer {
    /// Stops the timer: what has not fired yet never will.
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

/// The timers of one owner.
pub(crate) struct Timers {
    owner: CancellationToken,
    running: Arc<AtomicUsize>,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers {
            owner: CancellationToken::new(),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Cancels every timer, now and for good.
    pub(crate) fn cancel_all(&self) {
        self.owner.cancel();
    }

    /// Starts a timer that calls `fire` after `delay`, then every `period` if one is
    /// given, until `fire` answers false (the owner is gone) or it is cancelled.
    pub(crate) fn start<F>(
        &self,
        delay: Duration,
        period: Option<Duration>,
        mut fire: impl FnMut() -> F + Send + 'static,
    ) -> Result<Timer, TimerError>
    where
        F: Future<Output = bool> + Send,
    {
        if self.owner.is_cancelled() {
            return Err(TimerError::Ended);
        }
        if period.is_some_and(|p| p.is_zero()) {
            return Err(TimerError::ZeroPeriod);
        }
        if self.running.fetch_add(1, Ordering::AcqRel) >= MAX_TIMERS {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(TimerError::TooMany);
        }
        let token = self.owner.child_token();
        let running = Running(self.running.clone());
        let cancelled = token.clone();
        tokio::spawn(async move {
            let _running = running;
            let first = Instant::now() + delay;
            tokio::select! {
                () = cancelled.cancelled() => return,
                () = tokio::time::sleep_until(first) => {}
            }
            // Cancelled just as it woke: it does not fire.
            if cancelled.is_cancelled() || !fire().await {
                return;
            }
            let Some(period) = period else { return };
            let mut interval = tokio::time::interval_at(first + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancelled.cancelled() => return,
                    _ = interval.tick() => {
                        if cancelled.is_cancelled() || !fire().await {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Timer { token })
    }
}

/// One running timer in its owner's count, until its task ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
