//! arena's rooms: real-time, on gatehouse's supervised rooms. A room owns where its
//! players stand; every tick it walks them and pushes one [`pb::Delta`] (encoded once)
//! with what changed. Each player's position is also written to the player's
//! `PlayerCell`, which the session owns, so that saves and checkpoints read the room's
//! truth and a room restart (which loses the room's own state) loses no position.
//! What each player was doing (walking towards a target, or in a direction) is in
//! the room's [`Intents`] snapshot, taken after every tick: the room restarts from
//! it, and a walk goes on after a crash without new input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::room::{Origin, Refusal, Room, RoomContext};
use gatehouse::ConnId;
use prost::Message as _;
use tokio::sync::oneshot;

use crate::{pb, routes, WORLD_EDGE};

/// Units a walking player covers per tick, along each axis it walks on.
pub const SPEED: i32 = 20;

/// Where a player stands, shared by its session (which saves it) and its room
/// (which moves it).
#[derive(Debug, Default)]
pub(crate) struct PlayerCell {
    x: AtomicI32,
    y: AtomicI32,
    /// Moves over the player's life: one per MOVE and per Input.
    moves: AtomicU64,
    /// The player is walking: its position still changes without new input.
    walking: AtomicBool,
    /// Which room's walker may write the cell: the latest to join. (While a player
    /// changes rooms, the old room may tick once more after the new one has read
    /// the cell; its write must not land.)
    owner: AtomicU64,
    /// The last owner token handed out.
    owners: AtomicU64,
}

impl PlayerCell {
    pub(crate) fn new(state: &pb::PlayerState) -> Arc<Self> {
        let cell = PlayerCell::default();
        cell.place(state.x, state.y);
        cell.moves.store(state.moves, Ordering::Relaxed);
        Arc::new(cell)
    }

    fn place(&self, x: i32, y: i32) {
        self.x.store(x, Ordering::Relaxed);
        self.y.store(y, Ordering::Relaxed);
    }

    /// Makes the caller the only writer from now on; returns its token.
    fn claim(&self) -> u64 {
        let token = self.owners.fetch_add(1, Ordering::Relaxed) + 1;
        self.owner.store(token, Ordering::Relaxed);
        token
    }

    fn owned_by(&self, token: u64) -> bool {
        self.owner.load(Ordering::Relaxed) == token
    }

    /// Copies position and moves into `state`.
    pub(crate) fn read_into(&self, state: &mut pb::PlayerState) {
        state.x = self.x.load(Ordering::Relaxed);
        state.y = self.y.load(Ordering::Relaxed);
        state.moves = self.moves.load(Ordering::Relaxed);
    }

    pub(crate) fn walking(&self) -> bool {
        self.walking.load(Ordering::Relaxed)
    }
}

/// What a session brings into a room.
#[derive(Clone)]
pub struct Joining {
    pub(crate) name: String,
    pub(crate) cell: Arc<PlayerCell>,
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
    name: String,
    cell: Arc<PlayerCell>,
    /// This walker's right to write the cell ([`PlayerCell::claim`]).
    token: u64,
    x: i32,
    y: i32,
    walk: Walk,
    moved: bool,
}

impl Walker {
    fn body(&self) -> pb::Body {
        pb::Body {
            name: self.name.clone(),
            x: self.x,
            y: self.y,
        }
    }

    fn set_walk(&mut self, walk: Walk) {
        self.walk = walk;
        if self.cell.owned_by(self.token) {
            self.cell
                .walking
                .store(walk != Walk::Still, Ordering::Relaxed);
        }
    }

    /// Stands at (x, y), in the cell too while this walker owns it.
    fn put(&mut self, x: i32, y: i32) {
        (self.x, self.y) = (x, y);
        self.moved = true;
        if self.cell.owned_by(self.token) {
            self.cell.place(x, y);
        }
    }

    fn count_move(&self) {
        if self.cell.owned_by(self.token) {
            self.cell.moves.fetch_add(1, Ordering::Relaxed);
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
        _ctx: &mut RoomContext<'_, Self>,
        member: ConnId,
        join: &Joining,
    ) -> Result<(), Refusal> {
        let mut state = pb::PlayerState::default();
        join.cell.read_into(&mut state);
        let mut walker = Walker {
            name: join.name.clone(),
            cell: join.cell.clone(),
            token: join.cell.claim(),
            x: state.x,
            y: state.y,
            walk: Walk::Still,
            moved: false,
        };
        // A member joined again after a restart walks on.
        walker.set_walk(self.restored.remove(&member).unwrap_or(Walk::Still));
        self.walkers.insert(member, walker);
        self.entered.push(member);
        self.owed_state.push(member);
        Ok(())
    }

    fn leave(&mut self, _ctx: &mut RoomContext<'_, Self>, member: ConnId) {
        let Some(mut walker) = self.walkers.remove(&member) else {
            return;
        };
        walker.set_walk(Walk::Still);
        self.owed_state.retain(|id| *id != member);
        let before = self.entered.len();
        self.entered.retain(|id| *id != member);
        // Entered and left within one tick: the others never need to hear of it.
        if self.entered.len() == before {
            self.left.push(walker.name);
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
            }
            ToRoom::Place { x, y, done } => {
                walker.set_walk(Walk::Still);
                walker.put(x, y);
                walker.count_move();
                let _ = done.send(()); // the handler may have been dropped
            }
            ToRoom::Say(text) => {
                let chat = pb::Chat {
                    from: walker.name.clone(),
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

    /// The walks under way (positions are in the players' cells already).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn walker(x: i32, y: i32, walk: Walk) -> Walker {
        let cell: Arc<PlayerCell> = Arc::default();
        let mut walker = Walker {
            name: "w".into(),
            token: cell.claim(),
            cell,
            x,
            y,
            walk: Walk::Still,
            moved: false,
        };
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
        assert!(!w.cell.walking());
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

    #[test]
    fn only_the_latest_room_to_take_a_player_writes_its_cell() {
        let mut old = walker(0, 0, Walk::Direction(1, 0));
        let mut new = Walker {
            name: "w".into(),
            token: old.cell.claim(),
            cell: old.cell.clone(),
            x: 0,
            y: 0,
            walk: Walk::Still,
            moved: false,
        };
        old.step(); // the old room ticks once more after the player moved on
        assert_eq!(old.x, 20);
        let mut state = pb::PlayerState::default();
        old.cell.read_into(&mut state);
        assert_eq!(state.x, 0, "the old room's walk did not reach the cell");
        new.put(5, 5);
        new.cell.read_into(&mut state);
        assert_eq!((state.x, state.y), (5, 5));
    }
}
