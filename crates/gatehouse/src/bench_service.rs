//! The built-in `bench` service (`gatehouse serve --service bench`): the smallest
//! useful service, for benchmarks, outside clients and as a first example.
//!
//! | route | name | request | notify |
//! |---|---|---|---|
//! | 1 | echo | response carries the payload back | pushed back on route 1 |
//! | 2 | broadcast | payload pushed on route 2 to every connection, then an empty response | same, no response |
//! | 3 | count | response payload: live connections, `u32` big-endian | — |

use bytes::Bytes;

use crate::service::{Context, Disconnect, Reply, Service};
use gatehouse_protocol::Status;

/// Route numbers of the bench service.
pub mod routes {
    /// Echo the payload.
    pub const ECHO: u16 = 1;
    /// Push the payload to every connection.
    pub const BROADCAST: u16 = 2;
    /// The number of live connections.
    pub const COUNT: u16 = 3;
}

/// The bench service; it keeps no per-connection state.
#[derive(Debug, Default, Clone, Copy)]
pub struct BenchService;

impl Service for BenchService {
    type Session = ();
    type Message = ();

    async fn connect(&self, _ctx: &mut Context<'_, ()>) {}

    /// Echo needs no future: it is answered on the fast path.
    fn request_now(
        &self,
        _session: &mut (),
        _ctx: &mut Context<'_, ()>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Reply> {
        (route == routes::ECHO).then(|| Reply::ok(payload.clone()))
    }

    async fn request(
        &self,
        _session: &mut (),
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
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
        _session: &mut (),
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
        _session: &mut (),
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

    async fn disconnect(&self, _session: (), _info: Disconnect) {}

    fn route_name(&self, route: u16) -> Option<&'static str> {
        match route {
            routes::ECHO => Some("echo"),
            routes::BROADCAST => Some("broadcast"),
            routes::COUNT => Some("count"),
            _ => None,
        }
    }
}
