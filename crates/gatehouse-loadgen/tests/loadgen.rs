//! The load generator counts what it claims: against a real gatehouse server (in
//! process, on 127.0.0.1:0) every request sent is verified and every connection,
//! listener and connect is accounted for; against deliberately wrong servers
//! (dropping responses, corrupting payloads, skipping listeners) the damage shows up
//! as errors and losses, not as throughput.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/resources.rs"]
mod resources;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse::bench_service::BenchService;
use gatehouse::{Config, Server};
use gatehouse_loadgen::broadcast::{self, BroadcastOptions};
use gatehouse_loadgen::echo::{self, EchoOptions};
use gatehouse_loadgen::idle::{self, IdleOptions};
use gatehouse_loadgen::storm::{self, StormOptions};
use gatehouse_loadgen::{Progress, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Whether `test`, which opens `connections` connections to a server in this
/// process, can run here: both ends need a descriptor, and the load generator
/// connects from loopback addresses other than 127.0.0.1 (a block of 127/8 chosen
/// per run; 127.1.0.1 stands for it).
fn can_run(test: &str, connections: u64) -> bool {
    resources::needs()
        .open_files(2 * connections)
        .address(Ipv4Addr::new(127, 1, 0, 1))
        .met(test)
}

/// A gatehouse bench server in this process, its limits raised for load; it stops
/// when the test's runtime does.
async fn gatehouse_server() -> SocketAddr {
    let mut config = Config::default();
    config.server.max_connections = 5_000;
    config.server.max_connections_per_ip = 5_000;
    config.limits.inbound_frames_per_sec = 10_000_000;
    config.limits.inbound_frames_burst = 10_000_000;
    config.limits.inbound_bytes_per_sec = 1_000_000_000;
    config.limits.inbound_bytes_burst = 1_000_000_000;
    let server = Server::new(config, BenchService).unwrap();
    let listener = gatehouse::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.run(listener, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_verifies_every_request_it_counts() {
    if !can_run("echo_verifies_every_request_it_counts", 20) {
        return;
    }
    let addr = gatehouse_server().await;
    let mut options = EchoOptions::new(addr, 20, 4, 64, Duration::from_millis(800));
    options.warmup = Duration::from_millis(200);
    let progress = Progress::default();
    let report = echo::run(&options, &progress).await.unwrap();
    assert_eq!(report.connected, 20);
    assert!(report.measured_responses > 0, "{report:?}");
    assert_eq!(report.sent, report.verified, "{report:?}");
    assert_eq!(
        (report.errors, report.lost, report.connections_closed),
        (0, 0, 0)
    );
    assert!(report.measured_responses <= report.verified);
    assert_eq!(report.latency.count, report.measured_responses);
    assert!(report.latency.p50_us > 0.0 && report.latency.p50_us <= report.latency.max_us);
    let rate = report.measured_responses as f64 / report.duration_s;
    assert!((report.requests_per_sec - rate).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_payloads_of_every_size_are_checked_byte_for_byte() {
    if !can_run("echo_payloads_of_every_size_are_checked_byte_for_byte", 2) {
        return;
    }
    let addr = gatehouse_server().await;
    for payload in [0, 3, 4, 4096] {
        let mut options = EchoOptions::new(addr, 2, 8, payload, Duration::from_millis(200));
        options.warmup = Duration::ZERO;
        let report = echo::run(&options, &Progress::default()).await.unwrap();
        assert!(report.verified > 0, "payload {payload}: {report:?}");
        assert_eq!(report.sent, report.verified, "payload {payload}");
        assert_eq!(report.errors, 0, "payload {payload}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_detects_a_server_that_drops_responses() {
    if !can_run("echo_detects_a_server_that_drops_responses", 4) {
        return;
    }
    let addr = faulty_server(Fault::DropEvery10thResponse).await;
    let mut options = EchoOptions::new(addr, 4, 4, 64, Duration::from_millis(500));
    options.warmup = Duration::ZERO;
    options.drain_timeout = Duration::from_millis(300);
    let report = echo::run(&options, &Progress::default()).await.unwrap();
    assert!(report.lost > 0, "{report:?}");
    assert_eq!(report.sent, report.verified + report.lost, "{report:?}");
    assert_eq!(report.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_detects_a_server_that_corrupts_payloads() {
    if !can_run("echo_detects_a_server_that_corrupts_payloads", 4) {
        return;
    }
    let connections = 4;
    let addr = faulty_server(Fault::CorruptEvery10thPayload).await;
    let mut options = EchoOptions::new(addr, connections, 4, 64, Duration::from_millis(500));
    options.warmup = Duration::ZERO;
    let report = echo::run(&options, &Progress::default()).await.unwrap();
    assert!(report.wrong_payload > 0, "{report:?}");
    assert_eq!(report.errors, report.wrong_payload);
    assert_eq!(
        report.sent,
        report.verified + report.wrong_payload,
        "{report:?}"
    );
    // Every 10th response of each connection is wrong: a connection that sent n
    // has n / 10 (rounded down) wrong, so the total is a tenth of what was sent,
    // short of it by at most 9 per connection. Exact, however many were sent.
    let (sent, wrong) = (report.sent, report.wrong_payload);
    assert!(wrong * 10 <= sent, "{report:?}");
    assert!(sent - wrong * 10 <= 9 * connections as u64, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_detects_wrong_ids() {
    if !can_run("echo_detects_wrong_ids", 2) {
        return;
    }
    let addr = faulty_server(Fault::WrongIdEvery10th).await;
    let mut options = EchoOptions::new(addr, 2, 4, 16, Duration::from_millis(300));
    options.warmup = Duration::ZERO;
    options.drain_timeout = Duration::from_millis(200);
    let report = echo::run(&options, &Progress::default()).await.unwrap();
    assert!(report.unknown_id > 0, "{report:?}");
    // A response with a wrong id leaves its request unanswered.
    assert!(report.lost > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_listener_and_counts_them() {
    if !can_run("broadcast_reaches_every_listener_and_counts_them", 201) {
        return;
    }
    let addr = gatehouse_server().await;
    let mut options = BroadcastOptions::new(addr, 200);
    options.rounds = 3;
    options.pause = Duration::from_millis(20);
    let report = broadcast::run(&options, &Progress::default())
        .await
        .unwrap();
    assert_eq!(report.connected, 200);
    assert_eq!(report.server_count, Some(201));
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(
        (report.late, report.duplicates, report.wrong_payload),
        (0, 0, 0)
    );
    assert_eq!(report.per_round.len(), 3);
    for round in &report.per_round {
        assert_eq!((round.received, round.lost), (200, 0));
        let all = round.time_to_all_ms.unwrap();
        assert!(round.p50_ms.unwrap() <= all);
        assert!(round.response_ms.is_some());
    }
    assert!(report.median_time_to_all_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_counts_listeners_that_never_get_the_push() {
    if !can_run("broadcast_counts_listeners_that_never_get_the_push", 51) {
        return;
    }
    let addr = faulty_server(Fault::SkipEvery10thListener).await;
    let mut options = BroadcastOptions::new(addr, 50);
    options.rounds = 2;
    // Each round waits this long for the skipped ones; a listener that is merely
    // slow must not be counted with them.
    options.timeout = Duration::from_secs(3);
    options.pause = Duration::ZERO;
    let report = broadcast::run(&options, &Progress::default())
        .await
        .unwrap();
    // Connections 0, 10, 20, 30, 40 of 51 (the sender is the last) get nothing.
    assert_eq!(report.lost, 2 * 5, "{report:?}");
    for round in &report.per_round {
        assert_eq!((round.received, round.lost), (45, 5));
        assert_eq!(round.time_to_all_ms, None);
    }
    assert_eq!(report.median_time_to_all_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_every_connect() {
    if !can_run("storm_counts_every_connect", 500) {
        return;
    }
    let addr = gatehouse_server().await;
    let report = storm::run(&StormOptions::new(addr, 500), &Progress::default())
        .await
        .unwrap();
    assert_eq!(
        (report.connected, report.answered, report.failed),
        (500, 500, 0)
    );
    assert_eq!(report.time_to_answer.count, 500);
    let all = report.all_answered_s.unwrap();
    assert!(
        all >= report.time_to_answer.max_us / 1e6 * 0.99,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_connects_that_fail() {
    if !can_run("storm_counts_connects_that_fail", 20) {
        return;
    }
    // A port held by a socket that never listens: every connect is refused, and no
    // one else can start listening on it meanwhile.
    let unused = TcpSocket::new_v4().unwrap();
    unused.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = unused.local_addr().unwrap();
    let report = storm::run(&StormOptions::new(addr, 20), &Progress::default())
        .await
        .unwrap();
    assert_eq!((report.answered, report.failed), (0, 20));
    assert_eq!(report.all_answered_s, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_are_all_proven_alive_and_measured() {
    if !can_run("held_connections_are_all_proven_alive_and_measured", 200) {
        return;
    }
    let addr = gatehouse_server().await;
    let mut options = IdleOptions::new(addr, 200, Duration::from_millis(600));
    options.heartbeat = Duration::from_millis(200);
    options.settle = Duration::from_millis(100);
    // The server runs in this process: its pid is ours.
    options.server_pid = Some(std::process::id());
    let report = idle::run(&options, &Progress::default()).await.unwrap();
    assert_eq!((report.connected, report.alive, report.dead), (200, 200, 0));
    assert!(report.heartbeats >= 200, "{report:?}");
    assert!(report.rss_before_bytes.unwrap() > 0);
    assert!(report.rss_per_connection_bytes.is_some());
    assert!(report.cpu_percent_of_core.unwrap() >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_closed_by_the_server_are_counted_dead() {
    if !can_run("held_connections_closed_by_the_server_are_counted_dead", 30) {
        return;
    }
    let addr = faulty_server(Fault::CloseEvery10thAfterFirstPong).await;
    let mut options = IdleOptions::new(addr, 30, Duration::from_millis(200));
    options.settle = Duration::from_millis(50);
    options.verify_timeout = Duration::from_secs(2);
    let report = idle::run(&options, &Progress::default()).await.unwrap();
    assert_eq!((report.connected, report.alive, report.dead), (30, 27, 3));
}

// ---- a deliberately wrong server ---------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Echo requests answered, except every 10th of a connection (never).
    DropEvery10thResponse,
    /// Every 10th echo response of a connection has its last payload byte flipped.
    CorruptEvery10thPayload,
    /// Every 10th echo response of a connection carries another id.
    WrongIdEvery10th,
    /// Broadcasts skip connections 0, 10, 20…
    SkipEvery10thListener,
    /// Connections 0, 10, 20… are closed (no kick) right after their first pong.
    CloseEvery10thAfterFirstPong,
}

/// A tiny bench server (echo, broadcast, count, ping) with one fault.
async fn faulty_server(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry: Registry = Arc::default();
    let next_conn = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let n = next_conn.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(faulty_connection(stream, n, fault, registry.clone()));
        }
    });
    addr
}

type Registry = Arc<Mutex<Vec<(u64, mpsc::UnboundedSender<Vec<u8>>)>>>;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

async fn faulty_connection(stream: TcpStream, conn: u64, fault: Fault, registry: Registry) {
    let (own, mut pushes) = mpsc::unbounded_channel();
    registry.lock().unwrap().push((conn, own.clone()));
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = pushes.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut echoes = 0u64;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    'conn: while let Ok(n) = read.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let body: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
            match body.first() {
                Some(5) => {
                    let mut pong = body.clone();
                    pong[0] = 6;
                    let _ = own.send(frame(&pong));
                    if fault == Fault::CloseEvery10thAfterFirstPong && conn.is_multiple_of(10) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        break 'conn;
                    }
                }
                Some(1) => {
                    let id = &body[1..5];
                    let route = u16::from_be_bytes([body[5], body[6]]);
                    let payload = &body[7..];
                    let mut response = vec![3];
                    match route {
                        1 => {
                            echoes += 1;
                            let tenth = echoes.is_multiple_of(10);
                            if tenth && fault == Fault::DropEvery10thResponse {
                                continue;
                            }
                            if tenth && fault == Fault::WrongIdEvery10th {
                                response.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
                            } else {
                                response.extend_from_slice(id);
                            }
                            response.extend_from_slice(&[0, 0]);
                            response.extend_from_slice(payload);
                            if tenth && fault == Fault::CorruptEvery10thPayload {
                                if let Some(last) = response.last_mut() {
                                    *last ^= 0xff;
                                }
                            }
                        }
                        2 => {
                            let mut push = vec![4, 0, 2];
                            push.extend_from_slice(payload);
                            let push = frame(&push);
                            for (other, tx) in registry.lock().unwrap().iter() {
                                let skip = fault == Fault::SkipEvery10thListener && other % 10 == 0;
                                if !skip {
                                    let _ = tx.send(push.clone());
                                }
                            }
                            response.extend_from_slice(id);
                            response.extend_from_slice(&[0, 0]);
                        }
                        3 => {
                            let count = registry.lock().unwrap().len() as u32;
                            response.extend_from_slice(id);
                            response.extend_from_slice(&[0, 0]);
                            response.extend_from_slice(&count.to_be_bytes());
                        }
                        _ => continue,
                    }
                    let _ = own.send(frame(&response));
                }
                _ => {}
            }
        }
    }
    registry.lock().unwrap().retain(|(id, _)| *id != conn);
    drop(own);
    writer.abort();
}

/// A bench server in this process listening on every transport, and a file with its
/// self-signed certificate for the generator to trust; stops with the test's runtime.
async fn every_transport_server(ca_file: &std::path::Path) -> Vec<(&'static str, SocketAddr)> {
    use gatehouse::listener::WebOptions;
    use gatehouse::{Certificates, Listener};
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(ca_file, cert.cert.pem()).unwrap();
    let certs = Certificates::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let bind = || gatehouse::bind(([127, 0, 0, 1], 0).into());
    let listeners = vec![
        Listener::tcp(bind().await.unwrap()),
        Listener::tls(bind().await.unwrap(), certs.clone()),
        Listener::websocket(bind().await.unwrap(), WebOptions::default()),
        Listener::secure_websocket(bind().await.unwrap(), certs, WebOptions::default()),
    ];
    let addrs = ["tcp", "tls", "ws", "wss"]
        .into_iter()
        .zip(listeners.iter().map(|l| l.local_addr().unwrap()))
        .collect();
    let mut config = Config::default();
    config.server.max_connections_per_ip = 5_000;
    config.limits.inbound_frames_per_sec = 10_000_000;
    config.limits.inbound_frames_burst = 10_000_000;
    let server = Server::new(config, BenchService).unwrap();
    tokio::spawn(server.run(listeners, std::future::pending()));
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_over_every_transport() {
    if !can_run("every_scenario_runs_over_every_transport", 4 * 60) {
        return;
    }
    let ca = std::env::temp_dir().join(format!("gatehouse-loadgen-ca-{}.pem", std::process::id()));
    let servers = every_transport_server(&ca).await;
    for (name, addr) in servers {
        let transport = Transport::new(name, Some(&ca)).unwrap();
        let mut echo_options = EchoOptions::new(addr, 10, 8, 32, Duration::from_millis(300));
        echo_options.warmup = Duration::from_millis(100);
        echo_options.transport = transport.clone();
        let echo = echo::run(&echo_options, &Progress::default())
            .await
            .unwrap();
        assert!(echo.measured_responses > 0, "{name}: {echo:?}");
        assert_eq!(
            (echo.sent, echo.errors, echo.lost),
            (echo.verified, 0, 0),
            "{name}"
        );

        let mut broadcast_options = BroadcastOptions::new(addr, 20);
        broadcast_options.rounds = 2;
        broadcast_options.pause = Duration::from_millis(10);
        broadcast_options.transport = transport.clone();
        let broadcast = broadcast::run(&broadcast_options, &Progress::default())
            .await
            .unwrap();
        assert_eq!(
            (broadcast.connected, broadcast.lost),
            (20, 0),
            "{name}: {broadcast:?}"
        );

        let mut idle_options = IdleOptions::new(addr, 20, Duration::from_millis(200));
        idle_options.settle = Duration::from_millis(50);
        idle_options.transport = transport.clone();
        let idle = idle::run(&idle_options, &Progress::default())
            .await
            .unwrap();
        assert_eq!((idle.alive, idle.dead), (20, 0), "{name}: {idle:?}");

        let mut storm_options = StormOptions::new(addr, 20);
        storm_options.transport = transport;
        let storm = storm::run(&storm_options, &Progress::default())
            .await
            .unwrap();
        assert_eq!((storm.answered, storm.failed), (20, 0), "{name}: {storm:?}");
    }
    let _ = std::fs::remove_file(&ca);
}

#[test]
fn a_tls_transport_needs_the_certificate_to_trust() {
    let e = Transport::new("wss", None).unwrap_err();
    assert!(e.contains("--ca"), "{e}");
    assert!(Transport::new("quic", None).is_err());
}
