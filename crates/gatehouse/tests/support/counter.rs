//! A resumable game for the resume tests (the server's and the clients'): it logs
//! connections in (answering their connection id), counts per session, and records
//! its disconnect, detached and resumed hooks in a [`Record`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::{Config, ConnId, Context, Disconnect, Reply, ServerHandle, Service, Status};
use tokio::task::JoinHandle;

use super::{Record, TestServer};

/// Request: log in as the payload's name.
pub const LOGIN: u16 = 1;
/// Request: echo.
pub const ECHO: u16 = 2;
/// Notify: nothing.
pub const NOTE: u16 = 3;
/// Request: adds one to the session's counter, and answers it (u64 BE). Waits a
/// little first, as a handler that writes somewhere would.
pub const INCREMENT: u16 = 4;
/// The route of the pushes the tests send.
pub const PUSH: u16 = 100;

/// A game that logs connections in and counts; resumable when `RESUMABLE` is. Its
/// disconnect hooks are recorded.
pub struct Game<const RESUMABLE: bool> {
    record: Arc<Record>,
}

impl<const RESUMABLE: bool> Game<RESUMABLE> {
    /// The game, recording its hooks in `record`.
    pub fn new(record: Arc<Record>) -> Self {
        Game { record }
    }
}

impl<const RESUMABLE: bool> Service for Game<RESUMABLE> {
    /// The counter.
    type Session = u64;
    type Message = ();
    const RESUMABLE: bool = RESUMABLE;

    async fn connect(&self, _ctx: &mut Context<'_, ()>) -> u64 {
        0
    }

    async fn request(
        &self,
        counter: &mut u64,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            LOGIN => {
                // A login waits (a password hash, a load): what the client sends
                // behind it is held meanwhile.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let name = String::from_utf8_lossy(&payload).into_owned();
                match ctx.logged_in(&name).await {
                    Ok(()) => Reply::ok(ctx.id().0.to_be_bytes().to_vec()),
                    Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
                }
            }
            ECHO => Reply::ok(payload),
            INCREMENT => {
                tokio::task::yield_now().await;
                *counter += 1;
                Reply::ok(counter.to_be_bytes().to_vec())
            }
            _ => Reply::error(Status::UNKNOWN_ROUTE, "no such route"),
        }
    }

    async fn notify(
        &self,
        _session: &mut u64,
        _ctx: &mut Context<'_, ()>,
        _route: u16,
        _payload: Bytes,
    ) -> Status {
        Status::OK
    }

    fn detached(&self, ctx: &mut Context<'_, ()>) {
        self.record
            .moves
            .lock()
            .unwrap()
            .push((ctx.id(), "detached"));
    }

    fn resumed(&self, ctx: &mut Context<'_, ()>) {
        self.record
            .moves
            .lock()
            .unwrap()
            .push((ctx.id(), "resumed"));
    }

    async fn disconnect(&self, _counter: u64, info: Disconnect) {
        self.record
            .disconnects
            .lock()
            .unwrap()
            .push((info.id, info.reason));
    }
}

pub async fn start<const RESUMABLE: bool>(config: Config) -> TestServer {
    start_with_handle::<RESUMABLE>(config).await.0
}

pub async fn start_with_handle<const RESUMABLE: bool>(
    config: Config,
) -> (TestServer, ServerHandle<()>) {
    let record = Arc::new(Record::default());
    let game = Game::<RESUMABLE>::new(record.clone());
    TestServer::start_service_with_handle(config, game, record).await
}

/// Pushes `count` pushes on [`PUSH`] to `conn`, numbered from 0 (u32 BE), a few
/// milliseconds apart every ten, so that a cut can fall among them.
pub fn push_numbers(handle: ServerHandle<()>, conn: ConnId, count: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0..count {
            handle
                .push_to(conn, PUSH, n.to_be_bytes().to_vec())
                .await
                .unwrap();
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
}
