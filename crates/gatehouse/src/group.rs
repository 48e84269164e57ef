//! What the tasks of the supervision tree share: the server-wide state that lives as
//! long as the server ([`Shared`]), and one connection group, the tasks that live and
//! die with one life of the hub ([`Group`]). The supervisor creates both; the
//! acceptor and every connection hold them.

use std::sync::atomic::AtomicU64;
#[cfg(feature = "metrics")]
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

#[cfg(feature = "metrics")]
use prometheus_client::collector::Collector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::Config;
use crate::connection::{CoreConfig, DisconnectReason};
use crate::handle::{HubSlot, ServerHandle};
use crate::hub::HubHandle;
use crate::limits::Admission;
use crate::logs::LogLimiter;
use crate::metrics::latency::HandlerLatency;
#[cfg(feature = "metrics")]
use crate::metrics::TrafficHighWater;
#[cfg(feature = "metrics")]
use crate::room::RoomMetrics;
use crate::service::Service;
use crate::sessions::Sessions;
use crate::stats::Stats;
#[cfg(feature = "metrics")]
use gatehouse_store::WriterStats;

/// State shared by every task of one server, for its whole life.
pub(crate) struct Shared<S: Service> {
    pub(crate) config: Config,
    /// `config.limits` and what derives from it, shared by every connection core.
    pub(crate) core_config: Arc<CoreConfig>,
    pub(crate) service: S,
    /// Outside the hub so that counts survive its restarts.
    pub(crate) admission: Admission,
    pub(crate) next_id: AtomicU64,
    pub(crate) stats: Arc<Stats>,
    /// Where the current hub is published, for [`crate::ServerHandle`]s.
    pub(crate) hub_slot: HubSlot<S::Message>,
    /// A handle on that slot, lent to every handler's context.
    pub(crate) handle: ServerHandle<S::Message>,
    /// Budgets of the log lines floods cause: closes and refusals.
    pub(crate) close_logs: LogLimiter,
    pub(crate) refusal_logs: LogLimiter,
    /// Handler latency by route.
    pub(crate) latency: Arc<HandlerLatency>,
    /// The traffic counters' last reported values (they never go back).
    #[cfg(feature = "metrics")]
    pub(crate) traffic_high: TrafficHighWater,
    /// What resumable sessions need beside themselves: the secret of their tokens,
    /// and why recent ones ended (`sessions.rs`).
    pub(crate) sessions: Sessions,
    /// Cancelled to drain: stop accepting, kick everyone `shutdown`, return.
    pub(crate) drain: CancellationToken,
    /// When the server was made.
    pub(crate) started: SystemTime,
    /// What the parts the server owns report to `/api/stats` (as collectors they
    /// are in `collectors` too).
    #[cfg(feature = "metrics")]
    pub(crate) parts: Mutex<PartReadings>,
    /// The embedder's metrics, exported after the server's own.
    #[cfg(feature = "metrics")]
    pub(crate) collectors: Mutex<Vec<Arc<dyn Collector>>>,
}

impl<S: Service> Shared<S> {
    /// The readings of the parts the server owns (nothing that can panic runs under
    /// this lock).
    #[cfg(feature = "metrics")]
    pub(crate) fn parts(&self) -> std::sync::MutexGuard<'_, PartReadings> {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn new(config: Config, service: S) -> Self {
        // Without the metrics feature nothing would read the histograms.
        let measure = cfg!(feature = "metrics") && config.metrics.enabled;
        let latency = Arc::new(HandlerLatency::new(measure, |route| {
            service.route_name(route)
        }));
        let hub_slot = HubSlot::new();
        Shared {
            admission: Admission::new(
                config.server.max_connections,
                config.server.max_connections_per_ip,
                config.server.ipv6_prefix_len,
            ),
            core_config: Arc::new(
                CoreConfig::new(
                    config.limits.clone(),
                    config.server.memory_budget_bytes,
                    S::LOGIN_REQUIRED,
                )
                .resumable(S::RESUMABLE && !config.resume.window.is_zero()),
            ),
            config,
            service,
            next_id: AtomicU64::new(1),
            stats: Arc::new(Stats::default()),
            handle: hub_slot.handle(),
            hub_slot,
            close_logs: LogLimiter::default(),
            refusal_logs: LogLimiter::default(),
            latency,
            #[cfg(feature = "metrics")]
            traffic_high: TrafficHighWater::default(),
            sessions: Sessions::default(),
            drain: CancellationToken::new(),
            started: SystemTime::now(),
            #[cfg(feature = "metrics")]
            parts: Mutex::default(),
            #[cfg(feature = "metrics")]
            collectors: Mutex::new(Vec::new()),
        }
    }

    /// The hub now, unless it is restarting or stopped.
    pub(crate) fn live_hub(&self) -> Option<HubHandle<S::Message>> {
        self.hub_slot.current().filter(|hub| !hub.is_closed())
    }

    /// Why the server does not take connections now, if it does not.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if self.drain.is_cancelled() {
            Some("draining")
        } else if self.live_hub().is_none() {
            Some("hub restarting or stopped")
        } else {
            None
        }
    }
}

/// How to read the parts a server owns: its room types and its save writer.
#[cfg(feature = "metrics")]
#[derive(Default)]
pub(crate) struct PartReadings {
    pub(crate) rooms: Option<Arc<RoomMetrics>>,
    pub(crate) saves: Option<Box<dyn Fn() -> WriterStats + Send + Sync>>,
}

/// One life of the hub and the connection group that depends on it: the acceptor
/// and every connection accepted during it.
pub(crate) struct Group<M> {
    /// Cancels the acceptor and every connection of this group.
    pub(crate) token: CancellationToken,
    /// Tracks them, so the supervisor can wait until every hook ran.
    pub(crate) tracker: TaskTracker,
    pub(crate) hub: HubHandle<M>,
    /// Why the group was stopped; read by each connection for its kick.
    stop_reason: OnceLock<DisconnectReason>,
}

impl<M> Group<M> {
    pub(crate) fn new(token: CancellationToken, hub: HubHandle<M>) -> Self {
        Group {
            token,
            tracker: TaskTracker::new(),
            hub,
            stop_reason: OnceLock::new(),
        }
    }

    /// Stops every task of the group with `reason` (the first reason wins).
    pub(crate) fn stop(&self, reason: DisconnectReason) {
        let _ = self.stop_reason.set(reason);
        self.token.cancel();
        self.tracker.close();
    }

    /// The reason the group was stopped; a bare cancellation of the root token is a
    /// shutdown.
    pub(crate) fn stop_reason(&self) -> DisconnectReason {
        self.stop_reason
            .get()
            .cloned()
            .unwrap_or(DisconnectReason::Shutdown)
    }

    /// Waits (bounded) until every task of the group has ended; `Err` with how many
    /// had not when the time ran out.
    pub(crate) async fn drain(&self, timeout: Duration) -> Result<(), usize> {
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            let remaining = self.tracker.len();
            warn!(
                remaining,
                ?timeout,
                "drain timeout: abandoning connections that have not finished"
            );
            return Err(remaining);
        }
        Ok(())
    }
}
