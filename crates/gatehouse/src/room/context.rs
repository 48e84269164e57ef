//! [`RoomContext`]: what a room's hook can do: push to its members (a broadcast is
//! encoded once), kick one, start timers, close the room.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::{KickReason, Message, HEADER_LEN};
use tokio::sync::mpsc;
use tracing::warn;

use super::shared::OtherNode;
use super::task::{Input, Members};
use super::Room;
use crate::connection::ConnId;
use crate::timer::{Timer, TimerError, Timers};

/// What a room's hook is given besides its own state.
pub struct RoomContext<'a, R: Room> {
    pub(super) name: &'a str,
    pub(super) members: &'a Members<R::Join>,
    pub(super) timers: &'a Timers,
    /// The room's own mailbox, for its timers.
    pub(super) inputs: &'a mpsc::Sender<Input<R>>,
    /// Which life of the room this is: its timers' messages reach no later one.
    pub(super) life: u64,
    pub(super) max_frame: usize,
    /// Set by [`RoomContext::close`]: the room stops after this hook.
    pub(super) close: &'a mut bool,
    /// Members on other nodes whose state this hook recorded: sent to their nodes
    /// after it.
    pub(super) states_away: &'a RefCell<Vec<ConnId>>,
}

impl<R: Room> RoomContext<'_, R> {
    /// The room's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The members, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.members.keys().copied()
    }

    /// How many members there are.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// What `member` joined with, if it is a member (not what
    /// [`RoomContext::set_member_state`] recorded since).
    pub fn joined_with(&self, member: ConnId) -> Option<&R::Join> {
        self.members.get(&member).map(|m| &m.join)
    }

    /// Records `member`'s state as the room owns it now (a position, a score), in the
    /// shape it joins with: its session reads it with
    /// [`Membership::state`](super::Membership::state) to save and checkpoint it,
    /// and after a restart the member is joined with it. State a game keeps for a
    /// player while it is in a room lives here, with no cell shared between the room
    /// and the session, and a room the player has left writes to nobody. A member
    /// on another node of the cluster (a shared room) gets it by message, one per
    /// node after this hook. Returns false if `member` is not a member.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use gatehouse::ConnId;
    /// use gatehouse::room::{Origin, Refusal, Room, RoomContext};
    ///
    /// /// Each member's score is the room's; it joins with the saved one.
    /// struct Scores(HashMap<ConnId, u64>);
    ///
    /// impl Room for Scores {
    ///     type Config = ();
    ///     type Join = u64; // the score a member brings, and the one recorded since
    ///     type Message = u64;
    ///     type Snapshot = ();
    ///
    ///     fn create(_: &str, _: &(), _: Option<()>) -> Self {
    ///         Scores(HashMap::new())
    ///     }
    ///
    ///     fn join(&mut self, _: &mut RoomContext<'_, Self>, id: ConnId, score: &u64) -> Result<(), Refusal> {
    ///         self.0.insert(id, *score);
    ///         Ok(())
    ///     }
    ///
    ///     fn leave(&mut self, _: &mut RoomContext<'_, Self>, id: ConnId) {
    ///         self.0.remove(&id);
    ///     }
    ///
    ///     fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, points: u64) {
    ///         if let Origin::Member(id) = from {
    ///             let score = self.0.entry(id).or_default();
    ///             *score += points;
    ///             // The session's checkpoint and disconnect hook save
    ///             // `membership.state()`: this score.
    ///             ctx.set_member_state(id, *score);
    ///         }
    ///     }
    /// }
    /// ```
    pub fn set_member_state(&self, member: ConnId, state: R::Join) -> bool {
        let Some(seat) = self.members.get(&member) else {
            return false;
        };
        *seat
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
        if seat.away.is_some() {
            self.states_away.borrow_mut().push(member);
        }
        true
    }

    /// The push frame, or `None` (logged) if it is larger than a client accepts.
    fn frame(&self, route: u16, payload: Bytes) -> Option<Bytes> {
        let frame = Message::Push { route, payload }.to_frame();
        let len = frame.len() - HEADER_LEN;
        if len > self.max_frame {
            warn!(
                room = self.name,
                route,
                len,
                max = self.max_frame,
                "room push over max_frame_bytes; dropped"
            );
            return None;
        }
        Some(frame)
    }

    /// Pushes to every member, encoding once; returns how many took it (a member over
    /// its outbound budget does not, and closes as a slow consumer).
    pub fn broadcast(&mut self, route: u16, payload: impl Into<Bytes>) -> usize {
        self.broadcast_except(None, route, payload)
    }

    /// Pushes to every member but `except`, encoding once.
    pub fn broadcast_except(
        &mut self,
        except: Option<ConnId>,
        route: u16,
        payload: impl Into<Bytes>,
    ) -> usize {
        let Some(frame) = self.frame(route, payload.into()) else {
            return 0;
        };
        let mut delivered = 0;
        // Members on other nodes, by node: one message per node, after the loop.
        let mut elsewhere: Vec<(&OtherNode, Vec<ConnId>)> = Vec::new();
        for (id, member) in self.members {
            if Some(*id) == except {
                continue;
            }
            match &member.away {
                None => delivered += usize::from(member.sink.deliver_frame(frame.clone())),
                Some(away) => {
                    delivered += 1;
                    match elsewhere
                        .iter_mut()
                        .find(|(node, _)| node.node == away.node)
                    {
                        Some((_, conns)) => conns.push(*id),
                        None => elsewhere.push((away, vec![*id])),
                    }
                }
            }
        }
        for (node, conns) in elsewhere {
            node.deliver(&conns, &frame);
        }
        delivered
    }

    /// Pushes to one member; false if it is not a member or did not take it.
    pub fn push(&mut self, member: ConnId, route: u16, payload: impl Into<Bytes>) -> bool {
        let Some(target) = self.members.get(&member) else {
            return false;
        };
        self.frame(route, payload.into())
            .is_some_and(|frame| target.sink.deliver_frame(frame))
    }

    /// Closes a member's connection with `reason` (it then leaves the room as its
    /// session ends).
    pub fn kick(&mut self, member: ConnId, reason: KickReason, text: impl Into<String>) {
        if let Some(target) = self.members.get(&member) {
            target.sink.kick(reason, text.into());
        }
    }

    /// Sends the room `message` (from [`Origin::Timer`](super::Origin::Timer)) after `delay`. Timers end
    /// with this life of the room (a restart or a stop cancels them).
    pub fn after(&mut self, delay: Duration, message: R::Message) -> Result<Timer, TimerError> {
        let mut message = Some(message);
        self.start_timer(delay, None, move || message.take())
    }

    /// Sends the room a copy of `message` every `period`, the first after one period.
    pub fn every(&mut self, period: Duration, message: R::Message) -> Result<Timer, TimerError>
    where
        R::Message: Clone,
    {
        self.start_timer(period, Some(period), move || Some(message.clone()))
    }

    fn start_timer(
        &mut self,
        delay: Duration,
        period: Option<Duration>,
        mut next: impl FnMut() -> Option<R::Message> + Send + 'static,
    ) -> Result<Timer, TimerError> {
        let inputs = self.inputs.clone();
        let life = self.life;
        self.timers.start(delay, period, move || {
            let inputs = inputs.clone();
            let message = next();
            async move {
                let Some(message) = message else { return false };
                inputs.send(Input::Timer { life, message }).await.is_ok()
            }
        })
    }

    /// Stops the room once this hook returns ([`Room::stopped`] runs with
    /// [`StopReason::Closed`](super::StopReason::Closed)); its members stay connected.
    pub fn close(&mut self) {
        *self.close = true;
    }
}
