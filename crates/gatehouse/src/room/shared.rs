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
//!   to the host through the outbox; what it reads as its state is what it joined
//!   with (positions and the like cross by message, not through a shared cell).
//! - The host's side ([`SharedKind`], called by the cluster task): a remote member is
//!   a seat whose sink sends its pushes to its node, a room broadcast being one
//!   message per node however many members are there; its messages reach the room in
//!   the order sent.
//! - A node gone (dead, or left): its members leave the rooms here, and this node's
//!   members of rooms it hosted are kicked `room_closed` (as when a room closes).
//!   Rooms are not yet adopted from a snapshot: the next join makes the room afresh.
//! - A room that stops gives its directory key back (a delete of that revision), so
//!   that the next join anywhere makes it again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use gatehouse_protocol::KickReason;
use tracing::{info, warn};

use super::registry::{Membership, Registry, Rooms};
use super::{Refusal, Room, RoomError};
use crate::cluster::wire::{
    self, node_subject, room_key, ClusterMessage, Malformed, RoomHost, MAX_KICK_TEXT, ROOMS_BUCKET,
};
use crate::cluster::{within, ClusterNode, LinkError, SharedKind, Target};
use crate::connection::ConnId;
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
}

/// A [`RoomCodec`]'s functions, kept by a registry whose type is only a [`Room`].
struct Codec<R: Room> {
    encode_join: fn(&R::Join) -> Bytes,
    decode_join: fn(Bytes) -> Option<R::Join>,
    encode_message: fn(&R::Message) -> Bytes,
    decode_message: fn(Bytes) -> Option<R::Message>,
}

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

/// A seat of this node's connection in a room on another node: the host, and the
/// member's own sink.
type SeatAway = (Arc<str>, Arc<dyn MemberSink>);

/// A member of a room on another node, as the host's room keeps it: its node (for
/// a broadcast, one message per node) and the way there.
#[derive(Clone)]
pub(crate) struct OtherNode {
    pub(crate) node: Arc<str>,
    pub(crate) cluster: Arc<ClusterNode>,
}

impl OtherNode {
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
    /// The host's side: remote members' seats in the rooms here.
    seats: Mutex<HashMap<SeatKey, Membership<R>>>,
    /// The joiner's side: this node's members of rooms on other nodes, by connection
    /// and room, with the host and the member's own sink (to tell it the room closed).
    away: Mutex<HashMap<(ConnId, Arc<str>), SeatAway>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of a join sent to a host.
enum Remote<R: Room> {
    Joined(Membership<R>),
    /// The host does not hold the room: look again.
    NotHere,
    /// Nobody answers for the host.
    Gone,
    Failed(RoomError),
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
            },
            rooms: Arc::downgrade(rooms.registry()),
            hosted: Mutex::default(),
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
        let rooms = self.rooms()?;
        let timeout = self.cluster.config.request_timeout;
        let link = &self.cluster.link;
        let key = self.key(name);
        for _ in 0..LOOKUPS {
            if self.holds(name) {
                return rooms
                    .join_here(name, member, sink, address, join, None)
                    .await;
            }
            let found = within(timeout, link.kv_get(ROOMS_BUCKET, key.clone()))
                .await
                .map_err(|_| RoomError::Unavailable)?;
            let (host, revision) = match found {
                None => {
                    if !self.claim(name, None).await? {
                        continue;
                    }
                    return rooms
                        .join_here(name, member, sink, address, join, None)
                        .await;
                }
                Some((value, revision)) => match RoomHost::decode(&value) {
                    Some(host) => (host.node, revision),
                    None => {
                        self.cluster.count_malformed();
                        warn!(kind = %self.kind, room = name, "cluster: an unreadable room directory entry");
                        return Err(RoomError::Unavailable);
                    }
                },
            };
            if host == self.cluster.name {
                if self.releasing(name) {
                    // Its delete is on its way: the next look finds it gone.
                    tokio::task::yield_now().await;
                    continue;
                }
                lock(&self.hosted).insert(Arc::from(name), Hosting::Held(revision));
                return rooms
                    .join_here(name, member, sink, address, join, None)
                    .await;
            }
            match self
                .join_remote(&host, name, member, &sink, address, &join)
                .await
            {
                Remote::Joined(membership) => return Ok(membership),
                Remote::NotHere => continue,
                Remote::Gone if !self.cluster.is_alive(&host) => {
                    // Its host is gone: this node makes the room again, unless another
                    // did first.
                    if self.claim(name, Some(revision)).await? {
                        info!(kind = %self.kind, room = name, from = %host, "cluster: took over a room whose node is gone");
                        return rooms
                            .join_here(name, member, sink, address, join, None)
                            .await;
                    }
                }
                Remote::Gone => return Err(RoomError::Unavailable),
                Remote::Failed(e) => return Err(e),
            }
        }
        Err(RoomError::Unavailable)
    }

    /// Whether this node holds `name` and runs it.
    fn holds(&self, name: &str) -> bool {
        matches!(lock(&self.hosted).get(name), Some(Hosting::Held(_)))
            && self.rooms().is_ok_and(|rooms| rooms.get(name).is_some())
    }

    fn releasing(&self, name: &str) -> bool {
        matches!(lock(&self.hosted).get(name), Some(Hosting::Releasing))
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

    async fn join_remote(
        self: &Arc<Self>,
        host: &Arc<str>,
        name: &str,
        member: ConnId,
        sink: &Arc<dyn MemberSink>,
        address: IpAddr,
        join: &R::Join,
    ) -> Remote<R> {
        let room: Arc<str> = Arc::from(name);
        let request = ClusterMessage::RoomJoin {
            kind: self.kind.clone(),
            room: room.clone(),
            node: self.cluster.name.clone(),
            member,
            address,
            join: (self.codec.encode_join)(join),
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
            Err(_) => {
                // The host may have seated it all the same: take the seat back.
                self.send_leave(host, &room, member);
                return Remote::Failed(RoomError::Unavailable);
            }
        };
        match answer {
            Ok(JoinAnswer::Joined) => {
                let seat = (host.clone(), sink.clone());
                lock(&self.away).insert((member, room.clone()), seat);
                Remote::Joined(Membership::remote(
                    self.clone(),
                    host.clone(),
                    room,
                    member,
                    join.clone(),
                ))
            }
            Ok(JoinAnswer::NotHere) => Remote::NotHere,
            Ok(JoinAnswer::Failed(e)) => Remote::Failed(e),
            Err(_) => {
                self.cluster.count_malformed();
                Remote::Failed(RoomError::Unavailable)
            }
        }
    }

    /// A remote member's message, to its host.
    pub(crate) fn send_input(
        &self,
        host: &Arc<str>,
        room: &Arc<str>,
        member: ConnId,
        message: &R::Message,
    ) {
        let message = ClusterMessage::RoomInput {
            kind: self.kind.clone(),
            room: room.clone(),
            node: self.cluster.name.clone(),
            member,
            message: (self.codec.encode_message)(message),
        };
        self.cluster.send(Target::Node(host.clone()), message);
    }

    /// A remote member leaves (its membership was dropped).
    pub(crate) fn left_remote(&self, host: &Arc<str>, room: &Arc<str>, member: ConnId) {
        lock(&self.away).remove(&(member, room.clone()));
        self.send_leave(host, room, member);
    }

    fn send_leave(&self, host: &Arc<str>, room: &Arc<str>, member: ConnId) {
        let message = ClusterMessage::RoomLeave {
            kind: self.kind.clone(),
            room: room.clone(),
            node: self.cluster.name.clone(),
            member,
        };
        self.cluster.send(Target::Node(host.clone()), message);
    }

    /// A room of this registry stopped: its remote members' seats go, and its
    /// directory key is given back.
    pub(crate) fn stopped(self: &Arc<Self>, name: &Arc<str>) {
        lock(&self.seats).retain(|(room, _, _), _| room != name);
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
            let mut hosted = lock(&shared.hosted);
            if matches!(hosted.get(&name), Some(Hosting::Releasing)) {
                hosted.remove(&name);
            }
        });
    }

    /// Whether this node is `name`'s host: it holds it, or the directory names it
    /// (a room that stopped and is joined again). `false`: the joiner looks again.
    async fn hosts(&self, name: &Arc<str>) -> bool {
        match lock(&self.hosted).get(name) {
            Some(Hosting::Held(_)) => return true,
            Some(Hosting::Releasing) => return false,
            None => {}
        }
        let get = self.cluster.link.kv_get(ROOMS_BUCKET, self.key(name));
        let Ok(Some((value, revision))) = within(self.cluster.config.request_timeout, get).await
        else {
            return false;
        };
        if RoomHost::decode(&value).is_none_or(|host| host.node != self.cluster.name) {
            return false;
        }
        lock(&self.hosted)
            .entry(name.clone())
            .or_insert(Hosting::Held(revision));
        true
    }

    async fn host_join(
        self: Arc<Self>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        address: IpAddr,
        join: Bytes,
    ) -> JoinAnswer {
        let Some(join) = (self.codec.decode_join)(join) else {
            let refusal = Refusal::new(Status::BAD_REQUEST, "the join could not be read");
            return JoinAnswer::Failed(RoomError::Refused(refusal));
        };
        if !self.hosts(&room).await {
            return JoinAnswer::NotHere;
        }
        let rooms = match self.rooms() {
            Ok(rooms) => rooms,
            Err(e) => return JoinAnswer::Failed(e),
        };
        let away = OtherNode {
            node: node.clone(),
            cluster: self.cluster.clone(),
        };
        let sink = Arc::new(RemoteSink {
            away: away.clone(),
            member,
        });
        let joined = rooms
            .join_here(&room, member, sink, address, join, Some(away))
            .await;
        match joined {
            Ok(membership) => {
                lock(&self.seats).insert((room, node, member), membership);
                JoinAnswer::Joined
            }
            Err(e) => JoinAnswer::Failed(e),
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
            let Some(message) = (self.codec.decode_message)(message) else {
                self.cluster.count_malformed();
                return;
            };
            // Sent while the seat is held here: the room answers in its own time.
            let send = {
                let seats = lock(&self.seats);
                let Some(membership) = seats.get(&(room, node, member)) else {
                    return; // it left, or its room stopped
                };
                membership.send_later(message)
            };
            let _ = send.await;
        }
        .boxed()
    }

    fn leave(&self, room: &str, node: &str, member: ConnId) {
        let key: SeatKey = (Arc::from(room), Arc::from(node), member);
        let seat = lock(&self.seats).remove(&key);
        drop(seat); // leaves the room
    }

    fn node_gone(&self, node: &str) {
        let gone: Vec<Membership<R>> = {
            let mut seats = lock(&self.seats);
            let keys: Vec<SeatKey> = seats
                .keys()
                .filter(|(_, n, _)| &**n == node)
                .cloned()
                .collect();
            keys.iter().filter_map(|key| seats.remove(key)).collect()
        };
        drop(gone);
        let closed: Vec<Arc<dyn MemberSink>> = {
            let mut away = lock(&self.away);
            let keys: Vec<(ConnId, Arc<str>)> = away
                .iter()
                .filter(|(_, (host, _))| &**host == node)
                .map(|(key, _)| key.clone())
                .collect();
            keys.iter()
                .filter_map(|key| away.remove(key))
                .map(|(_, sink)| sink)
                .collect()
        };
        for sink in closed {
            let text = format!("the room's node {node} is gone");
            sink.kick(KickReason::ROOM_CLOSED, text);
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
