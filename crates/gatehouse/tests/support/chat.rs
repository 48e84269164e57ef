//! A chat room shared by a cluster, and a service to drive it, for the tests of
//! shared rooms (over the in-process bus here, over NATS in `gatehouse-cluster`).
//! Routes: JOIN "room name" (answers the room's node, or "here"), SAY, LEAVE, STATE.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use gatehouse::room::{Origin, Refusal, Room, RoomCodec, RoomContext, Rooms};
use gatehouse::{ConnId, Context, Disconnect, Reply, Service, Status};

/// A chat room: members join with their name, and everything said is pushed to
/// every member as "name: text" on [`SAID`]; a member is greeted on [`WELCOME`] with
/// how many members there are.
pub struct Chat {
    /// Each member's name and how many lines it said: recorded as its state,
    /// "name:count", which it joins with again after a restart.
    names: std::collections::HashMap<ConnId, (String, u64)>,
    /// Lines said so far: the room's snapshot.
    lines: u64,
}

pub const SAID: u16 = 100;
pub const WELCOME: u16 = 101;
/// Pushed to a joiner: how many lines were said in the room before.
pub const LINES: u16 = 102;

/// Join: the route to join the room named in the payload (as the name `as`).
pub const JOIN: u16 = 1;
/// Say: the payload to the room.
pub const SAY: u16 = 2;
/// Leave the room.
pub const LEAVE: u16 = 3;
/// The member's state as its membership reads it.
pub const STATE: u16 = 4;

impl Room for Chat {
    type Config = ();
    type Join = String;
    type Message = String;
    type Snapshot = u64;

    fn create(_: &str, _: &(), lines: Option<u64>) -> Self {
        Chat {
            names: Default::default(),
            lines: lines.unwrap_or(0),
        }
    }

    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        member: ConnId,
        name: &String,
    ) -> Result<(), Refusal> {
        if name == "banned" {
            return Err(Refusal::new(Status(1099), "not you"));
        }
        let (name, said) = match name.split_once(':') {
            Some((name, said)) => (name.to_owned(), said.parse().unwrap_or(0)),
            None => (name.clone(), 0),
        };
        self.names.insert(member, (name, said));
        let count = ctx.member_count().to_string();
        ctx.push(member, WELCOME, count);
        ctx.push(member, LINES, self.lines.to_string());
        Ok(())
    }

    fn leave(&mut self, _: &mut RoomContext<'_, Self>, member: ConnId) {
        self.names.remove(&member);
    }

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, text: String) {
        let Origin::Member(member) = from else { return };
        let Some((name, said)) = self.names.get_mut(&member) else {
            return;
        };
        *said += 1;
        let (name, said) = (name.clone(), *said);
        ctx.set_member_state(member, format!("{name}:{said}"));
        self.lines += 1;
        ctx.broadcast(SAID, format!("{name}: {text}"));
    }

    fn snapshot(&self) -> Option<u64> {
        Some(self.lines)
    }
}

impl RoomCodec for Chat {
    fn encode_join(join: &String) -> Bytes {
        Bytes::from(join.clone())
    }
    fn decode_join(bytes: Bytes) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
    fn encode_message(message: &String) -> Bytes {
        Bytes::from(message.clone())
    }
    fn decode_message(bytes: Bytes) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
    fn encode_snapshot(lines: &u64) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&lines.to_be_bytes()))
    }
    fn decode_snapshot(bytes: Bytes) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.as_ref().try_into().ok()?))
    }
}

pub struct Game {
    pub rooms: Rooms<Chat>,
}

impl Service for Game {
    type Session = Option<gatehouse::room::Membership<Chat>>;
    type Message = ();

    async fn connect(&self, _: &mut Context<'_, ()>) -> Self::Session {
        None
    }

    async fn request(
        &self,
        seat: &mut Self::Session,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        let text = String::from_utf8_lossy(&payload).into_owned();
        match route {
            JOIN => {
                *seat = None;
                let (room, name) = text.split_once(' ').unwrap_or((&text, "someone"));
                match self.rooms.join(room, ctx, name.to_owned()).await {
                    Ok(membership) => {
                        let host = membership.host().map_or("here".into(), |h| h.to_string());
                        *seat = Some(membership);
                        Reply::ok(host)
                    }
                    Err(e) => Reply::error(e.status(), e.to_string()),
                }
            }
            SAY => match seat {
                Some(room) => match room.send(text).await {
                    Ok(()) => Reply::empty(),
                    Err(e) => Reply::error(e.status(), e.to_string()),
                },
                None => Reply::error(Status::BAD_REQUEST, "not in a room"),
            },
            LEAVE => {
                *seat = None;
                Reply::empty()
            }
            STATE => match seat {
                Some(room) => Reply::ok(room.state()),
                None => Reply::error(Status::BAD_REQUEST, "not in a room"),
            },
            _ => Reply::unknown_route(route),
        }
    }

    async fn disconnect(&self, _: Self::Session, _: Disconnect) {}
}
