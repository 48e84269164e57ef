//! Rooms shared by a cluster, over the in-process bus with real sockets to each
//! node: a room joined from several nodes is one room, run by the node where it was
//! first joined; its members everywhere hear each broadcast once, one message per
//! node, and the state it records for a member reaches the member's node; a join that is refused there is refused here; of many nodes making a room
//! at once one wins; a room that empties gives its name back; when its node is gone,
//! its members elsewhere are joined again where one node makes it next, from its
//! last checkpoint, and a copy left on a node cut off closes at its next checkpoint;
//! a room that runs without members is made again by exactly one node as soon as
//! its node is declared dead.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use gatehouse::cluster::{ClusterConfig, LinkSwitch, LocalBus};
use gatehouse::protocol::ROUTE_ROOM_RESTARTED;
use gatehouse::room::{RoomError, RoomOptions, Rooms};
use gatehouse::{Message, Server, Status};
use gatehouse_store::{MemoryStore, SaveWriter, WriterConfig};
use support::chat::{Chat, Game, JOIN, LEAVE, LINES, SAID, SAY, STATE, WELCOME};
use support::{test_config, until, Client, TestServer, PATIENCE};
use tokio::time::Instant;

/// A node of `bus` serving the chat, its rooms shared.
struct Node {
    server: TestServer,
    rooms: Rooms<Chat>,
    switch: LinkSwitch,
    handle: gatehouse::ServerHandle<()>,
}

async fn node(bus: &LocalBus, name: &str, options: RoomOptions) -> Node {
    node_saving(bus, name, options, None).await
}

/// A node whose rooms checkpoint to `store` (every 50 ms), if given.
async fn node_saving(
    bus: &LocalBus,
    name: &str,
    options: RoomOptions,
    store: Option<&MemoryStore>,
) -> Node {
    node_dead_after(bus, name, options, store, Duration::from_millis(400)).await
}

/// A node that declares another dead after `dead_after`.
async fn node_dead_after(
    bus: &LocalBus,
    name: &str,
    options: RoomOptions,
    store: Option<&MemoryStore>,
    dead_after: Duration,
) -> Node {
    let rooms = Rooms::new((), options).unwrap();
    if let Some(store) = store {
        let writer = SaveWriter::start(store.clone(), WriterConfig::default());
        rooms.checkpoint_to(&writer, Duration::from_millis(50));
    }
    let link = bus.link();
    let switch = link.switch();
    let cluster = ClusterConfig {
        heartbeat: Duration::from_millis(100),
        dead_after,
        ..ClusterConfig::for_node(name)
    };
    let game = Game {
        rooms: rooms.clone(),
    };
    let server = Server::new(test_config(), game)
        .unwrap()
        .with_shared_rooms("chat", &rooms)
        .with_cluster(link, cluster)
        .unwrap();
    let handle = server.handle();
    let server = TestServer::serve(server, Arc::default()).await;
    Node {
        server,
        rooms,
        switch,
        handle,
    }
}

async fn nodes(bus: &LocalBus, names: &[&str], options: RoomOptions) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(node(bus, name, options.clone()).await);
    }
    for node in &nodes {
        until("every node alive", || async {
            node.handle.cluster_counts().await.unwrap().nodes.len() == names.len()
        })
        .await;
    }
    nodes
}

/// Joins `room` as `name` from a new connection to `node`; the client and the
/// node the room runs on ("here" for the node itself).
async fn join(node: &Node, room: &str, name: &str) -> (Client, String) {
    let (client, host, _) = join_welcomed(node, room, name).await;
    (client, host)
}

/// As [`join`], with the room's welcome: how many members it has with this one.
async fn join_welcomed(node: &Node, room: &str, name: &str) -> (Client, String, String) {
    let mut client = node.server.connect().await;
    let (status, host, pushes) = client
        .request_seeing_pushes(JOIN, format!("{room} {name}"))
        .await;
    assert_eq!(status, Status::OK, "{}", String::from_utf8_lossy(&host));
    // The room greets the member as it joins: before or after the answer.
    let welcome = match pushes.into_iter().find(|(route, _)| *route == WELCOME) {
        Some((_, count)) => String::from_utf8(count.to_vec()).unwrap(),
        None => next_on(&mut client, WELCOME).await,
    };
    (client, String::from_utf8(host.to_vec()).unwrap(), welcome)
}

/// The next push on `route`, skipping others.
async fn next_on(client: &mut Client, route: u16) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no push on {route}");
        match client.recv().await {
            Some(Message::Push { route: r, payload }) if r == route => {
                return String::from_utf8(payload.to_vec()).unwrap();
            }
            Some(_) => {}
            None => panic!("closed while waiting for a push on {route}"),
        }
    }
}

fn options() -> RoomOptions {
    RoomOptions::default()
}

/// The checkpoint of `room` in `store`: the node that wrote it and the lines it
/// holds. It is stored as that node (a u16 length, the name), then the snapshot;
/// `None` before the first.
fn checkpoint(store: &MemoryStore, room: &str) -> Option<(String, u64)> {
    let data = store.get(&format!("room/chat/{room}"))?.data;
    let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let node = String::from_utf8(data[2..2 + len].to_vec()).unwrap();
    let lines = data[2 + len..].try_into().ok().map(u64::from_be_bytes)?;
    Some((node, lines))
}

/// Says lines in `room` as `client` until its checkpoint holds at least `lines`;
/// that checkpoint.
async fn say_until_checkpointed(
    client: &mut Client,
    store: &MemoryStore,
    room: &str,
    lines: u64,
) -> (String, u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(kept) = checkpoint(store, room).filter(|(_, kept)| *kept >= lines) {
            return kept;
        }
        assert!(Instant::now() < deadline, "never checkpointed");
        let (status, _) = client.request(SAY, "tick").await;
        assert_eq!(status, Status::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_from_two_nodes_is_one_room_and_a_broadcast_is_one_message_per_node() {
    let bus = LocalBus::new();
    let nodes = nodes(&bus, &["a", "b"], options()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut ann, host, welcome) = join_welcomed(a, "pit", "ann").await;
    assert_eq!(host, "here", "made on the node of its first joiner");
    assert_eq!(welcome, "1");
    let mut on_b = Vec::new();
    for (i, name) in ["bob", "bea", "bill"].iter().enumerate() {
        let (client, host, welcome) = join_welcomed(b, "pit", name).await;
        assert_eq!(host, "a", "b joins the room a runs");
        assert_eq!(welcome, (i + 2).to_string());
        on_b.push(client);
    }
    assert_eq!(a.rooms.len(), 1);
    assert_eq!(b.rooms.len(), 0, "no second room of that name");
    assert_eq!(a.rooms.get("pit").unwrap().stats().members, 4);

    // A member on b speaks: the room on a hears it, every member hears it once, and
    // the three on b get it in one message from a.
    let (published, carried) = (a.switch.published(), a.switch.carried());
    let (status, _) = on_b[0].request(SAY, "hello").await;
    assert_eq!(status, Status::OK);
    assert_eq!(next_on(&mut ann, SAID).await, "bob: hello");
    for client in &mut on_b {
        assert_eq!(next_on(client, SAID).await, "bob: hello");
    }
    // Counted as the cluster task publishes: bob's state may trail the line.
    until("a publishes the line and bob's state", || async {
        a.switch.carried() - carried >= 2
    })
    .await;
    assert_eq!(
        a.switch.carried() - carried,
        2,
        "one message to b with the line for its three members, one with bob's state"
    );
    // In one NATS message when they waited together in the outbox.
    assert!(a.switch.published() - published <= 2);
    // In order, as sent.
    for text in ["one", "two", "three"] {
        let (status, _) = on_b[1].request(SAY, text).await;
        assert_eq!(status, Status::OK);
    }
    for text in ["one", "two", "three"] {
        assert_eq!(next_on(&mut ann, SAID).await, format!("bea: {text}"));
    }
    // The state the room on a records for bea reaches her membership on b.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, state) = on_b[1].request(STATE, "").await;
        assert_eq!(status, Status::OK);
        if state == "bea:3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bea's state never came: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Leaving from b: the room on a loses the member.
    let (status, _) = on_b[2].request(LEAVE, "").await;
    assert_eq!(status, Status::OK);
    until("bill's seat given back", || async {
        a.rooms.get("pit").unwrap().stats().members == 3
    })
    .await;
    // A connection that ends leaves too.
    drop(on_b.pop());
    drop(on_b.pop());
    until("bea's seat given back", || async {
        a.rooms.get("pit").unwrap().stats().members == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_by_the_room_on_another_node_is_refused_with_its_status() {
    let bus = LocalBus::new();
    let small = RoomOptions {
        max_members: 2,
        ..options()
    };
    let nodes = nodes(&bus, &["a", "b"], small).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (_ann, _) = join(a, "den", "ann").await;
    let mut banned = b.server.connect().await;
    let (status, text) = banned.request(JOIN, "den banned").await;
    assert_eq!(status, Status(1099), "{}", String::from_utf8_lossy(&text));
    let (_bob, host) = join(b, "den", "bob").await;
    assert_eq!(host, "a");
    let mut third = b.server.connect().await;
    let (status, text) = third.request(JOIN, "den carl").await;
    assert_eq!(
        (status, String::from_utf8_lossy(&text).into_owned()),
        (RoomError::Full.status(), RoomError::Full.to_string())
    );
    assert_eq!(a.rooms.get("den").unwrap().stats().members, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_three_nodes_making_one_room_at_once_one_runs_it() {
    let bus = LocalBus::new();
    let nodes = nodes(&bus, &["a", "b", "c"], options()).await;
    for round in 0..5 {
        let room = format!("race-{round}");
        let joins = nodes.iter().map(|node| join(node, &room, "x"));
        let joined = futures_util::future::join_all(joins).await;
        let running: Vec<usize> = nodes
            .iter()
            .map(|node| usize::from(node.rooms.get(&room).is_some()))
            .collect();
        assert_eq!(running.iter().sum::<usize>(), 1, "{room}: {running:?}");
        let host = running.iter().position(|r| *r == 1).unwrap();
        let members = nodes[host].rooms.get(&room).unwrap().stats().members;
        assert_eq!(members, 3, "{room}: every joiner in the one room");
        drop(joined);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_empties_gives_its_name_back_to_the_next_joiner_anywhere() {
    let bus = LocalBus::new();
    let nodes = nodes(&bus, &["a", "b"], options()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (ann, host) = join(a, "hall", "ann").await;
    assert_eq!(host, "here");
    drop(ann);
    until("the hall closes on a", || async {
        a.rooms.get("hall").is_none()
    })
    .await;
    // Its key goes with it: b makes the room itself now (a join that finds the key
    // not yet deleted asks a, which makes it again: either is one room).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (client, host) = join(b, "hall", "bob").await;
        if host == "here" {
            assert!(a.rooms.get("hall").is_none());
            break;
        }
        assert!(Instant::now() < deadline, "b never made the hall");
        drop(client);
        until("the hall closes on a", || async {
            a.rooms.get("hall").is_none()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_again_just_as_it_empties_is_made_again_not_refused() {
    let bus = LocalBus::new();
    let nodes = nodes(&bus, &["a", "b"], options()).await;
    let a = &nodes[0];
    // Each join comes as the last member's leave stops the room and its key is on
    // its way out: it waits for that, and makes the room again.
    let mut last = None;
    for round in 0..10 {
        drop(last.take());
        let (client, host) = join(a, "door", &format!("p{round}")).await;
        assert_eq!(host, "here");
        last = Some(client);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_while_its_node_is_cut_off_reaches_the_room_once_it_is_back() {
    let bus = LocalBus::new();
    // Nobody is declared dead in this test: only the leave can free the seat.
    let patient = Duration::from_secs(60);
    let a = node_dead_after(&bus, "a", options(), None, patient).await;
    let b = node_dead_after(&bus, "b", options(), None, patient).await;
    for node in [&a, &b] {
        until("both nodes alive", || async {
            node.handle.cluster_counts().await.unwrap().nodes.len() == 2
        })
        .await;
    }
    let (_ann, _) = join(&a, "den", "ann").await;
    let (bob, host) = join(&b, "den", "bob").await;
    assert_eq!(host, "a");
    assert_eq!(a.rooms.get("den").unwrap().stats().members, 2);

    // bob leaves while b is cut off: the leave cannot go, and is kept.
    b.switch.set_connected(false);
    until("b knows it is cut off", || async {
        !b.handle.cluster_stats().unwrap().connected
    })
    .await;
    drop(bob);
    b.switch.set_connected(true);
    until("bob's seat given back once b is back", || async {
        a.rooms.get("den").unwrap().stats().members == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_rooms_node_is_gone_its_members_elsewhere_join_it_again_where_it_is_made_next() {
    let bus = LocalBus::new();
    let nodes = nodes(&bus, &["a", "b", "c"], options()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (_ann, _) = join(a, "keep", "ann").await;
    let (mut bob, host) = join(b, "keep", "bob").await;
    assert_eq!(host, "a");
    let (mut cid, host) = join(c, "keep", "cid").await;
    assert_eq!(host, "a");
    let (status, _) = bob.request(SAY, "before").await;
    assert_eq!(status, Status::OK);
    assert_eq!(next_on(&mut cid, SAID).await, "bob: before");
    let deadline = Instant::now() + PATIENCE;
    while bob.request(STATE, "").await.1 != "bob:1" {
        assert!(Instant::now() < deadline, "bob's state never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // a is cut off for good: b and c declare it dead, and join bob and cid again
    // where the room is made next: on one of them, the one that took it first.
    a.switch.set_connected(false);
    for client in [&mut bob, &mut cid] {
        assert_eq!(next_on(client, ROUTE_ROOM_RESTARTED).await, "keep");
        assert_eq!(next_on(client, LINES).await, "0", "made afresh");
    }
    until("one of b and c runs the room", || async {
        usize::from(b.rooms.get("keep").is_some()) + usize::from(c.rooms.get("keep").is_some()) == 1
    })
    .await;
    let host = if b.rooms.get("keep").is_some() { b } else { c };
    until("both joined again", || async {
        host.rooms
            .get("keep")
            .is_some_and(|room| room.stats().members == 2)
    })
    .await;
    // They hear each other through it, and a newcomer joins the same room.
    let (status, _) = bob.request(SAY, "still here").await;
    assert_eq!(status, Status::OK);
    for client in [&mut bob, &mut cid] {
        assert_eq!(next_on(client, SAID).await, "bob: still here");
    }
    // Joined again with the state the room had recorded: bob's count goes on.
    let deadline = Instant::now() + PATIENCE;
    while bob.request(STATE, "").await.1 != "bob:2" {
        assert!(Instant::now() < deadline, "bob's count did not go on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_dan, _, welcome) = join_welcomed(c, "keep", "dan").await;
    assert_eq!(welcome, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_taken_over_from_a_node_cut_off_starts_from_its_checkpoint_and_the_copy_there_closes(
) {
    let bus = LocalBus::new();
    let store = MemoryStore::new();
    let a = node_saving(&bus, "a", options(), Some(&store)).await;
    let b = node_saving(&bus, "b", options(), Some(&store)).await;
    for node in [&a, &b] {
        until("both nodes alive", || async {
            node.handle.cluster_counts().await.unwrap().nodes.len() == 2
        })
        .await;
    }
    let (mut ann, _) = join(&a, "log", "ann").await;
    let (mut bob, host) = join(&b, "log", "bob").await;
    assert_eq!(host, "a");
    for text in ["one", "two", "three"] {
        let (status, _) = bob.request(SAY, text).await;
        assert_eq!(status, Status::OK);
        assert_eq!(next_on(&mut ann, SAID).await, format!("bob: {text}"));
    }
    // Checkpointed: the store has the three lines (after one more, a checkpoint
    // being due at most every 50 ms).
    let checkpoint = |store: &MemoryStore| checkpoint(store, "log");
    let (node, checkpointed) = say_until_checkpointed(&mut ann, &store, "log", 3).await;
    assert_eq!(node, "a");

    // a is cut off; b takes the room over from its last checkpoint.
    a.switch.set_connected(false);
    assert_eq!(next_on(&mut bob, ROUTE_ROOM_RESTARTED).await, "log");
    assert_eq!(next_on(&mut bob, LINES).await, checkpointed.to_string());
    assert!(b.rooms.get("log").is_some());
    // a's copy goes on with ann until its next checkpoint, which the store refuses
    // (b's claim came first): then it closes.
    let deadline = Instant::now() + PATIENCE;
    while a.rooms.get("log").is_some() {
        assert!(Instant::now() < deadline, "a's copy never closed");
        let _ = ann.request(SAY, "anyone?").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (node, lines) = checkpoint(&store).unwrap();
    assert_eq!(node, "b", "b's checkpoint is what is stored");
    assert!(lines >= checkpointed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_runs_without_members_is_made_again_by_exactly_one_node_when_its_node_is_gone()
{
    let bus = LocalBus::new();
    let store = MemoryStore::new();
    let stays = RoomOptions {
        close_when_empty: false,
        ..options()
    };
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node_saving(&bus, name, stays.clone(), Some(&store)).await);
    }
    for node in &nodes {
        until("every node alive", || async {
            node.handle.cluster_counts().await.unwrap().nodes.len() == 3
        })
        .await;
    }
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    // The hall runs on a; its one member says two lines and leaves: it runs on,
    // empty, with nobody on another node to join it again.
    let (mut ann, host) = join(a, "hall", "ann").await;
    assert_eq!(host, "here");
    let (_, checkpointed) = say_until_checkpointed(&mut ann, &store, "hall", 2).await;
    let (status, _) = ann.request(LEAVE, "").await;
    assert_eq!(status, Status::OK);
    assert!(a.rooms.get("hall").is_some());

    // a is gone (cut off: declared dead); one of b and c makes the hall again from
    // its checkpoint, without a join asking for it.
    let cut = Instant::now();
    a.switch.set_connected(false);
    until("b or c runs the hall", || async {
        b.rooms.get("hall").is_some() || c.rooms.get("hall").is_some()
    })
    .await;
    let took = cut.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "adopted {took:?} after the cut (dead_after 400 ms, heartbeat 100 ms)"
    );
    // Its claim is in the store once it runs: the other node's put on the old
    // revision lost, and it never makes a second hall.
    let (adopter, other) = if b.rooms.get("hall").is_some() {
        (b, c)
    } else {
        (c, b)
    };
    let (node, _) = checkpoint(&store, "hall").unwrap();
    assert_ne!(node, "a", "the adopter's claim is stored");
    assert!(other.rooms.get("hall").is_none(), "exactly one node adopts");
    // Joined from the other node, it is the adopter's, with the lines said on a.
    let mut bob = other.server.connect().await;
    let (status, host, pushes) = bob.request_seeing_pushes(JOIN, "hall bob").await;
    assert_eq!(status, Status::OK);
    assert_eq!(host, if std::ptr::eq(adopter, b) { "b" } else { "c" });
    let lines = match pushes.into_iter().find(|(route, _)| *route == LINES) {
        Some((_, lines)) => String::from_utf8(lines.to_vec()).unwrap(),
        None => next_on(&mut bob, LINES).await,
    };
    assert_eq!(lines, checkpointed.to_string());
}
