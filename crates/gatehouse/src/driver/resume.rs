//! Session resume across connections (`docs/PROTOCOL.md`, "session, resume, resumed
//! and ack"): a lost connection's session detaching instead of ending, and how a new
//! connection's transport reaches the task of the session it resumes (through the
//! server's registry, `crate::sessions`).
//!
//! A resumable session stays with its own connection task for its whole life. When
//! its connection is lost, the task detaches (`ConnectionCore::detach`) and waits
//! `resume.window`, keeping its id, groups, player and rooms, and numbering what it
//! sends into its replay. A new connection that opens with `resume` runs no hooks:
//! its task looks the session up, the token checked in constant time, hands its
//! transport (and what it read behind the resume) to the session's task through a
//! channel of one, and ends. The session's task checks the replay, drops the old
//! transport (lost, or still half-open), and goes on over the new one. So a session
//! has one task, one disconnect hook and one set of memberships, whatever its
//! connections did.
//!
//! A session's task gets handoffs of its own transport type only: a resume over
//! another transport is refused `unknown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_protocol::{KickReason, Token};
use tracing::{debug, info};

use super::{refuse, Connection, Transport};
use crate::connection::resume::ReplayRefusal;
use crate::connection::{Close, CoreConfig, DisconnectReason, ResumeRequest};
use crate::group::Shared;
use crate::service::Service;
use crate::sessions::{Handoff, Refusal};

/// How long a refused resume may take to write its kick.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Refuses a resume over `transport`: kicked `resume_failed` (or `protocol_error`
/// for a count beyond what was sent), within [`REFUSAL_TIMEOUT`].
pub(crate) async fn refuse_resume<T: Transport>(
    transport: T,
    core_config: Arc<CoreConfig>,
    reason: KickReason,
    text: String,
) {
    let _ = tokio::time::timeout(
        REFUSAL_TIMEOUT,
        refuse(transport, core_config, reason, &text),
    )
    .await;
}

/// The end of a connection that opened with `resume`: its transport goes to the
/// session, or is refused.
pub(crate) async fn hand_over<S: Service, T: Transport>(
    shared: Arc<Shared<S>>,
    transport: T,
    peer: SocketAddr,
    input: BytesMut,
    resume: ResumeRequest,
) {
    let handoff = Box::new(Handoff {
        transport,
        peer,
        received: resume.received,
        input,
    });
    match shared.sessions.hand_over(&resume, handoff) {
        Ok(()) => {
            debug!(session = resume.id, "transport handed to the session");
            shared.stats.count_close(&DisconnectReason::Resumed);
        }
        Err((refusal, handoff)) => {
            info!(session = resume.id, text = refusal.text(), "resume refused");
            shared
                .stats
                .count_close(&DisconnectReason::Kicked(KickReason::RESUME_FAILED));
            let config = shared.core_config.clone();
            refuse_resume(
                handoff.transport,
                config,
                KickReason::RESUME_FAILED,
                refusal.text().to_owned(),
            )
            .await;
        }
    }
}

impl<S: Service, T: Transport> Connection<S, T> {
    /// Registers the session just offered, so that a resume can find this task.
    pub(super) fn register_session(&mut self, id: u64, token: Token) -> bool {
        match self.shared.sessions.open::<T>(id, token, self.id) {
            Some(inbox) => {
                self.inbox = Some(inbox);
                true
            }
            None => false,
        }
    }

    /// Whether `close` only lost the connection of a session that waits for a
    /// resume: then it detaches (and `None` is returned) instead of ending.
    pub(super) fn detach_or_end(&mut self, close: Close, now: Instant) -> Option<Close> {
        if self.inbox.is_none() || !self.core.may_detach(&close.reason) {
            return Some(close);
        }
        debug!(reason = %close.reason, "connection lost; the session waits for a resume");
        self.shared.stats.count_detached();
        self.core
            .detach(close, now, self.shared.config.resume.window);
        self.moved(false);
        None
    }

    /// A new connection resumes this session: takes its transport over, or refuses
    /// it (the session then goes on as it was, or ends on a gap).
    pub(super) fn take_over(&mut self, handoff: Handoff<T>, now: Instant) {
        let Handoff {
            transport,
            peer,
            received,
            input,
        } = handoff;
        match self.core.resume(received, input, now) {
            Ok(()) => {
                self.rearm_inbox();
                // The old transport (lost, or half-open) is closed here.
                drop(std::mem::replace(&mut self.transport, transport));
                info!(%peer, received, "resumed");
                self.peer = peer;
                self.shared.stats.count_resumed();
                self.renew_session();
                self.moved(true);
            }
            Err(refusal) => {
                let (reason, text) = match refusal {
                    ReplayRefusal::BeyondSent { received, sent } => {
                        debug!(received, sent, "a resume counting more than was sent");
                        self.rearm_inbox(); // the session waits on
                        let limits = &self.shared.config.limits;
                        let protocol_error = DisconnectReason::ProtocolError;
                        (KickReason::PROTOCOL_ERROR, protocol_error.describe(limits))
                    }
                    ReplayRefusal::Gap { .. } => {
                        self.core.end_with_gap();
                        (KickReason::RESUME_FAILED, Refusal::Gap.text().to_owned())
                    }
                };
                info!(%peer, %text, "resume refused");
                let config = self.shared.core_config.clone();
                self.group
                    .tracker
                    .spawn(refuse_resume(transport, config, reason, text));
            }
        }
    }

    /// Takes the next handoff: the last one used the inbox up.
    fn rearm_inbox(&mut self) {
        if let Some(id) = self.core.session_id() {
            self.inbox = self.shared.sessions.rearm::<T>(id, self.id);
        }
    }

    /// Queues a fresh session frame with a new token for the next resume.
    fn renew_session(&mut self) {
        let Some(id) = self.core.session_id() else {
            return;
        };
        let mut token: Token = [0; 32];
        if getrandom::getrandom(&mut token).is_err() {
            return; // the old token stays good
        }
        self.shared.sessions.renew(id, self.id, token);
        let window_ms =
            u32::try_from(self.shared.config.resume.window.as_millis()).unwrap_or(u32::MAX);
        self.core.renew_session(window_ms, token);
    }

    /// The client leaves on purpose (it asked to end its session): the session ends
    /// with this connection, and a resume meanwhile finds nothing.
    pub(super) fn end_session_on_purpose(&mut self) {
        self.core.leave_session();
        self.close_session();
    }

    /// The session ended: a later resume is told why, or finds nothing. One handed
    /// over just before, still in the inbox, is told why too.
    pub(super) fn close_session(&mut self) {
        if let Some(handoff) = self
            .inbox
            .take()
            .and_then(|mut inbox| inbox.try_recv().ok())
        {
            let refusal = self.core.lost().map_or(Refusal::Unknown, Refusal::from);
            info!(peer = %handoff.peer, text = refusal.text(), "resume refused: the session ended");
            let config = self.shared.core_config.clone();
            self.group.tracker.spawn(refuse_resume(
                handoff.transport,
                config,
                KickReason::RESUME_FAILED,
                refusal.text().to_owned(),
            ));
        }
        if let Some(id) = self.core.session_id() {
            let window = self.shared.config.resume.window;
            self.shared
                .sessions
                .close(id, self.id, self.core.lost(), window);
        }
    }
}
