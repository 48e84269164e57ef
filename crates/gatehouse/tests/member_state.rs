//! State a room owns for each member, over real sockets: what the room records
//! (`RoomContext::set_member_state`) is what the member's session reads at once from
//! its membership and saves in its disconnect hook, and a room restarted after a
//! crash joins each member again with it; the registry knows which room a connection
//! is in while its membership lives.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gatehouse::protocol::ROUTE_ROOM_RESTARTED;
use gatehouse::room::{Membership, Origin, Refusal, Room, RoomContext, RoomOptions, Rooms};
use gatehouse::{ConnId, Context, Disconnect, Reply, Server, Service, Status};
use support::{test_config, Record, TestServer};
use tokio::sync::oneshot;

/// Request: join the board with the payload's score (u64 BE).
const JOIN: u16 = 1;
/// Request: add the payload (u64 BE) to the caller's score; answered once added.
const ADD: u16 = 2;
/// Request: the caller's score as the session reads it from its membership.
const SCORE: u16 = 3;
/// Request: the caller's score as the room itself holds it.
const ROOM_SCORE: u16 = 4;
/// Request: the room panics.
const CRASH: u16 = 5;

fn number(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().unwrap())
}

enum ToBoard {
    Add(u64, oneshot::Sender<()>),
    Score(oneshot::Sender<u64>),
    Crash,
}

/// Each member's score, owned by the room.
struct Board {
    scores: std::collections::HashMap<ConnId, u64>,
}

impl Room for Board {
    type Config = ();
    type Join = u64;
    type Message = ToBoard;
    type Snapshot = ();

    fn create(_: &str, _: &(), _: Option<()>) -> Self {
        Board {
            scores: Default::default(),
        }
    }

    fn join(
        &mut self,
        _: &mut RoomContext<'_, Self>,
        id: ConnId,
        score: &u64,
    ) -> Result<(), Refusal> {
        self.scores.insert(id, *score);
        Ok(())
    }

    fn leave(&mut self, _: &mut RoomContext<'_, Self>, id: ConnId) {
        self.scores.remove(&id);
    }

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: ToBoard) {
        let Origin::Member(id) = from else { return };
        match message {
            ToBoard::Add(n, done) => {
                let score = self.scores.entry(id).or_default();
                *score += n;
                assert!(ctx.set_member_state(id, *score));
                let _ = done.send(());
            }
            ToBoard::Score(reply) => {
                let _ = reply.send(self.scores.get(&id).copied().unwrap_or_default());
            }
            ToBoard::Crash => panic!("the board crashes"),
        }
    }
}

struct Game {
    rooms: Rooms<Board>,
    /// The scores the disconnect hooks saved.
    saved: Arc<Mutex<Vec<u64>>>,
}

impl Service for Game {
    type Session = Option<Membership<Board>>;
    type Message = ();

    async fn connect(&self, _: &mut Context<'_, ()>) -> Option<Membership<Board>> {
        None
    }

    async fn request(
        &self,
        seat: &mut Option<Membership<Board>>,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        let fail = |e: &dyn std::fmt::Display| Reply::error(Status::UNAVAILABLE, e.to_string());
        if route == JOIN {
            return match self.rooms.join("board", ctx, number(&payload)).await {
                Ok(membership) => {
                    *seat = Some(membership);
                    Reply::empty()
                }
                Err(e) => fail(&e),
            };
        }
        let Some(board) = seat else {
            return Reply::error(Status::BAD_REQUEST, "join first");
        };
        match route {
            ADD => {
                let (done, added) = oneshot::channel();
                if let Err(e) = board.send(ToBoard::Add(number(&payload), done)).await {
                    return fail(&e);
                }
                match added.await {
                    Ok(()) => Reply::empty(),
                    Err(e) => fail(&e),
                }
            }
            SCORE => Reply::ok(board.state().to_be_bytes().to_vec()),
            ROOM_SCORE => {
                let (reply, score) = oneshot::channel();
                if let Err(e) = board.send(ToBoard::Score(reply)).await {
                    return fail(&e);
                }
                match score.await {
                    Ok(score) => Reply::ok(score.to_be_bytes().to_vec()),
                    Err(e) => fail(&e),
                }
            }
            CRASH => match board.send(ToBoard::Crash).await {
                Ok(()) => Reply::empty(),
                Err(e) => fail(&e),
            },
            other => Reply::unknown_route(other),
        }
    }

    async fn disconnect(&self, seat: Option<Membership<Board>>, _: Disconnect) {
        if let Some(board) = seat {
            self.saved.lock().unwrap().push(board.state());
        }
    }
}

async fn start() -> (TestServer, Arc<Mutex<Vec<u64>>>, Rooms<Board>) {
    let rooms = Rooms::new((), RoomOptions::default()).unwrap();
    let saved = Arc::new(Mutex::new(Vec::new()));
    let game = Game {
        rooms: rooms.clone(),
        saved: saved.clone(),
    };
    let server = Server::new(test_config(), game)
        .unwrap()
        .with_rooms("board", &rooms);
    (
        TestServer::serve(server, Arc::new(Record::default())).await,
        saved,
        rooms,
    )
}

async fn score(client: &mut support::Client, route: u16) -> u64 {
    let (status, payload) = client.request(route, "").await;
    assert!(status.is_ok(), "{status:?}");
    number(&payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_room_records_is_what_the_session_reads_and_saves() {
    let (server, saved, rooms) = start().await;
    let mut client = server.connect().await;
    assert!(client
        .request(JOIN, 5u64.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    // Before the room records anything, the state is what the member joined with.
    assert_eq!(score(&mut client, SCORE).await, 5);
    assert!(client
        .request(ADD, 3u64.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    assert_eq!(score(&mut client, SCORE).await, 8);

    let id = support::eventually("the member is seated", || {
        (0..100).map(ConnId).find(|id| rooms.room_of(*id).is_some())
    })
    .await;
    assert_eq!(rooms.room_of(id).as_deref(), Some("board"));

    drop(client);
    support::eventually("the hook saved", || {
        let saved = saved.lock().unwrap();
        (!saved.is_empty()).then(|| saved.clone())
    })
    .await;
    assert_eq!(*saved.lock().unwrap(), vec![8]);
    // The membership went with the session: the room is nobody's.
    assert_eq!(rooms.room_of(id), None);
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_restarted_after_a_crash_joins_each_member_again_with_its_recorded_state() {
    let (server, _saved, _rooms) = start().await;
    let mut client = server.connect().await;
    assert!(client
        .request(JOIN, 5u64.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    assert!(client
        .request(ADD, 3u64.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());

    assert!(client.request(CRASH, "").await.0.is_ok());
    loop {
        match client.recv().await {
            Some(gatehouse::Message::Push { route, .. }) if route == ROUTE_ROOM_RESTARTED => break,
            Some(_) => continue,
            None => panic!("closed before the restart notice"),
        }
    }
    // The fresh room holds the score the crashed one recorded, not the joining 5.
    assert_eq!(score(&mut client, ROOM_SCORE).await, 8);
    assert!(client
        .request(ADD, 1u64.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    assert_eq!(score(&mut client, SCORE).await, 9);
    assert!(server.shutdown().await.is_ok());
}
