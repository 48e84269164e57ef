//! The admin listener, driven over real sockets: the metrics move as a scripted
//! session says they must (connections, requests, a kick, a refusal, a hub crash),
//! the API refuses without its token and works with it, a drain turns `/readyz` false
//! before it kicks everyone `shutdown` (after its grace), switched-off metrics count
//! nothing, connections are found by player (with their rooms), and the stats report
//! the server's parts.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse::admin::{AdminConfig, AdminLimits, MAX_BODY, MAX_HEAD, MAX_REFUSALS};
use gatehouse::bench_service::BenchService;
use gatehouse::protocol::routes::bench as routes;
use gatehouse::protocol::{
    Message, ROUTE_ANNOUNCEMENT, ROUTE_FAULT_CRASH_HUB, ROUTE_FAULT_PANIC_HANDLER,
};
use gatehouse::room::{Membership, Origin, Refusal, Room, RoomContext, RoomOptions, Rooms};
use gatehouse::{
    Config, ConnId, Context, Disconnect, KickReason, Reply, Server, ServerError, Service, Status,
};
use gatehouse_store::{MemoryStore, SaveWriter, WriterConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use support::{
    at_deadline, keep_the_clock_stepping, test_config, Client, PATIENCE, VIRTUAL_PATIENCE,
};

const TOKEN: &str = "test-token-0123456789";

/// A bench server with its admin listener.
struct Admin {
    game: SocketAddr,
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Admin {
    /// Shuts the server down; it must stop cleanly.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn start(config: Config, token: Option<&str>) -> Admin {
    let admin_config = AdminConfig {
        token: token.map(str::to_owned),
        ..AdminConfig::default()
    };
    start_with(config, admin_config).await
}

async fn start_with(config: Config, admin_config: AdminConfig) -> Admin {
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(admin, config, admin_config).await
}

/// As [`start_with`], on an admin listener of the caller's.
async fn start_on(admin: TcpListener, config: Config, admin_config: AdminConfig) -> Admin {
    let server = Server::new(config, BenchService).unwrap();
    serve(server, admin, admin_config).await
}

/// Runs `server` with its admin listener, the game's on a free port.
async fn serve(
    server: Server<BenchService>,
    admin: TcpListener,
    admin_config: AdminConfig,
) -> Admin {
    let game = gatehouse::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (game_addr, admin_addr) = (game.local_addr().unwrap(), admin.local_addr().unwrap());
    let server = server.with_admin(admin, admin_config).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(game, shutdown.clone().cancelled_owned()));
    Admin {
        game: game_addr,
        admin: admin_addr,
        shutdown,
        task,
    }
}

/// One HTTP/1.1 exchange over a fresh connection: the status and the body. Bodies go
/// without a content type, as `curl -d` sends them (the API reads them as JSON).
async fn http(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    http_to(admin, &admin.to_string(), method, path, token, body).await
}

/// As [`http`], with a `Host` header of the caller's.
async fn http_to(
    admin: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the admin listener answers")
    .unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, body.to_owned())
}

async fn json(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http(admin, method, path, token, body).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, value)
}

/// Checks each sample's value, naming the first that differs.
fn expect(text: &str, expected: &[(&str, f64)]) {
    for &(series, value) in expected {
        assert_eq!(sample(text, series), value, "{series}");
    }
}

/// The value of one sample (`name{labels}`, exactly as exposed) in the metrics text.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

async fn metrics(admin: SocketAddr, token: Option<&str>) -> String {
    let (status, text) = http(admin, "GET", "/metrics", token, None).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// An echo request with a 5-byte payload: 16 bytes on the wire each way.
const ECHO_WIRE: f64 = 16.0;

#[tokio::test]
async fn metrics_move_as_a_scripted_session_of_requests_a_kick_a_refusal_and_a_hub_crash_says() {
    let mut config = test_config();
    config.server.max_connections_per_ip = 3;
    let server = start(config, Some(TOKEN)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(server.game).await;
        for _ in 0..5 {
            assert_eq!(client.request(routes::ECHO, "hello").await.1, "hello");
        }
        clients.push(client);
    }
    // A fourth from the same address is refused.
    let mut refused = Client::connect(server.game).await;
    assert_eq!(refused.expect_kick().await, KickReason::TOO_MANY_FROM_IP);

    let text = metrics(server.admin, Some(TOKEN)).await;
    expect(
        &text,
        &[
            ("gatehouse_connections_open{transport=\"tcp\"}", 3.0),
            ("gatehouse_frames_received_total{transport=\"tcp\"}", 15.0),
            (
                "gatehouse_received_bytes_total{transport=\"tcp\"}",
                15.0 * ECHO_WIRE,
            ),
            ("gatehouse_frames_sent_total{transport=\"tcp\"}", 15.0),
            (
                "gatehouse_sent_bytes_total{transport=\"tcp\"}",
                15.0 * ECHO_WIRE,
            ),
            (
                "gatehouse_handler_duration_seconds_count{route=\"echo\"}",
                15.0,
            ),
            (
                "gatehouse_handler_duration_seconds_bucket{le=\"+Inf\",route=\"echo\"}",
                15.0,
            ),
        ],
    );

    // A kick through the API, of the first connection listed.
    let (status, page) = json(server.admin, "GET", "/api/connections", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 3);
    let first = &page["connections"][0];
    assert_eq!(first["transport"], "tcp");
    assert_eq!(first["frames_in"], 5);
    assert_eq!(first["bytes_out"], 5 * 16);
    // Seconds to the millisecond, not the clock's nanoseconds.
    let connected = first["connected_seconds"].as_f64().unwrap();
    assert_eq!((connected * 1000.0).round() / 1000.0, connected);
    let id = first["id"].as_u64().unwrap();
    let kick = format!("/api/connections/{id}/kick");
    let (status, body) = json(
        server.admin,
        "POST",
        &kick,
        Some(TOKEN),
        Some(r#"{"reason":"duplicate_login","text":"bye"}"#),
    )
    .await;
    assert_eq!(
        (status, &body["reason"]),
        (202, &Value::from("duplicate_login"))
    );
    let mut kicked = clients.remove(0);
    assert_eq!(kicked.expect_kick().await, KickReason::DUPLICATE_LOGIN);

    // A hub crash: everyone left is kicked server_restart.
    let (status, _) = clients[0].request(ROUTE_FAULT_CRASH_HUB, "").await;
    assert_eq!(status, Status::OK);
    for client in &mut clients {
        assert_eq!(client.expect_kick().await, KickReason::SERVER_RESTART);
    }
    let admin = server.admin;
    let mut last = String::new();
    for _ in 0..100 {
        last = metrics(admin, Some(TOKEN)).await;
        if sample(
            &last,
            "gatehouse_disconnects_total{reason=\"server_restart\"}",
        ) == 2.0
            && sample(&last, "gatehouse_ready") == 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = last;
    expect(
        &text,
        &[
            (
                "gatehouse_connections_accepted_total{transport=\"tcp\"}",
                3.0,
            ),
            (
                "gatehouse_connections_refused_total{reason=\"too_many_from_ip\"}",
                1.0,
            ),
            ("gatehouse_disconnects_total{reason=\"kicked\"}", 1.0),
            ("gatehouse_kicks_total{reason=\"duplicate_login\"}", 1.0),
            ("gatehouse_kicks_total{reason=\"server_restart\"}", 2.0),
            ("gatehouse_hub_restarts_total", 1.0),
            ("gatehouse_hub_up", 1.0),
            ("gatehouse_connections_open{transport=\"tcp\"}", 0.0),
        ],
    );
    // The crash request is one more frame in, and its answer one more out (the
    // framework's route, timed as `other`); the ended connections' counts are kept.
    expect(
        &text,
        &[
            ("gatehouse_frames_received_total{transport=\"tcp\"}", 16.0),
            (
                "gatehouse_handler_duration_seconds_count{route=\"other\"}",
                1.0,
            ),
        ],
    );
    assert_eq!(
        sample(&text, "gatehouse_frames_sent_total{transport=\"tcp\"}"),
        15.0 + 1.0 + 3.0,
        "answers, the crash's answer, three kicks"
    );
    let (status, ready) = json(admin, "GET", "/readyz", None, None).await;
    assert_eq!((status, &ready["ready"]), (200, &Value::Bool(true)));
    server.stop().await;
}

#[tokio::test]
async fn the_api_refuses_without_its_token_and_works_with_it() {
    let server = start(test_config(), Some(TOKEN)).await;
    let admin = server.admin;
    // A name that is not the admin listener's (DNS rebinding) is refused, token or not.
    for path in ["/metrics", "/healthz", "/"] {
        let (status, body) =
            http_to(admin, "evil.example:7070", "GET", path, Some(TOKEN), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("allowed_hosts"), "{body}");
    }
    for path in ["/metrics", "/api/stats", "/api/connections", "/api/events"] {
        let (status, body) = json(admin, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(body["error"].as_str().unwrap().contains("bearer"), "{body}");
        let (status, _) = json(admin, "GET", path, Some("test-token-0123456780"), None).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    for path in ["/api/drain", "/api/broadcast", "/api/connections/1/kick"] {
        let (status, _) = json(admin, "POST", path, None, Some("{}")).await;
        assert_eq!(status, 401, "{path}");
    }
    // Health and readiness need no token; the page's HTML neither.
    assert_eq!(json(admin, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(json(admin, "GET", "/readyz", None, None).await.0, 200);
    assert_eq!(http(admin, "GET", "/", None, None).await.0, 200);

    let mut client = Client::connect(server.game).await;
    assert_eq!(client.request(routes::ECHO, "hi").await.1, "hi");
    let (status, stats) = json(admin, "GET", "/api/stats", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"]["open"], 1);
    assert_eq!(stats["traffic"]["tcp"]["frames_in"], 1);

    // An announcement reaches the client as a push on the framework's route.
    let (status, body) = json(
        admin,
        "POST",
        "/api/broadcast",
        Some(TOKEN),
        Some(r#"{"text":"restart at noon"}"#),
    )
    .await;
    assert_eq!((status, &body["recipients"]), (202, &Value::from(1)));
    assert_eq!(
        client.recv().await,
        Some(Message::Push {
            route: ROUTE_ANNOUNCEMENT,
            payload: "restart at noon".into()
        })
    );

    // Bad requests get clear 4xx JSON errors.
    for (method, path, body, expected) in [
        ("POST", "/api/broadcast", "{\"text\":", 400),
        ("POST", "/api/broadcast", "{\"text\":\"\"}", 400),
        ("POST", "/api/broadcast", "{\"txt\":\"x\"}", 400),
        (
            "POST",
            "/api/connections/1/kick",
            "{\"reason\":\"nope\"}",
            400,
        ),
        ("POST", "/api/connections/x/kick", "{}", 400),
        ("POST", "/api/connections/999999/kick", "{}", 404),
        ("GET", "/api/connections?limit=0", "", 400),
        ("GET", "/api/connections?limit=abc", "", 400),
        ("GET", "/api/nothing", "", 404),
        ("DELETE", "/metrics", "", 405),
    ] {
        let body = (!body.is_empty()).then_some(body);
        let (status, answer) = json(admin, method, path, Some(TOKEN), body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert!(answer["error"].is_string(), "{method} {path}: {answer}");
    }
    // The event stream: the metrics text, as an SSE event.
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "GET /api/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the stream ended");
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains("data: gatehouse_connections_open{transport=\"tcp\"} 1") {
                return text.contains("event: metrics");
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true));
    server.stop().await;
}

#[tokio::test]
async fn without_a_token_reads_are_open_and_mutating_endpoints_are_off() {
    let server = start(test_config(), None).await;
    let admin = server.admin;
    assert_eq!(http(admin, "GET", "/metrics", None, None).await.0, 200);
    assert_eq!(json(admin, "GET", "/api/stats", None, None).await.0, 200);
    for path in ["/api/drain", "/api/connections/1/kick"] {
        let (status, body) = json(admin, "POST", path, None, None).await;
        assert_eq!(status, 403, "{path}");
        assert!(body["error"].as_str().unwrap().contains("admin.token"));
    }
    let (status, _) = json(
        admin,
        "POST",
        "/api/broadcast",
        None,
        Some(r#"{"text":"x"}"#),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        json(admin, "GET", "/readyz", None, None).await.0,
        200,
        "no drain began"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_drain_through_the_api_turns_readyz_false_first_then_kicks_everyone_shutdown() {
    let mut config = test_config();
    // A client that never reads keeps the drain going for the linger.
    config.limits.close_linger = Duration::from_secs(2);
    let server = start(config, Some(TOKEN)).await;
    let admin = server.admin;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(server.game).await;
        assert_eq!(client.request(routes::ECHO, "x").await.1, "x");
        clients.push(client);
    }
    let (status, body) = json(admin, "POST", "/api/drain", Some(TOKEN), None).await;
    assert_eq!((status, &body["draining"]), (202, &Value::Bool(true)));
    let (status, ready) = json(admin, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503);
    assert_eq!(ready["reason"], "draining");
    assert_eq!(
        sample(&metrics(admin, Some(TOKEN)).await, "gatehouse_draining"),
        1.0
    );
    for client in &mut clients {
        assert_eq!(client.expect_kick().await, KickReason::SHUTDOWN);
    }
    drop(clients);
    // New connections are no longer taken, and the server stops by itself.
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "the admin listener stopped with it"
    );
}

#[tokio::test(start_paused = true)]
async fn during_the_drain_grace_readyz_is_false_but_clients_are_still_taken_and_served() {
    keep_the_clock_stepping();
    let grace = Duration::from_secs(5);
    let mut config = test_config();
    config.supervisor.drain_grace = grace;
    let server = start(config, Some(TOKEN)).await;
    let admin = server.admin;
    let mut before = Client::connect(server.game).await;
    assert_eq!(before.request(routes::ECHO, "x").await.1, "x");

    let started = Instant::now();
    let (status, _) = json(admin, "POST", "/api/drain", Some(TOKEN), None).await;
    assert_eq!(status, 202);
    let (status, ready) = json(admin, "GET", "/readyz", None, None).await;
    assert_eq!((status, &ready["reason"]), (503, &Value::from("draining")));
    // A client the load balancer sent before it noticed is taken and served.
    let mut late = Client::connect(server.game).await;
    assert_eq!(late.request(routes::ECHO, "y").await.1, "y");
    assert_eq!(before.request(routes::ECHO, "z").await.1, "z");

    // Then, at the grace, everyone is kicked and the server stops.
    assert_eq!(late.expect_kick().await, KickReason::SHUTDOWN);
    let kicked_at = started.elapsed();
    assert!(at_deadline(kicked_at, grace), "kicked at {kicked_at:?}");
    assert_eq!(before.expect_kick().await, KickReason::SHUTDOWN);
    let stopped = tokio::time::timeout(VIRTUAL_PATIENCE, server.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

#[tokio::test]
async fn switched_off_metrics_count_no_traffic_and_time_no_handler() {
    let mut config = test_config();
    config.metrics.enabled = false;
    let server = start(config, None).await;
    let mut client = Client::connect(server.game).await;
    for _ in 0..10 {
        client.request(routes::ECHO, "hello").await;
    }
    let text = metrics(server.admin, None).await;
    expect(
        &text,
        &[
            ("gatehouse_connections_open{transport=\"tcp\"}", 1.0),
            ("gatehouse_frames_received_total{transport=\"tcp\"}", 0.0),
            (
                "gatehouse_handler_duration_seconds_count{route=\"echo\"}",
                0.0,
            ),
        ],
    );
    server.stop().await;
}

#[tokio::test]
async fn a_handler_that_panics_is_timed_and_counted_with_its_disconnect() {
    let server = start(test_config(), None).await;
    let mut client = Client::connect(server.game).await;
    client
        .send(&Message::Request {
            id: 1,
            route: ROUTE_FAULT_PANIC_HANDLER,
            payload: "".into(),
        })
        .await;
    assert_eq!(client.expect_kick().await, KickReason::INTERNAL_ERROR);
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(server.admin, None).await;
        if sample(
            &text,
            "gatehouse_disconnects_total{reason=\"handler_panic\"}",
        ) == 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect(
        &text,
        &[
            ("gatehouse_disconnects_total{reason=\"handler_panic\"}", 1.0),
            ("gatehouse_kicks_total{reason=\"internal_error\"}", 1.0),
        ],
    );
    assert_eq!(
        sample(
            &text,
            "gatehouse_handler_duration_seconds_count{route=\"other\"}"
        ),
        1.0,
        "the failed handler is timed"
    );
    server.stop().await;
}

// The admin listener's connections are bounded (`AdminLimits`). These tests run on
// paused time: tokio moves the clock on whenever every task waits, to the next timer
// due, so timers are exact and the deadlines' defaults are tested as they ship.

/// Sends `bytes` one at a time, `every` apart, until the server closes the
/// connection (end of stream or reset): when it did, and what it had answered.
async fn trickle_until_closed(
    stream: TcpStream,
    mut bytes: impl Iterator<Item = u8>,
    every: Duration,
) -> (Instant, String) {
    let (mut reader, mut writer) = stream.into_split();
    let mut answered = Vec::new();
    let mut buffer = [0u8; 4096];
    let trickled = async {
        loop {
            tokio::select! {
                read = reader.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(n) => answered.extend_from_slice(&buffer[..n]),
                },
                () = tokio::time::sleep(every) => {
                    if let Some(byte) = bytes.next() {
                        // A write after the server closed fails: the read says so next.
                        let _ = writer.write_all(&[byte]).await;
                    }
                }
            }
        }
    };
    let closed = tokio::time::timeout(VIRTUAL_PATIENCE, trickled)
        .await
        .expect("the server cut the slow client");
    (closed, String::from_utf8_lossy(&answered).into_owned())
}

/// Reads until the server closes the connection (end of stream or reset).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// One answer off a kept-alive connection: its status and body (by Content-Length).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return (head[9..12].parse().unwrap(), body.to_owned());
            }
        }
        let read = tokio::time::timeout(VIRTUAL_PATIENCE, stream.read(&mut buffer)).await;
        let n = read.expect("an answer").unwrap();
        assert!(n > 0, "closed before the answer: {text}");
        seen.extend_from_slice(&buffer[..n]);
    }
}

/// `GET /healthz` on a new connection, whatever happens: the whole answer, or
/// nothing if the connection was closed without one.
async fn try_healthz(admin: SocketAddr) -> String {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Refused at once, the write may already fail: the read says so.
    let _ = stream.write_all(request.as_bytes()).await;
    read_until_closed(&mut stream).await
}

#[tokio::test(start_paused = true)]
async fn a_request_head_trickled_a_byte_at_a_time_is_cut_at_the_header_deadline() {
    keep_the_clock_stepping();
    let server = start(test_config(), None).await;
    let limit = AdminLimits::default().header_timeout;
    let stream = TcpStream::connect(server.admin).await.unwrap();
    let connected = Instant::now();
    // A head that never ends: one byte more every 700 ms.
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let bytes = head.iter().copied().chain(std::iter::repeat(b'a'));
    let (closed, answered) = trickle_until_closed(stream, bytes, Duration::from_millis(700)).await;
    assert_eq!(answered, "", "no answer to a head that never ended");
    let elapsed = closed - connected;
    assert!(at_deadline(elapsed, limit), "cut after {elapsed:?}");
    // The listener itself is unharmed.
    assert_eq!(
        json(server.admin, "GET", "/healthz", None, None).await.0,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_or_body_too_large_is_refused_before_it_is_whole() {
    let server = start(test_config(), Some(TOKEN)).await;
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    let cookie = "a".repeat(MAX_HEAD);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n");
    // The server may answer and close before it has read all of it.
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = tokio::time::timeout(PATIENCE, read_until_closed(&mut stream)).await;
    let answer = answer.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let text = format!("{{\"text\":\"{}\"}}", "a".repeat(MAX_BODY));
    let (status, body) = http(
        server.admin,
        "POST",
        "/api/broadcast",
        Some(TOKEN),
        Some(&text),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_body_trickled_a_byte_at_a_time_is_answered_408_at_the_body_deadline() {
    keep_the_clock_stepping();
    let server = start(test_config(), Some(TOKEN)).await;
    let limit = AdminLimits::default().body_timeout;
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    let head = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"text\":\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let bytes = std::iter::repeat(b'a');
    let (closed, answered) = trickle_until_closed(stream, bytes, Duration::from_millis(700)).await;
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");
    assert!(answered.contains("admin.limits.body_timeout"), "{answered}");
    let elapsed = closed - sent;
    assert!(
        at_deadline(elapsed, limit),
        "answered and closed after {elapsed:?}"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_serves_request_after_request_then_closes_at_the_idle_deadline() {
    keep_the_clock_stepping();
    let server = start(test_config(), None).await;
    let limits = AdminLimits::default();
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for pause in [Duration::ZERO, limits.header_timeout * 2] {
        // Waiting between requests longer than a head may take is allowed: the idle
        // deadline counts until the next request's first byte.
        tokio::time::sleep(pause).await;
        stream.write_all(request).await.unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 200, "{body}");
    }
    let answered = Instant::now();
    let rest = tokio::time::timeout(VIRTUAL_PATIENCE, read_until_closed(&mut stream))
        .await
        .expect("the idle connection was closed");
    assert_eq!(rest, "");
    let elapsed = answered.elapsed();
    assert!(
        at_deadline(elapsed, limits.idle_timeout),
        "closed after {elapsed:?}"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn past_the_connection_cap_clients_get_503_then_a_close_and_are_served_once_idle_ones_are_cut(
) {
    keep_the_clock_stepping();
    let limits = AdminLimits {
        max_connections: 4,
        ..AdminLimits::default()
    };
    let header_timeout = limits.header_timeout;
    let admin_config = AdminConfig {
        limits,
        ..AdminConfig::default()
    };
    let server = start_with(test_config(), admin_config).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(server.admin).await.unwrap());
    }
    // Past the cap, an answer that says why.
    let answer = try_healthz(server.admin).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("admin.limits.max_connections"), "{answer}");
    // Past the refusals too, a close without one.
    for _ in 0..MAX_REFUSALS {
        idle.push(TcpStream::connect(server.admin).await.unwrap());
    }
    assert_eq!(try_healthz(server.admin).await, "");
    // The head deadline cuts the idle connections; then the listener serves again.
    let served = async {
        loop {
            if try_healthz(server.admin).await.starts_with("HTTP/1.1 200") {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let served = tokio::time::timeout(VIRTUAL_PATIENCE, served)
        .await
        .expect("served again");
    let elapsed = served - opened;
    assert!(
        at_deadline(elapsed, header_timeout),
        "served after {elapsed:?}"
    );
    for stream in &mut idle {
        assert_eq!(read_until_closed(stream).await, "", "cut without an answer");
    }
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_event_stream_outlives_the_head_and_idle_deadlines_but_one_nobody_reads_is_cut() {
    keep_the_clock_stepping();
    // Small socket buffers on both sides, so that an unread stream fills them in
    // seconds whatever the host's settings (accepted sockets inherit the listener's).
    let listener = TcpSocket::new_v4().unwrap();
    listener.set_send_buffer_size(8192).unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listener.listen(64).unwrap();
    let server = start_on(listener, test_config(), AdminConfig::default()).await;
    let limits = AdminLimits::default();
    let request = b"GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Read for longer than any deadline but the send deadline: events keep coming.
    let mut reader = TcpStream::connect(server.admin).await.unwrap();
    reader.write_all(request).await.unwrap();
    let until = Instant::now() + limits.idle_timeout + limits.header_timeout;
    let mut events = 0;
    let mut buffer = vec![0u8; 1 << 16];
    while Instant::now() < until {
        let n = reader.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the event stream ended");
        events += String::from_utf8_lossy(&buffer[..n])
            .matches("event: metrics")
            .count();
    }
    assert!(events >= 30, "{events} events");
    drop(reader);

    // A client that asks for the stream and stops reading: once what the sockets
    // hold is full, the writes stall, and the stream is cut after send_timeout.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    let mut stalled = socket.connect(server.admin).await.unwrap();
    stalled.write_all(request).await.unwrap();
    let (status, _) = read_head(&mut stalled).await;
    assert_eq!(status, 200);
    tokio::time::sleep(limits.send_timeout * 4).await;
    let cut = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut stalled)).await;
    let rest = cut.expect("the unread stream was cut: what it held, then its end");
    assert!(rest.contains("event: metrics"), "{rest}");
    server.stop().await;
}

/// Reads an answer's status line and headers, leaving its body.
async fn read_head(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(n > 0, "closed before the answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (head[9..12].parse().unwrap(), head)
}

/// A hall anyone joins: the smallest room, for the parts `/api/stats` reports.
struct Hall;

impl Room for Hall {
    type Config = ();
    type Join = ();
    type Message = ();
    type Snapshot = ();

    fn create(_: &str, _: &(), _: Option<()>) -> Self {
        Hall
    }

    fn join(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId, _: &()) -> Result<(), Refusal> {
        Ok(())
    }

    fn leave(&mut self, _: &mut RoomContext<'_, Self>, _: ConnId) {}

    fn message(&mut self, _: &mut RoomContext<'_, Self>, _: Origin, _: ()) {}
}

/// Logs a connection in as the request's payload and seats it in the hall.
struct Hallway {
    rooms: Rooms<Hall>,
}

impl Service for Hallway {
    type Session = Option<Membership<Hall>>;
    type Message = ();

    async fn connect(&self, _: &mut Context<'_, ()>) -> Option<Membership<Hall>> {
        None
    }

    async fn request(
        &self,
        seat: &mut Option<Membership<Hall>>,
        ctx: &mut Context<'_, ()>,
        _route: u16,
        payload: bytes::Bytes,
    ) -> Reply {
        let name = String::from_utf8_lossy(&payload).into_owned();
        if ctx.logged_in(&name).await.is_err() {
            return Reply::error(Status::UNAVAILABLE, "hub gone");
        }
        match self.rooms.join("hall", ctx, ()).await {
            Ok(membership) => {
                *seat = Some(membership);
                Reply::empty()
            }
            Err(e) => Reply::error(e.status(), e.to_string()),
        }
    }

    async fn disconnect(&self, _: Option<Membership<Hall>>, _: Disconnect) {}
}

#[tokio::test]
async fn connections_are_found_by_player_rooms_are_listed_and_stats_and_history_report_the_server()
{
    let rooms = Rooms::new((), RoomOptions::default()).unwrap();
    let writer = SaveWriter::start(MemoryStore::new(), WriterConfig::default());
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let game = gatehouse::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let game_addr = game.local_addr().unwrap();
    let admin_config = AdminConfig {
        token: Some(TOKEN.to_owned()),
        ..AdminConfig::default()
    };
    let server = Server::new(
        test_config(),
        Hallway {
            rooms: rooms.clone(),
        },
    )
    .unwrap()
    .with_rooms("hall", &rooms)
    .with_store(&writer, Duration::from_secs(1))
    .with_admin(admin_listener, admin_config)
    .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(game, shutdown.clone().cancelled_owned()));

    let mut ada = Client::connect(game_addr).await;
    let mut other = Client::connect(game_addr).await;
    assert!(ada.request(1, "ada").await.0.is_ok());
    assert!(other.request(1, "bob").await.0.is_ok());

    let (status, found) = json(
        admin,
        "GET",
        "/api/connections?player=ada",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["total"], 1);
    assert_eq!(found["connections"][0]["player"], "ada");
    assert_eq!(
        found["connections"][0]["rooms"],
        serde_json::json!(["hall"])
    );
    let (_, nobody) = json(
        admin,
        "GET",
        "/api/connections?player=eve",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (&nobody["total"], &nobody["connections"]),
        (&Value::from(0), &Value::Array(vec![]))
    );
    let (status, _) = json(
        admin,
        "GET",
        "/api/connections?player=ada&after=1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);

    let (status, stats) = json(admin, "GET", "/api/stats", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert!(stats["started"].as_f64().unwrap() > 1.7e9, "{stats}");
    assert_eq!(stats["rooms"]["hall"]["rooms"], 1, "{stats}");
    assert_eq!(stats["rooms"]["hall"]["members"], 2, "{stats}");
    assert_eq!(stats["saves"]["queued"], 0, "{stats}");
    assert_eq!(stats["connections"]["players"], 2, "{stats}");
    assert_eq!(stats["controls"], true, "{stats}");

    let (status, listed) = json(admin, "GET", "/api/rooms", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["total"], 1, "{listed}");
    let hall = &listed["rooms"][0];
    assert_eq!(
        (&hall["kind"], &hall["name"], &hall["members"]),
        (&Value::from("hall"), &Value::from("hall"), &Value::from(2)),
        "{listed}"
    );
    let (status, _) = json(admin, "GET", "/api/rooms?limit=0", Some(TOKEN), None).await;
    assert_eq!(status, 400);

    // The history is read once a second whether or not anyone asks: it comes to
    // show the two connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, history) = json(admin, "GET", "/api/history", Some(TOKEN), None).await;
        assert_eq!(status, 200);
        let points = history["points"].as_array().unwrap();
        if points.len() >= 2 && points.last().unwrap()["open"] == 2 {
            assert!(points
                .windows(2)
                .all(|p| p[0]["at"].as_u64() < p[1]["at"].as_u64()));
            assert!(points.last().unwrap()["framesIn"].as_u64().unwrap() >= 2);
            assert_eq!(points.last().unwrap()["saveQueued"], 0, "{history}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no history of two connections: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop((ada, other));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A config whose server stops without the drain grace.
fn quick_stop() -> Config {
    let mut config = Config::default();
    config.supervisor.drain_grace = Duration::ZERO;
    config
}

/// A bench server with its admin listener, as node `name` of `bus`'s cluster.
async fn start_node(bus: &gatehouse::cluster::LocalBus, name: &str) -> Admin {
    let cluster = gatehouse::cluster::ClusterConfig {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..gatehouse::cluster::ClusterConfig::for_node(name)
    };
    let admin_config = AdminConfig {
        token: Some(TOKEN.to_owned()),
        ..AdminConfig::default()
    };
    let server = Server::new(quick_stop(), BenchService)
        .unwrap()
        .with_cluster(bus.link(), cluster)
        .unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(server, admin, admin_config).await
}

#[tokio::test]
async fn the_cluster_endpoint_and_metrics_show_every_node_and_what_the_link_did() {
    let alone = start(quick_stop(), Some(TOKEN)).await;
    let (status, off) = json(alone.admin, "GET", "/api/cluster", Some(TOKEN), None).await;
    assert_eq!((status, &off["enabled"]), (200, &Value::from(false)));
    assert!(!metrics(alone.admin, Some(TOKEN))
        .await
        .contains("gatehouse_cluster_"));
    alone.stop().await;

    let bus = gatehouse::cluster::LocalBus::new();
    let a = start_node(&bus, "a").await;
    let b = start_node(&bus, "b").await;
    let _client = TcpStream::connect(b.game).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let cluster = loop {
        let (status, cluster) = json(a.admin, "GET", "/api/cluster", Some(TOKEN), None).await;
        assert_eq!(status, 200);
        if cluster["nodes"].as_array().unwrap().len() == 2 && cluster["connections"] == 1 {
            break cluster;
        }
        assert!(tokio::time::Instant::now() < deadline, "{cluster}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(cluster["node"], "a", "{cluster}");
    assert_eq!(cluster["connected"], true, "{cluster}");
    assert_eq!(cluster["nodes"][1]["node"], "b", "{cluster}");
    assert_eq!(cluster["nodes"][1]["connections"], 1, "{cluster}");

    // An announcement through a's API reaches b's client: one message crossed.
    let (status, _) = json(
        a.admin,
        "POST",
        "/api/broadcast",
        Some(TOKEN),
        Some(r#"{"text":"hello"}"#),
    )
    .await;
    assert_eq!(status, 202);
    // The outbox is drained by the cluster task: the count follows shortly.
    let text = loop {
        let text = metrics(a.admin, Some(TOKEN)).await;
        if sample(&text, "gatehouse_cluster_messages_sent_total") >= 1.0 {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    expect(
        &text,
        &[
            ("gatehouse_cluster_connected", 1.0),
            ("gatehouse_cluster_nodes_alive", 1.0),
            ("gatehouse_cluster_messages_sent_total", 1.0),
            (
                "gatehouse_cluster_messages_dropped_total{reason=\"outbox_full\"}",
                0.0,
            ),
            ("gatehouse_cluster_messages_malformed_total", 0.0),
            ("gatehouse_cluster_node_deaths_total", 0.0),
        ],
    );
    a.stop().await;
    b.stop().await;
}
