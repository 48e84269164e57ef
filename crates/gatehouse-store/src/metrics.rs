//! The save writer's metrics (`gatehouse_save_*`, feature `metrics`): a
//! prometheus-client collector that reads [`SaveWriter::stats`] at each scrape.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};

use crate::{SaveWriter, Store};

impl<S: Store> SaveWriter<S> {
    /// The writer's metrics (`gatehouse_save_*`, see gatehouse's `docs/OPERATIONS.md`)
    /// for a Prometheus registry or gatehouse's `Server::add_collector`.
    pub fn collector(&self) -> Arc<dyn Collector>
    where
        S: Send + Sync + 'static,
    {
        Arc::new(WriterCollector(self.clone()))
    }
}

/// [`SaveWriter::collector`]'s collector: reads [`SaveWriter::stats`] at each scrape.
struct WriterCollector<S>(SaveWriter<S>);

impl<S> std::fmt::Debug for WriterCollector<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterCollector")
    }
}

impl<S: Store + Send + Sync + 'static> Collector for WriterCollector<S> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType::{Counter, Gauge};
        let stats = self.0.stats();
        let oldest = stats.oldest_unsaved.unwrap_or_default().as_secs_f64();
        let metrics = [
            (
                "gatehouse_save_queued",
                "Keys whose latest state has not landed yet, plus dead letters to write",
                Gauge,
                stats.queued as f64,
            ),
            (
                "gatehouse_save_oldest_unsaved_seconds",
                "How long the longest-waiting queued state has waited (0 when none waits)",
                Gauge,
                oldest,
            ),
            (
                "gatehouse_saves",
                "Records that landed in the database",
                Counter,
                stats.saved as f64,
            ),
            (
                "gatehouse_save_failed_attempts",
                "Database calls that failed or timed out (and were retried)",
                Counter,
                stats.failed_attempts as f64,
            ),
            (
                "gatehouse_save_conflicts",
                "Saves not applied because another session saved the key first",
                Counter,
                stats.conflicts as f64,
            ),
            (
                "gatehouse_save_dead_letters",
                "Saves written to the dead letters",
                Counter,
                stats.dead_letters as f64,
            ),
        ];
        for (name, help, kind, value) in metrics {
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            match kind {
                Counter => metric.encode_counter::<NoLabelSet, _, u64>(&(value as u64), None)?,
                _ => metric.encode_gauge(&value)?,
            }
        }
        Ok(())
    }
}
