//! Rooms and timers over real sockets: a room that panics restarts (members stay
//! connected and are told) without touching other rooms; restart intensity closes it
//! and kicks its members `room_closed`; a restart can resume from a snapshot; a
//! member's messages arrive in order; a member flooding its room is kicked `dos`;
//! ticks keep their rate under load; timers of sessions and rooms fire and end with
//! their owner.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::protocol::ROUTE_ROOM_RESTARTED;
use gatehouse::room::{
    Membership, Origin, Refusal, Restart, Room, RoomContext, RoomOptions, Rooms, StopReason,
};
use gatehouse::{ConnId, Context, Disconnect, KickReason, Message, Reply, Service, Status};
use support::{
    eventually, keep_the_clock_stepping, test_config, Client, Record, TestServer, PATIENCE,
};
use tokio::time::Instant;

/// Client routes of the test game.
#[allow(unreachable_pub)]
mod routes {
    /// Request, payload: room name. Joins it.
    pub const JOIN: u16 = 1;
    /// Notify, payload: u32 BE sequence number, sent to the room.
    pub const SEQ: u16 = 2;
    /// Request: the room panics at its next tick.
    pub const CRASH: u16 = 3;
    /// Request: the room's next tick adds a million to its count, then panics.
    pub const CRASH_MID_STEP: u16 = 10;
    /// Request, payload: u32 BE milliseconds: a session timer pushes "fired" then.
    pub const AFTER: u16 = 4;
    /// Request: the room blocks its thread for 300 ms on this message.
    pub const STALL: u16 = 5;
    /// Request, payload: u32 BE milliseconds: a session timer holding a probe.
    pub const PROBE_TIMER: u16 = 6;
    /// Request, payload: u32 BE milliseconds: a room timer holding a probe.
    pub const ROOM_PROBE_TIMER: u16 = 7;
    /// Request: the room pushes its own tick count (u64 BE) on TICKS.
    pub const REPORT: u16 = 8;
    /// Request: from now on each of the room's ticks takes 20 ms (longer than its period).
    pub const SLOW_TICKS: u16 = 9;
    /// Push from a session timer.
    pub const FIRED: u16 = 100;
    /// Push: the room's tick count.
    pub const TICKS: u16 = 101;
}

/// What the rooms saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// Last sequence number per member, and whether any came out of order.
    last_seq: Mutex<HashMap<ConnId, u32>>,
    out_of_order: AtomicUsize,
    /// Ticks per room life: the value a snapshot carries over.
    stopped: Mutex<Vec<(String, StopReason)>>,
    /// Something for timers to hold: its count shows whether they were dropped.
    probe: Arc<()>,
}

enum ToRoom {
    Seq(u32),
    Crash,
    CrashMidStep,
    Stall,
    Probe(Arc<()>),
    Report,
    SlowTicks,
}

struct TestRoom {
    seen: Arc<Seen>,
    crash_next_tick: bool,
    crash_mid_step: bool,
    slow_ticks: bool,
    /// Carried across restarts with `Restart::FromSnapshot`.
    ticks: u64,
    _timers: Vec<gatehouse::timer::Timer>,
}

impl Room for TestRoom {
    type Config = Arc<Seen>;
    type Join = ();
    type Message = ToRoom;
    type Snapshot = u64;

    fn create(_name: &str, seen: &Arc<Seen>, restored: Option<u64>) -> Self {
        TestRoom {
            seen: seen.clone(),
            crash_next_tick: false,
            crash_mid_step: false,
            slow_ticks: false,
            ticks: restored.unwrap_or(0),
            _timers: Vec::new(),
        }
    }

    fn join(
        &mut self,
        ctx: &mut RoomContext<'_, Self>,
        _member: ConnId,
        _: &(),
    ) -> Result<(), Refusal> {
        if ctx.name().starts_with("closed") {
            return Err(Refusal::new(Status(1099), "no entry"));
        }
        Ok(())
    }

    fn leave(&mut self, _ctx: &mut RoomContext<'_, Self>, _member: ConnId) {}

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, message: ToRoom) {
        match message {
            ToRoom::Seq(n) => {
                let Origin::Member(id) = from else { return };
                let mut last = self.seen.last_seq.lock().unwrap();
                let previous = last.insert(id, n).unwrap_or(0);
                if n != previous + 1 {
                    self.seen.out_of_order.fetch_add(1, Ordering::SeqCst);
                }
            }
            ToRoom::Crash => self.crash_next_tick = true,
            ToRoom::CrashMidStep => self.crash_mid_step = true,
            ToRoom::SlowTicks => self.slow_ticks = true,
            ToRoom::Stall => std::thread::sleep(Duration::from_millis(300)),
            ToRoom::Report => {
                if let Origin::Member(id) = from {
                    ctx.push(id, routes::TICKS, self.ticks.to_be_bytes().to_vec());
                }
            }
            ToRoom::Probe(probe) => {
                let timer = ctx
                    .after(Duration::from_secs(60), ToRoom::Probe(probe))
                    .unwrap();
                self._timers.push(timer);
            }
        }
    }

    fn tick(&mut self, _ctx: &mut RoomContext<'_, Self>, _dt: Duration) {
        self.ticks += 1;
        if self.slow_ticks {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.crash_mid_step {
            self.ticks += 1_000_000;
            panic!("test room crash halfway through tick {}", self.ticks);
        }
        if self.crash_next_tick {
            panic!("test room crash at tick {}", self.ticks);
        }
    }

    fn snapshot(&self) -> Option<u64> {
        Some(self.ticks)
    }

    fn stopped(&mut self, ctx: &mut RoomContext<'_, Self>, reason: StopReason) {
        self.seen
            .stopped
            .lock()
            .unwrap()
            .push((ctx.name().to_owned(), reason));
    }
}

struct Game {
    rooms: Rooms<TestRoom>,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Session {
    room: Option<Membership<TestRoom>>,
}

fn millis(payload: &Bytes) -> Duration {
    Duration::from_millis(u32::from_be_bytes(payload[..4].try_into().unwrap()).into())
}

impl Service for Game {
    type Session = Session;
    type Message = Option<Arc<()>>;

    async fn connect(&self, _ctx: &mut Context<'_, Option<Arc<()>>>) -> Session {
        Session::default()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, Option<Arc<()>>>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            routes::JOIN => {
                let name = String::from_utf8_lossy(&payload).into_owned();
                session.room = None;
                match self.rooms.join(&name, ctx, ()).await {
                    Ok(membership) => {
                        session.room = Some(membership);
                        Reply::empty()
                    }
                    Err(e) => Reply::error(e.status(), e.to_string()),
                }
            }
            routes::CRASH => to_room(&session.room, ToRoom::Crash).await,
            routes::CRASH_MID_STEP => to_room(&session.room, ToRoom::CrashMidStep).await,
            routes::STALL => to_room(&session.room, ToRoom::Stall).await,
            routes::REPORT => to_room(&session.room, ToRoom::Report).await,
            routes::SLOW_TICKS => to_room(&session.room, ToRoom::SlowTicks).await,
            routes::ROOM_PROBE_TIMER => {
                to_room(&session.room, ToRoom::Probe(self.seen.probe.clone())).await
            }
            routes::AFTER => {
                ctx.after(millis(&payload), None).unwrap();
                Reply::empty()
            }
            routes::PROBE_TIMER => {
                let probe = Some(self.seen.probe.clone());
                ctx.after(millis(&payload), probe).unwrap();
                Reply::empty()
            }
            _ => Reply::unknown_route(route),
        }
    }

    async fn notify(
        &self,
        session: &mut Session,
        _ctx: &mut Context<'_, Option<Arc<()>>>,
        route: u16,
        payload: Bytes,
    ) -> Status {
        if route != routes::SEQ {
            return Status::UNKNOWN_ROUTE;
        }
        let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
        match &session.room {
            Some(room) => match room.send(ToRoom::Seq(n)).await {
                Ok(()) => Status::OK,
                Err(e) => e.status(),
            },
            None => Status::BAD_REQUEST,
        }
    }

    async fn message(
        &self,
        _session: &mut Session,
        ctx: &mut Context<'_, Option<Arc<()>>>,
        _message: Option<Arc<()>>,
    ) {
        ctx.push(routes::FIRED, "fired");
    }

    async fn disconnect(&self, _session: Session, _info: Disconnect) {}
}

/// Sends `message` to the session's room as its member.
async fn to_room(room: &Option<Membership<TestRoom>>, message: ToRoom) -> Reply {
    match room {
        Some(room) => room.send(message).await.map_or_else(
            |e| Reply::error(e.status(), e.to_string()),
            |()| Reply::empty(),
        ),
        None => Reply::error(Status::BAD_REQUEST, "not in a room"),
    }
}

struct Started {
    server: TestServer,
    rooms: Rooms<TestRoom>,
    seen: Arc<Seen>,
}

async fn start(options: RoomOptions) -> Started {
    let seen = Arc::new(Seen::default());
    let rooms = Rooms::new(seen.clone(), options).unwrap();
    let game = Game {
        rooms: rooms.clone(),
        seen: seen.clone(),
    };
    let server = TestServer::start_service(test_config(), game, Arc::new(Record::default())).await;
    Started {
        server,
        rooms,
        seen,
    }
}

fn ticking(period_ms: u64) -> RoomOptions {
    RoomOptions {
        tick: Some(Duration::from_millis(period_ms)),
        ..RoomOptions::default()
    }
}

async fn joined(server: &TestServer, room: &str) -> Client {
    let mut client = server.connect().await;
    let (status, text) = client.request(routes::JOIN, room.to_owned()).await;
    assert!(status.is_ok(), "join {room}: {status} {text:?}");
    client
}

/// Reads pushes until the room-restarted notice; panics on a kick or EOF.
async fn expect_restart_notice(client: &mut Client) -> Bytes {
    loop {
        match client.recv().await {
            Some(Message::Push { route, payload }) if route == ROUTE_ROOM_RESTARTED => {
                return payload
            }
            Some(Message::Push { .. }) => continue,
            other => panic!("expected the restart notice, got {other:?}"),
        }
    }
}

fn stats(rooms: &Rooms<TestRoom>, name: &str) -> gatehouse::room::RoomStats {
    rooms
        .list()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("room {name} runs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_panics_mid_tick_restarts_its_members_stay_connected_and_other_rooms_tick_on() {
    let Started { server, rooms, .. } = start(ticking(10)).await;
    let mut a1 = joined(&server, "a").await;
    let mut a2 = joined(&server, "a").await;
    let _b = joined(&server, "b").await;
    let b_before = stats(&rooms, "b").ticks;

    assert!(a1.request(routes::CRASH, "").await.0.is_ok());
    assert_eq!(expect_restart_notice(&mut a1).await, "a");
    assert_eq!(expect_restart_notice(&mut a2).await, "a");
    // Still connected, still members: the fresh room takes their messages.
    assert!(a1.request(routes::CRASH, "").await.0.is_ok());
    assert_eq!(expect_restart_notice(&mut a2).await, "a");
    let a = stats(&rooms, "a");
    assert_eq!((a.restarts, a.members), (2, 2));
    // The other room never stopped ticking and never restarted.
    let b = eventually("b ticks on", || {
        let b = stats(&rooms, "b");
        (b.ticks >= b_before + 5).then_some(b)
    })
    .await;
    assert_eq!(b.restarts, 0);
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_past_the_restart_intensity_closes_the_room_and_kicks_its_members_room_closed() {
    let options = RoomOptions {
        max_restarts: 2,
        restart_window: Duration::from_secs(60),
        ..ticking(10)
    };
    let Started {
        server,
        rooms,
        seen,
    } = start(options).await;
    let mut a = joined(&server, "a").await;
    let mut elsewhere = joined(&server, "b").await;
    for _ in 0..2 {
        assert!(a.request(routes::CRASH, "").await.0.is_ok());
        expect_restart_notice(&mut a).await;
    }
    assert!(a.request(routes::CRASH, "").await.0.is_ok());
    assert_eq!(a.expect_kick().await, KickReason::ROOM_CLOSED);
    eventually("room a gone", || rooms.get("a").is_none().then_some(())).await;
    // The member of the other room is untouched.
    assert!(elsewhere
        .request(routes::AFTER, 0u32.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    assert_eq!(elsewhere.expect_push().await.0, routes::FIRED);
    assert!(
        seen.stopped.lock().unwrap().is_empty(),
        "no stopped hook for a crash"
    );
    // The name is free again: a new room "a" starts fresh.
    let _again = joined(&server, "a").await;
    assert_eq!(stats(&rooms, "a").restarts, 0);
    assert!(server.shutdown().await.is_ok());
}

/// The room's own tick count, as it reports it.
async fn room_ticks(client: &mut Client) -> u64 {
    let (status, _, pushes) = client.request_seeing_pushes(routes::REPORT, "").await;
    assert!(status.is_ok());
    let mut pushes = pushes.into_iter();
    loop {
        let (route, payload) = match pushes.next() {
            Some(push) => push,
            None => client.expect_push().await,
        };
        if route == routes::TICKS {
            return u64::from_be_bytes(payload[..8].try_into().unwrap());
        }
    }
}

async fn ticks_after_a_crash(restart: Restart) -> (u64, u64) {
    ticks_after(restart, routes::CRASH).await
}

async fn ticks_after(restart: Restart, crash: u16) -> (u64, u64) {
    let options = RoomOptions {
        restart,
        ..ticking(5)
    };
    let Started { server, .. } = start(options).await;
    let mut a = joined(&server, "a").await;
    let deadline = Instant::now() + PATIENCE;
    let mut before = 0;
    while before < 40 {
        assert!(Instant::now() < deadline, "the room ticks");
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = room_ticks(&mut a).await;
    }
    assert!(a.request(crash, "").await.0.is_ok());
    expect_restart_notice(&mut a).await;
    let after = room_ticks(&mut a).await;
    assert!(server.shutdown().await.is_ok());
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_restarted_from_its_snapshot_keeps_its_state_and_a_fresh_one_does_not() {
    let (before, after) = ticks_after_a_crash(Restart::FromSnapshot).await;
    assert!(
        after >= before,
        "resumed from the last tick's snapshot: {before} -> {after}"
    );
    let (before, after) = ticks_after_a_crash(Restart::Fresh).await;
    assert!(after < before, "started over: {before} -> {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_restarts_from_its_last_whole_tick_not_from_one_that_panicked_halfway() {
    let (before, after) = ticks_after(Restart::FromSnapshot, routes::CRASH_MID_STEP).await;
    assert!(
        after >= before && after < 1_000_000,
        "not the half-stepped state: {before} -> {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_messages_reach_the_room_in_order() {
    // Queues far deeper than the mailbox: members wait for room instead of flooding.
    let options = RoomOptions {
        mailbox: 16,
        member_queue: 100_000,
        ..RoomOptions::default()
    };
    let Started { server, seen, .. } = start(options).await;
    let mut clients = vec![joined(&server, "a").await, joined(&server, "a").await];
    let n = 2_000u32;
    for i in 1..=n {
        for client in &mut clients {
            client
                .send(&Message::Notify {
                    route: routes::SEQ,
                    payload: i.to_be_bytes().to_vec().into(),
                })
                .await;
        }
    }
    eventually("every message handled", || {
        let last = seen.last_seq.lock().unwrap();
        (last.len() == 2 && last.values().all(|&v| v == n)).then_some(())
    })
    .await;
    assert_eq!(seen.out_of_order.load(Ordering::SeqCst), 0);
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_its_room_is_kicked_dos_and_the_room_goes_on() {
    let options = RoomOptions {
        member_queue: 4,
        ..RoomOptions::default()
    };
    let Started { server, rooms, .. } = start(options).await;
    let mut flooder = joined(&server, "a").await;
    let mut calm = joined(&server, "a").await;
    // The room is busy for 300 ms; meanwhile one member sends far more than 4.
    assert!(calm.request(routes::STALL, "").await.0.is_ok());
    for i in 1..=50u32 {
        flooder
            .send(&Message::Notify {
                route: routes::SEQ,
                payload: i.to_be_bytes().to_vec().into(),
            })
            .await;
    }
    assert_eq!(flooder.expect_kick().await, KickReason::DOS);
    // The calm member is still served by the room.
    assert_eq!(room_ticks(&mut calm).await, 0);
    assert_eq!(stats(&rooms, "a").members, 1);
    assert!(server.shutdown().await.is_ok());
}

/// On paused time, the rate of ticks is exact whatever the machine does: each is due
/// at start + n periods, whatever the handlers between them. (How late they run on
/// a loaded machine is measured by `scripts/bench-arena.sh`, not asserted here.)
#[tokio::test(start_paused = true)]
async fn ticks_keep_their_deadlines_under_load_and_their_lateness_is_measured() {
    keep_the_clock_stepping();
    let Started { server, rooms, .. } = start(ticking(50)).await;
    let _member = joined(&server, "a").await;
    let started = Instant::now();
    let ticks_at_start = stats(&rooms, "a").ticks;
    // Load: 20 clients each sending a request every 5 ms for 2 s (the paused clock
    // moves only while everyone waits, so a client that never paused would send
    // without end in no time).
    let mut load = Vec::new();
    for _ in 0..20 {
        let mut client = server.connect().await;
        load.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                // Not a member: answered at once with an error.
                let _ = client.request(routes::REPORT, "").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for task in load {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let ticks = stats(&rooms, "a").ticks - ticks_at_start;
    let expected = elapsed.as_millis() as u64 / 50;
    // Deadline-based: the count follows the clock (no drift), within a tick for the
    // moments the test read it.
    assert!(
        ticks + 1 >= expected && ticks <= expected + 1,
        "{ticks} ticks in {elapsed:?} at 20 Hz"
    );
    let lateness = rooms.lateness();
    assert!(lateness.ticks >= ticks);
    assert!(lateness.p99 < Duration::from_millis(50), "{lateness:?}");
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_timer_fires_and_is_cancelled_when_its_session_ends() {
    let Started { server, seen, .. } = start(RoomOptions::default()).await;
    let mut client = server.connect().await;
    let started = Instant::now();
    assert!(client
        .request(routes::AFTER, 100u32.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    assert_eq!(
        client.expect_push().await,
        (routes::FIRED, Bytes::from("fired"))
    );
    assert!(started.elapsed() >= Duration::from_millis(100));

    // A timer due in a minute holds the probe until its session ends.
    assert!(client
        .request(routes::PROBE_TIMER, 60_000u32.to_be_bytes().to_vec())
        .await
        .0
        .is_ok());
    assert_eq!(Arc::strong_count(&seen.probe), 2);
    drop(client);
    eventually("the timer dropped with its session", || {
        (Arc::strong_count(&seen.probe) == 1).then_some(())
    })
    .await;
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_timer_is_cancelled_when_its_room_stops() {
    let Started {
        server,
        rooms,
        seen,
    } = start(RoomOptions::default()).await;
    let mut client = joined(&server, "a").await;
    assert!(client.request(routes::ROOM_PROBE_TIMER, "").await.0.is_ok());
    eventually("the room's timer holds the probe", || {
        (Arc::strong_count(&seen.probe) == 2).then_some(())
    })
    .await;
    // The last member leaves: the room stops (empty), and its timer with it.
    drop(client);
    eventually("the room stopped", || rooms.is_empty().then_some(())).await;
    eventually("its timer dropped", || {
        (Arc::strong_count(&seen.probe) == 1).then_some(())
    })
    .await;
    assert_eq!(
        seen.stopped.lock().unwrap().as_slice(),
        &[("a".to_owned(), StopReason::Empty)]
    );
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_answers_the_rooms_status_and_shutdown_stops_every_room() {
    let Started {
        server,
        rooms,
        seen,
    } = start(ticking(10)).await;
    let mut client = server.connect().await;
    let (status, text) = client.request(routes::JOIN, "closed-room").await;
    assert_eq!(status, Status(1099));
    assert!(String::from_utf8_lossy(&text).contains("no entry"));
    let _a = joined(&server, "a").await;
    let _b = joined(&server, "b").await;
    // A room nobody joined yet does not close for being empty.
    let _waiting = rooms.create("waiting").unwrap();
    assert!(server.shutdown().await.is_ok());
    // The server's shutdown made every member leave: their rooms closed empty (the
    // one whose only join was refused too); the rooms' shutdown stops the rest.
    eventually("a and b closed", || (rooms.len() == 1).then_some(())).await;
    assert_eq!(rooms.shutdown(PATIENCE).await, Ok(()));
    let mut stopped = seen.stopped.lock().unwrap().clone();
    stopped.sort_by(|x, y| x.0.cmp(&y.0));
    let expected = [
        ("a", StopReason::Empty),
        ("b", StopReason::Empty),
        ("closed-room", StopReason::Empty),
        ("waiting", StopReason::Shutdown),
    ];
    let expected: Vec<_> = expected.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    assert_eq!(stopped, expected);
    assert!(rooms.create("late").is_err(), "no room after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_ticks_overrun_still_serves_its_members_and_counts_them_late() {
    let Started { server, rooms, .. } = start(ticking(5)).await;
    let mut member = joined(&server, "a").await;
    assert!(member.request(routes::SLOW_TICKS, "").await.0.is_ok());
    eventually("the room falls behind", || {
        (stats(&rooms, "a").late_ticks >= 10).then_some(())
    })
    .await;
    // Every tick takes four periods: the room is always behind, yet answers.
    let started = Instant::now();
    let ticks = room_ticks(&mut member).await;
    assert!(ticks > 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let stats = stats(&rooms, "a");
    assert!(stats.late_ticks > 0, "{stats:?}");
    assert!(server.shutdown().await.is_ok());
}
