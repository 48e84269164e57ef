//! What the server exports to Prometheus: every metric's name, type and labels are
//! here and in `docs/OPERATIONS.md` (a test checks that the two agree).
//!
//! Nothing is counted for the metrics' sake on the hot path beyond each connection's
//! own `Meter` and the per-batch handler timing of `latency` (both only with
//! `[metrics] enabled`).
//! A scrape (feature `metrics`; `sample`, and the crate's `scrape`) reads everything at once into a `Sample`: the server's [`Stats`]
//! counters, the hub's [`Census`] of the live connections (their meters summed up),
//! the hub's queue and the handler histograms; `Sample::encode` writes it in the
//! OpenMetrics text format with `prometheus-client`, followed by whatever collectors
//! the embedder added (the save writer's, the rooms').
//!
//! [`Stats`]: crate::stats::Stats
//! [`Census`]: crate::Census

pub(crate) mod latency;
#[cfg(feature = "metrics")]
mod sample;

/// The Prometheus client the metrics are written with, for the embedder's own
/// collectors ([`crate::Server::add_collector`]).
#[cfg(feature = "metrics")]
pub use prometheus_client;
#[cfg(feature = "metrics")]
pub use prometheus_client::collector::Collector;

pub use self::latency::{HistogramSnapshot, LATENCY_BUCKETS, MAX_NAMED_ROUTES};
#[cfg(feature = "metrics")]
pub(crate) use self::sample::TrafficHighWater;
#[cfg(feature = "metrics")]
pub use self::sample::{encode_histograms, encode_labelled, encode_one, Sample, CONTENT_TYPE};
#[cfg(feature = "admin")]
pub(crate) use self::sample::{labelled_by, per_transport};
