//! arena's rooms: real-time, on gatehouse's supervised rooms. A room owns where its
//! players stand; every tick it walks them and pushes one [`pb::Delta`] (encoded once)
//! with what changed. Each player's [`Position`] is recorded in its membership
//! (`RoomContext::set_member_state`), so that the session's saves and checkpoints read
//! the room's truth and a room restart (which loses the room's own state) joins the
//! player again where it stood.
//! What each player was doing (walking towards a target, or in a direction) is in
//! the room's [`Intents`] snapshot, taken after every tick: the room restarts from
//! it, and a walk goes on after a crash without new input.
//!
//! In a cluster the rooms are shared: one room of a name on all the nodes. Its
//! [`RoomCodec`] carries joins, messages and snapshots between nodes (the states it
//! records for a player on another node cross by message too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gatehouse::room::{Origin, Refusal, Room, RoomCodec, RoomContext};
use gatehouse::ConnId;
use prost::Message as _;
use tokio::sync::oneshot;

use crate::{pb, routes, MAX_TEXT, WORLD_EDGE};

/// Units a walking player covers per tick, along each axis it walks on.
pub const SPEED: i32 = 20;

/// Where a player stands and what it did, as its room owns it while the player is
/// there: the room records it ([`RoomContext::set_member_state`]) and the session
/// reads it from its membership to save it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub(crate) x: i32,
    pub(crate) y: i32,
    /// Moves over the player's life: one per MOVE and per Input.
    pub(crate) moves: u64,
    /// The player is walking: its position still changes without new input.
    pub(crate) walking: bool,
}

impl Position {
    /// As saved.
    pub(crate) fn of(state: &pb::PlayerState) -> Self {
        Position {
            x: state.x,
            y: state.y,
            moves: state.moves,
            walking: false,
        }
    }

    /// Copies position and moves into `state`.
    pub(crate) fn write_into(&self, state: &mut pb::PlayerState) {
        state.x = self.x;
        state.y = self.y;
        state.moves = self.moves;
    }
}

/// What a session brings into a room, and what the room records of it since.
#[derive(Debug, Clone)]
pub struct Joining {
    pub(crate) name: Arc<str>,
    pub(crate) at: Position,
}

/// What a session sends its room.
pub enum ToRoom {
    /// Walk: towards a target, or in a direction.
    Input(pb::Input),
    /// Stand at (x, y) now; `done` once the room has done it.
    Place {
        /// Where.
        x: i32,
        /// Where.
        y: i32,
        /// Answered once the player stands there.
        done: oneshot::Sender<()>,
    },
    /// Chat to the room.
    Say(String),
    /// Send me the whole room again (a client that missed a delta).
    Resync,
    /// Fault injection: panic at the next tick.
    Crash,
}

/// How a player walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    Still,
    Direction(i32, i32),
    Target(i32, i32),
}

struct Walker {
    name: Arc<str>,
    x: i32,
    y: i32,
    moves: u64,
    walk: Walk,
    /// Moved since the last Delta.
    moved: bool,
    /// Changed since the room last recorded the player's state.
    changed: bool,
}

impl Walker {
    fn new(join: &Joining) -> Self {
        Walker {
            name: join.name.clone(),
            x: join.at.x,
            y: join.at.y,
            moves: join.at.moves,
            walk: Walk::Still,
            moved: false,
            changed: false,
        }
    }

    fn body(&self) -> pb::Body {
        pb::Body {
            name: self.name.to_string(),
            x: self.x,
            y: self.y,
        }
    }

    fn set_walk(&mut self, walk: Walk) {
        self.changed |= (walk == Walk::Still) != (self.walk == Walk::Still);
        self.walk = walk;
    }

    /// Stands at (x, y).
    fn put(&mut self, x: i32, y: i32) {
        (self.x, self.y) = (x, y);
        self.moved = true;
        self.changed = true;
    }

    fn count_move(&mut self) {
        self.moves += 1;
        self.changed = true;
    }

    /// Records the player's state in its membership, if it changed.
    fn record(&mut self, ctx: &RoomContext<'_, ArenaRoom>, member: ConnId) {
        if std::mem::take(&mut self.changed) {
            let at = Position {
                x: self.x,
                y: self.y,
                moves: self.moves,
                walking: self.walk != Walk::Still,
            };
            let name = self.name.clone();
            ctx.set_member_state(member, Joining { name, at });
        }
    }

    /// One tick of walking.
    fn step(&mut self) {
        let (dx, dy) = match self.walk {
            Walk::Still => return,
            Walk::Direction(dx, dy) => (dx * SPEED, dy * SPEED),
            Walk::Target(tx, ty) => {
                let toward = |from: i32, to: i32| (to - from).clamp(-SPEED, SPEED);
                (toward(self.x, tx), toward(self.y, ty))
            }
        };
        let x = (self.x + dx).clamp(-WORLD_EDGE, WORLD_EDGE);
        let y = (self.y + dy).clamp(-WORLD_EDGE, WORLD_EDGE);
        let changed = (x, y) != (self.x, self.y);
        if changed {
            self.put(x, y);
        }
        let arrived = matches!(self.walk, Walk::Target(tx, ty) if (tx, ty) == (x, y));
        let blocked = matches!(self.walk, Walk::Direction(..)) && !changed;
        if arrived || blocked {
            self.set_walk(Walk::Still);
        }
    }
}

/// What a room's members were doing at its last tick: the walks under way, by
/// member. A room restarted after a crash is made from it, and each member joined
/// again walks on.
#[derive(Debug, Clone, Default)]
pub struct Intents {
    walks: HashMap<ConnId, Walk>,
}

/// One arena room.
pub struct ArenaRoom {
    name: String,
    tick: u64,
    /// The tick of the last Delta sent (the next one's `since`).
    last_sent: u64,
    walkers: HashMap<ConnId, Walker>,
    /// Members owed the whole room: sent at the next tick, so that after a restart
    /// (which joins every member again, one by one) each sees all the others.
    owed_state: Vec<ConnId>,
    entered: Vec<ConnId>,
    left: Vec<String>,
    crash: bool,
    /// After a restart: the walks of the previous life, taken by each member as it
    /// is joined again (before the first tick, which forgets the rest).
    restored: HashMap<ConnId, Walk>,
}

impl Room for ArenaRoom {
    type Config = ();
    type Join = Joining;
    type Message = ToRoom;
    type Snapshot = Intents;

    fn create(name: &str, _config: &(), restored: Option<Intents>) -> Self {
        ArenaRoom {
            name: name.to_owned(),
            tick: 0,
            last_sent: 0,
            walkers: HashMap::new(),
            owed_state: Vec::new(),
            entered: Vec::new(),
            left: Vec::new(),
            crash: false,
            restored: restored.map(|intents| intents.walks).unwrap_or_default(),
        }
    }

    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        member: ConnId,
        join: &Joining,
    ) -> Result<(), Refusal> {
        let mut walker = Walker::new(join);
        // A member joined again after a restart (with the state the room recorded)
        // walks on.
        walker.set_walk(self.restored.remove(&member).unwrap_or(Walk::Still));
        walker.record(ctx, member);
        self.walkers.insert(member, walker);
        self.entered.push(member);
        self.owed_state.push(member);
        Ok(())
    }

    fn leave(&mut self, _ctx: &mut RoomContext<'_, Self>, member: ConnId) {
        let Some(walker) = self.walkers.remove(&member) else {
            return;
        };
        self.owed_state.retain(|id| *id != member);
        let before = self.entered.len();
        self.entered.retain(|id| *id != member);
        // Entered and left within one tick: the others never need to hear of it.
        if self.entered.len() == before {
            self.left.push(walker.name.to_string());
        }
    }

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: ToRoom) {
        let Origin::Member(member) = from else {
            return;
        };
        match message {
            ToRoom::Crash => {
                self.crash = true;
                return;
            }
            ToRoom::Resync => {
                if !self.owed_state.contains(&member) {
                    self.owed_state.push(member);
                }
                return;
            }
            _ => {}
        }
        let Some(walker) = self.walkers.get_mut(&member) else {
            return;
        };
        match message {
            ToRoom::Input(input) => {
                let walk = match input.target {
                    Some(to) => Walk::Target(
                        to.x.clamp(-WORLD_EDGE, WORLD_EDGE),
                        to.y.clamp(-WORLD_EDGE, WORLD_EDGE),
                    ),
                    None => match (input.dx.clamp(-1, 1), input.dy.clamp(-1, 1)) {
                        (0, 0) => Walk::Still,
                        (dx, dy) => Walk::Direction(dx, dy),
                    },
                };
                walker.set_walk(walk);
                walker.count_move();
                // Recorded at once: a disconnect, a checkpoint or a move to another
                // room may read the state before the next tick.
                walker.record(ctx, member);
            }
            ToRoom::Place { x, y, done } => {
                walker.set_walk(Walk::Still);
                walker.put(x, y);
                walker.count_move();
                // Recorded before the answer: the handler reads it next.
                walker.record(ctx, member);
                let _ = done.send(()); // the handler may have been dropped
            }
            ToRoom::Say(text) => {
                let chat = pb::Chat {
                    from: walker.name.to_string(),
                    text,
                    room: self.name.clone(),
                    whisper: false,
                };
                ctx.broadcast(routes::CHAT, chat.encode_to_vec());
            }
            ToRoom::Crash | ToRoom::Resync => {}
        }
    }

    fn tick(&mut self, ctx: &mut RoomContext<'_, Self>, _dt: Duration) {
        self.tick += 1;
        if self.crash {
            panic!(
                "fault injection: room {} crashes at tick {}",
                self.name, self.tick
            );
        }
        // Every member of the previous life has been joined again by now.
        self.restored.clear();
        if !self.owed_state.is_empty() {
            // Before this tick's moves: the Delta below builds on it.
            let whole = pb::RoomState {
                room: self.name.clone(),
                tick: self.last_sent,
                players: self.walkers.values().map(Walker::body).collect(),
            };
            let whole = Bytes::from(whole.encode_to_vec());
            for member in std::mem::take(&mut self.owed_state) {
                ctx.push(member, routes::ROOM_STATE, whole.clone());
            }
        }
        let mut moved = Vec::new();
        for (id, walker) in &mut self.walkers {
            walker.step();
            walker.record(ctx, *id);
            if std::mem::take(&mut walker.moved) && !self.entered.contains(id) {
                // (an entered body already says where it stands)
                moved.push(walker.body());
            }
        }
        if moved.is_empty() && self.entered.is_empty() && self.left.is_empty() {
            return;
        }
        let entered = self
            .entered
            .drain(..)
            .filter_map(|id| self.walkers.get(&id).map(Walker::body))
            .collect();
        let delta = pb::Delta {
            tick: self.tick,
            since: self.last_sent,
            moved,
            entered,
            left: std::mem::take(&mut self.left),
            room: self.name.clone(),
        };
        ctx.broadcast(routes::DELTA, delta.encode_to_vec());
        self.last_sent = self.tick;
    }

    /// The walks under way (positions are in the members' recorded states already).
    fn snapshot(&self) -> Option<Intents> {
        let walks = self
            .walkers
            .iter()
            .filter(|(_, walker)| walker.walk != Walk::Still)
            .map(|(id, walker)| (*id, walker.walk))
            .collect();
        Some(Intents { walks })
    }
}

/// How arena's rooms cross between nodes of a cluster (the rooms are shared): what
/// a player brings, what it sends, and a room's walks, as bytes. Every decode takes
/// bytes from another process: it checks lengths first and answers `None` for what
/// it cannot read.
impl RoomCodec for ArenaRoom {
    fn encode_join(join: &Joining) -> Bytes {
        let mut out = BytesMut::new();
        put_str(&mut out, &join.name);
        put_position(&mut out, &join.at);
        out.freeze()
    }

    fn decode_join(mut bytes: Bytes) -> Option<Joining> {
        let name = take_str(&mut bytes)?;
        let at = take_position(&mut bytes)?;
        bytes.is_empty().then(|| Joining {
            name: Arc::from(name),
            at,
        })
    }

    fn encode_message(message: &ToRoom) -> Bytes {
        let mut out = BytesMut::new();
        match message {
            ToRoom::Input(input) => {
                out.put_u8(INPUT);
                out.put_slice(&input.encode_to_vec());
            }
            // The answer cannot cross: the session on the other node does not wait
            // for it (see `play::move_to`).
            ToRoom::Place { x, y, .. } => {
                out.put_u8(PLACE);
                out.put_i32(*x);
                out.put_i32(*y);
            }
            ToRoom::Say(text) => {
                out.put_u8(SAY);
                out.put_slice(text.as_bytes());
            }
            ToRoom::Resync => out.put_u8(RESYNC),
            ToRoom::Crash => out.put_u8(CRASH),
        }
        out.freeze()
    }

    fn decode_message(mut bytes: Bytes) -> Option<ToRoom> {
        if bytes.is_empty() {
            return None;
        }
        let message = match bytes.get_u8() {
            INPUT => return pb::Input::decode(bytes).ok().map(ToRoom::Input),
            PLACE if bytes.len() == 8 => {
                let (done, _) = oneshot::channel();
                let (x, y) = (bytes.get_i32(), bytes.get_i32());
                ToRoom::Place { x, y, done }
            }
            SAY if bytes.len() <= MAX_TEXT => {
                return String::from_utf8(bytes.to_vec()).ok().map(ToRoom::Say)
            }
            RESYNC => ToRoom::Resync,
            CRASH => ToRoom::Crash,
            _ => return None,
        };
        bytes.is_empty().then_some(message)
    }

    fn encode_snapshot(intents: &Intents) -> Option<Bytes> {
        let mut out = BytesMut::new();
        for (member, walk) in &intents.walks {
            out.put_u64(member.0);
            let (kind, a, b) = match *walk {
                Walk::Still => (0, 0, 0),
                Walk::Direction(dx, dy) => (1, dx, dy),
                Walk::Target(x, y) => (2, x, y),
            };
            out.put_u8(kind);
            out.put_i32(a);
            out.put_i32(b);
        }
        Some(out.freeze())
    }

    fn decode_snapshot(mut bytes: Bytes) -> Option<Intents> {
        const WALK: usize = 8 + 1 + 4 + 4;
        if !bytes.len().is_multiple_of(WALK) {
            return None;
        }
        let mut walks = HashMap::new();
        while bytes.has_remaining() {
            let member = ConnId(bytes.get_u64());
            let (kind, a, b) = (bytes.get_u8(), bytes.get_i32(), bytes.get_i32());
            let walk = match kind {
                0 => Walk::Still,
                1 => Walk::Direction(a.clamp(-1, 1), b.clamp(-1, 1)),
                2 => Walk::Target(
                    a.clamp(-WORLD_EDGE, WORLD_EDGE),
                    b.clamp(-WORLD_EDGE, WORLD_EDGE),
                ),
                _ => return None,
            };
            walks.insert(member, walk);
        }
        Some(Intents { walks })
    }
}

const INPUT: u8 = 1;
const PLACE: u8 = 2;
const SAY: u8 = 3;
const RESYNC: u8 = 4;
const CRASH: u8 = 5;

fn put_str(out: &mut BytesMut, text: &str) {
    // Names are at most MAX_NAME characters: well within u16.
    out.put_u16(u16::try_from(text.len()).unwrap_or(u16::MAX));
    out.put_slice(text.as_bytes());
}

fn take_str(bytes: &mut Bytes) -> Option<String> {
    if bytes.remaining() < 2 {
        return None;
    }
    let len = usize::from(bytes.get_u16());
    if bytes.remaining() < len {
        return None;
    }
    String::from_utf8(bytes.split_to(len).to_vec()).ok()
}

fn put_position(out: &mut BytesMut, at: &Position) {
    out.put_i32(at.x);
    out.put_i32(at.y);
    out.put_u64(at.moves);
    out.put_u8(u8::from(at.walking));
}

fn take_position(bytes: &mut Bytes) -> Option<Position> {
    if bytes.remaining() < 4 + 4 + 8 + 1 {
        return None;
    }
    Some(Position {
        x: bytes.get_i32().clamp(-WORLD_EDGE, WORLD_EDGE),
        y: bytes.get_i32().clamp(-WORLD_EDGE, WORLD_EDGE),
        moves: bytes.get_u64(),
        walking: bytes.get_u8() != 0,
    })
}

#[cfg(test)]
mod codec {
    use proptest::prelude::*;

    use super::*;

    fn position() -> impl Strategy<Value = Position> {
        let edge = -WORLD_EDGE..=WORLD_EDGE;
        (edge.clone(), edge, any::<u64>(), any::<bool>()).prop_map(|(x, y, moves, walking)| {
            Position {
                x,
                y,
                moves,
                walking,
            }
        })
    }

    proptest! {
        #[test]
        fn joins_and_messages_cross_nodes_unchanged(
            name in "[a-z0-9_-]{1,24}",
            at in position(),
            (x, y) in (any::<i32>(), any::<i32>()),
            text in "\\PC{0,64}",
        ) {
            let join = Joining { name: Arc::from(name.as_str()), at };
            let back = ArenaRoom::decode_join(ArenaRoom::encode_join(&join)).unwrap();
            prop_assert_eq!((&*back.name, back.at), (name.as_str(), at));
            let (done, _) = oneshot::channel();
            let place = ArenaRoom::encode_message(&ToRoom::Place { x, y, done });
            let placed = match ArenaRoom::decode_message(place) {
                Some(ToRoom::Place { x, y, .. }) => Some((x, y)),
                _ => None,
            };
            prop_assert_eq!(placed, Some((x, y)));
            let say = ArenaRoom::encode_message(&ToRoom::Say(text.clone()));
            let said = match ArenaRoom::decode_message(say) {
                Some(ToRoom::Say(said)) => Some(said),
                _ => None,
            };
            prop_assert_eq!(said, Some(text));
        }

        #[test]
        fn bytes_from_another_node_decode_or_are_refused_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let bytes = Bytes::from(bytes);
            let _ = ArenaRoom::decode_join(bytes.clone());
            let _ = ArenaRoom::decode_message(bytes.clone());
            if let Some(intents) = ArenaRoom::decode_snapshot(bytes) {
                // A walk read back stays within the world.
                for walk in intents.walks.values() {
                    if let Walk::Target(x, y) = walk {
                        prop_assert!(x.abs() <= WORLD_EDGE && y.abs() <= WORLD_EDGE);
                    }
                }
            }
        }
    }

    #[test]
    fn a_rooms_walks_cross_in_its_checkpoint() {
        let mut walks = HashMap::new();
        walks.insert(ConnId(7), Walk::Target(10, -20));
        walks.insert(ConnId(9), Walk::Direction(1, 0));
        let intents = Intents { walks };
        let back = ArenaRoom::decode_snapshot(ArenaRoom::encode_snapshot(&intents).unwrap());
        assert_eq!(back.unwrap().walks, intents.walks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walker(x: i32, y: i32, walk: Walk) -> Walker {
        let join = Joining {
            name: Arc::from("w"),
            at: Position {
                x,
                y,
                ..Position::default()
            },
        };
        let mut walker = Walker::new(&join);
        walker.set_walk(walk);
        walker
    }

    #[test]
    fn a_walker_reaches_its_target_and_stops_there() {
        let mut w = walker(0, 0, Walk::Target(45, -10));
        let mut path = Vec::new();
        for _ in 0..5 {
            w.step();
            path.push((w.x, w.y));
        }
        assert_eq!(
            path,
            [(20, -10), (40, -10), (45, -10), (45, -10), (45, -10)]
        );
        assert_eq!(w.walk, Walk::Still);
    }

    #[test]
    fn a_walker_in_a_direction_stops_at_the_edge_of_the_world() {
        let mut w = walker(WORLD_EDGE - 30, 0, Walk::Direction(1, 0));
        w.step();
        w.step();
        assert_eq!((w.x, w.walk), (WORLD_EDGE, Walk::Direction(1, 0)));
        w.step();
        assert_eq!((w.x, w.walk), (WORLD_EDGE, Walk::Still));
    }
}
