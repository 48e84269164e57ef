//! A room's task: its own little supervisor. It makes the room, runs its lives (the
//! loop over stop, ticks, leaves and the mailbox), and after a crash restarts it by
//! its policy and restart intensity, or closes it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use gatehouse_protocol::{KickReason, Message, ROUTE_ROOM_RESTARTED};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::context::RoomContext;
use super::shared::{guarded, Checkpoint, OtherNode, SharedRoom};
use super::stats::{LatenessHistogram, RoomCounters};
use super::{Origin, Restart, Room, RoomError, RoomOptions, StopReason};
use crate::connection::ConnId;
use crate::guard::{catch, RestartIntensity};
use crate::mailbox::MemberSink;
use crate::timer::Timers;

/// What reaches a room through its bounded mailbox.
pub(crate) enum Input<R: Room> {
    Join {
        member: ConnId,
        serial: u64,
        sink: Arc<dyn MemberSink>,
        /// What the member's seat counts against ([`RoomOptions::max_members_per_address`]).
        address: IpAddr,
        join: R::Join,
        /// The member's state as the room records it, shared with its membership.
        state: MemberState<R::Join>,
        /// The member's node, if it is another one of the cluster.
        away: Option<OtherNode>,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    Message {
        from: Origin,
        message: R::Message,
        /// The sending member's count of queued messages, given back when handled.
        queued: Option<Arc<AtomicU32>>,
    },
    /// A timer's message, for the life of the room that started the timer only.
    Timer { life: u64, message: R::Message },
}

/// Ready inputs (and all ready leaves) handled after each tick, so that a room whose
/// ticks fall behind still serves its members.
const INPUTS_PER_TICK: usize = 64;

/// What woke a life's loop.
enum Woke<R: Room> {
    Stop,
    Tick,
    Leave(Leave),
    Input(Input<R>),
}

/// A membership ended. Sent apart from the mailbox (at most one per membership, so
/// bounded by the members) so that a leave is never lost nor waits behind messages.
pub(crate) struct Leave {
    pub(crate) member: ConnId,
    /// Which membership: a leave of an earlier one does not remove a later one.
    pub(crate) serial: u64,
}

/// A member's state as its room last recorded it (`None`: as it joined), shared by
/// the room's task and the member's [`Membership`](super::Membership).
pub(crate) type MemberState<J> = Arc<Mutex<Option<J>>>;

/// A member, as the room keeps it.
pub(crate) struct Member<J> {
    pub(crate) sink: Arc<dyn MemberSink>,
    pub(crate) join: J,
    pub(crate) state: MemberState<J>,
    serial: u64,
    /// The member's address (an IPv6 /64), for the per-address share of seats.
    address: IpAddr,
    /// The member's node, if it is another one of the cluster: a broadcast reaches
    /// all its members there in one message.
    pub(crate) away: Option<OtherNode>,
}

impl<J: Clone> Member<J> {
    /// What the member would bring if it joined again: its recorded state, or what
    /// it joined with.
    fn latest(&self) -> J {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.clone().unwrap_or_else(|| self.join.clone())
    }
}

pub(crate) type Members<J> = HashMap<ConnId, Member<J>>;

/// How one life of the room ended.
enum End {
    Stopped(StopReason),
    Crashed(String),
}

/// The task's state, across lives.
pub(crate) struct RoomTask<R: Room> {
    pub(crate) name: Arc<str>,
    pub(crate) config: Arc<R::Config>,
    pub(crate) options: Arc<RoomOptions>,
    /// The largest push the room sends: the server's `limits.max_frame_bytes`.
    pub(crate) max_frame: usize,
    pub(crate) inputs: mpsc::Receiver<Input<R>>,
    /// The mailbox's sending side, for the room's timers.
    pub(crate) sender: mpsc::Sender<Input<R>>,
    pub(crate) leaves: mpsc::UnboundedReceiver<Leave>,
    /// Cancelled to stop this room (closed by the game, or the registry's shutdown).
    pub(crate) stop: CancellationToken,
    /// The registry's shutdown, to tell the two apart.
    pub(crate) shutdown: CancellationToken,
    pub(crate) counters: Arc<RoomCounters>,
    pub(crate) lateness: Arc<LatenessHistogram>,
    pub(crate) members: Members<R::Join>,
    /// Whether anyone ever joined: only then does an empty room close.
    pub(crate) had_members: bool,
    pub(crate) snapshot: Option<R::Snapshot>,
    /// What the first life is made from (a shared room taken over from its last
    /// checkpoint).
    pub(crate) restored: Option<R::Snapshot>,
    /// Where a shared room's snapshots are checkpointed.
    pub(crate) checkpoint: Option<Checkpoint<R>>,
    /// A shared room's type and its join encoding (its members' states cross to
    /// their nodes in it).
    pub(crate) shared: Option<SharedRoom<R>>,
    /// Which life of the room runs (for its timers).
    pub(crate) life: u64,
}

impl<R: Room> RoomTask<R> {
    /// The room's whole existence: lives and restarts until it stops.
    pub(crate) async fn run(mut self) -> StopReason {
        let mut intensity =
            RestartIntensity::new(self.options.max_restarts, self.options.restart_window);
        let mut restored = self.restored.take();
        let mut restarted = false;
        let reason = loop {
            self.life += 1;
            let timers = Timers::new();
            let end = match catch(|| R::create(&self.name, &self.config, restored.take())) {
                Ok(mut room) => {
                    let rejoined = if restarted {
                        self.rejoin(&mut room, &timers)
                    } else {
                        None
                    };
                    let end = match rejoined {
                        Some(end) => end,
                        None => self.live(&mut room, &timers).await,
                    };
                    if let Err(cause) = catch(move || drop(room)) {
                        warn!(room = %self.name, cause, "dropping the room panicked");
                    }
                    end
                }
                Err(cause) => End::Crashed(cause),
            };
            timers.cancel_all();
            let cause = match end {
                End::Stopped(reason) => break reason,
                End::Crashed(cause) => cause,
            };
            self.counters.restarts.fetch_add(1, Ordering::Relaxed);
            self.lateness.crashes.fetch_add(1, Ordering::Relaxed);
            let stopping = self.stop.is_cancelled();
            if self.options.restart == Restart::Never
                || stopping
                || !intensity.allow(Instant::now())
            {
                error!(room = %self.name, cause, "room crashed; closing it and kicking its members room_closed");
                let text = format!("room {} closed after crashing", self.name);
                for member in self.members.values() {
                    member.sink.kick(KickReason::ROOM_CLOSED, text.clone());
                }
                break StopReason::Crashed;
            }
            warn!(room = %self.name, cause, members = self.members.len(), "room crashed; restarting it");
            if self.options.restart == Restart::FromSnapshot {
                restored = self.snapshot.clone();
            }
            restarted = true;
            let notice = Message::Push {
                route: ROUTE_ROOM_RESTARTED,
                payload: self.name.as_bytes().to_vec().into(),
            }
            .to_frame();
            for member in self.members.values() {
                member.sink.deliver_frame(notice.clone());
            }
        };
        self.members.clear();
        self.counters.members.store(0, Ordering::Relaxed);
        info!(room = %self.name, %reason, "room stopped");
        reason
    }

    /// Runs `hook` with a context over this task's state; `Err` if it panicked, and
    /// whether it asked to close the room.
    fn call<T>(
        &self,
        timers: &Timers,
        hook: impl FnOnce(&mut RoomContext<'_, R>) -> T,
    ) -> (Result<T, String>, bool) {
        let mut close = false;
        let states_away = RefCell::new(Vec::new());
        let mut ctx = RoomContext {
            name: &self.name,
            members: &self.members,
            timers,
            inputs: &self.sender,
            life: self.life,
            max_frame: self.max_frame,
            close: &mut close,
            states_away: &states_away,
        };
        let result = catch(|| hook(&mut ctx));
        let states_away = states_away.into_inner();
        if !states_away.is_empty() {
            self.send_states_away(states_away);
        }
        (result, close)
    }

    /// Sends the states recorded for members on other nodes, one message per node.
    fn send_states_away(&self, mut members: Vec<ConnId>) {
        let Some(shared) = &self.shared else {
            return;
        };
        members.sort_unstable();
        members.dedup();
        let mut by_node: Vec<(&OtherNode, Vec<(ConnId, Bytes)>)> = Vec::new();
        for id in members {
            let Some(member) = self.members.get(&id) else {
                continue;
            };
            let Some(away) = &member.away else {
                continue;
            };
            let latest = member.latest();
            let Some(state) = guarded("encode_join", || Some((shared.encode_join)(&latest))) else {
                continue;
            };
            match by_node.iter_mut().find(|(node, _)| node.node == away.node) {
                Some((_, states)) => states.push((id, state)),
                None => by_node.push((away, vec![(id, state)])),
            }
        }
        for (node, states) in by_node {
            node.send_states(&shared.kind, &self.name, states);
        }
    }

    /// After a restart: joins every member again; one the new room refuses is kicked.
    fn rejoin(&mut self, room: &mut R, timers: &Timers) -> Option<End> {
        let ids: Vec<ConnId> = self.members.keys().copied().collect();
        for id in ids {
            // Joined with its state as the previous life recorded it.
            let Some(join) = self.members.get(&id).map(Member::latest) else {
                continue;
            };
            let (joined, _) = self.call(timers, |ctx| room.join(ctx, id, &join));
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => {
                    if let Some(member) = self.members.remove(&id) {
                        member.sink.kick(KickReason::ROOM_CLOSED, refusal.text);
                    }
                }
                Err(cause) => return Some(End::Crashed(cause)),
            }
        }
        self.counters
            .members
            .store(self.members.len(), Ordering::Relaxed);
        None
    }

    /// One life: until the room stops or a hook panics.
    async fn live(&mut self, room: &mut R, timers: &Timers) -> End {
        let period = self.options.tick;
        // Tick n is due at start + n * period: late work delays a tick, never the ones
        // after it.
        let mut due = Instant::now() + period.unwrap_or_default();
        loop {
            let woke = tokio::select! {
                biased;
                () = self.stop.cancelled() => Woke::Stop,
                () = tokio::time::sleep_until(due), if period.is_some() => Woke::Tick,
                Some(leave) = self.leaves.recv() => Woke::Leave(leave),
                Some(input) = self.inputs.recv() => Woke::Input(input),
            };
            let handled = match woke {
                Woke::Stop => {
                    let reason = if self.shutdown.is_cancelled() {
                        StopReason::Shutdown
                    } else {
                        StopReason::Closed
                    };
                    return self.stopped(room, timers, reason);
                }
                Woke::Leave(leave) => self.leave(room, timers, leave),
                Woke::Input(input) => self.input(room, timers, input),
                Woke::Tick => {
                    let dt = period.unwrap_or_default();
                    let lateness = Instant::now().saturating_duration_since(due);
                    let late = lateness > self.options.late_after;
                    self.counters.count_tick(lateness, self.options.late_after);
                    self.lateness.record(lateness, late);
                    due += dt;
                    let ticked = self.call(timers, |ctx| room.tick(ctx, dt));
                    // Only a whole tick is a state to restart from, not one that
                    // panicked halfway.
                    if ticked.0.is_ok() {
                        self.keep_snapshot(room);
                    }
                    if let Some(end) = self.conclude(room, timers, ticked) {
                        return end;
                    }
                    // Ticks come first, but never alone: what waits is served too.
                    while let Ok(leave) = self.leaves.try_recv() {
                        let left = self.leave(room, timers, leave);
                        if let Some(end) = self.conclude(room, timers, left) {
                            return end;
                        }
                    }
                    for _ in 0..INPUTS_PER_TICK {
                        let Ok(input) = self.inputs.try_recv() else {
                            break;
                        };
                        let handled = self.input(room, timers, input);
                        if let Some(end) = self.conclude(room, timers, handled) {
                            return end;
                        }
                    }
                    if Instant::now() >= due {
                        // Behind: the next tick is due already. Let the thread's
                        // other tasks (the members' connections among them) run first,
                        // or a room that cannot keep up would starve them.
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
            };
            if let Some(end) = self.conclude(room, timers, handled) {
                return end;
            }
        }
    }

    /// After a hook: how the life ends, if it does (a panic, a close, the last
    /// member gone).
    fn conclude(
        &mut self,
        room: &mut R,
        timers: &Timers,
        (result, close): (Result<(), String>, bool),
    ) -> Option<End> {
        if let Err(cause) = result {
            return Some(End::Crashed(cause));
        }
        if close {
            return Some(self.stopped(room, timers, StopReason::Closed));
        }
        if self.options.close_when_empty && self.members.is_empty() && self.had_members {
            return Some(self.stopped(room, timers, StopReason::Empty));
        }
        None
    }

    fn stopped(&mut self, room: &mut R, timers: &Timers, reason: StopReason) -> End {
        let (result, _) = self.call(timers, |ctx| room.stopped(ctx, reason));
        if let Err(cause) = result {
            error!(room = %self.name, cause, "the room's stopped hook panicked");
        }
        End::Stopped(reason)
    }

    fn keep_snapshot(&mut self, room: &R) {
        // The clock is read only by a shared room that checkpoints.
        let due = self
            .checkpoint
            .as_ref()
            .and_then(|checkpoint| Some(Instant::now()).filter(|now| checkpoint.due(*now)));
        if self.options.restart != Restart::FromSnapshot && due.is_none() {
            return;
        }
        match catch(|| room.snapshot()) {
            Ok(Some(snapshot)) => {
                if let (Some(checkpoint), Some(now)) = (self.checkpoint.as_mut(), due) {
                    checkpoint.save(&self.name, &snapshot, now);
                }
                if self.options.restart == Restart::FromSnapshot {
                    self.snapshot = Some(snapshot);
                }
            }
            Ok(None) => {}
            Err(cause) => {
                warn!(room = %self.name, cause, "the room's snapshot hook panicked; keeping the previous one")
            }
        }
    }

    fn message(
        &mut self,
        room: &mut R,
        timers: &Timers,
        from: Origin,
        message: R::Message,
    ) -> (Result<(), String>, bool) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        let handled = self.call(timers, |ctx| room.message(ctx, from, message));
        if self.options.tick.is_none() {
            self.keep_snapshot(room);
        }
        handled
    }

    fn leave(&mut self, room: &mut R, timers: &Timers, leave: Leave) -> (Result<(), String>, bool) {
        let current = self
            .members
            .get(&leave.member)
            .is_some_and(|m| m.serial == leave.serial);
        if !current {
            return (Ok(()), false);
        }
        self.members.remove(&leave.member);
        self.counters
            .members
            .store(self.members.len(), Ordering::Relaxed);
        self.call(timers, |ctx| room.leave(ctx, leave.member))
    }

    fn input(
        &mut self,
        room: &mut R,
        timers: &Timers,
        input: Input<R>,
    ) -> (Result<(), String>, bool) {
        match input {
            Input::Join {
                member,
                serial,
                sink,
                address,
                join,
                state,
                away,
                reply,
            } => {
                if reply.is_closed() {
                    // The joiner gave up (its membership is gone, and its leave may
                    // already have been handled): joining it now would leave a ghost.
                    return (Ok(()), false);
                }
                if self.members.contains_key(&member) {
                    let _ = reply.send(Err(RoomError::AlreadyMember));
                    return (Ok(()), false);
                }
                if self.members.len() >= self.options.max_members {
                    let _ = reply.send(Err(RoomError::Full));
                    return (Ok(()), false);
                }
                if let Some(share) = self.options.max_members_per_address {
                    let seated = self
                        .members
                        .values()
                        .filter(|m| m.address == address)
                        .count();
                    if seated >= share {
                        let _ = reply.send(Err(RoomError::AddressShareFull));
                        return (Ok(()), false);
                    }
                }
                self.members.insert(
                    member,
                    Member {
                        sink,
                        join: join.clone(),
                        state,
                        serial,
                        address,
                        away,
                    },
                );
                self.had_members = true;
                let (joined, close) = self.call(timers, |ctx| room.join(ctx, member, &join));
                let answer = match &joined {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(refusal)) => Err(RoomError::Refused(refusal.clone())),
                    Err(_) => Err(RoomError::Closed),
                };
                if answer.is_err() {
                    self.members.remove(&member);
                }
                self.counters
                    .members
                    .store(self.members.len(), Ordering::Relaxed);
                // The joiner may have given up waiting; its membership then leaves.
                let _ = reply.send(answer);
                (joined.map(|_| ()), close)
            }
            Input::Message {
                from,
                message,
                queued,
            } => {
                if let Some(queued) = queued {
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
                if let Origin::Member(id) = from {
                    if !self.members.contains_key(&id) {
                        return (Ok(()), false); // sent just before it left
                    }
                }
                self.message(room, timers, from, message)
            }
            Input::Timer { life, message } => {
                if life != self.life {
                    return (Ok(()), false); // started by a life that has ended
                }
                self.message(room, timers, Origin::Timer, message)
            }
        }
    }
}
