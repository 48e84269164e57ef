//! The cluster task: one per node, beside the hub in the supervision tree. It is
//! the only code that awaits the link.
//!
//! - drains the outbox: each message published once, on the subject of every node
//!   (`gatehouse.all`), of a group (subscribed by the nodes with a member), or of
//!   one node; what waits together for one subject goes as one batch;
//! - subscribes to what is meant for this node and hands it to the hub (a pump task
//!   per subscription);
//! - heartbeats: puts this node's counts to the nodes bucket every
//!   `cluster.heartbeat`, watches the bucket, and declares dead a node not heard
//!   from for `cluster.dead_after` while this node is connected (a node cut off
//!   declares nobody dead, and after it reconnects, or after a pause of its own,
//!   gives everyone `dead_after` again);
//! - owns this node's players in the players bucket: a login puts the player's key
//!   (the newest put wins; one put or delete per player on its way at a time), a
//!   hook that ran deletes it if it is still this node's. Watching the bucket, it
//!   kicks a local copy of a player that another node put later (`duplicate_login`);
//! - answers other nodes' take-overs: kicks the player here and answers once its
//!   hook has run;
//! - hands shared rooms what other nodes send them (joins, answered in the
//!   background; members' messages, in order; leaves; the states rooms recorded
//!   for members here), and tells them when a node is gone; watching the room
//!   directory, it offers them the rooms that node ran (to take over).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use gatehouse_protocol::KickReason;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::node::{ClusterNode, Target};
use crate::cluster::wire::{
    self, Claim, ClusterMessage, Heartbeat, RoomHost, NODES_BUCKET, PLAYERS_BUCKET, ROOMS_BUCKET,
};
use crate::cluster::{within, KvChange, LinkError, LinkMessage, LinkStream, SharedKind};
use crate::connection::ConnId;
use crate::handle::ServerHandle;
use crate::logs::{Admit, LogLimiter};
use crate::players::LOGIN_WAIT;

/// How often the task looks at the link and the clock, at most.
const TICK: Duration = Duration::from_millis(100);

/// A gap between ticks longer than this (or a heartbeat) is a lapse: this node was
/// not running, and heard nobody.
const LAPSE: Duration = Duration::from_secs(1);

/// The most messages taken from the outbox at once, to publish as batches.
const MAX_DRAIN: usize = 256;

/// What the task's helpers report back to it.
enum Report {
    /// A change of the nodes or players bucket.
    Change(&'static str, KvChange),
    /// A watch of this bucket ended (the link lost it): watch again.
    WatchEnded(&'static str),
    /// A subscription ended: subscribe again.
    SubscriptionEnded(String),
    /// The delete of a player's claim is done; `unreleased`: it did not land, and
    /// the claim is still this node's.
    Released {
        player: Arc<str>,
        unreleased: Option<OwnClaim>,
    },
    /// The put of a player's claim landed at this revision (or failed).
    Claimed {
        player: Arc<str>,
        conn: ConnId,
        revision: Option<u64>,
    },
}

/// This node's claim on a player, as the bucket holds it.
struct OwnClaim {
    conn: ConnId,
    revision: u64,
}

/// Runs this node's side of the cluster until `stop`; then deletes its heartbeat
/// (the others see it leave at once) and returns.
pub(crate) async fn run<M: Send + 'static>(
    node: Arc<ClusterNode>,
    handle: ServerHandle<M>,
    stop: CancellationToken,
) {
    let mut outbox = node.outbox_rx.lock().await;
    let (report_tx, mut reports) = mpsc::channel(1024);
    let mut task = Task {
        node: node.clone(),
        handle,
        reports: report_tx,
        connected_since: None,
        last_tick: Instant::now(),
        next_beat: Instant::now(),
        node_subs: HashMap::new(),
        group_subs: HashMap::new(),
        watches: HashSet::new(),
        claims: HashMap::new(),
        retry: HashSet::new(),
        in_flight: HashSet::new(),
        room_hosts: HashMap::new(),
        logs: LogLimiter::default(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(first) = outbox.recv() => task.publish(first, &mut outbox).await,
            () = node.changed.notified() => task.reconcile().await,
            Some(report) = reports.recv() => task.report(report).await,
            _ = tick.tick() => task.tick().await,
        }
    }
    task.leave().await;
}

struct Task<M> {
    node: Arc<ClusterNode>,
    handle: ServerHandle<M>,
    reports: mpsc::Sender<Report>,
    /// Since when the link is connected, as the task last saw (and this node ran).
    connected_since: Option<Instant>,
    /// When the task last looked at the clock.
    last_tick: Instant,
    next_beat: Instant,
    /// The pumps of this node's own subscriptions (every node's, its own), by subject.
    node_subs: HashMap<String, AbortHandle>,
    /// The pumps of the group subscriptions, by group.
    group_subs: HashMap<Arc<str>, AbortHandle>,
    /// The buckets being watched.
    watches: HashSet<&'static str>,
    /// The players this node owns in the bucket, with the revision of its claim.
    claims: HashMap<Arc<str>, OwnClaim>,
    /// Players whose claim or release did not land: tried again once connected.
    retry: HashSet<Arc<str>>,
    /// Players with a put or delete on its way to the bucket.
    in_flight: HashSet<Arc<str>>,
    /// The room directory as watched (with shared rooms): each room's host and the
    /// revision that put it, by key.
    room_hosts: HashMap<String, (Arc<str>, u64)>,
    logs: LogLimiter,
}

impl<M: Send + 'static> Task<M> {
    fn timeout(&self) -> Duration {
        self.node.config.request_timeout
    }

    /// Publishes `first` and whatever else waits in the outbox (up to
    /// [`MAX_DRAIN`]): one NATS message per subject, a batch when it has several,
    /// in the order they were sent. Under load a room's broadcast and its members'
    /// states travel together; alone, a message goes as itself.
    async fn publish(
        &mut self,
        first: (Target, ClusterMessage),
        outbox: &mut mpsc::Receiver<(Target, ClusterMessage)>,
    ) {
        let mut messages = vec![first];
        while messages.len() < MAX_DRAIN {
            let Ok(next) = outbox.try_recv() else { break };
            messages.push(next);
        }
        self.publish_all(messages).await;
    }

    /// Publishes `messages`: one NATS message per subject, in order.
    async fn publish_all(&mut self, messages: Vec<(Target, ClusterMessage)>) {
        // (subject, encoded messages, their bytes), in first-sent order.
        let mut batches: Vec<(String, Vec<Bytes>, usize)> = Vec::new();
        for (target, message) in messages {
            let Some(encoded) = message.encode() else {
                self.node.count_send_failed(1);
                if let Some(suppressed) = written(&self.logs) {
                    warn!(
                        suppressed,
                        "cluster: a group or player name too long to send; dropped"
                    );
                }
                continue;
            };
            let subject = match &target {
                Target::All => wire::ALL_SUBJECT.to_owned(),
                Target::Group(group) => wire::group_subject(group),
                Target::Node(node) => wire::node_subject(node),
            };
            // The subject's last batch, if this still fits in it.
            let open = batches.iter_mut().rev().find(|(s, ..)| *s == subject);
            match open {
                Some((_, messages, bytes)) if *bytes + encoded.len() <= wire::MAX_BATCH_BYTES => {
                    *bytes += encoded.len();
                    messages.push(encoded);
                }
                _ => {
                    let bytes = encoded.len();
                    batches.push((subject, vec![encoded], bytes));
                }
            }
        }
        for (subject, messages, _) in batches {
            let payload = wire::batch(&messages);
            let published = within(self.timeout(), self.node.link.publish(subject, payload)).await;
            match published {
                Ok(()) => self.node.count_sent(messages.len()),
                Err(e) => {
                    self.node.count_send_failed(messages.len());
                    if let Some(suppressed) = written(&self.logs) {
                        warn!(suppressed, error = %e, "cluster: a message to other nodes was dropped");
                    }
                }
            }
        }
    }

    /// Looks at the link and the clock: (re)connects what the link lost, beats,
    /// declares the silent dead.
    async fn tick(&mut self) {
        let now = Instant::now();
        // A tick that comes this late means this node was not listening (stopped,
        // starved): like a node cut off, it gives everyone dead_after again rather
        // than declare dead whom it could not hear.
        let lapse = now.duration_since(self.last_tick) > self.node.config.heartbeat.max(LAPSE);
        self.last_tick = now;
        if lapse && self.connected_since.is_some() {
            warn!(
                "cluster: this node did not run for a while; nobody is declared dead for dead_after"
            );
            self.connected_since = Some(now);
        }
        if !self.node.link.connected() {
            if self.connected_since.take().is_some() {
                warn!("cluster: disconnected; local play goes on, nobody is declared dead");
            }
            self.node.set_connected(false);
            return;
        }
        let since = *self.connected_since.get_or_insert_with(|| {
            info!(node = %self.node.name, "cluster: connected");
            now
        });
        self.node.set_connected(true);
        self.ensure_subscribed().await;
        for player in std::mem::take(&mut self.retry) {
            self.claim_or_release(player);
        }
        self.send_kept().await;
        if now >= self.next_beat {
            self.next_beat = now + self.node.config.heartbeat;
            self.beat();
        }
        // Nobody is dead whom this node could not have heard for dead_after.
        let dead_after = self.node.config.dead_after;
        if now.duration_since(since) >= dead_after {
            for dead in self.node.declare_dead(now - dead_after) {
                warn!(node = %dead, "cluster: node not heard from for dead_after: dead");
                self.node_gone(&dead);
            }
        }
    }

    /// Subscribes to what the link lost or never had.
    async fn ensure_subscribed(&mut self) {
        for subject in [
            wire::ALL_SUBJECT.to_owned(),
            wire::node_subject(&self.node.name),
        ] {
            if !self.node_subs.contains_key(&subject) {
                if let Some(pump) = self.subscribe(subject.clone()).await {
                    self.node_subs.insert(subject, pump);
                }
            }
        }
        let shares_rooms = !self.node.room_kinds().is_empty();
        for bucket in [NODES_BUCKET, PLAYERS_BUCKET, ROOMS_BUCKET] {
            if bucket == ROOMS_BUCKET && !shares_rooms {
                continue;
            }
            if !self.watches.contains(bucket) {
                self.watch(bucket).await;
            }
        }
        let wanted = self.node.wanted_groups();
        self.set_groups(wanted).await;
    }

    /// A pump from `subject` to the hub.
    async fn subscribe(&mut self, subject: String) -> Option<AbortHandle> {
        let stream = match within(self.timeout(), self.node.link.subscribe(subject.clone())).await {
            Ok(stream) => stream,
            Err(e) => {
                if let Some(suppressed) = written(&self.logs) {
                    warn!(suppressed, %subject, error = %e, "cluster: cannot subscribe; trying again");
                }
                return None;
            }
        };
        let pump = pump(
            stream,
            self.node.clone(),
            self.handle.clone(),
            self.reports.clone(),
            subject,
        );
        Some(tokio::spawn(pump).abort_handle())
    }

    async fn watch(&mut self, bucket: &'static str) {
        let stream = match within(self.timeout(), self.node.link.kv_watch(bucket)).await {
            Ok(stream) => stream,
            Err(e) => {
                if let Some(suppressed) = written(&self.logs) {
                    warn!(suppressed, bucket, error = %e, "cluster: cannot watch; trying again");
                }
                return;
            }
        };
        self.watches.insert(bucket);
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(change) = stream.next().await {
                if reports.send(Report::Change(bucket, change)).await.is_err() {
                    return;
                }
            }
            let _ = reports.send(Report::WatchEnded(bucket)).await;
        });
    }

    /// Subscribes to the groups in `wanted` and unsubscribes from the rest.
    async fn set_groups(&mut self, wanted: HashSet<Arc<str>>) {
        self.group_subs.retain(|group, pump| {
            let keep = wanted.contains(group);
            if !keep {
                pump.abort();
            }
            keep
        });
        if self.connected_since.is_none() {
            return; // subscribed on reconnect
        }
        for group in wanted {
            if !self.group_subs.contains_key(&group) {
                if let Some(pump) = self.subscribe(wire::group_subject(&group)).await {
                    self.group_subs.insert(group, pump);
                }
            }
        }
    }

    /// Puts this node's heartbeat (in the background: a slow store must not hold
    /// the outbox).
    fn beat(&self) {
        let node = self.node.clone();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let beat = handle.local_counts().await;
            let put = node
                .link
                .kv_put(NODES_BUCKET, node.name.to_string(), beat.encode());
            if let Err(e) = within(node.config.request_timeout, put).await {
                debug!(error = %e, "cluster: a heartbeat did not land");
            }
        });
    }

    /// What the hub and the players changed: group subscriptions, player claims.
    async fn reconcile(&mut self) {
        let (groups, players) = self.node.take_wanted();
        if let Some(groups) = groups {
            self.set_groups(groups).await;
        }
        for player in players {
            self.claim_or_release(player);
        }
        self.send_kept().await;
    }

    /// Sends the messages that must not be dropped, once connected; put back (in
    /// order) if the link goes down on the way.
    async fn send_kept(&mut self) {
        if self.connected_since.is_none() {
            return;
        }
        let mut kept = self.node.take_kept().into_iter();
        while let Some((target, message)) = kept.next() {
            if !self.node.link.connected() {
                let mut rest = vec![(target, message)];
                rest.extend(kept);
                self.node.keep_again(rest);
                return;
            }
            self.publish_all(vec![(target, message)]).await;
        }
    }

    /// Makes the bucket say what this node holds of `player`: its key put for a new
    /// holder here, deleted (if still this node's) when the holder is gone. One
    /// call to the bucket per player at a time: two puts on their way could land in
    /// either order, and an older login's put landing last would make it the
    /// newest; the next is decided when the one on its way has landed.
    fn claim_or_release(&mut self, player: Arc<str>) {
        if self.in_flight.contains(&player) {
            return;
        }
        let holder = self.handle.players.holder_conn(&player);
        let ours = self.claims.get(&player).map(|c| (c.conn, c.revision));
        let node = self.node.clone();
        let key = wire::player_key(&player);
        let reports = self.reports.clone();
        match (holder, ours) {
            (Some(conn), Some((claimed, _))) if conn == claimed => {}
            (Some(conn), _) => {
                let claim = Claim {
                    node: node.name.clone(),
                    conn,
                };
                // A put that timed out may have landed: then it is ours already,
                // and putting it again would make it look newer than it is.
                if let Some(owner) = self.node.owner(&player) {
                    if owner.claim == claim {
                        self.claims.insert(
                            player,
                            OwnClaim {
                                conn,
                                revision: owner.revision,
                            },
                        );
                        return;
                    }
                }
                self.in_flight.insert(player.clone());
                tokio::spawn(async move {
                    let put = node.link.kv_put(PLAYERS_BUCKET, key, claim.encode());
                    let revision = within(node.config.request_timeout, put).await.ok();
                    let report = Report::Claimed {
                        player,
                        conn,
                        revision,
                    };
                    let _ = reports.send(report).await;
                });
            }
            (None, Some((conn, revision))) => {
                self.claims.remove(&player);
                self.in_flight.insert(player.clone());
                tokio::spawn(async move {
                    let delete = node.link.kv_delete(PLAYERS_BUCKET, key, Some(revision));
                    // A conflict: another node owns it now, which is right.
                    let deleted = within(node.config.request_timeout, delete).await;
                    let landed = matches!(deleted, Ok(()) | Err(LinkError::Conflict));
                    let claim = OwnClaim { conn, revision };
                    let report = Report::Released {
                        player,
                        unreleased: (!landed).then_some(claim),
                    };
                    let _ = reports.send(report).await;
                });
            }
            (None, None) => {}
        }
    }

    async fn report(&mut self, report: Report) {
        match report {
            Report::Change(NODES_BUCKET, change) => self.node_changed(change),
            Report::Change(ROOMS_BUCKET, change) => self.room_changed(change),
            Report::Change(_, change) => self.player_changed(change).await,
            Report::WatchEnded(bucket) => {
                self.watches.remove(bucket);
                if bucket == ROOMS_BUCKET {
                    // The next watch lists the directory afresh, without the keys
                    // deleted meanwhile.
                    self.room_hosts.clear();
                }
            }
            Report::SubscriptionEnded(subject) => {
                self.node_subs.remove(&subject);
                self.group_subs
                    .retain(|group, _| wire::group_subject(group) != subject);
            }
            Report::Claimed {
                player,
                conn,
                revision,
            } => self.claimed(player, conn, revision).await,
            Report::Released { player, unreleased } => {
                self.in_flight.remove(&player);
                if let Some(claim) = unreleased {
                    // Still this node's: released at the next tick.
                    self.claims.insert(player.clone(), claim);
                    self.retry.insert(player);
                } else {
                    // A login here while the delete was on its way.
                    self.claim_or_release(player);
                }
            }
        }
    }

    fn node_changed(&mut self, change: KvChange) {
        if change.key == *self.node.name {
            return;
        }
        let name: Arc<str> = Arc::from(change.key.as_str());
        match change.value {
            None => {
                info!(node = %name, "cluster: node left");
                self.node.left(&name);
                self.node_gone(&name);
            }
            Some(value) => match Heartbeat::decode(&value) {
                Some(beat) => {
                    if !self.node.is_alive(&name) {
                        info!(node = %name, "cluster: node alive");
                    }
                    self.node.heard(name, beat, Instant::now());
                }
                None => self.malformed("a heartbeat"),
            },
        }
    }

    async fn player_changed(&mut self, change: KvChange) {
        let Some(player) = wire::player_of_key(&change.key) else {
            return self.malformed("a player key");
        };
        let player: Arc<str> = Arc::from(player);
        let Some(value) = change.value else {
            self.node.disowned(&player, change.revision);
            return;
        };
        let Some(claim) = Claim::decode(&value) else {
            return self.malformed("a player claim");
        };
        let elsewhere = claim.node != self.node.name;
        self.node.owned(player.clone(), claim, change.revision);
        if elsewhere {
            self.lost_if_older(&player, change.revision).await;
        }
    }

    /// Another node put `player` at `revision`: if this node's claim is older, its
    /// copy is kicked (the newest login wins).
    async fn lost_if_older(&mut self, player: &Arc<str>, revision: u64) {
        let Some(ours) = self.claims.get(player) else {
            return;
        };
        if ours.revision >= revision {
            return;
        }
        let conn = ours.conn;
        self.claims.remove(player);
        self.node.count_lost_player();
        info!(%player, conn = %conn, "cluster: another node logged the player in later; kicking the copy here");
        let _ = self
            .handle
            .kick(conn, KickReason::DUPLICATE_LOGIN, "logged in elsewhere")
            .await;
    }

    async fn claimed(&mut self, player: Arc<str>, conn: ConnId, revision: Option<u64>) {
        self.in_flight.remove(&player);
        let Some(revision) = revision else {
            // Not landed: tried again at the next tick the link is up.
            self.retry.insert(player);
            return;
        };
        self.claims
            .insert(player.clone(), OwnClaim { conn, revision });
        // A later claim elsewhere may have been watched before this put returned.
        if let Some(owner) = self.node.owner(&player) {
            if owner.claim.node != self.node.name {
                self.lost_if_older(&player, owner.revision).await;
            }
        }
        // The holder may have gone (or changed) while the put was on its way.
        if self.handle.players.holder_conn(&player) != Some(conn) {
            self.claim_or_release(player);
        }
    }

    /// `node` died or left: the shared rooms let go of its members, and tell this
    /// node's members of its rooms that they closed.
    fn node_gone(&self, node: &str) {
        for rooms in self.node.room_kinds() {
            rooms.node_gone(node);
        }
        for (key, (host, revision)) in &self.room_hosts {
            if **host != *node {
                continue;
            }
            let Some((kind, room)) = wire::room_of_key(key) else {
                continue;
            };
            if let Some(rooms) = self.node.room_kind(&kind) {
                rooms.adopt(Arc::from(room), *revision);
            }
        }
    }

    /// A change of the room directory: who runs which room.
    fn room_changed(&mut self, change: KvChange) {
        let Some(value) = change.value else {
            self.room_hosts.remove(&change.key);
            return;
        };
        match RoomHost::decode(&value) {
            Some(host) => {
                self.room_hosts
                    .insert(change.key, (host.node, change.revision));
            }
            None => self.malformed("a room directory entry"),
        }
    }

    fn malformed(&mut self, what: &str) {
        self.node.count_malformed();
        if let Some(suppressed) = written(&self.logs) {
            warn!(
                suppressed,
                what, "cluster: a malformed value from the cluster's store; ignored"
            );
        }
    }

    /// A clean stop: this node's heartbeat and claims are deleted, so the others see
    /// it gone at once rather than after dead_after.
    async fn leave(self) {
        for pump in self.node_subs.values().chain(self.group_subs.values()) {
            pump.abort();
        }
        if !self.node.link.connected() {
            return;
        }
        let timeout = self.timeout();
        let link = &self.node.link;
        let _ = within(
            timeout,
            link.kv_delete(NODES_BUCKET, self.node.name.to_string(), None),
        )
        .await;
        for (player, claim) in &self.claims {
            let key = wire::player_key(player);
            let _ = within(
                timeout,
                link.kv_delete(PLAYERS_BUCKET, key, Some(claim.revision)),
            )
            .await;
        }
    }
}

/// Hands what arrives on one subscription to the hub until it ends.
async fn pump<M: Send + 'static>(
    mut stream: LinkStream<LinkMessage>,
    node: Arc<ClusterNode>,
    handle: ServerHandle<M>,
    reports: mpsc::Sender<Report>,
    subject: String,
) {
    let max_frame = node.max_frame;
    let logs = LogLimiter::default();
    while let Some(message) = stream.next().await {
        let parts = match wire::unbatch(message.payload) {
            Ok(parts) => parts,
            Err(e) => {
                node.count_malformed();
                if let Some(suppressed) = written(&logs) {
                    warn!(suppressed, %subject, error = %e, "cluster: a malformed batch from another node; dropped");
                }
                continue;
            }
        };
        // A request is never batched: only a message alone has a reply subject.
        let mut reply = if parts.len() == 1 {
            message.reply
        } else {
            None
        };
        for part in parts {
            match ClusterMessage::decode(part, max_frame) {
                Ok(ClusterMessage::TakeOver { player }) => {
                    node.count_received();
                    if let Some(reply) = reply.take() {
                        let answer = answer_take_over(node.clone(), handle.clone(), player, reply);
                        tokio::spawn(answer);
                    }
                }
                Ok(ClusterMessage::RoomJoin {
                    kind,
                    room,
                    node: from,
                    member,
                    address,
                    join,
                }) => {
                    node.count_received();
                    let (Some(reply), Some(rooms)) = (reply.take(), room_kind(&node, &kind, &logs))
                    else {
                        continue;
                    };
                    // Answered in the background: a join waits for its room.
                    let answering = node.clone();
                    tokio::spawn(async move {
                        let answer = rooms.join(room, from, member, address, join).await;
                        let link = &answering.link;
                        let answered = link.publish(reply, answer);
                        let _ = within(answering.config.request_timeout, answered).await;
                    });
                }
                Ok(ClusterMessage::RoomInput {
                    kind,
                    room,
                    node: from,
                    member,
                    message,
                }) => {
                    node.count_received();
                    if let Some(rooms) = room_kind(&node, &kind, &logs) {
                        // In order: this waits for room in the room's mailbox.
                        rooms.input(room, from, member, message).await;
                    }
                }
                Ok(ClusterMessage::RoomLeave {
                    kind,
                    room,
                    node: from,
                    member,
                }) => {
                    node.count_received();
                    if let Some(rooms) = room_kind(&node, &kind, &logs) {
                        rooms.leave(&room, &from, member);
                    }
                }
                Ok(ClusterMessage::MemberStates { kind, room, states }) => {
                    node.count_received();
                    if let Some(rooms) = room_kind(&node, &kind, &logs) {
                        rooms.member_states(&room, states);
                    }
                }
                Ok(message) => {
                    node.count_received();
                    // The hub is local: waiting for room in its queue is backpressure,
                    // not a wait on the network.
                    let _ = handle.deliver_from_cluster(message).await;
                }
                Err(e) => {
                    node.count_malformed();
                    if let Some(suppressed) = written(&logs) {
                        warn!(suppressed, %subject, error = %e, "cluster: a malformed message from another node; dropped");
                    }
                }
            }
        }
    }
    let _ = reports.send(Report::SubscriptionEnded(subject)).await;
}

/// The shared room type `kind` of this node; a message for a type it does not
/// share (a node running another game) is counted and logged within budget.
fn room_kind(node: &ClusterNode, kind: &str, logs: &LogLimiter) -> Option<Arc<dyn SharedKind>> {
    let rooms = node.room_kind(kind);
    if rooms.is_none() {
        node.count_malformed();
        if let Some(suppressed) = written(logs) {
            warn!(
                suppressed,
                kind, "cluster: a message for a room type this node does not share; dropped"
            );
        }
    }
    rooms
}

/// Whether a line fits the budget, and how many were left out before it.
fn written(logs: &LogLimiter) -> Option<u64> {
    match logs.admit(std::time::Instant::now()) {
        Admit::Write { suppressed } => Some(suppressed),
        Admit::Skip => None,
    }
}

/// Another node's login takes `player` over: the session here is kicked
/// `duplicate_login`, and the answer goes once its disconnect hook has run (or
/// [`LOGIN_WAIT`] passed).
async fn answer_take_over<M: Send + 'static>(
    node: Arc<ClusterNode>,
    handle: ServerHandle<M>,
    player: Arc<str>,
    reply: String,
) {
    let mut answer = wire::TAKEN_OVER;
    if let Some((conn, mut gone)) = handle.players.holder(&player) {
        info!(%player, conn = %conn, "cluster: the player logs in on another node; kicking it here");
        let _ = handle
            .kick(
                conn,
                KickReason::DUPLICATE_LOGIN,
                "logged in on another node",
            )
            .await;
        // A little less than the asker waits, so that it hears a busy session.
        let patience = LOGIN_WAIT.saturating_sub(node.config.request_timeout);
        let waiting = gone.wait_for(|gone| *gone);
        if tokio::time::timeout(patience, waiting).await.is_err() {
            answer = wire::STILL_ENDING;
        }
    }
    let answered = node.link.publish(reply, Bytes::from_static(answer));
    let _ = within(node.config.request_timeout, answered).await;
}
