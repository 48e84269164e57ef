//! Login over real sockets: a service that requires a login closes a connection that
//! does not log in within `limits.login_timeout`, however chatty; a logged-in player
//! is reached by name through the server handle, and the name follows the latest
//! login and is forgotten with its connection; the same handle looks connections up,
//! groups them and kicks them.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::{Context, Disconnect, KickReason, Message, Reply, Service, Status};
use support::{at_deadline, keep_the_clock_stepping, test_config, Record, TestServer, PATIENCE};
use tokio::time::Instant;

/// Request route: payload is the player name to log in as.
const LOGIN: u16 = 1;
/// Push route the tests send on.
const NEWS: u16 = 100;

/// Logs in anyone but "mallory"; records disconnects.
struct Named {
    record: Arc<Record>,
}

impl Service for Named {
    type Session = ();
    type Message = ();
    const LOGIN_REQUIRED: bool = true;

    async fn connect(&self, _ctx: &mut Context<'_, ()>) {}

    async fn request(
        &self,
        _: &mut (),
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        if route != LOGIN {
            return Reply::unknown_route(route);
        }
        let name = String::from_utf8_lossy(&payload).into_owned();
        if name == "mallory" {
            return Reply::error(Status(1007), "wrong password");
        }
        match ctx.logged_in(&name).await {
            Ok(()) => Reply::empty(),
            Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
        }
    }

    async fn disconnect(&self, _: (), info: Disconnect) {
        let mut disconnects = self.record.disconnects.lock().unwrap();
        disconnects.push((info.id, info.reason));
    }
}

async fn start(login_timeout: Duration) -> (TestServer, gatehouse::ServerHandle<()>) {
    let mut config = test_config();
    config.limits.login_timeout = login_timeout;
    let record = Arc::new(Record::default());
    let named = Named {
        record: record.clone(),
    };
    TestServer::start_service_with_handle(config, named, record).await
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_does_not_log_in_in_time_is_kicked_login_timeout_even_while_it_pings() {
    keep_the_clock_stepping();
    let login_timeout = Duration::from_secs(5);
    let (server, _) = start(login_timeout).await;
    let mut refused = server.connect().await;
    let mut honest = server.connect().await;
    let started = Instant::now();
    // A refused login is the service's answer, not a login.
    assert_eq!(refused.request(LOGIN, "mallory").await.0, Status(1007));
    assert!(honest.request(LOGIN, "ada").await.0.is_ok());
    // Frames keep coming, so neither the first-frame nor the idle timeout applies.
    while started.elapsed() < Duration::from_secs(4) {
        refused.send(&Message::Ping(Bytes::new())).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(refused.expect_kick().await, KickReason::LOGIN_TIMEOUT);
    let at = started.elapsed();
    assert!(at_deadline(at, login_timeout), "kicked at {at:?}");
    // The logged-in one outlives the deadline.
    tokio::time::sleep(login_timeout).await;
    assert!(honest.request(LOGIN, "ada").await.0.is_ok());
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_is_reached_by_name_the_name_follows_the_latest_login_and_goes_with_it() {
    let (server, handle) = start(Duration::from_secs(30)).await;
    assert_eq!(handle.player("ada").await, Ok(None));
    let mut first = server.connect().await;
    assert!(first.request(LOGIN, "ada").await.0.is_ok());
    let first_id = handle.player("ada").await.unwrap().unwrap();
    handle.push_to_player("ada", NEWS, "hello").await.unwrap();
    assert_eq!(first.expect_push().await, (NEWS, Bytes::from("hello")));

    // A second login of the name takes it; the first connection's end leaves it there.
    let mut second = server.connect().await;
    assert!(second.request(LOGIN, "ada").await.0.is_ok());
    let second_id = handle.player("ada").await.unwrap().unwrap();
    assert_ne!(first_id, second_id);
    drop(first);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks[0].0, first_id, "the first connection has ended");
    assert_eq!(handle.player("ada").await, Ok(Some(second_id)));
    handle.push_to_player("ada", NEWS, "again").await.unwrap();
    assert_eq!(second.expect_push().await, (NEWS, Bytes::from("again")));

    handle
        .kick_player("ada", KickReason::KICKED, "bye")
        .await
        .unwrap();
    assert_eq!(second.expect_kick().await, KickReason::KICKED);
    let deadline = Instant::now() + PATIENCE;
    while handle.player("ada").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the name is forgotten with its connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_handle_looks_connections_up_groups_them_and_pushes_to_all_but_one() {
    let (server, handle) = start(Duration::from_secs(30)).await;
    let mut ada = server.connect().await;
    let mut bob = server.connect().await;
    assert!(ada.request(LOGIN, "ada").await.0.is_ok());
    assert!(bob.request(LOGIN, "bob").await.0.is_ok());
    let ada_id = handle.player("ada").await.unwrap().unwrap();
    let bob_id = handle.player("bob").await.unwrap().unwrap();

    // Lookups: one connection, and the live ones page by page.
    let info = handle.connection(ada_id).await.unwrap().unwrap();
    assert_eq!(info.player.as_deref(), Some("ada"));
    assert_eq!(info.transport, gatehouse::TransportKind::Tcp);
    let first = handle.connections(None, 1).await.unwrap();
    assert_eq!((first.total, first.connections.len()), (2, 1));
    let rest = handle
        .connections(Some(first.connections[0].id), 10)
        .await
        .unwrap();
    let mut seen = vec![first.connections[0].id, rest.connections[0].id];
    seen.sort();
    let mut expected = vec![ada_id, bob_id];
    expected.sort();
    assert_eq!(seen, expected);

    // Groups: joined by id, counted, pushed to with one member left out.
    handle.join_group(ada_id, "red").await.unwrap();
    handle.join_group(bob_id, "red").await.unwrap();
    assert_eq!(handle.group_count("red").await, Ok(2));
    assert_eq!(handle.groups().await, Ok(vec![("red".to_owned(), 2)]));
    handle
        .group_broadcast_except("red", ada_id, NEWS, "to bob")
        .await
        .unwrap();
    handle
        .broadcast_except(bob_id, NEWS, "to ada")
        .await
        .unwrap();
    assert_eq!(bob.expect_push().await, (NEWS, Bytes::from("to bob")));
    assert_eq!(ada.expect_push().await, (NEWS, Bytes::from("to ada")));
    handle.leave_group(ada_id, "red").await.unwrap();
    handle
        .group_broadcast("red", NEWS, "red only")
        .await
        .unwrap();
    handle.broadcast(NEWS, "everyone").await.unwrap();
    assert_eq!(bob.expect_push().await, (NEWS, Bytes::from("red only")));
    assert_eq!(bob.expect_push().await, (NEWS, Bytes::from("everyone")));
    assert_eq!(ada.expect_push().await, (NEWS, Bytes::from("everyone")));

    // Kicks by name and by id.
    handle
        .kick_player("ada", KickReason::KICKED, "by name")
        .await
        .unwrap();
    assert_eq!(ada.expect_kick().await, KickReason::KICKED);
    handle
        .kick(bob_id, KickReason::KICKED, "by id")
        .await
        .unwrap();
    assert_eq!(bob.expect_kick().await, KickReason::KICKED);
    assert!(server.shutdown().await.is_ok());
}
