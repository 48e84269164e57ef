//! The supervision tree, all of it, in one place: the seed's flaw fixed.
//!
//! ```text
//! admin listener                      admin::serve, beside the tree (Server::run): up until it has stopped
//! cluster task                        cluster_task::run, beside the tree (supervise_cluster): up until it has stopped
//! root (rest_for_one)                 supervise(): this function's loop
//!  ├─ store writer                    gatehouse_store::SaveWriter: started before, closed after
//!  ├─ room supervisors                room::Rooms, one per room type: started before, shut down after
//!  │   └─ rooms                       one task each (one_for_one), restarted by its own policy
//!  ├─ hub                             hub::spawn — gs_svr: registry, groups, broadcast
//!  └─ connection group               group::Group: cancelled and awaited whenever the hub restarts
//!      ├─ acceptors                   listener::accept_loop, one per listener; stop with their group
//!      ├─ handshakes                  listener::handshake_then_serve (TLS, WebSocket), then:
//!      └─ connections                 driver::serve, one task each
//! ```
//!
//! - The hub ends (a panic, or any exit while the server runs): the whole connection
//!   group is stopped with reason `server_restart`. Every connection sends that kick,
//!   runs its disconnect hook once, and closes; the acceptors stop (new connects wait
//!   in the kernel's backlog). Once the group has drained, a fresh hub and group
//!   start, and accepting resumes.
//! - More than `supervisor.max_restarts` restarts within `supervisor.restart_window`
//!   (OTP's restart intensity) ends `supervise` with an error, after the connections
//!   were closed as above: the process exits non-zero for systemd or Kubernetes.
//! - Shutdown: the group is stopped with reason `shutdown` and drained within
//!   `supervisor.drain_timeout`; tasks still running then make `supervise` end with
//!   an error saying how many (their saves may not have been queued).
//!
//! The store writer and the room registries are the server's [`Parts`]: the game
//! makes them and hands them to the server (`Server::with_store`,
//! `Server::with_rooms`), and the server stops them once every disconnect hook has
//! run: rooms first (their members are gone), then the writer, which lands what the
//! hooks and the rooms queued. They are untouched by hub restarts.
//!
//! Rooms are supervised by their own tasks (`room::task`), each with its own restart
//! intensity; they reach connections through their mailboxes and the hub through a
//! [`ServerHandle`](crate::ServerHandle), so neither a room crash nor a hub restart
//! involves the other.
//!
//! The cluster task (only in a cluster, `Server::with_cluster`) is the one thing
//! that awaits the link to other nodes; the hub and the connections only put into
//! its bounded outbox. It starts before the tree and stops after it, so that the
//! hooks' releases of players reach the cluster; if it panics it is restarted under
//! its own restart intensity, the node serving its own connections meanwhile.
//!
//! A connection that panics is not a supervisor matter: its handler runs under
//! `catch_unwind` in its own task (see `driver`), so only it ends.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatehouse_store::Unsaved;
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cluster::ClusterNode;
use crate::cluster_task;
use crate::connection::DisconnectReason;
use crate::group::{Group, Shared};
use crate::guard::{panic_message, RestartIntensity};
use crate::handle::{HubState, ServerHandle};
use crate::hub;
use crate::listener::{self, Listener, Listeners};
use crate::service::Service;

/// Why a server stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The hub kept crashing: OTP's restart intensity was exceeded.
    #[error("hub restarted more than {max_restarts} times within {window:?}; giving up")]
    TooManyRestarts {
        /// `supervisor.max_restarts`.
        max_restarts: u32,
        /// `supervisor.restart_window`.
        window: Duration,
    },
    /// Shutdown ran out of `supervisor.drain_timeout` with tasks still running: their
    /// disconnect hooks (and saves) may not have run.
    #[error(
        "{unfinished} connection tasks had not finished within the drain timeout ({timeout:?})"
    )]
    DrainTimedOut {
        /// Tasks abandoned (connections, and the acceptor if it had not stopped).
        unfinished: usize,
        /// `supervisor.drain_timeout`.
        timeout: Duration,
    },
    /// The store writer closed with saves that had not landed (within the flush
    /// timeout given to `Server::with_store`): state was lost. Reported over any other
    /// error, which is logged.
    #[error("{saves} saves had not landed when the store closed")]
    Unsaved {
        /// Saves still queued.
        saves: usize,
    },
}

/// Stops one part within a timeout.
pub(crate) type Stop<T> = Box<dyn FnOnce(Duration) -> BoxFuture<'static, T> + Send>;

/// What the server stops after its connections, in the tree's order.
#[derive(Default)]
pub(crate) struct Parts {
    /// Each room type's shutdown, `Err` with how many rooms had not stopped.
    pub(crate) rooms: Vec<(&'static str, Stop<Result<(), usize>>)>,
    /// The store writer's close, and its flush timeout.
    pub(crate) store: Option<(Stop<Result<(), Unsaved>>, Duration)>,
}

impl Parts {
    /// Stops the rooms (each type within `drain_timeout`), then closes the store;
    /// how many saves did not land, if any.
    pub(crate) async fn stop(self, drain_timeout: Duration) -> Option<usize> {
        for (kind, shutdown) in self.rooms {
            if let Err(unfinished) = shutdown(drain_timeout).await {
                error!(kind, unfinished, "rooms still running at the drain timeout");
            }
        }
        let (close, flush_timeout) = self.store?;
        close(flush_timeout).await.err().map(|Unsaved(saves)| saves)
    }
}

/// Runs the cluster task until `stop` is cancelled, restarting it when it panics
/// (at most `supervisor.max_restarts` times within `supervisor.restart_window`;
/// past that the node goes on alone, and says so).
pub(crate) async fn supervise_cluster<M: Send + 'static>(
    node: Arc<ClusterNode>,
    handle: ServerHandle<M>,
    stop: CancellationToken,
    mut restarts: RestartIntensity,
) {
    loop {
        let task = tokio::spawn(cluster_task::run(
            node.clone(),
            handle.clone(),
            stop.clone(),
        ));
        match task.await {
            Ok(()) => return,
            Err(e) => {
                error!(cause = %describe_exit(Err(e)), "the cluster task crashed; restarting it");
                if !restarts.allow(Instant::now()) {
                    error!("the cluster task keeps crashing; this node goes on alone");
                    node.set_connected(false);
                    return;
                }
            }
        }
    }
}

/// Runs the tree until `shutdown` is cancelled (`Ok`, or `Err` if the drain timed
/// out) or the restart intensity is exceeded (`Err`).
pub(crate) async fn supervise<S: Service>(
    listeners: Listeners,
    shared: Arc<Shared<S>>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let listeners: Vec<Arc<Listener>> = listeners.0.into_iter().map(Arc::new).collect();
    let limits = &shared.config.supervisor;
    let mut restarts = RestartIntensity::new(limits.max_restarts, limits.restart_window);
    loop {
        let (hub, mut hub_task) = hub::spawn::<S::Message>(
            shared.config.server.hub_queue,
            shared.config.server.hub_queue_bytes,
            shared.config.limits.max_frame_bytes,
            shared.hub_slot.players.clone(),
        );
        shared.hub_slot.publish(HubState::Up(hub.clone()));
        let group = Arc::new(Group::new(shutdown.child_token(), hub));
        for listener in &listeners {
            group.tracker.spawn(listener::accept_loop(
                listener.clone(),
                shared.clone(),
                group.clone(),
            ));
        }

        let crash = tokio::select! {
            joined = &mut hub_task => describe_hub_exit(joined),
            () = shutdown.cancelled() => {
                info!("shutting down: kicking every connection");
                group.stop(DisconnectReason::Shutdown);
                let drained = group.drain(limits.drain_timeout).await;
                hub_task.abort();
                if let Err(unfinished) = drained {
                    error!(unfinished, "shutdown incomplete: connections abandoned at the drain timeout");
                    return Err(ServerError::DrainTimedOut {
                        unfinished,
                        timeout: limits.drain_timeout,
                    });
                }
                info!("shutdown complete");
                return Ok(());
            }
        };

        shared.hub_slot.publish(HubState::Restarting);
        error!(cause = %crash, "hub crashed; closing every connection, then restarting it");
        shared.stats.count_hub_restart();
        group.stop(DisconnectReason::ServerRestart);
        // Tasks a restart abandons go on in the background and end on their own
        // (every hook is under its timeout); the new hub does not wait for them.
        let _ = group.drain(limits.drain_timeout).await;
        if shutdown.is_cancelled() {
            // Asked to stop during the restart: that is a clean stop, not a failure.
            info!("shutdown requested while restarting; shutdown complete");
            return Ok(());
        }
        if !restarts.allow(Instant::now()) {
            error!(
                max_restarts = limits.max_restarts,
                window = ?limits.restart_window,
                "restart intensity exceeded; shutting down"
            );
            return Err(ServerError::TooManyRestarts {
                max_restarts: limits.max_restarts,
                window: limits.restart_window,
            });
        }
        info!("hub restarted; accepting again");
    }
}

fn describe_hub_exit(joined: Result<(), JoinError>) -> String {
    match joined {
        Ok(()) => "the hub stopped unexpectedly".into(),
        other => describe_exit(other),
    }
}

fn describe_exit(joined: Result<(), JoinError>) -> String {
    match joined {
        Ok(()) => "ended".into(),
        Err(e) if e.is_panic() => panic_message(&*e.into_panic()),
        Err(e) => e.to_string(),
    }
}
