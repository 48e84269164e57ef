//! A connection's outbound byte budget: the unsent bytes it may hold, shared by its
//! core (responses, pushes, pongs) and by everyone who delivers to its mailbox (the
//! hub's broadcasts). Bytes are reserved when queued and released once the transport
//! took them, so `limits.outbound_queue_bytes` bounds everything queued for one
//! connection, whoever queued it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Unsent bytes of one connection, against its limit.
#[derive(Debug)]
pub(crate) struct OutboundBudget {
    unsent: AtomicUsize,
    limit: usize,
}

impl OutboundBudget {
    pub(crate) fn new(limit: usize) -> OutboundBudget {
        OutboundBudget {
            unsent: AtomicUsize::new(0),
            limit,
        }
    }

    /// Reserves `n` bytes, or returns false (reserving nothing) if that would pass the
    /// limit. A compare-and-swap, not add-then-undo: a failed reservation never makes
    /// the count overshoot for a moment, so a concurrent small reservation is never
    /// refused because of it.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        self.unsent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |unsent| {
                unsent.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Reserves `n` bytes whatever the limit: for the one frame that must get through
    /// (the kick of a closing connection).
    pub(crate) fn force(&self, n: usize) {
        self.unsent.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes the transport has taken.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.unsent.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Bytes currently reserved.
    #[cfg(test)]
    pub(crate) fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_exactly_at_the_limit_and_releases_make_room() {
        let budget = OutboundBudget::new(100);
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
        let budget = std::sync::Arc::new(OutboundBudget::new(1000));
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
}
