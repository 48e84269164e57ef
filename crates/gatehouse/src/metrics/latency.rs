//! Handler latency, by route: how long from the read that brought a request (or
//! notify) to its answer being queued, in a Prometheus histogram per route.
//!
//! Reading the clock costs about as much as a tenth of a pipelined echo request on a
//! virtual machine, so it is not read per request: a connection's wakeup already has
//! the time its input was read, and the answers of a batch are timed together with
//! one clock reading when the batch ends (they leave in one write right after). A
//! handler that has to wait ends the batch so far (its answers are ready then), and
//! its own answer is timed in a batch of its own, from the same read, when it
//! comes. The pending counts live in a thread-local [`Batch`]: a batch never spans
//! an await (the connection loop begins and ends one between two waits).
//!
//! Labels are bounded: the routes the service names ([`Service::route_name`]), at
//! most [`MAX_NAMED_ROUTES`], and `other` for the rest.
//!
//! [`Service::route_name`]: crate::Service::route_name

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Upper bounds of the histogram's buckets, in seconds (then `+Inf`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, for comparing without floating point.
const BUCKET_NANOS: [u64; LATENCY_BUCKETS.len()] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Route names with a label of their own; the rest share `other`.
pub const MAX_NAMED_ROUTES: usize = 64;

/// The label of routes without a name of their own.
const OTHER: &str = "other";

/// Answers timed in one batch before it is ended early (distinct routes).
const PENDING_ROUTES: usize = 8;

/// One histogram, written by every thread (relaxed atomics: a scrape may see one
/// observation's bucket before its sum, which Prometheus tolerates).
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    /// Per bucket (not cumulative), the last one `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as read at one moment: cumulative buckets, as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the observations, in seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl AtomicHistogram {
    fn observe(&self, nanos: u64, n: u64) {
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(n, Relaxed);
        self.sum_nanos.fetch_add(nanos.saturating_mul(n), Relaxed);
    }

    pub(crate) fn read(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Relaxed);
                (bound, cumulative)
            })
            .collect();
        // The count is the buckets' sum (with `+Inf`'s), so the two always agree.
        let count = cumulative + self.buckets[LATENCY_BUCKETS.len()].load(Relaxed);
        HistogramSnapshot {
            buckets,
            sum: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            count,
        }
    }
}

/// Every route's histogram for one server.
#[derive(Debug)]
pub(crate) struct HandlerLatency {
    enabled: bool,
    /// Named routes, sorted, each with the slot of its label's histogram.
    routes: Vec<(u16, usize)>,
    /// One label per histogram: the route names, then `other`.
    labels: Vec<&'static str>,
    histograms: Vec<AtomicHistogram>,
}

impl HandlerLatency {
    /// Histograms for the routes `name` names (the first [`MAX_NAMED_ROUTES`]
    /// distinct names; routes sharing a name share its histogram).
    pub(crate) fn new(enabled: bool, name: impl Fn(u16) -> Option<&'static str>) -> Self {
        let mut labels: Vec<&'static str> = Vec::new();
        let mut routes = Vec::new();
        for route in 0..gatehouse_protocol::RESERVED_ROUTES_START {
            let Some(label) = name(route).filter(|&label| label != OTHER) else {
                continue;
            };
            let slot = match labels.iter().position(|&known| known == label) {
                Some(slot) => slot,
                None if labels.len() < MAX_NAMED_ROUTES => {
                    labels.push(label);
                    labels.len() - 1
                }
                None => continue,
            };
            routes.push((route, slot));
        }
        labels.push(OTHER);
        let histograms = labels.iter().map(|_| AtomicHistogram::default()).collect();
        HandlerLatency {
            enabled,
            routes,
            labels,
            histograms,
        }
    }

    fn slot(&self, route: u16) -> usize {
        match self.routes.binary_search_by_key(&route, |&(r, _)| r) {
            Ok(i) => self.routes[i].1,
            Err(_) => self.labels.len() - 1,
        }
    }

    /// Every route's label and histogram.
    pub(crate) fn read(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        self.labels
            .iter()
            .zip(&self.histograms)
            .map(|(&label, histogram)| (label, histogram.read()))
            .collect()
    }
}

/// The answers of the current batch on this thread, not yet timed. Plain data (no
/// destructor), so that reaching it is a plain thread-local access: the histograms it
/// is timed into are passed by the caller, whose server it is.
struct Batch {
    /// When the batch's input was read; `None` outside a batch (or metrics off).
    start: Option<Instant>,
    /// Routes answered, with how many times.
    pending: [(u16, u32); PENDING_ROUTES],
    len: usize,
}

thread_local! {
    static BATCH: RefCell<Batch> = const {
        RefCell::new(Batch { start: None, pending: [(0, 0); PENDING_ROUTES], len: 0 })
    };
}

impl Batch {
    /// Times the pending answers into `latency`'s histograms: one clock reading.
    fn flush(&mut self, latency: &HandlerLatency) {
        if self.start.is_some() && self.len > 0 {
            self.flush_at(latency, clock());
        }
    }

    /// Times the pending answers as ready at `now`.
    fn flush_at(&mut self, latency: &HandlerLatency, now: Instant) {
        let Some(start) = self.start else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        for &(route, count) in &self.pending[..self.len] {
            latency.histograms[latency.slot(route)].observe(nanos, u64::from(count));
        }
        self.len = 0;
    }
}

/// The time, as the connection tasks read it (tokio's clock, for paused-time tests).
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts timing the answers to input read at `read_at`.
#[inline]
pub(crate) fn begin(latency: &HandlerLatency, read_at: Instant) {
    if latency.enabled {
        BATCH.with_borrow_mut(|batch| {
            batch.start = Some(read_at);
            batch.len = 0;
        });
    }
}

/// An answer on `route` was queued in the current batch.
#[inline]
pub(crate) fn answered(latency: &HandlerLatency, route: u16) {
    if !latency.enabled {
        return;
    }
    BATCH.with_borrow_mut(|batch| {
        if batch.start.is_none() {
            return;
        }
        let len = batch.len;
        // Most batches answer one route: it is the last entry.
        if let Some(entry) = batch.pending[..len]
            .iter_mut()
            .rev()
            .find(|(r, _)| *r == route)
        {
            entry.1 += 1;
            return;
        }
        if len == PENDING_ROUTES {
            batch.flush(latency);
        }
        let len = batch.len;
        batch.pending[len] = (route, 1);
        batch.len = len + 1;
    });
}

/// Times the batch's answers now and ends it.
#[inline]
pub(crate) fn end(latency: &HandlerLatency) {
    if !latency.enabled {
        return;
    }
    BATCH.with_borrow_mut(|batch| {
        batch.flush(latency);
        batch.start = None;
    });
}
