//! Every transport behind one server: TCP, TLS, WebSocket and WebSocket over TLS,
//! driven by real clients on loopback. The same service and the same limits over all
//! of them; what only some of them have (certificates, origins, proxies, close
//! frames) is tested where it lives.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use gatehouse::bench_service::{routes, BenchService};
use gatehouse::listener::{Pages, WebOptions};
use gatehouse::{Certificates, Config, KickReason, Listener, Message, Server, Status};
use support::{test_config, Scratch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
fn dev_cert() -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client connection over any transport.
#[allow(clippy::large_enum_variant)]
enum Wire {
    Stream(Box<dyn Io>, BytesMut),
    Ws(WebSocketStream<Box<dyn Io>>),
}

/// What ended a connection, as a client sees it.
#[derive(Debug, PartialEq)]
struct Ended {
    kick: Option<KickReason>,
    close_code: Option<u16>,
}

impl Wire {
    async fn send(&mut self, message: &Message) {
        match self {
            Wire::Stream(io, _) => io.write_all(&message.to_frame()).await.unwrap(),
            Wire::Ws(ws) => {
                let frame = message.to_frame();
                ws.send(WsMessage::Binary(frame.slice(4..))).await.unwrap()
            }
        }
    }

    /// The next envelope, or `None` when the connection ended (then `ended` says how).
    async fn recv(&mut self, ended: &mut Ended) -> Option<Message> {
        let next = async {
            match self {
                Wire::Stream(io, buf) => loop {
                    if buf.len() >= 4 {
                        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                        if buf.len() >= 4 + len {
                            buf.advance(4);
                            return Some(Message::decode(buf.split_to(len).freeze()).unwrap());
                        }
                    }
                    match io.read_buf(buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                },
                Wire::Ws(ws) => loop {
                    match ws.next().await {
                        Some(Ok(WsMessage::Binary(body))) => {
                            return Some(Message::decode(body).unwrap())
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            ended.close_code = frame.map(|f| u16::from(f.code));
                            return None;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return None,
                    }
                },
            }
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("a frame or the end in time")
    }

    async fn request(&mut self, id: u32, route: u16, payload: &[u8]) -> (Status, Bytes) {
        let request = Message::Request {
            id,
            route,
            payload: Bytes::copy_from_slice(payload),
        };
        self.send(&request).await;
        let mut ended = Ended {
            kick: None,
            close_code: None,
        };
        loop {
            match self.recv(&mut ended).await {
                Some(Message::Response {
                    id: got,
                    status,
                    payload,
                }) if got == id => return (status, payload),
                Some(_) => {}
                None => panic!("connection ended before the response: {ended:?}"),
            }
        }
    }

    /// Reads until the connection ends; the kick and close code seen on the way.
    async fn until_end(&mut self) -> Ended {
        let mut ended = Ended {
            kick: None,
            close_code: None,
        };
        while let Some(message) = self.recv(&mut ended).await {
            if let Message::Kick { reason, .. } = message {
                ended.kick = Some(reason);
            }
        }
        ended
    }
}

/// Connects from `source` (a 127.0.0.x address) to `addr`.
async fn tcp_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn tls_config(trusted_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let der = CertificateDer::from_pem_slice_for_test(trusted_pem);
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

trait PemForTest {
    fn from_pem_slice_for_test(pem: &str) -> CertificateDer<'static>;
}

impl PemForTest for CertificateDer<'static> {
    fn from_pem_slice_for_test(pem: &str) -> CertificateDer<'static> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}

async fn tls(stream: TcpStream, trusted_pem: &str) -> std::io::Result<Box<dyn Io>> {
    let connector = TlsConnector::from(tls_config(trusted_pem));
    let name = ServerName::try_from("localhost").unwrap();
    Ok(Box::new(connector.connect(name, stream).await?))
}

/// Upgrades `io` to a WebSocket at `url`, with extra request headers.
async fn ws_over(io: Box<dyn Io>, url: &str, headers: &[(&str, &str)]) -> Result<Wire, String> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, io).await {
        Ok((ws, _)) => Ok(Wire::Ws(ws)),
        Err(e) => Err(e.to_string()),
    }
}

/// A server with one listener of each transport.
struct Servers {
    tcp: SocketAddr,
    tls: SocketAddr,
    ws: SocketAddr,
    wss: SocketAddr,
    cert_pem: String,
    stats: Arc<gatehouse::stats::Stats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), gatehouse::ServerError>>,
}

async fn start(config: Config, web: WebOptions) -> Servers {
    let (cert_pem, key_pem) = dev_cert();
    let certificates = Certificates::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let bind = || gatehouse::bind("127.0.0.1:0".parse().unwrap());
    let listeners = vec![
        Listener::tcp(bind().await.unwrap()),
        Listener::tls(bind().await.unwrap(), certificates.clone()),
        Listener::websocket(bind().await.unwrap(), web.clone()),
        Listener::secure_websocket(bind().await.unwrap(), certificates.clone(), web),
    ];
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let server = Server::new(config, BenchService).unwrap();
    let stats = server.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(listeners, stop.clone().cancelled_owned()));
    Servers {
        tcp: addrs[0],
        tls: addrs[1],
        ws: addrs[2],
        wss: addrs[3],
        cert_pem,
        stats,
        stop,
        task,
    }
}

impl Servers {
    async fn connect(&self, transport: &str) -> Wire {
        let local: IpAddr = [127, 0, 0, 1].into();
        match transport {
            "tcp" => Wire::Stream(Box::new(tcp_from(local, self.tcp).await), BytesMut::new()),
            "tls" => {
                let stream = tls(tcp_from(local, self.tls).await, &self.cert_pem)
                    .await
                    .unwrap();
                Wire::Stream(stream, BytesMut::new())
            }
            "ws" => {
                let io: Box<dyn Io> = Box::new(tcp_from(local, self.ws).await);
                ws_over(io, &format!("ws://{}/ws", self.ws), &[])
                    .await
                    .unwrap()
            }
            "wss" => {
                let io = tls(tcp_from(local, self.wss).await, &self.cert_pem)
                    .await
                    .unwrap();
                ws_over(io, &format!("wss://localhost:{}/ws", self.wss.port()), &[])
                    .await
                    .unwrap()
            }
            other => panic!("no transport {other}"),
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

const TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

#[tokio::test]
async fn echo_broadcast_and_kicks_work_over_every_transport() {
    let servers = start(test_config(), WebOptions::default()).await;
    let mut wires = Vec::new();
    for transport in TRANSPORTS {
        let mut wire = servers.connect(transport).await;
        let (status, payload) = wire.request(1, routes::ECHO, transport.as_bytes()).await;
        assert_eq!(
            (status, &payload[..]),
            (Status::OK, transport.as_bytes()),
            "{transport}"
        );
        wires.push(wire);
    }
    // One hub behind every listener: a broadcast from a WebSocket reaches them all.
    let (status, _) = wires[2].request(2, routes::BROADCAST, b"to all").await;
    assert_eq!(status, Status::OK);
    for (wire, transport) in wires.iter_mut().zip(TRANSPORTS) {
        let mut ended = Ended {
            kick: None,
            close_code: None,
        };
        loop {
            match wire.recv(&mut ended).await {
                Some(Message::Push { route, payload }) => {
                    assert_eq!((route, &payload[..]), (routes::BROADCAST, &b"to all"[..]));
                    break;
                }
                Some(_) => {}
                None => panic!("{transport} ended: {ended:?}"),
            }
        }
    }
    let (_, count) = wires[0].request(3, routes::COUNT, b"").await;
    assert_eq!(count[..], 4u32.to_be_bytes());

    // A shutdown kicks every one, WebSockets with the matching close code.
    servers.stop.cancel();
    for (wire, transport) in wires.iter_mut().zip(TRANSPORTS) {
        let ended = wire.until_end().await;
        assert_eq!(ended.kick, Some(KickReason::SHUTDOWN), "{transport}");
        let expected_close = transport.starts_with("ws").then_some(4004);
        assert_eq!(ended.close_code, expected_close, "{transport}");
    }
    servers.shutdown().await;
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_only_its_connection() {
    let mut config = test_config();
    config.limits.max_frame_bytes = 1024;
    let servers = start(config, WebOptions::default()).await;
    let mut bystander = servers.connect("ws").await;
    let mut offender = servers.connect("ws").await;
    let Wire::Ws(ws) = &mut offender else {
        unreachable!()
    };
    ws.send(WsMessage::Binary(Bytes::from(vec![1u8; 1025])))
        .await
        .unwrap();
    let ended = offender.until_end().await;
    assert_eq!(ended.kick, Some(KickReason::FRAME_TOO_LARGE));
    assert_eq!(ended.close_code, Some(4009));
    // Exactly the limit passes, on the connection that is still there.
    let body = vec![7u8; 1024 - 7];
    let (status, payload) = bystander.request(1, routes::ECHO, &body).await;
    assert_eq!((status, payload.len()), (Status::OK, body.len()));
    assert_eq!(servers.stats.snapshot().frames_too_large, 1);
    servers.shutdown().await;
}

#[tokio::test]
async fn a_text_message_is_a_protocol_error() {
    let servers = start(test_config(), WebOptions::default()).await;
    let mut wire = servers.connect("wss").await;
    let Wire::Ws(ws) = &mut wire else {
        unreachable!()
    };
    ws.send(WsMessage::text("hello")).await.unwrap();
    let ended = wire.until_end().await;
    assert_eq!(ended.kick, Some(KickReason::PROTOCOL_ERROR));
    assert_eq!(ended.close_code, Some(4007));
    servers.shutdown().await;
}

#[tokio::test]
async fn a_cross_origin_page_is_refused_and_own_or_allowed_pages_are_not() {
    let web = WebOptions {
        allowed_origins: vec!["https://game.example".into()],
        ..WebOptions::default()
    };
    let servers = start(test_config(), web).await;
    let url = format!("ws://{}/ws", servers.ws);
    let connect = |origin: String| {
        let url = url.clone();
        let addr = servers.ws;
        async move {
            let io: Box<dyn Io> = Box::new(tcp_from([127, 0, 0, 1].into(), addr).await);
            ws_over(io, &url, &[("origin", &origin)]).await
        }
    };
    let refused = connect("http://evil.example".into()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("403")),
        "{:?}",
        refused.err()
    );
    let own = format!("http://{}", servers.ws);
    assert!(connect(own).await.is_ok());
    assert!(connect("https://game.example".into()).await.is_ok());
    // Clients that are not browsers send no Origin at all.
    let mut plain = servers.connect("ws").await;
    assert_eq!(plain.request(1, routes::ECHO, b"x").await.0, Status::OK);
    assert_eq!(servers.stats.snapshot().handshake_failures, 1);
    servers.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_with_the_wrong_certificate_fails_and_the_server_goes_on() {
    let servers = start(test_config(), WebOptions::default()).await;
    let (stranger, _) = dev_cert();
    for addr in [servers.tls, servers.wss] {
        let stream = tcp_from([127, 0, 0, 1].into(), addr).await;
        assert!(
            tls(stream, &stranger).await.is_err(),
            "a certificate nobody trusts"
        );
    }
    support::eventually("both failures counted", || {
        (servers.stats.snapshot().handshake_failures == 2).then_some(())
    })
    .await;
    for transport in ["tls", "wss"] {
        let mut wire = servers.connect(transport).await;
        assert_eq!(
            wire.request(1, routes::ECHO, b"still here").await.0,
            Status::OK
        );
    }
    servers.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_times_out_without_a_session() {
    let mut config = test_config();
    config.limits.handshake_timeout = Duration::from_millis(300);
    let servers = start(config, WebOptions::default()).await;
    // A TLS client that never says hello, and an HTTP request that never ends.
    let mut silent = tcp_from([127, 0, 0, 1].into(), servers.tls).await;
    let mut half = tcp_from([127, 0, 0, 1].into(), servers.ws).await;
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for stream in [&mut silent, &mut half] {
        let mut sink = [0u8; 64];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut sink))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    }
    let stats = servers.stats.snapshot();
    assert_eq!((stats.handshake_timeouts, stats.accepted), (2, 0));
    servers.shutdown().await;
}

#[tokio::test]
async fn a_certificate_reload_keeps_existing_connections() {
    let scratch = Scratch::new("reload");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let (old_cert, old_key) = dev_cert();
    let (cert_path, key_path) = (
        scratch.path().join("cert.pem"),
        scratch.path().join("key.pem"),
    );
    std::fs::write(&cert_path, &old_cert).unwrap();
    std::fs::write(&key_path, &old_key).unwrap();
    let certificates = Certificates::from_files(&cert_path, &key_path).unwrap();
    let listener = Listener::tls(
        gatehouse::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
        certificates.clone(),
    );
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = Server::new(test_config(), BenchService).unwrap();
    let task = tokio::spawn(server.run(listener, stop.clone().cancelled_owned()));

    let connect = |trusted: String| async move {
        let stream = tcp_from([127, 0, 0, 1].into(), addr).await;
        tls(stream, &trusted)
            .await
            .map(|io| Wire::Stream(io, BytesMut::new()))
    };
    let mut before = connect(old_cert.clone()).await.unwrap();
    let (new_cert, new_key) = dev_cert();
    std::fs::write(&cert_path, &new_cert).unwrap();
    std::fs::write(&key_path, &new_key).unwrap();
    certificates.reload().unwrap();

    assert_eq!(before.request(1, routes::ECHO, b"old").await.0, Status::OK);
    assert!(
        connect(old_cert).await.is_err(),
        "new handshakes get the new certificate"
    );
    let mut after = connect(new_cert).await.unwrap();
    assert_eq!(after.request(1, routes::ECHO, b"new").await.0, Status::OK);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_per_ip_cap_sees_the_client_behind_a_trusted_proxy_and_not_a_forged_header() {
    let mut config = test_config();
    config.server.max_connections_per_ip = 1;
    let web = WebOptions {
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        ..WebOptions::default()
    };
    let servers = start(config, web).await;
    let url = format!("ws://{}/ws", servers.ws);
    let via = |source: [u8; 4], client: &'static str| {
        let url = url.clone();
        let addr = servers.ws;
        async move {
            let io: Box<dyn Io> = Box::new(tcp_from(source.into(), addr).await);
            ws_over(io, &url, &[("x-forwarded-for", client)])
                .await
                .unwrap()
        }
    };
    // Through the proxy: two clients, one connection each, both fine...
    let mut first = via([127, 0, 0, 2], "203.0.113.7").await;
    let mut other = via([127, 0, 0, 2], "203.0.113.8").await;
    assert_eq!(first.request(1, routes::ECHO, b"a").await.0, Status::OK);
    assert_eq!(other.request(1, routes::ECHO, b"b").await.0, Status::OK);
    // ...and the first client's second connection is over its cap.
    let mut again = via([127, 0, 0, 2], "203.0.113.7").await;
    let ended = again.until_end().await;
    assert_eq!(ended.kick, Some(KickReason::TOO_MANY_FROM_IP));
    assert_eq!(ended.close_code, Some(4011));

    // Not a trusted proxy: its header is ignored and it counts as itself.
    let mut forger = via([127, 0, 0, 3], "203.0.113.9").await;
    assert_eq!(forger.request(1, routes::ECHO, b"c").await.0, Status::OK);
    let mut forged = via([127, 0, 0, 3], "203.0.113.10").await;
    assert_eq!(
        forged.until_end().await.kick,
        Some(KickReason::TOO_MANY_FROM_IP)
    );
    assert_eq!(servers.stats.snapshot().refused_per_ip, 2);
    servers.shutdown().await;
}

#[tokio::test]
async fn a_full_server_refuses_a_websocket_with_a_kick_it_can_read() {
    let mut config = test_config();
    config.server.max_connections = 1;
    let servers = start(config, WebOptions::default()).await;
    let mut holder = servers.connect("tcp").await;
    assert_eq!(holder.request(1, routes::ECHO, b"x").await.0, Status::OK);
    for transport in ["wss", "ws"] {
        let mut refused = servers.connect(transport).await;
        let ended = refused.until_end().await;
        assert_eq!(ended.kick, Some(KickReason::SERVER_FULL), "{transport}");
        assert_eq!(ended.close_code, Some(4003), "{transport}");
    }
    servers.shutdown().await;
}

#[tokio::test]
async fn a_websocket_listener_serves_its_pages_over_plain_http() {
    let web = WebOptions {
        pages: Pages::new().with("/", "text/html; charset=utf-8", "<h1>arena</h1>"),
        ..WebOptions::default()
    };
    let servers = start(test_config(), web).await;
    let get = |path: &'static str| async move {
        let mut stream = tcp_from([127, 0, 0, 1].into(), servers.ws).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let index = get("/?from=test").await;
    assert!(index.starts_with("HTTP/1.1 200 OK\r\n"), "{index}");
    assert!(
        index.contains("Content-Type: text/html; charset=utf-8\r\n"),
        "{index}"
    );
    assert!(index.ends_with("\r\n\r\n<h1>arena</h1>"), "{index}");
    assert!(get("/missing.js").await.starts_with("HTTP/1.1 404 "));
    let stats = servers.stats.snapshot();
    assert_eq!(
        (stats.pages_served, stats.accepted, stats.handshake_failures),
        (2, 0, 0)
    );
    servers.shutdown().await;
}

#[test]
fn kicks_map_to_websocket_close_codes() {
    assert_eq!(KickReason::SERVER_RESTART.websocket_close_code(), 4005);
    assert_eq!(KickReason(1003).websocket_close_code(), 4999);
    let _: CloseCode = 4005.into();
}

#[tokio::test]
async fn websocket_messages_before_a_text_message_are_answered_before_the_kick() {
    let servers = start(test_config(), WebOptions::default()).await;
    let mut wire = servers.connect("ws").await;
    let Wire::Ws(ws) = &mut wire else {
        unreachable!()
    };
    // All in one write, so that the server reads them in one batch.
    for id in 1..=3u32 {
        let request = Message::Request {
            id,
            route: routes::ECHO,
            payload: Bytes::from_static(b"before"),
        };
        ws.feed(WsMessage::Binary(request.to_frame().slice(4..)))
            .await
            .unwrap();
    }
    ws.feed(WsMessage::text("not an envelope")).await.unwrap();
    ws.flush().await.unwrap();
    let mut ended = Ended {
        kick: None,
        close_code: None,
    };
    let mut answered = Vec::new();
    while let Some(message) = wire.recv(&mut ended).await {
        match message {
            Message::Response { id, status, .. } => answered.push((id, status)),
            Message::Kick { reason, .. } => ended.kick = Some(reason),
            _ => {}
        }
    }
    assert_eq!(
        answered,
        [(1, Status::OK), (2, Status::OK), (3, Status::OK)]
    );
    assert_eq!(ended.kick, Some(KickReason::PROTOCOL_ERROR));
    servers.shutdown().await;
}

#[tokio::test]
async fn a_websocket_client_that_drops_its_connection_has_simply_left() {
    let servers = start(test_config(), WebOptions::default()).await;
    for transport in ["ws", "wss"] {
        let mut wire = servers.connect(transport).await;
        assert_eq!(wire.request(1, routes::ECHO, b"x").await.0, Status::OK);
        drop(wire); // no close frame, no close_notify
    }
    support::eventually("both closes counted", || {
        (servers.stats.snapshot().closed == 2).then_some(())
    })
    .await;
    let stats = servers.stats.snapshot();
    assert_eq!(stats.protocol_errors, 0, "{stats:?}");
    servers.shutdown().await;
}

#[tokio::test]
async fn the_server_answers_a_websocket_close_with_its_own() {
    let servers = start(test_config(), WebOptions::default()).await;
    let mut wire = servers.connect("ws").await;
    let Wire::Ws(ws) = &mut wire else {
        unreachable!()
    };
    ws.close(None).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    assert!(
        matches!(answer, Some(Ok(WsMessage::Close(_)))),
        "the server's close: {answer:?}"
    );
    let end = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    assert!(end.is_none(), "then a clean end: {end:?}");
    servers.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_websocket_pings_is_kicked_dos() {
    let mut config = test_config();
    config.limits.inbound_frames_burst = 50;
    let servers = start(config, WebOptions::default()).await;
    let mut bystander = servers.connect("ws").await;
    let mut flooder = servers.connect("ws").await;
    let Wire::Ws(ws) = &mut flooder else {
        unreachable!()
    };
    for _ in 0..200 {
        if ws
            .feed(WsMessage::Ping(Bytes::from_static(b"p")))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = ws.flush().await;
    let ended = flooder.until_end().await;
    assert_eq!(ended.kick, Some(KickReason::DOS));
    assert_eq!(ended.close_code, Some(4002));
    assert_eq!(
        bystander.request(1, routes::ECHO, b"fine").await.0,
        Status::OK
    );
    servers.shutdown().await;
}

#[tokio::test]
async fn the_first_frame_deadline_and_the_rates_apply_to_websockets() {
    let mut config = test_config();
    config.limits.first_frame_timeout = Duration::from_millis(300);
    config.limits.inbound_frames_per_sec = 20;
    config.limits.inbound_frames_burst = 20;
    let servers = start(config, WebOptions::default()).await;
    // Silent: kicked login_timeout, as on TCP.
    let mut silent = servers.connect("ws").await;
    let ended = silent.until_end().await;
    assert_eq!(
        (ended.kick, ended.close_code),
        (Some(KickReason::LOGIN_TIMEOUT), Some(4010))
    );
    // Over the frame rate: kicked dos.
    let mut flooder = servers.connect("wss").await;
    let Wire::Ws(ws) = &mut flooder else {
        unreachable!()
    };
    for _ in 0..100 {
        if ws.feed(WsMessage::Binary(Bytes::new())).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
    let ended = flooder.until_end().await;
    assert_eq!(
        (ended.kick, ended.close_code),
        (Some(KickReason::DOS), Some(4002))
    );
    servers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_does_not_read_is_kicked_slow_consumer() {
    let mut config = test_config();
    config.limits.max_frame_bytes = 16 * 1024;
    config.limits.outbound_queue_bytes = 64 * 1024;
    // The kick waits behind what the client's and the server's socket buffers hold
    // (megabytes of answers); the linger must outlast a loaded machine reading them
    // (5 s did not, now and then, in a full run), and costs nothing once the client
    // has read its kick and closed.
    config.limits.close_linger = PATIENCE;
    let servers = start(config, WebOptions::default()).await;
    let mut bystander = servers.connect("ws").await;
    // Its first frame now: the ordeal below may outlast the first-frame timeout,
    // and a bystander kicked `login_timeout` would prove nothing.
    assert_eq!(
        bystander.request(0, routes::ECHO, b"here").await.0,
        Status::OK
    );
    let mut reader_less = servers.connect("ws").await;
    let Wire::Ws(ws) = &mut reader_less else {
        unreachable!()
    };
    // Requests whose answers it does not read...
    let payload = Bytes::from(vec![7u8; 12 * 1024]);
    // Until the server gives up on it; then it reads, and finds the kick at the end.
    let sending = async {
        for id in 0..20_000u32 {
            let request = Message::Request {
                id,
                route: routes::ECHO,
                payload: payload.clone(),
            };
            if ws
                .send(WsMessage::Binary(request.to_frame().slice(4..)))
                .await
                .is_err()
                || servers.stats.snapshot().slow_consumers > 0
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(PATIENCE, sending).await;
    let ended = reader_less.until_end().await;
    drop(reader_less); // closed: the server stops lingering
    assert_eq!(ended.kick, Some(KickReason::SLOW_CONSUMER), "{ended:?}");
    assert_eq!(
        bystander.request(1, routes::ECHO, b"fine").await.0,
        Status::OK
    );
    assert_eq!(servers.stats.snapshot().slow_consumers, 1);
    drop(bystander); // closed too: the shutdown does not linger for it
    servers.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_that_closes_cleanly_gets_the_server_s_close_notify() {
    let servers = start(test_config(), WebOptions::default()).await;
    let stream = tcp_from([127, 0, 0, 1].into(), servers.tls).await;
    let mut io = tls(stream, &servers.cert_pem).await.unwrap();
    let mut wire_bytes = Message::Request {
        id: 1,
        route: routes::ECHO,
        payload: Bytes::from_static(b"x"),
    }
    .to_frame()
    .to_vec();
    io.write_all(&wire_bytes).await.unwrap();
    io.shutdown().await.unwrap(); // our close_notify
                                  // The answer, then a clean end: the server's close_notify, not a cut connection.
    wire_bytes.clear();
    let read = tokio::time::timeout(PATIENCE, io.read_to_end(&mut wire_bytes))
        .await
        .unwrap();
    assert!(read.is_ok(), "a clean TLS end: {read:?}");
    assert!(!wire_bytes.is_empty(), "the answer came first");
    servers.shutdown().await;
}
