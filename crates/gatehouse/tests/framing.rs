//! Framing and envelope behaviour over real sockets: Erlang `{packet, 4}` limits,
//! split and coalesced frames, every envelope kind, and malformed input closing only
//! the offending connection.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse::{DisconnectReason, KickReason, Message, Status};
use support::{routes, test_config, TestServer};

/// A request frame whose body is exactly `body_len` bytes.
fn echo_request_with_body(id: u32, body_len: usize) -> Message {
    Message::Request {
        id,
        route: routes::ECHO,
        payload: Bytes::from(vec![7u8; body_len - 7]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_262144_byte_frame_is_served_and_262145_closes_only_that_connection() {
    let server = TestServer::start(test_config()).await;
    let mut bystander = server.connect().await;
    let mut client = server.connect().await;

    let max = echo_request_with_body(1, 262_144);
    assert_eq!(max.body_len(), 262_144);
    client.send(&max).await;
    match client.recv().await {
        Some(Message::Response {
            id: 1,
            status,
            payload,
        }) => {
            assert!(status.is_ok());
            assert_eq!(payload.len(), 262_144 - 7);
        }
        other => panic!("expected the echo, got {other:?}"),
    }

    // Only the header of the oversized frame is sent: the server must decide from it.
    client.send_raw(&262_145u32.to_be_bytes()).await;
    assert_eq!(client.expect_kick().await, KickReason::FRAME_TOO_LARGE);

    let (status, payload) = bystander.request(routes::ECHO, "still here").await;
    assert!(status.is_ok());
    assert_eq!(&payload[..], b"still here");
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::FrameTooLarge);
    assert_eq!(server.stats.snapshot().frames_too_large, 1);
}

#[tokio::test]
async fn a_frame_split_byte_by_byte_is_reassembled() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.connect().await;
    let frame = Message::Request {
        id: 9,
        route: routes::ECHO,
        payload: Bytes::from_static(b"slowly"),
    }
    .to_frame();
    // One write per byte (no Nagle: each goes out alone), letting the server run
    // in between.
    for byte in frame.iter() {
        client.send_raw(&[*byte]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        client.recv().await,
        Some(Message::Response {
            id: 9,
            status: Status::OK,
            payload: Bytes::from_static(b"slowly"),
        })
    );
}

#[tokio::test]
async fn many_frames_in_one_segment_are_all_answered_in_order() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.connect().await;
    let mut segment = BytesMut::new();
    for id in 0..500u32 {
        segment.put(
            Message::Request {
                id,
                route: routes::ECHO,
                payload: Bytes::copy_from_slice(&id.to_be_bytes()),
            }
            .to_frame(),
        );
    }
    segment.put(Message::Empty.to_frame());
    segment.put(Message::Ping(Bytes::from_static(b"n1")).to_frame());
    client.send_raw(&segment).await;
    for id in 0..500u32 {
        match client.recv().await {
            Some(Message::Response {
                id: got, payload, ..
            }) => {
                assert_eq!(got, id, "responses come in request order");
                assert_eq!(&payload[..], &id.to_be_bytes());
            }
            other => panic!("expected response {id}, got {other:?}"),
        }
    }
    // The empty frame is a keepalive with no answer; the ping comes right after.
    assert_eq!(
        client.recv().await,
        Some(Message::Pong(Bytes::from_static(b"n1")))
    );
}

#[tokio::test]
async fn requests_notifies_and_pings_get_their_documented_answers() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.connect().await;
    let (status, payload) = client.request(routes::ECHO, "hi").await;
    assert_eq!((status, &payload[..]), (Status::OK, &b"hi"[..]));

    let (status, _) = client.request(4242, "?").await;
    assert_eq!(
        status,
        Status::UNKNOWN_ROUTE,
        "unknown routes answer, not close"
    );

    // A notify to an unknown route is logged and ignored; the connection goes on.
    client
        .send(&Message::Notify {
            route: 4242,
            payload: Bytes::new(),
        })
        .await;
    client.send(&Message::Ping(Bytes::new())).await;
    assert_eq!(client.recv().await, Some(Message::Pong(Bytes::new())));

    let (status, _) = client
        .request(gatehouse::protocol::RESERVED_ROUTES_START, "")
        .await;
    assert_eq!(status, Status::UNKNOWN_ROUTE);
}

#[tokio::test]
async fn fault_injection_routes_are_forbidden_unless_enabled() {
    let mut config = test_config();
    config.server.allow_fault_injection = false;
    let server = TestServer::start(config).await;
    let mut client = server.connect().await;
    for route in [
        gatehouse::protocol::ROUTE_FAULT_CRASH_HUB,
        gatehouse::protocol::ROUTE_FAULT_PANIC_HANDLER,
    ] {
        let (status, _) = client.request(route, "").await;
        assert_eq!(status, Status::FORBIDDEN);
    }
    assert_eq!(server.stats.snapshot().hub_restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_and_server_only_kinds_close_with_protocol_error() {
    let server = TestServer::start(test_config()).await;
    let bad_frames: Vec<Bytes> = vec![
        Bytes::from_static(&[0, 0, 0, 1, 99]),      // unknown kind
        Bytes::from_static(&[0, 0, 0, 3, 1, 0, 0]), // truncated request
        Message::Push {
            route: 1,
            payload: Bytes::new(),
        }
        .to_frame(),
        Message::Response {
            id: 1,
            status: Status::OK,
            payload: Bytes::new(),
        }
        .to_frame(),
        KickReason::IDLE.frame("bye"),
    ];
    let mut bystander = server.connect().await;
    for (i, frame) in bad_frames.iter().enumerate() {
        let mut client = server.connect().await;
        client.send_raw(frame).await;
        assert_eq!(
            client.expect_kick().await,
            KickReason::PROTOCOL_ERROR,
            "bad frame {i}"
        );
    }
    assert!(bystander.request(routes::ECHO, "ok").await.0.is_ok());
    let hooks = server.record.wait_hooks(bad_frames.len()).await;
    assert!(hooks
        .iter()
        .all(|(_, reason)| *reason == DisconnectReason::ProtocolError));
    assert_eq!(
        server.stats.snapshot().protocol_errors,
        bad_frames.len() as u64
    );
}

#[tokio::test]
async fn a_client_closing_mid_frame_ends_only_its_connection_and_runs_its_hook() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.connect().await;
    client.send_raw(&[0, 0, 0, 50, 1, 2, 3]).await;
    drop(client);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::PeerClosed);
    let mut other = server.connect().await;
    assert!(other.request(routes::ECHO, "x").await.0.is_ok());
}

#[tokio::test]
async fn a_half_closed_client_still_receives_every_answer() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.connect().await;
    let mut segment = BytesMut::new();
    for id in 0..300u32 {
        segment.put(echo_request_with_body(id, 1000).to_frame());
    }
    client.send_raw(&segment).await;
    tokio::io::AsyncWriteExt::shutdown(&mut client.stream)
        .await
        .unwrap();
    for id in 0..300u32 {
        match client.recv().await {
            Some(Message::Response { id: got, .. }) => assert_eq!(got, id),
            other => panic!("answer {id} lost: {other:?}"),
        }
    }
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::PeerClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_and_async_answers_interleave_in_request_order() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.connect().await;
    let mut segment = BytesMut::new();
    for id in 0..100u32 {
        // Even ids go to the fast path (request_now), odd ones to the async handler.
        let route = if id % 2 == 0 {
            routes::REVERSE_NOW
        } else {
            routes::ECHO
        };
        let payload = Bytes::copy_from_slice(&id.to_be_bytes());
        segment.put(Message::Request { id, route, payload }.to_frame());
    }
    client.send_raw(&segment).await;
    for id in 0..100u32 {
        let mut expected = id.to_be_bytes();
        if id % 2 == 0 {
            expected.reverse();
        }
        match client.recv().await {
            Some(Message::Response {
                id: got,
                status,
                payload,
            }) => {
                assert_eq!(got, id, "responses come in request order");
                assert_eq!(status, Status::OK);
                assert_eq!(&payload[..], &expected);
            }
            other => panic!("expected response {id}, got {other:?}"),
        }
    }
}
