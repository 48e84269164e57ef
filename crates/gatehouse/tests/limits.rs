//! The seed's DoS checker and timers, and the admission caps, over real sockets:
//! floods, slow readers, stuck writes, idle and silent clients, too many connections.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse::{DisconnectReason, KickReason, Message};
use support::{
    at_deadline, keep_the_clock_stepping, resources, routes, test_config, Client, TestServer,
    PATIENCE,
};
use tokio::net::TcpSocket;
use tokio::time::Instant;

fn spam(n: u32, size: u32) -> Bytes {
    let mut p = BytesMut::new();
    p.put_u32(n);
    p.put_u32(size);
    p.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_flood_is_kicked_dos_while_a_polite_client_goes_on() {
    let mut config = test_config();
    config.limits.inbound_frames_per_sec = 50;
    config.limits.inbound_frames_burst = 100;
    let server = TestServer::start(config).await;
    let mut polite = server.connect().await;
    let mut flooder = server.connect().await;
    let mut flood = BytesMut::new();
    for _ in 0..1000 {
        flood.put(Message::Ping(Bytes::new()).to_frame());
    }
    flooder.send_raw(&flood).await;
    assert_eq!(flooder.expect_kick().await, KickReason::DOS);
    assert_eq!(polite.request(routes::ECHO, "calm").await.1, "calm");
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::Dos);
    assert_eq!(server.stats.snapshot().dos_kicks, 1);
}

#[tokio::test]
async fn a_byte_flood_is_kicked_dos() {
    let mut config = test_config();
    config.limits.max_frame_bytes = 16 * 1024;
    config.limits.inbound_bytes_per_sec = 64 * 1024;
    config.limits.inbound_bytes_burst = 128 * 1024;
    let server = TestServer::start(config).await;
    let mut flooder = server.connect().await;
    let frame = Message::Notify {
        route: 4242,
        payload: Bytes::from(vec![0u8; 16 * 1024 - 3]),
    }
    .to_frame();
    let mut flood = BytesMut::new();
    for _ in 0..20 {
        flood.put(frame.clone()); // 320 KiB at once, burst is 128 KiB
    }
    flooder.send_raw(&flood).await;
    assert_eq!(flooder.expect_kick().await, KickReason::DOS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_kicked_slow_consumer_while_others_are_served() {
    let mut config = test_config();
    config.limits.max_frame_bytes = 16 * 1024;
    config.limits.outbound_queue_bytes = 64 * 1024;
    let server = TestServer::start(config).await;

    // A small receive window so that the kernel buffers fill quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sleeper = Client::from_stream(socket.connect(server.addr).await.unwrap());
    let mut reader = server.connect().await;
    // Register both with the hub before the broadcasts.
    let _ = sleeper.whoami().await;
    let _ = reader.whoami().await;

    let payload = Bytes::from(vec![1u8; 8 * 1024]);
    for _ in 0..400 {
        // 400 x 8 KiB = 3.2 MiB: far over the sleeper's queue and kernel buffers.
        assert!(reader
            .request(routes::BROADCAST, payload.clone())
            .await
            .0
            .is_ok());
        assert_eq!(reader.expect_push().await.1.len(), payload.len());
    }
    // The overflowing delivery marks the connection to close at once, not at its
    // next wakeup for some other reason (its stale first-frame timer, 10 s after
    // accept): a generous bound that still tells the two apart.
    let broadcasts_done = Instant::now();
    let hooks = server.record.wait_hooks(1).await;
    let late = broadcasts_done.elapsed();
    assert!(
        late < Duration::from_secs(5),
        "the slow consumer was closed {late:?} after the last broadcast"
    );
    assert_eq!(hooks[0].1, DisconnectReason::SlowConsumer);
    // The sleeper wakes up: it finds what fitted, then the kick, then the close.
    assert_eq!(sleeper.expect_kick().await, KickReason::SLOW_CONSUMER);
    assert_eq!(reader.request(routes::ECHO, "on").await.1, "on");
    assert_eq!(server.stats.snapshot().slow_consumers, 1);
}

/// The server-wide memory budget falls on the heaviest: a connection whose handler
/// queues 4 MB for it (well within its own 8 MiB queue) is kicked `slow_consumer`
/// once the 1 MiB budget is used up, while a light connection goes on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_memory_budget_kicks_the_heavy_connection_and_spares_the_light() {
    let mut config = test_config();
    config.limits.outbound_queue_bytes = 8 << 20;
    config.server.memory_budget_bytes = 1 << 20;
    let server = TestServer::start(config).await;
    let mut heavy = server.connect().await;
    let mut light = server.connect().await;
    assert_eq!(light.request(routes::ECHO, "before").await.1, "before");
    let spam = Message::Request {
        id: 1,
        route: routes::SPAM,
        payload: spam(40, 100_000),
    };
    heavy.send(&spam).await;
    assert_eq!(heavy.expect_kick().await, KickReason::SLOW_CONSUMER);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::SlowConsumer);
    assert_eq!(light.request(routes::ECHO, "after").await.1, "after");
    assert_eq!(server.stats.snapshot().slow_consumers, 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_that_makes_no_progress_is_closed_at_the_send_timeout() {
    keep_the_clock_stepping();
    let send_timeout = Duration::from_secs(5);
    let mut config = test_config();
    config.limits.outbound_queue_bytes = 64 << 20; // the queue is not what stops it
    config.limits.send_timeout = send_timeout;
    let server = TestServer::start(config).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sleeper = Client::from_stream(socket.connect(server.addr).await.unwrap());
    // The stall can start only once the server has the request, after this.
    let started = Instant::now();
    // 32 MiB of pushes to itself: more than any kernel buffer, less than the queue.
    sleeper
        .send(&Message::Request {
            id: 1,
            route: routes::SPAM,
            payload: spam(2048, 16 * 1024),
        })
        .await;
    let hooks = server.record.wait_hooks(1).await;
    let waited = started.elapsed();
    assert_eq!(hooks[0].1, DisconnectReason::SendTimeout);
    assert!(at_deadline(waited, send_timeout), "closed after {waited:?}");
    assert_eq!(server.stats.snapshot().send_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_kicked_idle_at_the_idle_timeout() {
    keep_the_clock_stepping();
    let idle_timeout = Duration::from_secs(5);
    let mut config = test_config();
    config.limits.idle_timeout = idle_timeout;
    let server = TestServer::start(config).await;
    let mut idler = server.connect().await;
    // The timer starts at the server's read of the first frame, after this.
    let started = Instant::now();
    idler.send(&Message::Empty).await; // the first frame, then silence
    assert_eq!(idler.expect_kick().await, KickReason::IDLE);
    let waited = started.elapsed();
    assert!(at_deadline(waited, idle_timeout), "kicked after {waited:?}");
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::Idle);
    assert_eq!(server.stats.snapshot().idle_kicks, 1);
}

#[tokio::test(start_paused = true)]
async fn inbound_frames_keep_a_connection_from_idling_and_outbound_pushes_do_not() {
    // The rule itself (which frames reset the timer) is unit-tested in the
    // connection core; this proves the wiring: a ping every 200 ms against an idle
    // timeout of 1 s.
    keep_the_clock_stepping();
    let idle_timeout = Duration::from_secs(1);
    let mut config = test_config();
    config.limits.idle_timeout = idle_timeout;
    let server = TestServer::start(config).await;
    let mut pinger = server.connect().await;
    let mut listener = server.connect().await;
    // The pinger's first frame (its idle timer runs from there) goes before this,
    // the listener's last frame after it.
    pinger.send(&Message::Empty).await;
    let started = Instant::now();
    let listener_id = Bytes::copy_from_slice(&listener.whoami().await.0.to_be_bytes());
    // The listener receives pushes but sends nothing: outbound traffic keeps no one
    // alive. It reads them, so it is no slow consumer.
    let mut listener_kicked = tokio::spawn(async move { listener.expect_kick().await });
    let kick = loop {
        tokio::select! {
            kick = &mut listener_kicked => break kick.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                pinger.send(&Message::Ping(Bytes::new())).await;
                assert!(matches!(pinger.recv().await, Some(Message::Pong(_))));
                let (status, _) = pinger.request(routes::SEND_TO, listener_id.clone()).await;
                assert!(status.is_ok());
            }
        }
    };
    assert_eq!(kick, KickReason::IDLE);
    let waited = started.elapsed();
    assert!(at_deadline(waited, idle_timeout), "kicked after {waited:?}");
    // The pinger has been served for longer than the idle timeout, and goes on.
    assert_eq!(pinger.request(routes::ECHO, "alive").await.1, "alive");
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::Idle);
    assert_eq!(server.stats.snapshot().idle_kicks, 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_speaks_is_closed_at_the_first_frame_timeout() {
    keep_the_clock_stepping();
    let first_frame_timeout = Duration::from_secs(3);
    let mut config = test_config();
    config.limits.first_frame_timeout = first_frame_timeout;
    config.limits.idle_timeout = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    // The server starts the timer at accept, after this.
    let started = Instant::now();
    let mut silent = server.connect().await;
    assert_eq!(silent.expect_kick().await, KickReason::LOGIN_TIMEOUT);
    let waited = started.elapsed();
    assert!(
        at_deadline(waited, first_frame_timeout),
        "kicked after {waited:?}"
    );
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::LoginTimeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_a_new_client_is_kicked_server_full_and_others_go_on() {
    let mut config = test_config();
    config.server.max_connections = 3;
    let server = TestServer::start(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = server.connect().await;
        let _ = c.whoami().await;
        held.push(c);
    }
    let mut extra = server.connect().await;
    assert_eq!(extra.expect_kick().await, KickReason::SERVER_FULL);
    assert_eq!(held[0].request(routes::ECHO, "in").await.1, "in");
    assert_eq!(server.stats.snapshot().refused_server_full, 1);
    // A refused connection never had a session: no hook ran for it.
    assert!(server.record.hooks().is_empty());
    // A freed slot is usable again. The hook may run before the slot is handed
    // back, so a connection right after it may still find the server full.
    drop(held.pop());
    server.record.wait_hooks(1).await;
    let mut next = connect_admitted(&server).await;
    assert_eq!(next.request(routes::ECHO, "now").await.1, "now");
    assert_eq!(server.record.hooks().len(), 1, "refusals run no hook");
}

/// Connects until the server admits the connection (answers it instead of kicking
/// it `server_full`), for at most [`PATIENCE`].
async fn connect_admitted(server: &TestServer) -> Client {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut client = server.connect().await;
        client.send(&Message::Ping(Bytes::new())).await;
        match client.recv().await {
            Some(Message::Pong(_)) => return client,
            Some(Message::Kick { reason, .. }) if reason == KickReason::SERVER_FULL => {
                assert!(Instant::now() < deadline, "the freed slot never came back");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("expected a pong or server_full, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_cap_refuses_one_address_and_not_another() {
    if !resources::needs()
        .address(Ipv4Addr::new(127, 0, 0, 2))
        .met("the_per_ip_cap_refuses_one_address_and_not_another")
    {
        return;
    }
    let mut config = test_config();
    config.server.max_connections_per_ip = 2;
    let server = TestServer::start(config).await;
    let a: IpAddr = [127, 0, 0, 1].into();
    let b: IpAddr = [127, 0, 0, 2].into();
    let mut first = Client::connect_from(a, server.addr).await;
    let mut second = Client::connect_from(a, server.addr).await;
    let _ = (first.whoami().await, second.whoami().await);
    let mut third = Client::connect_from(a, server.addr).await;
    assert_eq!(third.expect_kick().await, KickReason::TOO_MANY_FROM_IP);
    let mut other = Client::connect_from(b, server.addr).await;
    assert_eq!(other.request(routes::ECHO, "b").await.1, "b");
    assert_eq!(server.stats.snapshot().refused_per_ip, 1);
}
