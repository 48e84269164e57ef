//! [`ServerHandle`]: the one way a game reaches connections other than the one a
//! handler serves, from handlers ([`Context::server`](crate::Context::server)), rooms'
//! background tasks and the game's own tasks alike.
//!
//! Behind it is the hub (the seed's `gs_svr`), which the supervisor restarts when it
//! crashes; the handle hides that. Each call goes to the hub the supervisor
//! publishes: during a restart it waits (at most [`ServerHandle::with_wait`], 5 s by
//! default) for the fresh hub and goes on there; once the server has stopped, or if
//! the wait runs out, it returns [`HandleError::Unavailable`]. The caller never
//! re-fetches anything. While the hub is up a call costs one read of the published
//! state and the hub's own call (a send on its queue).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::KickReason;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::ConnId;
use crate::hub::{ConnectionInfo, ConnectionPage, HandleError, HubHandle};
use crate::players::{PlayerList, Players};

/// How long a call waits for the hub by default while it restarts.
pub(crate) const DEFAULT_HANDLE_WAIT: Duration = Duration::from_secs(5);

/// Where the hub is, as the supervisor publishes it.
pub(crate) enum HubState<M> {
    /// Before the first hub, and between a crash and the fresh hub.
    Restarting,
    /// The hub of the current life.
    Up(HubHandle<M>),
    /// The server has stopped: no hub will come.
    Stopped,
}

/// The supervisor's side: it publishes every change of hub.
pub(crate) struct HubSlot<M> {
    state: watch::Sender<HubState<M>>,
    /// Who is logged in, for the server's life (outside the hub: see `players`).
    pub(crate) players: Arc<Players>,
}

impl<M> HubSlot<M> {
    pub(crate) fn new() -> Self {
        HubSlot {
            state: watch::Sender::new(HubState::Restarting),
            players: Arc::default(),
        }
    }

    pub(crate) fn publish(&self, state: HubState<M>) {
        self.state.send_replace(state);
    }

    /// The hub of the current life, if one is up.
    pub(crate) fn current(&self) -> Option<HubHandle<M>> {
        match &*self.state.borrow() {
            HubState::Up(hub) => Some(hub.clone()),
            HubState::Restarting | HubState::Stopped => None,
        }
    }

    pub(crate) fn handle(&self) -> ServerHandle<M> {
        ServerHandle {
            state: self.state.subscribe(),
            wait: DEFAULT_HANDLE_WAIT,
            players: self.players.clone(),
        }
    }
}

/// A cloneable handle to a running server: broadcast, push and kick by connection or
/// by player, groups, lookups and counts, with one set of errors
/// ([`HandleError`]). It survives hub restarts (see the module docs).
///
/// Handlers get it from [`Context::server`](crate::Context::server); anything else
/// from [`Server::handle`](crate::Server::handle), before or while the server runs.
///
/// Groups are named lists of connections to push to (a chat channel, a team): no
/// state, no code, no tick. A piece of game state with members is a room
/// ([`crate::room`]).
///
/// ```no_run
/// # use gatehouse::{ServerHandle, HandleError};
/// async fn announce(server: ServerHandle<()>) -> Result<(), HandleError> {
///     let online = server.count().await?;
///     server.broadcast(7, format!("{online} players online")).await
/// }
/// ```
pub struct ServerHandle<M> {
    state: watch::Receiver<HubState<M>>,
    wait: Duration,
    pub(crate) players: Arc<Players>,
}

impl<M> Clone for ServerHandle<M> {
    fn clone(&self) -> Self {
        ServerHandle {
            state: self.state.clone(),
            wait: self.wait,
            players: self.players.clone(),
        }
    }
}

impl<M: Send + 'static> ServerHandle<M> {
    /// The same handle, waiting at most `wait` for a restarting hub.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The hub that is up now, if one is (the fast path: no clock, no timer).
    fn hub_now(&self) -> Option<HubHandle<M>> {
        match &*self.state.borrow() {
            HubState::Up(hub) if !hub.is_closed() => Some(hub.clone()),
            _ => None,
        }
    }

    /// The live hub, waiting for one until `deadline`.
    async fn hub_until(&self, deadline: Instant) -> Result<HubHandle<M>, HandleError> {
        let mut state = self.state.clone();
        // A hub whose channel closed is dead even if the supervisor has not noticed yet:
        // wait for the next change rather than calling it again.
        let live = |s: &HubState<M>| match s {
            HubState::Up(hub) => !hub.is_closed(),
            HubState::Stopped => true,
            HubState::Restarting => false,
        };
        let found = tokio::time::timeout_at(deadline, state.wait_for(live)).await;
        match found {
            Ok(Ok(current)) => match &*current {
                HubState::Up(hub) => Ok(hub.clone()),
                _ => Err(HandleError::Unavailable),
            },
            // The wait ran out, or the server (and its slot) is gone.
            _ => Err(HandleError::Unavailable),
        }
    }

    /// Runs `call` against the live hub; if there is none, or it dies under the call,
    /// against the next one, all within the wait.
    async fn call<T, F>(&self, call: impl Fn(HubHandle<M>) -> F) -> Result<T, HandleError>
    where
        F: Future<Output = Result<T, HandleError>>,
    {
        if let Some(hub) = self.hub_now() {
            match call(hub).await {
                Err(HandleError::Unavailable) => {}
                done => return done,
            }
        }
        let deadline = Instant::now() + self.wait;
        loop {
            let hub = self.hub_until(deadline).await?;
            match call(hub).await {
                Err(HandleError::Unavailable) if Instant::now() < deadline => continue,
                done => return done,
            }
        }
    }

    /// [`Self::call`] for a call that carries `payload`, cloned for each try (a count,
    /// not a copy).
    async fn call_with<T, F>(
        &self,
        payload: impl Into<Bytes>,
        call: impl Fn(HubHandle<M>, Bytes) -> F,
    ) -> Result<T, HandleError>
    where
        F: Future<Output = Result<T, HandleError>>,
    {
        let payload = payload.into();
        self.call(|hub| call(hub, payload.clone())).await
    }

    // ---- pushes ------------------------------------------------------------------

    /// Pushes `payload` on `route` to every connection (encoded once).
    pub async fn broadcast(
        &self,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.call_with(payload, |hub, payload| async move {
            hub.broadcast(route, payload, None).await
        })
        .await
    }

    /// Pushes `payload` on `route` to every connection but `except` (the sender, say).
    pub async fn broadcast_except(
        &self,
        except: ConnId,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.call_with(payload, |hub, payload| async move {
            hub.broadcast(route, payload, Some(except)).await
        })
        .await
    }

    /// Pushes `payload` on `route` to one connection; dropped if it is gone.
    pub async fn push_to(
        &self,
        to: ConnId,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.call_with(payload, |hub, payload| async move {
            hub.push_to(to, route, payload).await
        })
        .await
    }

    /// Pushes `payload` on `route` to the connection logged in as `player`; dropped
    /// if nobody is.
    pub async fn push_to_player(
        &self,
        player: &str,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.call_with(payload, |hub, payload| async move {
            hub.push_to_player(player, route, payload).await
        })
        .await
    }

    /// Sends `message` to one connection's [`Service::message`](crate::Service::message)
    /// handler; dropped if it is gone.
    pub async fn send_message(&self, to: ConnId, message: M) -> Result<(), HandleError> {
        // A message is not `Clone`: it is sent once, to the hub live at that moment.
        let hub = match self.hub_now() {
            Some(hub) => hub,
            None => self.hub_until(Instant::now() + self.wait).await?,
        };
        hub.send_message(to, message).await
    }

    // ---- kicks -------------------------------------------------------------------

    /// Kicks one connection: it is sent `reason` and `text`, and closed.
    pub async fn kick(
        &self,
        to: ConnId,
        reason: KickReason,
        text: impl Into<String>,
    ) -> Result<(), HandleError> {
        let text = text.into();
        self.call(|hub| {
            let text = text.as_str();
            async move { hub.kick(to, reason, text).await }
        })
        .await
    }

    /// Kicks the connection logged in as `player`, if any.
    pub async fn kick_player(
        &self,
        player: &str,
        reason: KickReason,
        text: impl Into<String>,
    ) -> Result<(), HandleError> {
        let text = text.into();
        self.call(|hub| {
            let text = text.as_str();
            async move { hub.kick_player(player, reason, text).await }
        })
        .await
    }

    // ---- groups ------------------------------------------------------------------

    /// Adds a connection to the named group (made on its first member).
    pub async fn join_group(&self, id: ConnId, group: &str) -> Result<(), HandleError> {
        self.call(|hub| async move { hub.join(id, group).await })
            .await
    }

    /// Removes a connection from a group (which goes when its last member does).
    pub async fn leave_group(&self, id: ConnId, group: &str) -> Result<(), HandleError> {
        self.call(|hub| async move { hub.leave(id, group).await })
            .await
    }

    /// Pushes `payload` on `route` to every member of `group` (encoded once).
    pub async fn group_broadcast(
        &self,
        group: &str,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.call_with(payload, |hub, payload| async move {
            hub.group_broadcast(group, route, payload, None).await
        })
        .await
    }

    /// Pushes `payload` on `route` to every member of `group` but `except`.
    pub async fn group_broadcast_except(
        &self,
        group: &str,
        except: ConnId,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.call_with(payload, |hub, payload| async move {
            hub.group_broadcast(group, route, payload, Some(except))
                .await
        })
        .await
    }

    // ---- lookups and counts ------------------------------------------------------

    /// Live connections.
    pub async fn count(&self) -> Result<usize, HandleError> {
        self.call(|hub| async move { hub.count().await }).await
    }

    /// Members of a group.
    pub async fn group_count(&self, group: &str) -> Result<usize, HandleError> {
        self.call(|hub| async move { hub.group_count(group).await })
            .await
    }

    /// Every group with its member count, sorted by name.
    pub async fn groups(&self) -> Result<Vec<(String, usize)>, HandleError> {
        self.call(|hub| async move { hub.groups().await }).await
    }

    /// The connection logged in as `player`, if any: from its login until its
    /// disconnect hook has run (a takeover waits for that), as [`ServerHandle::players`]
    /// counts it.
    pub async fn player(&self, player: &str) -> Result<Option<ConnId>, HandleError> {
        Ok(self.players.holder_conn(player))
    }

    /// The players logged in on the server: how many, and the first `limit` names in
    /// order. A player counts from its login until its connection's disconnect hook
    /// has run.
    pub async fn players(&self, limit: usize) -> Result<PlayerList, HandleError> {
        Ok(self.players.list(limit))
    }

    /// One live connection (its peer, transport, traffic, player), if it is.
    pub async fn connection(&self, id: ConnId) -> Result<Option<ConnectionInfo>, HandleError> {
        self.call(|hub| async move { hub.connection(id).await })
            .await
    }

    /// Up to `limit` live connections with ids above `after`, in id order, and how many
    /// there are in all.
    pub async fn connections(
        &self,
        after: Option<ConnId>,
        limit: usize,
    ) -> Result<ConnectionPage, HandleError> {
        self.call(|hub| async move { hub.connections(after, limit).await })
            .await
    }
}
