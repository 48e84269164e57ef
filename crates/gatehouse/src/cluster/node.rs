//! This node's side of the cluster, shared by the handles, the hub and the cluster
//! task: the bounded outbox, what the task must make true in the cluster (the groups
//! this node has members of, the players whose ownership changed here), and what it
//! learnt of the others (live nodes and their counts, who owns which player).
//!
//! Nothing here awaits: a handle call drops what does not fit and counts it; the
//! task reads the rest when woken.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::wire::{Claim, ClusterMessage, Heartbeat};
use super::{within, ClusterConfig, ClusterLink, LinkError};
use crate::connection::ConnId;

/// A room type shared by the cluster, as the cluster task reaches it on the host of
/// its rooms (implemented by `room::shared`, over the type's codec).
pub(crate) trait SharedKind: Send + Sync {
    /// Another node's connection `member` asks to join `room` here with `join` (the
    /// type's encoding) from `address`; the answer's bytes.
    fn join(
        self: Arc<Self>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        address: IpAddr,
        join: Bytes,
    ) -> BoxFuture<'static, Bytes>;

    /// A message from a remote member of `room` here.
    fn input(
        self: Arc<Self>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        message: Bytes,
    ) -> BoxFuture<'static, ()>;

    /// A remote member of `room` here left.
    fn leave(&self, room: &str, node: &str, member: ConnId);

    /// The room `room` on another node recorded these states for members of this
    /// node (the type's join encoding).
    fn member_states(&self, room: &str, states: Vec<(ConnId, Bytes)>);

    /// `node` is gone (dead, or left): its members leave the rooms here, and this
    /// node's members of rooms it ran are joined again where the room is made next.
    fn node_gone(self: Arc<Self>, node: &str);

    /// The room `room` ran on a node that is gone, as the directory said at
    /// `revision`: a type whose rooms run without members makes it here from its
    /// last checkpoint, unless another node does first (the put on that revision
    /// decides). Rooms that close when empty wait for their next join.
    fn adopt(self: Arc<Self>, room: Arc<str>, revision: u64);
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Every other node.
    All,
    /// The nodes with a member of the group the message names.
    Group(Arc<str>),
    /// One node.
    Node(Arc<str>),
}

/// Where a player is logged in, as [`crate::ServerHandle::locate`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Located {
    /// On this node, on this connection.
    Here(ConnId),
    /// On another live node, by its `cluster.node` name.
    On(String),
}

/// One node's counts, from its last heartbeat (this node's: now).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeCounts {
    /// Its `cluster.node`.
    pub node: String,
    /// Live connections.
    pub connections: u64,
    /// Players logged in.
    pub players: u64,
}

/// The cluster's counts: every live node's, this one first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterCounts {
    /// Each live node, this one first, then by name.
    pub nodes: Vec<NodeCounts>,
    /// Connections on all of them.
    pub connections: u64,
    /// Players on all of them.
    pub players: u64,
}

/// What the cluster link did, for the metrics and `/api/cluster`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Whether the link is connected now.
    pub connected: bool,
    /// Messages published to other nodes.
    pub sent: u64,
    /// Messages dropped because the outbox was full.
    pub dropped_full: u64,
    /// Messages dropped because the link was down (or a publish failed).
    pub dropped_disconnected: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages from other nodes dropped as malformed.
    pub malformed: u64,
    /// Local copies of a player kicked because another node logged it in later.
    pub lost_players: u64,
    /// Nodes declared dead (not heard from for `cluster.dead_after`).
    pub nodes_died: u64,
    /// Other nodes alive now.
    pub nodes_alive: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    dropped_full: AtomicU64,
    dropped_disconnected: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    lost_players: AtomicU64,
    nodes_died: AtomicU64,
}

/// This node in the cluster (see the module docs).
pub(crate) struct ClusterNode {
    pub(crate) config: ClusterConfig,
    pub(crate) name: Arc<str>,
    pub(crate) link: Arc<dyn ClusterLink>,
    /// `limits.max_frame_bytes`: no frame from another node larger than this is
    /// delivered.
    pub(crate) max_frame: usize,
    outbox: mpsc::Sender<(Target, ClusterMessage)>,
    /// The outbox's other end, taken by the task (again after a restart).
    pub(crate) outbox_rx: tokio::sync::Mutex<mpsc::Receiver<(Target, ClusterMessage)>>,
    /// Whether the task last found the link connected.
    connected: AtomicBool,
    /// What the task must make true: the groups with a local member, the players
    /// whose holder changed here since it last looked.
    wanted: Mutex<Wanted>,
    /// Wakes the task when `wanted` changes.
    pub(crate) changed: Notify,
    /// What the task learnt of the other nodes.
    view: Mutex<View>,
    counters: Counters,
    /// The room types shared by the cluster, by their kind.
    room_kinds: Mutex<HashMap<Arc<str>, Arc<dyn SharedKind>>>,
    /// Messages that must not be dropped (a member's leave of a room on another
    /// node, which would leave a seat there): kept here when the outbox is full or
    /// the link down, and sent by the task as soon as it can. At most one per
    /// membership, so bounded by the seats this node's connections held.
    kept: Mutex<Vec<(Target, ClusterMessage)>>,
}

#[derive(Default)]
struct Wanted {
    groups: HashSet<Arc<str>>,
    groups_changed: bool,
    players: HashSet<Arc<str>>,
}

#[derive(Default)]
struct View {
    /// The other nodes heard from, alive or not.
    nodes: HashMap<Arc<str>, Seen>,
    /// Who owns each player, as the players bucket says.
    owners: HashMap<Arc<str>, Owner>,
}

struct Seen {
    beat: Heartbeat,
    last: Instant,
    alive: bool,
}

/// A player's owner and the revision that made it so.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) claim: Claim,
    pub(crate) revision: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClusterNode {
    pub(crate) fn new(config: ClusterConfig, link: Arc<dyn ClusterLink>, max_frame: usize) -> Self {
        let (outbox, outbox_rx) = mpsc::channel(config.outbox);
        ClusterNode {
            name: Arc::from(config.node.as_str()),
            config,
            link,
            max_frame,
            outbox,
            outbox_rx: tokio::sync::Mutex::new(outbox_rx),
            connected: AtomicBool::new(false),
            wanted: Mutex::default(),
            changed: Notify::new(),
            view: Mutex::default(),
            counters: Counters::default(),
            room_kinds: Mutex::default(),
            kept: Mutex::default(),
        }
    }

    /// Shares the rooms of type `kind` with the cluster (once, before it serves).
    pub(crate) fn add_room_kind(&self, kind: Arc<str>, rooms: Arc<dyn SharedKind>) {
        lock(&self.room_kinds).insert(kind, rooms);
    }

    /// The shared room type `kind`, if this node has it.
    pub(crate) fn room_kind(&self, kind: &str) -> Option<Arc<dyn SharedKind>> {
        lock(&self.room_kinds).get(kind).cloned()
    }

    /// Every shared room type (to tell them a node is gone).
    pub(crate) fn room_kinds(&self) -> Vec<Arc<dyn SharedKind>> {
        lock(&self.room_kinds).values().cloned().collect()
    }

    /// The first connection id of this node: its tag in the top 16 bits, so that
    /// ids (and the session ids clients hold) name the node they are on.
    pub(crate) fn first_conn_id(&self) -> u64 {
        (u64::from(node_tag(&self.name)) << 48) | 1
    }

    /// The live node another node's session `id` was made on, if the id names one
    /// (a resume of it here is told `moved`).
    pub(crate) fn node_of_session(&self, id: u64) -> Option<Arc<str>> {
        let tag = u16::try_from(id >> 48).ok()?;
        if tag == node_tag(&self.name) {
            return None;
        }
        let view = lock(&self.view);
        let found = view
            .nodes
            .iter()
            .find(|(name, seen)| seen.alive && node_tag(name) == tag);
        found.map(|(name, _)| name.clone())
    }

    // ---- the handles' side: never waits --------------------------------------------

    /// Queues `message` for `target`; dropped and counted if the link is down or
    /// the outbox full.
    pub(crate) fn send(&self, target: Target, message: ClusterMessage) {
        if !self.connected.load(Relaxed) {
            self.counters.dropped_disconnected.fetch_add(1, Relaxed);
            return;
        }
        if self.outbox.try_send((target, message)).is_err() {
            self.counters.dropped_full.fetch_add(1, Relaxed);
        }
    }

    /// Queues `message` for `target` like [`ClusterNode::send`], but keeps it (never
    /// waits, never drops it) when the outbox is full or the link down: the task
    /// sends it once it can.
    pub(crate) fn send_or_keep(&self, target: Target, message: ClusterMessage) {
        if self.connected.load(Relaxed) {
            match self.outbox.try_send((target, message)) {
                Ok(()) => return,
                Err(refused) => {
                    let (target, message) = refused.into_inner();
                    lock(&self.kept).push((target, message));
                }
            }
        } else {
            lock(&self.kept).push((target, message));
        }
        self.changed.notify_one();
    }

    /// The messages kept by [`ClusterNode::send_or_keep`], for the task to send.
    pub(crate) fn take_kept(&self) -> Vec<(Target, ClusterMessage)> {
        std::mem::take(&mut *lock(&self.kept))
    }

    /// Puts back kept messages the task could not send (the link went down).
    pub(crate) fn keep_again(&self, messages: Vec<(Target, ClusterMessage)>) {
        let mut kept = lock(&self.kept);
        let newer = std::mem::replace(&mut *kept, messages);
        kept.extend(newer);
    }

    /// The live node that owns `player`, if another one does.
    pub(crate) fn owner_node(&self, player: &str) -> Option<Arc<str>> {
        let view = lock(&self.view);
        let owner = view.owners.get(player)?;
        let node = &owner.claim.node;
        let alive = view.nodes.get(node).is_some_and(|seen| seen.alive);
        (alive && *node != self.name).then(|| node.clone())
    }

    /// The counts of a server that is in no cluster.
    pub(crate) fn alone(here: Heartbeat) -> ClusterCounts {
        ClusterCounts {
            nodes: vec![NodeCounts {
                node: String::new(),
                connections: here.connections,
                players: here.players,
            }],
            connections: here.connections,
            players: here.players,
        }
    }

    /// Asks `node` to end its session of `player` and waits (at most `wait`) until
    /// its disconnect hook has run: `Ok(true)` once it has (or there was none),
    /// `Ok(false)` if it did not in time. [`LinkError::NoResponders`] at once if the
    /// node is gone.
    pub(crate) async fn ask_take_over(
        &self,
        node: &str,
        player: Arc<str>,
        wait: Duration,
    ) -> Result<bool, LinkError> {
        let request = (ClusterMessage::TakeOver { player })
            .encode()
            .ok_or_else(|| LinkError::Other("player name too long".into()))?;
        let subject = super::wire::node_subject(node);
        let answer = within(wait, self.link.request(subject, request, wait)).await?;
        Ok(answer == super::wire::TAKEN_OVER)
    }

    /// This node's and every live node's counts, this one first.
    pub(crate) fn counts(&self, here: Heartbeat) -> ClusterCounts {
        let view = lock(&self.view);
        let mut others: Vec<NodeCounts> = view
            .nodes
            .iter()
            .filter(|(name, seen)| seen.alive && **name != self.name)
            .map(|(name, seen)| NodeCounts {
                node: name.to_string(),
                connections: seen.beat.connections,
                players: seen.beat.players,
            })
            .collect();
        others.sort_unstable_by(|a, b| a.node.cmp(&b.node));
        let mut nodes = vec![NodeCounts {
            node: self.name.to_string(),
            connections: here.connections,
            players: here.players,
        }];
        nodes.extend(others);
        ClusterCounts {
            connections: nodes.iter().map(|n| n.connections).sum(),
            players: nodes.iter().map(|n| n.players).sum(),
            nodes,
        }
    }

    pub(crate) fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let nodes_alive = lock(&self.view)
            .nodes
            .iter()
            .filter(|(name, seen)| seen.alive && **name != self.name)
            .count() as u64;
        ClusterStats {
            connected: self.connected.load(Relaxed),
            sent: c.sent.load(Relaxed),
            dropped_full: c.dropped_full.load(Relaxed),
            dropped_disconnected: c.dropped_disconnected.load(Relaxed),
            received: c.received.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            lost_players: c.lost_players.load(Relaxed),
            nodes_died: c.nodes_died.load(Relaxed),
            nodes_alive,
        }
    }

    // ---- the hub's and the players' side ----------------------------------------

    /// The hub has a first member of `group` (`true`) or lost its last (`false`).
    pub(crate) fn group_interest(&self, group: &Arc<str>, member: bool) {
        let mut wanted = lock(&self.wanted);
        let changed = if member {
            wanted.groups.insert(group.clone())
        } else {
            wanted.groups.remove(group)
        };
        if changed {
            wanted.groups_changed = true;
            drop(wanted);
            self.changed.notify_one();
        }
    }

    /// A fresh hub has no groups.
    pub(crate) fn clear_groups(&self) {
        let mut wanted = lock(&self.wanted);
        wanted.groups.clear();
        wanted.groups_changed = true;
        drop(wanted);
        self.changed.notify_one();
    }

    /// `player`'s holder on this node changed (a login, or its hook ran).
    pub(crate) fn player_changed(&self, player: &Arc<str>) {
        lock(&self.wanted).players.insert(player.clone());
        self.changed.notify_one();
    }

    // ---- the task's side ------------------------------------------------------------

    /// What changed since the task last looked: the groups wanted (if they changed)
    /// and the players whose holder changed.
    pub(crate) fn take_wanted(&self) -> (Option<HashSet<Arc<str>>>, Vec<Arc<str>>) {
        let mut wanted = lock(&self.wanted);
        let groups = std::mem::take(&mut wanted.groups_changed).then(|| wanted.groups.clone());
        let players = wanted.players.drain().collect();
        (groups, players)
    }

    /// The groups wanted now (after a reconnect).
    pub(crate) fn wanted_groups(&self) -> HashSet<Arc<str>> {
        lock(&self.wanted).groups.clone()
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Relaxed);
    }

    /// A heartbeat of `node`, heard now.
    pub(crate) fn heard(&self, node: Arc<str>, beat: Heartbeat, now: Instant) {
        let mut view = lock(&self.view);
        let seen = view.nodes.entry(node).or_insert(Seen {
            beat,
            last: now,
            alive: true,
        });
        seen.beat = beat;
        seen.last = now;
        seen.alive = true;
    }

    /// `node` left the cluster on purpose (its heartbeat key was deleted).
    pub(crate) fn left(&self, node: &str) {
        lock(&self.view).nodes.remove(node);
    }

    /// Declares dead every node not heard from since `cutoff`; returns them.
    pub(crate) fn declare_dead(&self, cutoff: Instant) -> Vec<Arc<str>> {
        let mut view = lock(&self.view);
        let mut dead = Vec::new();
        for (name, seen) in &mut view.nodes {
            if seen.alive && seen.last < cutoff {
                seen.alive = false;
                dead.push(name.clone());
            }
        }
        self.counters
            .nodes_died
            .fetch_add(dead.len() as u64, Relaxed);
        dead
    }

    /// Whether `node` is known and alive.
    pub(crate) fn is_alive(&self, node: &str) -> bool {
        lock(&self.view).nodes.get(node).is_some_and(|s| s.alive)
    }

    /// The players bucket says `player` is owned as `claim` since `revision` (kept
    /// unless a later revision was seen already).
    pub(crate) fn owned(&self, player: Arc<str>, claim: Claim, revision: u64) {
        let mut view = lock(&self.view);
        let newer = view
            .owners
            .get(&player)
            .is_none_or(|owner| owner.revision < revision);
        if newer {
            view.owners.insert(player, Owner { claim, revision });
        }
    }

    /// The players bucket deleted `player` at `revision`.
    pub(crate) fn disowned(&self, player: &str, revision: u64) {
        let mut view = lock(&self.view);
        if view
            .owners
            .get(player)
            .is_some_and(|owner| owner.revision < revision)
        {
            view.owners.remove(player);
        }
    }

    /// Who owns `player` as the bucket last said.
    pub(crate) fn owner(&self, player: &str) -> Option<Owner> {
        lock(&self.view).owners.get(player).cloned()
    }

    /// `messages` published (in one NATS message or several).
    pub(crate) fn count_sent(&self, messages: usize) {
        self.counters.sent.fetch_add(messages as u64, Relaxed);
    }

    pub(crate) fn count_send_failed(&self, messages: usize) {
        self.counters
            .dropped_disconnected
            .fetch_add(messages as u64, Relaxed);
    }

    pub(crate) fn count_received(&self) {
        self.counters.received.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_malformed(&self) {
        self.counters.malformed.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_lost_player(&self) {
        self.counters.lost_players.fetch_add(1, Relaxed);
    }
}

/// A node's tag: 1 to 65535, from its name (FNV-1a). Two nodes of one cluster
/// that share a tag only lose the `moved` answer to a resume between them.
pub(crate) fn node_tag(name: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % 65_535) as u16 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::LocalBus;

    fn leave(n: u64) -> ClusterMessage {
        ClusterMessage::RoomLeave {
            kind: Arc::from("k"),
            room: Arc::from("r"),
            node: Arc::from("n"),
            member: ConnId(n),
        }
    }

    #[tokio::test]
    async fn a_message_that_must_not_be_dropped_is_kept_when_the_outbox_is_full_or_the_link_down() {
        let config = ClusterConfig {
            outbox: 1,
            ..ClusterConfig::for_node("a")
        };
        let node = ClusterNode::new(config, Arc::new(LocalBus::new().link()), 1024);
        // Down: kept, not dropped.
        node.send_or_keep(Target::Node(Arc::from("b")), leave(1));
        assert_eq!(node.stats().dropped_disconnected, 0);
        // Up, the outbox takes one; the next is kept.
        node.set_connected(true);
        node.send_or_keep(Target::Node(Arc::from("b")), leave(2));
        node.send_or_keep(Target::Node(Arc::from("b")), leave(3));
        let kept: Vec<ClusterMessage> = node.take_kept().into_iter().map(|(_, m)| m).collect();
        assert_eq!(kept, [leave(1), leave(3)]);
        assert!(node.take_kept().is_empty());
        // Put back ahead of newer ones, in order.
        node.set_connected(false);
        node.send_or_keep(Target::All, leave(4));
        node.keep_again(vec![(Target::All, leave(1))]);
        let kept: Vec<ClusterMessage> = node.take_kept().into_iter().map(|(_, m)| m).collect();
        assert_eq!(kept, [leave(1), leave(4)]);
    }
}
