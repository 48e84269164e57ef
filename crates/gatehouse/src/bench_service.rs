//! The built-in `bench` service (`gatehouse serve --service bench`): the smallest
//! useful service, for benchmarks, outside clients and as a first example.
//!
//! | route | name | request | notify |
//! |---|---|---|---|
//! | 1 | echo | response carries the payload back | pushed back on route 1 |
//! | 2 | broadcast | payload pushed on route 2 to every connection, then an empty response | same, no response |
//! | 3 | count | response payload: live connections, `u32` big-endian | — |
//! | 4 | login | logs the connection in as the payload (a name); response: its connection id, `u64` big-endian | — |
//! | 5 | increment | adds one to the connection's counter; response: the counter, `u64` big-endian | — |
//! | 6 | push numbers | payload `u32` n: pushes 0..n (`u32` big-endian) on route 6 to this connection, a few milliseconds apart every ten; an empty response at once | — |
//!
//! It resumes ([`Service::RESUMABLE`]): a connection that logs in is offered a
//! session (unless `resume.window` is 0), so clients' resume can be tried and
//! measured against it. Connections that do not log in are served as before.

use bytes::Bytes;

use crate::service::{Context, Disconnect, Reply, Service};
use gatehouse_protocol::Status;

/// Route numbers of the bench service (the protocol crate's, for its clients).
pub use gatehouse_protocol::routes::bench as routes;

/// The bench service; its only per-connection state is a counter.
#[derive(Debug, Default, Clone, Copy)]
pub struct BenchService;

impl Service for BenchService {
    /// The counter of [`routes::INCREMENT`].
    type Session = u64;
    type Message = ();
    const RESUMABLE: bool = true;

    async fn connect(&self, _ctx: &mut Context<'_, ()>) -> u64 {
        0
    }

    /// Echo and increment need no future: they are answered on the fast path.
    fn request_now(
        &self,
        counter: &mut u64,
        _ctx: &mut Context<'_, ()>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Reply> {
        match route {
            routes::ECHO => Some(Reply::ok(payload.clone())),
            routes::INCREMENT => {
                *counter += 1;
                Some(Reply::ok(Bytes::copy_from_slice(&counter.to_be_bytes())))
            }
            _ => None,
        }
    }

    async fn request(
        &self,
        _counter: &mut u64,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            routes::LOGIN => {
                let name = String::from_utf8_lossy(&payload).into_owned();
                // One session per name, on whichever node: a second login takes the
                // player over (the first is kicked `duplicate_login`).
                let login = async {
                    let turn = ctx.login_turn(&name).await?;
                    ctx.take_over(&turn).await?;
                    ctx.logged_in(&name).await
                };
                match login.await {
                    Ok(()) => Reply::ok(Bytes::copy_from_slice(&ctx.id().0.to_be_bytes())),
                    Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
                }
            }
            routes::PUSH_NUMBERS => {
                let Ok(count) = <[u8; 4]>::try_from(&payload[..]).map(u32::from_be_bytes) else {
                    return Reply::error(Status::BAD_REQUEST, "a u32 count");
                };
                let (server, id) = (ctx.server().clone(), ctx.id());
                tokio::spawn(async move {
                    for n in 0..count {
                        let number = Bytes::copy_from_slice(&n.to_be_bytes());
                        if server
                            .push_to(id, routes::PUSH_NUMBERS, number)
                            .await
                            .is_err()
                        {
                            return; // gone
                        }
                        if n % 10 == 9 {
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        }
                    }
                });
                Reply::empty()
            }
            routes::ECHO => Reply::ok(payload),
            routes::BROADCAST => match ctx.server().broadcast(routes::BROADCAST, payload).await {
                Ok(()) => Reply::empty(),
                Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
            },
            routes::COUNT => match ctx.server().count().await {
                Ok(n) => Reply::ok(Bytes::copy_from_slice(
                    &u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes(),
                )),
                Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
            },
            other => Reply::unknown_route(other),
        }
    }

    fn notify_now(
        &self,
        _counter: &mut u64,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Status> {
        (route == routes::ECHO).then(|| {
            ctx.push(routes::ECHO, payload.clone());
            Status::OK
        })
    }

    async fn notify(
        &self,
        _counter: &mut u64,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Status {
        match route {
            routes::ECHO => {
                ctx.push(routes::ECHO, payload);
                Status::OK
            }
            routes::BROADCAST => {
                // A notify has no one to tell that the hub is restarting; the
                // connection is being closed with `server_restart` anyway.
                let _ = ctx.server().broadcast(routes::BROADCAST, payload).await;
                Status::OK
            }
            _ => Status::UNKNOWN_ROUTE,
        }
    }

    async fn disconnect(&self, _counter: u64, _info: Disconnect) {}

    fn route_name(&self, route: u16) -> Option<&'static str> {
        match route {
            routes::ECHO => Some("echo"),
            routes::BROADCAST => Some("broadcast"),
            routes::COUNT => Some("count"),
            routes::LOGIN => Some("login"),
            routes::INCREMENT => Some("increment"),
            routes::PUSH_NUMBERS => Some("push_numbers"),
            _ => None,
        }
    }
}
