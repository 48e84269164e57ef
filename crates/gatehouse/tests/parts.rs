//! The parts a server owns, over real sockets: rooms handed to it push at most its
//! frame limit; at shutdown it runs every disconnect hook, then stops the rooms, then
//! closes the store writer, whose saves have landed; saves that cannot land make
//! `run` say how many; and the server's metrics, with its parts', are readable
//! without the admin listener.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::room::{
    Membership, Origin, Refusal, Room, RoomContext, RoomOptions, Rooms, StopReason,
};
use gatehouse::{
    ConnId, Context, Disconnect, Reply, Server, ServerError, Service, Status, TransportKind,
};
use gatehouse_store::{
    DeadLetter, MemoryStore, Outcome, Record, SaveSlot, SaveWriter, Store, StoreError, Write,
    WriterClosed, WriterConfig,
};
use support::{test_config, Record as Kept, TestServer};

/// Request: join the room "hall".
const JOIN: u16 = 1;
/// Request, payload u32 BE: the room pushes that many bytes to the caller.
const BIG: u16 = 2;
/// Push: the room's big payload.
const PAYLOAD: u16 = 100;

/// What happened, in order, and what the room's pushes returned.
#[derive(Default)]
struct Log {
    events: Mutex<Vec<String>>,
    pushed: Mutex<Vec<bool>>,
}

impl Log {
    fn note(&self, event: impl Into<String>) {
        self.events.lock().unwrap().push(event.into());
    }
}

struct Hall {
    log: Arc<Log>,
}

impl Room for Hall {
    type Config = Arc<Log>;
    type Join = ();
    type Message = usize;
    type Snapshot = ();

    fn create(_name: &str, log: &Arc<Log>, _restored: Option<()>) -> Self {
        Hall { log: log.clone() }
    }

    fn join(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId, _: &()) -> Result<(), Refusal> {
        Ok(())
    }

    fn leave(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId) {}

    fn message(&mut self, ctx: &mut RoomContext<'_, Self>, from: Origin, size: usize) {
        if let Origin::Member(id) = from {
            let took = ctx.push(id, PAYLOAD, vec![b'x'; size]);
            self.log.pushed.lock().unwrap().push(took);
        }
    }

    fn stopped(&mut self, _: &mut RoomContext<'_, Self>, reason: StopReason) {
        self.log.note(format!("room stopped: {reason:?}"));
    }
}

struct Game<St: Store> {
    rooms: Rooms<Hall>,
    writer: SaveWriter<St>,
    log: Arc<Log>,
}

struct Session {
    slot: SaveSlot,
    room: Option<Membership<Hall>>,
}

impl<St: Store> Service for Game<St> {
    type Session = Session;
    type Message = ();

    async fn connect(&self, ctx: &mut Context<'_, ()>) -> Session {
        let loaded = self.writer.load(&format!("conn-{}", ctx.id().0)).await;
        Session {
            slot: loaded.unwrap().slot,
            room: None,
        }
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            JOIN => match self.rooms.join("hall", ctx, ()).await {
                Ok(membership) => {
                    session.room = Some(membership);
                    Reply::empty()
                }
                Err(e) => Reply::error(e.status(), e.to_string()),
            },
            BIG => {
                let size = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
                match &session.room {
                    Some(room) => match room.send(size).await {
                        Ok(()) => Reply::empty(),
                        Err(e) => Reply::error(e.status(), e.to_string()),
                    },
                    None => Reply::error(Status::BAD_REQUEST, "not in the hall"),
                }
            }
            other => Reply::unknown_route(other),
        }
    }

    async fn disconnect(&self, mut session: Session, info: Disconnect) {
        let saved = self.writer.save(&mut session.slot, Bytes::from("bye"));
        self.log
            .note(format!("hook {}: saved {:?}", info.id.0, saved));
    }
}

/// A server of the game on `store`, owning its rooms and its writer.
async fn start<St: Store>(
    store: St,
    max_frame_bytes: usize,
) -> (TestServer, SaveWriter<St>, Arc<Log>) {
    let log = Arc::new(Log::default());
    // Rooms that stay when their members go: only the server's shutdown stops them.
    let options = RoomOptions {
        close_when_empty: false,
        ..RoomOptions::default()
    };
    let rooms = Rooms::new(log.clone(), options).unwrap();
    let writer = SaveWriter::start(store, WriterConfig::default());
    let game = Game {
        rooms: rooms.clone(),
        writer: writer.clone(),
        log: log.clone(),
    };
    let mut config = test_config();
    config.limits.max_frame_bytes = max_frame_bytes;
    let server = Server::new(config, game)
        .unwrap()
        .with_rooms("hall", &rooms)
        .with_store(&writer, Duration::from_millis(300));
    let server = TestServer::serve(server, Arc::new(Kept::default())).await;
    (server, writer, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_handed_to_a_server_push_at_most_its_frame_limit() {
    let (server, _writer, log) = start(MemoryStore::new(), 1000).await;
    let mut client = server.connect().await;
    assert!(client.request(JOIN, "").await.0.is_ok());
    for size in [1500u32, 500] {
        let (status, _) = client.request(BIG, size.to_be_bytes().to_vec()).await;
        assert!(status.is_ok());
    }
    // The room refused the push over the server's limit at its source; the other
    // one arrived.
    assert_eq!(client.expect_push().await.1.len(), 500);
    assert_eq!(*log.pushed.lock().unwrap(), vec![false, true]);
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_the_hooks_run_then_the_rooms_stop_then_the_store_lands_and_closes() {
    let store = MemoryStore::new();
    let (server, writer, log) = start(store.clone(), 1000).await;
    let mut ada = server.connect().await;
    let mut bob = server.connect().await;
    assert!(ada.request(JOIN, "").await.0.is_ok());
    assert!(bob.request(JOIN, "").await.0.is_ok());

    assert!(server.shutdown().await.is_ok());
    let events = log.events.lock().unwrap().clone();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events[..2].iter().all(|e| e.ends_with("saved Ok(())")),
        "{events:?}"
    );
    assert_eq!(events[2], "room stopped: Shutdown", "{events:?}");
    // Both hooks' saves landed before the writer closed, and it is closed.
    for key in ["conn-1", "conn-2"] {
        assert_eq!(store.get(key).unwrap().data, "bye", "{key}");
    }
    let mut slot = writer.load("conn-1").await.unwrap().slot;
    assert_eq!(
        writer.save(&mut slot, Bytes::from("late")),
        Err(WriterClosed)
    );
}

/// Loads from memory; never finishes a save.
struct Stuck(MemoryStore);

impl Store for Stuck {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.0.load(key).await
    }

    async fn save_batch(&self, _: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        std::future::pending().await
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.0.dead_letter(letter).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_that_do_not_land_by_the_flush_timeout_are_what_run_returns() {
    let (server, _writer, _log) = start(Stuck(MemoryStore::new()), 1000).await;
    let _client = server.connect().await.request(JOIN, "").await;
    assert!(matches!(
        server.shutdown().await,
        Err(ServerError::Unsaved { saves: 1 })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_reads_the_metrics_of_the_server_and_its_parts_without_the_admin_listener() {
    let log = Arc::new(Log::default());
    let rooms = Rooms::new(log.clone(), RoomOptions::default()).unwrap();
    let writer = SaveWriter::start(MemoryStore::new(), WriterConfig::default());
    let game = Game {
        rooms: rooms.clone(),
        writer: writer.clone(),
        log,
    };
    let server = Server::new(test_config(), game)
        .unwrap()
        .with_rooms("hall", &rooms)
        .with_store(&writer, Duration::from_millis(300));
    let metrics = server.metrics();
    let server = TestServer::serve(server, Arc::new(Kept::default())).await;
    let mut client = server.connect().await;
    assert!(client.request(JOIN, "").await.0.is_ok());

    let text = metrics.text().await.unwrap();
    // The server's own families, then the rooms' and the writer's.
    assert!(
        text.contains("gatehouse_connections_open{transport=\"tcp\"} 1"),
        "{text}"
    );
    assert!(text.contains("gatehouse_rooms{kind=\"hall\"} 1"), "{text}");
    assert!(text.contains("gatehouse_save_queued "), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let sample = metrics.sample().await;
    assert_eq!(sample.census.map(|c| c.open[TransportKind::Tcp]), Some(1));
    assert!(sample.ready);

    drop(client);
    assert!(server.shutdown().await.is_ok());
    // After the server ended, the handle reads its last numbers.
    assert!(!metrics.sample().await.hub_up);
}

#[tokio::test(start_paused = true)]
async fn without_the_admin_listener_a_shutdown_does_not_wait_for_the_drain_grace() {
    support::keep_the_clock_stepping();
    let mut config = test_config();
    config.supervisor.drain_grace = Duration::from_secs(30);
    let record = Arc::new(Kept::default());
    let server = TestServer::start_service(config, support::Recorder::default(), record).await;
    let mut client = server.connect().await;
    let _ = client.whoami().await;
    let started = tokio::time::Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(client.expect_kick().await, gatehouse::KickReason::SHUTDOWN);
    // Nothing serves /readyz, so nothing waits for it to be seen.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(stopping.await.unwrap().is_ok());
}
