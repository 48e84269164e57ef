//! Taking a player over, over real sockets: a login within its turn kicks the
//! connection that has the player `duplicate_login` and goes on only once that
//! connection's disconnect hook has run; of many logins to one name at once, one is
//! left online; a player is its connection's until that hook has run; and a session that
//! does not end in time makes the login busy, not stuck.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::{
    ConnId, Context, Disconnect, HandleError, KickReason, Message, Reply, ServerHandle, Service,
    Status,
};
use support::{keep_the_clock_stepping, test_config, Client, Record, TestServer, PATIENCE};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Request: log in as the payload's name, taking it over.
const LOGIN: u16 = 1;
/// Request: the connection's id (u64 BE).
const WHOAMI: u16 = 2;
/// Status of a login that waited too long.
const BUSY: Status = Status(1006);

/// What happened, in order.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn note(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Game {
    log: Arc<Log>,
    record: Arc<Record>,
    /// Each disconnect hook waits for a permit: the tests hold hooks open.
    hooks: Arc<Semaphore>,
}

impl Service for Game {
    type Session = Option<String>;
    type Message = ();

    async fn connect(&self, _ctx: &mut Context<'_, ()>) -> Option<String> {
        None
    }

    async fn request(
        &self,
        session: &mut Option<String>,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            LOGIN => {}
            WHOAMI => return Reply::ok(ctx.id().0.to_be_bytes().to_vec()),
            other => return Reply::unknown_route(other),
        }
        let name = String::from_utf8_lossy(&payload).into_owned();
        let result = async {
            let turn = ctx.login_turn(&name).await?;
            let previous = ctx.take_over(&turn).await?;
            if let Some(previous) = previous {
                self.log
                    .note(format!("{} took over from {}", ctx.id().0, previous.0));
            }
            ctx.logged_in(&name).await
        }
        .await;
        match result {
            Ok(()) => {
                *session = Some(name);
                Reply::empty()
            }
            Err(HandleError::Busy) => Reply::error(BUSY, "busy"),
            Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
        }
    }

    async fn disconnect(&self, _: Option<String>, info: Disconnect) {
        let _permit = self.hooks.acquire().await;
        self.log.note(format!("hook of {} ran", info.id.0));
        self.record
            .disconnects
            .lock()
            .unwrap()
            .push((info.id, info.reason));
    }
}

async fn start(open_hooks: usize) -> (TestServer, ServerHandle<()>, Arc<Log>, Arc<Semaphore>) {
    let log = Arc::new(Log::default());
    let record = Arc::new(Record::default());
    let hooks = Arc::new(Semaphore::new(open_hooks));
    let game = Game {
        log: log.clone(),
        record: record.clone(),
        hooks: hooks.clone(),
    };
    let (server, handle) = TestServer::start_service_with_handle(test_config(), game, record).await;
    (server, handle, log, hooks)
}

async fn whoami(client: &mut Client) -> ConnId {
    let (status, payload) = client.request(WHOAMI, "").await;
    assert!(status.is_ok());
    ConnId(u64::from_be_bytes(payload[..8].try_into().unwrap()))
}

/// Polls `check` until it holds, for at most [`PATIENCE`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_kicks_the_holder_and_goes_on_only_after_its_hook_has_run() {
    let (server, handle, log, hooks) = start(0).await;
    let mut first = server.connect().await;
    assert!(first.request(LOGIN, "ada").await.0.is_ok());
    let first_id = whoami(&mut first).await;

    let mut second = server.connect().await;
    let second_id = whoami(&mut second).await;
    let login = tokio::spawn(async move {
        let status = second.request(LOGIN, "ada").await.0;
        (second, status)
    });
    // The kick arrives; the socket closes only after the hook (not waited for here).
    match first.recv().await {
        Some(Message::Kick { reason, .. }) => assert_eq!(reason, KickReason::DUPLICATE_LOGIN),
        other => panic!("expected the kick, got {other:?}"),
    }
    // The first connection is gone from the hub, but its hook is held open: it is
    // still the player's, and the login waits.
    until("the kicked connection leaves the hub", async || {
        handle.connection(first_id).await.unwrap().is_none()
    })
    .await;
    assert_eq!(handle.player("ada").await, Ok(Some(first_id)));
    let online = handle.players(10).await.unwrap();
    assert_eq!((online.online, online.names), (1, vec!["ada".to_owned()]));
    assert!(
        !login.is_finished(),
        "the login went on before the hook ran"
    );
    assert!(log.events().is_empty(), "{:?}", log.events());

    hooks.add_permits(100);
    let (_second, status) = login.await.unwrap();
    assert!(status.is_ok(), "{status:?}");
    assert_eq!(
        log.events(),
        vec![
            format!("hook of {} ran", first_id.0),
            format!("{} took over from {}", second_id.0, first_id.0),
        ]
    );
    assert_eq!(handle.player("ada").await, Ok(Some(second_id)));
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_twenty_logins_to_one_name_at_once_one_is_left_online() {
    let (server, handle, _log, _hooks) = start(1_000).await;
    let mut logins = Vec::new();
    for _ in 0..20 {
        let mut client = server.connect().await;
        let id = whoami(&mut client).await;
        logins.push(tokio::spawn(async move {
            let status = client.request(LOGIN, "ada").await.0;
            (id, client, status)
        }));
    }
    let mut clients = Vec::new();
    for login in logins {
        let (id, client, status) = login.await.unwrap();
        assert!(status.is_ok(), "{status:?}");
        clients.push((id, client));
    }
    // Each login took over from the one before it: all but the last were kicked.
    let survivor = handle.player("ada").await.unwrap().unwrap();
    for (id, mut client) in clients {
        if id != survivor {
            assert_eq!(client.expect_kick().await, KickReason::DUPLICATE_LOGIN);
        }
    }
    let online = handle.players(10).await.unwrap();
    assert_eq!(online.online, 1);
    assert_eq!(handle.player("ada").await, Ok(Some(survivor)));
    assert!(server.shutdown().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_session_that_does_not_end_in_time_makes_the_login_busy_and_a_later_one_succeeds() {
    keep_the_clock_stepping();
    let (server, _handle, _log, hooks) = start(0).await;
    let mut first = server.connect().await;
    assert!(first.request(LOGIN, "ada").await.0.is_ok());
    let mut second = server.connect().await;
    // The first's hook is held (up to limits.disconnect_timeout, 10 s): the login
    // gives up after gatehouse::players::LOGIN_WAIT (5 s).
    let started = Instant::now();
    assert_eq!(second.request(LOGIN, "ada").await.0, BUSY);
    assert!(started.elapsed() >= gatehouse::players::LOGIN_WAIT);
    hooks.add_permits(100);
    assert_eq!(first.expect_kick().await, KickReason::DUPLICATE_LOGIN);
    assert!(second.request(LOGIN, "ada").await.0.is_ok());
    assert!(server.shutdown().await.is_ok());
}
