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

use std::sync::Arc;

use super::meter::Meter;
use crate::limits::memory::above_free;
use crate::limits::{MemoryBudget, FREE_PER_CONNECTION};
use crate::sync::atomic::{AtomicUsize, Ordering};

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

    /// Reserves `n` bytes, or returns false (reserving nothing) if that would pass the
    /// limit, or if the bytes past the free share find the server-wide budget used up
    /// while this connection already has a backlog.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        self.add(n, self.limit, |before, charge| {
            // A connection that keeps up (its backlog was within its free share) always
            // gets the frame, charged whatever the budget: only a backlog is refused.
            if before < FREE_PER_CONNECTION {
                self.memory.force(charge);
                true
            } else {
                self.memory.try_charge(charge)
            }
        })
    }

    /// Reserves `n` bytes whatever the limits: for the one frame that must get
    /// through (the kick of a closing connection).
    pub(crate) fn force(&self, n: usize) {
        // Only an overflow of `usize` could refuse it: unsent bytes stay within the
        // limit and one kick frame.
        let _ = self.add(n, usize::MAX, |_, charge| {
            self.memory.force(charge);
            true
        });
    }

    /// Adds `n` unsent bytes if that stays within `limit` and `charge` takes what the
    /// step adds past the free share (given the unsent bytes before it; called only
    /// when that is more than zero, so the common case never touches the server-wide
    /// budget).
    ///
    /// The charge is taken *before* the step is published, and given back if the
    /// step cannot be made (another thread moved the count first: it is retried from
    /// the new count). So the server-wide budget never counts less than what is
    /// published: a release racing with this reservation refunds only bytes already
    /// charged (were it the other way round, it could refund this reservation's bytes
    /// before they were charged and take the budget below zero, refusing every other
    /// connection for a moment). A reservation that the limit refuses leaves no
    /// trace: neither the count nor the budget is touched. One whose compare-and-swap
    /// loses a race holds its charge for the moment of the retry (more, never less),
    /// so a concurrent charge near the server-wide limit may be refused for it.
    fn add(&self, n: usize, limit: usize, charge: impl Fn(usize, usize) -> bool) -> bool {
        let mut before = self.unsent.load(Ordering::Acquire);
        loop {
            let Some(after) = before.checked_add(n).filter(|&total| total <= limit) else {
                return false;
            };
            // Never negative: `after` is above `before`.
            let charged = above_free(after) - above_free(before);
            if charged > 0 && !charge(before, charged) {
                return false;
            }
            match self.unsent.compare_exchange_weak(
                before,
                after,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => {
                    self.memory.refund(charged);
                    before = now;
                }
            }
        }
    }

    /// Gives back `n` bytes the transport has taken.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            // Published first, refunded after: the budget counts more than is held for
            // a moment, never less.
            let before = self.unsent.fetch_sub(n, Ordering::AcqRel);
            self.memory
                .refund(above_free(before) - above_free(before - n));
        }
    }

    /// Bytes currently reserved.
    pub(crate) fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Acquire)
    }
}

impl Drop for OutboundBudget {
    fn drop(&mut self) {
        // The connection is gone, and its unsent bytes with it. (A plain load, as
        // `get_mut` would be: nothing else holds the budget now; and loom's atomics
        // have no `get_mut`.)
        self.memory
            .refund(above_free(self.unsent.load(Ordering::Relaxed)));
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

/// Every interleaving of small models of the budget shared by a connection's own task
/// (its answers, its releases, its kick) and the threads delivering to its mailbox
/// (the hub's broadcasts, rooms). Run with `--cfg gatehouse_loom` (README,
/// "Model-checked concurrency").
#[cfg(all(test, gatehouse_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    const FREE: usize = FREE_PER_CONNECTION;

    #[test]
    fn loom_concurrent_reservations_never_pass_the_limit_and_a_refusal_leaves_no_trace() {
        loom::model(|| {
            let budget = Arc::new(OutboundBudget::new(100, Arc::new(MemoryBudget::new(0))));
            assert!(budget.reserve(60));
            // 50 more can never fit; 40 always fits, whatever the refused 50 does.
            let too_big = {
                let budget = budget.clone();
                thread::spawn(move || budget.reserve(50))
            };
            let fitting = {
                let budget = budget.clone();
                thread::spawn(move || budget.reserve(40))
            };
            assert!(budget.unsent() <= 100, "over the limit for a moment");
            let (too_big, fitting) = (too_big.join(), fitting.join());
            assert_eq!((too_big.ok(), fitting.ok()), (Some(false), Some(true)));
            assert_eq!(budget.unsent(), 100);
        });
    }

    #[test]
    fn loom_a_broadcast_racing_with_the_transport_taking_a_backlog_is_charged_exactly_and_never_refused_for_room_there_is(
    ) {
        loom::model(|| {
            let memory = Arc::new(MemoryBudget::new(100));
            let budget = Arc::new(OutboundBudget::new(2 * FREE, memory.clone()));
            assert!(
                budget.reserve(FREE),
                "a backlog of its free share: no charge"
            );
            // The hub's broadcast: 60 bytes past the free share, and the budget has 100.
            let broadcast = {
                let budget = budget.clone();
                thread::spawn(move || budget.reserve(60))
            };
            // The connection's own task: the transport took the backlog.
            budget.release(FREE);
            assert!(memory.used() <= 100, "charged {}", memory.used());
            assert_eq!(broadcast.join().ok(), Some(true), "there was room");
            assert_eq!(budget.unsent(), 60);
            assert_eq!(memory.used(), 0, "60 unsent is within the free share");
            drop(budget);
            assert_eq!(memory.used(), 0);
        });
    }

    #[test]
    fn loom_reserves_a_force_and_releases_in_any_order_leave_the_memory_charge_exact() {
        loom::model(|| {
            let memory = Arc::new(MemoryBudget::new(50));
            let budget = Arc::new(OutboundBudget::new(2 * FREE, memory.clone()));
            assert!(budget.reserve(FREE - 10));
            // Two broadcasts, one that crosses the free share while the connection keeps
            // up (forced in) and one that may find a backlog and the budget full.
            let broadcasts = {
                let budget = budget.clone();
                thread::spawn(move || [budget.reserve(40), budget.reserve(40)])
            };
            // The connection's task: its kick must get through, then the transport
            // takes what it had.
            budget.force(20);
            budget.release(FREE - 10);
            let granted = broadcasts.join().unwrap_or([false, false]);
            let expected = 20 + granted.iter().filter(|&&granted| granted).count() * 40;
            assert_eq!(
                budget.unsent(),
                expected,
                "a refused reservation leaves no trace"
            );
            assert_eq!(memory.used(), above_free(expected), "charged exactly");
            drop(budget);
            assert_eq!(memory.used(), 0, "and given back whole");
        });
    }
}
