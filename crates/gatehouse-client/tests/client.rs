//! The client library against a real server on 127.0.0.1: concurrent requests,
//! statuses, pushes in order, typed kicks, heartbeats, timeouts.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use gatehouse::{KickReason, Status};
use gatehouse_client::{Client, ClientConfig, ClientError, Push};
use support::{routes, test_config, TestServer};

async fn connect(server: &TestServer) -> (Client, gatehouse_client::Pushes) {
    Client::connect(server.addr, ClientConfig::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_response() {
    let server = TestServer::start(test_config()).await;
    let (client, _pushes) = connect(&server).await;
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { (i, client.request(routes::ECHO, format!("n{i}")).await) })
        })
        .collect();
    for call in calls {
        let (i, answer) = call.await.unwrap();
        assert_eq!(answer.unwrap(), format!("n{i}"));
    }
}

#[tokio::test]
async fn an_error_status_is_a_typed_error_and_the_connection_goes_on() {
    let server = TestServer::start(test_config()).await;
    let (client, _pushes) = connect(&server).await;
    match client.request(4242, "").await {
        Err(ClientError::Status { status, text }) => {
            assert_eq!(status, Status::UNKNOWN_ROUTE);
            assert!(text.contains("4242"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.request(routes::ECHO, "ok").await.unwrap(), "ok");
}

#[tokio::test]
async fn pushes_arrive_in_order() {
    let server = TestServer::start(test_config()).await;
    let (listener, mut pushes) = connect(&server).await;
    let (sender, _) = connect(&server).await;
    listener.request(routes::WHOAMI, "").await.unwrap(); // registered
    for i in 0..100 {
        sender
            .request(routes::BROADCAST, format!("b{i}"))
            .await
            .unwrap();
    }
    for i in 0..100 {
        let push = pushes.next().await.unwrap();
        assert_eq!(
            push,
            Push {
                route: routes::PUSH,
                payload: Bytes::from(format!("b{i}"))
            }
        );
    }
}

#[tokio::test]
async fn a_kick_fails_waiting_and_later_calls_with_its_reason() {
    let server = TestServer::start(test_config()).await;
    let (victim, mut pushes) = connect(&server).await;
    let (kicker, _) = connect(&server).await;
    let id = victim.request(routes::WHOAMI, "").await.unwrap();
    let waiting = {
        let victim = victim.clone();
        tokio::spawn(async move { victim.request(routes::HANG, "").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    kicker.request(routes::KICK, id).await.unwrap();
    let expected = |e: &ClientError| matches!(e, ClientError::Kicked { reason, .. } if *reason == KickReason::DUPLICATE_LOGIN);
    let waited = waiting.await.unwrap().unwrap_err();
    assert!(expected(&waited), "{waited:?}");
    assert!(pushes.next().await.is_none(), "the push stream ends");
    let later = victim.request(routes::ECHO, "").await.unwrap_err();
    assert!(expected(&later), "{later:?}");
    assert!(expected(&victim.ended().unwrap()));
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_client_connected() {
    let mut config = test_config();
    config.limits.idle_timeout = Duration::from_millis(400);
    let server = TestServer::start(config).await;
    let quick = ClientConfig {
        heartbeat: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let (client, _p) = Client::connect(server.addr, quick).await.unwrap();
    let never = ClientConfig {
        heartbeat: Duration::from_secs(3600),
        ..ClientConfig::default()
    };
    let (silent, _q) = Client::connect(server.addr, never).await.unwrap();
    client.request(routes::ECHO, "").await.unwrap();
    silent.request(routes::ECHO, "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        client.request(routes::ECHO, "still").await.unwrap(),
        "still"
    );
    let gone = silent.request(routes::ECHO, "").await.unwrap_err();
    assert!(
        matches!(gone, ClientError::Kicked { reason, .. } if reason == KickReason::IDLE),
        "{gone:?}"
    );
}

#[tokio::test]
async fn a_request_without_answer_times_out() {
    let mut config = test_config();
    config.limits.handler_timeout = Duration::from_millis(600);
    let server = TestServer::start(config).await;
    let client_config = ClientConfig {
        request_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let (client, mut pushes) = Client::connect(server.addr, client_config).await.unwrap();
    assert_eq!(
        client.request(routes::HANG, "").await,
        Err(ClientError::Timeout)
    );
    // The server gives up on its stuck handler too, and says so.
    assert!(pushes.next().await.is_none());
    let ended = client.ended().unwrap();
    assert!(
        matches!(ended, ClientError::Kicked { reason, .. } if reason == KickReason::INTERNAL_ERROR),
        "{ended:?}"
    );
    assert_eq!(server.stats.snapshot().handler_timeouts, 1);
}

#[tokio::test]
async fn close_ends_the_client_and_the_server_sees_the_peer_leave() {
    let server = TestServer::start(test_config()).await;
    let (client, mut pushes) = connect(&server).await;
    assert_eq!(client.request(routes::ECHO, "x").await.unwrap(), "x");
    client.close();
    assert_eq!(
        client.request(routes::ECHO, "").await,
        Err(ClientError::Closed)
    );
    assert!(pushes.next().await.is_none());
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, gatehouse::DisconnectReason::PeerClosed);
}
