//! The hub (the seed's gs_svr) over real sockets: broadcast, groups, sending to and
//! kicking one connection, service messages and counts, and no push larger than a
//! frame may be.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use gatehouse::{DisconnectReason, KickReason, Status};
use support::{resources, routes, test_config, Client, TestServer};

/// Asserts that a request answers `expected` with no push before its response:
/// nothing was queued for the connection by the time it was sent.
async fn echo_with_nothing_queued(client: &mut Client, expected: &str) {
    let (status, payload, pushes) = client
        .request_seeing_pushes(routes::ECHO, expected.to_owned())
        .await;
    assert!(status.is_ok());
    assert_eq!(payload, expected);
    assert!(
        pushes.is_empty(),
        "nothing else was queued before {expected:?}: {pushes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_all_1000_connections_once() {
    // Both ends of 1000 connections live in this process.
    if !resources::needs()
        .open_files(2_000)
        .met("a_broadcast_reaches_all_1000_connections_once")
    {
        return;
    }
    let server = TestServer::start(test_config()).await;
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let mut client = server.connect().await;
        // A first request proves the connection is registered with the hub.
        client.send(&gatehouse::Message::Ping(Bytes::new())).await;
        clients.push(client);
    }
    for client in &mut clients {
        assert!(matches!(
            client.recv().await,
            Some(gatehouse::Message::Pong(_))
        ));
    }
    let (status, count) = clients[0].request(routes::COUNT, "").await;
    assert!(status.is_ok());
    assert_eq!(u32::from_be_bytes(count[..4].try_into().unwrap()), 1000);

    let to_all = (routes::PUSH, Bytes::from_static(b"to all"));
    // The sender is pushed to as well; its push may come before or after its answer.
    let (status, _, mut early) = clients[0]
        .request_seeing_pushes(routes::BROADCAST, "to all")
        .await;
    assert!(status.is_ok());
    assert!(early.len() <= 1, "{early:?}");
    if let Some(push) = early.pop() {
        assert_eq!(push, to_all);
    } else {
        assert_eq!(clients[0].expect_push().await, to_all);
    }
    for client in &mut clients[1..] {
        assert_eq!(client.expect_push().await, to_all);
    }
    // Each got it once: a round trip after it finds nothing else queued.
    for client in &mut clients {
        echo_with_nothing_queued(client, "after").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_scope_broadcasts_to_their_members() {
    let server = TestServer::start(test_config()).await;
    let mut alice = server.connect().await;
    let mut bob = server.connect().await;
    let mut carol = server.connect().await;
    for client in [&mut alice, &mut bob] {
        assert!(client.request(routes::JOIN, "room1").await.0.is_ok());
    }
    assert!(carol.request(routes::JOIN, "room2").await.0.is_ok());
    let (_, n) = carol.request(routes::GROUP_COUNT, "room1").await;
    assert_eq!(n[..], 2u32.to_be_bytes());

    let (status, _, pushes) = alice
        .request_seeing_pushes(routes::GROUP_SAY, "room1\0hello")
        .await;
    assert!(status.is_ok());
    assert!(pushes.is_empty(), "the sender is excluded: {pushes:?}");
    assert_eq!(bob.expect_push().await, (routes::PUSH, "hello".into()));
    // Bob has it, so the group's pushes are queued: the sender was excluded and
    // carol is elsewhere, so nothing comes before their next answer.
    echo_with_nothing_queued(&mut alice, "a").await;
    echo_with_nothing_queued(&mut carol, "c").await;
    echo_with_nothing_queued(&mut bob, "b").await;

    assert!(bob.request(routes::LEAVE, "room1").await.0.is_ok());
    let (status, _, pushes) = carol
        .request_seeing_pushes(routes::GROUP_SAY, "room1\0anyone?")
        .await;
    assert!(status.is_ok());
    assert!(pushes.is_empty(), "{pushes:?}");
    assert_eq!(alice.expect_push().await, (routes::PUSH, "anyone?".into()));
    echo_with_nothing_queued(&mut bob, "b").await;
    echo_with_nothing_queued(&mut alice, "a").await;

    // A member that disconnects leaves its groups.
    drop(alice);
    server.record.wait_hooks(1).await;
    let (_, n) = carol.request(routes::GROUP_COUNT, "room1").await;
    assert_eq!(n[..], 0u32.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_can_be_pushed_to_messaged_and_kicked_by_id() {
    let server = TestServer::start(test_config()).await;
    let mut sender = server.connect().await;
    let mut target = server.connect().await;
    let target_id = target.whoami().await;
    let id_bytes = Bytes::copy_from_slice(&target_id.0.to_be_bytes());

    assert!(sender
        .request(routes::SEND_TO, id_bytes.clone())
        .await
        .0
        .is_ok());
    assert_eq!(target.expect_push().await.1, "hello");
    echo_with_nothing_queued(&mut sender, "pushed to one only").await;

    assert!(target.request(routes::MESSAGE_SELF, "ping").await.0.is_ok());
    assert_eq!(target.expect_push().await.1, "message: ping");
    echo_with_nothing_queued(&mut target, "one message, one push").await;

    assert!(sender.request(routes::KICK, id_bytes).await.0.is_ok());
    assert_eq!(target.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(
        hooks[0],
        (
            target_id,
            DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN)
        )
    );
    assert_eq!(
        sender.request(routes::COUNT, "").await.1[..],
        1u32.to_be_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_connection_that_is_gone_is_harmless() {
    let server = TestServer::start(test_config()).await;
    let mut sender = server.connect().await;
    let mut target = Client::connect(server.addr).await;
    let id = target.whoami().await;
    drop(target);
    server.record.wait_hooks(1).await;
    let id_bytes = Bytes::copy_from_slice(&id.0.to_be_bytes());
    assert!(sender
        .request(routes::SEND_TO, id_bytes.clone())
        .await
        .0
        .is_ok());
    assert!(sender.request(routes::KICK, id_bytes).await.0.is_ok());
    // Nothing meant for the gone connection reached anyone else.
    echo_with_nothing_queued(&mut sender, "fine").await;
    assert_eq!(server.record.hooks().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_messages_do_not_use_up_the_outbound_budget() {
    let mut config = test_config();
    config.limits.max_frame_bytes = 1024;
    config.limits.outbound_queue_bytes = 2048; // 32 messages' worth of budget
    let server = TestServer::start(config).await;
    let mut client = server.connect().await;
    for i in 0..300 {
        assert!(client
            .request(routes::MESSAGE_SELF, format!("m{i}"))
            .await
            .0
            .is_ok());
        assert_eq!(client.expect_push().await.1, format!("message: m{i}"));
    }
    echo_with_nothing_queued(&mut client, "one push per message").await;
    assert!(server.record.hooks().is_empty(), "nobody was kicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_the_frame_limit_is_refused_to_the_game_and_reaches_nobody() {
    let mut config = test_config();
    config.limits.max_frame_bytes = 1024;
    let server = TestServer::start(config).await;
    let mut sender = server.connect().await;
    let mut listener = server.connect().await;
    echo_with_nothing_queued(&mut listener, "registered").await;
    // A push's body is its kind, its route and the payload: 1021 bytes fit in 1024.
    let (status, _) = sender
        .request(routes::BROADCAST_SIZED, 1021u32.to_be_bytes().to_vec())
        .await;
    assert!(status.is_ok());
    let (_, pushed) = listener.expect_push().await;
    assert_eq!(pushed.len(), 1021);
    // One byte more, and the game hears why instead of any client being sent it.
    let (status, text) = sender
        .request(routes::BROADCAST_SIZED, 1022u32.to_be_bytes().to_vec())
        .await;
    assert_eq!(status, Status::INTERNAL_ERROR);
    assert!(String::from_utf8_lossy(&text).contains("over max_frame_bytes"));
    echo_with_nothing_queued(&mut listener, "nothing arrived").await;
    assert!(server.record.hooks().is_empty(), "nobody was kicked");
}
