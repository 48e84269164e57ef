//! The public entry point: a [`Server`] is a configured service, run on a listener
//! until a shutdown future resolves (mini-redis's `server::run`, shared by the binary
//! and the tests).

use std::future::Future;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use std::sync::PoisonError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminConfig};
use crate::config::{Config, ConfigError};
use crate::group::Shared;
use crate::handle::{HubState, ServerHandle};
#[cfg(doc)]
use crate::listener::Listener;
use crate::listener::Listeners;
use crate::service::Service;
use crate::stats::Stats;
use crate::supervisor::{self, ServerError};

/// A gatehouse server for one service.
pub struct Server<S: Service> {
    shared: Arc<Shared<S>>,
    /// The admin listener to serve beside the game's, if any.
    admin: Option<(TcpListener, AdminConfig)>,
}

impl<S: Service> Server<S> {
    /// Checks the configuration and prepares a server for `service`.
    pub fn new(config: Config, service: S) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Server {
            shared: Arc::new(Shared::new(config, service)),
            admin: None,
        })
    }

    /// Serves the admin API ([`crate::admin`]: health, readiness, metrics, the JSON
    /// API, the live page) on `listener` while the server runs.
    pub fn with_admin(
        mut self,
        listener: TcpListener,
        config: AdminConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        self.admin = Some((listener, config));
        Ok(self)
    }

    /// Adds the embedder's own metrics (the save writer's, the rooms', the game's) to
    /// the admin listener's `/metrics`, after the server's.
    pub fn add_collector(&self, collector: Arc<dyn Collector>) {
        self.shared
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(collector);
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
    /// resolves, then kicks every connection `shutdown`, runs every disconnect hook and
    /// returns `Ok` (within `supervisor.drain_timeout`; past it, `Err` with how many
    /// connections were abandoned). Returns `Err` if the hub crashed more often than
    /// the restart intensity allows. Dropping the future
    /// stops the server as well (connections are kicked `shutdown` in the background).
    pub async fn run(
        self,
        listeners: impl Into<Listeners>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let token = CancellationToken::new();
        // Dropping this future (an embedder's select! took another branch) stops the
        // server too, instead of leaving it running unsupervised.
        let _stop_on_drop = token.clone().drop_guard();
        // However this ends (returned, or the future dropped), handles learn it at once.
        let _stopped = Stopped(self.shared.clone());
        // The admin listener outlives the game's: it answers (not ready) while they
        // drain, and stops once the server has.
        let admin_stop = CancellationToken::new();
        let _stop_admin = admin_stop.clone().drop_guard();
        if let Some((listener, config)) = self.admin {
            let serving = admin::serve(listener, config, self.shared.clone(), admin_stop.clone());
            tokio::spawn(serving);
        }
        let drain = self.shared.drain.clone();
        let supervised = supervisor::supervise(listeners.into(), self.shared, token.clone());
        tokio::pin!(supervised, shutdown);
        tokio::select! {
            result = &mut supervised => result,
            () = &mut shutdown => {
                drain.cancel();
                token.cancel();
                supervised.await
            }
            () = drain.cancelled() => {
                token.cancel();
                supervised.await
            }
        }
    }
}

/// Publishes [`HubState::Stopped`] for the server's handles when dropped.
struct Stopped<S: Service>(Arc<Shared<S>>);

impl<S: Service> Drop for Stopped<S> {
    fn drop(&mut self) {
        self.0.hub_slot.publish(HubState::Stopped);
    }
}
