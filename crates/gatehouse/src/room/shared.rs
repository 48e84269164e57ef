//! Rooms shared by a cluster. A room type opts in with a [`RoomCodec`] and is handed
//! to [`Server::with_shared_rooms`](crate::Server::with_shared_rooms); in a cluster
//! there is then one room of a name in the whole cluster, run by the node where it
//! was first joined (its host), which the directory bucket (`gatehouse_rooms`, a key
//! per room) names. Connections on other nodes are its remote members.
//!
//! - The joiner's side ([`Shared::join`]): finds the host in the directory, or
//!   becomes it (a create that only one of many nodes asking at once wins); joins
//!   there with a request under `cluster.request_timeout`. A host that nobody answers
//!   for and that is not alive is replaced the same way (a compare-and-set on its
//!   revision: one node wins). A remote membership sends its messages and its leave
//!   to the host through the outbox; the state the room records for it crosses back
//!   by message (one per node after each hook), not through a shared cell.
//! - The host's side ([`SharedKind`], called by the cluster task): a remote member is
//!   a seat whose sink sends its pushes to its node, a room broadcast being one
//!   message per node however many members are there; its messages reach the room in
//!   the order sent.
//! - A node gone (dead, or left): its members leave the rooms here, and this node's
//!   members of rooms it ran are told `ROUTE_ROOM_RESTARTED` and joined again where
//!   the room is made next: one node takes its key over (compare-and-set) and makes
//!   it, from its last checkpoint if the registry keeps them
//!   ([`Rooms::checkpoint_to`]). Making a room lands a claim on its checkpoint key
//!   first, so that a copy still running on a node cut off is refused its next
//!   checkpoint and closes.
//! - A room that stops gives its directory key back (a delete of that revision), so
//!   that the next join anywhere makes it again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use gatehouse_protocol::{KickReason, Message, ROUTE_ROOM_RESTARTED};
use gatehouse_store::{LandError, Loaded, SaveSlot, SaveWriter, Store, StoreError, WriterClosed};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::registry::{Membership, Registry, Rooms};
use super::task::MemberState;
use super::{Refusal, Room, RoomError};
use crate::cluster::wire::{
    self, node_subject, room_key, ClusterMessage, Malformed, RoomHost, MAX_KICK_TEXT, ROOMS_BUCKET,
};
use crate::cluster::{within, ClusterNode, LinkError, SharedKind, Target};
use crate::connection::ConnId;
use crate::guard::catch;
use crate::mailbox::MemberSink;
use crate::Status;

/// How a room type's joins and messages cross between nodes, for a room type shared
/// by a cluster ([`Server::with_shared_rooms`](crate::Server::with_shared_rooms)).
/// Any encoding works, as long as every node of the cluster runs the same; a decode
/// gets bytes from another process and answers `None` for what it cannot read.
pub trait RoomCodec: Room {
    /// A join, as bytes.
    fn encode_join(join: &Self::Join) -> Bytes;
    /// A join from bytes; `None`: unreadable (the join is refused).
    fn decode_join(bytes: Bytes) -> Option<Self::Join>;
    /// A member's message, as bytes.
    fn encode_message(message: &Self::Message) -> Bytes;
    /// A member's message from bytes; `None`: unreadable (it is dropped).
    fn decode_message(bytes: Bytes) -> Option<Self::Message>;

    /// A snapshot as bytes, for the checkpoints of [`Rooms::checkpoint_to`]; `None`
    /// (the default): the room is not checkpointed, and a room whose node is gone is
    /// made afresh.
    fn encode_snapshot(snapshot: &Self::Snapshot) -> Option<Bytes> {
        let _ = snapshot;
        None
    }

    /// A snapshot from a checkpoint; `None`: unreadable (the room is made afresh).
    fn decode_snapshot(bytes: Bytes) -> Option<Self::Snapshot> {
        let _ = bytes;
        None
    }
}

/// A [`RoomCodec`]'s functions, kept by a registry whose type is only a [`Room`].
struct Codec<R: Room> {
    encode_join: fn(&R::Join) -> Bytes,
    decode_join: fn(Bytes) -> Option<R::Join>,
    encode_message: fn(&R::Message) -> Bytes,
    decode_message: fn(Bytes) -> Option<R::Message>,
    encode_snapshot: fn(&R::Snapshot) -> Option<Bytes>,
    decode_snapshot: fn(Bytes) -> Option<R::Snapshot>,
}

/// Where a shared room type's snapshots are checkpointed, and how often
/// ([`Rooms::checkpoint_to`]).
pub(crate) struct Snapshots {
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) every: Duration,
}

/// A save writer, whatever its store.
pub(crate) trait SnapshotStore: Send + Sync {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Loaded, StoreError>>;
    fn land<'a>(
        &'a self,
        slot: &'a mut SaveSlot,
        data: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), LandError>>;
    fn save(&self, slot: &mut SaveSlot, data: Bytes) -> Result<(), WriterClosed>;
}

impl<S: Store> SnapshotStore for SaveWriter<S> {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Loaded, StoreError>> {
        SaveWriter::load(self, key).boxed()
    }

    fn land<'a>(
        &'a self,
        slot: &'a mut SaveSlot,
        data: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), LandError>> {
        SaveWriter::land(self, slot, data, timeout).boxed()
    }

    fn save(&self, slot: &mut SaveSlot, data: Bytes) -> Result<(), WriterClosed> {
        SaveWriter::save(self, slot, data)
    }
}

/// A shared room's checkpoints, kept by its task: the slot its claim landed in.
pub(crate) struct Checkpoint<R: Room> {
    /// This node: every checkpoint is stamped with it.
    node: Arc<str>,
    store: Arc<dyn SnapshotStore>,
    pub(crate) slot: SaveSlot,
    every: Duration,
    next: Instant,
    encode: fn(&R::Snapshot) -> Option<Bytes>,
}

impl<R: Room> Checkpoint<R> {
    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Queues `snapshot` (never waits); the next is due `every` from `now`.
    pub(crate) fn save(&mut self, room: &str, snapshot: &R::Snapshot, now: Instant) {
        self.next = now + self.every;
        let Some(data) = guarded("encode_snapshot", || (self.encode)(snapshot)) else {
            return;
        };
        if self
            .store
            .save(&mut self.slot, stamped(&self.node, &data))
            .is_err()
        {
            warn!(
                room,
                "the room's checkpoint could not be queued: the store is closed"
            );
        }
    }
}

/// A codec function of the game's, run so that a panic in it is a value it could
/// not encode or decode (logged), not a dead room task or cluster pump.
pub(crate) fn guarded<T>(what: &str, codec: impl FnOnce() -> Option<T>) -> Option<T> {
    match catch(codec) {
        Ok(value) => value,
        Err(cause) => {
            warn!(what, cause, "a room codec panicked; the value is dropped");
            None
        }
    }
}

/// A checkpoint as stored: the node that wrote it, then the snapshot. Two nodes
/// never store the same bytes, so a stale copy's checkpoint can never pass for the
/// claim another node landed at that version (a store takes a write of the very
/// version and bytes it holds as its own retry).
fn stamped(node: &str, snapshot: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + node.len() + snapshot.len());
    // Node names are at most 64 characters.
    out.put_u16(u16::try_from(node.len()).unwrap_or(u16::MAX));
    out.put_slice(node.as_bytes());
    out.put_slice(snapshot);
    out.freeze()
}

/// The snapshot of a stored checkpoint (`None`: none, or unreadable).
fn unstamped(mut stored: Bytes) -> Option<Bytes> {
    if stored.remaining() < 2 {
        return None;
    }
    let len = usize::from(stored.get_u16());
    if stored.remaining() < len {
        return None;
    }
    stored.advance(len);
    (!stored.is_empty()).then_some(stored)
}

/// The key of a shared room's checkpoints in the store.
fn snapshot_key(kind: &str, room: &str) -> String {
    format!("room/{kind}/{room}")
}

/// How long making a shared room waits for its claim to land in the store.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// How many times a join looks the room up again (its host moved or went) before
/// it gives up with [`RoomError::Unavailable`].
const LOOKUPS: usize = 5;

/// This node's part in a room it hosts, as far as the directory goes.
enum Hosting {
    /// The directory names this node, at this revision.
    Held(u64),
    /// The room stopped; its key is being deleted.
    Releasing,
}

/// Where a remote member sits on its host: the room, the member's node and connection.
type SeatKey = (Arc<str>, Arc<str>, ConnId);

/// This node's member of a room elsewhere: its connection and the room.
type AwayKey = (ConnId, Arc<str>);

/// The node that runs the room a member of this node sits in. It changes when that
/// node is gone and the member is joined again where the room is made next, and is
/// `None` while that is under way (the member's messages wait for it).
pub(crate) type HostCell = Arc<watch::Sender<Option<Arc<str>>>>;

/// A shared room's type and its join encoding, kept by the room's task: the states
/// it records for members on other nodes cross to them in it.
pub(crate) struct SharedRoom<R: Room> {
    pub(crate) kind: Arc<str>,
    pub(crate) encode_join: fn(&R::Join) -> Bytes,
}

/// A seat of this node's connection in a room on another node: what it takes to
/// join it again elsewhere, and the state the room last recorded for it.
struct SeatAway<R: Room> {
    host: HostCell,
    sink: Arc<dyn MemberSink>,
    address: IpAddr,
    join: R::Join,
    state: MemberState<R::Join>,
}

impl<R: Room> Clone for SeatAway<R> {
    fn clone(&self) -> Self {
        SeatAway {
            host: self.host.clone(),
            sink: self.sink.clone(),
            address: self.address,
            join: self.join.clone(),
            state: self.state.clone(),
        }
    }
}

impl<R: Room> SeatAway<R> {
    /// What the member would bring if it joined again: its recorded state, or what
    /// it joined with.
    fn latest(&self) -> R::Join {
        lock(&self.state)
            .clone()
            .unwrap_or_else(|| self.join.clone())
    }
}

/// A member of a room on another node, as the host's room keeps it: its node (for
/// a broadcast, one message per node) and the way there.
#[derive(Clone)]
pub(crate) struct OtherNode {
    pub(crate) node: Arc<str>,
    pub(crate) cluster: Arc<ClusterNode>,
}

impl OtherNode {
    /// Sends the states `room` of type `kind` recorded for members on this node.
    pub(crate) fn send_states(
        &self,
        kind: &Arc<str>,
        room: &Arc<str>,
        states: Vec<(ConnId, Bytes)>,
    ) {
        let mut states = states;
        while !states.is_empty() {
            let rest = states.split_off(states.len().min(wire::MAX_CONNS));
            let message = ClusterMessage::MemberStates {
                kind: kind.clone(),
                room: room.clone(),
                states,
            };
            self.cluster.send(Target::Node(self.node.clone()), message);
            states = rest;
        }
    }

    /// Sends `frame` to `conns` on this member's node, in as few messages as fit.
    pub(crate) fn deliver(&self, conns: &[ConnId], frame: &Bytes) {
        for chunk in conns.chunks(wire::MAX_CONNS) {
            let message = ClusterMessage::ConnFrames {
                conns: chunk.to_vec(),
                frame: frame.clone(),
            };
            self.cluster.send(Target::Node(self.node.clone()), message);
        }
    }
}

/// The sink of a remote member: its pushes and kicks cross to its node.
struct RemoteSink {
    away: OtherNode,
    member: ConnId,
}

impl MemberSink for RemoteSink {
    fn deliver_frame(&self, frame: Bytes) -> bool {
        self.away.deliver(&[self.member], &frame);
        true
    }

    fn kick(&self, reason: KickReason, text: String) {
        let message = ClusterMessage::ConnKick {
            conn: self.member,
            reason,
            text,
        };
        let node = self.away.node.clone();
        self.away.cluster.send(Target::Node(node), message);
    }
}

/// A room registry's part in a cluster.
pub(crate) struct Shared<R: Room> {
    kind: Arc<str>,
    cluster: Arc<ClusterNode>,
    codec: Codec<R>,
    rooms: Weak<Registry<R>>,
    hosted: Mutex<HashMap<Arc<str>, Hosting>>,
    /// One room made at a time, so that a node never claims a room twice.
    starting: tokio::sync::Mutex<()>,
    /// A stopped room's key was given back (or could not be).
    released: tokio::sync::Notify,
    /// The host's side: the seats of members that joined through the cluster (from
    /// other nodes, or this node's own joined again here after their host went).
    seats: Mutex<HashMap<SeatKey, Membership<R>>>,
    /// The joiner's side: this node's members of rooms on other nodes, by connection
    /// and room.
    away: Mutex<HashMap<AwayKey, SeatAway<R>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of a join sent to a host.
enum Remote {
    Joined,
    /// The host does not hold the room: look again.
    NotHere,
    /// Nobody answers for the host.
    Gone,
    /// The host did not answer in time (it may be stopped while NATS still holds
    /// its subscription).
    Silent,
    Failed(RoomError),
}

/// Where a join placed its member.
enum Placed<R: Room> {
    /// In the room on this node.
    Here(Membership<R>),
    /// In the room on that node.
    There(Arc<str>),
}

impl<R: RoomCodec> Shared<R> {
    pub(crate) fn new(kind: &str, cluster: Arc<ClusterNode>, rooms: &Rooms<R>) -> Arc<Self> {
        Arc::new(Shared {
            kind: Arc::from(kind),
            cluster,
            codec: Codec {
                encode_join: R::encode_join,
                decode_join: R::decode_join,
                encode_message: R::encode_message,
                decode_message: R::decode_message,
                encode_snapshot: R::encode_snapshot,
                decode_snapshot: R::decode_snapshot,
            },
            rooms: Arc::downgrade(rooms.registry()),
            hosted: Mutex::default(),
            starting: tokio::sync::Mutex::new(()),
            released: tokio::sync::Notify::new(),
            seats: Mutex::default(),
            away: Mutex::default(),
        })
    }
}

impl<R: Room> Shared<R> {
    fn rooms(&self) -> Result<Rooms<R>, RoomError> {
        self.rooms
            .upgrade()
            .map(Rooms::from_registry)
            .ok_or(RoomError::ShutDown)
    }

    fn key(&self, room: &str) -> String {
        room_key(&self.kind, room)
    }

    /// Joins connection `member` (of this node, reached through `sink`) to the room
    /// `name`, wherever it runs in the cluster; see the module docs.
    pub(crate) async fn join(
        self: &Arc<Self>,
        name: &str,
        member: ConnId,
        sink: Arc<dyn MemberSink>,
        address: IpAddr,
        join: R::Join,
    ) -> Result<Membership<R>, RoomError> {
        let state = MemberState::default();
        match self
            .place(name, member, &sink, address, join.clone(), &state)
            .await?
        {
            Placed::Here(membership) => Ok(membership),
            Placed::There(host) => {
                let room: Arc<str> = Arc::from(name);
                let host: HostCell = Arc::new(watch::Sender::new(Some(host)));
                let seat = SeatAway {
                    host: host.clone(),
                    sink,
                    address,
                    join: join.clone(),
                    state: state.clone(),
                };
                lock(&self.away).insert((member, room.clone()), seat);
                Ok(Membership::remote(
                    self.clone(),
                    host,
                    room,
                    member,
                    join,
                    state,
                ))
            }
        }
    }

    /// Finds the room `name` (or makes it here) and seats `member` in it.
    async fn place(
        self: &Arc<Self>,
        name: &str,
        member: ConnId,
        sink: &Arc<dyn MemberSink>,
        address: IpAddr,
        join: R::Join,
        state: &MemberState<R::Join>,
    ) -> Result<Placed<R>, RoomError> {
        let rooms = self.rooms()?;
        let timeout = self.cluster.config.request_timeout;
        let link = &self.cluster.link;
        let key = self.key(name);
        for _ in 0..LOOKUPS {
            // Made here (or taken over) on the way, or running here already: joined
            // here, unless it stopped meanwhile (then looked up again).
            let made_here = if self.holds(name) {
                true
            } else {
                let found = within(timeout, link.kv_get(ROOMS_BUCKET, key.clone()))
                    .await
                    .map_err(|_| RoomError::Unavailable)?;
                match found {
                    None => {
                        self.claim(name, None).await? && self.start(&rooms, name, false).await?
                    }
                    Some((value, revision)) => {
                        let Some(host) = RoomHost::decode(&value) else {
                            self.cluster.count_malformed();
                            warn!(kind = %self.kind, room = name, "cluster: an unreadable room directory entry");
                            return Err(RoomError::Unavailable);
                        };
                        if host.node == self.cluster.name {
                            self.own_again(&rooms, name, revision).await?
                        } else {
                            let encoded = (self.codec.encode_join)(&join);
                            let asked = self
                                .join_remote(&host.node, name, member, address, encoded)
                                .await;
                            match asked {
                                Remote::Joined => return Ok(Placed::There(host.node)),
                                Remote::NotHere => false,
                                // Its host is gone (or stopped, and declared dead):
                                // this node makes the room again (from its last
                                // checkpoint), unless another did first.
                                Remote::Gone | Remote::Silent
                                    if !self.cluster.is_alive(&host.node) =>
                                {
                                    let taken = self.claim(name, Some(revision)).await?
                                        && self.start(&rooms, name, true).await?;
                                    if taken {
                                        info!(kind = %self.kind, room = name, from = %host.node, "cluster: took over a room whose node is gone");
                                    }
                                    taken
                                }
                                Remote::Gone | Remote::Silent => {
                                    return Err(RoomError::Unavailable)
                                }
                                Remote::Failed(e) => return Err(e),
                            }
                        }
                    }
                }
            };
            if made_here {
                let joined = rooms
                    .join_running(
                        name,
                        member,
                        sink.clone(),
                        address,
                        join.clone(),
                        None,
                        state.clone(),
                    )
                    .await;
                match joined {
                    Err(RoomError::Closed) => continue,
                    joined => return joined.map(Placed::Here),
                }
            }
        }
        Err(RoomError::Unavailable)
    }

    /// Whether this node holds `name` and runs it.
    fn holds(&self, name: &str) -> bool {
        matches!(lock(&self.hosted).get(name), Some(Hosting::Held(_)))
            && self.rooms().is_ok_and(|rooms| rooms.get(name).is_some())
    }

    /// Takes the seats `which` picks out of the table; dropped by the caller once the
    /// lock is released (each leaves its room).
    fn take_seats(&self, which: impl Fn(&SeatKey) -> bool) -> Vec<Membership<R>> {
        let mut seats = lock(&self.seats);
        seats
            .extract_if(|key, _| which(key))
            .map(|(_, seat)| seat)
            .collect()
    }

    /// Whether `name`'s key is being given back.
    fn releasing(&self, name: &str) -> bool {
        matches!(lock(&self.hosted).get(name), Some(Hosting::Releasing))
    }

    /// The directory names this node (at `revision`) for `name`: a room it runs, or
    /// made before and stopped (its key being given back: look again), or one of an
    /// earlier life of this node (taken over again, from its checkpoint). Whether
    /// it runs here now.
    async fn own_again(
        &self,
        rooms: &Rooms<R>,
        name: &str,
        revision: u64,
    ) -> Result<bool, RoomError> {
        let hosting = match lock(&self.hosted).get(name) {
            Some(Hosting::Held(_)) => Some(false),
            Some(Hosting::Releasing) => None,
            None => Some(true),
        };
        match hosting {
            None => {
                // Its delete is on its way: the next look finds it gone.
                let released = self.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if self.releasing(name) {
                    let wait = self.cluster.config.request_timeout;
                    let _ = tokio::time::timeout(wait, released).await;
                }
                Ok(false)
            }
            Some(false) => self.start(rooms, name, false).await,
            Some(true) => Ok(
                self.claim(name, Some(revision)).await? && self.start(rooms, name, true).await?
            ),
        }
    }

    /// Makes this node the room's host in the directory: where it has no host
    /// (`expected` `None`) or still the one at revision `expected`. `Ok(false)`: another
    /// node was first.
    async fn claim(&self, name: &str, expected: Option<u64>) -> Result<bool, RoomError> {
        let host = RoomHost {
            node: self.cluster.name.clone(),
        };
        let put =
            self.cluster
                .link
                .kv_put_if(ROOMS_BUCKET, self.key(name), host.encode(), expected);
        match within(self.cluster.config.request_timeout, put).await {
            Ok(revision) => {
                lock(&self.hosted).insert(Arc::from(name), Hosting::Held(revision));
                Ok(true)
            }
            Err(LinkError::Conflict) => Ok(false),
            Err(_) => Err(RoomError::Unavailable),
        }
    }

    /// Runs the room `name` here (this node holds it in the directory), made afresh
    /// or, `restore`, from its last checkpoint. With checkpoints, this node first
    /// lands a claim on the room's key in the store: a copy still running on a node
    /// cut off from the cluster then has its next checkpoint refused, and closes.
    async fn start(&self, rooms: &Rooms<R>, name: &str, restore: bool) -> Result<bool, RoomError> {
        let _one_at_a_time = self.starting.lock().await;
        if rooms.get(name).is_some() {
            return Ok(true);
        }
        let shared = || SharedRoom {
            kind: self.kind.clone(),
            encode_join: self.codec.encode_join,
        };
        let Some(snapshots) = rooms.registry().snapshots.get() else {
            return match rooms.create_with(name, None, None, Some(shared())) {
                Ok(_) | Err(RoomError::Exists(_)) => Ok(true),
                Err(e) => Err(e),
            };
        };
        let key = snapshot_key(&self.kind, name);
        let loaded = snapshots.store.load(&key).await.map_err(|e| {
            warn!(kind = %self.kind, room = name, error = %e, "cannot load the room's checkpoint");
            RoomError::Unavailable
        })?;
        let kept = loaded.data.filter(|_| restore).and_then(unstamped);
        let decode = self.codec.decode_snapshot;
        let restored = kept
            .clone()
            .and_then(|kept| guarded("decode_snapshot", || decode(kept)));
        if restore {
            info!(kind = %self.kind, room = name, restored = restored.is_some(), "cluster: making a room taken over from its last checkpoint");
        }
        let mut slot = loaded.slot;
        let claim = stamped(&self.cluster.name, &kept.unwrap_or_default());
        let landed = snapshots.store.land(&mut slot, claim, CLAIM_WAIT).await;
        if let Err(e) = landed {
            warn!(kind = %self.kind, room = name, error = %e, "cannot claim the room's checkpoint");
            return Err(RoomError::Unavailable);
        }
        let checkpoint = Checkpoint {
            node: self.cluster.name.clone(),
            store: snapshots.store.clone(),
            slot,
            every: snapshots.every,
            next: Instant::now() + snapshots.every,
            encode: self.codec.encode_snapshot,
        };
        match rooms.create_with(name, restored, Some(checkpoint), Some(shared())) {
            Ok(_) | Err(RoomError::Exists(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    async fn join_remote(
        &self,
        host: &Arc<str>,
        name: &str,
        member: ConnId,
        address: IpAddr,
        join: Bytes,
    ) -> Remote {
        let room: Arc<str> = Arc::from(name);
        let request = ClusterMessage::RoomJoin {
            kind: self.kind.clone(),
            room: room.clone(),
            node: self.cluster.name.clone(),
            member,
            address,
            join,
        };
        let Some(request) = request.encode() else {
            return Remote::Failed(RoomError::Unavailable);
        };
        let timeout = self.cluster.config.request_timeout;
        let asked = self
            .cluster
            .link
            .request(node_subject(host), request, timeout);
        let answer = match within(timeout, asked).await {
            Ok(answer) => JoinAnswer::decode(answer),
            Err(LinkError::NoResponders) => return Remote::Gone,
            Err(e) => {
                // The host may have seated it all the same: take the seat back.
                self.send_leave(host, &room, member);
                return match e {
                    LinkError::TimedOut => Remote::Silent,
                    _ => Remote::Failed(RoomError::Unavailable),
                };
            }
        };
        match answer {
            Ok(JoinAnswer::Joined) => Remote::Joined,
            Ok(JoinAnswer::NotHere) => Remote::NotHere,
            Ok(JoinAnswer::Failed(e)) => Remote::Failed(e),
            Err(_) => {
                self.cluster.count_malformed();
                Remote::Failed(RoomError::Unavailable)
            }
        }
    }

    /// A message of this node's member of `room`, to the room wherever it runs.
    pub(crate) async fn send_input(
        &self,
        host: &HostCell,
        room: &Arc<str>,
        member: ConnId,
        message: R::Message,
    ) -> Result<(), RoomError> {
        let now = host.borrow().clone();
        let host = match now {
            Some(host) => host,
            None => {
                // Being joined again elsewhere: sent once that is done.
                let mut moved = host.subscribe();
                let moving = LOOKUPS as u32 * self.cluster.config.request_timeout;
                let settled = tokio::time::timeout(moving, moved.wait_for(Option::is_some)).await;
                match settled {
                    Ok(Ok(host)) => host.clone().unwrap_or_else(|| self.cluster.name.clone()),
                    _ => return Err(RoomError::Unavailable),
                }
            }
        };
        if host == self.cluster.name {
            // Joined again here after its room's node went.
            let send = lock(&self.seats)
                .get(&(room.clone(), host, member))
                .map(|seat| seat.send_later(message));
            return match send {
                Some(send) => send.await,
                None => Err(RoomError::Closed),
            };
        }
        let message = ClusterMessage::RoomInput {
            kind: self.kind.clone(),
            room: room.clone(),
            node: self.cluster.name.clone(),
            member,
            message: (self.codec.encode_message)(&message),
        };
        self.cluster.send(Target::Node(host), message);
        Ok(())
    }

    /// This node's member of `room` left (its membership was dropped).
    pub(crate) fn left_remote(&self, host: &HostCell, room: &Arc<str>, member: ConnId) {
        lock(&self.away).remove(&(member, room.clone()));
        // Being joined again elsewhere (`None`): that seat is given back once made.
        let Some(host) = host.borrow().clone() else {
            return;
        };
        if host == self.cluster.name {
            let seat = lock(&self.seats).remove(&(room.clone(), host, member));
            drop(seat);
        } else {
            self.send_leave(&host, room, member);
        }
    }

    /// A leave is never dropped (a lost one would keep the seat on the host).
    fn send_leave(&self, host: &Arc<str>, room: &Arc<str>, member: ConnId) {
        let message = ClusterMessage::RoomLeave {
            kind: self.kind.clone(),
            room: room.clone(),
            node: self.cluster.name.clone(),
            member,
        };
        self.cluster
            .send_or_keep(Target::Node(host.clone()), message);
    }

    /// A room of this registry stopped: its remote members' seats go, and its
    /// directory key is given back.
    pub(crate) fn stopped(self: &Arc<Self>, name: &Arc<str>) {
        drop(self.take_seats(|(room, _, _)| room == name));
        let revision = {
            let mut hosted = lock(&self.hosted);
            match hosted.get(name) {
                Some(Hosting::Held(revision)) => {
                    let revision = *revision;
                    hosted.insert(name.clone(), Hosting::Releasing);
                    revision
                }
                _ => return,
            }
        };
        let shared = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let cluster = &shared.cluster;
            let delete = cluster
                .link
                .kv_delete(ROOMS_BUCKET, shared.key(&name), Some(revision));
            // Not deleted (cut off, or another node holds it now): the key stays,
            // and a join finds it this node's again, or its node gone.
            let _ = within(cluster.config.request_timeout, delete).await;
            {
                let mut hosted = lock(&shared.hosted);
                if matches!(hosted.get(&name), Some(Hosting::Releasing)) {
                    hosted.remove(&name);
                }
            }
            shared.released.notify_waiters();
        });
    }

    /// Runs the room `name` for a join from another node, if this node is its host:
    /// it holds it, or the directory names it. `false`: the joiner looks again.
    async fn host(&self, rooms: &Rooms<R>, name: &str) -> bool {
        if self.holds(name) {
            return true;
        }
        let get = self.cluster.link.kv_get(ROOMS_BUCKET, self.key(name));
        let Ok(Some((value, revision))) = within(self.cluster.config.request_timeout, get).await
        else {
            return false;
        };
        if RoomHost::decode(&value).is_none_or(|host| host.node != self.cluster.name) {
            return false;
        }
        self.own_again(rooms, name, revision).await.unwrap_or(false)
    }

    async fn host_join(
        self: Arc<Self>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        address: IpAddr,
        join: Bytes,
    ) -> JoinAnswer {
        let Some(join) = guarded("decode_join", || (self.codec.decode_join)(join)) else {
            let refusal = Refusal::new(Status::BAD_REQUEST, "the join could not be read");
            return JoinAnswer::Failed(RoomError::Refused(refusal));
        };
        let rooms = match self.rooms() {
            Ok(rooms) => rooms,
            Err(e) => return JoinAnswer::Failed(e),
        };
        if !self.host(&rooms, &room).await {
            return JoinAnswer::NotHere;
        }
        let away = OtherNode {
            node: node.clone(),
            cluster: self.cluster.clone(),
        };
        let sink = Arc::new(RemoteSink {
            away: away.clone(),
            member,
        });
        let joined = rooms
            .join_running(
                &room,
                member,
                sink,
                address,
                join,
                Some(away),
                MemberState::default(),
            )
            .await;
        match joined {
            Ok(membership) => {
                lock(&self.seats).insert((room, node, member), membership);
                JoinAnswer::Joined
            }
            Err(RoomError::Closed) => JoinAnswer::NotHere,
            Err(e) => JoinAnswer::Failed(e),
        }
    }

    /// This node's member of `room` sat in a room on a node that is gone: it is told
    /// the room restarted, and joined again where the room is made next (here, or on
    /// the node that took it over first); if that fails it is kicked `room_closed`.
    async fn rejoin(self: Arc<Self>, member: ConnId, room: Arc<str>, seat: SeatAway<R>) {
        let notice = Message::Push {
            route: ROUTE_ROOM_RESTARTED,
            payload: Bytes::copy_from_slice(room.as_bytes()),
        }
        .to_frame();
        seat.host.send_replace(None);
        seat.sink.deliver_frame(notice);
        let placed = self
            .place(
                &room,
                member,
                &seat.sink,
                seat.address,
                seat.latest(),
                &seat.state,
            )
            .await;
        // The member may have left meanwhile: then the new seat is given back.
        let still = lock(&self.away)
            .get(&(member, room.clone()))
            .is_some_and(|now| Arc::ptr_eq(&now.host, &seat.host));
        match placed {
            Ok(Placed::Here(membership)) if still => {
                let name = self.cluster.name.clone();
                lock(&self.seats).insert((room, name.clone(), member), membership);
                seat.host.send_replace(Some(name));
            }
            Ok(Placed::There(host)) if still => {
                seat.host.send_replace(Some(host));
            }
            Ok(Placed::Here(membership)) => drop(membership),
            Ok(Placed::There(host)) => self.send_leave(&host, &room, member),
            Err(e) => {
                lock(&self.away).remove(&(member, room.clone()));
                warn!(kind = %self.kind, %room, error = %e, "cluster: cannot join a member again after its room's node went");
                let text = format!("room {room} closed: its node is gone");
                seat.sink.kick(KickReason::ROOM_CLOSED, text);
            }
        }
    }
}

impl<R: Room> SharedKind for Shared<R> {
    fn join(
        self: Arc<Self>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        address: IpAddr,
        join: Bytes,
    ) -> BoxFuture<'static, Bytes> {
        async move {
            self.host_join(room, node, member, address, join)
                .await
                .encode()
        }
        .boxed()
    }

    fn input(
        self: Arc<Self>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        message: Bytes,
    ) -> BoxFuture<'static, ()> {
        async move {
            let decoded = guarded("decode_message", || (self.codec.decode_message)(message));
            let Some(message) = decoded else {
                self.cluster.count_malformed();
                return;
            };
            // Sent while the seat is held here: the room answers in its own time.
            let send = lock(&self.seats)
                .get(&(room, node, member))
                .map(|seat| seat.send_later(message));
            // None: it left, or its room stopped.
            if let Some(send) = send {
                let _ = send.await;
            }
        }
        .boxed()
    }

    fn leave(&self, room: &str, node: &str, member: ConnId) {
        let key: SeatKey = (Arc::from(room), Arc::from(node), member);
        let seat = lock(&self.seats).remove(&key);
        drop(seat); // leaves the room
    }

    fn member_states(&self, room: &str, states: Vec<(ConnId, Bytes)>) {
        let room: Arc<str> = Arc::from(room);
        let away = lock(&self.away);
        for (member, state) in states {
            let Some(seat) = away.get(&(member, room.clone())) else {
                continue; // it left meanwhile
            };
            match guarded("decode_join", || (self.codec.decode_join)(state)) {
                Some(state) => *lock(&seat.state) = Some(state),
                None => self.cluster.count_malformed(),
            }
        }
    }

    fn adopt(self: Arc<Self>, room: Arc<str>, revision: u64) {
        let Ok(rooms) = self.rooms() else {
            return;
        };
        if !rooms.run_empty() {
            return;
        }
        tokio::spawn(async move {
            let taken = self.claim(&room, Some(revision)).await.unwrap_or(false)
                && self.start(&rooms, &room, true).await.unwrap_or(false);
            if taken {
                info!(kind = %self.kind, room = %room, "cluster: took over a room whose node is gone");
            }
        });
    }

    fn node_gone(self: Arc<Self>, node: &str) {
        drop(self.take_seats(|(_, n, _)| &**n == node));
        let moved: Vec<(AwayKey, SeatAway<R>)> = lock(&self.away)
            .iter()
            .filter(|(_, seat)| seat.host.borrow().as_deref() == Some(node))
            .map(|(key, seat)| (key.clone(), seat.clone()))
            .collect();
        for ((member, room), seat) in moved {
            tokio::spawn(self.clone().rejoin(member, room, seat));
        }
    }
}

/// The host's answer to [`ClusterMessage::RoomJoin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinAnswer {
    Joined,
    /// The room refused, or could not take the member.
    Failed(RoomError),
    /// The host does not hold the room (any more): look it up again.
    NotHere,
}

const JOINED: u8 = 1;
const NOT_HERE: u8 = 2;
const REFUSED: u8 = 3;
const FULL: u8 = 4;
const ADDRESS_SHARE_FULL: u8 = 5;
const ALREADY_MEMBER: u8 = 6;
const UNAVAILABLE: u8 = 7;

impl JoinAnswer {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            JoinAnswer::Joined => out.put_u8(JOINED),
            JoinAnswer::NotHere => out.put_u8(NOT_HERE),
            JoinAnswer::Failed(RoomError::Refused(refusal)) => {
                out.put_u8(REFUSED);
                out.put_u16(refusal.status.0);
                out.put_slice(wire::truncate(&refusal.text, MAX_KICK_TEXT).as_bytes());
            }
            JoinAnswer::Failed(RoomError::Full) => out.put_u8(FULL),
            JoinAnswer::Failed(RoomError::AddressShareFull) => out.put_u8(ADDRESS_SHARE_FULL),
            JoinAnswer::Failed(RoomError::AlreadyMember) => out.put_u8(ALREADY_MEMBER),
            JoinAnswer::Failed(_) => out.put_u8(UNAVAILABLE),
        }
        out.freeze()
    }

    pub(crate) fn decode(mut bytes: Bytes) -> Result<JoinAnswer, Malformed> {
        if bytes.is_empty() {
            return Err(Malformed::Empty);
        }
        let answer = match bytes.get_u8() {
            JOINED => JoinAnswer::Joined,
            NOT_HERE => JoinAnswer::NotHere,
            REFUSED => {
                if bytes.remaining() < 2 {
                    return Err(Malformed::Truncated);
                }
                let status = Status(bytes.get_u16());
                let text = wire::text(bytes)?;
                let refusal = Refusal::new(status, text);
                return Ok(JoinAnswer::Failed(RoomError::Refused(refusal)));
            }
            FULL => JoinAnswer::Failed(RoomError::Full),
            ADDRESS_SHARE_FULL => JoinAnswer::Failed(RoomError::AddressShareFull),
            ALREADY_MEMBER => JoinAnswer::Failed(RoomError::AlreadyMember),
            UNAVAILABLE => JoinAnswer::Failed(RoomError::Unavailable),
            other => return Err(Malformed::UnknownKind(other)),
        };
        if !bytes.is_empty() {
            return Err(Malformed::Trailing(bytes.len()));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_checkpoint_is_stamped_with_its_node_and_read_back_without_it(
            node in "[a-z0-9]{1,20}",
            other in "[A-Z]{1,20}",
            snapshot in proptest::collection::vec(any::<u8>(), 0..60),
            garbage in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let stored = stamped(&node, &snapshot);
            let back = unstamped(stored.clone());
            prop_assert_eq!(back.as_deref(), (!snapshot.is_empty()).then_some(&snapshot[..]));
            // Another node's checkpoint of the same snapshot is other bytes.
            prop_assert_ne!(stamped(&other, &snapshot), stored);
            let _ = unstamped(Bytes::from(garbage));
        }

        #[test]
        fn join_answers_decode_to_themselves_and_arbitrary_bytes_never_panic(
            status in any::<u16>(),
            text in "\\PC{0,100}",
            bytes in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let refused = RoomError::Refused(Refusal::new(Status(status), text));
            for answer in [
                JoinAnswer::Joined,
                JoinAnswer::NotHere,
                JoinAnswer::Failed(refused),
                JoinAnswer::Failed(RoomError::Full),
                JoinAnswer::Failed(RoomError::AddressShareFull),
                JoinAnswer::Failed(RoomError::AlreadyMember),
                JoinAnswer::Failed(RoomError::Unavailable),
            ] {
                prop_assert_eq!(JoinAnswer::decode(answer.encode()), Ok(answer));
            }
            let _ = JoinAnswer::decode(Bytes::from(bytes));
        }
    }
}
