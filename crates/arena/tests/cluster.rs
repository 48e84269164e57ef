//! arena on two nodes of one cluster (the in-process bus), each with its own save
//! writer over one shared store (whose writes take 100 ms), as two processes over
//! one database: a login on one node takes a player over from the other and loses
//! nothing it did there; a node cut off from the cluster, whose player was taken
//! over meanwhile, has its next save refused (counted, kept as a dead letter) and
//! kicks its copy `duplicate_login`; a whisper reaches a player on the other node;
//! and players on the two nodes share a room (it runs on one), see each other move
//! and chat, and keep where they stood. The same over NATS and PostgreSQL, as
//! processes, is in `gatehouse-cli`'s `cluster_cli`.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;
#[path = "common/view.rs"]
mod view;

use std::sync::Arc;
use std::time::Duration;

use arena::{pb, routes, status, Arena, ArenaOptions};
use gatehouse::cluster::{ClusterConfig, LinkSwitch, LocalBus, Located};
use gatehouse::{KickReason, Message, Server, ServerHandle, Status};
use gatehouse_store::{
    DeadLetter, DeadReason, MemoryStore, Outcome, Record, SaveWriter, Store, StoreError, Write,
    WriterConfig,
};
use prost::Message as _;
use support::{test_config, until, Client, TestServer, PATIENCE};
use tokio::time::Instant;
use view::View;

/// A database whose writes take a while to land, as a real one's do: a session's
/// last save is still on its way when its hook returns, unless the hook waits.
#[derive(Clone)]
struct Slow(MemoryStore);

impl Store for Slow {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.0.load(key).await
    }

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.0.save_batch(writes).await
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.0.dead_letter(letter).await
    }
}

/// An arena node of `bus` saving to `store`: its server, writer, handle and link.
struct Node {
    server: TestServer,
    rooms: gatehouse::room::Rooms<arena::world::ArenaRoom>,
    writer: SaveWriter<Slow>,
    handle: ServerHandle<()>,
    switch: LinkSwitch,
}

async fn node(bus: &LocalBus, store: &MemoryStore, name: &str) -> Node {
    let writer = SaveWriter::start(Slow(store.clone()), WriterConfig::default());
    let arena = Arena::with_options(writer.clone(), ArenaOptions::default()).unwrap();
    let rooms = arena.rooms().clone();
    let mut config = test_config();
    // A moved player is saved at once, so that a test sees the save.
    config.limits.checkpoint_interval = Duration::from_millis(50);
    let cluster = ClusterConfig {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..ClusterConfig::for_node(name)
    };
    let link = bus.link();
    let switch = link.switch();
    let server = Server::new(config, arena)
        .unwrap()
        .with_shared_rooms("arena", &rooms)
        .with_cluster(link, cluster)
        .unwrap();
    let handle = server.handle();
    let server = TestServer::serve(server, Arc::default()).await;
    Node {
        server,
        rooms,
        writer,
        handle,
        switch,
    }
}

/// Two nodes that see each other.
async fn two_nodes(store: &MemoryStore) -> (LocalBus, Node, Node) {
    let bus = LocalBus::new();
    let a = node(&bus, store, "a").await;
    let b = node(&bus, store, "b").await;
    for node in [&a, &b] {
        until("both nodes alive", || async {
            node.handle.cluster_counts().await.unwrap().nodes.len() == 2
        })
        .await;
    }
    (bus, a, b)
}

async fn login(node: &Node, name: &str) -> (Client, pb::PlayerState) {
    let mut client = Client::connect(node.server.addr).await;
    let request = pb::LoginRequest {
        name: name.into(),
        password: format!("{name}-secret"),
    };
    let (status, payload) = client.request(routes::LOGIN, request.encode_to_vec()).await;
    assert_eq!(status, Status::OK, "{}", String::from_utf8_lossy(&payload));
    let state = pb::LoginReply::decode(payload).unwrap().state.unwrap();
    (client, state)
}

async fn move_to(client: &mut Client, x: i32, y: i32) {
    let (status, _) = client
        .request(routes::MOVE, pb::Move { x, y }.encode_to_vec())
        .await;
    assert_eq!(status, Status::OK);
}

/// The stored state of `player`, read from the store itself.
fn stored(store: &MemoryStore, player: &str) -> (u64, pb::PlayerState) {
    let record = store.get(player).unwrap();
    (
        record.version,
        pb::PlayerState::decode(record.data).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_takes_the_player_over_with_everything_it_did() {
    let store = MemoryStore::new();
    let (_bus, a, b) = two_nodes(&store).await;
    let (mut on_a, first) = login(&a, "alice").await;
    assert_eq!(first.logins, 1);
    until("alice located on a from b", || async {
        b.handle.locate("alice").await.unwrap() == Some(Located::On("a".into()))
    })
    .await;
    move_to(&mut on_a, 3, 4).await;

    // No wait for a checkpoint: the session on a lands its save as it ends.
    let (_on_b, state) = login(&b, "alice").await;
    assert_eq!(on_a.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    assert_eq!((state.x, state.y, state.logins), (3, 4, 2));
    // The claim is what is stored: b's session owns the player.
    let (_, saved) = stored(&store, "alice");
    assert_eq!((saved.x, saved.y, saved.logins), (3, 4, 2));
    assert_eq!(a.writer.stats().conflicts + b.writer.stats().conflicts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_has_its_players_next_save_refused_and_kicks_it() {
    let store = MemoryStore::new();
    let (_bus, a, b) = two_nodes(&store).await;
    let (mut on_a, _) = login(&a, "bob").await;
    until("bob located on a from b", || async {
        b.handle.locate("bob").await.unwrap().is_some()
    })
    .await;

    // a is cut off: it hears nothing of what follows, and b asks it nothing.
    a.switch.set_connected(false);
    until("a knows it is cut off", || async {
        !a.handle.cluster_stats().unwrap().connected
    })
    .await;
    // The lobby ran on a: b makes it again once it has declared a dead (before, a
    // login there is refused, unavailable, rather than make a second lobby).
    until("b declares a dead", || async {
        b.handle.cluster_counts().await.unwrap().nodes.len() == 1
    })
    .await;
    let (mut on_b, claimed) = login(&b, "bob").await;
    assert_eq!(claimed.logins, 2);
    move_to(&mut on_b, -7, 9).await;

    // bob on a plays on, unaware; its next save is refused by the store.
    let conflicts = a.writer.stats().conflicts;
    let (status, _) = on_a
        .request(routes::MOVE, pb::Move { x: 50, y: 50 }.encode_to_vec())
        .await;
    assert!(status == Status::OK || status == status::NOT_LOGGED_IN);
    assert_eq!(on_a.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    assert!(
        a.writer.stats().conflicts > conflicts,
        "the refusal is counted"
    );
    let letters = store.dead_letters();
    assert!(letters
        .iter()
        .any(|letter| letter.record.key == "bob" && letter.reason == DeadReason::Conflict));

    // The stored state is b's.
    b.writer.flush(PATIENCE).await.unwrap();
    let (_, saved) = stored(&store, "bob");
    assert_eq!((saved.x, saved.y, saved.logins), (-7, 9, 2));
    let who = on_b.request(routes::WHO, Vec::new()).await;
    assert_eq!(who.0, Status::OK);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whisper_reaches_a_player_on_another_node() {
    let store = MemoryStore::new();
    let (_bus, a, b) = two_nodes(&store).await;
    let (mut carol, _) = login(&a, "carol").await;
    let (mut dave, _) = login(&b, "dave").await;
    until("carol located on a from b", || async {
        b.handle.locate("carol").await.unwrap().is_some()
    })
    .await;
    let whisper = pb::Whisper {
        to: "carol".into(),
        text: "psst".into(),
    };
    let (status, _) = dave.request(routes::WHISPER, whisper.encode_to_vec()).await;
    assert_eq!(status, Status::OK);
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "the whisper never came");
        if let Some(Message::Push { route, payload }) = carol.recv().await {
            if route == routes::CHAT {
                let chat = pb::Chat::decode(payload).unwrap();
                assert_eq!((chat.from.as_str(), chat.text.as_str()), ("dave", "psst"));
                assert!(chat.whisper);
                break;
            }
        }
    }
    // Nobody by that name anywhere: refused.
    let nobody = pb::Whisper {
        to: "nobody".into(),
        text: "hello?".into(),
    };
    let (status, _) = dave.request(routes::WHISPER, nobody.encode_to_vec()).await;
    assert_eq!(status, status::NO_SUCH_PLAYER);
}

async fn join_room(client: &mut Client, room: &str) {
    let join = pb::JoinRoom { room: room.into() };
    let (status, text) = client.request(routes::JOIN, join.encode_to_vec()).await;
    assert_eq!(status, Status::OK, "{}", String::from_utf8_lossy(&text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_two_nodes_share_a_room_see_each_other_move_and_keep_where_they_stood() {
    let store = MemoryStore::new();
    let (_bus, a, b) = two_nodes(&store).await;
    let (mut erin, _) = login(&a, "erin").await;
    let (mut finn, _) = login(&b, "finn").await;
    join_room(&mut erin, "pit").await;
    join_room(&mut finn, "pit").await;
    // One room, on a (its first joiner's node).
    assert!(a.rooms.get("pit").is_some() && b.rooms.get("pit").is_none());
    let (mut on_a, mut on_b) = (View::default(), View::default());
    on_a.until(&mut erin, |v| v.players.contains_key("finn"))
        .await;
    on_b.until(&mut finn, |v| v.players.contains_key("erin"))
        .await;

    // finn (on b) moves: erin (on a) sees it, in the room on a.
    move_to(&mut finn, 10, 20).await;
    on_a.until(&mut erin, |v| v.players.get("finn") == Some(&(10, 20)))
        .await;
    // erin walks: finn sees her arrive.
    let walk = pb::Input {
        dx: 0,
        dy: 0,
        target: Some(pb::Position { x: 40, y: 0 }),
    };
    erin.send(&Message::Notify {
        route: routes::INPUT,
        payload: walk.encode_to_vec().into(),
    })
    .await;
    on_b.until(&mut finn, |v| v.players.get("erin") == Some(&(40, 0)))
        .await;
    // Chat crosses too.
    let say = pb::Say {
        text: "hi from b".into(),
    };
    let (status, _) = finn.request(routes::SAY, say.encode_to_vec()).await;
    assert_eq!(status, Status::OK);
    on_a.until(&mut erin, |v| {
        v.chat.iter().any(|line| line == "finn: hi from b")
    })
    .await;

    // finn leaves: the position the room on a recorded for him reached b, and is
    // what b saves.
    finn.leave().await;
    drop(finn);
    let deadline = Instant::now() + PATIENCE;
    loop {
        b.writer.flush(PATIENCE).await.unwrap();
        if let Some(record) = store.get("finn") {
            let saved = pb::PlayerState::decode(record.data).unwrap();
            if (saved.x, saved.y) == (10, 20) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "finn's position was not saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_the_wrong_node_is_told_moved_and_the_login_there_keeps_every_acknowledged_move(
) {
    let store = MemoryStore::new();
    let (_bus, a, b) = two_nodes(&store).await;
    // cara logs in on a, which offers her a session to resume.
    let mut on_a = Client::connect(a.server.addr).await;
    let request = pb::LoginRequest {
        name: "cara".into(),
        password: "cara-secret".into(),
    };
    on_a.send(&Message::Request {
        id: 1,
        route: routes::LOGIN,
        payload: request.encode_to_vec().into(),
    })
    .await;
    let mut session = None;
    loop {
        match on_a.recv().await.expect("the login is answered") {
            Message::Session { id, token, .. } => session = Some((id, token)),
            Message::Response { id: 1, status, .. } => {
                assert_eq!(status, Status::OK);
                break;
            }
            _ => {}
        }
    }
    let (id, token) = session.expect("arena offers a session to resume");
    // Moves that a answered: acknowledged state.
    move_to(&mut on_a, 5, 6).await;
    move_to(&mut on_a, -8, 2).await;
    // The connection is lost; a keeps the session for a resume.
    drop(on_a);

    // The client tries b: the session is not there, and b says it moved.
    let mut on_b = Client::connect(b.server.addr).await;
    let text = on_b.resume_refused(id, token).await;
    assert!(text.starts_with("moved"), "{text}");
    // It logs in on b: a ends the kept session (its save lands first), and b's
    // login starts from every move a acknowledged.
    let (_on_b, state) = login(&b, "cara").await;
    assert_eq!((state.x, state.y, state.logins), (-8, 2, 2));
    let (_, saved) = stored(&store, "cara");
    assert_eq!((saved.x, saved.y, saved.logins), (-8, 2, 2));
}
