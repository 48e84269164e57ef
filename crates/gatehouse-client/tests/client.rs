//! The client library against a real server on 127.0.0.1: concurrent requests,
//! statuses, pushes in order, typed kicks, heartbeats, timeouts, every transport, and
//! errors that say what went wrong (an untrusted certificate, the wrong transport).

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

mod dev_cert;

use std::time::Duration;

use bytes::Bytes;
use gatehouse::bench_service::routes as bench;
use gatehouse::{KickReason, Status};
use gatehouse_client::{Client, ClientConfig, ClientError, Push, Pushes};
use support::{routes, test_config, TestServer, PATIENCE};
use tokio::time::Instant;

async fn connect(server: &TestServer) -> (Client, Pushes) {
    Client::connect(server.addr, ClientConfig::default())
        .await
        .unwrap()
}

/// The next push, or `None` once the connection has ended; fails after [`PATIENCE`].
async fn next_push(pushes: &mut Pushes) -> Option<Push> {
    tokio::time::timeout(PATIENCE, pushes.next())
        .await
        .expect("a push or the end of the stream in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
        let push = next_push(&mut pushes).await.unwrap();
        assert_eq!(
            push,
            Push {
                route: routes::PUSH,
                payload: Bytes::from(format!("b{i}"))
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_fails_waiting_and_later_calls_with_its_reason() {
    let server = TestServer::start(test_config()).await;
    let (victim, mut pushes) = connect(&server).await;
    let (kicker, _) = connect(&server).await;
    let id = victim.request(routes::WHOAMI, "").await.unwrap();
    let waiting = {
        let victim = victim.clone();
        tokio::spawn(async move { victim.request(routes::HANG, "").await })
    };
    server.record.wait_hangs(1).await; // the request is waiting on the server
    kicker.request(routes::KICK, id).await.unwrap();
    let expected = |e: &ClientError| matches!(e, ClientError::Kicked { reason, .. } if *reason == KickReason::DUPLICATE_LOGIN);
    let waited = waiting.await.unwrap().unwrap_err();
    assert!(expected(&waited), "{waited:?}");
    assert!(
        next_push(&mut pushes).await.is_none(),
        "the push stream ends"
    );
    let later = victim.request(routes::ECHO, "").await.unwrap_err();
    assert!(expected(&later), "{later:?}");
    assert!(expected(&victim.ended().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_quiet_client_connected() {
    // A ping every 100 ms against an idle timeout of 1 s: a wide margin.
    let idle_timeout = Duration::from_secs(1);
    let mut config = test_config();
    config.limits.idle_timeout = idle_timeout;
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
    let (silent, mut silent_pushes) = Client::connect(server.addr, never).await.unwrap();
    client.request(routes::ECHO, "").await.unwrap();
    // From here on neither sends anything of its own.
    let quiet_from = Instant::now();
    silent.request(routes::ECHO, "").await.unwrap();
    // The silent one is kicked idle (its push stream ends)…
    assert!(next_push(&mut silent_pushes).await.is_none());
    let gone = silent.ended().unwrap();
    assert!(
        matches!(gone, ClientError::Kicked { reason, .. } if reason == KickReason::IDLE),
        "{gone:?}"
    );
    let quiet_for = quiet_from.elapsed();
    assert!(quiet_for >= idle_timeout, "kicked after {quiet_for:?}");
    // … while the one whose heartbeats ran, quiet as long, is still served.
    assert_eq!(client.ended(), None);
    assert_eq!(
        client.request(routes::ECHO, "still").await.unwrap(),
        "still"
    );
    assert_eq!(server.stats.snapshot().idle_kicks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_answer_times_out() {
    // The client gives up at 200 ms, the server on its handler at 2 s: far apart, so
    // the client's timeout is always first.
    let request_timeout = Duration::from_millis(200);
    let handler_timeout = Duration::from_secs(2);
    let mut config = test_config();
    config.limits.handler_timeout = handler_timeout;
    let server = TestServer::start(config).await;
    let client_config = ClientConfig {
        request_timeout,
        ..ClientConfig::default()
    };
    let (client, mut pushes) = Client::connect(server.addr, client_config).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        client.request(routes::HANG, "").await,
        Err(ClientError::Timeout)
    );
    let gave_up = started.elapsed();
    assert!(gave_up >= request_timeout, "timed out after {gave_up:?}");
    // The server gives up on its stuck handler too, and says so.
    assert!(next_push(&mut pushes).await.is_none());
    let ended = client.ended().unwrap();
    assert!(
        matches!(ended, ClientError::Kicked { reason, .. } if reason == KickReason::INTERNAL_ERROR),
        "{ended:?}"
    );
    let kicked = started.elapsed();
    assert!(kicked >= handler_timeout, "kicked after {kicked:?}");
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
    assert!(next_push(&mut pushes).await.is_none());
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, gatehouse::DisconnectReason::PeerClosed);
}

/// The protocol says clients answer a server's ping with a pong carrying the same
/// payload; a server that checks on its clients this way must get one.
#[tokio::test]
async fn a_ping_from_the_server_is_answered_with_a_pong_carrying_its_payload() {
    use gatehouse::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_client, _pushes) = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    server
        .write_all(&Message::Ping(Bytes::from_static(b"are you there")).to_frame())
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, async {
        loop {
            let len = server.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len];
            server.read_exact(&mut body).await.unwrap();
            let message = Message::decode(Bytes::from(body)).unwrap();
            if let Message::Pong(payload) = message {
                return payload;
            }
        }
    })
    .await
    .expect("a pong in time");
    assert_eq!(answer, "are you there");
}

/// A server with a listener of every transport, a self-signed certificate for them,
/// and the certificate's PEM file for the clients to trust.
struct EveryTransport {
    targets: Vec<gatehouse_client::Target>,
    ca: support::Scratch,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), gatehouse::ServerError>>,
}

async fn serve_every_transport() -> EveryTransport {
    use gatehouse::listener::WebOptions;
    use gatehouse::Listener;
    let (certs, ca) = dev_cert::localhost("client-ca");
    let bind = || gatehouse::bind("127.0.0.1:0".parse().unwrap());
    let listeners = vec![
        Listener::tcp(bind().await.unwrap()),
        Listener::tls(bind().await.unwrap(), certs.clone()),
        Listener::websocket(bind().await.unwrap(), WebOptions::default()),
        Listener::secure_websocket(bind().await.unwrap(), certs, WebOptions::default()),
    ];
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    let targets = [
        format!("127.0.0.1:{}", port(0)),
        format!("tls://localhost:{}", port(1)),
        format!("ws://127.0.0.1:{}/ws", port(2)),
        format!("wss://localhost:{}/ws", port(3)),
    ]
    .iter()
    .map(|t| t.parse().unwrap())
    .collect();
    let server =
        gatehouse::Server::new(test_config(), gatehouse::bench_service::BenchService).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(listeners, stop.clone().cancelled_owned()));
    EveryTransport {
        targets,
        ca,
        stop,
        task,
    }
}

#[tokio::test]
async fn the_client_speaks_every_transport_and_sees_kicks_on_each() {
    let server = serve_every_transport().await;
    let config = ClientConfig {
        tls_ca: Some(server.ca.path().join("ca.pem")),
        ..ClientConfig::default()
    };
    let mut clients = Vec::new();
    for target in &server.targets {
        let (client, pushes) = Client::connect_to(target, config.clone()).await.unwrap();
        assert_eq!(
            client
                .request(bench::ECHO, target.to_string())
                .await
                .unwrap(),
            target.to_string()
        );
        clients.push((client, pushes));
    }
    clients[3]
        .0
        .request(bench::BROADCAST, "all of you")
        .await
        .unwrap();
    for (_, pushes) in &mut clients {
        let push = next_push(pushes).await.unwrap();
        assert_eq!(
            (push.route, &push.payload[..]),
            (bench::BROADCAST, &b"all of you"[..])
        );
    }
    server.stop.cancel();
    for (client, mut pushes) in clients {
        assert!(next_push(&mut pushes).await.is_none());
        assert!(
            matches!(client.ended(), Some(ClientError::Kicked { reason, .. }) if reason == KickReason::SHUTDOWN),
            "{:?}",
            client.ended()
        );
    }
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_tls_client_refuses_a_certificate_it_does_not_trust() {
    let server = serve_every_transport().await;
    // The system's roots do not include a fresh self-signed certificate.
    for target in &server.targets[1..] {
        if matches!(target, gatehouse_client::Target::Ws(_)) {
            continue;
        }
        let refused = Client::connect_to(target, ClientConfig::default()).await;
        // It says why, and what to do about a development certificate.
        assert!(
            matches!(&refused, Err(ClientError::Io(e)) if e.contains("TLS") && e.contains("tls_ca")),
            "{target}: {:?}",
            refused.err()
        );
    }
    server.stop.cancel();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_plain_client_at_a_tls_or_websocket_port_is_told_what_the_server_speaks() {
    let server = serve_every_transport().await;
    for (target, expected) in [
        (&server.targets[1], "tls://"),
        (&server.targets[2], "ws://"),
    ] {
        // The same port, as plain TCP.
        let url = target.to_string();
        let port = url.rsplit(':').next().unwrap().trim_end_matches("/ws");
        let plain: gatehouse_client::Target = format!("tcp://127.0.0.1:{port}").parse().unwrap();
        let (client, _pushes) = Client::connect_to(&plain, ClientConfig::default())
            .await
            .unwrap();
        // The server answers the first frame in its own protocol, which is no frame.
        assert!(client.request(bench::ECHO, "hello").await.is_err());
        let ended = client.ended().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            ended.contains(expected) && !ended.contains("frame size"),
            "{target}: {ended}"
        );
    }
    server.stop.cancel();
    server.task.await.unwrap().unwrap();
}
