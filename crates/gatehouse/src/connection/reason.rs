//! Why a connection ended: one home for each reason's kick code, the text sent with
//! it, the level it is logged at, and its name in logs and counters.

use std::fmt;
use std::io;

use gatehouse_protocol::KickReason;

use crate::config::LimitsConfig;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client closed the connection.
    PeerClosed,
    /// The socket failed (reset, broken pipe, …).
    SocketError(io::ErrorKind),
    /// No first frame within `limits.first_frame_timeout`.
    LoginTimeout,
    /// No frame within `limits.idle_timeout`.
    Idle,
    /// Over the inbound byte or frame rate.
    Dos,
    /// A header announced a frame over `limits.max_frame_bytes`.
    FrameTooLarge,
    /// A malformed envelope, or a kind clients may not send.
    ProtocolError,
    /// The outbound queue passed `limits.outbound_queue_bytes`.
    SlowConsumer,
    /// Output made no progress for `limits.send_timeout`.
    SendTimeout,
    /// Kicked by the game (through the hub or its own context).
    Kicked(KickReason),
    /// The server is shutting down.
    Shutdown,
    /// The hub crashed; the connection was closed so that the restarted hub starts clean.
    ServerRestart,
    /// A handler panicked.
    HandlerPanic,
    /// A handler ran past `limits.handler_timeout`.
    HandlerTimeout,
    /// The connection opened with a `resume`, and its transport went on to serve
    /// the session it resumed (it had no session of its own, and no hooks ran).
    Resumed,
}

/// How loudly a close is logged: the client's own doing is routine, a limit hit by a
/// client is worth a warning (it may be an attack or a broken client), the rest is
/// the server's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Routine: the peer left, the server is stopping.
    Debug,
    /// Expected but notable: kicks, idle timeouts, restarts.
    Info,
    /// A limit was hit or a handler failed.
    Warn,
}

impl DisconnectReason {
    /// The kick sent to the client before closing, if any (none when the peer is
    /// already gone or the socket cannot take it).
    pub fn kick(&self) -> Option<KickReason> {
        Some(match self {
            DisconnectReason::PeerClosed
            | DisconnectReason::SocketError(_)
            | DisconnectReason::SendTimeout
            | DisconnectReason::Resumed => return None,
            DisconnectReason::LoginTimeout => KickReason::LOGIN_TIMEOUT,
            DisconnectReason::Idle => KickReason::IDLE,
            DisconnectReason::Dos => KickReason::DOS,
            DisconnectReason::FrameTooLarge => KickReason::FRAME_TOO_LARGE,
            DisconnectReason::ProtocolError => KickReason::PROTOCOL_ERROR,
            DisconnectReason::SlowConsumer => KickReason::SLOW_CONSUMER,
            DisconnectReason::Kicked(reason) => *reason,
            DisconnectReason::Shutdown => KickReason::SHUTDOWN,
            DisconnectReason::ServerRestart => KickReason::SERVER_RESTART,
            DisconnectReason::HandlerPanic | DisconnectReason::HandlerTimeout => {
                KickReason::INTERNAL_ERROR
            }
        })
    }

    /// The text sent with the kick when whoever closed gave none.
    pub fn describe(&self, limits: &LimitsConfig) -> String {
        match self {
            DisconnectReason::Idle => format!("no frame for {:?}", limits.idle_timeout),
            DisconnectReason::LoginTimeout => {
                format!("no first frame within {:?}", limits.first_frame_timeout)
            }
            DisconnectReason::Dos => "inbound rate limit exceeded".into(),
            DisconnectReason::FrameTooLarge => {
                format!("frame larger than {} bytes", limits.max_frame_bytes)
            }
            DisconnectReason::ProtocolError => "malformed or unexpected frame".into(),
            DisconnectReason::SlowConsumer => format!(
                "outbound queue over {} bytes: the client does not read",
                limits.outbound_queue_bytes
            ),
            DisconnectReason::Shutdown => "server shutting down".into(),
            DisconnectReason::ServerRestart => "server restarting, reconnect".into(),
            DisconnectReason::HandlerPanic | DisconnectReason::HandlerTimeout => {
                "internal server error".into()
            }
            other => other.to_string(),
        }
    }

    /// How loudly this close is logged.
    pub fn severity(&self) -> Severity {
        match self {
            DisconnectReason::PeerClosed
            | DisconnectReason::Shutdown
            | DisconnectReason::Resumed => Severity::Debug,
            DisconnectReason::Dos
            | DisconnectReason::FrameTooLarge
            | DisconnectReason::ProtocolError
            | DisconnectReason::SlowConsumer
            | DisconnectReason::SendTimeout
            | DisconnectReason::HandlerPanic
            | DisconnectReason::HandlerTimeout => Severity::Warn,
            DisconnectReason::SocketError(_)
            | DisconnectReason::LoginTimeout
            | DisconnectReason::Idle
            | DisconnectReason::Kicked(_)
            | DisconnectReason::ServerRestart => Severity::Info,
        }
    }

    /// Logs the close at its severity (inside the connection's span).
    /// Logs the close with its reason and kick code (the peer is in the connection's
    /// span), at its severity.
    pub(crate) fn log(&self) {
        let code = self.kick().map(|kick| kick.0);
        match self.severity() {
            Severity::Debug => tracing::debug!(reason = %self, code, "closed"),
            Severity::Info => tracing::info!(reason = %self, code, "closed"),
            Severity::Warn => tracing::warn!(reason = %self, code, "closed"),
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("peer_closed"),
            DisconnectReason::SocketError(kind) => write!(f, "socket_error({kind})"),
            DisconnectReason::SendTimeout => f.write_str("send_timeout"),
            DisconnectReason::HandlerTimeout => f.write_str("handler_timeout"),
            DisconnectReason::HandlerPanic => f.write_str("handler_panic"),
            DisconnectReason::Resumed => f.write_str("resumed"),
            other => match other.kick() {
                Some(kick) => kick.fmt(f),
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_server_decides_has_a_kick_and_a_text() {
        let limits = LimitsConfig::default();
        for reason in [
            DisconnectReason::LoginTimeout,
            DisconnectReason::Idle,
            DisconnectReason::Dos,
            DisconnectReason::FrameTooLarge,
            DisconnectReason::ProtocolError,
            DisconnectReason::SlowConsumer,
            DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN),
            DisconnectReason::Shutdown,
            DisconnectReason::ServerRestart,
            DisconnectReason::HandlerPanic,
            DisconnectReason::HandlerTimeout,
        ] {
            assert!(reason.kick().is_some(), "{reason}");
            assert!(!reason.describe(&limits).is_empty(), "{reason}");
            assert!(!reason.to_string().is_empty());
        }
        for gone in [
            DisconnectReason::PeerClosed,
            DisconnectReason::SocketError(io::ErrorKind::ConnectionReset),
            DisconnectReason::SendTimeout,
        ] {
            assert_eq!(gone.kick(), None, "{gone}: nobody is there to read a kick");
        }
    }

    #[test]
    fn limits_hit_by_a_client_are_warnings_and_its_own_leaving_is_not() {
        assert_eq!(DisconnectReason::Dos.severity(), Severity::Warn);
        assert_eq!(DisconnectReason::SlowConsumer.severity(), Severity::Warn);
        assert_eq!(DisconnectReason::PeerClosed.severity(), Severity::Debug);
        assert_eq!(DisconnectReason::Idle.severity(), Severity::Info);
        assert_eq!(DisconnectReason::HandlerPanic.to_string(), "handler_panic");
        assert_eq!(
            DisconnectReason::HandlerTimeout.kick(),
            Some(KickReason::INTERNAL_ERROR)
        );
    }
}
