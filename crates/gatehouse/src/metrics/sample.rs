//! One scrape (feature `metrics`): everything read at one moment, a [`Sample`],
//! written in the OpenMetrics text format with the embedder's collectors after it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use prometheus_client::collector::Collector;

use super::latency::HistogramSnapshot;
use crate::cluster::ClusterStats;
use crate::config::{PerTransport, TransportKind};
use crate::connection::TrafficCounts;
use crate::hub::Census;
use crate::stats::{StatsSnapshot, DISCONNECT_REASONS, KICK_REASONS, REFUSAL_REASONS};

/// Everything one scrape reports, read at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The server's counters.
    pub stats: StatsSnapshot,
    /// The live connections summed up (all zero while the hub restarts); `None` if
    /// the hub did not answer in time (its families are then left out of the scrape
    /// rather than reported as zero).
    pub census: Option<Census>,
    /// Frames and bytes per transport since the server started: the ended
    /// connections' and the live ones', never lower than at the previous scrape.
    pub traffic: PerTransport<TrafficCounts>,
    /// A hub is up (not restarting, not stopped).
    pub hub_up: bool,
    /// The server takes new connections: the hub is up and no drain has begun.
    pub ready: bool,
    /// A drain (or shutdown) has begun.
    pub draining: bool,
    /// Commands and frame bytes waiting for the hub.
    pub hub_queue: (usize, usize),
    /// Handler latency per route label.
    pub handler_latency: Vec<(&'static str, HistogramSnapshot)>,
    /// `server.memory_budget_bytes`, and how much of it is in use.
    pub memory_budget: (usize, usize),
    /// `server.max_connections`.
    pub max_connections: usize,
    /// When the server was made, in seconds since the Unix epoch.
    pub start_time: f64,
    /// What the link to the cluster did, if the server is a node of one.
    pub cluster: Option<ClusterStats>,
}

/// Keeps the traffic counters monotonic across scrapes: a connection that has just
/// left the hub's registry but not yet moved its counts to the server's totals (a
/// few instructions later), or a census the hub could not answer in time, would
/// otherwise read as a counter reset.
#[derive(Debug, Default)]
pub(crate) struct TrafficHighWater(PerTransport<[AtomicU64; 4]>);

impl TrafficHighWater {
    pub(crate) fn raise(
        &self,
        traffic: PerTransport<TrafficCounts>,
    ) -> PerTransport<TrafficCounts> {
        PerTransport::from_fn(|t| {
            let now = traffic[t].to_array();
            let marks = &self.0[t];
            TrafficCounts::from_array(std::array::from_fn(|i| {
                marks[i].fetch_max(now[i], Relaxed).max(now[i])
            }))
        })
    }
}

/// The OpenMetrics content type of [`Sample::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A collector shared with whoever made it (the embedder keeps its own handle).
#[derive(Debug)]
struct SharedCollector(Arc<dyn Collector>);

impl Collector for SharedCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

impl Sample {
    /// The sample and `extra` collectors in the OpenMetrics text format; `Err` if a
    /// collector failed (the text would be cut short, which Prometheus rejects).
    pub fn encode(&self, extra: &[Arc<dyn Collector>]) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        for collector in extra {
            registry.register_collector(Box::new(SharedCollector(collector.clone())));
        }
        let mut text = String::new();
        // Writing to a String cannot fail: an error is a collector's own.
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Writes one metric family without labels.
pub fn encode_one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        // Every counter counts whole things.
        MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&(value as u64), None),
        _ => metric.encode_gauge(&value),
    }
}

/// Writes one metric family with one label, a value per label value.
pub fn encode_labelled<'v>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: impl IntoIterator<Item = (&'v str, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (value_label, value) in values {
        let labels = [(label, value_label)];
        let mut family = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => {
                family.encode_counter::<NoLabelSet, _, u64>(&(value as u64), None)?;
            }
            _ => family.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// Writes one histogram family with one label.
pub fn encode_histograms<'v>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    histograms: impl IntoIterator<Item = (&'v str, &'v HistogramSnapshot)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (value_label, histogram) in histograms {
        let labels = [(label, value_label)];
        let mut family = metric.encode_family(&labels)?;
        // prometheus-client wants each bucket's own count, `+Inf` last.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = histogram
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let own = cumulative - below;
                below = cumulative;
                (bound, own)
            })
            .collect();
        buckets.push((f64::INFINITY, histogram.count.saturating_sub(below)));
        family.encode_histogram::<NoLabelSet>(histogram.sum, histogram.count, &buckets, None)?;
    }
    Ok(())
}

/// `value` of each transport, labelled with its scheme.
pub(crate) fn per_transport<T>(
    value: impl Fn(TransportKind) -> T,
) -> impl Iterator<Item = (&'static str, T)> {
    TransportKind::ALL
        .into_iter()
        .map(move |t| (t.scheme(), value(t)))
}

/// Counters by reason: each label with its count.
pub(crate) fn labelled_by<'a, const N: usize>(
    labels: &'static [&'static str; N],
    values: &'a [u64; N],
) -> impl Iterator<Item = (&'static str, u64)> + 'a {
    labels.iter().copied().zip(values.iter().copied())
}

fn as_values<'a>(
    counts: impl Iterator<Item = (&'a str, u64)>,
) -> impl Iterator<Item = (&'a str, f64)> {
    counts.map(|(label, count)| (label, count as f64))
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

impl Collector for Sample {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let s = &self.stats;
        // Left out when the hub did not answer in time: not zero, unknown.
        let c = self.census.as_ref();
        let t = &self.traffic;

        // The server.
        let mut info = e.encode_descriptor(
            "gatehouse_build_info",
            "The gatehouse version serving (always 1)",
            None,
            Gauge,
        )?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        info.encode_family(&version)?.encode_gauge(&1)?;
        encode_one(
            &mut e,
            "gatehouse_start_time_seconds",
            "When the server started, in seconds since the Unix epoch",
            Gauge,
            self.start_time,
        )?;
        encode_one(
            &mut e,
            "gatehouse_ready",
            "1 while the server takes new connections (hub up, no drain)",
            Gauge,
            flag(self.ready),
        )?;
        encode_one(
            &mut e,
            "gatehouse_draining",
            "1 once a drain or shutdown has begun",
            Gauge,
            flag(self.draining),
        )?;
        encode_one(
            &mut e,
            "gatehouse_hub_up",
            "1 while a hub runs (0 during a restart)",
            Gauge,
            flag(self.hub_up),
        )?;

        // Connections.
        if let Some(c) = c {
            encode_labelled(
                &mut e,
                "gatehouse_connections_open",
                "Live connections",
                Gauge,
                "transport",
                per_transport(|i| c.open[i] as f64),
            )?;
            encode_one(
                &mut e,
                "gatehouse_players_logged_in",
                "Connections logged in as a player",
                Gauge,
                c.players as f64,
            )?;
            encode_one(
                &mut e,
                "gatehouse_outbound_queue_bytes",
                "Unsent bytes queued for all connections",
                Gauge,
                c.queued_bytes as f64,
            )?;
            encode_one(
                &mut e,
                "gatehouse_outbound_queue_max_bytes",
                "The most unsent bytes queued for one connection",
                Gauge,
                c.queued_bytes_max as f64,
            )?;
        }
        encode_one(
            &mut e,
            "gatehouse_connections_max",
            "server.max_connections",
            Gauge,
            self.max_connections as f64,
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_connections_accepted",
            "Connections admitted",
            Counter,
            "transport",
            per_transport(|i| s.accepted_by_transport[i] as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_connections_refused",
            "Connections refused at accept, by reason",
            Counter,
            "reason",
            as_values(labelled_by(&REFUSAL_REASONS, &s.refusals)),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_disconnects",
            "Admitted connections that ended, by reason",
            Counter,
            "reason",
            as_values(labelled_by(&DISCONNECT_REASONS, &s.disconnects)),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_kicks",
            "Kicks sent to admitted connections, by kick reason",
            Counter,
            "reason",
            as_values(labelled_by(&KICK_REASONS, &s.kicks)),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_handshake_failures",
            "TLS handshakes and WebSocket upgrades that failed",
            Counter,
            "transport",
            per_transport(|i| s.handshake_failures_by_transport[i] as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_handshake_timeouts",
            "Handshakes not done within limits.handshake_timeout",
            Counter,
            "transport",
            per_transport(|i| s.handshake_timeouts_by_transport[i] as f64),
        )?;
        encode_one(
            &mut e,
            "gatehouse_http_pages_served",
            "Plain HTTP requests answered by WebSocket listeners",
            Counter,
            s.pages_served as f64,
        )?;

        // Traffic.
        encode_labelled(
            &mut e,
            "gatehouse_frames_received",
            "Frames received",
            Counter,
            "transport",
            per_transport(|i| t[i].frames_in as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_frames_sent",
            "Frames queued to send",
            Counter,
            "transport",
            per_transport(|i| t[i].frames_out as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_received_bytes",
            "Bytes of the frames received (length headers included)",
            Counter,
            "transport",
            per_transport(|i| t[i].bytes_in as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_sent_bytes",
            "Bytes of frames the transports took",
            Counter,
            "transport",
            per_transport(|i| t[i].bytes_out as f64),
        )?;
        encode_one(
            &mut e,
            "gatehouse_memory_budget_bytes",
            "server.memory_budget_bytes",
            Gauge,
            self.memory_budget.0 as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_memory_budget_used_bytes",
            "Buffered bytes charged to the memory budget",
            Gauge,
            self.memory_budget.1 as f64,
        )?;

        // Handlers and sessions.
        encode_histograms(
            &mut e,
            "gatehouse_handler_duration_seconds",
            "From the read that brought a request or notify to its answer being queued",
            "route",
            self.handler_latency.iter().map(|(l, h)| (*l, h)),
        )?;
        encode_one(
            &mut e,
            "gatehouse_disconnect_hooks",
            "Disconnect hooks run (one per session)",
            Counter,
            s.disconnect_hooks as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_hook_timeouts",
            "Connect or disconnect hooks dropped at their timeout",
            Counter,
            s.hook_timeouts as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_checkpoints",
            "Checkpoints of dirty sessions",
            Counter,
            s.checkpoints as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_sessions_detached",
            "Resumable sessions whose connection was lost, kept for a resume",
            Counter,
            s.sessions_detached as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_sessions_resumed",
            "Sessions a new connection resumed",
            Counter,
            s.sessions_resumed as f64,
        )?;

        // The hub.
        encode_one(
            &mut e,
            "gatehouse_hub_restarts",
            "Hub restarts after a crash",
            Counter,
            s.hub_restarts as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_hub_queue_commands",
            "Commands waiting for the hub",
            Gauge,
            self.hub_queue.0 as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_hub_queue_bytes",
            "Frame bytes waiting for the hub",
            Gauge,
            self.hub_queue.1 as f64,
        )?;
        if let Some(cluster) = &self.cluster {
            encode_cluster(&mut e, cluster)?;
        }
        Ok(())
    }
}

/// The cluster's families: only a node of a cluster has them.
fn encode_cluster(e: &mut DescriptorEncoder<'_>, c: &ClusterStats) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    encode_one(
        e,
        "gatehouse_cluster_connected",
        "1 while the link to the cluster is connected",
        Gauge,
        flag(c.connected),
    )?;
    encode_one(
        e,
        "gatehouse_cluster_nodes_alive",
        "Other nodes heard from within cluster.dead_after",
        Gauge,
        c.nodes_alive as f64,
    )?;
    encode_one(
        e,
        "gatehouse_cluster_messages_sent",
        "Messages published to other nodes",
        Counter,
        c.sent as f64,
    )?;
    encode_labelled(
        e,
        "gatehouse_cluster_messages_dropped",
        "Messages to other nodes dropped: the outbox was full, or the link down",
        Counter,
        "reason",
        [
            ("outbox_full", c.dropped_full as f64),
            ("disconnected", c.dropped_disconnected as f64),
        ],
    )?;
    encode_one(
        e,
        "gatehouse_cluster_messages_received",
        "Messages received from other nodes",
        Counter,
        c.received as f64,
    )?;
    encode_one(
        e,
        "gatehouse_cluster_messages_malformed",
        "Messages and values from the cluster dropped as malformed",
        Counter,
        c.malformed as f64,
    )?;
    encode_one(
        e,
        "gatehouse_cluster_players_lost",
        "Local sessions kicked because another node logged the player in later",
        Counter,
        c.lost_players as f64,
    )?;
    encode_one(
        e,
        "gatehouse_cluster_node_deaths",
        "Nodes declared dead (not heard from within cluster.dead_after)",
        Counter,
        c.nodes_died as f64,
    )
}
