//! [`ServerHandle`]: the game's way into a running server from anywhere (a background
//! task, a room, a timer), which keeps working across hub restarts.
//!
//! A [`HubHandle`] belongs to one life of the hub: after a crash its calls fail for
//! good. The server handle instead follows the hub the supervisor publishes: during a
//! restart a call waits (at most [`ServerHandle::with_wait`], 5 s by default) for the
//! fresh hub and goes on there; once the server has stopped, or if the wait runs out,
//! it returns [`HubError::Unavailable`]. The caller never re-fetches anything.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::KickReason;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::ConnId;
use crate::hub::{HubError, HubHandle};

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
}

impl<M> HubSlot<M> {
    pub(crate) fn new() -> Self {
        HubSlot {
            state: watch::Sender::new(HubState::Restarting),
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
        }
    }
}

/// A cloneable handle to a server that survives hub restarts (see the module docs).
/// Get one with [`Server::handle`](crate::Server::handle) before or while it runs.
pub struct ServerHandle<M> {
    state: watch::Receiver<HubState<M>>,
    wait: Duration,
}

impl<M> Clone for ServerHandle<M> {
    fn clone(&self) -> Self {
        ServerHandle {
            state: self.state.clone(),
            wait: self.wait,
        }
    }
}

impl<M: Send + 'static> ServerHandle<M> {
    /// The same handle, waiting at most `wait` for a restarting hub.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The live hub, waiting for one until `deadline`.
    async fn hub_until(&self, deadline: Instant) -> Result<HubHandle<M>, HubError> {
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
                _ => Err(HubError::Unavailable),
            },
            // The wait ran out, or the server (and its slot) is gone.
            _ => Err(HubError::Unavailable),
        }
    }

    /// The current hub, for several calls in a row (waiting while it restarts). It
    /// fails for good at the next restart; the methods below follow restarts instead.
    pub async fn hub(&self) -> Result<HubHandle<M>, HubError> {
        self.hub_until(Instant::now() + self.wait).await
    }

    /// Runs `call` against the live hub; if that hub dies under it, once more against
    /// the next one, all within the wait.
    async fn call<T, F>(&self, call: impl Fn(HubHandle<M>) -> F) -> Result<T, HubError>
    where
        F: Future<Output = Result<T, HubError>>,
    {
        let deadline = Instant::now() + self.wait;
        loop {
            let hub = self.hub_until(deadline).await?;
            match call(hub).await {
                Err(HubError::Unavailable) if Instant::now() < deadline => continue,
                done => return done,
            }
        }
    }

    /// Pushes `payload` on `route` to every connection (encoded once).
    pub async fn broadcast(&self, route: u16, payload: Bytes) -> Result<(), HubError> {
        self.call(|hub| {
            let payload = payload.clone();
            async move { hub.broadcast(route, payload).await }
        })
        .await
    }

    /// Pushes `payload` on `route` to one connection; dropped if it is gone.
    pub async fn push_to(&self, to: ConnId, route: u16, payload: Bytes) -> Result<(), HubError> {
        self.call(|hub| {
            let payload = payload.clone();
            async move { hub.push_to(to, route, payload).await }
        })
        .await
    }

    /// Pushes `payload` on `route` to the connection logged in as `player`.
    pub async fn push_to_player(
        &self,
        player: &str,
        route: u16,
        payload: Bytes,
    ) -> Result<(), HubError> {
        self.call(|hub| {
            let payload = payload.clone();
            async move { hub.push_to_player(player, route, payload).await }
        })
        .await
    }

    /// Kicks the connection logged in as `player`, if any.
    pub async fn kick_player(
        &self,
        player: &str,
        reason: KickReason,
        text: &str,
    ) -> Result<(), HubError> {
        self.call(|hub| async move { hub.kick_player(player, reason, text).await })
            .await
    }

    /// The connection logged in as `player`, if any.
    pub async fn player(&self, player: &str) -> Result<Option<ConnId>, HubError> {
        self.call(|hub| async move { hub.player(player).await })
            .await
    }

    /// Pushes to every member of a hub group.
    pub async fn group_broadcast(
        &self,
        group: &str,
        route: u16,
        payload: Bytes,
    ) -> Result<(), HubError> {
        self.call(|hub| {
            let payload = payload.clone();
            async move { hub.group_broadcast(group, route, payload, None).await }
        })
        .await
    }

    /// Sends a message to one connection's service `message` handler.
    pub async fn send_message(&self, to: ConnId, message: M) -> Result<(), HubError> {
        // A message is not `Clone`: it is sent once, to the hub live at that moment.
        self.hub().await?.send_message(to, message).await
    }

    /// Kicks one connection: it is sent `reason` and closed.
    pub async fn kick(&self, to: ConnId, reason: KickReason, text: &str) -> Result<(), HubError> {
        self.call(|hub| async move { hub.kick(to, reason, text).await })
            .await
    }

    /// Live connections.
    pub async fn count(&self) -> Result<usize, HubError> {
        self.call(|hub| async move { hub.count().await }).await
    }

    /// Members of a hub group.
    pub async fn group_count(&self, group: &str) -> Result<usize, HubError> {
        self.call(|hub| async move { hub.group_count(group).await })
            .await
    }

    /// Every hub group with its member count, sorted by name.
    pub async fn groups(&self) -> Result<Vec<(String, usize)>, HubError> {
        self.call(|hub| async move { hub.groups().await }).await
    }
}
