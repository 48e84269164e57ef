//! A handler that waits does not stop its connection, over real sockets: while it
//! waits, its room's deltas and its own pushes go out as they come, pings are
//! answered, and the connection's limits still hold; what arrives meanwhile waits
//! for it, in the order it came, so answers keep their order; a peer that closes its
//! side still gets them; a handler that never stops being ready still times out.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::room::{Membership, Origin, Refusal, Room, RoomContext, RoomOptions, Rooms};
use gatehouse::{ConnId, Context, Disconnect, KickReason, Message, Reply, Service};
use support::{at_deadline, keep_the_clock_stepping, test_config, Record, TestServer, PATIENCE};
use tokio::time::Instant;

/// Client routes of the test game.
mod routes {
    /// Request: joins the ticking room.
    pub(crate) const JOIN: u16 = 1;
    /// Request, payload: u32 BE milliseconds: pushes STARTED, sleeps that long, then
    /// answers.
    pub(crate) const SLEEP: u16 = 2;
    /// Request: answers its payload (an async handler, so it waits its turn).
    pub(crate) const ECHO: u16 = 3;
    /// Request: never answers.
    pub(crate) const HANG: u16 = 4;
    /// Request: pushes STARTED, kicks its own connection, sleeps 300 ms, answers.
    pub(crate) const KICK_SELF: u16 = 5;
    /// Request: marks the session dirty, sleeps 1 s, answers.
    pub(crate) const DIRTY: u16 = 6;
    /// Request: marks the session dirty and answers.
    pub(crate) const MARK: u16 = 8;
    /// Request: starts three session timers (50, 100, 150 ms), sleeps 1 s, answers.
    pub(crate) const TIMERS: u16 = 7;
    /// Request: never answers, and is ready again at every poll, pushing SPIN.
    pub(crate) const SPIN: u16 = 9;
    /// Request: kicks its own connection, sleeps 100 ms, panics.
    pub(crate) const KICK_THEN_PANIC: u16 = 10;
    /// Push: the session's checkpoint ran.
    pub(crate) const CHECKPOINTED: u16 = 102;
    /// Push: a session timer's message was handled; payload: its number.
    pub(crate) const FIRED: u16 = 103;
    /// Push: the room's tick number, u64 BE, every tick.
    pub(crate) const DELTA: u16 = 100;
    /// Push: SLEEP has started.
    pub(crate) const STARTED: u16 = 101;
}

/// A room that pushes its tick number to every member at every tick.
struct Ticker {
    ticks: u64,
}

impl Room for Ticker {
    type Config = ();
    type Join = ();
    type Message = ();
    type Snapshot = ();

    fn create(_name: &str, _config: &(), _restored: Option<()>) -> Self {
        Ticker { ticks: 0 }
    }

    fn join(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId, _: &()) -> Result<(), Refusal> {
        Ok(())
    }

    fn leave(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId) {}

    fn message(&mut self, _: &mut RoomContext<'_, Self>, _: Origin, _: ()) {}

    fn tick(&mut self, ctx: &mut RoomContext<'_, Self>, _dt: Duration) {
        self.ticks += 1;
        ctx.broadcast(routes::DELTA, self.ticks.to_be_bytes().to_vec());
    }
}

struct Game {
    rooms: Rooms<Ticker>,
}

#[derive(Default)]
struct Session {
    room: Option<Membership<Ticker>>,
}

impl Service for Game {
    type Session = Session;
    type Message = u8;

    async fn connect(&self, _ctx: &mut Context<'_, u8>) -> Session {
        Session::default()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, u8>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            routes::JOIN => match self.rooms.join("ticker", ctx, ()).await {
                Ok(membership) => {
                    session.room = Some(membership);
                    Reply::empty()
                }
                Err(e) => Reply::error(e.status(), e.to_string()),
            },
            routes::SLEEP => {
                let millis = u32::from_be_bytes(payload[..4].try_into().unwrap());
                ctx.push(routes::STARTED, "started");
                tokio::time::sleep(Duration::from_millis(millis.into())).await;
                Reply::ok("slept")
            }
            routes::ECHO => Reply::ok(payload),
            routes::HANG => std::future::pending().await,
            routes::SPIN => loop {
                ctx.push(routes::STARTED, "spin");
                tokio::task::yield_now().await;
            },
            routes::KICK_THEN_PANIC => {
                ctx.kick(KickReason::KICKED, "banned");
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("the audit write failed");
            }
            routes::KICK_SELF => {
                ctx.push(routes::STARTED, "started");
                ctx.kick(KickReason::KICKED, "by its own handler");
                tokio::time::sleep(Duration::from_millis(300)).await;
                Reply::ok("kicked myself")
            }
            routes::MARK => {
                ctx.mark_dirty();
                Reply::empty()
            }
            routes::DIRTY => {
                ctx.mark_dirty();
                tokio::time::sleep(Duration::from_secs(1)).await;
                Reply::ok("dirty")
            }
            routes::TIMERS => {
                for n in 1..=3u8 {
                    ctx.after(Duration::from_millis(50 * u64::from(n)), n)
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                Reply::ok("timers")
            }
            _ => Reply::unknown_route(route),
        }
    }

    async fn message(&self, _session: &mut Session, ctx: &mut Context<'_, u8>, n: u8) {
        ctx.push(routes::FIRED, vec![n]);
    }

    fn checkpoint(&self, _session: &mut Session, ctx: &mut Context<'_, u8>) {
        ctx.push(routes::CHECKPOINTED, "checkpoint");
    }

    async fn disconnect(&self, _session: Session, _info: Disconnect) {}
}

/// The period of the test room's ticks.
const TICK: Duration = Duration::from_millis(50);

async fn start(config: gatehouse::Config) -> TestServer {
    let options = RoomOptions {
        tick: Some(TICK),
        ..RoomOptions::default()
    };
    let rooms = Rooms::new((), options).unwrap();
    TestServer::start_service(config, Game { rooms }, Arc::new(Record::default())).await
}

fn request(id: u32, route: u16, payload: impl Into<Bytes>) -> Message {
    Message::Request {
        id,
        route,
        payload: payload.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_handler_sleeps_its_room_deltas_its_pushes_and_pongs_go_out_and_answers_keep_their_order(
) {
    let server = start(test_config()).await;
    let mut client = server.connect().await;
    client.send(&request(1, routes::JOIN, "")).await;
    // The handler sleeps 2 s: 40 ticks of the room.
    client
        .send(&request(2, routes::SLEEP, 2000u32.to_be_bytes().to_vec()))
        .await;
    client.send(&request(3, routes::ECHO, "after")).await;
    client.send(&Message::Ping(Bytes::from_static(b"p"))).await;

    // Everything up to the echo's answer, with when it arrived.
    let mut seen: Vec<(Instant, Message)> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !matches!(seen.last(), Some((_, Message::Response { id: 3, .. }))) {
        assert!(Instant::now() < deadline, "no answer to the echo: {seen:?}");
        let message = client.recv().await.expect("the connection stays open");
        seen.push((Instant::now(), message));
    }
    let position = |wanted: &dyn Fn(&Message) -> bool| {
        seen.iter()
            .position(|(_, m)| wanted(m))
            .unwrap_or_else(|| panic!("missing from {seen:?}"))
    };
    let slept = position(&|m| matches!(m, Message::Response { id: 2, .. }));
    let started = position(&|m| {
        matches!(
            m,
            Message::Push {
                route: routes::STARTED,
                ..
            }
        )
    });
    let pong = position(&|m| matches!(m, Message::Pong(_)));
    let joined = position(&|m| matches!(m, Message::Response { id: 1, .. }));
    assert!(joined < started && started < slept, "{seen:?}");
    assert!(
        pong < slept,
        "the ping is answered while the handler sleeps"
    );
    assert_eq!(
        position(&|m| matches!(m, Message::Response { id: 3, .. })),
        slept + 1,
        "the echo waits for the handler before it, and is answered right after"
    );

    // The room's deltas arrived while the handler slept, as they were made, not
    // in a lump when it woke.
    let deltas: Vec<Instant> = seen[started..slept]
        .iter()
        .filter(|(_, m)| {
            matches!(
                m,
                Message::Push {
                    route: routes::DELTA,
                    ..
                }
            )
        })
        .map(|(at, _)| *at)
        .collect();
    assert!(
        deltas.len() >= 30,
        "only {} deltas of about 40 arrived during the sleep",
        deltas.len()
    );
    let spread = *deltas.last().unwrap() - deltas[0];
    assert!(
        spread >= Duration::from_secs(1),
        "the deltas arrived within {spread:?} of each other: held back, then sent together"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_sent_while_a_handler_waits_is_kicked_dos_without_waiting_for_the_handler() {
    let mut config = test_config();
    config.limits.inbound_frames_per_sec = 10;
    config.limits.inbound_frames_burst = 10;
    config.limits.handler_timeout = Duration::from_secs(60);
    let server = start(config).await;
    let mut client = server.connect().await;
    client.send(&request(1, routes::HANG, "")).await;
    let started = Instant::now();
    for _ in 0..50 {
        client.send(&Message::Empty).await;
    }
    assert_eq!(client.expect_kick().await, KickReason::DOS);
    assert!(
        started.elapsed() < PATIENCE,
        "kicked only after {:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_while_its_handler_waits_is_kicked_idle_at_its_deadline() {
    keep_the_clock_stepping();
    let idle_timeout = Duration::from_secs(3);
    let mut config = test_config();
    config.limits.idle_timeout = idle_timeout;
    config.limits.handler_timeout = Duration::from_secs(60);
    let server = start(config).await;
    let mut client = server.connect().await;
    let sent = Instant::now();
    client.send(&request(1, routes::HANG, "")).await;
    assert_eq!(client.expect_kick().await, KickReason::IDLE);
    let at = sent.elapsed();
    assert!(at_deadline(at, idle_timeout), "kicked after {at:?}");
    server.shutdown().await.unwrap();
}

/// Reads frames until the response to request `id`; returns what came before it.
async fn until_response(client: &mut support::Client, id: u32) -> Vec<Message> {
    let mut before = Vec::new();
    loop {
        match client.recv().await {
            Some(Message::Response { id: rid, .. }) if rid == id => return before,
            Some(other) => before.push(other),
            None => panic!("closed before the response to {id}: {before:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_by_a_handler_that_then_waits_closes_the_connection_after_its_answer() {
    let server = start(test_config()).await;
    let mut client = server.connect().await;
    client.send(&request(1, routes::KICK_SELF, "")).await;
    client.send(&Message::Ping(Bytes::from_static(b"p"))).await;
    let before = until_response(&mut client, 1).await;
    assert!(
        matches!(
            before.as_slice(),
            [
                Message::Push {
                    route: routes::STARTED,
                    ..
                },
                Message::Pong(_)
            ]
        ),
        "the push and the pong go out while it waits: {before:?}"
    );
    assert_eq!(client.expect_kick().await, KickReason::KICKED);
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_change_is_checkpointed_one_interval_later_or_after_the_handler_that_holds_the_session() {
    keep_the_clock_stepping();
    let interval = Duration::from_millis(300);
    let mut config = test_config();
    config.limits.checkpoint_interval = interval;
    let server = start(config).await;
    let mut client = server.connect().await;
    // A handler that returns at once: the checkpoint comes one interval after.
    let marked = Instant::now();
    assert!(client.request(routes::MARK, "").await.0.is_ok());
    assert_eq!(client.expect_push().await.0, routes::CHECKPOINTED);
    let at = marked.elapsed();
    assert!(at_deadline(at, interval), "checkpointed after {at:?}");
    // One that marks, then waits a second: due meanwhile, the checkpoint waits for
    // the session to come back, right after the answer.
    client.send(&request(2, routes::DIRTY, "")).await;
    let before = until_response(&mut client, 2).await;
    assert!(
        before.is_empty(),
        "no checkpoint while the handler has the session: {before:?}"
    );
    assert_eq!(client.expect_push().await.0, routes::CHECKPOINTED);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_delivered_while_a_handler_waits_are_handled_after_it_in_order() {
    let server = start(test_config()).await;
    let mut client = server.connect().await;
    client.send(&request(1, routes::TIMERS, "")).await;
    let before = until_response(&mut client, 1).await;
    assert!(
        before.is_empty(),
        "no message handler while the handler waits: {before:?}"
    );
    for n in 1..=3u8 {
        assert_eq!(
            client.expect_push().await,
            (routes::FIRED, Bytes::from(vec![n]))
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_closes_its_side_while_a_handler_waits_gets_every_answer_it_is_owed() {
    let server = start(test_config()).await;
    let mut client = server.connect().await;
    client
        .send(&request(1, routes::SLEEP, 300u32.to_be_bytes().to_vec()))
        .await;
    for id in 2..=4 {
        client.send(&request(id, routes::ECHO, "after")).await;
    }
    tokio::io::AsyncWriteExt::shutdown(&mut client.stream)
        .await
        .unwrap();
    let mut answered = Vec::new();
    while let Some(message) = client.recv().await {
        if let Message::Response { id, .. } = message {
            answered.push(id);
        }
    }
    assert_eq!(answered, [1, 2, 3, 4], "then the connection closes");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_is_ready_at_every_poll_still_runs_out_of_time() {
    let mut config = test_config();
    config.limits.handler_timeout = Duration::from_secs(1);
    config.limits.outbound_queue_bytes = 64 << 20;
    let server = start(config).await;
    let mut client = server.connect().await;
    let started = Instant::now();
    client.send(&request(1, routes::SPIN, "")).await;
    assert_eq!(client.expect_kick().await, KickReason::INTERNAL_ERROR);
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_a_handler_made_before_it_panicked_is_the_reason_the_connection_ends() {
    let server = start(test_config()).await;
    let mut client = server.connect().await;
    client.send(&request(1, routes::KICK_THEN_PANIC, "")).await;
    assert_eq!(client.expect_kick().await, KickReason::KICKED);
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn what_arrives_while_a_handler_waits_runs_after_it_in_the_order_it_came() {
    keep_the_clock_stepping();
    let server = start(test_config()).await;
    let mut client = server.connect().await;
    // Three timer messages come at 50, 100 and 150 ms; the echo at 300 ms.
    client.send(&request(1, routes::TIMERS, "")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(&request(2, routes::ECHO, "late")).await;
    assert!(until_response(&mut client, 1).await.is_empty());
    let before = until_response(&mut client, 2).await;
    let fired: Vec<_> = before
        .iter()
        .map(|m| match m {
            Message::Push {
                route: routes::FIRED,
                payload,
            } => payload[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fired, [1, 2, 3], "the messages came first");
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_pipelining_client_is_not_idle_while_what_it_sent_waits_behind_a_handler() {
    keep_the_clock_stepping();
    let idle_timeout = Duration::from_secs(1);
    let mut config = test_config();
    config.limits.idle_timeout = idle_timeout;
    let server = start(config).await;
    let mut client = server.connect().await;
    // More requests than may be held behind the 3-second handler, and one larger
    // than what may be held at all: the rest wait in the input, unread.
    client
        .send(&request(1, routes::SLEEP, 3000u32.to_be_bytes().to_vec()))
        .await;
    for id in 2..=30 {
        client.send(&request(id, routes::ECHO, "queued")).await;
    }
    client
        .send(&request(31, routes::ECHO, vec![b'x'; 20 * 1024]))
        .await;
    for id in 1..=31 {
        until_response(&mut client, id).await;
    }
    server.shutdown().await.unwrap();
}
