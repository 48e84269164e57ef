//! The client resumes a session the server offered: through a proxy that cuts the
//! connection during pushes and pipelined requests, every push arrives once and in
//! order, every request is answered once and ran once, and the server ran no hook.
//! The same over TLS, WebSocket and WebSocket over TLS. A refused resume ends the
//! client with `resume_failed`. A client that leaves (or closes its WebSocket
//! normally) is not waited for; one that closes its WebSocket as lost, to resume, is.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

mod dev_cert;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gatehouse::listener::WebOptions;
use gatehouse::{ConnId, DisconnectReason, KickReason, Listener, Message};
use gatehouse_client::{Client, ClientConfig, ClientError, Pushes, Target};
use support::counter::{push_numbers, start_with_handle, Game, INCREMENT, LOGIN, PUSH};
use support::proxy::Proxy;
use support::{eventually, test_config, Record, PATIENCE};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A frame's body, as one WebSocket message carries it.
fn body(message: &Message) -> bytes::Bytes {
    let mut body = bytes::BytesMut::new();
    message.encode_body(&mut body);
    body.freeze()
}

/// Logs in through `addr`; the connection id the server answers.
async fn log_in(addr: std::net::SocketAddr) -> (Client, Pushes, ConnId) {
    log_in_to(&Target::Tcp(addr.to_string())).await
}

/// Logs in at `target`; the connection id the server answers.
async fn log_in_to(target: &Target) -> (Client, Pushes, ConnId) {
    let (client, pushes) = Client::connect_to(target, ClientConfig::default())
        .await
        .unwrap();
    let id = client.request(LOGIN, "ada").await.unwrap();
    let id = ConnId(u64::from_be_bytes(id[..8].try_into().unwrap()));
    (client, pushes, id)
}

/// A server of the counter game on a TCP and a WebSocket listener, its resume
/// window an hour (nobody waits that long: a hook that runs is the test's doing).
struct TcpAndWebSocket {
    tcp: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    record: Arc<Record>,
    stats: Arc<gatehouse::stats::Stats>,
    stop: tokio_util::sync::CancellationToken,
    serving: tokio::task::JoinHandle<Result<(), gatehouse::ServerError>>,
}

impl TcpAndWebSocket {
    async fn start() -> TcpAndWebSocket {
        let mut config = test_config();
        config.resume.window = Duration::from_secs(3600);
        let record = Arc::new(Record::default());
        let server = gatehouse::Server::new(config, Game::<true>::new(record.clone())).unwrap();
        let stats = server.stats();
        let bind = || gatehouse::bind("127.0.0.1:0".parse().unwrap());
        let listeners = vec![
            Listener::tcp(bind().await.unwrap()),
            Listener::websocket(bind().await.unwrap(), WebOptions::default()),
        ];
        let tcp = listeners[0].local_addr().unwrap();
        let ws = listeners[1].local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn(server.run(listeners, stop.clone().cancelled_owned()));
        TcpAndWebSocket {
            tcp,
            ws,
            record,
            stats,
            stop,
            serving,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.serving.await.unwrap().unwrap();
    }
}

/// The next push's number.
async fn next_number(pushes: &mut Pushes) -> u32 {
    let push = tokio::time::timeout(PATIENCE, pushes.next())
        .await
        .expect("a push in time")
        .expect("the client goes on");
    assert_eq!(push.route, PUSH);
    u32::from_be_bytes(push.payload[..].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_during_pushes_and_pipelined_increments_loses_nothing_and_runs_nothing_twice() {
    let (server, handle) = start_with_handle::<true>(test_config()).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, mut pushes, conn) = log_in(proxy.addr).await;
    let pushing = push_numbers(handle, conn, 200);
    let increments: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request(INCREMENT, "").await })
        })
        .collect();
    for n in 0..10 {
        assert_eq!(next_number(&mut pushes).await, n);
    }
    proxy.cut();
    for n in 10..200 {
        assert_eq!(
            next_number(&mut pushes).await,
            n,
            "every push once, in order"
        );
    }
    let mut counts = Vec::new();
    for increment in increments {
        let count = increment.await.unwrap().expect("answered across the cut");
        counts.push(u64::from_be_bytes(count[..].try_into().unwrap()));
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<_>>(), "each ran once");
    pushing.await.unwrap();
    assert_eq!(client.resumes(), 1);
    assert_eq!(server.stats.snapshot().sessions_resumed, 1);
    assert!(server.record.hooks().is_empty(), "no hook ran");
    client.close();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_server_refuses_ends_the_client_with_resume_failed() {
    let mut config = test_config();
    config.resume.buffer_bytes = 1024;
    let (server, handle) = start_with_handle::<true>(config).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, _pushes, conn) = log_in(proxy.addr).await;
    // The client is away (its connections stall), and more is sent to it than the
    // replay keeps: its resume is a gap.
    proxy.stall().await;
    for _ in 0..20 {
        handle.push_to(conn, PUSH, vec![0u8; 100]).await.unwrap();
    }
    proxy.close_kept(); // then the network drops it
    let ended = eventually("the client ends", || client.ended()).await;
    match ended {
        ClientError::Kicked { reason, text } => {
            assert_eq!(reason, KickReason::RESUME_FAILED);
            assert!(text.starts_with("gap"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_over_tcp_or_closes_its_websocket_ends_its_session_at_once() {
    let server = TcpAndWebSocket::start().await;
    let (record, stats) = (&server.record, &server.stats);
    let tcp = Target::Tcp(server.tcp.to_string());
    let ws: Target = format!("ws://{}/ws", server.ws).parse().unwrap();

    // Over TCP a close looks like a lost connection: the client says it leaves.
    let (client, _pushes, conn) = log_in_to(&tcp).await;
    client.leave().await;
    assert_eq!(client.ended(), Some(ClientError::Closed));
    assert_eq!(
        record.wait_hooks(1).await[0],
        (conn, DisconnectReason::PeerClosed)
    );
    // Over WebSocket the close frame says it.
    let (client, _pushes, conn) = log_in_to(&ws).await;
    client.close();
    assert_eq!(
        record.wait_hooks(2).await[1],
        (conn, DisconnectReason::PeerClosed)
    );
    assert_eq!(stats.snapshot().sessions_detached, 0, "nothing waited");

    // A client that gives up on a connection it thinks lost closes it with another
    // code: the session waits for its resume.
    let mut raw = raw_websocket(server.ws).await;
    let login = Message::Request {
        id: 1,
        route: LOGIN,
        payload: "bea".into(),
    };
    raw.send(WsMessage::Binary(body(&login))).await.unwrap();
    loop {
        let frame = raw.next().await.unwrap().unwrap().into_data();
        if matches!(
            Message::decode(frame).unwrap(),
            Message::Response { id: 1, .. }
        ) {
            break;
        }
    }
    close_as_lost(raw, stats, 1).await;
    assert_eq!(record.hooks().len(), 2, "no hook ran for it");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_session_resumes_over_tls_websocket_and_websocket_over_tls_as_over_tcp() {
    let (certs, ca) = dev_cert::localhost("resume-ca");
    let record = Arc::new(Record::default());
    let server = gatehouse::Server::new(test_config(), Game::<true>::new(record.clone())).unwrap();
    let (handle, stats) = (server.handle(), server.stats());
    let bind = || gatehouse::bind("127.0.0.1:0".parse().unwrap());
    let listeners = vec![
        Listener::tls(bind().await.unwrap(), certs.clone()),
        Listener::websocket(bind().await.unwrap(), WebOptions::default()),
        Listener::secure_websocket(bind().await.unwrap(), certs, WebOptions::default()),
    ];
    let mut proxies = Vec::new();
    for listener in &listeners {
        proxies.push(Proxy::start(listener.local_addr().unwrap()).await);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(server.run(listeners, stop.clone().cancelled_owned()));
    let targets: Vec<Target> = [
        format!("tls://localhost:{}", proxies[0].addr.port()),
        format!("ws://127.0.0.1:{}/ws", proxies[1].addr.port()),
        format!("wss://localhost:{}/ws", proxies[2].addr.port()),
    ]
    .iter()
    .map(|t| t.parse().unwrap())
    .collect();
    let config = ClientConfig {
        tls_ca: Some(ca.path().join("ca.pem")),
        ..ClientConfig::default()
    };

    for (target, proxy) in targets.iter().zip(&proxies) {
        let (client, mut pushes) = Client::connect_to(target, config.clone()).await.unwrap();
        let id = client.request(LOGIN, "ada").await.unwrap();
        let conn = ConnId(u64::from_be_bytes(id[..8].try_into().unwrap()));
        let pushing = push_numbers(handle.clone(), conn, 100);
        for n in 0..10 {
            assert_eq!(next_number(&mut pushes).await, n, "{target}");
        }
        proxy.cut();
        for n in 10..100 {
            assert_eq!(
                next_number(&mut pushes).await,
                n,
                "{target}: once, in order"
            );
        }
        pushing.await.unwrap();
        let count = client.request(INCREMENT, "").await.unwrap();
        assert_eq!(count[..], 1u64.to_be_bytes(), "{target}");
        assert_eq!(client.resumes(), 1, "{target}");
        client.leave().await;
    }
    assert_eq!(stats.snapshot().sessions_resumed, 3);
    let hooks = record.wait_hooks(3).await;
    assert!(
        hooks
            .iter()
            .all(|(_, reason)| *reason == DisconnectReason::PeerClosed),
        "each ended once, when it left: {hooks:?}"
    );
    stop.cancel();
    serving.await.unwrap().unwrap();
}

/// A raw WebSocket to `addr`.
async fn raw_websocket(
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (raw, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), socket)
        .await
        .unwrap();
    raw
}

/// The next envelope a raw WebSocket receives; `None` at its close, whose code and
/// reason are then in `closed`.
async fn next_envelope(
    raw: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    closed: &mut Option<(u16, String)>,
) -> Option<Message> {
    loop {
        match tokio::time::timeout(PATIENCE, raw.next())
            .await
            .expect("in time")?
        {
            Ok(WsMessage::Binary(data)) => return Some(Message::decode(data).unwrap()),
            Ok(WsMessage::Close(frame)) => {
                *closed = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return None;
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Closes a raw WebSocket as a client that will resume closes it (code 4000), then
/// waits until the server counts `detached` sessions waiting.
async fn close_as_lost(
    mut raw: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    stats: &gatehouse::stats::Stats,
    detached: u64,
) {
    let lost = CloseFrame {
        code: CloseCode::from(4000),
        reason: "lost; resuming".into(),
    };
    raw.close(Some(lost)).await.unwrap();
    eventually("the session waits for a resume", || {
        (stats.snapshot().sessions_detached == detached).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_over_another_transport_or_with_a_token_used_already_is_refused() {
    let server = TcpAndWebSocket::start().await;
    let (record, stats) = (&server.record, &server.stats);
    let (tcp_addr, ws_addr) = (server.tcp, server.ws);

    // A WebSocket session, lost (closed as a client that will resume closes it).
    let mut raw = raw_websocket(ws_addr).await;
    let login = Message::Request {
        id: 1,
        route: LOGIN,
        payload: "ada".into(),
    };
    raw.send(WsMessage::Binary(body(&login))).await.unwrap();
    let mut closed = None;
    let (mut session, mut received) = (None, 0);
    while received == 0 {
        match next_envelope(&mut raw, &mut closed).await.expect("open") {
            Message::Session { id, token, .. } => session = Some((id, token)),
            Message::Response { id: 1, .. } => received += 1,
            other => panic!("{other:?}"),
        }
    }
    let (id, token) = session.expect("a session before the answer");
    close_as_lost(raw, stats, 1).await;
    let resume = Message::Resume {
        id,
        received,
        token,
    };

    // Over TCP, with the right token: not this session's transport.
    let mut tcp = support::Client::connect(tcp_addr).await;
    tcp.send(&resume).await;
    match tcp.recv().await {
        Some(Message::Kick { reason, text }) => {
            assert_eq!(reason, KickReason::RESUME_FAILED);
            assert!(
                text.starts_with("unknown: the session is on another transport"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Over WebSocket it resumes, and its token is used up: a second resume with it
    // is `busy`; the fresh token that came with it works.
    let mut first = raw_websocket(ws_addr).await;
    first.send(WsMessage::Binary(body(&resume))).await.unwrap();
    let mut fresh = None;
    while fresh.is_none() {
        match next_envelope(&mut first, &mut closed)
            .await
            .expect("resumed")
        {
            Message::Resumed { .. } => {}
            Message::Session { token, .. } => fresh = Some(token),
            other => panic!("{other:?}"),
        }
    }
    let mut second = raw_websocket(ws_addr).await;
    second.send(WsMessage::Binary(body(&resume))).await.unwrap();
    match next_envelope(&mut second, &mut closed).await {
        Some(Message::Kick { reason, text }) => {
            assert_eq!(reason, KickReason::RESUME_FAILED);
            assert!(text.starts_with("busy"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // The session went on over the first: it answers.
    let increment = Message::Request {
        id: 2,
        route: INCREMENT,
        payload: bytes::Bytes::new(),
    };
    first
        .send(WsMessage::Binary(body(&increment)))
        .await
        .unwrap();
    loop {
        match next_envelope(&mut first, &mut closed).await.expect("open") {
            Message::Response { id: 2, .. } => break,
            Message::Ack { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Lost again, it resumes with the fresh token.
    close_as_lost(first, stats, 2).await;
    let mut third = raw_websocket(ws_addr).await;
    let again = Message::Resume {
        id,
        received: 2,
        token: fresh.expect("a fresh token"),
    };
    third.send(WsMessage::Binary(body(&again))).await.unwrap();
    assert!(matches!(
        next_envelope(&mut third, &mut closed).await,
        Some(Message::Resumed { received: 1 })
    ));
    assert_eq!(stats.snapshot().sessions_resumed, 2);
    assert!(record.hooks().is_empty(), "no hook ran");
    server.stop().await;
}
