//! The server-wide memory budget (`server.memory_budget_bytes`): what clients make the
//! server buffer, summed over every connection.
//!
//! Each connection may hold [`FREE_PER_CONNECTION`] bytes of partial input and the
//! same of unsent output without touching the budget, so the common case (small
//! requests, small answers) costs no shared atomic. Only bytes above that are
//! charged, which makes the budget fall on the heaviest connections: when it is used
//! up, a connection whose unsent backlog is already past its free bytes is refused
//! more output (it is kicked `slow_consumer`), and one receiving a large frame stops
//! reading it until memory is given back; a connection that keeps up still gets each
//! frame (charged regardless). The most the server holds is therefore
//! `memory_budget_bytes` + `max_connections` × (2 × [`FREE_PER_CONNECTION`] + 16 KiB
//! of requests read ahead of a handler that waits + two largest frames: one sent,
//! one request a waiting handler holds).

use crate::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of input and of output each connection holds outside the budget.
pub(crate) const FREE_PER_CONNECTION: usize = 64 * 1024;

/// Bytes above their free share that connections hold, against the limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// The budget's size.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `n` bytes, or nothing (false) if that would pass the limit.
    pub(crate) fn try_charge(&self, n: usize) -> bool {
        n == 0
            || self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(n).filter(|&total| total <= self.limit)
                })
                .is_ok()
    }

    /// Takes `n` bytes whatever the limit (a kick that must get through).
    pub(crate) fn force(&self, n: usize) {
        if n > 0 {
            self.used.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Gives back `n` bytes.
    pub(crate) fn refund(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// The part of `held` bytes of one connection that is charged to the budget.
pub(crate) fn above_free(held: usize) -> usize {
    held.saturating_sub(FREE_PER_CONNECTION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_limit_and_refunds_make_room() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(41));
        assert_eq!(budget.used(), 60, "a refused charge takes nothing");
        assert!(budget.try_charge(40));
        budget.refund(50);
        assert!(budget.try_charge(50));
        assert!(!budget.try_charge(usize::MAX));
        budget.force(5);
        assert_eq!(budget.used(), 105);
        assert!(budget.try_charge(0), "nothing is always there");
    }
}
