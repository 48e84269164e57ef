//! Supervision over real sockets: a hub crash closes every connection with
//! `server_restart` and runs each disconnect hook once, then service resumes; too
//! many crashes stop the server with an error; a handler panic stays local; shutdown
//! kicks everyone and runs every hook; a kick racing handlers is reported as itself;
//! hooks that hang are dropped at their timeouts. Together: the disconnect hook runs
//! exactly once on every exit path.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gatehouse::protocol::{ROUTE_FAULT_CRASH_HUB, ROUTE_FAULT_PANIC_HANDLER};
use gatehouse::{DisconnectReason, KickReason, Message, ServerError};
use support::{
    at_deadline, keep_the_clock_stepping, routes, test_config, Client, TestServer, PATIENCE,
};
use tokio::time::Instant;

async fn connected(server: &TestServer, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut client = server.connect().await;
        let _ = client.whoami().await; // registered with the hub
        clients.push(client);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_crash_kicks_every_client_server_restart_runs_each_hook_once_and_service_resumes() {
    let server = TestServer::start(test_config()).await;
    let n = 50;
    let mut clients = connected(&server, n).await;
    clients[0].fire(ROUTE_FAULT_CRASH_HUB).await;
    for client in &mut clients {
        assert_eq!(client.expect_kick().await, KickReason::SERVER_RESTART);
    }
    let hooks = server.record.wait_hooks(n).await;
    assert!(hooks
        .iter()
        .all(|(_, r)| *r == DisconnectReason::ServerRestart));
    let ids: HashSet<_> = hooks.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), n, "one hook per connection");

    // Reconnecting right away works, against a fresh hub that counts only the new ones.
    let mut again = connected(&server, 2).await;
    assert_eq!(
        again[0].request(routes::COUNT, "").await.1[..],
        2u32.to_be_bytes()
    );
    assert!(again[1].request(routes::BROADCAST, "back").await.0.is_ok());
    assert_eq!(again[0].expect_push().await.1, "back");
    let again_ids: HashSet<_> = [again[0].whoami().await, again[1].whoami().await].into();

    // Once the server has stopped no hook can run any more: count them all.
    let record = server.record.clone();
    let stats = server.stats.clone();
    assert!(server.shutdown().await.is_ok());
    let hooks = record.hooks();
    assert_eq!(hooks.len(), n + 2, "no hook ran twice: {hooks:?}");
    for (id, reason) in &hooks {
        let expected = if again_ids.contains(id) {
            DisconnectReason::Shutdown
        } else {
            assert!(ids.contains(id), "a hook for an unknown connection");
            DisconnectReason::ServerRestart
        };
        assert_eq!(*reason, expected, "{id:?}");
    }
    let stats = stats.snapshot();
    assert_eq!(stats.hub_restarts, 1);
    assert_eq!(stats.disconnect_hooks, n as u64 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_crashes_than_the_restart_intensity_allows_stop_the_server_with_an_error() {
    let mut config = test_config();
    config.supervisor.max_restarts = 2;
    config.supervisor.restart_window = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    for round in 0..3 {
        let mut client = server.connect().await;
        let _ = client.whoami().await;
        client.fire(ROUTE_FAULT_CRASH_HUB).await;
        assert_eq!(
            client.expect_kick().await,
            KickReason::SERVER_RESTART,
            "round {round}"
        );
    }
    let hooks = server.record.wait_hooks(3).await;
    assert_eq!(hooks.len(), 3);
    let result = server.join().await;
    assert!(
        matches!(
            result,
            Err(ServerError::TooManyRestarts {
                max_restarts: 2,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_ends_only_its_connection_and_still_runs_its_hook() {
    let server = TestServer::start(test_config()).await;
    let mut bystander = server.connect().await;
    let mut victim = server.connect().await;
    let mut fast_victim = server.connect().await;
    let mut injected = server.connect().await;
    let victim_id = victim.whoami().await;
    let fast_victim_id = fast_victim.whoami().await;
    victim.fire(routes::PANIC).await;
    assert_eq!(victim.expect_kick().await, KickReason::INTERNAL_ERROR);
    // A panic on the fast path (request_now) is caught the same way.
    fast_victim.fire(routes::PANIC_NOW).await;
    assert_eq!(fast_victim.expect_kick().await, KickReason::INTERNAL_ERROR);
    injected.fire(ROUTE_FAULT_PANIC_HANDLER).await;
    assert_eq!(injected.expect_kick().await, KickReason::INTERNAL_ERROR);

    assert_eq!(
        bystander.request(routes::ECHO, "unaffected").await.1,
        "unaffected"
    );
    let hooks = server.record.wait_hooks(3).await;
    assert!(hooks.contains(&(victim_id, DisconnectReason::HandlerPanic)));
    assert!(hooks.contains(&(fast_victim_id, DisconnectReason::HandlerPanic)));
    assert!(hooks
        .iter()
        .all(|(_, r)| *r == DisconnectReason::HandlerPanic));
    let stats = server.stats.snapshot();
    assert_eq!((stats.handler_panics, stats.hub_restarts), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kicks_every_client_runs_every_hook_and_returns_ok() {
    let server = TestServer::start(test_config()).await;
    let n = 40;
    let mut clients = connected(&server, n).await;
    let record = server.record.clone();
    let stats = server.stats.clone();
    let stopping = tokio::spawn(server.shutdown());
    for client in &mut clients {
        assert_eq!(client.expect_kick().await, KickReason::SHUTDOWN);
    }
    assert!(stopping.await.unwrap().is_ok());
    // `run` returned only after every hook had run.
    let hooks = record.hooks();
    assert_eq!(hooks.len(), n);
    assert!(hooks.iter().all(|(_, r)| *r == DisconnectReason::Shutdown));
    assert_eq!(stats.snapshot().disconnect_hooks, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disconnect_hook_runs_exactly_once_on_every_exit_path() {
    let mut config = test_config();
    config.limits.inbound_frames_per_sec = 20;
    config.limits.inbound_frames_burst = 20;
    // Long enough that no other client is kicked idle by accident while the test
    // walks through the other exits; the idle client is then waited for.
    config.limits.idle_timeout = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let mut clients = connected(&server, 7).await;
    let mut ids = Vec::new();
    for c in &mut clients {
        ids.push(c.whoami().await);
    }
    let mut clients = clients.into_iter();
    let (peer, idle, dos, kicked, protocol, panic, shutdown) = (
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
    );
    drop(peer);
    let mut dos = dos;
    for _ in 0..50 {
        dos.send(&Message::Empty).await;
    }
    assert_eq!(dos.expect_kick().await, KickReason::DOS);
    let mut protocol = protocol;
    protocol.send_raw(&[0, 0, 0, 1, 200]).await;
    assert_eq!(protocol.expect_kick().await, KickReason::PROTOCOL_ERROR);
    let mut panic = panic;
    panic.fire(routes::PANIC).await;
    assert_eq!(panic.expect_kick().await, KickReason::INTERNAL_ERROR);
    let mut shutdown = shutdown;
    let mut kicked = kicked;
    let kicked_id = Bytes::copy_from_slice(&ids[3].0.to_be_bytes());
    assert!(shutdown.request(routes::KICK, kicked_id).await.0.is_ok());
    assert_eq!(kicked.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    // The shutdown client keeps talking while the idle one times out.
    let mut idle = idle;
    let mut idle_kicked = tokio::spawn(async move { idle.expect_kick().await });
    let idle_kick = loop {
        tokio::select! {
            kick = &mut idle_kicked => break kick.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                assert_eq!(shutdown.request(routes::ECHO, "awake").await.1, "awake");
            }
        }
    };
    assert_eq!(idle_kick, KickReason::IDLE);
    let record = server.record.clone();
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(shutdown.expect_kick().await, KickReason::SHUTDOWN);
    assert!(stopping.await.unwrap().is_ok());

    let hooks = record.hooks();
    let reason_of = |i: usize| {
        let matching: Vec<_> = hooks.iter().filter(|(id, _)| *id == ids[i]).collect();
        assert_eq!(
            matching.len(),
            1,
            "connection {i} had {} hooks",
            matching.len()
        );
        matching[0].1.clone()
    };
    assert_eq!(reason_of(0), DisconnectReason::PeerClosed);
    assert_eq!(reason_of(1), DisconnectReason::Idle);
    assert_eq!(reason_of(2), DisconnectReason::Dos);
    assert_eq!(
        reason_of(3),
        DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN)
    );
    assert_eq!(reason_of(4), DisconnectReason::ProtocolError);
    assert_eq!(reason_of(5), DisconnectReason::HandlerPanic);
    assert_eq!(reason_of(6), DisconnectReason::Shutdown);
    assert_eq!(hooks.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_does_not_hold_up_shutdown() {
    let mut config = test_config();
    config.supervisor.drain_timeout = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let mut stuck = server.connect().await;
    let _ = stuck.whoami().await;
    stuck.fire(routes::HANG).await;
    server.record.wait_hangs(1).await;
    let record = server.record.clone();
    let started = Instant::now();
    assert!(server.shutdown().await.is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(stuck.expect_kick().await, KickReason::SHUTDOWN);
    assert_eq!(record.hooks().len(), 1);
    assert_eq!(record.hooks()[0].1, DisconnectReason::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_stops_the_server() {
    let server = gatehouse::Server::new(test_config(), support::Recorder::default()).unwrap();
    let listener = gatehouse::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let run = server.run(listener, std::future::pending());
    let mut client = tokio::select! {
        _ = run => unreachable!("run returned by itself"),
        client = async {
            let mut client = Client::connect(addr).await;
            let _ = client.whoami().await;
            client
        } => client,
    };
    // The run future is gone: its connection is kicked and nobody accepts any more.
    assert_eq!(client.expect_kick().await, KickReason::SHUTDOWN);
    let deadline = Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still listening after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_interrupts_a_handler_that_is_still_running() {
    let server = TestServer::start(test_config()).await;
    let mut stuck = server.connect().await;
    let mut kicker = server.connect().await;
    let id = stuck.whoami().await;
    stuck.fire(routes::HANG).await;
    server.record.wait_hangs(1).await;
    let id_bytes = Bytes::copy_from_slice(&id.0.to_be_bytes());
    assert!(kicker.request(routes::KICK, id_bytes).await.0.is_ok());
    assert_eq!(stuck.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(
        hooks[0],
        (id, DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN))
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_running_past_its_timeout_is_dropped_and_its_connection_closed() {
    keep_the_clock_stepping();
    let handler_timeout = Duration::from_secs(3);
    let mut config = test_config();
    config.limits.handler_timeout = handler_timeout;
    let server = TestServer::start(config).await;
    let mut stuck = server.connect().await;
    let mut bystander = server.connect().await;
    let started = Instant::now();
    stuck.fire(routes::HANG).await;
    assert_eq!(stuck.expect_kick().await, KickReason::INTERNAL_ERROR);
    let at = started.elapsed();
    assert!(at_deadline(at, handler_timeout), "dropped at {at:?}");
    assert_eq!(bystander.request(routes::ECHO, "fine").await.1, "fine");
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].1, DisconnectReason::HandlerTimeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_kept_busy_by_its_client_still_sees_the_shutdown_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start(test_config()).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The client never lets the connection rest: batches of echo requests, back to back.
    let writer = tokio::spawn(async move {
        let mut batch = BytesMut::new();
        for id in 0..64u32 {
            let payload = Bytes::from_static(b"busy");
            let request = Message::Request {
                id,
                route: routes::ECHO,
                payload,
            };
            batch.put(request.to_frame());
        }
        while write.write_all(&batch).await.is_ok() {}
    });
    // Read until the kick; count the responses seen before the shutdown began.
    let (busy_tx, busy_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut busy_tx = Some(busy_tx);
        let mut buf = BytesMut::new();
        let mut responses = 0u64;
        loop {
            while buf.len() >= 4 {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                buf.advance(4);
                match Message::decode(buf.split_to(len).freeze()).unwrap() {
                    Message::Response { .. } => responses += 1,
                    Message::Kick { reason, .. } => return Some(reason),
                    other => panic!("unexpected {other:?}"),
                }
                if responses == 10_000 {
                    if let Some(tx) = busy_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            if read.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    });
    tokio::time::timeout(PATIENCE, busy_rx)
        .await
        .expect("the connection got busy")
        .unwrap();
    let started = Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    let kick = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("a kick in time");
    assert_eq!(kick.unwrap(), Some(KickReason::SHUTDOWN));
    assert!(stopping.await.unwrap().is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the busy connection was stopped promptly"
    );
    writer.abort();
}

/// A kick that lands while handlers are completing (between two steps of the
/// connection's loop, in a handler's await, or as output is written) is reported to
/// the client and to the hook as itself, never as a shutdown or restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_racing_handler_completions_is_always_reported_as_itself() {
    let server = TestServer::start(test_config()).await;
    let mut kicker = server.connect().await;
    for round in 0..100 {
        let mut victim = server.connect().await;
        let id = victim.whoami().await;
        // Requests in flight, some fast-path, some async, as the kick arrives.
        for i in 0..20u32 {
            let route = if i % 2 == 0 {
                routes::ECHO
            } else {
                routes::REVERSE_NOW
            };
            victim
                .send(&Message::Request {
                    id: 1000 + i,
                    route,
                    payload: Bytes::from_static(b"racing"),
                })
                .await;
        }
        let id_bytes = Bytes::copy_from_slice(&id.0.to_be_bytes());
        assert!(kicker.request(routes::KICK, id_bytes).await.0.is_ok());
        assert_eq!(
            victim.expect_kick().await,
            KickReason::DUPLICATE_LOGIN,
            "round {round}"
        );
        let hooks = server.record.wait_hooks(round + 1).await;
        let hook = hooks.iter().find(|(conn, _)| *conn == id).unwrap();
        assert_eq!(
            hook.1,
            DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN),
            "round {round}"
        );
    }
}

/// A game whose `connect` (if asked) or `disconnect` never returns. Its disconnect
/// records the session first, as a game queues its save before anything that waits.
struct StuckHooks {
    stuck_connect: bool,
    record: std::sync::Arc<support::Record>,
}

impl gatehouse::Service for StuckHooks {
    type Session = gatehouse::ConnId;
    type Message = ();

    async fn connect(&self, ctx: &mut gatehouse::Context<'_, ()>) -> gatehouse::ConnId {
        if self.stuck_connect {
            std::future::pending::<()>().await;
        }
        ctx.id()
    }

    async fn request(
        &self,
        _session: &mut gatehouse::ConnId,
        _ctx: &mut gatehouse::Context<'_, ()>,
        _route: u16,
        payload: Bytes,
    ) -> gatehouse::Reply {
        gatehouse::Reply::ok(payload)
    }

    async fn disconnect(&self, session: gatehouse::ConnId, info: gatehouse::Disconnect) {
        self.record
            .disconnects
            .lock()
            .unwrap()
            .push((session, info.reason));
        std::future::pending::<()>().await;
    }
}

async fn stuck_server(stuck_connect: bool, config: gatehouse::Config) -> TestServer {
    let record = std::sync::Arc::new(support::Record::default());
    let service = StuckHooks {
        stuck_connect,
        record: record.clone(),
    };
    TestServer::start_service(config, service, record).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_hook_that_hangs_is_dropped_at_its_timeout_after_saving() {
    let mut config = test_config();
    config.limits.disconnect_timeout = Duration::from_millis(200);
    let server = stuck_server(false, config).await;
    let mut client = server.connect().await;
    assert_eq!(client.request(routes::ECHO, "hi").await.1, "hi");
    drop(client);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(
        hooks[0].1,
        DisconnectReason::PeerClosed,
        "its save part ran"
    );
    support::eventually("the stuck hook dropped and counted", || {
        (server.stats.snapshot().hook_timeouts == 1).then_some(())
    })
    .await;
    // Nothing of it is left running: shutdown is prompt and clean.
    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_hook_that_hangs_closes_its_connection_at_the_timeout() {
    let mut config = test_config();
    config.limits.connect_timeout = Duration::from_millis(200);
    let server = stuck_server(true, config).await;
    let mut client = server.connect().await;
    let started = Instant::now();
    assert_eq!(client.expect_kick().await, KickReason::INTERNAL_ERROR);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(server.stats.snapshot().hook_timeouts, 1);
    assert!(
        server.record.hooks().is_empty(),
        "no session, no disconnect hook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_keeps_broadcasting_through_the_server_handle_across_two_hub_restarts() {
    let server = TestServer::start(test_config()).await;
    let handle = server.handle.clone().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ticker = {
        let (handle, sent, failed) = (handle.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                match handle.broadcast(routes::PUSH, Bytes::from("tick")).await {
                    Ok(()) => {
                        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(e) => failed.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for restart in 0..2 {
        let mut client = server.connect().await;
        let _ = client.whoami().await;
        let (route, body) = client.expect_push().await;
        assert_eq!((route, &body[..]), (routes::PUSH, &b"tick"[..]));
        client.fire(ROUTE_FAULT_CRASH_HUB).await;
        loop {
            match client.recv().await {
                Some(Message::Kick { reason, .. }) => {
                    assert_eq!(reason, KickReason::SERVER_RESTART, "restart {restart}");
                    break;
                }
                Some(_) => continue,
                None => panic!("closed without a kick"),
            }
        }
    }
    // After the second restart, a fresh client still gets the task's broadcasts.
    let mut client = server.connect().await;
    let _ = client.whoami().await;
    let before = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(client.expect_push().await.1, "tick");
    support::eventually("more broadcasts", || {
        (sent.load(std::sync::atomic::Ordering::SeqCst) > before + 3).then_some(())
    })
    .await;
    assert!(
        failed.lock().unwrap().is_empty(),
        "the handle waited out both restarts: {:?}",
        failed.lock().unwrap()
    );
    assert_eq!(server.stats.snapshot().hub_restarts, 2);

    // Once the server has stopped, a call fails at once instead of waiting.
    assert!(server.shutdown().await.is_ok());
    let started = Instant::now();
    assert_eq!(
        handle.count().await,
        Err(gatehouse::HandleError::Unavailable)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    ticker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_handle_call_during_a_restart_longer_than_its_wait_returns_unavailable() {
    // A hook that hangs keeps the restart's drain going for a second.
    let mut config = test_config();
    config.limits.disconnect_timeout = Duration::from_secs(1);
    let record = std::sync::Arc::new(support::Record::default());
    let service = StuckHooks {
        stuck_connect: false,
        record: record.clone(),
    };
    let (server, handle) = TestServer::start_service_with_handle(config, service, record).await;
    let mut client = server.connect().await;
    assert_eq!(client.request(routes::ECHO, "hi").await.1, "hi");
    assert_eq!(handle.count().await, Ok(1));
    client.fire(ROUTE_FAULT_CRASH_HUB).await;
    assert_eq!(client.expect_kick().await, KickReason::SERVER_RESTART);
    let short = handle.clone().with_wait(Duration::from_millis(100));
    assert_eq!(
        short.count().await,
        Err(gatehouse::HandleError::Unavailable)
    );
    // The default wait outlasts the restart: the call lands on the fresh hub.
    assert_eq!(handle.count().await, Ok(0));
    assert!(server.shutdown().await.is_ok());
}
