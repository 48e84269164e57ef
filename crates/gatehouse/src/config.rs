//! The runtime's configuration: admission, the per-connection limits, supervision.
//!
//! Only what the runtime itself uses lives here; where to listen (a list of
//! [`crate::listener::ListenerConfig`]), which game to serve and where to save belong
//! to whoever embeds the runtime (the `gatehouse` binary keeps them in its own
//! sections of the same TOML file). Every key has a safe
//! default, so an empty file (or none) is a working server. Unknown keys are rejected
//! by serde with the key's name and position; values are checked by
//! [`Config::validate`], whose errors name the key and the allowed range. The
//! reference of every key is in the README's "Configuration" section.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use gatehouse_protocol::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN};

/// The runtime's configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: how many to admit, the hub's queue, fault injection.
    pub server: ServerConfig,
    /// `[limits]`: the DoS checker, timers and queues of each connection.
    pub limits: LimitsConfig,
    /// `[supervisor]`: restart intensity and shutdown.
    pub supervisor: SupervisorConfig,
    /// `[metrics]`: what the server measures.
    pub metrics: MetricsConfig,
    /// `[resume]`: how a session whose connection is lost is kept for its client.
    pub resume: ResumeConfig,
}

/// `[resume]`: session resume (`docs/PROTOCOL.md`, "session, resume, resumed and
/// ack"), for a service that opts in ([`Service::RESUMABLE`](crate::Service::RESUMABLE)):
/// its logged-in connections are offered a session, whose responses and pushes are
/// numbered and kept until the client acknowledges them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// How long a session whose connection was lost is kept for its client to come
    /// back (told to the client in the `session` frame); 0: no session is offered.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The most bytes of responses and pushes a session keeps until they are
    /// acknowledged, charged to `server.memory_budget_bytes`; past it the oldest go,
    /// and a client that lacks them cannot resume.
    pub buffer_bytes: usize,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig {
            window: Duration::from_secs(30),
            buffer_bytes: 256 * 1024,
        }
    }
}

/// Longest `resume.window`: the `session` frame carries it in milliseconds (u32),
/// and an hour is more than any network change takes.
pub const MAX_RESUME_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Smallest and largest `resume.buffer_bytes`. (A frame larger than the buffer is
/// sent, not kept: a client that lost it cannot resume.)
pub const MIN_RESUME_BUFFER: usize = 1024;
/// See [`MIN_RESUME_BUFFER`].
pub const MAX_RESUME_BUFFER: usize = 64 * 1024 * 1024;

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count every connection's frames and bytes and time every handler (see
    /// `docs/OPERATIONS.md`). Off, the per-frame and per-request work is skipped:
    /// traffic metrics and the connection list's byte counts stay at zero, handler
    /// latencies are not recorded; every other counter still moves.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Connections held at once; one more is accepted, kicked `server_full` and closed.
    pub max_connections: usize,
    /// Connections held at once from one IP address; one more is kicked
    /// `too_many_from_ip`.
    pub max_connections_per_ip: usize,
    /// IPv6 clients count against `max_connections_per_ip` by network, this many
    /// leading bits (64: one /64, what one subscriber is usually given); 128 counts
    /// single addresses. IPv4 always counts by address.
    pub ipv6_prefix_len: u8,
    /// Commands waiting for the hub; senders wait (backpressure) when it is full.
    pub hub_queue: usize,
    /// Bytes of pushes and broadcasts waiting for the hub, however few commands carry
    /// them; senders wait when it is full. At least one largest frame.
    pub hub_queue_bytes: usize,
    /// What clients may make the server buffer in all (partial input frames and
    /// unsent output), beyond 64 KiB of each per connection. When it is used up, a
    /// connection over its free share is refused more output (kicked
    /// `slow_consumer`) or stops reading its large frame until memory is freed.
    pub memory_budget_bytes: usize,
    /// Enables the framework's fault-injection routes (crash the hub, panic a
    /// handler). For tests and drills only.
    pub allow_fault_injection: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            ipv6_prefix_len: 64,
            hub_queue: 65_536,
            hub_queue_bytes: 64 << 20,
            memory_budget_bytes: 1 << 30,
            allow_fault_injection: false,
        }
    }
}

/// `[limits]`: the seed's DoS checker and connection timer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame body; a header announcing more closes the connection
    /// (`frame_too_large`) before any of the body is read.
    pub max_frame_bytes: usize,
    /// Sustained inbound bytes per second per connection (headers included).
    pub inbound_bytes_per_sec: u32,
    /// Inbound bytes a connection may send at once before the rate applies.
    pub inbound_bytes_burst: u32,
    /// Sustained inbound frames per second per connection.
    pub inbound_frames_per_sec: u32,
    /// Inbound frames a connection may send at once before the rate applies.
    pub inbound_frames_burst: u32,
    /// A connection that sends no frame this long after connecting is closed
    /// (`login_timeout`): the slowloris guard.
    #[serde(with = "humantime_serde")]
    pub first_frame_timeout: Duration,
    /// A TLS handshake or WebSocket upgrade not done this long after the connection
    /// was accepted is dropped (no kick: the client cannot read one yet).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// For a service that requires a login ([`Service::LOGIN_REQUIRED`]), a
    /// connection not logged in ([`Context::logged_in`]) this long after connecting is
    /// closed (`login_timeout`), however many frames it sends.
    ///
    /// [`Service::LOGIN_REQUIRED`]: crate::Service::LOGIN_REQUIRED
    /// [`Context::logged_in`]: crate::Context::logged_in
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// A connection that sends no frame this long is closed (`idle`). Only inbound
    /// frames reset it; clients send pings to stay connected.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Unsent bytes a connection may have queued; more and it is kicked
    /// `slow_consumer`.
    pub outbound_queue_bytes: usize,
    /// Queued output making no progress this long closes the connection.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// A handler running longer is dropped and its connection closed
    /// (`internal_error`): a stuck handler must not hold a connection forever.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// How long a closing connection may take to deliver its kick and see the peer
    /// close, before the socket is dropped.
    #[serde(with = "humantime_serde")]
    pub close_linger: Duration,
    /// A session its game marked dirty ([`crate::Context::mark_dirty`]) is
    /// checkpointed ([`crate::Service::checkpoint`]) at most this long after the
    /// change: the most acknowledged state a crash of the whole process can lose.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// The longest the `connect` hook may take; past it the connection is closed
    /// (`internal_error`) without a session.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest the `disconnect` hook may take; past it the hook is dropped,
    /// logged and counted (a game queues its save before anything that can wait).
    #[serde(with = "humantime_serde")]
    pub disconnect_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_LEN,
            inbound_bytes_per_sec: 1 << 20,
            inbound_bytes_burst: 2 << 20,
            inbound_frames_per_sec: 200,
            inbound_frames_burst: 400,
            first_frame_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            outbound_queue_bytes: 1 << 20,
            send_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(30),
            close_linger: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            disconnect_timeout: Duration::from_secs(10),
        }
    }
}

/// `[supervisor]`: OTP's restart intensity and the graceful shutdown.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// More than this many hub restarts within `restart_window` shuts the server down
    /// with an error (exit non-zero) for systemd or Kubernetes to restart it.
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// On shutdown, how long to wait for connections to be kicked and their disconnect
    /// hooks to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// When a drain or shutdown begins, how long the server goes on accepting and
    /// serving while `/readyz` already answers 503, so that a load balancer stops
    /// sending new clients before the listeners close (0: close at once). Only with
    /// an admin listener: without one nothing can see the server turn not ready.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 3,
            restart_window: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(3),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (the message names it).
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value outside its allowed range.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `limits.max_frame_bytes`.
        key: &'static str,
        /// What is allowed.
        message: String,
    },
}

/// Largest `max_frame_bytes` accepted: 16 MiB, far above any game message.
const MAX_FRAME_CEILING: usize = 16 << 20;

/// Smallest `max_frame_bytes` accepted: room for the frames the framework itself
/// sends whatever the game does (a pong to the longest ping, 65 bytes; an error
/// response; a kick with a readable text), so that none of them is ever over it.
pub const MAX_FRAME_FLOOR: usize = 128;

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let s = &self.server;
        let l = &self.limits;
        let v = &self.supervisor;
        if s.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1".into());
        }
        if s.max_connections_per_ip == 0 {
            return invalid("server.max_connections_per_ip", "must be at least 1".into());
        }
        if !(1..=128).contains(&s.ipv6_prefix_len) {
            return invalid("server.ipv6_prefix_len", "must be from 1 to 128".into());
        }
        if s.hub_queue == 0 {
            return invalid("server.hub_queue", "must be at least 1".into());
        }
        if !(MAX_FRAME_FLOOR..=MAX_FRAME_CEILING).contains(&l.max_frame_bytes) {
            return invalid(
                "limits.max_frame_bytes",
                format!(
                    "{} is out of range: must be between {MAX_FRAME_FLOOR} and {MAX_FRAME_CEILING}",
                    l.max_frame_bytes
                ),
            );
        }
        let largest_frame = l.max_frame_bytes + HEADER_LEN;
        for (key, value) in [
            ("limits.inbound_bytes_per_sec", l.inbound_bytes_per_sec),
            ("limits.inbound_frames_per_sec", l.inbound_frames_per_sec),
            ("limits.inbound_frames_burst", l.inbound_frames_burst),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if (l.inbound_bytes_burst as usize) < largest_frame {
            return invalid(
                "limits.inbound_bytes_burst",
                format!(
                    "{} is smaller than one largest frame ({largest_frame} bytes = max_frame_bytes + 4), so such a frame could never pass",
                    l.inbound_bytes_burst
                ),
            );
        }
        if s.memory_budget_bytes < largest_frame {
            return invalid(
                "server.memory_budget_bytes",
                format!(
                    "{} is smaller than one largest frame ({largest_frame} bytes)",
                    s.memory_budget_bytes
                ),
            );
        }
        if s.hub_queue_bytes < largest_frame {
            return invalid(
                "server.hub_queue_bytes",
                format!(
                    "{} is smaller than one largest frame ({largest_frame} bytes)",
                    s.hub_queue_bytes
                ),
            );
        }
        if l.outbound_queue_bytes < largest_frame {
            return invalid(
                "limits.outbound_queue_bytes",
                format!(
                    "{} is smaller than one largest frame ({largest_frame} bytes)",
                    l.outbound_queue_bytes
                ),
            );
        }
        let r = &self.resume;
        if r.window > MAX_RESUME_WINDOW {
            return invalid("resume.window", "must be at most an hour".into());
        }
        if !(MIN_RESUME_BUFFER..=MAX_RESUME_BUFFER).contains(&r.buffer_bytes) {
            return invalid(
                "resume.buffer_bytes",
                format!(
                    "{} is out of range: must be between {MIN_RESUME_BUFFER} and {MAX_RESUME_BUFFER}",
                    r.buffer_bytes
                ),
            );
        }
        for (key, value) in [
            ("limits.first_frame_timeout", l.first_frame_timeout),
            ("limits.handshake_timeout", l.handshake_timeout),
            ("limits.login_timeout", l.login_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.send_timeout", l.send_timeout),
            ("limits.handler_timeout", l.handler_timeout),
            ("limits.close_linger", l.close_linger),
            ("limits.checkpoint_interval", l.checkpoint_interval),
            ("limits.connect_timeout", l.connect_timeout),
            ("limits.disconnect_timeout", l.disconnect_timeout),
            ("supervisor.restart_window", v.restart_window),
            ("supervisor.drain_timeout", v.drain_timeout),
        ] {
            if value.is_zero() {
                return invalid(key, "must be longer than zero".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_file_is_the_safe_default() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.limits.max_frame_bytes, 262_144);
        assert!(!c.server.allow_fault_injection);
    }

    #[test]
    fn a_resume_window_over_an_hour_or_a_buffer_out_of_range_is_refused_by_name() {
        let window = error_of("[resume]\nwindow = \"2h\"\n");
        assert!(window.starts_with("resume.window: "), "{window}");
        let buffer = error_of("[resume]\nbuffer_bytes = 100\n");
        assert!(buffer.starts_with("resume.buffer_bytes: "), "{buffer}");
        let off = Config::from_toml_str("[resume]\nwindow = \"0s\"\n").unwrap();
        assert!(off.resume.window.is_zero());
    }

    #[test]
    fn durations_are_human_readable() {
        let c = Config::from_toml_str("[limits]\nidle_timeout = \"1m 30s\"\n").unwrap();
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(90));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        assert!(error_of("[server]\nprot = 1\n").contains("unknown field `prot`"));
        assert!(error_of("[limitz]\n").contains("unknown field `limitz`"));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(error_of("[server]\nmax_connections = -1\n").contains("max_connections"));
        assert!(error_of("[server]\nmax_connections = 0\n").starts_with("server.max_connections"));
        assert!(error_of("[limits]\nmax_frame_bytes = 0\n").starts_with("limits.max_frame_bytes"));
        assert!(error_of("[limits]\nidle_timeout = \"0s\"\n").starts_with("limits.idle_timeout"));
        assert!(error_of("[limits]\nidle_timeout = \"soon\"\n").contains("idle_timeout"));
        assert!(error_of("[limits]\ninbound_bytes_burst = 1000\n")
            .starts_with("limits.inbound_bytes_burst"));
    }

    #[test]
    fn a_frame_limit_too_small_for_the_frameworks_own_frames_is_refused() {
        // Found by the property tests: at max_frame_bytes = 1 a kick (3 bytes at
        // least) went out over the maximum, and at 10 an answer too large for a frame
        // recursed into its own error response until the stack overflowed.
        assert!(error_of("[limits]\nmax_frame_bytes = 127\n").starts_with("limits.max_frame_bytes"));
        assert!(Config::from_toml_str("[limits]\nmax_frame_bytes = 128\n").is_ok());
    }

    #[test]
    fn per_transport_values_are_indexed_in_the_order_of_every_transport() {
        // PerTransport indexes by discriminant: ALL must list them in that order.
        for (i, transport) in TransportKind::ALL.into_iter().enumerate() {
            assert_eq!(transport as usize, i, "{transport}");
        }
        let schemes = PerTransport::from_fn(TransportKind::scheme);
        assert_eq!(schemes[TransportKind::Wss], "wss");
        let listed: Vec<_> = schemes.iter().map(|(t, s)| (t.scheme(), *s)).collect();
        assert!(listed.iter().all(|(a, b)| a == b), "{listed:?}");
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TransportKind {
    /// `{packet, 4}` frames over plain TCP.
    Tcp,
    /// `{packet, 4}` frames over TLS 1.2/1.3.
    Tls,
    /// One envelope per binary WebSocket message, over plain HTTP.
    Ws,
    /// WebSocket over TLS (`wss://`).
    Wss,
}

impl TransportKind {
    /// The URL scheme clients use for it (`tcp`, `tls`, `ws`, `wss`).
    pub fn scheme(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    /// Whether it runs over TLS (needs a certificate).
    pub fn is_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    /// Every transport, in the order of their discriminants (which index
    /// [`PerTransport`]).
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ];

    /// Whether it speaks WebSocket (HTTP upgrade, origins, pages).
    pub fn is_websocket(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }

    /// The cargo features it needs that this build of gatehouse was made without
    /// (`tls`, `websocket`, or both, as `tls` and `websocket`); `None` if it can serve.
    pub fn missing_feature(self) -> Option<&'static str> {
        let tls = !self.is_tls() || cfg!(feature = "tls");
        let websocket = !self.is_websocket() || cfg!(feature = "websocket");
        match (tls, websocket) {
            (true, true) => None,
            (false, true) => Some("`tls`"),
            (true, false) => Some("`websocket`"),
            (false, false) => Some("`tls` and `websocket`"),
        }
    }
}

/// One `T` per transport, indexed by [`TransportKind`]: per-transport counters and
/// gauges. A new transport is a new [`TransportKind`], not a new array size.
///
/// ```
/// use gatehouse::{PerTransport, TransportKind};
///
/// let mut open = PerTransport::<u64>::default();
/// open[TransportKind::Ws] += 1;
/// assert_eq!(open.iter().map(|(_, n)| n).sum::<u64>(), 1);
/// assert_eq!(open[TransportKind::Tcp], 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerTransport<T>([T; TransportKind::ALL.len()]);

impl<T> PerTransport<T> {
    /// Each transport's value, made by `value`.
    pub fn from_fn(mut value: impl FnMut(TransportKind) -> T) -> Self {
        PerTransport(TransportKind::ALL.map(&mut value))
    }

    /// Each transport with its value, in the order of [`TransportKind::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (TransportKind, &T)> {
        TransportKind::ALL.into_iter().zip(self.0.iter())
    }

    /// The values, mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> PerTransport<U> {
        PerTransport(self.0.map(f))
    }
}

impl<T> std::ops::Index<TransportKind> for PerTransport<T> {
    type Output = T;

    fn index(&self, transport: TransportKind) -> &T {
        &self.0[transport as usize]
    }
}

impl<T> std::ops::IndexMut<TransportKind> for PerTransport<T> {
    fn index_mut(&mut self, transport: TransportKind) -> &mut T {
        &mut self.0[transport as usize]
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

impl FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "tcp" => TransportKind::Tcp,
            "tls" => TransportKind::Tls,
            "ws" => TransportKind::Ws,
            "wss" => TransportKind::Wss,
            other => return Err(format!("unknown transport `{other}` (tcp, tls, ws, wss)")),
        })
    }
}
