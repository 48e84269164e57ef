//! The public entry point: a [`Server`] is a configured service with the parts it
//! owns (its rooms, its store writer, the admin listener, metrics collectors), run on
//! listeners until a shutdown future resolves (mini-redis's `server::run`, shared by
//! the binary and the tests).

use std::future::Future;
use std::sync::Arc;
#[cfg(feature = "metrics")]
use std::sync::PoisonError;
use std::time::Duration;

use futures_util::FutureExt;
use gatehouse_store::{SaveWriter, Store};
#[cfg(feature = "metrics")]
use prometheus_client::collector::Collector;
#[cfg(feature = "admin")]
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[cfg(feature = "admin")]
use crate::admin::{self, AdminConfig};
use crate::cluster::{ClusterConfig, ClusterLink, ClusterNode};
use crate::config::{Config, ConfigError};
use crate::group::Shared;
use crate::guard::RestartIntensity;
use crate::handle::{HubState, ServerHandle};
#[cfg(doc)]
use crate::listener::Listener;
use crate::listener::Listeners;
#[cfg(feature = "metrics")]
use crate::room::RoomMetrics;
use crate::room::{Room, RoomCodec, Rooms};
#[cfg(feature = "metrics")]
use crate::scrape::Metrics;
use crate::service::Service;
use crate::stats::Stats;
use crate::supervisor::{self, Parts, ServerError};

/// Shares a room type with the cluster, once the server has one.
type ShareRooms = Box<dyn FnOnce(&Arc<ClusterNode>) + Send>;

/// A gatehouse server for one service, and the parts it owns: it starts the admin
/// listener beside the connections, and once the last disconnect hook has run it
/// stops the rooms, then closes the store writer.
///
/// ```no_run
/// # async fn example<S: gatehouse::Service, R: gatehouse::room::Room>(
/// #     service: S, rooms: gatehouse::room::Rooms<R>,
/// #     writer: gatehouse_store::SaveWriter<gatehouse_store::MemoryStore>,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use gatehouse::{Config, Server};
///
/// let server = Server::new(Config::default(), service)?
///     .with_rooms("match", &rooms)
///     .with_store(&writer, Duration::from_secs(10));
/// let listener = gatehouse::bind("127.0.0.1:7000".parse()?).await?;
/// server.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct Server<S: Service> {
    shared: Arc<Shared<S>>,
    /// The admin listener to serve beside the game's, if any.
    #[cfg(feature = "admin")]
    admin: Option<(TcpListener, AdminConfig)>,
    /// What is stopped after the connections.
    parts: Parts,
    /// The metrics of the rooms handed over.
    #[cfg(feature = "metrics")]
    room_metrics: RoomMetrics,
    /// This node of a cluster, if it is one.
    cluster: Option<Arc<ClusterNode>>,
    /// Room types to share with the cluster once there is one.
    shared_rooms: Vec<ShareRooms>,
}

impl<S: Service> Server<S> {
    /// Checks the configuration and prepares a server for `service`.
    pub fn new(config: Config, service: S) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Server {
            shared: Arc::new(Shared::new(config, service)),
            #[cfg(feature = "admin")]
            admin: None,
            parts: Parts::default(),
            #[cfg(feature = "metrics")]
            room_metrics: RoomMetrics::default(),
            cluster: None,
            shared_rooms: Vec::new(),
        })
    }

    /// Makes this server one node of a cluster reached through `link`
    /// (`gatehouse-cluster`'s NATS link, or a [`LocalBus`](crate::cluster::LocalBus)
    /// in tests): broadcasts, group broadcasts, pushes and kicks by player reach
    /// every node, a player is logged in on one node at a time (the newest login
    /// wins), and [`ServerHandle::locate`] and [`ServerHandle::cluster_counts`] see
    /// the whole cluster. The node serves its own connections whatever the link
    /// does. Call it before [`Server::run`], at most once.
    pub fn with_cluster(
        mut self,
        link: impl ClusterLink,
        config: ClusterConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let max_frame = self.shared.config.limits.max_frame_bytes;
        let node = Arc::new(ClusterNode::new(config, Arc::new(link), max_frame));
        self.shared.hub_slot.players.set_cluster(node.clone());
        for share in self.shared_rooms.drain(..) {
            share(&node);
        }
        // Connection (and session) ids name their node from now on.
        let first_id = node.first_conn_id();
        self.shared
            .next_id
            .store(first_id, std::sync::atomic::Ordering::Relaxed);
        self.cluster = Some(node);
        Ok(self)
    }

    /// Owns the rooms of one type, reported as `kind` in the metrics: the rooms made
    /// from now on push at most the server's `limits.max_frame_bytes`, their numbers
    /// are in `/metrics`, and once the last disconnect hook has run the server shuts
    /// them down (within `supervisor.drain_timeout`), before closing the store. Hand
    /// the registry over before any room is made.
    pub fn with_rooms<R: Room>(mut self, kind: &'static str, rooms: &Rooms<R>) -> Self {
        rooms.set_max_frame(self.shared.config.limits.max_frame_bytes);
        #[cfg(feature = "metrics")]
        self.room_metrics.add(kind, rooms);
        let rooms = rooms.clone();
        self.parts.rooms.push((
            kind,
            Box::new(move |timeout| async move { rooms.shutdown(timeout).await }.boxed()),
        ));
        self
    }

    /// As [`Server::with_rooms`], and in a cluster ([`Server::with_cluster`]) the
    /// rooms are shared by every node under `kind` (the same on every node, as is the
    /// room type's [`RoomCodec`]): one room of a name in the whole cluster, run by the
    /// node where it was first joined, and joined from any node ([`Rooms::join`]).
    /// Outside a cluster the rooms are this server's, as with `with_rooms`.
    pub fn with_shared_rooms<R: RoomCodec>(mut self, kind: &'static str, rooms: &Rooms<R>) -> Self {
        self = self.with_rooms(kind, rooms);
        if let Some(cluster) = &self.cluster {
            cluster.add_room_kind(Arc::from(kind), rooms.share(kind, cluster.clone()));
        } else {
            let rooms = rooms.clone();
            self.shared_rooms
                .push(Box::new(move |cluster: &Arc<ClusterNode>| {
                    cluster.add_room_kind(Arc::from(kind), rooms.share(kind, cluster.clone()));
                }));
        }
        self
    }

    /// Owns the save writer: its numbers are in `/metrics`, and it is closed last,
    /// after the rooms, letting what was queued land within `flush_timeout`. Saves
    /// still queued then make [`Server::run`] return [`ServerError::Unsaved`].
    pub fn with_store<St: Store>(
        mut self,
        writer: &SaveWriter<St>,
        flush_timeout: Duration,
    ) -> Self {
        #[cfg(feature = "metrics")]
        {
            self.add_collector(writer.collector());
            let reading = writer.clone();
            self.shared.parts().saves = Some(Box::new(move || reading.stats()));
        }
        let writer = writer.clone();
        let close = move |timeout| async move { writer.close(timeout).await }.boxed();
        self.parts.store = Some((Box::new(close), flush_timeout));
        self
    }

    /// Serves the admin API ([`crate::admin`]: health, readiness, metrics, the JSON
    /// API, the console) on `listener` while the server runs.
    #[cfg(feature = "admin")]
    pub fn with_admin(
        mut self,
        listener: TcpListener,
        config: AdminConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        self.admin = Some((listener, config));
        Ok(self)
    }

    /// Adds the game's own metrics to the admin listener's `/metrics`, after the
    /// server's (the rooms' and the save writer's come with [`Server::with_rooms`] and
    /// [`Server::with_store`]).
    #[cfg(feature = "metrics")]
    pub fn add_collector(&self, collector: Arc<dyn Collector>) {
        lock(&self.shared.collectors).push(collector);
    }

    /// The server's metrics, for an embedder who serves them itself (the admin
    /// listener's `/metrics` reads the same).
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> Metrics<S> {
        Metrics(self.shared.clone())
    }

    /// The server's counters, readable while it runs and after.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// A handle to the running server for the game's own tasks: it follows the hub
    /// across restarts (see [`ServerHandle`]). Take it before [`Server::run`].
    pub fn handle(&self) -> ServerHandle<S::Message> {
        self.shared.hub_slot.handle()
    }

    /// Serves connections from `listeners` (a [`TcpListener`] of [`crate::bind`], one
    /// [`Listener`], or several, all behind one hub and one service) until `shutdown`
    /// resolves, then kicks every connection `shutdown` and runs every disconnect hook
    /// (within `supervisor.drain_timeout`), stops the rooms and closes the store, and
    /// returns `Ok`. Returns `Err` if the hub crashed more often than the restart
    /// intensity allows, if connections were abandoned at the drain timeout, or if
    /// saves had not landed when the store closed. Dropping the future stops the
    /// connections as well (kicked `shutdown` in the background), but leaves the rooms
    /// and the store to the caller.
    pub async fn run(
        self,
        listeners: impl Into<Listeners>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Server {
            shared,
            #[cfg(feature = "admin")]
            admin,
            parts,
            #[cfg(feature = "metrics")]
            room_metrics,
            cluster,
            shared_rooms: _,
        } = self;
        #[cfg(feature = "metrics")]
        if !room_metrics.is_empty() {
            let room_metrics = Arc::new(room_metrics);
            shared.parts().rooms = Some(room_metrics.clone());
            lock(&shared.collectors).push(room_metrics);
        }
        let token = CancellationToken::new();
        // Dropping this future (an embedder's select! took another branch) stops the
        // server too, instead of leaving it running unsupervised.
        let _stop_on_drop = token.clone().drop_guard();
        // However this ends (returned, or the future dropped), handles learn it at once.
        let _stopped = Stopped(shared.clone());
        // The admin listener outlives the game's: it answers (not ready) while they
        // drain and the parts stop, and stops once the server has.
        // The grace is for whoever probes `/readyz`: without the admin listener
        // nobody can see the server turn not ready, so it closes at once.
        #[cfg(feature = "admin")]
        let probed = admin.is_some();
        #[cfg(not(feature = "admin"))]
        let probed = false;
        #[cfg(feature = "admin")]
        let _stop_admin = {
            let admin_stop = CancellationToken::new();
            if let Some((listener, config)) = admin {
                let serving = admin::serve(listener, config, shared.clone(), admin_stop.clone());
                tokio::spawn(serving);
            }
            admin_stop.drop_guard()
        };
        // The cluster task outlives the connections: their hooks' releases of
        // players must reach the cluster.
        let cluster_stop = CancellationToken::new();
        let _stop_cluster = cluster_stop.clone().drop_guard();
        let cluster_task = cluster.map(|node| {
            let restarts = RestartIntensity::new(
                shared.config.supervisor.max_restarts,
                shared.config.supervisor.restart_window,
            );
            let timeout = node.config.request_timeout;
            let supervised = supervisor::supervise_cluster(
                node,
                shared.handle.clone(),
                cluster_stop.clone(),
                restarts,
            );
            (tokio::spawn(supervised), timeout)
        });
        let drain = shared.drain.clone();
        let crate::config::SupervisorConfig {
            drain_timeout,
            drain_grace,
            ..
        } = shared.config.supervisor;
        let drain_grace = if probed { drain_grace } else { Duration::ZERO };
        let supervised = supervisor::supervise(listeners.into(), shared, token.clone());
        tokio::pin!(supervised, shutdown);
        let begun = tokio::select! {
            result = &mut supervised => Err(result),
            () = &mut shutdown => Ok(()),
            () = drain.cancelled() => Ok(()),
        };
        let served = match begun {
            Err(result) => result,
            Ok(()) => {
                // Not ready from now on (`/readyz` 503), but still serving and accepting
                // for the grace, so that a load balancer sees it and sends no one new
                // before the listeners close; then every connection is kicked.
                drain.cancel();
                if !drain_grace.is_zero() {
                    info!(grace = ?drain_grace, "draining: not ready; accepting for supervisor.drain_grace, then closing");
                }
                tokio::select! {
                    result = &mut supervised => result,
                    () = tokio::time::sleep(drain_grace) => {
                        token.cancel();
                        supervised.await
                    }
                }
            }
        };
        // Whatever happened to the connections, the rooms stop and what was queued
        // gets its chance to land.
        let unsaved = parts.stop(drain_timeout).await;
        if let Some((task, timeout)) = cluster_task {
            // Leaving takes a few calls to the cluster, each within request_timeout.
            cluster_stop.cancel();
            let _ = tokio::time::timeout(timeout * 4, task).await;
        }
        match unsaved {
            None => served,
            Some(saves) => {
                if let Err(e) = served {
                    error!(error = %e, "the server also ended with this error");
                }
                Err(ServerError::Unsaved { saves })
            }
        }
    }
}

#[cfg(feature = "metrics")]
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes [`HubState::Stopped`] for the server's handles when dropped.
struct Stopped<S: Service>(Arc<Shared<S>>);

impl<S: Service> Drop for Stopped<S> {
    fn drop(&mut self) {
        self.0.hub_slot.publish(HubState::Stopped);
    }
}
