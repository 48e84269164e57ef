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
use std::time::Instant;

use crate::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn named(route: u16) -> Option<&'static str> {
        match route {
            1 => Some("echo"),
            7 => Some("login"),
            _ => None,
        }
    }

    #[test]
    fn observations_land_in_cumulative_buckets_with_their_sum() {
        let histogram = AtomicHistogram::default();
        histogram.observe(50_000, 2); // 50 µs
        histogram.observe(3_000_000, 1); // 3 ms
        histogram.observe(60_000_000_000, 1); // a minute: +Inf only
        let read = histogram.read();
        assert_eq!(read.count, 4);
        assert_eq!(read.buckets[0], (0.000_1, 2));
        assert_eq!(read.buckets[5], (0.005, 3));
        assert_eq!(read.buckets.last(), Some(&(5.0, 3)));
        assert!((read.sum - (0.000_1 + 0.003 + 60.0)).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_times_each_answer_from_the_read_to_the_end_of_its_batch() {
        let latency = HandlerLatency::new(true, named);
        let read_at = clock();
        begin(&latency, read_at);
        answered(&latency, 1);
        answered(&latency, 1);
        answered(&latency, 9); // unnamed: other
        tokio::time::advance(Duration::from_millis(2)).await;
        end(&latency);
        answered(&latency, 1); // outside a batch: not timed
        let read = latency.read();
        let labels: Vec<_> = read.iter().map(|(label, _)| *label).collect();
        assert_eq!(labels, ["echo", "login", "other"]);
        assert_eq!(read[0].1.count, 2);
        assert!((read[0].1.sum - 0.004).abs() < 1e-9, "{}", read[0].1.sum);
        assert_eq!(read[1].1.count, 0);
        assert_eq!(read[2].1.count, 1);
        assert_eq!(read[0].1.buckets[4], (0.002_5, 2), "2 ms is under 2.5 ms");
        assert_eq!(read[0].1.buckets[3], (0.001, 0), "and over 1 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_handler_is_timed_from_its_read_in_a_batch_of_its_own() {
        let latency = HandlerLatency::new(true, named);
        let read_at = clock();
        begin(&latency, read_at);
        answered(&latency, 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        end(&latency); // the login waits: the echo before it is ready at 1 ms
        answered(&latency, 7); // between batches: nothing counted
        tokio::time::advance(Duration::from_millis(9)).await;
        begin(&latency, read_at); // the login is done: from its read
        answered(&latency, 7);
        end(&latency);
        let read = latency.read();
        assert!((read[0].1.sum - 0.001).abs() < 1e-9);
        assert_eq!(read[1].1.count, 1);
        assert!((read[1].1.sum - 0.010).abs() < 1e-9);
    }

    #[test]
    fn the_bucket_bounds_in_nanoseconds_are_the_bounds_in_seconds() {
        for (nanos, seconds) in BUCKET_NANOS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*nanos, (seconds * 1e9).round() as u64);
        }
    }

    #[test]
    fn a_batch_answering_more_routes_than_it_holds_times_them_all() {
        let latency = HandlerLatency::new(true, |_| None);
        begin(&latency, clock());
        for route in 0..(PENDING_ROUTES as u16 * 2 + 1) {
            answered(&latency, route);
        }
        end(&latency);
        assert_eq!(latency.read()[0].1.count, PENDING_ROUTES as u64 * 2 + 1);
    }

    #[test]
    fn routes_sharing_a_name_share_its_histogram_and_other_stays_last() {
        let latency = HandlerLatency::new(true, |route| match route {
            1 | 2 => Some("chat"),
            3 => Some("other"),
            _ => None,
        });
        assert_eq!(latency.labels, ["chat", "other"]);
        assert_eq!(
            (latency.slot(1), latency.slot(2), latency.slot(3)),
            (0, 0, 1)
        );
    }

    #[test]
    fn switched_off_nothing_is_timed() {
        let latency = HandlerLatency::new(false, named);
        begin(&latency, clock());
        answered(&latency, 1);
        end(&latency);
        assert!(latency.read().iter().all(|(_, h)| h.count == 0));
    }
}

/// Every interleaving of the handler histograms, which every connection task writes
/// (relaxed `fetch_add`s) while a scrape reads them. The pending answers of a batch
/// ([`Batch`]) are thread-local and never shared, so only the histograms are
/// modelled. Run with `--cfg gatehouse_loom` (README, "Model-checked concurrency").
#[cfg(all(test, gatehouse_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::sync::Arc;

    #[test]
    fn loom_concurrent_observations_are_all_counted_and_a_scrape_sees_consistent_buckets() {
        loom::model(|| {
            let histogram = Arc::new(AtomicHistogram::default());
            // Two connections' batches, into the same bucket (50 µs and 60 µs).
            let other = {
                let histogram = histogram.clone();
                thread::spawn(move || histogram.observe(60_000, 2))
            };
            histogram.observe(50_000, 1);
            let scrape = histogram.read();
            let counts: Vec<u64> = scrape.buckets.iter().map(|&(_, count)| count).collect();
            assert!(
                counts.windows(2).all(|pair| pair[0] <= pair[1]),
                "cumulative"
            );
            assert_eq!(scrape.count, counts.last().copied().unwrap_or(0));
            assert!([1, 3].contains(&scrape.count), "{}", scrape.count);
            other.join().unwrap_or(());
            let done = histogram.read();
            assert_eq!((done.count, done.buckets[0].1), (3, 3), "none lost");
            assert!((done.sum - 0.000_17).abs() < 1e-12, "{}", done.sum);
        });
    }
}
