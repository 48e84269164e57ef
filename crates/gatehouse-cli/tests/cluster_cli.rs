//! `gatehouse serve` processes as nodes of one cluster over a real nats-server of
//! the test's own (`GATEHOUSE_TEST_NATS_SERVER`; unset, the tests skip with a
//! notice): a broadcast reaches every client on every node once; of 20 logins of one
//! name on three nodes one session is left; a killed node's player logs in
//! elsewhere at once; a node stopped past `dead_after` kicks its copy of a player
//! taken over meanwhile once it runs again; nodes serve with NATS down (at start
//! and after) and join once it is back. And arena on PostgreSQL
//! (`GATEHOUSE_TEST_POSTGRES_URL`): a player taken over from another node keeps
//! what it did there; a node stopped past `dead_after` whose player was taken over
//! meanwhile has its save refused (counted) and kicks its copy, and the stored state
//! is the other node's; players on two nodes share a room and whisper across
//! nodes; a killed node's room is made again by exactly one other node, and its
//! players there are joined again; a stopped node's copy of a room taken over
//! meanwhile closes at its next checkpoint; a node whose NATS link a proxy
//! blackholes loses its player to another node, and kicks its copy, its save of it
//! refused, once the link heals; `bench arena --also` splits every room over two
//! nodes and times the far half. The tests run one at a time (each starts its own nats-server and up to
//! three nodes).

#![allow(clippy::unwrap_used)]

mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arena::{pb, routes};
use bytes::Bytes;
use gatehouse::protocol::routes::bench::{BROADCAST, ECHO, LOGIN};
use gatehouse::KickReason;
use gatehouse_client::{Client, ClientConfig, ClientError, Pushes};
use gatehouse_cluster::testing::NatsServer;
use process::{http_get, scratch, write_file, Scratch, ServerProcess};
use prost::Message as _;
use serde_json::Value;

/// One test at a time: each runs its own nats-server and nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long anything may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// `gatehouse serve` of the bench service as node `name` of the cluster at `nats`,
/// heartbeat 0.5 s, dead after 1.5 s.
fn node(dir: &Scratch, name: &str, nats: &str) -> ServerProcess {
    let config = format!(
        "[game]\nservice = \"bench\"\n\n[cluster]\nenabled = true\nnats_url = \"{nats}\"\n\
         node = \"{name}\"\nheartbeat = \"500ms\"\ndead_after = \"1500ms\"\n"
    );
    let path = write_file(dir, &format!("{name}.toml"), &config);
    ServerProcess::start(&["-c", path.to_str().unwrap()])
}

/// The node's `/api/cluster`.
fn cluster(node: &ServerProcess) -> Value {
    let body = http_get(node.admin_addr().unwrap(), "/api/cluster");
    serde_json::from_str(&body).unwrap()
}

/// Polls `check` (blocking calls allowed) until it holds, failing after
/// [`PATIENCE`] with `what`.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !tokio::task::block_in_place(&mut check) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_all_see(nodes: &[&ServerProcess], count: usize) {
    for node in nodes {
        until(&format!("{count} nodes alive"), || {
            cluster(node)["nodes"].as_array().unwrap().len() == count
        })
        .await;
    }
}

async fn connect(addr: SocketAddr) -> (Client, Pushes) {
    let config = ClientConfig {
        resume: false,
        ..ClientConfig::default()
    };
    let (client, pushes) = Client::connect(addr, config).await.unwrap();
    // The bench service resumes: a connection is served (and pushed to) once it
    // has said it is not a resume.
    client.request(ECHO, "hello").await.unwrap();
    (client, pushes)
}

async fn next_push(pushes: &mut Pushes) -> Bytes {
    tokio::time::timeout(PATIENCE, pushes.next())
        .await
        .expect("a push in time")
        .expect("the connection is open")
        .payload
}

/// Nodes a, b and c, each seeing the others alive.
async fn three_nodes(dir: &Scratch, nats: &NatsServer) -> Vec<ServerProcess> {
    let nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| node(dir, name, &nats.url()))
        .collect();
    until_all_see(&nodes.iter().collect::<Vec<_>>(), 3).await;
    nodes
}

fn nats() -> Option<NatsServer> {
    NatsServer::from_env()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_from_one_node_reaches_every_client_on_three_once() {
    let _serial = SERIAL.lock().await;
    let Some(nats) = nats() else { return };
    let dir = scratch("cluster-broadcast");
    let nodes = three_nodes(&dir, &nats).await;
    let mut clients = Vec::new();
    for node in [&nodes[0], &nodes[0], &nodes[1], &nodes[2]] {
        clients.push(connect(node.addr).await);
    }
    let sent = || cluster(&nodes[2])["messages"]["sent"].as_u64().unwrap();
    let sent_before = sent();
    let speaker = &clients[3].0;
    speaker.request(BROADCAST, "hello").await.unwrap();
    speaker.request(BROADCAST, "end").await.unwrap();
    for (_, pushes) in &mut clients {
        // In order and once: a copy of the first would come before the second.
        assert_eq!(next_push(pushes).await, Bytes::from("hello"));
        assert_eq!(next_push(pushes).await, Bytes::from("end"));
    }
    // Counted once the publish returned: it may trail the deliveries a little.
    until("c counts its messages", || sent() >= sent_before + 2).await;
    assert_eq!(sent() - sent_before, 2, "one message per broadcast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_twenty_logins_of_one_name_on_three_nodes_one_session_is_left() {
    let _serial = SERIAL.lock().await;
    let Some(nats) = nats() else { return };
    let dir = scratch("cluster-logins");
    let nodes = three_nodes(&dir, &nats).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(connect(nodes[i % 3].addr).await.0);
    }
    // All at once; a login may be answered, refused busy, or cut by its kick.
    let logins = clients.iter().map(|client| client.request(LOGIN, "ada"));
    let _ = futures_util::future::join_all(logins).await;
    let kicked = |client: &Client| {
        matches!(client.ended(), Some(ClientError::Kicked { reason, .. })
            if reason == KickReason::DUPLICATE_LOGIN)
    };
    until("19 sessions kicked duplicate_login", || {
        clients.iter().filter(|c| kicked(c)).count() == 19
    })
    .await;
    let survivor = clients.iter().find(|c| c.ended().is_none()).unwrap();
    survivor.request(ECHO, "still here").await.unwrap();
    until("the cluster counts one player", || {
        nodes.iter().all(|node| cluster(node)["players"] == 1)
    })
    .await;
    assert_eq!(clients.iter().filter(|c| c.ended().is_none()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_player_logs_in_elsewhere_at_once_and_the_node_is_declared_dead() {
    let _serial = SERIAL.lock().await;
    let Some(nats) = nats() else { return };
    let dir = scratch("cluster-kill");
    let mut a = node(&dir, "a", &nats.url());
    let b = node(&dir, "b", &nats.url());
    until_all_see(&[&a, &b], 2).await;
    let (ada, _) = connect(a.addr).await;
    ada.request(LOGIN, "ada").await.unwrap();
    until("b counts ada", || cluster(&b)["players"] == 1).await;

    a.child.kill().unwrap();
    let _ = a.child.wait();
    let (again, _) = connect(b.addr).await;
    let started = Instant::now();
    again.request(LOGIN, "ada").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nobody answers for a: the login goes on at once ({:?})",
        started.elapsed()
    );
    let killed = Instant::now();
    until("b declares a dead", || {
        cluster(&b)["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    // dead_after (1.5 s) and a heartbeat, with room for a busy machine.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(cluster(&b)["node_deaths"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_dead_after_kicks_its_copy_of_a_player_taken_over_meanwhile() {
    let _serial = SERIAL.lock().await;
    let Some(nats) = nats() else { return };
    let dir = scratch("cluster-stop");
    let a = node(&dir, "a", &nats.url());
    let b = node(&dir, "b", &nats.url());
    until_all_see(&[&a, &b], 2).await;
    let (ada_on_a, _) = connect(a.addr).await;
    ada_on_a.request(LOGIN, "ada").await.unwrap();
    until("b counts ada", || cluster(&b)["players"] == 1).await;

    a.signal("STOP");
    until("b declares a dead", || {
        cluster(&b)["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    let (ada_on_b, _) = connect(b.addr).await;
    ada_on_b.request(LOGIN, "ada").await.unwrap();
    a.signal("CONT");
    until("a kicks its copy", || ada_on_a.ended().is_some()).await;
    match ada_on_a.ended() {
        Some(ClientError::Kicked { reason, .. }) => {
            assert_eq!(reason, KickReason::DUPLICATE_LOGIN);
        }
        other => panic!("{other:?}"),
    }
    until("a counts the player lost", || {
        cluster(&a)["players_lost"] == 1
    })
    .await;
    ada_on_b.request(ECHO, "the one left").await.unwrap();
    assert_eq!(cluster(&a)["node_deaths"], 0, "a declared nobody dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_while_nats_is_down_and_join_once_it_is_back() {
    let _serial = SERIAL.lock().await;
    let Some(binary) = NatsServer::binary_from_env() else {
        return;
    };
    let mut nats = NatsServer::new(binary).unwrap();
    let dir = scratch("cluster-nats-down");
    // NATS down at start: the nodes serve their own.
    let a = node(&dir, "a", &nats.url());
    let b = node(&dir, "b", &nats.url());
    let (on_a, mut a_pushes) = connect(a.addr).await;
    let (on_b, _) = connect(b.addr).await;
    on_a.request(BROADCAST, "alone").await.unwrap();
    assert_eq!(next_push(&mut a_pushes).await, Bytes::from("alone"));
    assert_eq!(cluster(&a)["connected"], false);

    nats.start().unwrap();
    until_all_see(&[&a, &b], 2).await;
    on_b.request(BROADCAST, "joined").await.unwrap();
    assert_eq!(next_push(&mut a_pushes).await, Bytes::from("joined"));

    // NATS goes: local play goes on, the cluster's calls are dropped and counted.
    nats.kill().unwrap();
    until("a sees NATS gone", || cluster(&a)["connected"] == false).await;
    on_a.request(BROADCAST, "still local").await.unwrap();
    assert_eq!(next_push(&mut a_pushes).await, Bytes::from("still local"));
    let dropped = &cluster(&a)["messages"]["dropped_disconnected"];
    assert!(dropped.as_u64().unwrap() >= 1, "{dropped}");
    on_a.request(ECHO, "x").await.unwrap();

    // Back: within 5 s the nodes hear each other again.
    nats.restart().unwrap();
    let back = Instant::now();
    until("b hears a again", || {
        cluster(&b)["connected"] == true && cluster(&a)["connected"] == true
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        on_b.request(BROADCAST, "again").await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(200), a_pushes.next()).await;
        if let Ok(Some(push)) = heard {
            assert_eq!(push.payload, Bytes::from("again"));
            break;
        }
        assert!(Instant::now() < deadline, "a never heard b again");
    }
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "recovered {:?} after NATS came back",
        back.elapsed()
    );
}

/// `gatehouse serve` of arena on the PostgreSQL at `postgres` as node `name`.
fn arena_node(dir: &Scratch, name: &str, nats: &str, postgres: &str) -> ServerProcess {
    let config = format!(
        "[game]\nservice = \"arena\"\n\n[store]\nbackend = \"postgres\"\n\
         postgres_url = \"{postgres}\"\n\n[cluster]\nenabled = true\nnats_url = \"{nats}\"\n\
         node = \"{name}\"\nheartbeat = \"500ms\"\ndead_after = \"1500ms\"\n"
    );
    let path = write_file(dir, &format!("{name}.toml"), &config);
    ServerProcess::start(&["-c", path.to_str().unwrap()])
}

/// What an arena cluster test runs on: its turn among the tests, its nats-server,
/// and arena nodes a, b (and c) on PostgreSQL that see each other. Dropped in that
/// order: the nodes first.
struct ArenaCluster {
    nodes: Vec<ServerProcess>,
    _dir: Scratch,
    _nats: NatsServer,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl ArenaCluster {
    /// Nodes a and b of a cluster of two.
    fn two(&self) -> (&ServerProcess, &ServerProcess) {
        let [a, b] = &self.nodes[..] else {
            panic!("a cluster of {} nodes, not two", self.nodes.len())
        };
        (a, b)
    }
}

/// `count` arena nodes for the test `test`; `None` (the test skips) without NATS
/// or PostgreSQL.
async fn arena_cluster(test: &str, count: usize) -> Option<ArenaCluster> {
    let turn = SERIAL.lock().await;
    let nats = nats()?;
    let postgres = postgres_url()?;
    let dir = scratch(test);
    let nodes: Vec<ServerProcess> = ["a", "b", "c"][..count]
        .iter()
        .map(|name| arena_node(&dir, name, &nats.url(), &postgres))
        .collect();
    until_all_see(&nodes.iter().collect::<Vec<_>>(), count).await;
    Some(ArenaCluster {
        nodes,
        _dir: dir,
        _nats: nats,
        _turn: turn,
    })
}

fn postgres_url() -> Option<String> {
    let url = std::env::var("GATEHOUSE_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        println!("GATEHOUSE_TEST_POSTGRES_URL is unset: skipping the arena cluster test");
    }
    url
}

/// An arena login to `addr`; the client and the state the server answered.
async fn arena_login(addr: SocketAddr, name: &str) -> (Client, pb::PlayerState) {
    let (client, _, state) = arena_login_hearing(addr, name).await;
    (client, state)
}

/// As [`arena_login`], with the client's pushes.
async fn arena_login_hearing(addr: SocketAddr, name: &str) -> (Client, Pushes, pb::PlayerState) {
    let config = ClientConfig {
        resume: false,
        ..ClientConfig::default()
    };
    let (client, pushes) = Client::connect(addr, config).await.unwrap();
    let login = pb::LoginRequest {
        name: name.into(),
        password: format!("{name}-secret"),
    };
    let reply = client
        .request(routes::LOGIN, login.encode_to_vec())
        .await
        .unwrap();
    let state = pb::LoginReply::decode(reply).unwrap().state.unwrap();
    (client, pushes, state)
}

/// Reads `pushes` until a push on `route` satisfies `found`.
async fn heard<T: prost::Message + Default>(
    pushes: &mut Pushes,
    route: u16,
    mut found: impl FnMut(&T) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let push = tokio::time::timeout(deadline - Instant::now(), pushes.next())
            .await
            .expect("heard in time")
            .expect("the connection is open");
        if push.route == route && found(&T::decode(push.payload).unwrap()) {
            return;
        }
    }
}

async fn arena_move(client: &Client, x: i32, y: i32) {
    client
        .request(routes::MOVE, pb::Move { x, y }.encode_to_vec())
        .await
        .unwrap();
}

fn kicked_duplicate(client: &Client) -> bool {
    matches!(client.ended(), Some(ClientError::Kicked { reason, .. })
        if reason == KickReason::DUPLICATE_LOGIN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arena_across_nodes_keeps_a_taken_over_players_state_and_refuses_a_stopped_nodes_save() {
    let Some(arena) = arena_cluster("cluster-arena", 2).await else {
        return;
    };
    let (a, b) = arena.two();
    // Unique per run: the database outlives the test.
    let ada = format!("ada{}", std::process::id());

    // Taken over from another node: nothing done there is lost.
    let (on_a, first) = arena_login(a.addr, &ada).await;
    arena_move(&on_a, 3, 4).await;
    let (on_b, state) = arena_login(b.addr, &ada).await;
    until("a kicks its session", || kicked_duplicate(&on_a)).await;
    assert_eq!((state.x, state.y), (3, 4));
    assert_eq!(state.logins, first.logins + 1);

    // b stops past dead_after; a takes the player over and plays on.
    let conflicts = || b.metric("gatehouse_save_conflicts_total").unwrap();
    let before = conflicts();
    b.signal("STOP");
    until("a declares b dead", || {
        cluster(a)["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    let (again_on_a, _) = arena_login(a.addr, &ada).await;
    arena_move(&again_on_a, -5, -6).await;
    b.signal("CONT");
    // b learns it lost the player (from the cluster, or from its refused save),
    // kicks its copy, and its save of it is refused and counted.
    until("b kicks its copy", || kicked_duplicate(&on_b)).await;
    until("b's refused save counted", || conflicts() > before).await;
    again_on_a.request(routes::WHO, Vec::new()).await.unwrap();

    // The stored state is a's: a login on b (from the database) finds it.
    let (_, stored) = arena_login(b.addr, &ada).await;
    assert_eq!((stored.x, stored.y), (-5, -6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arena_players_on_two_nodes_share_a_room_and_whisper_across_nodes() {
    let Some(arena) = arena_cluster("cluster-arena-room", 2).await else {
        return;
    };
    let (a, b) = arena.two();
    let id = std::process::id();
    let (erin, finn) = (format!("erin{id}"), format!("finn{id}"));
    let room = format!("pit{id}");
    let (on_a, mut a_hears, _) = arena_login_hearing(a.addr, &erin).await;
    let (on_b, mut b_hears, _) = arena_login_hearing(b.addr, &finn).await;
    let join = pb::JoinRoom { room: room.clone() };
    on_a.request(routes::JOIN, join.encode_to_vec())
        .await
        .unwrap();
    on_b.request(routes::JOIN, join.encode_to_vec())
        .await
        .unwrap();

    // One room: each sees the other in it, and a move on b reaches a.
    let has = |name: &str, state: &pb::RoomState| state.players.iter().any(|p| p.name == name);
    heard(&mut b_hears, routes::ROOM_STATE, |s: &pb::RoomState| {
        has(&erin, s)
    })
    .await;
    arena_move(&on_b, 12, 34).await;
    heard(&mut a_hears, routes::DELTA, |d: &pb::Delta| {
        d.moved
            .iter()
            .chain(&d.entered)
            .any(|p| p.name == finn && (p.x, p.y) == (12, 34))
    })
    .await;
    // A whisper from a reaches b.
    let whisper = pb::Whisper {
        to: finn.clone(),
        text: "psst".into(),
    };
    on_a.request(routes::WHISPER, whisper.encode_to_vec())
        .await
        .unwrap();
    heard(&mut b_hears, routes::CHAT, |c: &pb::Chat| {
        c.whisper && c.from == erin && c.text == "psst"
    })
    .await;
}

/// Whether `node` runs a room named `room` (`/api/rooms`).
fn runs(node: &ServerProcess, room: &str) -> bool {
    let body = http_get(node.admin_addr().unwrap(), "/api/rooms?limit=1000");
    let rooms: Value = serde_json::from_str(&body).unwrap();
    rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_room_is_made_again_by_exactly_one_node_and_its_players_rejoin() {
    let Some(mut arena) = arena_cluster("cluster-arena-adopt", 3).await else {
        return;
    };
    let [a, b, c] = &mut arena.nodes[..] else {
        unreachable!()
    };
    let id = std::process::id();
    let room = format!("keep{id}");
    let join = pb::JoinRoom { room: room.clone() };
    let (ann, _, _) = arena_login_hearing(a.addr, &format!("ann{id}")).await;
    ann.request(routes::JOIN, join.encode_to_vec())
        .await
        .unwrap();
    let mut others = Vec::new();
    for (node, name) in [(&b, format!("bob{id}")), (&c, format!("cid{id}"))] {
        let (client, pushes, _) = arena_login_hearing(node.addr, &name).await;
        client
            .request(routes::JOIN, join.encode_to_vec())
            .await
            .unwrap();
        others.push((client, pushes, name));
    }
    until("the room runs on a", || runs(a, &room)).await;

    a.child.kill().unwrap();
    let _ = a.child.wait();
    let killed = Instant::now();
    // Each is told the room restarted, and joined again where one node made it:
    // its RoomState there has both.
    for (_, pushes, _) in &mut others {
        loop {
            let push = tokio::time::timeout(PATIENCE, pushes.next())
                .await
                .expect("told in time")
                .expect("the connection is open");
            if push.route == gatehouse::protocol::ROUTE_ROOM_RESTARTED {
                assert_eq!(push.payload, room.as_bytes());
                break;
            }
        }
    }
    let names: Vec<String> = others.iter().map(|(_, _, name)| name.clone()).collect();
    for (_, pushes, _) in &mut others {
        // Who is in the room, as the RoomState and the Deltas after it say.
        let mut present = std::collections::BTreeSet::new();
        let deadline = Instant::now() + PATIENCE;
        while !names.iter().all(|n| present.contains(n)) {
            let push = tokio::time::timeout(deadline - Instant::now(), pushes.next())
                .await
                .expect("both in the room in time")
                .expect("the connection is open");
            match push.route {
                routes::ROOM_STATE => {
                    let state = pb::RoomState::decode(push.payload).unwrap();
                    present = state.players.into_iter().map(|p| p.name).collect();
                }
                routes::DELTA => {
                    let delta = pb::Delta::decode(push.payload).unwrap();
                    for name in delta.left {
                        present.remove(&name);
                    }
                    present.extend(delta.entered.into_iter().map(|p| p.name));
                }
                _ => {}
            }
        }
    }
    // dead_after (1.5 s) and a heartbeat, with room for a busy machine.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let hosts = [&b, &c].iter().filter(|node| runs(node, &room)).count();
    assert_eq!(hosts, 1, "exactly one node runs the room");
    // And it goes on: a move on one reaches the other.
    let (mover, _, name) = &others[0];
    arena_move(mover, 5, 6).await;
    let seen = name.clone();
    heard(&mut others[1].1, routes::DELTA, |d: &pb::Delta| {
        d.moved
            .iter()
            .chain(&d.entered)
            .any(|p| p.name == seen && (p.x, p.y) == (5, 6))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_room_taken_over_meanwhile_closes_there_at_its_next_checkpoint() {
    let Some(arena) = arena_cluster("cluster-arena-partition", 2).await else {
        return;
    };
    let (a, b) = arena.two();
    let id = std::process::id();
    let room = format!("split{id}");
    let join = pb::JoinRoom { room: room.clone() };
    // The room is made on b; ann, on a, joins it there.
    let (bob, _, _) = arena_login_hearing(b.addr, &format!("bob{id}")).await;
    bob.request(routes::JOIN, join.encode_to_vec())
        .await
        .unwrap();
    let (ann, mut ann_hears, _) = arena_login_hearing(a.addr, &format!("ann{id}")).await;
    ann.request(routes::JOIN, join.encode_to_vec())
        .await
        .unwrap();
    until("the room runs on b", || runs(b, &room)).await;
    let conflicts = || b.metric("gatehouse_save_conflicts_total").unwrap();
    let before = conflicts();

    // b stops past dead_after: a makes the room again, and ann is joined there.
    b.signal("STOP");
    until("a declares b dead", || {
        cluster(a)["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    loop {
        let push = tokio::time::timeout(PATIENCE, ann_hears.next())
            .await
            .expect("ann told in time")
            .expect("the connection is open");
        if push.route == gatehouse::protocol::ROUTE_ROOM_RESTARTED {
            break;
        }
    }
    until("the room runs on a", || runs(a, &room)).await;

    // b runs again: its copy of the room is refused its next checkpoint (a's claim
    // came first), and closes. One copy goes on, on a.
    b.signal("CONT");
    until("b's copy closes", || !runs(b, &room)).await;
    assert!(conflicts() > before, "the refused checkpoint is counted");
    assert!(runs(a, &room));
    arena_move(&ann, 3, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_arena_splits_every_room_over_two_nodes_and_times_the_far_half() {
    let Some(arena) = arena_cluster("cluster-bench-arena", 2).await else {
        return;
    };
    let (a, b) = arena.two();
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let (a_pid, b_pid) = (a.child.id().to_string(), b.child.id().to_string());
    let args = [
        "bench",
        "arena",
        "--quiet",
        "--addr",
        &a_addr,
        "--also",
        &b_addr,
        "--players",
        "8",
        "--room-size",
        "4",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--server-pid",
        &a_pid,
        "--server-pid",
        &b_pid,
    ]
    .map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["split"], true, "{report}");
    assert_eq!(
        (report["missing"].as_u64(), report["dropped"].as_u64()),
        (Some(0), Some(0))
    );
    // Every room ran on a (its first player's node), and the far half on b followed
    // it: a delta nearly every tick for every bot.
    let deltas = report["deltas_per_bot_per_sec"].as_f64().unwrap();
    assert!(deltas > 10.0 && deltas <= 21.0, "{report}");
    assert!(report["ticks"].as_u64().unwrap() >= 2 * 20, "{report}");
    assert!(report["far_after_near_p50_us"].is_i64(), "{report}");
    assert!(report["far_after_near_p99_us"].is_i64(), "{report}");
    assert!(
        report["server_cpu_percent"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

/// A TCP proxy to `upstream` that can blackhole what it carries: while it does,
/// every byte either way is read and dropped, as a network partition loses them
/// (the connections stay open; nobody is told). Healed, it carries the
/// connections made from then on; one that lost bytes loses them until an end
/// gives up on it (a NATS client does, when its pings go unanswered).
struct Blackhole {
    addr: SocketAddr,
    /// Cancelled to blackhole; a new token opens it again.
    open: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start(upstream: SocketAddr) -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::Mutex::new(
            tokio_util::sync::CancellationToken::new(),
        ));
        let tokens = open.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let open = tokens.lock().unwrap().clone();
                tokio::spawn(Blackhole::carry(client, upstream, open));
            }
        });
        Blackhole {
            addr,
            open,
            accepting,
        }
    }

    /// Carries one connection while `open`, and drops its bytes once it is
    /// cancelled.
    async fn carry(
        client: tokio::net::TcpStream,
        upstream: SocketAddr,
        open: tokio_util::sync::CancellationToken,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let pipe = |mut from: tokio::net::tcp::OwnedReadHalf,
                    mut to: tokio::net::tcp::OwnedWriteHalf,
                    open: tokio_util::sync::CancellationToken| async move {
            let mut buf = vec![0; 16 * 1024];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !open.is_cancelled() && to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::select! {
            () = pipe(client_read, server_write, open.clone()) => {}
            () = pipe(server_read, client_write, open.clone()) => {}
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops everything from now on.
    fn cut(&self) {
        self.open.lock().unwrap().cancel();
    }

    /// Carries again, on new connections.
    fn heal(&self) {
        *self.open.lock().unwrap() = tokio_util::sync::CancellationToken::new();
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_link_is_blackholed_loses_its_player_and_kicks_it_once_healed() {
    let turn = SERIAL.lock().await;
    let (Some(nats), Some(postgres)) = (nats(), postgres_url()) else {
        return;
    };
    let dir = scratch("cluster-blackhole");
    let upstream: SocketAddr = format!("127.0.0.1:{}", nats.port()).parse().unwrap();
    let proxy = Blackhole::start(upstream).await;
    // a reaches NATS through the proxy, b directly.
    let a = arena_node(&dir, "a", &proxy.url(), &postgres);
    let b = arena_node(&dir, "b", &nats.url(), &postgres);
    until_all_see(&[&a, &b], 2).await;
    let ada = format!("ada{}", std::process::id());
    let (on_a, _) = arena_login(a.addr, &ada).await;
    arena_move(&on_a, 1, 2).await;

    // The partition: a keeps running and serving ada, but hears nothing and is
    // heard by nobody. b declares it dead and takes ada over.
    let conflicts = || a.metric("gatehouse_save_conflicts_total").unwrap();
    let before = conflicts();
    proxy.cut();
    until("b declares a dead", || {
        cluster(&b)["nodes"].as_array().unwrap().len() == 1
    })
    .await;
    let (on_b, _) = arena_login(b.addr, &ada).await;
    arena_move(&on_b, 8, 9).await;
    // ada on a plays on, unaware.
    let _ = on_a
        .request(routes::MOVE, pb::Move { x: 50, y: 50 }.encode_to_vec())
        .await;

    // Healed: a learns it lost ada (from the players' keys, or from its refused
    // save), kicks its copy, and its save of it is refused and counted.
    proxy.heal();
    until("a kicks its copy", || kicked_duplicate(&on_a)).await;
    until("a's refused save counted", || conflicts() > before).await;
    until_all_see(&[&a, &b], 2).await;
    on_b.request(routes::WHO, Vec::new()).await.unwrap();

    // The stored state is b's: a login on a (from the database) finds it.
    drop(on_b);
    let (_, stored) = arena_login(a.addr, &ada).await;
    assert_eq!((stored.x, stored.y), (8, 9));
    drop((a, b, nats, turn));
}
