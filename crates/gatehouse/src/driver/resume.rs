//! Session resume across connections (`docs/PROTOCOL.md`, "session, resume, resumed
//! and ack"): a lost connection's session detaching instead of ending, and how a new
//! connection's transport reaches the task of the session it resumes.
//!
//! A resumable session stays with its own connection task for its whole life, and
//! its id is that connection's id. When its connection is lost, the task detaches
//! (`ConnectionCore::detach`) and waits `resume.window`, keeping its id, groups,
//! player and rooms, and numbering what it sends into its replay. A new connection
//! that opens with `resume` runs no hooks: its task hands its transport (and what
//! it read behind the resume) through the hub to the session's mailbox, and ends.
//! The session's task checks the token (an HMAC of its id and epoch under the
//! server's secret, in constant time: `crate::sessions`) and the replay, drops the
//! old transport (lost, or still half-open), and goes on over the new one. So a
//! session has one task, one disconnect hook and one set of memberships, whatever
//! its connections did, and no table of sessions is kept beside the hub's.
//!
//! A session's task takes handoffs of its own transport type only: a resume over
//! another transport is refused `unknown`.

use std::any::{Any, TypeId};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_protocol::KickReason;
use tracing::{debug, info};

use super::{refuse, Connection, Transport};
use crate::connection::resume::ReplayRefusal;
use crate::connection::{Close, ConnId, CoreConfig, DisconnectReason, ResumeRequest};
use crate::group::{Group, Shared};
use crate::service::Service;
use crate::sessions::{Handoff, Refusal, Resuming};

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

impl<T: Transport> Resuming for Handoff<T> {
    fn request(&self) -> &ResumeRequest {
        &self.resume
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn handoff_type(&self) -> TypeId {
        TypeId::of::<Self>()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }

    fn refuse(
        self: Box<Self>,
        config: Arc<CoreConfig>,
        reason: KickReason,
        text: String,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(refuse_resume(self.transport, config, reason, text))
    }
}

/// The end of a connection that opened with `resume`: its transport goes to the
/// session's task (which takes it over or refuses it), or is refused here if no
/// live session has that id.
pub(crate) async fn hand_over<S: Service, T: Transport>(
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
    transport: T,
    peer: SocketAddr,
    input: BytesMut,
    resume: ResumeRequest,
) {
    let id = resume.id;
    let handoff = Box::new(Handoff {
        transport,
        peer,
        resume,
        input,
    });
    let turned_away = match shared.sessions.why_ended(id) {
        Some(why) => Some((why, handoff as Box<dyn Resuming>)),
        None => match group.hub.resume(ConnId(id), handoff).await {
            Ok(()) => None,
            // No such connection, or it ended meanwhile: perhaps lost, just now; or
            // one of another node of the cluster.
            Err(handoff) => {
                let elsewhere = || {
                    let cluster = shared.hub_slot.players.cluster()?;
                    cluster.node_of_session(id).map(|_| Refusal::Moved)
                };
                let why = shared.sessions.why_ended(id).or_else(elsewhere);
                Some((why.unwrap_or(Refusal::Unknown), handoff))
            }
        },
    };
    match turned_away {
        None => debug!(session = id, "transport handed to the session"),
        Some((refusal, handoff)) => {
            refused(&shared, &*handoff, refusal);
            let config = shared.core_config.clone();
            let text = refusal.text().to_owned();
            handoff
                .refuse(config, KickReason::RESUME_FAILED, text)
                .await;
        }
    }
}

/// Logs and counts a resume refused for `refusal`.
fn refused<S: Service>(shared: &Shared<S>, handoff: &dyn Resuming, refusal: Refusal) {
    let (session, peer) = (handoff.request().id, handoff.peer());
    info!(session, %peer, text = refusal.text(), "resume refused");
    shared
        .stats
        .count_close(&DisconnectReason::Kicked(KickReason::RESUME_FAILED));
}

impl<S: Service, T: Transport> Connection<S, T> {
    /// Whether `close` only lost the connection of a session that waits for a
    /// resume: then it detaches (and `None` is returned) instead of ending.
    pub(super) fn detach_or_end(&mut self, close: Close, now: Instant) -> Option<Close> {
        if !self.core.may_detach(&close.reason) {
            return Some(close);
        }
        debug!(reason = %close.reason, "connection lost; the session waits for a resume");
        self.shared.stats.count_detached();
        self.core
            .detach(close, now, self.shared.config.resume.window);
        self.moved(false);
        None
    }

    /// A new connection's transport, from the mailbox: taken over if it resumes
    /// this session with its current token, over this session's transport type;
    /// refused otherwise. True if the session was resumed.
    pub(super) fn take_handoff(&mut self, handoff: Box<dyn Resuming>, now: Instant) -> bool {
        let checked = match (self.core.lost(), self.core.resumable_epoch()) {
            (Some(lost), _) => Err(Refusal::from(lost)),
            // No session, one that is leaving, or a connection being kicked.
            (None, None) => Err(Refusal::Unknown),
            (None, Some(_)) if self.core.is_closing() => Err(Refusal::Unknown),
            (None, Some(epoch)) => {
                let token = &handoff.request().token;
                self.shared
                    .sessions
                    .check(self.id.0, epoch, token)
                    .and_then(|()| {
                        let ours = handoff.handoff_type() == TypeId::of::<Handoff<T>>();
                        ours.then_some(()).ok_or(Refusal::OtherTransport)
                    })
            }
        };
        if let Err(refusal) = checked {
            self.turn_away(handoff, refusal);
            return false;
        }
        match handoff.into_any().downcast::<Handoff<T>>() {
            Ok(handoff) => self.take_over(*handoff, now),
            Err(_) => false, // its type was looked at above
        }
    }

    /// Refuses a resume this session's task cannot take, with why.
    pub(super) fn turn_away(&self, handoff: Box<dyn Resuming>, refusal: Refusal) {
        refused(&self.shared, &*handoff, refusal);
        let config = self.shared.core_config.clone();
        let text = refusal.text().to_owned();
        self.group
            .tracker
            .spawn(handoff.refuse(config, KickReason::RESUME_FAILED, text));
    }

    /// A new connection resumes this session: takes its transport over (true), or
    /// refuses it (the session then goes on as it was, or ends on a gap).
    fn take_over(&mut self, handoff: Handoff<T>, now: Instant) -> bool {
        let Handoff {
            transport,
            peer,
            resume,
            input,
        } = handoff;
        let received = resume.received;
        match self.core.resume(received, input, now) {
            Ok(()) => {
                // The old transport (lost, or half-open) is closed here.
                drop(std::mem::replace(&mut self.transport, transport));
                info!(%peer, received, "resumed");
                self.peer = peer;
                self.shared.stats.count_resumed();
                // The new connection ends here, in this one.
                self.shared.stats.count_close(&DisconnectReason::Resumed);
                self.renew_session();
                self.moved(true);
                true
            }
            Err(refusal) => {
                let (reason, text) = match refusal {
                    ReplayRefusal::BeyondSent { received, sent } => {
                        debug!(received, sent, "a resume counting more than was sent");
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
                self.shared
                    .stats
                    .count_close(&DisconnectReason::Kicked(reason));
                let config = self.shared.core_config.clone();
                self.group
                    .tracker
                    .spawn(refuse_resume(transport, config, reason, text));
                false
            }
        }
    }

    /// Queues a fresh session frame with the token of the session's next epoch:
    /// the one just used is good no more.
    fn renew_session(&mut self) {
        let id = self.id.0;
        let window_ms =
            u32::try_from(self.shared.config.resume.window.as_millis()).unwrap_or(u32::MAX);
        let sessions = &self.shared.sessions;
        // A session is offered only by a server with a secret.
        self.core.renew_session(id, window_ms, |epoch| {
            sessions.token(id, epoch).unwrap_or_default()
        });
    }

    /// Closes the mailbox as the connection ends. A session that ended without its
    /// client coming back is remembered first, so that a resume the closed mailbox
    /// turns away is told why; the resumes it held are refused.
    pub(super) fn close_mailbox(&mut self) {
        let lost = self.core.lost();
        if let Some(why) = lost {
            let window = self.shared.config.resume.window;
            self.shared.sessions.bury(self.id.0, why, window);
        }
        for handoff in self.mailbox.close() {
            self.turn_away(handoff, lost.map_or(Refusal::Unknown, Refusal::from));
        }
    }
}
