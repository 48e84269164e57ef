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

use crate::cluster::node::Target;
use crate::cluster::wire::{ClusterMessage, Heartbeat};
use crate::cluster::{ClusterCounts, ClusterNode, ClusterStats, Located};
use crate::connection::ConnId;
use crate::hub::{check_frame, push_frame, ConnectionInfo, ConnectionPage, HandleError, HubHandle};
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

    /// The cluster this server is a node of, if any.
    fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.players.cluster()
    }

    /// Pushes `payload` on `route` to every connection (encoded once), on every node
    /// of a cluster (one message per node).
    pub async fn broadcast(
        &self,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.broadcast_from(None, push_frame(route, payload.into()))
            .await
    }

    /// Pushes `payload` on `route` to every connection but `except` (the sender,
    /// say), on every node.
    pub async fn broadcast_except(
        &self,
        except: ConnId,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.broadcast_from(Some(except), push_frame(route, payload.into()))
            .await
    }

    async fn broadcast_from(
        &self,
        except: Option<ConnId>,
        frame: Bytes,
    ) -> Result<(), HandleError> {
        self.call(|hub| {
            let frame = frame.clone();
            async move { hub.broadcast(frame, except).await }
        })
        .await?;
        if let Some(cluster) = self.cluster() {
            cluster.send(Target::All, ClusterMessage::Broadcast { frame });
        }
        Ok(())
    }

    /// Pushes `payload` on `route` to one connection of this node; dropped if it is
    /// gone.
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

    /// Pushes `payload` on `route` to the connection logged in as `player`, on
    /// whichever node it is; dropped if nobody is.
    pub async fn push_to_player(
        &self,
        player: &str,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        let frame = push_frame(route, payload.into());
        let player: Arc<str> = Arc::from(player);
        if let Some((cluster, node)) = self.remote_owner(&player) {
            check_frame(&frame, cluster.max_frame)?;
            let message = ClusterMessage::PlayerPush { player, frame };
            cluster.send(Target::Node(node), message);
            return Ok(());
        }
        self.call(|hub| {
            let (player, frame) = (player.clone(), frame.clone());
            async move { hub.push_to_player(player, frame).await }
        })
        .await
    }

    /// The cluster and the other node that owns `player`, if it is not held here.
    fn remote_owner(&self, player: &str) -> Option<(&Arc<ClusterNode>, Arc<str>)> {
        let cluster = self.cluster()?;
        if self.players.holder_conn(player).is_some() {
            return None;
        }
        Some((cluster, cluster.owner_node(player)?))
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

    /// Kicks the connection logged in as `player`, on whichever node it is, if any.
    pub async fn kick_player(
        &self,
        player: &str,
        reason: KickReason,
        text: impl Into<String>,
    ) -> Result<(), HandleError> {
        let text = text.into();
        let player: Arc<str> = Arc::from(player);
        if let Some((cluster, node)) = self.remote_owner(&player) {
            let message = ClusterMessage::PlayerKick {
                player,
                reason,
                text,
            };
            cluster.send(Target::Node(node), message);
            return Ok(());
        }
        self.call(|hub| {
            let (player, text) = (player.clone(), text.as_str());
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

    /// Pushes `payload` on `route` to every member of `group` (encoded once), on
    /// every node with a member (one message per such node).
    pub async fn group_broadcast(
        &self,
        group: &str,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.group_broadcast_from(group, None, push_frame(route, payload.into()))
            .await
    }

    /// Pushes `payload` on `route` to every member of `group` but `except`, on every
    /// node.
    pub async fn group_broadcast_except(
        &self,
        group: &str,
        except: ConnId,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), HandleError> {
        self.group_broadcast_from(group, Some(except), push_frame(route, payload.into()))
            .await
    }

    async fn group_broadcast_from(
        &self,
        group: &str,
        except: Option<ConnId>,
        frame: Bytes,
    ) -> Result<(), HandleError> {
        let group: Arc<str> = Arc::from(group);
        self.call(|hub| {
            let (group, frame) = (group.clone(), frame.clone());
            async move { hub.group_broadcast(group, frame, except).await }
        })
        .await?;
        if let Some(cluster) = self.cluster() {
            let target = Target::Group(group.clone());
            cluster.send(target, ClusterMessage::Group { group, frame });
        }
        Ok(())
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

    /// Where `player` is logged in: on this node (its connection), on another live
    /// node of the cluster, or nowhere.
    pub async fn locate(&self, player: &str) -> Result<Option<Located>, HandleError> {
        if let Some(conn) = self.players.holder_conn(player) {
            return Ok(Some(Located::Here(conn)));
        }
        let elsewhere = self
            .cluster()
            .and_then(|cluster| cluster.owner_node(player));
        Ok(elsewhere.map(|node| Located::On(node.to_string())))
    }

    /// Connections and players on every live node, this one first (only this one
    /// outside a cluster). Other nodes' counts are as of their last heartbeat.
    pub async fn cluster_counts(&self) -> Result<ClusterCounts, HandleError> {
        let here = self.local_counts().await;
        Ok(match self.cluster() {
            Some(cluster) => cluster.counts(here),
            None => ClusterNode::alone(here),
        })
    }

    /// Whether this server is a node of a cluster ([`crate::Server::with_cluster`]):
    /// then a player it serves may be taken over from another process, and a game
    /// should fence its saves (land a claim at login, see `gatehouse_store`'s
    /// `SaveWriter::land`).
    pub fn in_cluster(&self) -> bool {
        self.cluster().is_some()
    }

    /// What this node's link to the cluster did, if it is in one.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster().map(|cluster| cluster.stats())
    }

    /// This node's counts, for its heartbeat (zero connections while the hub
    /// restarts).
    pub(crate) async fn local_counts(&self) -> Heartbeat {
        Heartbeat {
            connections: self.count().await.unwrap_or(0) as u64,
            players: self.players.count() as u64,
        }
    }

    /// Hands what another node sent to this node's connections (never back to the
    /// cluster).
    pub(crate) async fn deliver_from_cluster(
        &self,
        message: ClusterMessage,
    ) -> Result<(), HandleError> {
        self.call(|hub| {
            let message = message.clone();
            async move {
                match message {
                    ClusterMessage::Broadcast { frame } => hub.broadcast(frame, None).await,
                    ClusterMessage::Group { group, frame } => {
                        hub.group_broadcast(group, frame, None).await
                    }
                    ClusterMessage::PlayerPush { player, frame } => {
                        hub.push_to_player(player, frame).await
                    }
                    ClusterMessage::PlayerKick {
                        player,
                        reason,
                        text,
                    } => hub.kick_player(player, reason, text).await,
                    ClusterMessage::ConnFrames { conns, frame } => {
                        hub.push_frame_each(conns, frame).await
                    }
                    ClusterMessage::ConnKick { conn, reason, text } => {
                        hub.kick(conn, reason, text).await
                    }
                    // The cluster task answers requests, and shared rooms take
                    // their own messages: the hub has no part.
                    ClusterMessage::TakeOver { .. }
                    | ClusterMessage::RoomJoin { .. }
                    | ClusterMessage::RoomInput { .. }
                    | ClusterMessage::RoomLeave { .. }
                    | ClusterMessage::MemberStates { .. } => Ok(()),
                }
            }
        })
        .await
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
