//! gatehouse: a supervised connection front end for game servers.
//!
//! One task per connection over TCP, TLS or WebSocket, Erlang `{packet, 4}` framing, a hub for broadcast
//! and groups, a DoS checker, timers, and a supervision tree that closes every
//! connection cleanly (running each disconnect hook once) when the hub crashes; for
//! the game: login, supervised rooms with ticks, a [`ServerHandle`] that survives hub
//! restarts, and typed handlers. A game implements [`Service`]; a [`Server`] takes it
//! with the parts it owns (room registries, the store writer, the admin listener),
//! and [`Server::run`] serves it, then stops the parts in order.
//!
//! Fault isolation catches panics (`catch_unwind`): a panicking handler ends only its
//! connection, a panicking room only restarts. So panics must unwind: the crate
//! refuses to build with `panic = "abort"` (a compile error says why and what to
//! change; builds by cargo-fuzz, `cfg(fuzzing)`, pass).
//!
//! Crate map, from the bottom up (a module uses only those above it in this list):
//! - `panic_strategy`: the refusal to build with `panic = "abort"`.
//! - `sync`: the atomics, locks and waker of the hand-made concurrency (loom's in
//!   the model-checked tests).
//! - [`config`]: the runtime's configuration, defaults, validation.
//! - [`limits`]: inbound rates (the DoS checker) and admission caps.
//! - `connection`: one connection without I/O: the `ConnectionCore` state machine,
//!   its output queue and byte budget, [`DisconnectReason`].
//! - `guard`: panics caught as messages, OTP's restart intensity (every supervisor's).
//! - [`logs`]: the budget of log lines a flood can cause (for games too).
//! - [`timer`]: timers for sessions and rooms.
//! - `mailbox`: how the hub, rooms and timers reach a connection.
//! - [`cluster`]: one game across several processes: the [`cluster::ClusterLink`]
//!   seam, what crosses it, this node's outbox and view of the others, an
//!   in-process bus for tests.
//! - [`players`]: who is logged in until their disconnect hook has run; logins that
//!   take turns and take a player over ([`LoginTurn`]).
//! - `hub`: the seed's `gs_svr`: registry, groups, broadcast, counts; players by
//!   name through `players`.
//! - [`service`]: the trait a game implements and its handler [`Context`].
//! - [`room`]: supervised rooms with ticks ([`room::Rooms`], [`room::Room`]).
//! - [`typed`]: typed handlers over prost messages, errors as statuses.
//! - [`stats`]: server-wide counters.
//! - [`metrics`]: what a scrape reports (a [`metrics::Sample`]), handler latency.
//! - `group`: what the supervision tree's tasks share.
//! - `handle`: [`ServerHandle`], the game's one handle on the server, which
//!   survives hub restarts.
//! - `cluster_task`: the one task that awaits the cluster link: the outbox out,
//!   other nodes' messages in to the hub, heartbeats, player claims.
//! - `sessions`: the resumable sessions by id, for a resume to find its session.
//! - `driver`: the connection task, running a core over a transport (TCP, TLS,
//!   WebSocket); a resumable session's task outlives a lost connection.
//! - [`listener`]: listeners and what they speak, accept loops, TLS and WebSocket
//!   handshakes, refusals at accept.
//! - `supervisor`: the supervision tree and its restart intensity.
//! - `scrape` (feature `metrics`): reading the running server into a
//!   [`metrics::Sample`]; [`Metrics`], the embedder's handle on it.
//! - [`admin`]: the admin listener: health, readiness, metrics, the JSON API, the
//!   console.
//! - `server`: [`Server`], the entry point, and the parts it owns.
//! - [`bench_service`]: the built-in `bench` service.
//! - [`protocol`]: the wire protocol (the `gatehouse-protocol` crate).
//! - `fuzzing` (hidden; tests and the `fuzzing` feature): entry points for the fuzz
//!   targets in `fuzz/`.
//!
//! Cargo features, all on by default; an embedder that turns one off compiles none
//! of its dependencies:
//! - `tls`: TLS listeners (`tls://`; `wss://` with `websocket`), rustls.
//! - `websocket`: WebSocket listeners (`ws://`) and the pages they serve, tungstenite.
//! - `metrics`: Prometheus metrics ([`Server::metrics`], [`Server::add_collector`],
//!   the store writer's and the rooms' collectors), prometheus-client.
//! - `admin` (needs `metrics`): the admin listener ([`admin`]), axum and hyper.
//!
//! A listener configured for a transport that was left out is refused by
//! [`ListenerConfig::validate`] with the feature's name.

// Dead code is checked on the full build (all features, as CI lints it). A build
// that leaves a feature out keeps compiled the few helpers only that feature calls
// (the hub's census for a scrape, the WebSocket's frame path, handshake counters)
// rather than scattering a cfg over each.
#![cfg_attr(
    not(all(
        feature = "tls",
        feature = "websocket",
        feature = "admin",
        feature = "metrics"
    )),
    allow(dead_code)
)]

#[cfg(feature = "admin")]
pub mod admin;
pub mod bench_service;
pub mod cluster;
mod cluster_task;
pub mod config;
mod connection;
mod driver;
mod group;
mod guard;
mod handle;
mod hub;
pub mod limits;
pub mod listener;
pub mod logs;
mod mailbox;
pub mod metrics;
mod panic_strategy;
pub mod players;
pub mod room;
#[cfg(feature = "metrics")]
mod scrape;
mod server;
pub mod service;
mod sessions;
pub mod stats;
mod supervisor;
mod sync;
pub mod timer;
pub mod typed;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

/// The wire protocol (the `gatehouse-protocol` crate), re-exported.
pub use gatehouse_protocol as protocol;

pub use config::{Config, PerTransport};
pub use connection::{ConnId, DisconnectReason, Severity, TrafficCounts};
pub use handle::ServerHandle;
#[doc(hidden)]
pub use hub::bench_support;
pub use hub::{Census, ConnectionInfo, ConnectionPage, HandleError};
#[cfg(feature = "tls")]
pub use listener::Certificates;
pub use listener::{bind, Listener, ListenerConfig, Listeners, TransportKind};
pub use players::{LoginTurn, PlayerList, LOGIN_WAIT};
pub use protocol::{KickReason, Message, Status};
#[cfg(feature = "metrics")]
pub use scrape::Metrics;
pub use server::Server;
pub use service::{Context, Disconnect, Reply, Service};
pub use supervisor::ServerError;
