//! The console's history: the numbers the console charts, read once a second for
//! the last [`WINDOW`] seconds and kept in the server, so that a page opened or
//! reloaded draws its charts at once instead of from empty (`/api/history`).
//!
//! Bounded: [`WINDOW`] points of a few numbers each. Read only while an admin listener
//! serves; a server without one keeps no history and takes no readings.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::connection::TrafficCounts;
use crate::group::Shared;
use crate::metrics::Sample;
use crate::scrape;
use crate::service::Service;

/// Points kept: one a second, so five minutes (the page's charts' window).
pub(super) const WINDOW: usize = 300;

/// How often a point is read.
pub(super) const EVERY: Duration = Duration::from_secs(1);

/// The server's numbers at one moment, as the page charts them (counters since
/// start; the page takes the rates). Names as the page's own samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Point {
    /// Milliseconds since the Unix epoch.
    pub(super) at: u64,
    /// Connections open; `None` when the hub did not answer in time.
    pub(super) open: Option<u64>,
    pub(super) frames_in: u64,
    pub(super) frames_out: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) kicks: u64,
    /// Saves waiting to land; `None` without a save writer.
    pub(super) save_queued: Option<u64>,
}

impl Point {
    fn of(sample: &Sample, save_queued: Option<u64>, at: SystemTime) -> Point {
        let mut traffic = TrafficCounts::default();
        for (_, counts) in sample.traffic.iter() {
            traffic += *counts;
        }
        Point {
            at: at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            open: sample
                .census
                .as_ref()
                .map(|c| c.open.iter().map(|(_, n)| n).sum()),
            frames_in: traffic.frames_in,
            frames_out: traffic.frames_out,
            bytes_in: traffic.bytes_in,
            bytes_out: traffic.bytes_out,
            kicks: sample.stats.kicks.iter().sum(),
            save_queued,
        }
    }
}

/// The last [`WINDOW`] points, oldest first.
#[derive(Debug, Default)]
pub(super) struct History(Mutex<VecDeque<Point>>);

impl History {
    fn push(&self, point: Point) {
        let mut points = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if points.len() == WINDOW {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// Every point kept, oldest first.
    pub(super) fn points(&self) -> Vec<Point> {
        let points = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        points.iter().copied().collect()
    }
}

/// Reads a point every [`EVERY`] into `history` until `stop`.
pub(super) async fn record<S: Service>(
    shared: Arc<Shared<S>>,
    history: Arc<History>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let sample = scrape::sample(&shared).await;
        let save_queued = shared
            .parts()
            .saves
            .as_ref()
            .map(|read| read().queued as u64);
        history.push(Point::of(&sample, save_queued, SystemTime::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: u64) -> Point {
        Point {
            at,
            open: Some(1),
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            kicks: 0,
            save_queued: None,
        }
    }

    #[test]
    fn the_history_keeps_the_last_window_of_points_oldest_first() {
        let history = History::default();
        for at in 0..(WINDOW as u64 + 7) {
            history.push(point(at));
        }
        let points = history.points();
        assert_eq!(points.len(), WINDOW);
        assert_eq!(points.first().map(|p| p.at), Some(7));
        assert_eq!(points.last().map(|p| p.at), Some(WINDOW as u64 + 6));
    }

    #[test]
    fn a_point_is_written_with_the_names_the_page_reads() {
        let json = serde_json::to_value(point(5)).unwrap_or_default();
        for key in [
            "at",
            "open",
            "framesIn",
            "framesOut",
            "bytesIn",
            "bytesOut",
            "kicks",
            "saveQueued",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
