//! The room as a member sees it, from the pushes of its connection: for arena's
//! tests of rooms on one node and across nodes.
#![allow(dead_code, unreachable_pub)]

use arena::{pb, routes};
use bytes::Bytes;
use gatehouse::protocol::ROUTE_ROOM_RESTARTED;
use gatehouse::Message;
use prost::Message as _;
use tokio::time::Instant;

use crate::support::{Client, PATIENCE};

/// The room as one member sees it, from its RoomState and Deltas.
#[derive(Default, Debug)]
pub struct View {
    pub tick: u64,
    pub players: std::collections::BTreeMap<String, (i32, i32)>,
    pub gaps: usize,
    pub restarts: usize,
    /// Players in each RoomState received, in order.
    pub states: Vec<usize>,
    /// Chat lines heard, "from: text".
    pub chat: Vec<String>,
}

impl View {
    pub fn apply(&mut self, route: u16, payload: Bytes) {
        match route {
            routes::ROOM_STATE => {
                let state = pb::RoomState::decode(payload).unwrap();
                self.states.push(state.players.len());
                self.tick = state.tick;
                self.players = state
                    .players
                    .into_iter()
                    .map(|b| (b.name, (b.x, b.y)))
                    .collect();
            }
            routes::DELTA => {
                let delta = pb::Delta::decode(payload).unwrap();
                if delta.since != self.tick {
                    self.gaps += 1;
                }
                self.tick = delta.tick;
                for name in delta.left {
                    self.players.remove(&name);
                }
                for body in delta.entered.into_iter().chain(delta.moved) {
                    self.players.insert(body.name, (body.x, body.y));
                }
            }
            ROUTE_ROOM_RESTARTED => self.restarts += 1,
            routes::CHAT => {
                let chat = pb::Chat::decode(payload).unwrap();
                self.chat.push(format!("{}: {}", chat.from, chat.text));
            }
            _ => {}
        }
    }

    /// Reads pushes into the view until `done` holds.
    pub async fn until(&mut self, client: &mut Client, mut done: impl FnMut(&View) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "the view never got there: {self:?}"
            );
            match client.recv().await {
                Some(Message::Push { route, payload }) => self.apply(route, payload),
                Some(_) => {}
                None => panic!("closed while watching: {self:?}"),
            }
        }
    }
}
