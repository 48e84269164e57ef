//! Several servers in one process as nodes of one cluster over the in-process bus
//! (`LocalBus`), with real sockets to each: pushes, kicks and group broadcasts reach
//! players on other nodes once, with one message per node; a player is logged in on
//! one node at a time (the newest login wins, the others are kicked
//! `duplicate_login`); a node cut off declares nobody dead and, back, kicks the copy
//! it lost; a malformed message from the cluster is counted, not fatal. The same
//! behaviour over NATS is tested in `gatehouse-cluster`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use gatehouse::cluster::{ClusterConfig, LinkSwitch, LocalBus, Located};
use gatehouse::{KickReason, Message, Server, ServerHandle, Status};
use support::routes::{ECHO, GROUP_SAY, JOIN, KICK_PLAYER, LEAVE, LOGIN, PUSH, PUSH_TO_PLAYER};
use support::{test_config, until, Client, Recorder, TestServer, PATIENCE};
use tokio::time::Instant;

fn cluster_config(node: &str) -> ClusterConfig {
    ClusterConfig {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..ClusterConfig::for_node(node)
    }
}

/// A node of `bus`, and the switch of its link.
async fn node(bus: &LocalBus, name: &str) -> (TestServer, LinkSwitch) {
    let recorder = Recorder::default();
    let record = recorder.record.clone();
    let link = bus.link();
    let switch = link.switch();
    let server = Server::new(test_config(), recorder)
        .unwrap()
        .with_cluster(link, cluster_config(name))
        .unwrap();
    let handle = server.handle();
    let mut started = TestServer::serve(server, record).await;
    started.handle = Some(handle);
    (started, switch)
}

fn handle(server: &TestServer) -> ServerHandle<String> {
    server.handle.clone().unwrap()
}

/// Waits until every node sees every other alive.
async fn until_all_see_each_other(servers: &[&TestServer]) {
    for server in servers {
        let handle = handle(server);
        until("every node alive", || async {
            handle.cluster_counts().await.unwrap().nodes.len() == servers.len()
        })
        .await;
    }
}

/// Waits until the node's cluster task finds its link connected (or not).
async fn until_link(handle: &ServerHandle<String>, connected: bool) {
    until(&format!("the link connected: {connected}"), || async {
        handle.cluster_stats().unwrap().connected == connected
    })
    .await;
}

async fn login(client: &mut Client, name: &str) {
    assert_eq!(client.request(LOGIN, name.to_owned()).await.0, Status::OK);
}

async fn until_located(server: &TestServer, player: &str, want: Option<Located>) {
    let handle = handle(server);
    until(&format!("{player} at {want:?}"), || async {
        handle.locate(player).await.unwrap() == want
    })
    .await;
}

#[tokio::test]
async fn a_push_from_one_node_reaches_a_player_on_another_once_in_one_message() {
    let bus = LocalBus::new();
    let (a, _) = node(&bus, "a").await;
    let (b, b_link) = node(&bus, "b").await;
    let mut ada = a.connect().await;
    login(&mut ada, "ada").await;
    until_located(&b, "ada", Some(Located::On("a".into()))).await;

    let mut bob = b.connect().await;
    let before = b_link.published();
    let said = bob.request(PUSH_TO_PLAYER, "ada\0hi").await;
    assert_eq!(said.0, Status::OK);
    assert_eq!(b_link.published() - before, 1, "one message crossed");
    bob.request(PUSH_TO_PLAYER, "ada\0bye").await;
    // In order and once: a copy of the first would come before the second.
    assert_eq!(ada.expect_push().await, (PUSH, Bytes::from("hi")));
    assert_eq!(ada.expect_push().await, (PUSH, Bytes::from("bye")));

    // A kick by name crosses too, and the player is nowhere once its hook ran.
    assert_eq!(bob.request(KICK_PLAYER, "ada").await.0, Status::OK);
    assert_eq!(ada.expect_kick().await, KickReason::KICKED);
    until_located(&b, "ada", None).await;
    until_located(&a, "ada", None).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_group_broadcast_reaches_each_member_on_three_nodes_once_with_one_message() {
    let bus = LocalBus::new();
    let (a, _) = node(&bus, "a").await;
    let (b, _) = node(&bus, "b").await;
    let (c, c_link) = node(&bus, "c").await;
    let mut members = Vec::new();
    for server in [&a, &a, &b, &c] {
        let mut member = server.connect().await;
        assert_eq!(member.request(JOIN, "g").await.0, Status::OK);
        members.push(member);
    }
    let mut outsider = c.connect().await;
    until("three nodes listen to g", || async {
        bus.group_listeners("g") == 3
    })
    .await;

    let (published, carried) = (c_link.published(), c_link.carried());
    let speaker = members.last_mut().unwrap();
    assert_eq!(speaker.request(GROUP_SAY, "g\0hello").await.0, Status::OK);
    assert_eq!(speaker.request(GROUP_SAY, "g\0end").await.0, Status::OK);
    until("c publishes both broadcasts", || async {
        c_link.carried() - carried >= 2
    })
    .await;
    assert_eq!(c_link.carried() - carried, 2, "each broadcast crossed once");
    // One NATS message each, or one for both when they waited together.
    assert!(c_link.published() - published <= 2);
    for member in &mut members[..3] {
        assert_eq!(member.expect_push().await, (PUSH, Bytes::from("hello")));
        assert_eq!(member.expect_push().await, (PUSH, Bytes::from("end")));
    }
    // The speaker is left out (except), and a node's non-member hears nothing.
    for quiet in [members.last_mut().unwrap(), &mut outsider] {
        let (_, _, pushes) = quiet.request_seeing_pushes(ECHO, "x").await;
        assert!(pushes.is_empty(), "{pushes:?}");
    }

    // A node whose last member leaves stops listening.
    for member in &mut members[..2] {
        assert_eq!(member.request(LEAVE, "g").await.0, Status::OK);
    }
    until("two nodes listen to g", || async {
        bus.group_listeners("g") == 2
    })
    .await;
    for server in [a, b, c] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn of_twenty_logins_of_one_name_on_three_nodes_one_session_is_left() {
    let bus = LocalBus::new();
    let (a, _) = node(&bus, "a").await;
    let (b, _) = node(&bus, "b").await;
    let (c, _) = node(&bus, "c").await;
    until_all_see_each_other(&[&a, &b, &c]).await;
    let servers = [&a, &b, &c];
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(servers[i % 3].connect().await);
    }
    // All at once; each reads until it is kicked (or the test ends).
    let (kicked_tx, mut kicked) = tokio::sync::mpsc::unbounded_channel();
    for (i, mut client) in clients.into_iter().enumerate() {
        let kicked_tx = kicked_tx.clone();
        tokio::spawn(async move {
            client
                .send(&Message::Request {
                    id: 1,
                    route: LOGIN,
                    payload: Bytes::from("ada"),
                })
                .await;
            loop {
                match client.recv().await {
                    Some(Message::Kick { reason, .. }) => {
                        let _ = kicked_tx.send((i, reason));
                        return;
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
    }
    let mut gone = std::collections::HashSet::new();
    while gone.len() < 19 {
        let (i, reason) = tokio::time::timeout(PATIENCE, kicked.recv())
            .await
            .expect("19 kicks in time")
            .unwrap();
        assert_eq!(reason, KickReason::DUPLICATE_LOGIN);
        gone.insert(i);
    }
    let survivor = (0..20).find(|i| !gone.contains(i)).unwrap();
    let home = ["a", "b", "c"][survivor % 3];
    // Every node agrees where the one session is, and no other kick comes.
    for (server, name) in servers.iter().zip(["a", "b", "c"]) {
        let handle = handle(server);
        until("every node agrees on ada's node", || async {
            match handle.locate("ada").await.unwrap() {
                Some(Located::Here(_)) => name == home,
                Some(Located::On(node)) => node == home,
                _ => false,
            }
        })
        .await;
    }
    assert!(kicked.try_recv().is_err(), "one session is left");
    for server in [a, b, c] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_node_cut_off_declares_nobody_dead_and_back_kicks_the_copy_it_lost() {
    let bus = LocalBus::new();
    let (a, a_link) = node(&bus, "a").await;
    let (b, _) = node(&bus, "b").await;
    until_all_see_each_other(&[&a, &b]).await;
    let mut ada_on_a = a.connect().await;
    login(&mut ada_on_a, "ada").await;
    until_located(&b, "ada", Some(Located::On("a".into()))).await;

    a_link.set_connected(false);
    let b_handle = handle(&b);
    until("b declares a dead", || async {
        b_handle.cluster_counts().await.unwrap().nodes.len() == 1
    })
    .await;
    // Cut off, a goes on serving its own and declares nobody dead.
    let (status, _) = ada_on_a.request(ECHO, "still here").await;
    assert_eq!(status, Status::OK);
    let a_handle = handle(&a);
    assert_eq!(a_handle.cluster_stats().unwrap().nodes_died, 0);
    assert!(!a_handle.cluster_stats().unwrap().connected);

    // The player logs in on b meanwhile; once a is back it learns and kicks its copy.
    let mut ada_on_b = b.connect().await;
    login(&mut ada_on_b, "ada").await;
    a_link.set_connected(true);
    assert_eq!(ada_on_a.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    until_located(&a, "ada", Some(Located::On("b".into()))).await;
    assert_eq!(a_handle.cluster_stats().unwrap().lost_players, 1);
    assert_eq!(a_handle.cluster_stats().unwrap().nodes_died, 0);
    assert_eq!(b_handle.cluster_stats().unwrap().nodes_died, 1);
    let (status, _) = ada_on_b.request(ECHO, "the one left").await;
    assert_eq!(status, Status::OK);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn counts_cover_every_node_and_a_node_that_stops_leaves_at_once() {
    let bus = LocalBus::new();
    let (a, _) = node(&bus, "a").await;
    let (b, _) = node(&bus, "b").await;
    let _on_a = [a.connect().await, a.connect().await];
    let mut on_b = b.connect().await;
    login(&mut on_b, "bob").await;
    let a_handle = handle(&a);
    until("a counts 3 connections and 1 player", || async {
        let counts = a_handle.cluster_counts().await.unwrap();
        counts.connections == 3 && counts.players == 1 && counts.nodes[0].node == "a"
    })
    .await;
    // A clean stop deletes b's heartbeat: a sees it go without waiting dead_after.
    b.shutdown().await.unwrap();
    until("a alone", || async {
        a_handle.cluster_counts().await.unwrap().nodes.len() == 1
    })
    .await;
    assert_eq!(a_handle.cluster_stats().unwrap().nodes_died, 0);
    until_located(&a, "bob", None).await;
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_message_from_the_cluster_is_counted_and_the_node_goes_on() {
    let bus = LocalBus::new();
    let (a, _) = node(&bus, "a").await;
    let mut client = a.connect().await;
    let a_handle = handle(&a);
    until_link(&a_handle, true).await;
    // Subscriptions are made on the tick after connecting: forge until one lands.
    until("the forgery counted", || async {
        bus.publish_to_all(Bytes::from_static(&[1, 0, 0, 0, 9, 1]));
        bus.publish_to_all(Bytes::from_static(&[77]));
        a_handle.cluster_stats().unwrap().malformed >= 2
    })
    .await;
    let (status, _) = client.request(ECHO, "fine").await;
    assert_eq!(status, Status::OK);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn while_cut_off_broadcasts_reach_this_node_and_the_rest_are_dropped_and_counted() {
    let bus = LocalBus::new();
    let (a, a_link) = node(&bus, "a").await;
    let mut ada = a.connect().await;
    let a_handle = handle(&a);
    until_link(&a_handle, true).await;
    a_link.set_connected(false);
    until_link(&a_handle, false).await;
    for _ in 0..100 {
        a_handle.broadcast(PUSH, "local").await.unwrap();
    }
    for _ in 0..100 {
        assert_eq!(ada.expect_push().await, (PUSH, Bytes::from("local")));
    }
    let stats = a_handle.cluster_stats().unwrap();
    assert_eq!(stats.dropped_disconnected, 100);
    assert_eq!(stats.sent, 0);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_login_on_another_node_returns_after_the_previous_sessions_hook_has_run() {
    let bus = LocalBus::new();
    let (a, _) = node(&bus, "a").await;
    let (b, _) = node(&bus, "b").await;
    let mut ada_on_a = a.connect().await;
    login(&mut ada_on_a, "ada").await;
    let first = ada_on_a.whoami().await;
    until_located(&b, "ada", Some(Located::On("a".into()))).await;

    let mut ada_on_b = b.connect().await;
    login(&mut ada_on_b, "ada").await;
    // The login's answer came after a's hook: what it saved is there to load.
    let hooks = a.record.hooks();
    assert_eq!(
        hooks,
        vec![(
            first,
            gatehouse::DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN)
        )]
    );
    assert_eq!(ada_on_a.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    until_located(&a, "ada", Some(Located::On("b".into()))).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_login_does_not_wait_for_a_node_that_is_gone() {
    let bus = LocalBus::new();
    let (a, a_link) = node(&bus, "a").await;
    let (b, _) = node(&bus, "b").await;
    let mut ada_on_a = a.connect().await;
    login(&mut ada_on_a, "ada").await;
    until_located(&b, "ada", Some(Located::On("a".into()))).await;
    // a is gone from the cluster (as a killed node is) before b declares it dead.
    a_link.set_connected(false);
    let mut ada_on_b = b.connect().await;
    let started = Instant::now();
    login(&mut ada_on_b, "ada").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nobody answers for a: the login goes on at once, not after the wait ({:?})",
        started.elapsed()
    );
    until_located(&b, "ada", Some(Located::Here(ada_on_b.whoami().await))).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_on_the_wrong_node_is_told_moved_and_a_login_there_ends_the_session() {
    use support::counter::{Game, LOGIN as COUNTER_LOGIN};
    let bus = LocalBus::new();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let record = std::sync::Arc::new(support::Record::default());
        let server = Server::new(test_config(), Game::<true>::new(record.clone()))
            .unwrap()
            .with_cluster(bus.link(), cluster_config(name))
            .unwrap();
        let handle = server.handle();
        nodes.push((TestServer::serve(server, record).await, handle));
    }
    for (_, handle) in &nodes {
        until("both nodes alive", || async {
            handle.cluster_counts().await.unwrap().nodes.len() == 2
        })
        .await;
    }
    let (a, b) = (&nodes[0].0, &nodes[1].0);

    // A session on a, its connection lost.
    let mut on_a = a.connect().await;
    on_a.send(&Message::Request {
        id: 1,
        route: COUNTER_LOGIN,
        payload: Bytes::from("ada"),
    })
    .await;
    let mut session = None;
    loop {
        match on_a.recv().await.unwrap() {
            Message::Session { id, token, .. } => session = Some((id, token)),
            Message::Response { id: 1, .. } => break,
            _ => {}
        }
    }
    let (id, token) = session.expect("a session is offered");
    drop(on_a);
    until("a's session detached", || async {
        !a.record.moves.lock().unwrap().is_empty()
    })
    .await;

    // Resumed on b: it is not there, and b says where it is not.
    let text = b.connect().await.resume_refused(id, token).await;
    assert!(text.starts_with("moved"), "{text}");
    // The client logs in on b: a ends its kept session (its hook runs, which saves).
    let mut again = b.connect().await;
    let (status, _) = again.request(COUNTER_LOGIN, "ada").await;
    assert_eq!(status, Status::OK);
    let hooks = a.record.wait_hooks(1).await;
    assert_eq!(
        hooks[0].1,
        gatehouse::DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN)
    );
    for (server, _) in nodes {
        server.shutdown().await.unwrap();
    }
}

/// A link that is connected and never gets anything done: every call waits forever.
struct StalledLink;

impl gatehouse::cluster::ClusterLink for StalledLink {
    fn connected(&self) -> bool {
        true
    }

    fn publish(&self, _: String, _: Bytes) -> gatehouse::cluster::LinkFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn subscribe(
        &self,
        _: String,
    ) -> gatehouse::cluster::LinkFuture<
        '_,
        gatehouse::cluster::LinkStream<gatehouse::cluster::LinkMessage>,
    > {
        Box::pin(std::future::pending())
    }

    fn request(
        &self,
        _: String,
        _: Bytes,
        _: Duration,
    ) -> gatehouse::cluster::LinkFuture<'_, Bytes> {
        Box::pin(std::future::pending())
    }

    fn kv_put(
        &self,
        _: &'static str,
        _: String,
        _: Bytes,
    ) -> gatehouse::cluster::LinkFuture<'_, u64> {
        Box::pin(std::future::pending())
    }

    fn kv_put_if(
        &self,
        _: &'static str,
        _: String,
        _: Bytes,
        _: Option<u64>,
    ) -> gatehouse::cluster::LinkFuture<'_, u64> {
        Box::pin(std::future::pending())
    }

    fn kv_get(
        &self,
        _: &'static str,
        _: String,
    ) -> gatehouse::cluster::LinkFuture<'_, Option<(Bytes, u64)>> {
        Box::pin(std::future::pending())
    }

    fn kv_delete(
        &self,
        _: &'static str,
        _: String,
        _: Option<u64>,
    ) -> gatehouse::cluster::LinkFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn kv_watch(
        &self,
        _: &'static str,
    ) -> gatehouse::cluster::LinkFuture<
        '_,
        gatehouse::cluster::LinkStream<gatehouse::cluster::KvChange>,
    > {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_link_that_never_answers_fills_only_the_bounded_outbox_and_play_goes_on() {
    let recorder = Recorder::default();
    let record = recorder.record.clone();
    let config = ClusterConfig {
        outbox: 16,
        ..cluster_config("a")
    };
    let server = Server::new(test_config(), recorder)
        .unwrap()
        .with_cluster(StalledLink, config)
        .unwrap();
    let a_handle = server.handle();
    let mut a = TestServer::serve(server, record).await;
    a.handle = Some(a_handle.clone());
    let mut ada = a.connect().await;
    login(&mut ada, "ada").await;
    until_link(&a_handle, true).await;
    // Every call to the link hangs (each under request_timeout): the outbox holds 16,
    // the rest are dropped and counted, and every broadcast reaches this node at once.
    for _ in 0..1000 {
        a_handle.broadcast(PUSH, "local").await.unwrap();
    }
    for _ in 0..1000 {
        assert_eq!(ada.expect_push().await, (PUSH, Bytes::from("local")));
    }
    let stats = a_handle.cluster_stats().unwrap();
    assert!(stats.dropped_full >= 1000 - 16 - 1, "{stats:?}");
    let (status, _) = ada.request(ECHO, "fine").await;
    assert_eq!(status, Status::OK);
    a.shutdown().await.unwrap();
}
