//! gatehouse: a supervised connection front end for game servers.
//!
//! One task per TCP connection, Erlang `{packet, 4}` framing, a hub for broadcast
//! and rooms, a DoS checker, timers, and a supervision tree that closes every
//! connection cleanly (running each disconnect hook once) when the hub crashes.
//! A game implements [`Service`]; [`Server::run`] serves it.
//!
//! Crate map:
//! - [`config`]: the TOML configuration, defaults, validation, `servers.csv`.
//! - [`protocol`]: the envelope inside each frame; pure, no I/O.
//! - `listener`: listening socket options, accept loop, admission at accept.
//! - `connection`: the per-connection task: read, dispatch, write, timers, close.
//! - `outbound`: a connection's byte-bounded mailbox and coalescing write queue.
//! - [`hub`]: the seed's `gs_svr`: registry, groups, broadcast, counts.
//! - `supervisor`: the restart tree and its intensity (drawn in its module doc).
//! - [`limits`]: the DoS checker and the connection caps.
//! - [`service`]: the trait a game implements and its handler context.
//! - [`stats`]: server-wide counters.
//! - [`bench_service`]: the built-in `bench` service.
//! - `server`: [`Server`], the entry point.

pub mod bench_service;
pub mod config;
mod connection;
pub mod hub;
pub mod limits;
/// The wire protocol (the `gatehouse-protocol` crate), re-exported.
pub use gatehouse_protocol as protocol;
mod listener;
mod outbound;
mod server;
pub mod service;
pub mod stats;
mod supervisor;

pub use config::Config;
pub use hub::{HubHandle, HubUnavailable};
pub use listener::bind;
pub use protocol::{KickReason, Message, Status};
pub use server::Server;
pub use service::{ConnId, Context, Disconnect, DisconnectReason, Reply, Service};
pub use supervisor::ServerError;
