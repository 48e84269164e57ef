//! What rooms measure: per room, counters anyone holding its handle can read
//! ([`RoomStats`]); per registry, the lateness of every tick of every room
//! ([`TickLateness`]), in a histogram.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::HistogramSnapshot;

/// One room's counters, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStats {
    /// The room's name.
    pub name: String,
    /// Members now.
    pub members: usize,
    /// Ticks run.
    pub ticks: u64,
    /// Ticks that started later than [`RoomOptions::late_after`](super::RoomOptions::late_after).
    pub late_ticks: u64,
    /// The latest a tick started.
    pub max_lateness: Duration,
    /// Restarts after a crash.
    pub restarts: u32,
    /// Messages handled (from members, timers and the server).
    pub messages: u64,
}

/// The counters behind [`RoomStats`], written by the room's task.
#[derive(Default)]
pub(crate) struct RoomCounters {
    pub(crate) members: AtomicUsize,
    pub(crate) ticks: AtomicU64,
    pub(crate) late_ticks: AtomicU64,
    pub(crate) max_lateness_us: AtomicU64,
    pub(crate) restarts: AtomicU32,
    pub(crate) messages: AtomicU64,
}

impl RoomCounters {
    pub(crate) fn read(&self, name: &str) -> RoomStats {
        RoomStats {
            name: name.to_owned(),
            members: self.members.load(Relaxed),
            ticks: self.ticks.load(Relaxed),
            late_ticks: self.late_ticks.load(Relaxed),
            max_lateness: Duration::from_micros(self.max_lateness_us.load(Relaxed)),
            restarts: self.restarts.load(Relaxed),
            messages: self.messages.load(Relaxed),
        }
    }

    pub(crate) fn count_tick(&self, lateness: Duration, late_after: Duration) {
        self.ticks.fetch_add(1, Relaxed);
        if lateness > late_after {
            self.late_ticks.fetch_add(1, Relaxed);
        }
        self.max_lateness_us.fetch_max(micros(lateness), Relaxed);
    }
}

/// Tick lateness over every room of a registry since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickLateness {
    /// Ticks run.
    pub ticks: u64,
    /// Ticks later than their room's `late_after`.
    pub late: u64,
    /// Median lateness.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The latest.
    pub max: Duration,
}

/// Every tick's lateness, in microseconds, and the crashes of every room: what the
/// rooms of one registry count together.
pub(crate) struct LatenessHistogram {
    histogram: Mutex<Histogram<u64>>,
    late: AtomicU64,
    /// Crashes of any room of the registry (restarted or closed after).
    pub(crate) crashes: AtomicU64,
}

impl LatenessHistogram {
    pub(crate) fn new() -> Self {
        LatenessHistogram {
            // 3 significant figures; values above the bound are saturated.
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("constant bounds that hdrhistogram accepts"),
            ),
            late: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
        }
    }

    /// The lateness in Prometheus' shape: cumulative counts at `bounds` (seconds).
    pub(crate) fn buckets(&self, bounds: &[f64]) -> HistogramSnapshot {
        let histogram = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let buckets = bounds
            .iter()
            .map(|&bound| {
                let micros = (bound * 1e6) as u64;
                (bound, histogram.count_between(0, micros))
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: histogram.mean() * histogram.len() as f64 / 1e6,
            count: histogram.len(),
        }
    }

    /// Ticks later than their room's `late_after`.
    pub(crate) fn late(&self) -> u64 {
        self.late.load(Relaxed)
    }

    pub(crate) fn record(&self, lateness: Duration, late: bool) {
        if late {
            self.late.fetch_add(1, Relaxed);
        }
        let mut histogram = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        histogram.saturating_record(micros(lateness));
    }

    pub(crate) fn read(&self) -> TickLateness {
        let histogram = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        summary(&histogram, self.late.load(Relaxed))
    }

    /// The ticks since `mark` was last moved here, and moves it to now.
    pub(crate) fn read_window(&self, mark: &mut LatenessMark) -> TickLateness {
        let now = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let late = self.late.load(Relaxed);
        let mut window = now.clone();
        if let Some(before) = &mark.histogram {
            // `before` is an earlier state of the same histogram: never larger.
            let _ = window.subtract(before);
        }
        let window = summary(&window, late.saturating_sub(mark.late));
        *mark = LatenessMark {
            histogram: Some(now),
            late,
        };
        window
    }
}

/// Where a window of tick lateness starts ([`super::Rooms::lateness_window`]).
#[derive(Default)]
pub struct LatenessMark {
    histogram: Option<Histogram<u64>>,
    late: u64,
}

fn summary(histogram: &Histogram<u64>, late: u64) -> TickLateness {
    let at = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
    TickLateness {
        ticks: histogram.len(),
        late,
        p50: at(0.5),
        p99: at(0.99),
        max: Duration::from_micros(histogram.max()),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_only_the_ticks_since_its_mark() {
        let lateness = LatenessHistogram::new();
        for _ in 0..10 {
            lateness.record(Duration::from_millis(1), false);
        }
        let mut mark = LatenessMark::default();
        assert_eq!(
            lateness.read_window(&mut mark).ticks,
            10,
            "a fresh mark is the start"
        );
        for _ in 0..10 {
            lateness.record(Duration::from_millis(20), true);
        }
        let window = lateness.read_window(&mut mark);
        assert_eq!((window.ticks, window.late), (10, 10));
        assert!(window.p50 >= Duration::from_millis(19), "{window:?}");
        assert_eq!(lateness.read_window(&mut mark).ticks, 0);
        assert_eq!(lateness.read().ticks, 20);
    }
}
