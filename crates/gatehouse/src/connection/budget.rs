//! A connection's outbound byte budget: the unsent bytes it may hold, shared by its
//! core (responses, pushes, pongs) and by everyone who delivers to its mailbox (the
//! hub's broadcasts). Bytes are reserved when queued and released once the transport
//! took them, so `limits.outbound_queue_bytes` bounds everything queued for one
//! connection, whoever queued it. Bytes above the connection's free share are also
//! charged to the server-wide [`MemoryBudget`]; when that is used up, a connection
//! with a backlog past its free share is refused (and kicked `slow_consumer`), while
//! one that keeps up still gets each frame: only backlogs are ever refused.
//!
//! Being the one allocation the core and the mailbox share, it also carries the
//! connection's [`Meter`] (what crossed it), which the hub reads for the admin API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::meter::Meter;
use crate::limits::memory::above_free;
use crate::limits::{MemoryBudget, FREE_PER_CONNECTION};

/// Unsent bytes of one connection, against its limit.
#[derive(Debug)]
pub(crate) struct OutboundBudget {
    unsent: AtomicUsize,
    limit: usize,
    memory: Arc<MemoryBudget>,
    pub(crate) meter: Meter,
}

impl OutboundBudget {
    /// A budget whose meter counts nothing (a refused connection, tests).
    pub(crate) fn new(limit: usize, memory: Arc<MemoryBudget>) -> OutboundBudget {
        OutboundBudget::metered(limit, memory, Meter::off())
    }

    /// A connection's budget, with its meter.
    pub(crate) fn metered(limit: usize, memory: Arc<MemoryBudget>, meter: Meter) -> OutboundBudget {
        OutboundBudget {
            unsent: AtomicUsize::new(0),
            limit,
            memory,
            meter,
        }
    }

    /// The change in the charged part when `unsent` went from `before` to `after`:
    /// each update accounts for its own step, so the charges sum up exactly however
    /// updates interleave.
    fn charged_change(before: usize, after: usize) -> isize {
        above_free(after) as isize - above_free(before) as isize
    }

    fn settle_memory(&self, change: isize) {
        if change > 0 {
            self.memory.force(change.unsigned_abs());
        } else {
            self.memory.refund(change.unsigned_abs());
        }
    }

    /// Reserves `n` bytes, or returns false (reserving nothing) if that would pass the
    /// limit. A compare-and-swap, not add-then-undo: a failed reservation never makes
    /// the count overshoot for a moment, so a concurrent small reservation is never
    /// refused because of it.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        let Ok(before) = self
            .unsent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |unsent| {
                unsent.checked_add(n).filter(|&total| total <= self.limit)
            })
        else {
            return false;
        };
        let change = Self::charged_change(before, before + n);
        // Below the free share (the common case) the server-wide budget is not touched.
        if change <= 0 {
            return true;
        }
        // A connection that keeps up (its backlog was within its free share) always
        // gets the frame, charged whatever the budget: only a backlog is refused.
        if before < FREE_PER_CONNECTION {
            self.memory.force(change.unsigned_abs());
            return true;
        }
        if self.memory.try_charge(change.unsigned_abs()) {
            return true;
        }
        // The server is out of memory for heavy connections: undo, accounting for
        // the step the undo itself makes.
        let undone = self.unsent.fetch_sub(n, Ordering::AcqRel);
        self.settle_memory(Self::charged_change(undone, undone - n) + change);
        false
    }

    /// Reserves `n` bytes whatever the limits: for the one frame that must get
    /// through (the kick of a closing connection).
    pub(crate) fn force(&self, n: usize) {
        let before = self.unsent.fetch_add(n, Ordering::AcqRel);
        self.settle_memory(Self::charged_change(before, before + n));
    }

    /// Gives back `n` bytes the transport has taken.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            let before = self.unsent.fetch_sub(n, Ordering::AcqRel);
            self.settle_memory(Self::charged_change(before, before - n));
        }
    }

    /// Bytes currently reserved.
    pub(crate) fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Acquire)
    }
}

impl Drop for OutboundBudget {
    fn drop(&mut self) {
        // The connection is gone, and its unsent bytes with it.
        self.memory.refund(above_free(*self.unsent.get_mut()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unlimited() -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(usize::MAX))
    }

    #[test]
    fn reservations_stop_exactly_at_the_limit_and_releases_make_room() {
        let budget = OutboundBudget::new(100, unlimited());
        assert!(budget.reserve(60));
        assert!(!budget.reserve(41));
        assert_eq!(budget.unsent(), 60, "a refused reservation leaves no trace");
        assert!(budget.reserve(40));
        assert!(!budget.reserve(1));
        budget.release(50);
        assert!(budget.reserve(50));
        assert!(!budget.reserve(usize::MAX), "no overflow");
        budget.force(10);
        assert_eq!(budget.unsent(), 110);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let budget = Arc::new(OutboundBudget::new(1000, unlimited()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| budget.reserve(7)).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(granted, 1000 / 7);
        assert_eq!(budget.unsent(), granted * 7);
    }

    #[test]
    fn only_bytes_above_the_free_share_are_charged_and_a_full_budget_refuses_only_them() {
        const FREE: usize = FREE_PER_CONNECTION;
        let memory = Arc::new(MemoryBudget::new(1000));
        let light = OutboundBudget::new(1 << 20, memory.clone());
        let heavy = OutboundBudget::new(1 << 20, memory.clone());
        assert!(heavy.reserve(FREE + 900));
        assert_eq!(memory.used(), 900);
        assert!(!heavy.reserve(101), "over the server-wide budget");
        assert_eq!((heavy.unsent(), memory.used()), (FREE + 900, 900), "undone");
        // A light connection is never refused by it.
        assert!(light.reserve(FREE));
        assert_eq!(memory.used(), 900);
        assert!(!light.reserve(101));
        assert!(light.reserve(100));
        assert_eq!(memory.used(), 1000);
        heavy.release(FREE + 900);
        assert_eq!(memory.used(), 100);
        drop(light);
        assert_eq!(
            memory.used(),
            0,
            "a dropped connection gives its charge back"
        );
    }

    #[test]
    fn concurrent_reserves_and_releases_leave_the_charge_exact() {
        let memory = Arc::new(MemoryBudget::new(usize::MAX));
        let budget = Arc::new(OutboundBudget::new(1 << 30, memory.clone()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        assert!(budget.reserve(40_000));
                        budget.release(40_000);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap_or(());
        }
        assert_eq!((budget.unsent(), memory.used()), (0, 0));
    }
}
