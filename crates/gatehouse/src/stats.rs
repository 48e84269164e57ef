//! Server-wide counters: what was accepted (per transport), refused, closed and why,
//! which kicks were sent, what closed connections carried, how many disconnect hooks
//! and checkpoints ran, which hooks timed out, and how handshakes went. Relaxed
//! atomics, read as a [`StatsSnapshot`]; the binary logs one at shutdown, tests
//! assert on them, and the metrics ([`crate::metrics`]) export them.
//!
//! Nothing here is touched per frame: each counter moves once per connection or
//! rarer. Live connections' traffic is on their own meters; what a connection
//! carried is added here when it ends.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use gatehouse_protocol::KickReason;

use crate::config::{PerTransport, TransportKind};
use crate::connection::{DisconnectReason, TrafficCounts};
use crate::limits::Refusal;

/// The `reason` label of a disconnect, in the order of
/// [`StatsSnapshot::disconnects`]; see [`disconnect_label`].
pub const DISCONNECT_REASONS: [&str; 15] = [
    "peer_closed",
    "socket_error",
    "send_timeout",
    "handler_panic",
    "handler_timeout",
    "login_timeout",
    "idle",
    "dos",
    "frame_too_large",
    "protocol_error",
    "slow_consumer",
    "kicked",
    "shutdown",
    "server_restart",
    "resumed",
];

/// The `reason` label of a kick sent, in the order of [`StatsSnapshot::kicks`]:
/// index = the kick code for the framework's reasons, `game` (index 0) for a game's
/// own codes.
pub const KICK_REASONS: [&str; 16] = [
    "game",
    "idle",
    "dos",
    "server_full",
    "shutdown",
    "server_restart",
    "duplicate_login",
    "protocol_error",
    "slow_consumer",
    "frame_too_large",
    "login_timeout",
    "too_many_from_ip",
    "internal_error",
    "kicked",
    "room_closed",
    "resume_failed",
];

/// The `reason` label of a refusal at accept, in the order of
/// [`StatsSnapshot::refusals`].
pub const REFUSAL_REASONS: [&str; 2] = ["server_full", "too_many_from_ip"];

/// Where `reason` is counted in [`DISCONNECT_REASONS`].
pub fn disconnect_label(reason: &DisconnectReason) -> usize {
    match reason {
        DisconnectReason::PeerClosed => 0,
        DisconnectReason::SocketError(_) => 1,
        DisconnectReason::SendTimeout => 2,
        DisconnectReason::HandlerPanic => 3,
        DisconnectReason::HandlerTimeout => 4,
        DisconnectReason::LoginTimeout => 5,
        DisconnectReason::Idle => 6,
        DisconnectReason::Dos => 7,
        DisconnectReason::FrameTooLarge => 8,
        DisconnectReason::ProtocolError => 9,
        DisconnectReason::SlowConsumer => 10,
        DisconnectReason::Kicked(_) => 11,
        DisconnectReason::Shutdown => 12,
        DisconnectReason::ServerRestart => 13,
        DisconnectReason::Resumed => 14,
    }
}

/// Where `refusal` is counted in [`REFUSAL_REASONS`].
fn refusal_label(refusal: Refusal) -> usize {
    match refusal {
        Refusal::ServerFull => 0,
        Refusal::TooManyFromIp => 1,
    }
}

/// Where `kick` is counted in [`KICK_REASONS`].
pub fn kick_label(kick: KickReason) -> usize {
    let code = usize::from(kick.0);
    if code < KICK_REASONS.len() {
        code
    } else {
        0
    }
}

/// Live counters, shared by every task of a server.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: PerTransport<AtomicU64>,
    refusals: [AtomicU64; REFUSAL_REASONS.len()],
    disconnects: [AtomicU64; DISCONNECT_REASONS.len()],
    kicks: [AtomicU64; KICK_REASONS.len()],
    /// What closed connections carried: frames in, bytes in, frames out, bytes out.
    closed_traffic: PerTransport<[AtomicU64; 4]>,
    disconnect_hooks: AtomicU64,
    hub_restarts: AtomicU64,
    hook_timeouts: AtomicU64,
    checkpoints: AtomicU64,
    sessions_detached: AtomicU64,
    sessions_resumed: AtomicU64,
    handshake_failures: PerTransport<AtomicU64>,
    handshake_timeouts: PerTransport<AtomicU64>,
    pages_served: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections admitted.
    pub accepted: u64,
    /// Connections admitted, per transport.
    pub accepted_by_transport: PerTransport<u64>,
    /// Connections refused at `max_connections`.
    pub refused_server_full: u64,
    /// Connections refused at `max_connections_per_ip`.
    pub refused_per_ip: u64,
    /// Refusals by [`REFUSAL_REASONS`].
    pub refusals: [u64; REFUSAL_REASONS.len()],
    /// Admitted connections that have ended.
    pub closed: u64,
    /// Ended connections by [`DISCONNECT_REASONS`].
    pub disconnects: [u64; DISCONNECT_REASONS.len()],
    /// Kicks sent to admitted connections by [`KICK_REASONS`].
    pub kicks: [u64; KICK_REASONS.len()],
    /// What connections that have ended carried, per transport.
    pub closed_traffic: PerTransport<TrafficCounts>,
    /// Disconnect hooks that ran (one per session).
    pub disconnect_hooks: u64,
    /// Hub restarts after a crash.
    pub hub_restarts: u64,
    /// Connections closed for an oversized frame header.
    pub frames_too_large: u64,
    /// Connections closed for a malformed envelope.
    pub protocol_errors: u64,
    /// Connections closed for exceeding the inbound rates.
    pub dos_kicks: u64,
    /// Connections closed because they did not read.
    pub slow_consumers: u64,
    /// Connections closed because a write made no progress.
    pub send_timeouts: u64,
    /// Connections closed for idleness.
    pub idle_kicks: u64,
    /// Connections closed for sending no first frame.
    pub login_timeouts: u64,
    /// Handlers that panicked.
    pub handler_panics: u64,
    /// Handlers dropped for running past `limits.handler_timeout`.
    pub handler_timeouts: u64,
    /// `connect` or `disconnect` hooks dropped for running past their timeout.
    pub hook_timeouts: u64,
    /// Checkpoints of dirty sessions.
    pub checkpoints: u64,
    /// Resumable sessions whose connection was lost, kept for a resume.
    pub sessions_detached: u64,
    /// Sessions a new connection resumed.
    pub sessions_resumed: u64,
    /// TLS handshakes and WebSocket upgrades that failed (a bad certificate, not
    /// TLS, a malformed or refused HTTP request, a page of another origin).
    pub handshake_failures: u64,
    /// Handshake failures per transport.
    pub handshake_failures_by_transport: PerTransport<u64>,
    /// Handshakes not done within `limits.handshake_timeout`.
    pub handshake_timeouts: u64,
    /// Handshake timeouts per transport.
    pub handshake_timeouts_by_transport: PerTransport<u64>,
    /// Plain HTTP requests answered by a WebSocket listener (pages and 404s).
    pub pages_served: u64,
}

fn read<const N: usize>(counters: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counters[i].load(Relaxed))
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let disconnects = read(&self.disconnects);
        let refusals = read(&self.refusals);
        let per_transport = |counters: &PerTransport<AtomicU64>| {
            PerTransport::from_fn(|t| counters[t].load(Relaxed))
        };
        let accepted_by_transport = per_transport(&self.accepted);
        let handshake_failures_by_transport = per_transport(&self.handshake_failures);
        let handshake_timeouts_by_transport = per_transport(&self.handshake_timeouts);
        let count = |reason: DisconnectReason| disconnects[disconnect_label(&reason)];
        StatsSnapshot {
            accepted: accepted_by_transport.iter().map(|(_, n)| n).sum(),
            accepted_by_transport,
            refused_server_full: refusals[refusal_label(Refusal::ServerFull)],
            refused_per_ip: refusals[refusal_label(Refusal::TooManyFromIp)],
            refusals,
            closed: disconnects.iter().sum(),
            disconnects,
            kicks: read(&self.kicks),
            closed_traffic: PerTransport::from_fn(|t| {
                TrafficCounts::from_array(read(&self.closed_traffic[t]))
            }),
            disconnect_hooks: self.disconnect_hooks.load(Relaxed),
            hub_restarts: self.hub_restarts.load(Relaxed),
            frames_too_large: count(DisconnectReason::FrameTooLarge),
            protocol_errors: count(DisconnectReason::ProtocolError),
            dos_kicks: count(DisconnectReason::Dos),
            slow_consumers: count(DisconnectReason::SlowConsumer),
            send_timeouts: count(DisconnectReason::SendTimeout),
            idle_kicks: count(DisconnectReason::Idle),
            login_timeouts: count(DisconnectReason::LoginTimeout),
            handler_panics: count(DisconnectReason::HandlerPanic),
            handler_timeouts: count(DisconnectReason::HandlerTimeout),
            hook_timeouts: self.hook_timeouts.load(Relaxed),
            checkpoints: self.checkpoints.load(Relaxed),
            sessions_detached: self.sessions_detached.load(Relaxed),
            sessions_resumed: self.sessions_resumed.load(Relaxed),
            handshake_failures: handshake_failures_by_transport.iter().map(|(_, n)| n).sum(),
            handshake_failures_by_transport,
            handshake_timeouts: handshake_timeouts_by_transport.iter().map(|(_, n)| n).sum(),
            handshake_timeouts_by_transport,
            pages_served: self.pages_served.load(Relaxed),
        }
    }

    pub(crate) fn count_accept(&self, transport: TransportKind) {
        self.accepted[transport].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_refusal(&self, refusal: Refusal) {
        self.refusals[refusal_label(refusal)].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_handshake_failure(&self, transport: TransportKind) {
        self.handshake_failures[transport].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_handshake_timeout(&self, transport: TransportKind) {
        self.handshake_timeouts[transport].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_page_served(&self) {
        self.pages_served.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_hub_restart(&self) {
        self.hub_restarts.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_disconnect_hook(&self) {
        self.disconnect_hooks.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_hook_timeout(&self) {
        self.hook_timeouts.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_checkpoint(&self) {
        self.checkpoints.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_detached(&self) {
        self.sessions_detached.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_resumed(&self) {
        self.sessions_resumed.fetch_add(1, Relaxed);
    }

    /// A connection ended for `reason` (with the kick it was sent, if any).
    pub(crate) fn count_close(&self, reason: &DisconnectReason) {
        self.disconnects[disconnect_label(reason)].fetch_add(1, Relaxed);
        if let Some(kick) = reason.kick() {
            self.kicks[kick_label(kick)].fetch_add(1, Relaxed);
        }
    }

    /// What an ended connection carried, once it sent its last byte.
    pub(crate) fn count_closed_traffic(&self, transport: TransportKind, traffic: TrafficCounts) {
        let counters = &self.closed_traffic[transport];
        for (counter, value) in counters.iter().zip(traffic.to_array()) {
            counter.fetch_add(value, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kick_name_is_its_codes_label() {
        for (code, label) in KICK_REASONS.iter().enumerate().skip(1) {
            let kick = KickReason(u16::try_from(code).unwrap_or(0));
            assert_eq!(kick.name(), Some(*label));
            assert_eq!(kick_label(kick), code);
        }
        assert_eq!(KICK_REASONS[kick_label(KickReason(1000))], "game");
    }

    #[test]
    fn every_disconnect_reason_is_counted_under_its_own_label_and_its_kick() {
        let stats = Stats::default();
        stats.count_close(&DisconnectReason::Dos);
        stats.count_close(&DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN));
        stats.count_close(&DisconnectReason::PeerClosed);
        let s = stats.snapshot();
        assert_eq!((s.closed, s.dos_kicks), (3, 1));
        assert_eq!(
            s.disconnects[disconnect_label(&DisconnectReason::PeerClosed)],
            1
        );
        assert_eq!(
            DISCONNECT_REASONS[disconnect_label(&DisconnectReason::Dos)],
            "dos"
        );
        assert_eq!(s.kicks[kick_label(KickReason::DOS)], 1);
        assert_eq!(s.kicks[kick_label(KickReason::DUPLICATE_LOGIN)], 1);
        assert_eq!(
            s.kicks.iter().sum::<u64>(),
            2,
            "a peer that left got no kick"
        );
    }
}
