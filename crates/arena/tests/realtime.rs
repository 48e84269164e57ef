//! arena's accounts and real-time rooms over real sockets: only the right password
//! logs in or takes over an online player, wrong ones are limited per name and per
//! address, a save from before passwords takes the password of its next login;
//! players see each other walk through gapless deltas, and neither a room restart
//! nor a hub restart loses a position.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;
#[path = "common/view.rs"]
mod view;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arena::accounts::Guessing;
use arena::{pb, routes, status, Arena, ArenaOptions};
use bytes::Bytes;
use gatehouse::protocol::ROUTE_FAULT_CRASH_HUB;
use gatehouse::{KickReason, Message, Status};
use gatehouse_store::{sqlite, Record, SaveWriter, Store, Write, WriterConfig};
use prost::Message as _;
use support::{test_config, Client, Scratch, TestServer, PATIENCE};
use tokio::time::Instant;
use view::View;

struct Served {
    server: TestServer,
    writer: SaveWriter<gatehouse_store::sqlite::SqliteStore>,
    _dir: Scratch,
}

async fn serve(name: &str, options: ArenaOptions) -> Served {
    let dir = Scratch::new(name);
    let store = sqlite::open(dir.path()).await.unwrap();
    serve_store(dir, store, options).await
}

async fn serve_store(
    dir: Scratch,
    store: gatehouse_store::sqlite::SqliteStore,
    options: ArenaOptions,
) -> Served {
    let writer = SaveWriter::start(store, WriterConfig::default());
    let options = ArenaOptions {
        fault_injection: true,
        ..options
    };
    let arena = Arena::with_options(writer.clone(), options).unwrap();
    let server = TestServer::start_service(test_config(), arena, Arc::default()).await;
    Served {
        server,
        writer,
        _dir: dir,
    }
}

async fn try_login(addr: SocketAddr, name: &str, password: &str) -> (Client, Status, Bytes) {
    let mut client = Client::connect(addr).await;
    let request = pb::LoginRequest {
        name: name.into(),
        password: password.into(),
    };
    let (status, payload) = client.request(routes::LOGIN, request.encode_to_vec()).await;
    (client, status, payload)
}

async fn login(addr: SocketAddr, name: &str, password: &str) -> (Client, pb::PlayerState) {
    let (client, status, payload) = try_login(addr, name, password).await;
    assert_eq!(status, Status::OK, "{}", String::from_utf8_lossy(&payload));
    let state = pb::LoginReply::decode(payload).unwrap().state.unwrap();
    assert!(
        state.password_hash.is_empty(),
        "the hash never leaves the server"
    );
    (client, state)
}

async fn request(client: &mut Client, route: u16, payload: Vec<u8>) -> Bytes {
    let (status, payload) = client.request(route, payload).await;
    assert_eq!(status, Status::OK, "{}", String::from_utf8_lossy(&payload));
    payload
}

/// Alice and bob, logged in and moved from the lobby to the room "pit".
async fn alice_and_bob_in_the_pit(addr: SocketAddr) -> (Client, Client) {
    let (mut alice, _) = login(addr, "alice", "alice-secret").await;
    let (mut bob, _) = login(addr, "bob", "bob-secret").await;
    let join = pb::JoinRoom { room: "pit".into() };
    request(&mut alice, routes::JOIN, join.encode_to_vec()).await;
    request(&mut bob, routes::JOIN, join.encode_to_vec()).await;
    (alice, bob)
}

/// Sends the input that walks `client`'s player to (x, y).
async fn walk_to(client: &mut Client, x: i32, y: i32) {
    let walk = pb::Input {
        dx: 0,
        dy: 0,
        target: Some(pb::Position { x, y }),
    };
    client
        .send(&Message::Notify {
            route: routes::INPUT,
            payload: walk.encode_to_vec().into(),
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_cannot_take_over_a_player_a_right_one_can_and_guessing_is_limited() {
    let options = ArenaOptions {
        guessing: Guessing {
            per_name_per_minute: NonZeroU32::new(3).unwrap(),
            per_ip_per_minute: NonZeroU32::new(100).unwrap(),
            block_for: Duration::from_secs(60),
        },
        ..ArenaOptions::default()
    };
    let served = serve("guess", options).await;
    let addr = served.server.addr;
    let (mut alice, _) = login(addr, "alice", "alice-secret").await;

    // Wrong passwords: refused, and alice is never kicked.
    for _ in 0..3 {
        let (_, status, _) = try_login(addr, "alice", "not-her-password").await;
        assert_eq!(status, status::WRONG_PASSWORD);
    }
    assert_eq!(
        pb::WhoReply::decode(request(&mut alice, routes::WHO, Vec::new()).await)
            .unwrap()
            .players,
        ["alice"]
    );
    // The third used up the name's budget and locked it: even the right password
    // waits now.
    let (_, status, text) = try_login(addr, "alice", "alice-secret").await;
    assert_eq!(status, status::TOO_MANY_ATTEMPTS, "{text:?}");
    // Other names from the same address are not held up.
    let (_bob, _) = login(addr, "bob", "bob-secret").await;
    assert!(served.server.shutdown().await.is_ok());

    // On a server without that history, the right password takes alice over.
    let served = serve("takeover", ArenaOptions::default()).await;
    let addr = served.server.addr;
    let (mut first, _) = login(addr, "alice", "alice-secret").await;
    let (_second, _) = login(addr, "alice", "alice-secret").await;
    assert_eq!(first.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    assert!(served.server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_saved_before_passwords_takes_the_password_of_its_next_login() {
    let dir = Scratch::new("legacy");
    let store = sqlite::open(dir.path()).await.unwrap();
    // A save as the arena before accounts wrote it: no hash.
    let legacy = pb::PlayerState {
        name: "olga".into(),
        room: "cave".into(),
        x: 12,
        y: -7,
        moves: 3,
        logins: 4,
        password_hash: String::new(),
    };
    let write = Write {
        record: Record {
            key: "olga".into(),
            version: 1,
            data: legacy.encode_to_vec().into(),
        },
        expected: 0,
    };
    store.save_batch(&[write]).await.unwrap();

    let served = serve_store(dir, store, ArenaOptions::default()).await;
    let addr = served.server.addr;
    let (olga, state) = login(addr, "olga", "olga-first-pw").await;
    assert_eq!(
        (
            state.room.as_str(),
            state.x,
            state.y,
            state.moves,
            state.logins
        ),
        ("cave", 12, -7, 3, 5),
        "the old save, migrated"
    );
    // Whether or not her connection has ended yet, a wrong password is refused and
    // the right one gets her (a takeover waits for the old connection's save).
    drop(olga);
    let (_, status, _) = try_login(addr, "olga", "someone-else-pw").await;
    assert_eq!(status, status::WRONG_PASSWORD);
    let (_olga, state) = login(addr, "olga", "olga-first-pw").await;
    assert_eq!(state.logins, 6);
    assert!(served.server.shutdown().await.is_ok());
    served.writer.close(PATIENCE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_watch_each_other_walk_through_gapless_deltas_and_the_walk_is_saved() {
    let served = serve("walk", ArenaOptions::default()).await;
    let addr = served.server.addr;
    let (mut alice, _) = login(addr, "alice", "alice-secret").await;
    let (mut bob, _) = login(addr, "bob", "bob-secret").await;
    let mut view = View::default();
    view.until(&mut alice, |v| v.players.contains_key("bob"))
        .await;

    let started = Instant::now();
    walk_to(&mut bob, 300, -140).await;
    view.until(&mut alice, |v| v.players.get("bob") == Some(&(300, -140)))
        .await;
    // 300 units at 20 per tick: 15 ticks, 0.75 s at 20 Hz.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(view.gaps, 0, "no delta missed");

    // Bob leaves; his save has the position the room walked him to.
    bob.leave().await;
    drop(bob);
    view.until(&mut alice, |v| !v.players.contains_key("bob"))
        .await;
    served.writer.flush(PATIENCE).await.unwrap();
    let (_bob, state) = login(addr, "bob", "bob-secret").await;
    assert_eq!((state.x, state.y), (300, -140));
    assert_eq!(state.moves, 1, "one input");
    assert!(served.server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_restart_and_a_hub_restart_lose_no_position() {
    let served = serve("restarts", ArenaOptions::default()).await;
    let addr = served.server.addr;
    let (mut alice, mut bob) = alice_and_bob_in_the_pit(addr).await;
    let placed = pb::PlayerState::decode(
        request(
            &mut bob,
            routes::MOVE,
            pb::Move { x: 7, y: 8 }.encode_to_vec(),
        )
        .await,
    )
    .unwrap();
    assert_eq!((placed.x, placed.y), (7, 8));

    // The room crashes: both stay connected, are told, and see the room again, bob
    // where he stood.
    request(&mut alice, routes::CRASH_ROOM, Vec::new()).await;
    let mut view = View::default();
    view.until(&mut alice, |v| v.restarts == 1 && !v.states.is_empty())
        .await;
    assert_eq!(view.states, [2], "the whole room at once, not one by one");
    assert_eq!(view.players.get("bob"), Some(&(7, 8)));
    let who = pb::WhoReply::decode(request(&mut bob, routes::WHO, Vec::new()).await).unwrap();
    assert_eq!(who.in_room, 2);

    // The hub crashes: everyone is kicked and saved; back, bob is where he was.
    alice.fire(ROUTE_FAULT_CRASH_HUB).await;
    assert_eq!(alice.expect_kick().await, KickReason::SERVER_RESTART);
    assert_eq!(bob.expect_kick().await, KickReason::SERVER_RESTART);
    let (_bob, state) = login(addr, "bob", "bob-secret").await;
    assert_eq!((state.room.as_str(), state.x, state.y), ("pit", 7, 8));
    assert!(served.server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_goes_on_after_its_room_restarts_without_new_input() {
    let served = serve("walk-restart", ArenaOptions::default()).await;
    let addr = served.server.addr;
    let (mut alice, mut bob) = alice_and_bob_in_the_pit(addr).await;
    let mut view = View::default();
    view.until(&mut alice, |v| v.players.contains_key("bob"))
        .await;

    // Bob walks to (800, -600): 40 ticks, two seconds at 20 Hz.
    walk_to(&mut bob, 800, -600).await;
    view.until(&mut alice, |v| {
        v.players.get("bob").is_some_and(|&(x, _)| x >= 100)
    })
    .await;

    // The room crashes mid-walk; bob sends nothing more, and still gets there.
    request(&mut alice, routes::CRASH_ROOM, Vec::new()).await;
    view.until(&mut alice, |v| v.restarts == 1).await;
    let mid_walk = view.players["bob"];
    assert_ne!(
        mid_walk,
        (800, -600),
        "the crash came before the end of the walk"
    );
    view.until(&mut alice, |v| v.players.get("bob") == Some(&(800, -600)))
        .await;
    assert_eq!(view.restarts, 1);
    // And his save has where the walk ended.
    bob.leave().await;
    drop(bob);
    view.until(&mut alice, |v| !v.players.contains_key("bob"))
        .await;
    served.writer.flush(PATIENCE).await.unwrap();
    let (_bob, state) = login(addr, "bob", "bob-secret").await;
    assert_eq!((state.x, state.y), (800, -600));
    assert!(served.server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_the_room_you_are_in_resends_the_whole_room_and_stats_count_its_ticks() {
    let served = serve("resync", ArenaOptions::default()).await;
    let addr = served.server.addr;
    let (mut alice, _) = login(addr, "alice", "alice-secret").await;
    let (_bob, _) = login(addr, "bob", "bob-secret").await;
    let mut view = View::default();
    view.until(&mut alice, |v| v.players.len() == 2).await;
    let states = view.states.len();
    let lobby = pb::JoinRoom {
        room: arena::LOBBY.into(),
    };
    request(&mut alice, routes::JOIN, lobby.encode_to_vec()).await;
    view.until(&mut alice, |v| v.states.len() == states + 1)
        .await;
    assert_eq!(view.states.last(), Some(&2));
    let stats =
        pb::ServerStats::decode(request(&mut alice, routes::STATS, Vec::new()).await).unwrap();
    assert_eq!((stats.rooms, stats.online), (1, 2));
    assert!(stats.ticks > 0, "{stats:?}");
    assert!(stats.lateness_p99_us < 1_000_000, "{stats:?}");
    assert!(served.server.shutdown().await.is_ok());
}
