//! Reading the running server into a [`Sample`] (feature `metrics`): the scrape the
//! admin listener's `/metrics` and `/api/stats` serve, and [`Metrics`], the
//! embedder's handle on it for serving them itself.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::timeout;

use crate::config::PerTransport;
use crate::group::Shared;
use crate::hub::Census;
use crate::metrics::Sample;
use crate::service::Service;

/// How long a reading waits for the hub's census before leaving it out.
const CENSUS_WAIT: Duration = Duration::from_secs(1);

/// A handle on the server's metrics, for an embedder who serves them on its own
/// HTTP listener (the admin listener's `/metrics` does the same): take it with
/// [`crate::Server::metrics`] before [`crate::Server::run`]; it reads the running
/// server, and after it ends, the last numbers.
///
/// ```no_run
/// # async fn example<S: gatehouse::Service>(server: gatehouse::Server<S>) {
/// let metrics = server.metrics();
/// tokio::spawn(async move {
///     // e.g. from an HTTP handler of the game's own:
///     let text = metrics.text().await.unwrap_or_default();
///     println!("{text}");
/// });
/// # }
/// ```
pub struct Metrics<S: Service>(pub(crate) Arc<Shared<S>>);

impl<S: Service> Clone for Metrics<S> {
    fn clone(&self) -> Self {
        Metrics(self.0.clone())
    }
}

impl<S: Service> std::fmt::Debug for Metrics<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl<S: Service> Metrics<S> {
    /// Everything a scrape reports, read now.
    pub async fn sample(&self) -> Sample {
        sample(&self.0).await
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`](crate::metrics::CONTENT_TYPE)), the server's
    /// own, then the collectors added with [`crate::Server::add_collector`] and the
    /// parts the server owns (its rooms, its store writer). `Err` if a collector
    /// failed: the text would be cut short, which Prometheus rejects.
    pub async fn text(&self) -> Result<String, std::fmt::Error> {
        text(&self.0).await
    }
}

/// Reads everything a scrape reports.
pub(crate) async fn sample<S: Service>(shared: &Shared<S>) -> Sample {
    let stats = shared.stats.snapshot();
    let hub = shared.live_hub();
    let (census, hub_queue) = match &hub {
        Some(hub) => (
            timeout(CENSUS_WAIT, hub.census())
                .await
                .ok()
                .and_then(Result::ok),
            hub.queue_depth(),
        ),
        // No hub, no connections: every one was closed with the last hub.
        None => (Some(Census::default()), (0, 0)),
    };
    let traffic = PerTransport::from_fn(|t| {
        let mut total = stats.closed_traffic[t];
        if let Some(census) = &census {
            total += census.traffic[t];
        }
        total
    });
    let memory = &shared.core_config.memory;
    Sample {
        stats,
        census,
        traffic: shared.traffic_high.raise(traffic),
        hub_up: hub.is_some(),
        ready: shared.not_ready().is_none(),
        draining: shared.drain.is_cancelled(),
        hub_queue,
        handler_latency: shared.latency.read(),
        memory_budget: (memory.limit(), memory.used()),
        max_connections: shared.config.server.max_connections,
        start_time: shared
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
        cluster: shared.handle.cluster_stats(),
    }
}

/// A sample and every collector, as text.
pub(crate) async fn text<S: Service>(shared: &Shared<S>) -> Result<String, std::fmt::Error> {
    let sample = sample(shared).await;
    let collectors = shared
        .collectors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    sample.encode(&collectors)
}
