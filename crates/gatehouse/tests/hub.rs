//! The hub (the seed's gs_svr) over real sockets: broadcast, groups, sending to and
//! kicking one connection, service messages and counts.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use gatehouse::{DisconnectReason, KickReason};
use support::{routes, test_config, Client, TestServer};

#[tokio::test]
async fn a_broadcast_reaches_all_1000_connections_once() {
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

    let (status, _) = clients[0].request(routes::BROADCAST, "to all").await;
    assert!(status.is_ok());
    for client in &mut clients {
        assert_eq!(
            client.expect_push().await,
            (routes::PUSH, Bytes::from_static(b"to all"))
        );
    }
    // Nothing else was queued for anyone: a second round trip sees only its answer.
    for client in clients.iter_mut().take(50) {
        assert_eq!(client.request(routes::ECHO, "after").await.1, "after");
    }
}

#[tokio::test]
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

    assert!(alice
        .request(routes::GROUP_SAY, "room1\0hello")
        .await
        .0
        .is_ok());
    assert_eq!(bob.expect_push().await.1, "hello");
    // The sender was excluded and carol is elsewhere: their next frame is their answer.
    assert_eq!(alice.request(routes::ECHO, "a").await.1, "a");
    assert_eq!(carol.request(routes::ECHO, "c").await.1, "c");

    assert!(bob.request(routes::LEAVE, "room1").await.0.is_ok());
    assert!(carol
        .request(routes::GROUP_SAY, "room1\0anyone?")
        .await
        .0
        .is_ok());
    assert_eq!(alice.expect_push().await.1, "anyone?");
    assert_eq!(bob.request(routes::ECHO, "b").await.1, "b");

    // A member that disconnects leaves its groups.
    drop(alice);
    server.record.wait_hooks(1).await;
    let (_, n) = carol.request(routes::GROUP_COUNT, "room1").await;
    assert_eq!(n[..], 0u32.to_be_bytes());
}

#[tokio::test]
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

    assert!(target.request(routes::MESSAGE_SELF, "ping").await.0.is_ok());
    assert_eq!(target.expect_push().await.1, "message: ping");

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

#[tokio::test]
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
    assert_eq!(sender.request(routes::ECHO, "fine").await.1, "fine");
}

#[tokio::test]
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
    assert!(server.record.hooks().is_empty(), "nobody was kicked");
}
