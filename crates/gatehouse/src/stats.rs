//! Server-wide counters: what was accepted, refused, closed and why, how many
//! disconnect hooks and checkpoints ran, which hooks timed out, and how handshakes went. Relaxed atomics, read as a [`StatsSnapshot`]; the
//! binary logs one at shutdown, tests assert on them, a metrics exporter can poll it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::connection::DisconnectReason;
use crate::limits::Refusal;

/// Live counters, shared by every task of a server.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    refused_server_full: AtomicU64,
    refused_per_ip: AtomicU64,
    closed: AtomicU64,
    disconnect_hooks: AtomicU64,
    hub_restarts: AtomicU64,
    frames_too_large: AtomicU64,
    protocol_errors: AtomicU64,
    dos_kicks: AtomicU64,
    slow_consumers: AtomicU64,
    send_timeouts: AtomicU64,
    idle_kicks: AtomicU64,
    login_timeouts: AtomicU64,
    handler_panics: AtomicU64,
    handler_timeouts: AtomicU64,
    hook_timeouts: AtomicU64,
    checkpoints: AtomicU64,
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
    pages_served: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections admitted.
    pub accepted: u64,
    /// Connections refused at `max_connections`.
    pub refused_server_full: u64,
    /// Connections refused at `max_connections_per_ip`.
    pub refused_per_ip: u64,
    /// Admitted connections that have ended.
    pub closed: u64,
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
    /// TLS handshakes and WebSocket upgrades that failed (a bad certificate, not
    /// TLS, a malformed or refused HTTP request, a page of another origin).
    pub handshake_failures: u64,
    /// Handshakes not done within `limits.handshake_timeout`.
    pub handshake_timeouts: u64,
    /// Plain HTTP requests answered by a WebSocket listener (pages and 404s).
    pub pages_served: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Relaxed),
            refused_server_full: self.refused_server_full.load(Relaxed),
            refused_per_ip: self.refused_per_ip.load(Relaxed),
            closed: self.closed.load(Relaxed),
            disconnect_hooks: self.disconnect_hooks.load(Relaxed),
            hub_restarts: self.hub_restarts.load(Relaxed),
            frames_too_large: self.frames_too_large.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            dos_kicks: self.dos_kicks.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            send_timeouts: self.send_timeouts.load(Relaxed),
            idle_kicks: self.idle_kicks.load(Relaxed),
            login_timeouts: self.login_timeouts.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            handler_timeouts: self.handler_timeouts.load(Relaxed),
            hook_timeouts: self.hook_timeouts.load(Relaxed),
            checkpoints: self.checkpoints.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
            pages_served: self.pages_served.load(Relaxed),
        }
    }

    pub(crate) fn count_accept(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_refusal(&self, refusal: Refusal) {
        match refusal {
            Refusal::ServerFull => &self.refused_server_full,
            Refusal::TooManyFromIp => &self.refused_per_ip,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn count_handshake_failure(&self) {
        self.handshake_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_handshake_timeout(&self) {
        self.handshake_timeouts.fetch_add(1, Relaxed);
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

    pub(crate) fn count_close(&self, reason: &DisconnectReason) {
        self.closed.fetch_add(1, Relaxed);
        let counter = match reason {
            DisconnectReason::FrameTooLarge => &self.frames_too_large,
            DisconnectReason::ProtocolError => &self.protocol_errors,
            DisconnectReason::Dos => &self.dos_kicks,
            DisconnectReason::SlowConsumer => &self.slow_consumers,
            DisconnectReason::SendTimeout => &self.send_timeouts,
            DisconnectReason::Idle => &self.idle_kicks,
            DisconnectReason::LoginTimeout => &self.login_timeouts,
            DisconnectReason::HandlerPanic => &self.handler_panics,
            DisconnectReason::HandlerTimeout => &self.handler_timeouts,
            _ => return,
        };
        counter.fetch_add(1, Relaxed);
    }
}
