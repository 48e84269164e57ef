//! Log lines that an attacker can cause, bounded: a connect flood makes a refusal per
//! connection, a flood of bad clients a close per connection. Each kind of line gets
//! [`LINES_PER_SEC`] a second, server-wide; past that they are counted, and the first
//! line of the next second says how many were left out. Debug-level lines are not
//! limited (they are off unless asked for).
//!
//! Public so that a game budgets the lines its own floods can cause (arena: failed
//! logins and lockouts) the same way.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines of one kind written per second at most.
pub const LINES_PER_SEC: u32 = 50;

/// A budget of log lines per second.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    /// Left out since the last line written.
    suppressed: u64,
}

/// Whether to write a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it; `suppressed` lines were left out before it (say so when not zero).
    Write {
        /// Lines left out before this one.
        suppressed: u64,
    },
    /// Leave it out (counted).
    Skip,
}

impl LogLimiter {
    /// A budget of `per_second` lines a second.
    pub fn new(per_second: u32) -> LogLimiter {
        LogLimiter {
            per_second,
            window: Mutex::new(Window {
                start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Takes a line from this second's budget, at `now`.
    pub fn admit(&self, now: Instant) -> Admit {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(window.start) >= Duration::from_secs(1) {
            window.start = now;
            window.written = 0;
        }
        if window.written >= self.per_second {
            window.suppressed += 1;
            return Admit::Skip;
        }
        window.written += 1;
        Admit::Write {
            suppressed: std::mem::take(&mut window.suppressed),
        }
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LINES_PER_SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_next_line_counts_what_was_left_out() {
        let limiter = LogLimiter::new(3);
        let start = Instant::now();
        let admitted: Vec<Admit> = (0..10).map(|_| limiter.admit(start)).collect();
        assert_eq!(
            admitted
                .iter()
                .filter(|a| matches!(a, Admit::Write { .. }))
                .count(),
            3
        );
        assert_eq!(
            limiter.admit(start + Duration::from_secs(1)),
            Admit::Write { suppressed: 7 }
        );
        assert_eq!(
            limiter.admit(start + Duration::from_secs(1)),
            Admit::Write { suppressed: 0 }
        );
    }
}
