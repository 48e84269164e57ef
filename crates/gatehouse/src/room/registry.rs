//! The room supervisor of one room type ([`Rooms`]): creates rooms, finds them by
//! name, and stops them all at shutdown; and the handles to one room
//! ([`RoomHandle`]) and to one connection's place in it ([`Membership`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use gatehouse_protocol::KickReason;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::shared::{Checkpoint, HostCell, OtherNode, RoomCodec, Shared, SharedRoom, Snapshots};
use super::stats::{LatenessHistogram, LatenessMark, RoomCounters, RoomStats, TickLateness};
use super::task::{Input, Leave, MemberState, RoomTask};
use super::{Origin, Room, RoomError, RoomOptions};
use crate::cluster::{ClusterNode, SharedKind};
use crate::config::LimitsConfig;
use crate::connection::ConnId;
use crate::limits::counted_as;
use crate::mailbox::MemberSink;
use crate::service::Context;
use gatehouse_store::{SaveWriter, Store};

/// The rooms of one type, and their supervisor. Cheap to clone; usable from any
/// task. Hand it to the server ([`Server::with_rooms`](crate::Server::with_rooms)),
/// which gives its rooms the server's frame limit, reports their metrics, and shuts
/// them down once the last connection has gone (every member has left by then),
/// before it closes the store.
pub struct Rooms<R: Room> {
    registry: Arc<Registry<R>>,
}

impl<R: Room> Clone for Rooms<R> {
    fn clone(&self) -> Self {
        Rooms {
            registry: self.registry.clone(),
        }
    }
}

pub(super) struct Registry<R: Room> {
    config: Arc<R::Config>,
    options: Arc<RoomOptions>,
    /// The largest push a room sends: the server's `limits.max_frame_bytes`, set by
    /// [`Server::with_rooms`](crate::Server::with_rooms) (the default limit until then).
    max_frame: AtomicUsize,
    rooms: Mutex<HashMap<Arc<str>, RoomHandle<R>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    lateness: Arc<LatenessHistogram>,
    next_id: AtomicU64,
    seats: Arc<Seats>,
    /// The registry's part in a cluster, once it is shared with one.
    shared: OnceLock<Arc<Shared<R>>>,
    /// Where a shared room's snapshots are checkpointed, and how often.
    pub(super) snapshots: OnceLock<Snapshots>,
}

/// Which room each connection has a membership of, for operators
/// ([`Rooms::room_of`]): the room's id, the membership's serial and the room's name.
type Seats = Mutex<HashMap<ConnId, (u64, u64, Arc<str>)>>;

impl<R: Room> Registry<R> {
    fn rooms(&self) -> MutexGuard<'_, HashMap<Arc<str>, RoomHandle<R>>> {
        // No user code runs under this lock.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R: Room> Rooms<R> {
    /// A registry making its rooms with `config`, run by `options`.
    pub fn new(config: R::Config, options: RoomOptions) -> Result<Self, RoomError> {
        options.validate()?;
        Ok(Rooms {
            registry: Arc::new(Registry {
                config: Arc::new(config),
                options: Arc::new(options),
                max_frame: AtomicUsize::new(LimitsConfig::default().max_frame_bytes),
                rooms: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                lateness: Arc::new(LatenessHistogram::new()),
                next_id: AtomicU64::new(1),
                seats: Arc::default(),
                shared: OnceLock::new(),
                snapshots: OnceLock::new(),
            }),
        })
    }

    pub(super) fn registry(&self) -> &Arc<Registry<R>> {
        &self.registry
    }

    /// Whether its rooms run on without members ([`RoomOptions::close_when_empty`]
    /// off).
    pub(super) fn run_empty(&self) -> bool {
        !self.registry.options.close_when_empty
    }

    pub(super) fn from_registry(registry: Arc<Registry<R>>) -> Self {
        Rooms { registry }
    }

    /// Shares these rooms with the cluster `cluster` is a node of, as type `kind`:
    /// from now on a join finds its room wherever it runs.
    pub(crate) fn share(&self, kind: &str, cluster: Arc<ClusterNode>) -> Arc<dyn SharedKind>
    where
        R: RoomCodec,
    {
        let shared = self
            .registry
            .shared
            .get_or_init(|| Shared::new(kind, cluster, self));
        shared.clone()
    }

    /// Checkpoints the snapshots of these rooms, once shared by a cluster
    /// ([`Server::with_shared_rooms`](crate::Server::with_shared_rooms)), through
    /// `writer` every `every` (under the key `room/<kind>/<name>`, encoded by the
    /// type's [`RoomCodec::encode_snapshot`]): a room whose node is gone is made
    /// again, on the node that takes it over, from its last checkpoint. Each node that
    /// makes a room first lands a claim on its key, so a node cut off from the cluster
    /// that still runs the room has its next checkpoint refused, and closes it.
    pub fn checkpoint_to<S: Store>(&self, writer: &SaveWriter<S>, every: Duration)
    where
        R: RoomCodec,
    {
        let snapshots = Snapshots {
            store: Arc::new(writer.clone()),
            every,
        };
        let _ = self.registry.snapshots.set(snapshots);
    }

    /// Creates and starts a room (inside a tokio runtime).
    pub fn create(&self, name: &str) -> Result<RoomHandle<R>, RoomError> {
        self.create_with(name, None, None, None)
    }

    /// Creates and starts a room, made from `restored` and checkpointed by
    /// `checkpoint` (a shared room).
    pub(super) fn create_with(
        &self,
        name: &str,
        restored: Option<R::Snapshot>,
        checkpoint: Option<Checkpoint<R>>,
        shared: Option<SharedRoom<R>>,
    ) -> Result<RoomHandle<R>, RoomError> {
        let registry = &self.registry;
        let mut rooms = registry.rooms();
        if registry.shutdown.is_cancelled() {
            return Err(RoomError::ShutDown);
        }
        if rooms.get(name).is_some_and(|room| !room.is_closed()) {
            return Err(RoomError::Exists(name.to_owned()));
        }
        rooms.retain(|_, room| !room.is_closed());
        if rooms.len() >= registry.options.max_rooms {
            return Err(RoomError::TooManyRooms);
        }
        let handle = self.start(name, restored, checkpoint, shared);
        rooms.insert(handle.link.name.clone(), handle.clone());
        Ok(handle)
    }

    fn start(
        &self,
        name: &str,
        restored: Option<R::Snapshot>,
        checkpoint: Option<Checkpoint<R>>,
        shared: Option<SharedRoom<R>>,
    ) -> RoomHandle<R> {
        let registry = &self.registry;
        let name: Arc<str> = Arc::from(name);
        let (sender, inputs) = mpsc::channel(registry.options.mailbox);
        let (leaves_tx, leaves) = mpsc::unbounded_channel();
        let stop = registry.shutdown.child_token();
        let counters = Arc::new(RoomCounters::default());
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(RoomLink {
            id,
            name: name.clone(),
            inputs: sender.clone(),
            leaves: leaves_tx,
            stop: stop.clone(),
            counters: counters.clone(),
            member_queue: registry.options.member_queue,
            serials: AtomicU64::new(1),
            seats: registry.seats.clone(),
        });
        if let Some(checkpoint) = &checkpoint {
            // A claim elsewhere won: this copy of the room is a duplicate.
            let stop = stop.clone();
            checkpoint.slot.on_lost(move || stop.cancel());
        }
        let task = RoomTask::<R> {
            name: name.clone(),
            config: registry.config.clone(),
            options: registry.options.clone(),
            max_frame: registry.max_frame.load(Ordering::Relaxed),
            inputs,
            sender,
            leaves,
            stop,
            shutdown: registry.shutdown.clone(),
            counters,
            lateness: registry.lateness.clone(),
            members: HashMap::new(),
            had_members: false,
            snapshot: None,
            restored,
            checkpoint,
            shared,
            life: 0,
        };
        let weak: Weak<Registry<R>> = Arc::downgrade(registry);
        registry.tracker.spawn(async move {
            task.run().await;
            // Forget the room, unless a newer room of the same name took its place.
            if let Some(registry) = weak.upgrade() {
                let mut rooms = registry.rooms();
                if rooms.get(&name).is_some_and(|room| room.link.id == id) {
                    rooms.remove(&name);
                    drop(rooms);
                    if let Some(shared) = registry.shared.get() {
                        shared.stopped(&name);
                    }
                }
            }
        });
        RoomHandle { link }
    }

    /// Rooms made from now on push at most `max_frame` bytes (the server's limit).
    pub(crate) fn set_max_frame(&self, max_frame: usize) {
        self.registry.max_frame.store(max_frame, Ordering::Relaxed);
    }

    /// The room called `name`, if it runs.
    pub fn get(&self, name: &str) -> Option<RoomHandle<R>> {
        self.registry
            .rooms()
            .get(name)
            .filter(|room| !room.is_closed())
            .cloned()
    }

    /// The room called `name`, created if there is none.
    pub fn get_or_create(&self, name: &str) -> Result<RoomHandle<R>, RoomError> {
        match self.get(name) {
            Some(room) => Ok(room),
            None => match self.create(name) {
                Err(RoomError::Exists(_)) => self.get(name).ok_or(RoomError::Closed),
                created => created,
            },
        }
    }

    /// Joins `ctx`'s connection to the room called `name`, creating it if needed; a
    /// room that closes (empty) just as the join arrives is made again, once. Rooms
    /// shared by a cluster ([`Server::with_shared_rooms`](crate::Server::with_shared_rooms))
    /// are joined wherever they run, or made here if they run nowhere.
    pub async fn join<M: Send + 'static>(
        &self,
        name: &str,
        ctx: &Context<'_, M>,
        join: R::Join,
    ) -> Result<Membership<R>, RoomError> {
        let address = counted_as(ctx.peer().ip(), SEAT_SHARE_IPV6_PREFIX);
        let sink = ctx.member_sink();
        match self.registry.shared.get() {
            Some(shared) => shared.join(name, ctx.id(), sink, address, join).await,
            None => self.join_here(name, ctx.id(), sink, address, join).await,
        }
    }

    /// Joins `member` to the room `name` of this node, making it if needed (again,
    /// once, if it closes just as the join arrives).
    async fn join_here(
        &self,
        name: &str,
        member: ConnId,
        sink: Arc<dyn MemberSink>,
        address: IpAddr,
        join: R::Join,
    ) -> Result<Membership<R>, RoomError> {
        self.get_or_create(name)?;
        let state = MemberState::default();
        let first = self
            .join_running(
                name,
                member,
                sink.clone(),
                address,
                join.clone(),
                None,
                state,
            )
            .await;
        if !matches!(first, Err(RoomError::Closed)) {
            return first;
        }
        self.get_or_create(name)?;
        let state = MemberState::default();
        self.join_running(name, member, sink, address, join, None, state)
            .await
    }

    /// Joins `member` to the room `name` of this node if it runs ([`RoomError::Closed`]
    /// if not: a shared room is made only by [`Shared`]), its state kept in `state`.
    #[allow(clippy::too_many_arguments)] // one call per way a shared room seats a member
    pub(super) async fn join_running(
        &self,
        name: &str,
        member: ConnId,
        sink: Arc<dyn MemberSink>,
        address: IpAddr,
        join: R::Join,
        away: Option<OtherNode>,
        state: MemberState<R::Join>,
    ) -> Result<Membership<R>, RoomError> {
        let room = self.get(name).ok_or(RoomError::Closed)?;
        room.join_sink(member, sink, address, join, away, state)
            .await
    }

    /// Every running room's counters, by name.
    pub fn list(&self) -> Vec<RoomStats> {
        let mut list: Vec<RoomStats> = self
            .registry
            .rooms()
            .values()
            .filter(|room| !room.is_closed())
            .map(RoomHandle::stats)
            .collect();
        list.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// How many rooms run.
    pub fn len(&self) -> usize {
        let rooms = self.registry.rooms();
        rooms.values().filter(|room| !room.is_closed()).count()
    }

    /// Whether no room runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The room `member`'s connection has a membership of, if any (a connection in
    /// two rooms of this type: the latest).
    pub fn room_of(&self, member: ConnId) -> Option<String> {
        lock(&self.registry.seats)
            .get(&member)
            .map(|(_, _, name)| name.to_string())
    }

    /// Every tick's lateness and every room's crashes, for the metrics.
    #[cfg(feature = "metrics")]
    pub(super) fn lateness_histogram(&self) -> &LatenessHistogram {
        &self.registry.lateness
    }

    /// The lateness of every tick of every room so far.
    pub fn lateness(&self) -> TickLateness {
        self.registry.lateness.read()
    }

    /// The lateness of the ticks since `mark` (of every room), moving the mark to now:
    /// a measured window, as a benchmark wants it. A fresh mark is the start.
    pub fn lateness_window(&self, mark: &mut LatenessMark) -> TickLateness {
        self.registry.lateness.read_window(mark)
    }

    /// Stops every room (each runs its `stopped` hook) and waits for them, at most
    /// `timeout`; `Err` with how many had not stopped then. No room can be created
    /// afterwards.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), usize> {
        self.registry.shutdown.cancel();
        self.registry.tracker.close();
        match tokio::time::timeout(timeout, self.registry.tracker.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.registry.tracker.len()),
        }
    }
}

/// A member's seats count against its address's share
/// ([`RoomOptions::max_members_per_address`]) by IPv4 address or IPv6 /64, as the
/// server's per-IP cap counts by default.
const SEAT_SHARE_IPV6_PREFIX: u8 = 64;

/// What every handle to one room shares.
struct RoomLink<R: Room> {
    /// Unique in the registry, even across rooms of the same name.
    id: u64,
    name: Arc<str>,
    inputs: mpsc::Sender<Input<R>>,
    leaves: mpsc::UnboundedSender<Leave>,
    stop: CancellationToken,
    counters: Arc<RoomCounters>,
    member_queue: u32,
    serials: AtomicU64,
    seats: Arc<Seats>,
}

/// A handle to one room: join it, send it messages, close it. Cheap to clone.
pub struct RoomHandle<R: Room> {
    link: Arc<RoomLink<R>>,
}

impl<R: Room> Clone for RoomHandle<R> {
    fn clone(&self) -> Self {
        RoomHandle {
            link: self.link.clone(),
        }
    }
}

impl<R: Room> RoomHandle<R> {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// Whether the room has stopped (or been asked to).
    pub fn is_closed(&self) -> bool {
        self.link.stop.is_cancelled() || self.link.inputs.is_closed()
    }

    /// The room's counters now.
    pub fn stats(&self) -> RoomStats {
        self.link.counters.read(&self.link.name)
    }

    /// Joins `ctx`'s connection to the room with `join`, waiting for the room's
    /// answer. The membership leaves when dropped.
    pub async fn join<M: Send + 'static>(
        &self,
        ctx: &Context<'_, M>,
        join: R::Join,
    ) -> Result<Membership<R>, RoomError> {
        let address = counted_as(ctx.peer().ip(), SEAT_SHARE_IPV6_PREFIX);
        let state = MemberState::default();
        self.join_sink(ctx.id(), ctx.member_sink(), address, join, None, state)
            .await
    }

    async fn join_sink(
        &self,
        member: ConnId,
        sink: Arc<dyn MemberSink>,
        address: IpAddr,
        join: R::Join,
        away: Option<OtherNode>,
        state: MemberState<R::Join>,
    ) -> Result<Membership<R>, RoomError> {
        let serial = self.link.serials.fetch_add(1, Ordering::Relaxed);
        // Made first, so that a join whose caller is dropped mid-way still leaves.
        let membership = Membership {
            seat: Seat::Here(Here {
                link: self.link.clone(),
                member,
                serial,
                queued: Arc::new(AtomicU32::new(0)),
                sink: sink.clone(),
                joined: join.clone(),
                state: state.clone(),
            }),
        };
        let (reply, answer) = oneshot::channel();
        let input = Input::Join {
            member,
            serial,
            sink,
            address,
            join,
            state,
            away,
            reply,
        };
        self.link
            .inputs
            .send(input)
            .await
            .map_err(|_| RoomError::Closed)?;
        answer.await.map_err(|_| RoomError::Closed)??;
        let seat = (self.link.id, serial, self.link.name.clone());
        lock(&self.link.seats).insert(member, seat);
        Ok(membership)
    }

    /// Sends the room a message from [`Origin::Server`], waiting for room in its
    /// mailbox.
    pub async fn send(&self, message: R::Message) -> Result<(), RoomError> {
        let input = Input::Message {
            from: Origin::Server,
            message,
            queued: None,
        };
        self.link
            .inputs
            .send(input)
            .await
            .map_err(|_| RoomError::Closed)
    }

    /// Stops the room: its `stopped` hook runs with
    /// [`StopReason::Closed`](super::StopReason::Closed); members stay connected.
    pub fn close(&self) {
        self.link.stop.cancel();
    }
}

/// One connection's place in a room. Messages sent through it reach the room in
/// order; dropping it leaves the room. The room may run on another node of the
/// cluster (a shared room): then the messages and the leave cross to it.
pub struct Membership<R: Room> {
    seat: Seat<R>,
}

enum Seat<R: Room> {
    /// In a room of this node.
    Here(Here<R>),
    /// In a room on another node.
    There(There<R>),
}

struct Here<R: Room> {
    link: Arc<RoomLink<R>>,
    member: ConnId,
    serial: u64,
    /// Messages sent and not yet handled by the room.
    queued: Arc<AtomicU32>,
    /// To kick the member's connection if it floods the room.
    sink: Arc<dyn MemberSink>,
    /// What it joined with, and its state as the room records it since.
    joined: R::Join,
    state: MemberState<R::Join>,
}

struct There<R: Room> {
    shared: Arc<Shared<R>>,
    host: HostCell,
    room: Arc<str>,
    member: ConnId,
    joined: R::Join,
    /// The state its room last recorded for it, sent from the room's node.
    state: MemberState<R::Join>,
}

impl<R: Room> Membership<R> {
    /// A seat in `room` on node `host`.
    pub(super) fn remote(
        shared: Arc<Shared<R>>,
        host: HostCell,
        room: Arc<str>,
        member: ConnId,
        joined: R::Join,
        state: MemberState<R::Join>,
    ) -> Self {
        Membership {
            seat: Seat::There(There {
                shared,
                host,
                room,
                member,
                joined,
                state,
            }),
        }
    }

    /// The member's state as its room last recorded it
    /// ([`RoomContext::set_member_state`](super::RoomContext::set_member_state)), or
    /// what it joined with: what its session saves. Read at once, without waiting
    /// for the room. Of a room on another node, as its last message from there said.
    pub fn state(&self) -> R::Join {
        let (state, joined) = match &self.seat {
            Seat::Here(here) => (&here.state, &here.joined),
            Seat::There(away) => (&away.state, &away.joined),
        };
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.clone().unwrap_or_else(|| joined.clone())
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        match &self.seat {
            Seat::Here(here) => &here.link.name,
            Seat::There(away) => &away.room,
        }
    }

    /// The node the room runs on, if the member joined it on another node of the
    /// cluster (after that node went, the one that took the room over: this one,
    /// possibly; `None` while the member is being joined there).
    pub fn host(&self) -> Option<Arc<str>> {
        match &self.seat {
            Seat::Here(_) => None,
            Seat::There(away) => away.host.borrow().clone(),
        }
    }

    /// A handle to the room, if it runs on this node.
    pub fn handle(&self) -> Option<RoomHandle<R>> {
        match &self.seat {
            Seat::Here(here) => Some(RoomHandle {
                link: here.link.clone(),
            }),
            Seat::There(_) => None,
        }
    }

    /// Sends the room a message from [`Origin::Member`]. With
    /// [`RoomOptions::member_queue`] messages already queued, it is a flood: the
    /// member's connection is kicked `dos` and [`RoomError::Flooded`] returned. To a
    /// room on another node it goes through the cluster's outbox at once (and its
    /// host applies the flood check).
    pub async fn send(&self, message: R::Message) -> Result<(), RoomError> {
        match &self.seat {
            Seat::Here(here) => here.send(message).await,
            Seat::There(away) => {
                let shared = &away.shared;
                shared
                    .send_input(&away.host, &away.room, away.member, message)
                    .await
            }
        }
    }

    /// As [`Membership::send`] to a room of this node, as a future that holds no
    /// borrow of the membership.
    pub(super) fn send_later(
        &self,
        message: R::Message,
    ) -> impl Future<Output = Result<(), RoomError>> + Send + 'static {
        let here = match &self.seat {
            Seat::Here(here) => Some((
                here.link.clone(),
                here.member,
                here.queued.clone(),
                here.sink.clone(),
            )),
            Seat::There(_) => None,
        };
        async move {
            let Some((link, member, queued, sink)) = here else {
                return Err(RoomError::Unavailable);
            };
            send_counted(&link, member, &queued, &sink, message).await
        }
    }
}

impl<R: Room> Here<R> {
    async fn send(&self, message: R::Message) -> Result<(), RoomError> {
        send_counted(&self.link, self.member, &self.queued, &self.sink, message).await
    }
}

/// A member's message into its room's mailbox, counted against its queue (see
/// [`Membership::send`]).
async fn send_counted<R: Room>(
    link: &RoomLink<R>,
    member: ConnId,
    queued: &Arc<AtomicU32>,
    sink: &Arc<dyn MemberSink>,
    message: R::Message,
) -> Result<(), RoomError> {
    if queued.fetch_add(1, Ordering::AcqRel) >= link.member_queue {
        queued.fetch_sub(1, Ordering::AcqRel);
        let text = format!(
            "more than {} messages queued at room {}",
            link.member_queue, link.name
        );
        sink.kick(KickReason::DOS, text);
        return Err(RoomError::Flooded);
    }
    // Counted back if the message never reaches the room (the room closed, or
    // this future was dropped while waiting for room in its mailbox).
    let unsent = Unsent(queued);
    let input = Input::Message {
        from: Origin::Member(member),
        message,
        queued: Some(queued.clone()),
    };
    link.inputs
        .send(input)
        .await
        .map_err(|_| RoomError::Closed)?;
    std::mem::forget(unsent); // the room counts it back when handled
    Ok(())
}

/// A queued message's count, taken back unless it was sent.
struct Unsent<'a>(&'a AtomicU32);

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<R: Room> Drop for Membership<R> {
    fn drop(&mut self) {
        let here = match &self.seat {
            Seat::Here(here) => here,
            Seat::There(away) => {
                away.shared.left_remote(&away.host, &away.room, away.member);
                return;
            }
        };
        let mut seats = lock(&here.link.seats);
        let this = |seat: &(u64, u64, Arc<str>)| (seat.0, seat.1) == (here.link.id, here.serial);
        if seats.get(&here.member).is_some_and(this) {
            seats.remove(&here.member);
        }
        drop(seats);
        // A stopped room has nobody left to tell.
        let _ = here.link.leaves.send(Leave {
            member: here.member,
            serial: here.serial,
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    use bytes::Bytes;

    use super::*;
    use crate::room::{Origin, Refusal, RoomContext};
    use crate::Status;

    struct Nobody;

    impl MemberSink for Nobody {
        fn deliver_frame(&self, _frame: Bytes) -> bool {
            true
        }
        fn kick(&self, _reason: KickReason, _text: String) {}
    }

    struct Empty;

    impl Room for Empty {
        type Config = ();
        type Join = ();
        type Message = ();
        type Snapshot = ();
        fn create(_: &str, _: &(), _: Option<()>) -> Self {
            Empty
        }
        fn join(
            &mut self,
            _: &mut RoomContext<'_, Self>,
            _: ConnId,
            _: &(),
        ) -> Result<(), Refusal> {
            Ok(())
        }
        fn leave(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId) {}
        fn message(&mut self, _: &mut RoomContext<'_, Self>, _: Origin, _: ()) {}
    }

    #[tokio::test]
    async fn a_join_given_up_before_the_room_took_it_leaves_no_ghost_member() {
        let options = RoomOptions {
            close_when_empty: false,
            ..RoomOptions::default()
        };
        let rooms = Rooms::<Empty>::new((), options).unwrap();
        let room = rooms.create("r").unwrap();
        // The join is queued (sent into the mailbox), then its caller is dropped
        // before the room answers: its leave goes first, down the side channel.
        {
            let mut joining = pin!(room.join_sink(
                ConnId(7),
                Arc::new(Nobody),
                HERE,
                (),
                None,
                Default::default()
            ));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(matches!(joining.as_mut().poll(&mut cx), Poll::Pending));
        }
        // A later join of another connection is answered after the room has seen both.
        let kept = room
            .join_sink(
                ConnId(8),
                Arc::new(Nobody),
                HERE,
                (),
                None,
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(room.stats().members, 1, "only the join that waited counts");
        drop(kept);
        rooms.shutdown(Duration::from_secs(5)).await.unwrap();
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn one_address_takes_at_most_its_share_of_a_rooms_seats() {
        let options = RoomOptions {
            max_members: 6,
            max_members_per_address: Some(2),
            close_when_empty: false,
            ..RoomOptions::default()
        };
        let rooms = Rooms::<Empty>::new((), options).unwrap();
        let room = rooms.create("r").unwrap();
        let join = |id: u64, address: IpAddr| {
            room.join_sink(
                ConnId(id),
                Arc::new(Nobody),
                address,
                (),
                None,
                Default::default(),
            )
        };
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let first = join(1, HERE).await.unwrap();
        let _second = join(2, HERE).await.unwrap();
        assert_eq!(join(3, HERE).await.err(), Some(RoomError::AddressShareFull));
        assert_eq!(
            RoomError::AddressShareFull.status(),
            Status::UNAVAILABLE,
            "a game answers it as it answers a full room"
        );
        let _third = join(4, other).await.unwrap();
        // A seat given back can be taken again.
        drop(first);
        let _again = join(5, HERE).await.unwrap();
        // An IPv6 client counts by its /64.
        let v6 = |s: &str| counted_as(s.parse().unwrap(), SEAT_SHARE_IPV6_PREFIX);
        let _a = join(6, v6("2001:db8:1:2::1")).await.unwrap();
        let _b = join(7, v6("2001:db8:1:2::9:9")).await.unwrap();
        assert_eq!(
            join(8, v6("2001:db8:1:2:ffff::1")).await.err(),
            Some(RoomError::AddressShareFull)
        );
        // Six seats taken: now the room itself is full, whoever asks.
        let _fourth = join(9, other).await.unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(join(10, stranger).await.err(), Some(RoomError::Full));
        rooms.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}
