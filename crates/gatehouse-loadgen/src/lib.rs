//! gatehouse-loadgen: the load-generation engine behind `gatehouse bench`. Four
//! scenarios that measure a server speaking the bench service (`docs/PROTOCOL.md`),
//! written to cost the machine as little as possible, since the generator often shares
//! it with the server, over any transport a server listens on. It depends on the
//! protocol crate, tokio, rustls and tungstenite, not on the server.
//!
//! - [`echo`]: C connections each keeping D pipelined echo requests in flight;
//!   requests/s and latency percentiles; every response is checked against its
//!   request (id and payload).
//! - [`idle`]: N connections held open and idle (heartbeats only), each proven alive
//!   at the end; with the server's pid, its RSS per connection and its idle CPU.
//! - [`storm`]: N simultaneous connects; time until every one is answered.
//! - [`broadcast`]: N listeners, one sender; time until every listener has each push,
//!   and how many never got it.
//! - [`resume`]: N sessions, each with a replay of unacknowledged answers, dropped and
//!   resumed at once; each resume's time to its last replayed frame, and all of them.
//!
//! Only the envelope's bench subset is used (requests on routes 1–3, pings), and
//! nothing a gatehouse server alone does: a connection that ends without a kick, a
//! server that sends timers or frames of its own, responses out of order, all are
//! handled. So the same engine measures gatehouse, the Erlang anchor
//! (`bench/erlang`) and the bare tokio limit (`bench/limit-server`).
//!
//! How it stays lean: one task per connection, owning its socket, a read buffer and
//! (for echo) a preallocated output buffer in which requests are encoded in place; no
//! allocation per request; one clock read per batch of frames; counters are local to
//! a task and summed at the end; progress goes through a few atomics ([`Progress`])
//! that a caller may draw. The engine runs on whatever runtime it is given; the
//! `gatehouse bench` binary gives it a current-thread runtime (one core at most).
//!
//! Clients bind their source address to 127.x.y.z when the target is on loopback
//! (see [`Sources`]), a block chosen at random per run, so that neither ephemeral
//! ports nor the TIME_WAIT sockets of an earlier run limit a test.
//!
//! Crate map:
//! - [`echo`], [`idle`], [`storm`], [`broadcast`], [`resume`]: the scenarios.
//! - [`procfs`]: a process's RSS and CPU time from `/proc`.
//! - `wire`: the frame reader and the few frames the generator writes and reads.
//! - `net`: connecting from a chosen source address, ping and pong.
//! - [`transport`]: TCP, TLS, WebSocket and wss, all as one stream of frames.

pub mod broadcast;
pub mod echo;
pub mod idle;
mod net;
pub mod procfs;
pub mod resume;
pub mod storm;
pub mod transport;
mod wire;

pub use transport::Transport;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a scenario could not run at all (a scenario that ran reports its failures in
/// its counts instead).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options make no sense (zero connections, a payload too large…).
    #[error("invalid options: {0}")]
    Invalid(String),
    /// Not one connection could be opened.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// The first connect error.
        error: String,
    },
    /// The server did something that stops the scenario (e.g. a broadcast sender was
    /// closed).
    #[error("{0}")]
    Server(String),
}

/// Which local addresses the generator's sockets bind to.
///
/// A TCP connection is identified by its four-tuple, so one source address reaches a
/// server port at most ~28,000 times at once (the ephemeral range 32768–60999), and
/// fewer once earlier runs leave sockets in TIME_WAIT. On loopback any 127.x.y.z is
/// local, so connection `i` binds to the `i / per_address`-th address of a block
/// starting at `first`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sources {
    /// The first source address; `None` lets the kernel choose (non-loopback targets).
    pub first: Option<Ipv4Addr>,
    /// Connections per source address.
    pub per_address: usize,
}

impl Sources {
    /// Connections per source address unless told otherwise: far from the ~28,000
    /// ephemeral ports of one address.
    pub const DEFAULT_PER_ADDRESS: usize = 5_000;

    /// For `target`: a random block of 127/8 when it is on loopback (127.r.s.1, with r
    /// in 1..=254 so that 127.0.0.x, which tests use, is left alone), none otherwise.
    pub fn for_target(target: SocketAddr, per_address: usize) -> Sources {
        let first = match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {
                let random = random_u64();
                let [_, _, _, _, _, _, r, s] = random.to_be_bytes();
                Some(Ipv4Addr::new(127, 1 + r % 254, s, 1))
            }
            _ => None,
        };
        Sources {
            first,
            per_address: per_address.max(1),
        }
    }

    /// The source address of connection `index`.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        let first = self.first?;
        let step = u32::try_from(index / self.per_address).unwrap_or(u32::MAX);
        Some(IpAddr::V4(Ipv4Addr::from(
            u32::from(first).saturating_add(step),
        )))
    }
}

/// A random number without a dependency: the standard library seeds each
/// `RandomState` from the OS once per process and varies it per instance.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Latency percentiles in microseconds (from an HdrHistogram with 3 significant
/// digits, recorded in nanoseconds).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// Summarises a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Percentiles {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// A histogram of nanoseconds from 1 ns to one hour, 3 significant digits; values
/// above are clamped.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Invariant: these bounds are valid (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}"))
}

/// Records a duration in nanoseconds.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// What the engine is doing, for a caller to draw (progress bars) from another
/// thread. Phases are either counted (`done` of `total` items) or timed (the elapsed
/// milliseconds of a known duration).
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<PhaseState>,
    done: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct PhaseState {
    name: &'static str,
    total: u64,
    timed_since: Option<Instant>,
    generation: u64,
}

/// A look at the current phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseSnapshot {
    /// Short name ("connect", "measure", …); empty before the first phase.
    pub name: &'static str,
    /// Items (or milliseconds, for a timed phase) in the phase.
    pub total: u64,
    /// Items done (or milliseconds elapsed).
    pub done: u64,
    /// Whether `total` and `done` are milliseconds.
    pub timed: bool,
    /// Changes with every new phase.
    pub generation: u64,
}

impl Progress {
    /// Starts a phase of `total` items.
    pub fn counted(&self, name: &'static str, total: u64) {
        self.start(name, total, None);
    }

    /// Starts a phase lasting `length`.
    pub fn timed(&self, name: &'static str, length: Duration) {
        let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        self.start(name, ms, Some(Instant::now()));
    }

    fn start(&self, name: &'static str, total: u64, timed_since: Option<Instant>) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        phase.name = name;
        phase.total = total;
        phase.timed_since = timed_since;
        phase.generation += 1;
        self.done.store(0, Ordering::Relaxed);
    }

    /// Counts `n` items done in the current phase.
    pub fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The current phase.
    pub fn snapshot(&self) -> PhaseSnapshot {
        let phase = self
            .phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let done = match phase.timed_since {
            Some(since) => u64::try_from(since.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .min(phase.total),
            None => self.done.load(Ordering::Relaxed),
        };
        PhaseSnapshot {
            name: phase.name,
            total: phase.total,
            done,
            timed: phase.timed_since.is_some(),
            generation: phase.generation,
        }
    }
}

/// Seconds as a float, for reports.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_connections_over_addresses_in_a_loopback_block() {
        let target: SocketAddr = ([127, 0, 0, 1], 7000).into();
        let sources = Sources::for_target(target, 3);
        let first = sources.first.expect("loopback target binds sources");
        assert_eq!(first.octets()[0], 127);
        assert_ne!(first.octets()[1], 0, "127.0.0.x is left to the tests");
        assert_eq!(sources.source(0), Some(IpAddr::V4(first)));
        assert_eq!(sources.source(2), Some(IpAddr::V4(first)));
        let next = Ipv4Addr::from(u32::from(first) + 1);
        assert_eq!(sources.source(3), Some(IpAddr::V4(next)));
        let remote: SocketAddr = ([192, 0, 2, 1], 7000).into();
        assert_eq!(Sources::for_target(remote, 3).source(0), None);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let p = Percentiles::from_histogram(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_us - 990.0).abs() < 2.0, "{p:?}");
        assert!((p.max_us - 1000.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn timed_phases_report_elapsed_milliseconds() {
        let progress = Progress::default();
        progress.counted("connect", 10);
        progress.advance(4);
        let s = progress.snapshot();
        assert_eq!(
            (s.name, s.total, s.done, s.timed),
            ("connect", 10, 4, false)
        );
        progress.timed("measure", Duration::from_secs(60));
        let s = progress.snapshot();
        assert!(s.timed && s.done < 1_000 && s.total == 60_000);
        assert_eq!(s.generation, 2);
    }
}
